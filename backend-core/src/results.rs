//! The result directory: creating `<base>/<name>/<UTC timestamp>/`, writing
//! `operation.toml`, and consolidating the journal into `results.csv`, `results.jsonl`
//! and `crashed.jsonl`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{BufWriter, ErrorKind, Write};
use std::path::{Path, PathBuf};

use indexmap::IndexSet;

use crate::journal::{read_journal_indexed, read_record_at, Damage};
use crate::{Error, Params, ProcessRecord, Result, Status, Value};

/// The file names inside a result directory.
pub mod files {
    /// The spec as run.
    pub const OPERATION: &str = "operation.toml";
    /// In `<results>/<name>/`: a link to the newest run of the operation.
    pub const LATEST: &str = "latest";
    /// The append-only journal, the source of truth.
    pub const JOURNAL: &str = "journal";
    /// One row per process, flattened.
    pub const RESULTS_CSV: &str = "results.csv";
    /// The same rows as JSON lines.
    pub const RESULTS_JSONL: &str = "results.jsonl";
    /// One crash record per crashed process.
    pub const CRASHED_JSONL: &str = "crashed.jsonl";
    /// Every log record of the run: the master's and the workers'.
    pub const OPERATION_LOG: &str = "operation.log";
    /// Which worker ran which process when, and the histogram of durations.
    pub const TIMELINE_SVG: &str = "timeline.svg";
    /// One self-contained page: the summary, the timeline, the durations, the workers, the
    /// crashes and the slowest processes.
    pub const REPORT_HTML: &str = "report.html";
}

/// The columns every results row starts with, before the parameters.
const LEADING: [&str; 2] = ["id", "run"];
/// The columns after the parameters, before the output's fields.
const TRAILING: [&str; 6] = ["status", "duration_s", "started_at", "host", "worker", "attempts"];

/// Every column `results.csv` has whatever the operation: the leading ones, the ones after
/// the parameters, and `reason` at the end. A parameter may not take one of these names.
pub const FIXED_COLUMNS: [&str; LEADING.len() + TRAILING.len() + 1] = {
    let mut out = [""; LEADING.len() + TRAILING.len() + 1];
    let mut i = 0;
    while i < LEADING.len() {
        out[i] = LEADING[i];
        i += 1;
    }
    let mut j = 0;
    while j < TRAILING.len() {
        out[i + j] = TRAILING[j];
        j += 1;
    }
    out[i + j] = "reason";
    out
};

/// Creates a fresh result directory `<base>/<name>/<UTC timestamp>/` (with a `.N` suffix
/// when two runs start in the same second).
pub fn create_result_dir(base: &Path, name: &str) -> Result<PathBuf> {
    for ancestor in base.ancestors() {
        if ancestor.as_os_str().is_empty() {
            continue;
        }
        match fs::metadata(ancestor) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => return Err(Error::ResultsNotADirectory { path: ancestor.to_owned() }),
            Err(_) => continue,
        }
    }
    let parent = base.join(name);
    fs::create_dir_all(&parent).map_err(|source| Error::ResultsNotWritable { path: base.to_owned(), source })?;
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!("[year]-[month]-[day]T[hour]-[minute]-[second]Z"))
        .map_err(|e| Error::Internal(format!("the timestamp could not be formatted: {e}")))?;
    for n in 0u32.. {
        let name = if n == 0 { stamp.clone() } else { format!("{stamp}.{n}") };
        let dir = parent.join(&name);
        match fs::create_dir(&dir) {
            Ok(()) => {
                point_latest_at(&parent, &name);
                return Ok(dir);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(Error::ResultsNotWritable { path: base.to_owned(), source }),
        }
    }
    unreachable!("u32 range exhausted while naming a result directory")
}

