//! Consolidation: the journal of a result directory read in two passes (the columns and the
//! timeline's span, then the rows) into `results.csv`, `results.jsonl`, `crashed.jsonl`,
//! `summary.csv`, `timeline.svg` and `report.html`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use indexmap::IndexSet;

use super::columns::{flat_output, output_fields, Columns};
use super::files;
use super::pending::PendingFile;
use super::visit::{Journal, Order, Visit, HELD_RECORDS, REORDER_WINDOW};
use crate::journal::Damage;
use crate::{Error, ProcessRecord, Result, Status, Value};

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
    let mut csv_out = PendingFile::create(dir, files::RESULTS_CSV)?;
    let mut jsonl_out = PendingFile::create(dir, files::RESULTS_JSONL)?;
    let mut crashed_out = PendingFile::create(dir, files::CRASHED_JSONL)?;
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
    let mut out = PendingFile::writing_to(Box::new(file), tmp, dir.join(files::REPORT_HTML));
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
        "started_at": crate::utc::format_rfc3339(record.started_at),
        "duration_s": record.duration_s,
    })
}
