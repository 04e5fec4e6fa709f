//! `RunReport`: what happened in a run, computed from its journal — counts by status, wall
//! time, how busy each worker was, the slowest processes and the crash reasons grouped.
//! `taskfarm-worker report DIR` prints it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::journal::{read_journal_with, Damage};
use crate::results::files;
use crate::{ProcessRecord, Result, Status};

/// How many of the slowest processes a report lists.
pub const SLOWEST: usize = 5;

/// A summary of one run, read from its result directory (`--json` prints it as JSON).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct RunReport {
    /// Processes with a record (the latest record of an id counts).
    pub recorded: u64,
    /// Of those, finished.
    pub finished: u64,
    /// Of those, crashed (timed-out ones included).
    pub crashed: u64,
    /// Of the crashed, those that ran past their timeout.
    pub timed_out: u64,
    /// From the first start to the last end, in seconds.
    pub wall_s: f64,
    /// Per worker (`host/worker`): processes run and seconds busy, in natural order of names (`thread-2` before `thread-10`).
    pub workers: Vec<WorkerLoad>,
    /// The slowest processes, slowest first: (id, seconds, parameters as `k=v`).
    pub slowest: Vec<(u64, f64, String)>,
    /// Crashed processes grouped by reason, the largest group first.
    pub crash_groups: Vec<CrashGroup>,
    /// What was skipped or ignored of the journal (corrupt records, a torn end).
    pub damage: Damage,
}

/// The crashed processes that share a reason.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CrashGroup {
    /// The reason, as recorded.
    pub reason: String,
    /// How many processes crashed with it.
    pub count: u64,
    /// The smallest ids among them (at most [`GROUP_IDS`]).
    pub ids: Vec<u64>,
    /// The last non-empty line of the first one's stderr (where programs and tracebacks put
    /// the error), if it wrote any.
    pub stderr_line: Option<String>,
}

/// How many ids a crash group lists.
pub const GROUP_IDS: usize = 5;

/// How busy one worker was.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WorkerLoad {
    /// `host/worker`.
    pub name: String,
    /// Processes it ran.
    pub processes: u64,
    /// Seconds it spent running them.
    pub busy_s: f64,
}

impl RunReport {
    /// Reads the journal of the result directory `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut latest: BTreeMap<u64, ProcessRecord> = BTreeMap::new();
        let damage = read_journal_with(&dir.join(files::JOURNAL), |r| {
            latest.insert(r.id, r);
        })?;
        Ok(RunReport { damage, ..Self::from_records(latest.values()) })
    }

    /// Computes the report of these records.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a ProcessRecord>) -> Self {
        let mut tally = Tally::new(SLOWEST);
        for r in records {
            tally.add(r);
        }
        tally.finish()
    }

    /// Busy time of all workers over (wall time × workers): 1.0 when no worker ever idled.
    pub fn utilisation(&self) -> f64 {
        let busy: f64 = self.workers.iter().map(|w| w.busy_s).sum();
        let capacity = self.wall_s * self.workers.len() as f64;
        if capacity > 0.0 {
            busy / capacity
        } else {
            0.0
        }
    }
}

/// A [`RunReport`] gathered one record at a time (the latest record of each id, each once),
/// in memory bounded by the number of workers and crash reasons, not of processes.
#[derive(Debug)]
pub(crate) struct Tally {
    report: RunReport,
    first: f64,
    last: f64,
    slowest_kept: usize,
    /// By host, then worker.
    workers: BTreeMap<String, BTreeMap<String, WorkerLoad>>,
    groups: BTreeMap<String, CrashGroup>,
}