/// Points `<parent>/latest` at the run directory `name` (a relative link, replaced in one
/// rename). Best effort: a file system without links still runs; `latest` is a convenience.
fn point_latest_at(parent: &Path, name: &str) {
    #[cfg(unix)]
    {
        let tmp = parent.join(format!(".{}.{}", files::LATEST, std::process::id()));
        let _ = fs::remove_file(&tmp);
        if std::os::unix::fs::symlink(name, &tmp).is_ok() && fs::rename(&tmp, parent.join(files::LATEST)).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// The version of the result directory's formats (`operation.toml` and the journal's
/// records) that this taskfarm writes, and the newest it reads; it reads every older one.
/// It changes only when an older taskfarm could no longer read what this one writes.
pub const FORMAT_VERSION: u32 = 1;
/// How `operation.toml` says its format version: its first line, a TOML comment (so that
/// the file stays a spec that runs as it is). A file without it is of version 1 (taskfarm
/// 0.1 wrote none).
const FORMAT_LINE: &str = "# taskfarm result directory format ";

/// Refuses a result directory written by a newer taskfarm, with a sentence naming the
/// versions; reads the format line of its `operation.toml` (a missing file passes: the
/// caller says what it needs).
pub fn check_format(dir: &Path) -> Result<()> {
    let path = dir.join(files::OPERATION);
    let Ok(text) = fs::read_to_string(&path) else { return Ok(()) };
    let Some(version) = text.lines().next().and_then(|line| line.strip_prefix(FORMAT_LINE)) else {
        return Ok(());
    };
    match version.trim().parse::<u32>() {
        Ok(found) if found <= FORMAT_VERSION => Ok(()),
        _ => Err(Error::FormatTooNew {
            path: dir.to_owned(),
            found: version.trim().to_owned(),
            supported: FORMAT_VERSION,
        }),
    }
}

/// Writes `operation.toml`, the spec as run.
pub fn write_operation_toml(dir: &Path, spec: &Params) -> Result<()> {
    let text = format!("{FORMAT_LINE}{FORMAT_VERSION}\n{}", operation_toml_text(spec)?);
    let path = dir.join(files::OPERATION);
    fs::write(&path, text).map_err(|e| Error::io("write", &path, e))
}

/// The spec as TOML text in which every value is written inline (`a = [{ x = 1 }]`, never
/// a `[[a]]` section): a TOML writer moves keys holding tables after the others, which
/// would reorder `parameter_ranges` and so renumber the processes of a resumed run. The
/// top-level tables become `[key]` sections after the other keys; their keys keep their
/// order.
fn operation_toml_text(spec: &Params) -> Result<String> {
    let inline = |value: &toml::Value| {
        let mut out = String::new();
        serde::Serialize::serialize(value, toml::ser::ValueSerializer::new(&mut out))
            .map_err(|e| Error::Internal(format!("the spec could not be written as TOML: {e}")))?;
        Ok::<_, Error>(out)
    };
    let mut text = String::new();
    let mut sections = String::new();
    for (key, value) in &to_toml_table(spec) {
        match value {
            toml::Value::Table(table) => {
                sections.push_str(&format!("\n[{}]\n", toml_key(key)));
                for (k, v) in table {
                    sections.push_str(&format!("{} = {}\n", toml_key(k), inline(v)?));
                }
            }
            other => text.push_str(&format!("{} = {}\n", toml_key(key), inline(other)?)),
        }
    }
    Ok(text + &sections)
}

/// A key as TOML writes it: bare when it can be, else quoted.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        toml::Value::String(key.to_owned()).to_string()
    }
}

/// The spec as the TOML table `operation.toml` holds.
pub(crate) fn to_toml_table(map: &Params) -> toml::Table {
    map.iter().filter_map(|(k, v)| to_toml(v).map(|v| (k.clone(), v))).collect()
}

fn to_toml(value: &Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Int(i) => toml::Value::Integer(*i),
        // TOML's integers end at i64::MAX: a larger one is written as the nearest float.
        Value::UInt(u) => toml::Value::Float(*u as f64),
        Value::Float(f) => toml::Value::Float(*f),
        Value::Str(s) => toml::Value::String(s.clone()),
        Value::List(items) => toml::Value::Array(items.iter().filter_map(to_toml).collect()),
        Value::Map(map) => toml::Value::Table(to_toml_table(map)),
    })
}

/// What consolidation found in the journal.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Consolidated {
    /// Processes with a record (the latest record of an id counts).
    pub recorded: u64,
    /// Of those, finished.
    pub finished: u64,
    /// Of those, crashed (timed-out ones included).
    pub crashed: u64,
    /// Of the crashed, those that ran past their timeout.
    pub timed_out: u64,
    /// What was skipped or ignored of the journal (corrupt records, a torn end).
    pub damage: Damage,
}

