//! The conformance suite: every backend runs the same operations as [`SerialBackend`] and
//! must produce the same set of outcomes, journal and consolidated files.
//!
//! A backend's tests call [`check_conformance`]; backends that cannot run inside a test
//! process (MPI) run [`conformance_operation`] in their own binary and compare its result
//! directory with [`assert_same_results`].

use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::journal::read_journal;
use crate::results::{files, read_results_jsonl};
use crate::{Backend, Operation, ParameterSpace, Process, ProcessContext, ProcessError, SerialBackend, Summary, Value};

/// The process of the conformance suite: computes from its parameters, fails with an error
/// for some, panics for others, and reads its context.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Probe {
    /// The input.
    pub x: i64,
    /// A factor.
    pub scale: f64,
    /// The run number it was made for.
    pub run: u32,
}

/// What a [`Probe`] returns: several fields, so flattening is exercised.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ProbeOutput {
    /// `x * x`.
    pub square: i64,
    /// `x * scale`.
    pub scaled: f64,
    /// Nested fields become dotted columns.
    pub seen: SeenByProcess,
}

/// What the process saw in its context.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SeenByProcess {
    /// `ctx.id()`.
    pub id: u64,
    /// `ctx.run()`.
    pub run: u32,
}

impl Process for Probe {
    type Output = ProbeOutput;

    fn run(&self, ctx: &ProcessContext<'_>) -> Result<ProbeOutput, ProcessError> {
        match self.x.rem_euclid(7) {
            3 => panic!("probe {} panics on purpose", self.x),
            5 => Err(ProcessError::msg(format!("probe {} fails on purpose", self.x))),
            _ => Ok(ProbeOutput {
                square: self.x * self.x,
                scaled: self.x as f64 * self.scale,
                seen: SeenByProcess { id: ctx.id(), run: ctx.run() },
            }),
        }
    }
}

/// The conformance operation: a sweep of 12 values of `x` × 2 scales, constrained, × 2 runs
/// (40 processes), some of which crash by error or by panic.
pub fn conformance_operation(results_base: &Path) -> Operation<Probe> {
    sized_operation(results_base, 12)
}

/// Like [`conformance_operation`] with `n` values of `x`.
pub fn sized_operation(results_base: &Path, n: i64) -> Operation<Probe> {
    let space = ParameterSpace::ranges([
        ("x", (0..n).map(Value::Int).collect()),
        ("scale", vec![Value::Float(0.5), Value::Float(2.0)]),
    ])
    .and_then(|s| s.constrain("!(x == 1 && scale > 1.0)"))
    .expect("the conformance space is valid");
    Operation::sweep("conformance", space, 2, |params, run| Probe {
        x: params["x"].as_i64().unwrap_or_default(),
        scale: params["scale"].as_f64().unwrap_or_default(),
        run,
    })
    .expect("the conformance operation is valid")
    .with_results_base(results_base)
}

/// Runs the conformance operation on `backend` and on [`SerialBackend`], and asserts that
/// both agree. Panics (it is a test helper) with what differs.
pub fn check_conformance<B: Backend<Probe>>(mut backend: B) {
    let base = tempfile::tempdir().expect("a temporary directory");
    let reference = SerialBackend::default().run(conformance_operation(base.path())).expect("the serial backend runs");
    let candidate = backend.run(conformance_operation(base.path())).expect("the backend under test runs");
    assert_eq!(candidate.backend, backend.name());
    assert_same_summary(&reference, &candidate);
    assert_same_results(&reference.dir, &candidate.dir);
    let status = backend.check_status();
    assert_eq!(status.finished + status.crashed, reference.finished + reference.crashed);
    assert_eq!(status.running, 0, "no process may still count as running after the end");
}

/// Asserts that two summaries count the same.
pub fn assert_same_summary(reference: &Summary, candidate: &Summary) {
    assert_eq!(candidate.total, reference.total, "total");
    assert_eq!(candidate.finished, reference.finished, "finished");
    assert_eq!(candidate.crashed, reference.crashed, "crashed");
    assert_eq!(candidate.missing(), 0, "every process has a record");
}

/// The columns that depend on when and where a process ran, ignored when comparing.
pub const RUN_DEPENDENT_COLUMNS: [&str; 4] = ["duration_s", "started_at", "host", "worker"];

/// Asserts that two result directories hold the same outcomes: the same ids exactly once,
/// the same parameters, statuses, outputs and reasons in `results.jsonl` and `results.csv`,
/// the same crashed ids in `crashed.jsonl`, and an intact journal with one record per process.
pub fn assert_same_results(reference: &Path, candidate: &Path) {
    let rows = assert_same_outcomes(reference, candidate);
    let journal = read_journal(&candidate.join(files::JOURNAL)).expect("the journal is readable");
    assert!(journal.damage.is_none(), "the journal is intact");
    assert_eq!(journal.records.len(), rows, "one journal record per process");
}

