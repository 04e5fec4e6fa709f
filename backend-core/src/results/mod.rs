//! The result directory: creating `<base>/<name>/<UTC timestamp>/`, writing
//! `operation.toml`, and consolidating the journal into `results.csv`, `results.jsonl`
//! and `crashed.jsonl`.
//!
//! This module holds the file names and the fixed columns, and reads `results.jsonl`;
//! `directory` creates a result directory and writes its `operation.toml`, `consolidate`
//! writes the consolidated files from the journal, which `visit` reads in id order, with
//! the columns of `columns`, through the staged files of `staged`.

mod columns;
mod consolidate;
mod directory;
mod pending;
mod visit;

use std::fs;
use std::path::Path;

use crate::{Error, Result};

pub use consolidate::{consolidate_dir, write_report_page, Consolidated};
pub(crate) use directory::to_toml_table;
pub use directory::{check_format, create_result_dir, write_operation_toml, FORMAT_VERSION};

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
    /// The folder of a command's whole stdout and stderr with `output = "files"`
    /// (`logs/<id>.out`, `logs/<id>.err`).
    pub const LOGS_DIR: &str = "logs";
    /// Every process's output lines tagged by id, with `output = "log"`.
    pub const OUTPUT_LOG: &str = "output.log";
    /// Where each process's block of [`OUTPUT_LOG`] is: one line `id offset length` a block.
    pub const OUTPUT_INDEX: &str = "output.idx";
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
    use crate::{Location, Params, ProcessRecord, Status, Value};

    /// A finished record of `id` whose output is `attempt`.
    pub(super) fn record(id: u64, attempt: u32) -> ProcessRecord {
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
}