/// Reads the journal of `dir` and (re)writes `results.csv`, `results.jsonl`,
/// `crashed.jsonl`, `timeline.svg` and `report.html`: one row per process id, the latest
/// record of each, sorted by id.
/// Each file is written beside and renamed into place, so an interruption never leaves a
/// half-written file where a complete one was.
pub fn consolidate_dir(dir: &Path) -> Result<Consolidated> {
    // One at a time: a signal handler may consolidate what finished while the run goes on,
    // and two writers of the same staged files would spoil both.
    static CONSOLIDATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = CONSOLIDATING.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    // Two passes over the latest record of each id, in id order: the columns and the
    // timeline's span, then the files. Records are read back one at a time, in id order,
    // streamed when the journal is nearly in id order (see `Order`).
    let journal = Journal::open(dir)?;
    let (first, order, damage) = first_pass(&journal)?;
    let FirstPass { params, outputs, mut timeline, tally, recorded, finished, repeated } = first;
    let columns = Columns::new(&params, &outputs);
    let mut summary = crate::summary::SummaryPass::new(repeated);

    // Second pass: the three files, side by side, then each renamed into place. This
    // thread reads and decodes the journal (and gathers the timeline's and the summary's
    // figures) while another writes the rows, so two cores share the pass. Each batch of
    // records goes to the writer and comes back to be freed and refilled here, where its
    // records were made.
    let mut csv_out = Staged::create(dir, files::RESULTS_CSV)?;
    let mut jsonl_out = Staged::create(dir, files::RESULTS_JSONL)?;
    let mut crashed_out = Staged::create(dir, files::CRASHED_JSONL)?;
    std::thread::scope(|scope| -> Result<()> {
        let (batches, received) = std::sync::mpsc::sync_channel::<Vec<ProcessRecord>>(ROW_BATCHES);
        let (give_back, given_back) = std::sync::mpsc::sync_channel::<Vec<ProcessRecord>>(ROW_BATCHES + 1);
        let (csv_sink, csv_path) = (&mut csv_out.out, csv_out.tmp.clone());
        let (jsonl_out, crashed_out, columns) = (&mut jsonl_out, &mut crashed_out, &columns);
        let writer = scope.spawn(move || -> Result<()> {
            let mut csv = csv::Writer::from_writer(csv_sink);
            let csv_error = |e: csv::Error| Error::io("write", &csv_path, std::io::Error::other(e.to_string()));
            csv.write_record(&columns.names).map_err(csv_error)?;
            // The row's cell of each column, when the record has one, and the same as JSON.
            let mut cells: Vec<Option<Value>> = Vec::with_capacity(columns.names.len());
            let mut json_cells: Vec<Option<serde_json::Value>> = Vec::with_capacity(columns.names.len());
            for batch in received {
                for record in &batch {
                    columns.fill(record, &mut cells);
                    csv.write_record(cells.iter().map(|c| c.as_ref().map(Value::csv_cell).unwrap_or_default()))
                        .map_err(csv_error)?;
                    json_cells.clear();
                    json_cells.extend(cells.iter_mut().map(|cell| cell.take().map(serde_json::Value::from)));
                    jsonl_out.json_line(&JsonRow { names: &columns.names, cells: &json_cells })?;
                    if record.status != Status::Finished {
                        crashed_out.json_line(&crash_record(record))?;
                    }
                }
                let _ = give_back.try_send(batch);
            }
            csv.flush().map_err(|e| Error::io("write", &csv_path, e))
        });
        let mut batch = Vec::with_capacity(ROW_BATCH);
        let second = journal.visit_latest(&order, |record| {
            timeline.count(&record);
            summary.add(&record);
            batch.push(record);
            if batch.len() >= ROW_BATCH {
                let mut next = given_back.try_recv().unwrap_or_else(|_| Vec::with_capacity(ROW_BATCH));
                next.clear();
                let full = std::mem::replace(&mut batch, next);
                // Fails only when the writer stopped on an error, which its join returns.
                batches.send(full).map_err(|_| Error::Internal("the writer of the results stopped".into()))?;
            }
            Ok(())
        });
        if matches!(second, Ok(Visit::Done { .. })) {
            let _ = batches.send(batch);
        }
        drop(batches);
        let written = writer.join().unwrap_or_else(|payload| {
            Err(Error::Internal(format!("writing the results panicked: {}", crate::panic_message(payload.as_ref()))))
        });
        // The writer's error first: the reader's is then only that the writer stopped.
        written?;
        if !matches!(second?, Visit::Done { .. }) {
            return Err(Error::Internal(format!("the journal in {} changed while it was read", dir.display())));
        }
        Ok(())
    })?;
    csv_out.commit()?;
    jsonl_out.commit()?;
    crashed_out.commit()?;
    summary.write(dir)?;

    let tmp = dir.join(format!(".{}.tmp", files::TIMELINE_SVG));
    let drawn = timeline.write(&tmp).and_then(|()| {
        fs::rename(&tmp, dir.join(files::TIMELINE_SVG)).map_err(|e| Error::io("move into place", &tmp, e))
    });
    if drawn.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    drawn?;
    let report = crate::report::RunReport { damage: damage.clone(), ..tally.finish() };
    write_page_file(dir, &report, &timeline)?;

    Ok(Consolidated { recorded, finished, crashed: recorded - finished, timed_out: report.timed_out, damage })
}

/// (Re)writes `report.html` of the result directory `dir` from its journal, as
/// consolidation does, and returns its path.
pub fn write_report_page(dir: &Path) -> Result<PathBuf> {
    let journal = Journal::open(dir)?;
    let (first, order, damage) = first_pass(&journal)?;
    let FirstPass { mut timeline, tally, .. } = first;
    let second = journal.visit_latest(&order, |record| {
        timeline.count(&record);
        Ok(())
    })?;
    if !matches!(second, Visit::Done { .. }) {
        return Err(Error::Internal(format!("the journal in {} changed while it was read", dir.display())));
    }
    let report = crate::report::RunReport { damage, ..tally.finish() };
    write_page_file(dir, &report, &timeline)
}

/// Writes `report.html` beside and renames it into place.
fn write_page_file(
    dir: &Path,
    report: &crate::report::RunReport,
    timeline: &crate::timeline::Timeline,
) -> Result<PathBuf> {
    // A run's directory is `<results>/<name>/<timestamp>`: the operation's name is its parent's.
    let name = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.parent().and_then(Path::file_name).map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "operation".to_owned());
    let html = crate::page::render(crate::page::PageHeading { name: &name, dir }, report, timeline);
    // A name of this program's own: `report --html` may write the page of a run that is
    // still going, whose consolidation writes it too.
    let tmp = dir.join(format!(".{}.{}.tmp", files::REPORT_HTML, std::process::id()));
    let file = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
    let mut out = Staged::writing_to(Box::new(file), tmp, dir.join(files::REPORT_HTML));
    out.out.write_all(html.as_bytes()).map_err(|e| Error::io("write", &out.tmp, e))?;
    out.commit()?;
    Ok(dir.join(files::REPORT_HTML))
}