impl Tally {
    /// An empty tally that keeps the `slowest` slowest processes.
    pub(crate) fn new(slowest: usize) -> Self {
        Tally {
            report: RunReport {
                recorded: 0,
                finished: 0,
                crashed: 0,
                timed_out: 0,
                wall_s: 0.0,
                workers: Vec::new(),
                slowest: Vec::new(),
                crash_groups: Vec::new(),
                damage: Damage::default(),
            },
            first: f64::INFINITY,
            last: f64::NEG_INFINITY,
            slowest_kept: slowest,
            workers: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }

    /// Counts one process's record.
    pub(crate) fn add(&mut self, r: &ProcessRecord) {
        let report = &mut self.report;
        report.recorded += 1;
        match r.status {
            Status::Finished => report.finished += 1,
            Status::Crashed | Status::TimedOut => {
                report.crashed += 1;
                report.timed_out += u64::from(r.status == Status::TimedOut);
                let reason = r.reason.clone().unwrap_or_else(|| "no reason given".into());
                let group = self.groups.entry(reason.clone()).or_insert_with(|| CrashGroup {
                    reason,
                    count: 0,
                    ids: Vec::new(),
                    stderr_line: None,
                });
                group.count += 1;
                if group.ids.len() < GROUP_IDS || group.ids.last().is_some_and(|&last| r.id < last) {
                    let line = r.stderr_tail.as_deref().and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()));
                    if group.ids.first().is_none_or(|&first| r.id < first) {
                        group.stderr_line = line.map(|l| l.trim().to_owned());
                    }
                    group.ids.push(r.id);
                    group.ids.sort_unstable();
                    group.ids.truncate(GROUP_IDS);
                }
            }
        }
        self.first = self.first.min(r.started_at);
        self.last = self.last.max(r.started_at + r.duration_s);
        // Looked up by host, then worker, without making a name per record.
        let (host, worker) = (&r.location.host, &r.location.worker);
        let workers = match self.workers.get_mut(host.as_str()) {
            Some(workers) => workers,
            None => self.workers.entry(host.clone()).or_default(),
        };
        let load = match workers.get_mut(worker.as_str()) {
            Some(load) => load,
            None => workers.entry(worker.clone()).or_insert(WorkerLoad {
                name: format!("{host}/{worker}"),
                processes: 0,
                busy_s: 0.0,
            }),
        };
        load.processes += 1;
        load.busy_s += r.duration_s;
        let slowest = &mut report.slowest;
        if slowest.len() < self.slowest_kept || slowest.last().is_some_and(|s| s.1 < r.duration_s) {
            slowest.push((r.id, r.duration_s, params_text(&r.params)));
            slowest.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            slowest.truncate(self.slowest_kept);
        }
    }

    /// The report of what was added (its `damage` is left empty).
    pub(crate) fn finish(self) -> RunReport {
        let mut report = self.report;
        report.wall_s = if self.last > self.first { self.last - self.first } else { 0.0 };
        report.workers = self.workers.into_values().flat_map(BTreeMap::into_values).collect();
        report.workers.sort_by(|a, b| natural_cmp(&a.name, &b.name));
        let mut groups: Vec<CrashGroup> = self.groups.into_values().collect();
        groups.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.reason.cmp(&b.reason)));
        report.crash_groups = groups;
        report
    }
}

/// Parameters as `k=v k=v`, as the report and the page show them.
pub(crate) fn params_text(params: &crate::Params) -> String {
    let params: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    params.join(" ")
}

/// Orders names as people count: runs of digits by their value, so `thread-2` comes before
/// `thread-10` and `rank-2/thread-1` before `rank-10/thread-0`; other text by its bytes.
pub(crate) fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let digits = |s: &[u8]| s.iter().take_while(|c| c.is_ascii_digit()).count();
                let (na, nb) = (digits(a), digits(b));
                let trim = |s: &[u8]| {
                    let zeros = s.iter().take_while(|&&c| c == b'0').count();
                    s[zeros..].to_vec()
                };
                let (ta, tb) = (trim(&a[..na]), trim(&b[..nb]));
                // Without leading zeros, a longer run is a larger number; runs of one length
                // compare digit by digit. Equal values with more leading zeros come later.
                let order = ta.len().cmp(&tb.len()).then_with(|| ta.cmp(&tb)).then(na.cmp(&nb));
                if order != Ordering::Equal {
                    return order;
                }
                a = &a[na..];
                b = &b[nb..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "processes: {} recorded, {} finished, {} crashed ({} of them timed out)",
            self.recorded, self.finished, self.crashed, self.timed_out
        )?;
        writeln!(f, "wall time: {:.3} s (first start to last end)", self.wall_s)?;
        writeln!(f, "utilisation: {:.1}% over {} workers", 100.0 * self.utilisation(), self.workers.len())?;
        for w in &self.workers {
            let share = if self.wall_s > 0.0 { 100.0 * w.busy_s / self.wall_s } else { 0.0 };
            writeln!(f, "  {:<30} {:>7} processes  busy {:>9.3} s  {:>5.1}%", w.name, w.processes, w.busy_s, share)?;
        }
        writeln!(f, "slowest processes:")?;
        for (id, seconds, params) in &self.slowest {
            writeln!(f, "  #{id:<8} {seconds:>9.3} s  {params}")?;
        }
        if !self.crash_groups.is_empty() {
            writeln!(f, "crash reasons:")?;
            for group in &self.crash_groups {
                write!(f, "{group}")?;
            }
        }
        for skipped in &self.damage.skipped {
            writeln!(
                f,
                "journal damage: {} corrupt bytes at offset {} skipped ({}); the processes recorded there run again on --resume",
                skipped.len, skipped.offset, skipped.why
            )?;
        }
        if let Some(torn) = &self.damage.torn_tail {
            writeln!(f, "journal damage: a torn end at offset {} ignored ({})", torn.offset, torn.why)?;
        }
        Ok(())
    }
}

