//! Writing `summary.csv` at consolidation ([`SummaryPass`], one row per parameter point)
//! and reading it back ([`read_summary`]).

use std::fs;
use std::io::Write;
use std::path::Path;

use indexmap::IndexMap;

use super::{AdaptiveRuns, PointStats, STATISTICS, SUMMARY_CSV};
use crate::results::files;
use crate::{Error, Params, ProcessRecord, Result, Value};

/// The statistics of each parameter point, gathered from the latest record of each id in
/// id order (as consolidation streams them), for `summary.csv`. Memory grows with the
/// number of points, not of records; when no point has more than one run it gathers
/// nothing.
#[derive(Debug)]
pub struct SummaryPass {
    /// Whether some point has more than one run: there is a summary to write.
    repeated: bool,
    /// Each point, keyed by its parameters as JSON: its first id and its parameters.
    points: IndexMap<String, (u64, Params)>,
    /// The statistics of each point, in the order of `points`.
    stats: Vec<PointStats>,
    /// The key of the record being added (kept to spare an allocation per record).
    key: Vec<u8>,
}

impl SummaryPass {
    /// A pass for an operation where some point has more than one run when `repeated`
    /// (a record with `run > 0`), otherwise one that gathers nothing and removes a stale
    /// `summary.csv`.
    pub fn new(repeated: bool) -> SummaryPass {
        SummaryPass { repeated, points: IndexMap::new(), stats: Vec::new(), key: Vec::new() }
    }

    /// Adds the latest record of one id; records are added in id order.
    pub fn add(&mut self, record: &ProcessRecord) {
        if !self.repeated {
            return;
        }
        self.key.clear();
        if serde_json::to_writer(&mut self.key, &record.params).is_err() {
            self.key.clear();
        }
        let key = std::str::from_utf8(&self.key).unwrap_or_default();
        let index = match self.points.get_index_of(key) {
            Some(index) => {
                if let Some((first, _)) = self.points.get_index_mut(index).map(|(_, point)| point) {
                    *first = (*first).min(record.id);
                }
                index
            }
            None => {
                self.points.insert(key.to_owned(), (record.id, record.params.clone()));
                self.stats.push(PointStats::default());
                self.stats.len() - 1
            }
        };
        if let Some(stats) = self.stats.get_mut(index) {
            stats.add(record);
        }
    }

    /// Writes `summary.csv` in `dir` (beside, then renamed into place), or removes a stale
    /// one when no point has more than one run.
    pub fn write(self, dir: &Path) -> Result<()> {
        let path = dir.join(SUMMARY_CSV);
        if !self.repeated {
            let _ = fs::remove_file(&path);
            return Ok(());
        }
        let SummaryPass { points, stats, .. } = self;
        let spec = read_spec(dir);
        let adaptive = spec.as_ref().map(AdaptiveRuns::from_spec).transpose().ok().flatten().flatten();
        write_points(&path, dir, &points, &stats, adaptive.as_ref())
    }
}

/// Writes the rows of `points` (with their `stats`) to `path`, beside and renamed into place.
fn write_points(
    path: &Path,
    dir: &Path,
    points: &IndexMap<String, (u64, Params)>,
    stats: &[PointStats],
    adaptive: Option<&AdaptiveRuns>,
) -> Result<()> {
    let mut fields: indexmap::IndexSet<String> = indexmap::IndexSet::new();
    let mut param_names: indexmap::IndexSet<String> = indexmap::IndexSet::new();
    for ((_, params), point) in points.values().zip(stats) {
        param_names.extend(params.keys().cloned());
        fields.extend(point.fields.keys().cloned());
    }
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| points[i].0);

    let mut header: Vec<String> = param_names.iter().cloned().collect();
    header.extend(["runs", "finished", "crashed"].map(String::from));
    if adaptive.is_some() {
        header.push("stopped".into());
    }
    for field in &fields {
        header.extend(STATISTICS.iter().map(|s| format!("{field}.{s}")));
    }
    let tmp = dir.join(format!(".{SUMMARY_CSV}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut csv = csv::Writer::from_writer(std::io::BufWriter::new(fs::File::create(&tmp)?));
        csv.write_record(&header)?;
        for i in order {
            let (params, point) = (&points[i].1, &stats[i]);
            let mut row: Vec<String> =
                param_names.iter().map(|n| params.get(n).map(Value::csv_cell).unwrap_or_default()).collect();
            row.extend([point.runs, point.finished, point.crashed].map(|n| n.to_string()));
            if let Some(adaptive) = &adaptive {
                let stopped = match (adaptive.done(point), adaptive.until.holds(point)) {
                    (true, true) => "converged",
                    (true, false) => "max",
                    (false, _) => "unfinished",
                };
                row.push(stopped.into());
            }
            for field in &fields {
                let stats = point.fields.get(field).copied().unwrap_or_default();
                row.extend(STATISTICS.iter().map(|s| match stats.get(s) {
                    Some(x) if x.is_finite() => x.to_string(),
                    _ => String::new(),
                }));
            }
            csv.write_record(&row)?;
        }
        csv.into_inner().map_err(|e| std::io::Error::other(e.to_string()))?.flush()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", &tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| Error::io("move into place", &tmp, e))
}

/// The spec of the run in `dir` (its `operation.toml`), if it reads.
fn read_spec(dir: &Path) -> Option<Params> {
    let text = fs::read_to_string(dir.join(files::OPERATION)).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    match Value::from_serialize(&table).ok()? {
        Value::Map(map) => Some(map),
        _ => None,
    }
}

/// A CSV file as text: its header and its rows.
pub type CsvText = (Vec<String>, Vec<Vec<String>>);

/// Reads `summary.csv` of `dir`: its header and rows, as text (`None` if there is none).
pub fn read_summary(dir: &Path) -> Result<Option<CsvText>> {
    let path = dir.join(SUMMARY_CSV);
    if !path.is_file() {
        return Ok(None);
    }
    let mut reader = csv::Reader::from_path(&path).map_err(|e| Error::io("read", &path, std::io::Error::other(e)))?;
    let header = reader
        .headers()
        .map_err(|e| Error::io("read", &path, std::io::Error::other(e)))?
        .iter()
        .map(String::from)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.map(|r| r.iter().map(String::from).collect()))
        .collect::<std::result::Result<Vec<Vec<String>>, _>>()
        .map_err(|e| Error::io("read", &path, std::io::Error::other(e)))?;
    Ok(Some((header, rows)))
}