/// The first pass of consolidation over the latest record of each id, in id order: the
/// columns, the timeline's first pass, the report's tally and the counts; and the order in
/// which the journal is visited (streamed, or by an index when it is far from id order).
fn first_pass(journal: &Journal) -> Result<(FirstPass, Order, Damage)> {
    let mut order = Order::Streamed { window: REORDER_WINDOW, decoded_limit: HELD_RECORDS };
    let mut indexed_damage = None;
    loop {
        let mut first = FirstPass::default();
        match journal.visit_latest(&order, |record| {
            first.add(&record);
            Ok(())
        })? {
            Visit::Done { damage } => return Ok((first, order, indexed_damage.unwrap_or(damage))),
            Visit::OutOfOrder => {
                let (latest, damage) = journal.latest_offsets()?;
                order = Order::Indexed(latest);
                indexed_damage = Some(damage);
            }
        }
    }
}

/// What the first pass of consolidation gathers: the columns, the timeline's first pass, the
/// page's report and the counts.
struct FirstPass {
    params: IndexSet<String>,
    outputs: IndexSet<String>,
    timeline: crate::timeline::Timeline,
    tally: crate::report::Tally,
    recorded: u64,
    finished: u64,
    /// Whether some id has a run above 0: a point with more than one run (`summary.csv`).
    repeated: bool,
}

impl Default for FirstPass {
    fn default() -> Self {
        FirstPass {
            params: IndexSet::new(),
            outputs: IndexSet::new(),
            timeline: crate::timeline::Timeline::default(),
            tally: crate::report::Tally::new(crate::page::PAGE_SLOWEST),
            recorded: 0,
            finished: 0,
            repeated: false,
        }
    }
}

impl FirstPass {
    fn add(&mut self, record: &ProcessRecord) {
        for key in record.params.keys() {
            if !self.params.contains(key) {
                self.params.insert(key.clone());
            }
        }
        if let Some(map) = flat_output(record) {
            for field in map.keys() {
                if !self.outputs.contains(field) {
                    self.outputs.insert(field.clone());
                }
            }
        } else {
            for (field, _) in output_fields(record) {
                if !self.outputs.contains(&field) {
                    self.outputs.insert(field);
                }
            }
        }
        self.timeline.add(record);
        self.tally.add(record);
        self.recorded += 1;
        self.finished += u64::from(record.status == Status::Finished);
        self.repeated |= record.run > 0;
    }
}

/// How many records the reading thread of consolidation's second pass hands to the writing
/// one at a time, and how many such batches may wait: few enough that memory stays flat,
/// enough that the two threads seldom wait for each other.
const ROW_BATCH: usize = 256;
const ROW_BATCHES: usize = 4;

/// A row of `results.jsonl`: an object of each column's cell, in column order, columns
/// without a cell left out (written as it goes, with no map built per row).
struct JsonRow<'a> {
    names: &'a [String],
    cells: &'a [Option<serde_json::Value>],
}

impl serde::Serialize for JsonRow<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut row = serializer.serialize_map(None)?;
        for (name, cell) in self.names.iter().zip(self.cells) {
            if let Some(cell) = cell {
                row.serialize_entry(name, cell)?;
            }
        }
        row.end()
    }
}

/// How many records consolidation holds back while it streams a journal in id order: a
/// journal whose records are never further than this from their place in id order (what
/// every backend writes, since jobs are handed out in id order) is consolidated with memory
/// that does not grow with the number of processes.
const REORDER_WINDOW: usize = 1 << 16;

/// How many records consolidation holds decoded while it streams a journal; records held
/// beyond these wait as offsets and are read again when their turn comes.
const HELD_RECORDS: usize = 4096;

/// A record waiting for its turn while consolidation streams a journal.
enum Held {
    /// Decoded.
    Record(Box<ProcessRecord>),
    /// Where it is in the journal.
    Offset(u64),
}

/// How consolidation visits the latest record of each id in id order.
enum Order {
    /// Reading the journal front to back, holding back up to `window` offsets in a sorted
    /// buffer: a record further out of order (e.g. from a resumed run) is noticed.
    Streamed {
        /// [`REORDER_WINDOW`] (smaller in tests).
        window: usize,
        /// [`HELD_RECORDS`] (smaller in tests).
        decoded_limit: usize,
    },
    /// By an index of every id's latest offset, sorted by id (8 bytes a process): for
    /// journals that are not nearly in id order.
    Indexed(Vec<u64>),
}

/// How a visit ended.
enum Visit {
    /// Every id's latest record was visited, in id order; what a streaming read found
    /// damaged (an indexed visit reads no damage: the index's read reported it).
    Done { damage: Damage },
    /// The journal is not nearly in id order: visit it [`Order::Indexed`] instead.
    OutOfOrder,
}

/// A result directory's journal, open for consolidation.
struct Journal {
    path: PathBuf,
    file: fs::File,
}

impl Journal {
    fn open(dir: &Path) -> Result<Journal> {
        let path = dir.join(files::JOURNAL);
        let file = fs::File::open(&path).map_err(|e| Error::io("open the journal", &path, e))?;
        Ok(Journal { path, file })
    }