impl fmt::Display for CrashGroup {
    /// `   12 × reason` and below it the stderr line and the first ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "  {:>7} × {}", self.count, self.reason)?;
        if let Some(line) = &self.stderr_line {
            writeln!(f, "            stderr: {line}")?;
        }
        let ids: Vec<String> = self.ids.iter().map(|id| format!("#{id}")).collect();
        let more = if self.count > self.ids.len() as u64 { ", ..." } else { "" };
        writeln!(f, "            processes {}{more}", ids.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Location, Params, Value};

    fn record(id: u64, worker: &str, start: f64, duration: f64, reason: Option<&str>) -> ProcessRecord {
        ProcessRecord {
            id,
            run: 0,
            params: Params::from_iter([("x".to_owned(), Value::Int(id as i64))]),
            status: if reason.is_some() { Status::Crashed } else { Status::Finished },
            output: Value::Null,
            reason: reason.map(str::to_owned),
            stderr_tail: None,
            attempts: 1,
            started_at: start,
            duration_s: duration,
            location: Location { host: "h".into(), worker: worker.into() },
        }
    }

    #[test]
    fn counts_utilisation_slowest_and_reasons() {
        let records = [
            record(0, "a", 0.0, 2.0, None),
            record(1, "b", 0.0, 1.0, Some("boom")),
            record(2, "b", 1.0, 1.0, Some("boom")),
            record(3, "a", 2.0, 0.5, Some("bang")),
        ];
        let report = RunReport::from_records(&records);
        assert_eq!((report.recorded, report.finished, report.crashed), (4, 1, 3));
        assert_eq!(report.wall_s, 2.5);
        assert_eq!(report.workers.len(), 2);
        assert!((report.utilisation() - 4.5 / 5.0).abs() < 1e-9);
        assert_eq!(report.slowest[0].0, 0);
        let groups: Vec<(&str, u64, &[u64])> =
            report.crash_groups.iter().map(|g| (g.reason.as_str(), g.count, g.ids.as_slice())).collect();
        assert_eq!(groups, vec![("boom", 2, &[1, 2][..]), ("bang", 1, &[3][..])]);
        let text = report.to_string();
        assert!(text.contains("utilisation: 90.0% over 2 workers"), "{text}");
        assert!(text.contains("2 × boom"), "{text}");
    }

    #[test]
    fn names_are_ordered_as_people_count() {
        let mut names = vec![
            "thread-10",
            "thread-2",
            "rank-10/thread-0",
            "rank-2/thread-1",
            "rank-2/thread-10",
            "rank-2/thread-2",
            "thread-02",
            "a",
            "",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            [
                "",
                "a",
                "rank-2/thread-1",
                "rank-2/thread-2",
                "rank-2/thread-10",
                "rank-10/thread-0",
                "thread-2",
                "thread-02",
                "thread-10"
            ]
        );
    }

    #[test]
    fn workers_are_listed_in_natural_order() {
        let records = [record(0, "thread-10", 0.0, 1.0, None), record(1, "thread-2", 0.0, 1.0, None)];
        let report = RunReport::from_records(&records);
        let names: Vec<&str> = report.workers.iter().map(|w| w.name.as_str()).collect();
        assert_eq!(names, ["h/thread-2", "h/thread-10"]);
    }
}