/// Asserts what [`assert_same_results`] does of the consolidated files and
/// `operation.toml` (not of the journal); returns the number of rows.
pub fn assert_same_outcomes(reference: &Path, candidate: &Path) -> usize {
    let strip = |dir: &Path| -> Vec<serde_json::Map<String, serde_json::Value>> {
        let mut rows = read_results_jsonl(dir).expect("results.jsonl is readable");
        for row in &mut rows {
            for column in RUN_DEPENDENT_COLUMNS {
                row.remove(column);
            }
        }
        rows
    };
    let (want, got) = (strip(reference), strip(candidate));
    let ids: Vec<u64> = got.iter().map(|r| r["id"].as_u64().expect("an id")).collect();
    let unique: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "every id exactly once in results.jsonl");
    assert_eq!(got.len(), want.len(), "as many rows as the reference");
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(g, w, "row of process {}", w["id"]);
    }
    assert_eq!(csv_without_run_columns(candidate), csv_without_run_columns(reference), "results.csv");
    let crashed = |dir: &Path| -> Vec<u64> {
        let text = std::fs::read_to_string(dir.join(files::CRASHED_JSONL)).expect("crashed.jsonl is readable");
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("a JSON line")["id"].as_u64().expect("an id"))
            .collect()
    };
    assert_eq!(crashed(candidate), crashed(reference), "crashed.jsonl");
    assert!(candidate.join(files::OPERATION).is_file(), "operation.toml is written");
    want.len()
}

fn csv_without_run_columns(dir: &Path) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_path(dir.join(files::RESULTS_CSV)).expect("results.csv is readable");
    let headers = reader.headers().expect("a header").clone();
    let keep: Vec<usize> = (0..headers.len()).filter(|&i| !RUN_DEPENDENT_COLUMNS.contains(&&headers[i])).collect();
    let mut rows = vec![keep.iter().map(|&i| headers[i].to_owned()).collect()];
    for record in reader.records() {
        let record = record.expect("a CSV row");
        rows.push(keep.iter().map(|&i| record[i].to_owned()).collect());
    }
    rows
}

/// The benchmark workload of learnt scheduling: `count` processes whose duration grows
/// with their parameter `size` (heavy-tailed: most are small, a few large), times ±20 %
/// noise, in shuffled order, scaled to `total` in all (fixed `seed`). Returns `(size,
/// duration)` per process, in the order they are handed to the backend.
pub fn learnable_workload(count: usize, total: std::time::Duration, seed: u64) -> Vec<(i64, std::time::Duration)> {
    let mut state = seed.max(1);
    let mut next = move || {
        // xorshift64*: enough randomness for a benchmark's durations.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    let raw: Vec<(i64, f64)> = (0..count)
        .map(|_| {
            // Pareto sizes (shape 1.3) from 1 to 100; the duration grows as size^1.5.
            let size = (1.0 - next()).powf(-1.0 / 1.3).min(100.0).ceil() as i64;
            let noise = 0.8 + 0.4 * next();
            (size, (size as f64).powf(1.5) * noise)
        })
        .collect();
    let sum: f64 = raw.iter().map(|(_, d)| d).sum();
    raw.into_iter().map(|(size, d)| (size, total.mul_f64(d / sum))).collect()
}

/// The makespans, on `workers` workers, of schedules of `durations` (in this order) that
/// the benchmark compares with: what a scheduler with no knowledge and no overhead achieves
/// (`in_order`: each process in order to the first free worker; `static_split`: worker w
/// gets processes w, w + W, ...), what knowing every duration in advance achieves (`lpt`:
/// longest first to the first free worker), and the lower bound `max(longest, total / W)`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedules {
    /// The lower bound of any schedule.
    pub bound: std::time::Duration,
    /// The ideal in-order dynamic schedule.
    pub in_order: std::time::Duration,
    /// Static round-robin.
    pub static_split: std::time::Duration,
    /// Longest processing time first, with perfect knowledge.
    pub lpt: std::time::Duration,
}

impl Schedules {
    /// The schedules of `durations` on `workers` workers.
    pub fn of(durations: &[std::time::Duration], workers: usize) -> Schedules {
        use std::time::Duration;
        let workers = workers.max(1);
        let list = |order: &mut dyn Iterator<Item = Duration>| {
            let mut free_at = vec![Duration::ZERO; workers];
            for d in order {
                if let Some(earliest) = free_at.iter_mut().min() {
                    *earliest += d;
                }
            }
            free_at.into_iter().max().unwrap_or_default()
        };
        let total: Duration = durations.iter().sum();
        let longest = durations.iter().max().copied().unwrap_or_default();
        let mut sorted = durations.to_vec();
        sorted.sort_by(|a, b| b.cmp(a));
        Schedules {
            bound: longest.max(total / u32::try_from(workers).unwrap_or(u32::MAX)),
            in_order: list(&mut durations.iter().copied()),
            static_split: (0..workers)
                .map(|w| durations.iter().skip(w).step_by(workers).sum::<Duration>())
                .max()
                .unwrap_or_default(),
            lpt: list(&mut sorted.into_iter()),
        }
    }
}