    /// Calls `each` with the latest record of every id, in id order.
    fn visit_latest(&self, order: &Order, mut each: impl FnMut(ProcessRecord) -> Result<()>) -> Result<Visit> {
        let mut payload = Vec::new();
        match order {
            Order::Indexed(latest) => {
                for &offset in latest {
                    each(read_record_at(&self.file, &self.path, offset, &mut payload)?)?;
                }
                Ok(Visit::Done { damage: Damage::default() })
            }
            &Order::Streamed { window, decoded_limit } => {
                // Records wait here until every smaller id was visited; a later record of an
                // id replaces an earlier one while both wait. The first `HELD_RECORDS` wait
                // decoded, the others as offsets to read again.
                let mut held: BTreeMap<u64, Held> = BTreeMap::new();
                let mut decoded = 0usize;
                let mut next = 0u64;
                let mut out_of_order = false;
                let mut failure = None;
                let mut visit = |held: Held, decoded: &mut usize| match held {
                    Held::Record(record) => {
                        *decoded -= 1;
                        each(*record)
                    }
                    Held::Offset(offset) => {
                        read_record_at(&self.file, &self.path, offset, &mut payload).and_then(&mut each)
                    }
                };
                let damage = read_journal_indexed(&self.path, |offset, record| {
                    if out_of_order || failure.is_some() {
                        return;
                    }
                    if record.id < next {
                        out_of_order = true;
                        return;
                    }
                    let id = record.id;
                    let entry = if decoded < decoded_limit {
                        decoded += 1;
                        Held::Record(Box::new(record))
                    } else {
                        Held::Offset(offset)
                    };
                    if let Some(Held::Record(_)) = held.insert(id, entry) {
                        decoded -= 1;
                    }
                    // Visit what may go: the next ids in order, or the smallest when too many wait.
                    loop {
                        let crowded = held.len() > window;
                        let Some(entry) = held.first_entry() else { break };
                        if *entry.key() != next && !crowded {
                            break;
                        }
                        let (id, entry) = entry.remove_entry();
                        next = id + 1;
                        if let Err(error) = visit(entry, &mut decoded) {
                            failure = Some(error);
                            return;
                        }
                    }
                })?;
                if let Some(error) = failure {
                    return Err(error);
                }
                if out_of_order {
                    return Ok(Visit::OutOfOrder);
                }
                for (_, entry) in held {
                    visit(entry, &mut decoded)?;
                }
                Ok(Visit::Done { damage })
            }
        }
    }

    /// The offset of every id's latest record, in id order (the journal read once), and
    /// what the read found damaged.
    fn latest_offsets(&self) -> Result<(Vec<u64>, Damage)> {
        let mut index: Vec<(u64, u64)> = Vec::new();
        let damage = read_journal_indexed(&self.path, |offset, record| index.push((record.id, offset)))?;
        // A stable sort keeps the journal's order among records of one id: the last one counts.
        index.sort_by_key(|&(id, _)| id);
        let latest = index
            .iter()
            .enumerate()
            .filter(|&(i, &(id, _))| !matches!(index.get(i + 1), Some(&(next, _)) if next == id))
            .map(|(_, &(_, offset))| offset)
            .collect();
        Ok((latest, damage))
    }
}

/// A consolidated file being written beside its place (`.<name>.tmp`), renamed into place
/// by `commit`. One dropped without its commit (a write failed, e.g. the disk is full) is
/// removed, so a failed consolidation leaves no temporary file behind.
struct Staged {
    tmp: PathBuf,
    path: PathBuf,
    out: BufWriter<Box<dyn Write + Send>>,
    committed: bool,
}

impl Staged {
    fn create(dir: &Path, name: &str) -> Result<Self> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        Ok(Staged::writing_to(Box::new(file), tmp, dir.join(name)))
    }

    fn writing_to(out: Box<dyn Write + Send>, tmp: PathBuf, path: PathBuf) -> Self {
        Staged { out: BufWriter::with_capacity(256 * 1024, out), tmp, path, committed: false }
    }

    fn json_line(&mut self, value: &impl serde::Serialize) -> Result<()> {
        serde_json::to_writer(&mut self.out, value)
            .map_err(|e| Error::io("write", &self.tmp, std::io::Error::other(e.to_string())))?;
        self.out.write_all(b"\n").map_err(|e| Error::io("write", &self.tmp, e))
    }

    fn commit(mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io("write", &self.tmp, e))?;
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io("move into place", &self.path, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            // What is still buffered would fail to write as the rest did; it is not wanted.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// The columns of `results.csv` (the keys of `results.jsonl`): `id`, `run`, the parameters,
/// the fixed status columns, the output's fields, `reason` — every name once.
///
/// A parameter named like a fixed column gets `~2`. An output field named like a fixed
/// column, `reason` or a parameter gets the prefix `output.`; a name still taken then gets
/// the first free suffix `~2`, `~3`, … Names are given in the order the records are read
/// (by id), so the same journal always gives the same columns.
struct Columns {
    names: Vec<String>,
    /// A parameter's column.
    params: HashMap<String, usize>,
    /// An output field's column (by its name from [`output_fields`]).
    outputs: HashMap<String, usize>,
}

impl Columns {
    fn new(params: &IndexSet<String>, outputs: &IndexSet<String>) -> Columns {
        let mut taken: HashSet<String> =
            LEADING.iter().chain(&TRAILING).chain(&["reason"]).map(|s| s.to_string()).collect();
        let mut names: Vec<String> = LEADING.iter().map(|s| s.to_string()).collect();
        fn claim(name: String, taken: &mut HashSet<String>, names: &mut Vec<String>) -> usize {
            let name = first_free(name, |n| taken.contains(n));
            taken.insert(name.clone());
            names.push(name);
            names.len() - 1
        }
        let params = params.iter().map(|p| (p.clone(), claim(p.clone(), &mut taken, &mut names))).collect();
        names.extend(TRAILING.iter().map(|s| s.to_string()));
        let outputs = outputs
            .iter()
            .map(|field| {
                let name = if taken.contains(field) { format!("output.{field}") } else { field.clone() };
                (field.clone(), claim(name, &mut taken, &mut names))
            })
            .collect();
        names.push("reason".into());
        Columns { names, params, outputs }
    }

    /// Fills `cells` with `record`'s cell of each column (`None` where it has none).
    fn fill(&self, record: &ProcessRecord, cells: &mut Vec<Option<Value>>) {
        cells.clear();
        cells.resize(self.names.len(), None);
        cells[0] = Some(Value::from(record.id));
        cells[1] = Some(Value::Int(i64::from(record.run)));
        for (name, value) in &record.params {
            if let Some(&i) = self.params.get(name) {
                cells[i] = Some(value.clone());
            }
        }
        let first = LEADING.len() + self.params.len();
        let fixed = [
            Value::Str(record.status.as_str().into()),
            Value::Float(record.duration_s),
            Value::Float(record.started_at),
            Value::Str(record.location.host.clone()),
            Value::Str(record.location.worker.clone()),
            Value::Int(i64::from(record.attempts)),
        ];
        for (i, value) in fixed.into_iter().enumerate() {
            cells[first + i] = Some(value);
        }
        if let Some(map) = flat_output(record) {
            for (field, value) in map {
                if let Some(&i) = self.outputs.get(field) {
                    cells[i] = Some(value.clone());
                }
            }
        } else {
            for (field, value) in output_fields(record) {
                if let Some(&i) = self.outputs.get(&field) {
                    cells[i] = Some(value);
                }
            }
        }
        let last = self.names.len() - 1;
        cells[last] = Some(record.reason.clone().map(Value::Str).unwrap_or(Value::Null));
    }
}

/// `name` if it is not `taken`, else the first of `name~2`, `name~3`, … that is not.
fn first_free(name: String, taken: impl Fn(&str) -> bool) -> String {
    if !taken(&name) {
        return name;
    }
    (2u64..).map(|n| format!("{name}~{n}")).find(|n| !taken(n)).unwrap_or(name)
}

/// The fields of a record's output, flattened (`a.b`, an empty key as `_`), each name once
/// within the record: a repeated name (`{"a.b": 1, "a": {"b": 2}}`) gets the first free
/// suffix `~2`, `~3`, … An output that is not a table is the one field `output`.
fn output_fields(record: &ProcessRecord) -> Vec<(String, Value)> {
    let mut fields = Vec::new();
    match &record.output {
        Value::Null => {}
        Value::Map(map) if map.is_empty() => {}
        Value::Map(_) => record.output.flatten_into("", &mut fields),
        other => fields.push(("output".to_owned(), other.clone())),
    }
    let mut seen: HashSet<String> = HashSet::with_capacity(fields.len());
    for (name, _) in &mut fields {
        if !seen.insert(name.clone()) {
            *name = first_free(std::mem::take(name), |n| seen.contains(n));
            seen.insert(name.clone());
        }
    }
    fields
}

/// A record's output when it is a table whose fields are [`output_fields`] as they are: no
/// empty key and no table inside (the usual output), so its keys are the field names
/// without a name being made per record.
fn flat_output(record: &ProcessRecord) -> Option<&indexmap::IndexMap<String, Value>> {
    match &record.output {
        Value::Map(map)
            if map.iter().all(|(key, value)| !key.is_empty() && !matches!(value, Value::Map(m) if !m.is_empty())) =>
        {
            Some(map)
        }
        _ => None,
    }
}

fn crash_record(record: &ProcessRecord) -> serde_json::Value {
    serde_json::json!({
        "id": record.id,
        "run": record.run,
        "params": serde_json::Value::from(Value::Map(record.params.clone())),
        "reason": record.reason,
        "stderr_tail": record.stderr_tail,
        "attempts": record.attempts,
        "host": record.location.host,
        "worker": record.location.worker,
        "started_at": record.started_at,
        "duration_s": record.duration_s,
    })
}

/// Reads `results.jsonl` of a consolidated result directory: one JSON object per process.
pub fn read_results_jsonl(dir: &Path) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    let path = dir.join(files::RESULTS_JSONL);
    let text = fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    text.lines()
        .map(|line| serde_json::from_str(line).map_err(|e| Error::io("parse", &path, std::io::Error::other(e))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::JournalWriter;
    use crate::Location;
    use proptest::prelude::*;

    /// A file system that is full: every write fails with ENOSPC.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_staged_file_that_fails_to_write_is_removed_and_nothing_is_moved_into_place() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let tmp = dir.path().join(".results.csv.tmp");
        fs::write(&tmp, "partial").expect("the staged file exists");
        let mut staged = Staged::writing_to(Box::new(Full), tmp.clone(), dir.path().join(files::RESULTS_CSV));
        let line = "x".repeat(300 * 1024);
        let error = staged.json_line(&line).expect_err("the disk is full");
        assert!(error.to_string().contains("No space left on device"), "{error}");
        drop(staged);
        assert!(!tmp.exists(), "the staged file is removed");
        assert!(!dir.path().join(files::RESULTS_CSV).exists(), "nothing was moved into place");
    }

    fn record(id: u64, attempt: u32) -> ProcessRecord {
        ProcessRecord {
            id,
            run: 0,
            params: Params::new(),
            status: Status::Finished,
            output: Value::Int(i64::from(attempt)),
            reason: None,
            stderr_tail: None,
            attempts: 1,
            started_at: 0.0,
            duration_s: 0.0,
            location: Location::here("test"),
        }
    }

    /// The (id, output) of each record `order` visits, or `None` when it found the journal
    /// out of order.
    fn visited(journal: &Journal, order: &Order) -> Option<Vec<(u64, Value)>> {
        let mut seen = Vec::new();
        let visit = journal
            .visit_latest(order, |r| {
                seen.push((r.id, r.output));
                Ok(())
            })
            .expect("the journal reads");
        matches!(visit, Visit::Done { .. }).then_some(seen)
    }

    proptest! {
        /// Whatever the journal's order and duplicates, streaming with any window visits what
        /// the index visits (each id's last record, in id order), or says it cannot.
        #[test]
        fn streaming_visits_what_the_index_visits(
            ids in proptest::collection::vec(0u64..40, 0..80),
            window in 0usize..12,
            decoded_limit in 0usize..4,
        ) {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let mut writer = JournalWriter::create(&dir.path().join(files::JOURNAL)).expect("a journal");
            for (n, &id) in ids.iter().enumerate() {
                writer.append(&record(id, n as u32)).expect("appends");
            }
            writer.sync().expect("syncs");
            let journal = Journal::open(dir.path()).expect("opens");
            let (latest, damage) = journal.latest_offsets().expect("indexes");
            prop_assert!(damage.is_none());
            let indexed = visited(&journal, &Order::Indexed(latest)).expect("the index visits all");
            let mut expected: BTreeMap<u64, Value> = BTreeMap::new();
            for (n, &id) in ids.iter().enumerate() {
                expected.insert(id, Value::Int(n as i64));
            }
            prop_assert_eq!(&indexed, &expected.into_iter().collect::<Vec<_>>());
            match visited(&journal, &Order::Streamed { window, decoded_limit }) {
                Some(streamed) => prop_assert_eq!(streamed, indexed),
                // A journal in id order, each id once, always streams.
                None => prop_assert!(
                    ids.windows(2).any(|pair| pair[0] >= pair[1]),
                    "{:?} is in order", ids
                ),
            }
        }
    }

    #[test]
    fn nearly_sorted_journals_stream_and_others_fall_back_to_the_index() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(files::JOURNAL);
        let mut writer = JournalWriter::create(&path).expect("a journal");
        // In flight four at a time, finishing in reverse: at most 3 places out of order.
        for chunk in (0..100u64).collect::<Vec<_>>().chunks(4) {
            for &id in chunk.iter().rev() {
                writer.append(&record(id, 0)).expect("appends");
            }
        }
        writer.sync().expect("syncs");
        let journal = Journal::open(dir.path()).expect("opens");
        let ids = |seen: Vec<(u64, Value)>| seen.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        let streamed = visited(&journal, &Order::Streamed { window: 3, decoded_limit: 2 }).expect("within the window");
        assert_eq!(ids(streamed), (0..100).collect::<Vec<_>>());
        assert_eq!(
            visited(&journal, &Order::Streamed { window: 2, decoded_limit: 2 }),
            None,
            "4 in flight need a window of 3"
        );

        // A resumed run re-ran process 7 after its turn: the index finds the later record.
        let mut writer = JournalWriter::append_to(&path).expect("reopens");
        writer.append(&record(7, 1)).expect("appends");
        writer.sync().expect("syncs");
        let journal = Journal::open(dir.path()).expect("opens");
        assert_eq!(
            visited(&journal, &Order::Streamed { window: 1000, decoded_limit: 2 }),
            None,
            "7 came back after its turn"
        );
        let consolidated = consolidate_dir(dir.path()).expect("consolidates");
        assert_eq!((consolidated.recorded, consolidated.finished), (100, 100));
        let rows = read_results_jsonl(dir.path()).expect("results.jsonl");
        let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().expect("an id")).collect();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert_eq!(rows[7]["output"], 1, "the later record of 7 counts: {:?}", rows[7]);
    }

    /// The rows of results.csv (header first) and results.jsonl.
    type Consolidation = (Vec<Vec<String>>, Vec<serde_json::Map<String, serde_json::Value>>);

    /// Consolidates records with these parameters and outputs.
    fn consolidate_outputs(records: &[(Params, Value)]) -> Consolidation {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut writer = JournalWriter::create(&dir.path().join(files::JOURNAL)).expect("a journal");
        for (id, (params, output)) in records.iter().enumerate() {
            let record = ProcessRecord { params: params.clone(), output: output.clone(), ..record(id as u64, 0) };
            writer.append(&record).expect("appends");
        }
        writer.sync().expect("syncs");
        consolidate_dir(dir.path()).expect("consolidates");
        let mut csv = csv::Reader::from_path(dir.path().join(files::RESULTS_CSV)).expect("results.csv");
        let mut rows = vec![csv.headers().expect("a header").iter().map(str::to_owned).collect::<Vec<_>>()];
        for row in csv.records() {
            rows.push(row.expect("a row").iter().map(str::to_owned).collect());
        }
        (rows, read_results_jsonl(dir.path()).expect("results.jsonl"))
    }

    fn json(text: &str) -> Value {
        serde_json::from_str::<serde_json::Value>(text).expect("JSON").into()
    }

    #[test]
    fn every_output_value_gets_a_column_of_its_own() {
        let params: Params =
            [("v".to_owned(), Value::Int(1)), ("output.v".to_owned(), Value::Int(2))].into_iter().collect();
        let output = json(r#"{"a.b": 1, "a": {"b": 2}, "v": 3, "": 4, "status": 5, "big": 18446744073709551615}"#);
        let (rows, jsonl) = consolidate_outputs(&[(params, output)]);
        assert_eq!(
            rows[0],
            [
                "id",
                "run",
                "v",
                "output.v",
                "status",
                "duration_s",
                "started_at",
                "host",
                "worker",
                "attempts",
                "a.b",
                "a.b~2",
                "output.v~2",
                "_",
                "output.status",
                "big",
                "reason"
            ]
        );
        let row = &rows[1];
        assert_eq!((&row[2], &row[3], &row[4]), (&"1".to_owned(), &"2".to_owned(), &"finished".to_owned()));
        assert_eq!(row[10..16], ["1", "2", "3", "4", "5", "18446744073709551615"]);
        let line = &jsonl[0];
        assert_eq!(
            (&line["a.b"], &line["a.b~2"], &line["output.v~2"], &line["_"]),
            (&1.into(), &2.into(), &3.into(), &4.into())
        );
        assert_eq!(line["big"].as_u64(), Some(u64::MAX), "the exact integer: {line:?}");
        assert_eq!(line["output.status"], 5);
        assert_eq!(line.len(), rows[0].len(), "{line:?}");
    }

    #[test]
    fn non_finite_outputs_are_written_faithfully() {
        let output = Value::Map(
            [("nan", f64::NAN), ("inf", f64::INFINITY), ("ninf", f64::NEG_INFINITY)]
                .into_iter()
                .map(|(k, f)| (k.to_owned(), Value::Float(f)))
                .collect(),
        );
        let (rows, jsonl) = consolidate_outputs(&[(Params::new(), output)]);
        assert_eq!(rows[0][8..11], ["nan", "inf", "ninf"]);
        assert_eq!(rows[1][8..11], ["NaN", "inf", "-inf"]);
        assert_eq!(
            (&jsonl[0]["nan"], &jsonl[0]["inf"], &jsonl[0]["ninf"]),
            (&"NaN".into(), &"Infinity".into(), &"-Infinity".into())
        );
    }

    /// Tables with keys that collide once flattened, or with columns.
    fn tricky_output() -> impl Strategy<Value = Value> {
        let key = prop_oneof![
            Just(String::new()),
            Just("_".to_owned()),
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("a.b".to_owned()),
            Just("a.b~2".to_owned()),
            Just("v".to_owned()),
            Just("output.v".to_owned()),
            Just("status".to_owned()),
            Just("reason".to_owned()),
            Just("id".to_owned()),
        ];
        let leaf = prop_oneof![any::<i64>().prop_map(Value::Int), "[a-z]{0,3}".prop_map(Value::Str)];
        leaf.prop_recursive(3, 12, 4, move |inner| {
            prop::collection::vec((key.clone(), inner), 0..5).prop_map(|kv| Value::Map(kv.into_iter().collect()))
        })
    }

    proptest! {
        /// Whatever the outputs, the header names each column once and every leaf of every
        /// output reaches its row of results.csv and results.jsonl.
        #[test]
        fn every_leaf_reaches_the_results(outputs in prop::collection::vec(tricky_output(), 1..4)) {
            let params: Params =
                [("v".to_owned(), Value::Int(-1)), ("output.v".to_owned(), Value::Int(-2))].into_iter().collect();
            let records: Vec<(Params, Value)> = outputs.iter().map(|o| (params.clone(), o.clone())).collect();
            let (rows, jsonl) = consolidate_outputs(&records);
            let header = &rows[0];
            let unique: HashSet<&String> = header.iter().collect();
            prop_assert_eq!(unique.len(), header.len(), "{:?}", header);
            let fixed = LEADING.len() + params.len() + TRAILING.len();
            for (n, output) in outputs.iter().enumerate() {
                let mut leaves = Vec::new();
                if !matches!(output, Value::Map(m) if m.is_empty()) {
                    output.flatten_into("", &mut leaves);
                }
                let mut expected: Vec<String> = leaves.iter().map(|(_, v)| v.to_string()).collect();
                let row = &rows[n + 1];
                let mut in_csv: Vec<String> = (fixed..header.len() - 1)
                    .filter(|&i| jsonl[n].contains_key(&header[i]))
                    .map(|i| row[i].clone())
                    .collect();
                expected.sort();
                in_csv.sort();
                prop_assert_eq!(&in_csv, &expected, "{:?} in {:?}", output, header);
                prop_assert_eq!(jsonl[n].len(), fixed + leaves.len() + 1, "{:?}", jsonl[n]);
                prop_assert_eq!(&row[2..4], &["-1".to_owned(), "-2".to_owned()][..]);
            }
        }
    }
}
