//! How a backend runs one job with the operation's reliability options: per-process
//! `timeout`, `retries` and `isolation` (`thread` or `subprocess`), and the process-wide
//! stop flag that Ctrl-C sets. Every backend calls [`execute_job`], so serial, local and MPI
//! behave alike.
//!
//! **Subprocess isolation** runs each attempt in a child of the current executable: see
//! [`crate::subprocess`] for the protocol (and why `main` must call
//! [`run_child_if_requested`](crate::run_child_if_requested) first) and [`crate::child`] for
//! how children are run and killed.
//!
//! **Timeouts in thread isolation** cannot be enforced (a thread cannot be killed): the
//! process is given the deadline ([`ProcessContext::deadline`](crate::ProcessContext::deadline))
//! and a process that honours it, such as the worker's `command` kind (it kills its child
//! process group), stops in time; a result that comes after the deadline is recorded as
//! timed out all the same.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::record::run_attempt;
use crate::{Job, Location, Process, ProcessRecord, Status, Value};

/// Where a process runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// In a thread of the worker (the default): cheap; a panic is caught, but a segfault or
    /// an abort takes the worker down, and a timeout cannot be enforced.
    #[default]
    Thread,
    /// In a child of the worker program, one per attempt: a crash costs only that process
    /// and a timeout kills it (and its process group).
    Subprocess,
}

impl Isolation {
    /// The word used in spec files and `operation.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Thread => "thread",
            Isolation::Subprocess => "subprocess",
        }
    }

    /// Reads `thread` or `subprocess`; the error is a sentence.
    pub fn parse(text: &str) -> Result<Isolation, String> {
        match text {
            "thread" => Ok(Isolation::Thread),
            "subprocess" => Ok(Isolation::Subprocess),
            other => Err(format!("`isolation` must be \"thread\" or \"subprocess\", not \"{other}\"")),
        }
    }
}

/// The reliability options of an operation (see [`execute_job`]), and how many
/// threads each process takes. Serde is for backends that send them to their workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// How long one attempt of a process may run; `None`: no limit.
    pub timeout: Option<Duration>,
    /// How many more times a crashed or timed-out process is run.
    pub retries: u32,
    /// Where each attempt runs.
    pub isolation: Isolation,
    /// How many threads of its worker each process occupies (default 1; 0 counts as 1): a
    /// backend with a pool of threads reserves that many slots for it, and the process sees
    /// the number in [`ProcessContext::threads`](crate::ProcessContext::threads).
    pub threads: usize,
    /// Whether a process running far past its prediction may run a second copy on an idle
    /// thread once nothing is left to start (see [`crate::speculate`]; default `true`).
    /// Off for processes with side effects that must not run twice.
    pub speculate: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { timeout: None, retries: 0, isolation: Isolation::Thread, threads: 1, speculate: true }
    }
}

impl RunOptions {
    /// The threads each process occupies, at least 1.
    pub fn process_threads(&self) -> usize {
        self.threads.max(1)
    }
}

/// Reads a duration: a number of seconds (`30`, `1.5`), a number with a unit (`250ms`,
/// `30s`, `5m`, `2h`), or what humantime reads (`1h30m`, `2d`, `1m 30s`). The error is a
/// sentence.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    // Compound and other units ("1h30m", "2d", "1day 2h") as humantime reads them.
    let seconds = match value * scale {
        s if s.is_nan() => humantime::parse_duration(text).map_or(f64::NAN, |d| d.as_secs_f64()),
        s => s,
    };
    seconds_to_duration(seconds).ok_or_else(|| {
        format!(
            "`{text}` is not a duration: write a positive number of seconds below {MAX_TIMEOUT_SECONDS:e}, or e.g. \
             \"250ms\", \"30s\", \"5m\", \"2h\", \"1h30m\", \"2d\""
        )
    })
}

/// The longest timeout, in seconds (exclusive; about 31,700 years): far beyond any run, and
/// far from where adding it to a clock's reading could overflow.
pub const MAX_TIMEOUT_SECONDS: f64 = 1e12;

/// A positive, finite number of seconds below [`MAX_TIMEOUT_SECONDS`] as a duration.
pub fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds > 0.0 && seconds < MAX_TIMEOUT_SECONDS).then(|| Duration::from_secs_f64(seconds))
}

/// A duration as spec files write it, e.g. `30s` or `0.25s`.
pub fn format_duration(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

/// The threads a pool has by default: one per core this program may use (the local
/// backend's pool, the command line's limits on `--pool-size`).
pub fn default_pool_size() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// The stop requests of this program: how many there were (the low bits) and whether the
/// first came through the result directory ([`DRAIN`]). One atomic, so no reader ever sees
/// a count without the kind of stop it belongs to.
static STOP: AtomicU8 = AtomicU8::new(0);
/// Set in [`STOP`] when the first stop request was [`request_drain`]'s.
const DRAIN: u8 = 0x80;

/// Asks every backend of this program to stop pulling jobs (a first Ctrl-C): processes
/// already running finish and are recorded. A second request means "stop now": records
/// that arrive after it are not journaled (those processes run again on `--resume`).
/// Returns how many times a stop has been requested.
pub fn request_stop() -> u8 {
    let before = STOP.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| Some(one_more_stop(v))).unwrap_or_default();
    one_more_stop(before) & !DRAIN
}

/// The stop requests `stops` (as [`STOP`] holds them) and one more: the count grows (up to
/// its bits), the kind of the first stays.
fn one_more_stop(stops: u8) -> u8 {
    (stops & DRAIN) | (stops & !DRAIN).saturating_add(1).min(!DRAIN)
}

/// Asks for a graceful stop that no launcher follows with a teardown (`taskfarm-worker
/// cancel`, through the result directory): as a first Ctrl-C, and moreover a backend whose
/// workers a signal would end at once (MPI, whose `mpirun` signals every rank) waits for
/// the processes its workers run and ends them normally. Does nothing when a stop was
/// requested already (a later one is "stop now", not a second graceful stop); returns
/// whether this was the first request.
pub fn request_drain() -> bool {
    STOP.compare_exchange(0, DRAIN | 1, Ordering::SeqCst, Ordering::SeqCst).is_ok()
}

/// Whether the stop requested is [`request_drain`]'s, and nothing asked since to stop now:
/// workers are then waited for, however long their processes run.
pub fn stop_drains() -> bool {
    STOP.load(Ordering::SeqCst) == DRAIN | 1
}

static STOP_EXIT_STATUS: AtomicU8 = AtomicU8::new(0);

/// Says which exit status the program leaves with once stopped (130 after SIGINT, 143 after
/// SIGTERM): a backend that must end the program itself (MPI, aborting ranks that cannot
/// answer) ends it with this status.
pub fn set_stop_exit_status(status: u8) {
    let _ = STOP_EXIT_STATUS.compare_exchange(0, status, Ordering::SeqCst, Ordering::SeqCst);
}

/// The status given to [`set_stop_exit_status`], if any.
pub fn stop_exit_status() -> Option<u8> {
    Some(STOP_EXIT_STATUS.load(Ordering::SeqCst)).filter(|&s| s != 0)
}

/// Whether a stop was requested (see [`request_stop`]).
pub fn stop_requested() -> bool {
    (STOP.load(Ordering::SeqCst) & !DRAIN) > 0
}

/// Whether a second stop ("stop now") was requested.
pub(crate) fn stop_now_requested() -> bool {
    (STOP.load(Ordering::SeqCst) & !DRAIN) > 1
}

static DEADLINE_NOW: AtomicBool = AtomicBool::new(false);

/// Says that the run's deadline is now, as a batch system's early warning before its
/// wall-time limit does (Slurm's `--signal`): every backend of this program stops pulling
/// jobs as at an operation's deadline — the running processes finish and the run ends
/// resumable ([`Summary::deadline_reached`](crate::Summary::deadline_reached)), not
/// stopped. Like the stop flag it is never cleared: the program is expected to leave.
pub fn reach_deadline_now() {
    DEADLINE_NOW.store(true, Ordering::SeqCst);
}

/// Whether [`reach_deadline_now`] was called.
pub fn deadline_now() -> bool {
    DEADLINE_NOW.load(Ordering::SeqCst)
}

/// Runs `job` with `options`: in this thread or in a child, again after a crash or a timeout
/// up to `options.retries` times, but never again once a stop was requested (the failed
/// record, with retries left, is then dropped by the `Collector`: `--resume` runs it). The record's `attempts` counts the attempts; when more than
/// one failed, `reason` lists every attempt's reason (`attempt 1: ...; attempt 2: ...`).
/// The job's params move into the record.
pub fn execute_job<P: Process>(job: Job<P>, dir: &Path, location: &Location, options: &RunOptions) -> ProcessRecord {
    let mut record = execute_attempts(&job, dir, location, options, None);
    record.params = job.params;
    record
}

/// [`execute_job`] of a job that another thread may hold too (to run a copy of it, see
/// [`crate::speculate`]): its params move into the record when this is the last holder, and
/// are copied otherwise. Once `stopped` is set (the other copy won), no attempt starts.
pub fn execute_shared_job<P: Process>(
    job: std::sync::Arc<Job<P>>,
    dir: &Path,
    location: &Location,
    options: &RunOptions,
    stopped: &std::sync::atomic::AtomicBool,
) -> ProcessRecord {
    let mut record = execute_attempts(&job, dir, location, options, Some(stopped));
    record.params = std::sync::Arc::try_unwrap(job).map_or_else(|shared| shared.params.clone(), |job| job.params);
    record
}

/// The attempts of [`execute_job`]: the record of the last, without the job's params.
fn execute_attempts<P: Process>(
    job: &Job<P>,
    dir: &Path,
    location: &Location,
    options: &RunOptions,
    stopped: Option<&std::sync::atomic::AtomicBool>,
) -> ProcessRecord {
    let _running = crate::status::Running::new(job.id, location);
    let mut reasons: Vec<String> = Vec::new();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut record = match options.isolation {
            Isolation::Thread => {
                let deadline = options.timeout.map(|t| Instant::now() + t);
                let mut record = run_attempt(job, dir, location, deadline, options.process_threads());
                if let (Some(timeout), Status::Finished) = (options.timeout, record.status) {
                    if record.duration_s > timeout.as_secs_f64() {
                        record.status = Status::TimedOut;
                        record.output = Value::Null;
                        record.reason = Some(timed_out_reason(timeout));
                    }
                }
                record
            }
            Isolation::Subprocess => {
                crate::subprocess::run_in_child(job, dir, location, options.timeout, options.process_threads())
            }
        };
        let copy_stopped = stopped.is_some_and(|s| s.load(Ordering::SeqCst));
        if record.status == Status::Finished || attempt > options.retries || stop_requested() || copy_stopped {
            close_attempts(&mut record, reasons);
            return record;
        }
        reasons.push(attempt_reason(&mut record));
    }
}

/// Takes the reason a failed attempt is remembered by, until the process's last attempt
/// closes its record ([`close_attempts`]).
pub fn attempt_reason(failed: &mut ProcessRecord) -> String {
    failed.reason.take().unwrap_or_else(|| "no reason given".into())
}

/// Closes the record of a process's last attempt, given the reasons of the attempts that
/// failed before it: `attempts` counts them all and, when any failed before, `reason` lists
/// every attempt's reason (`attempt 1: ...; attempt 2: ...`). [`execute_job`] closes its
/// records with it, and so does the MPI master, which runs each retry on another rank: a
/// retried process's row reads the same whichever backend ran it.
pub fn close_attempts(record: &mut ProcessRecord, mut earlier: Vec<String>) {
    record.attempts = u32::try_from(earlier.len() + 1).unwrap_or(u32::MAX);
    if earlier.is_empty() {
        return;
    }
    if let Some(last) = record.reason.take() {
        earlier.push(last);
    }
    let listed: Vec<String> = earlier.iter().enumerate().map(|(i, r)| format!("attempt {}: {r}", i + 1)).collect();
    record.reason = Some(listed.join("; "));
}

pub(crate) fn timed_out_reason(timeout: Duration) -> String {
    format!("timed out after {}", format_duration(timeout))
}

/// The last `lines` lines of `text` (without trailing newlines), at most `bytes` long (cut
/// at a character boundary, marked with `...`): what crash records keep of a stderr, and
/// what the `command` kind keeps of a stdout.
pub fn text_tail(text: &str, lines: usize, bytes: usize) -> String {
    let text = text.trim_end_matches(['\n', '\r']);
    // From the end, only as far as the lines kept (a command may print megabytes).
    let mut last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.reverse();
    let mut kept = last.join("\n");
    if kept.len() > bytes {
        let mut cut = kept.len() - bytes;
        while !kept.is_char_boundary(cut) {
            cut += 1;
        }
        kept = format!("...{}", &kept[cut..]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Params, ProcessContext, ProcessError};

    #[test]
    fn a_later_stop_counts_on_and_keeps_the_kind_of_the_first() {
        assert_eq!(one_more_stop(0), 1);
        assert_eq!(one_more_stop(1), 2);
        // A drain, then a signal or `cancel --now`: a second stop, still marked a drain's, so
        // `stop_drains` (which wants exactly one) no longer holds.
        assert_eq!(one_more_stop(DRAIN | 1), DRAIN | 2);
        assert_ne!(one_more_stop(DRAIN | 1), DRAIN | 1);
        // The count never runs into the kind's bit.
        assert_eq!(one_more_stop(!DRAIN), !DRAIN);
        assert_eq!(one_more_stop(u8::MAX), u8::MAX);
    }

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("3 weeks"), Ok(Duration::from_secs(1_814_400)));
        assert_eq!(parse_duration("1m 30s"), Ok(Duration::from_secs(90)));
        for bad in ["", "soon", "-3s", "0", "0s", "1.2.3s", "s", "3 fortnights", "1h-30m"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
        assert_eq!(parse_duration(&format_duration(Duration::from_millis(2500))), Ok(Duration::from_millis(2500)));
    }

    #[test]
    fn isolation_words() {
        assert_eq!(Isolation::parse("subprocess"), Ok(Isolation::Subprocess));
        assert!(Isolation::parse("fork").unwrap_err().contains("\"thread\" or \"subprocess\""));
    }

    #[derive(Serialize, Deserialize)]
    struct Flaky;

    impl Process for Flaky {
        type Output = u32;
        fn run(&self, ctx: &ProcessContext<'_>) -> Result<u32, ProcessError> {
            let dir = ctx.result_dir().join(format!("attempt-{}", ctx.id()));
            let n = std::fs::read_to_string(&dir).ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(0) + 1;
            std::fs::write(&dir, n.to_string()).map_err(ProcessError::from)?;
            if n < 3 {
                return Err(ProcessError::msg(format!("failure {n}")));
            }
            Ok(n)
        }
    }

    #[test]
    fn retries_run_again_and_keep_every_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let here = Location::here("test");
        let job = |id| Job { id, run: 0, params: Params::new(), process: Flaky };
        let options = RunOptions { retries: 2, ..RunOptions::default() };
        let record = execute_job(job(0), &dir, &here, &options);
        assert_eq!((record.status, record.attempts), (Status::Finished, 3));
        assert_eq!(record.reason.as_deref(), Some("attempt 1: failure 1; attempt 2: failure 2"));
        let options = RunOptions { retries: 1, ..RunOptions::default() };
        let record = execute_job(job(1), &dir, &here, &options);
        assert_eq!((record.status, record.attempts), (Status::Crashed, 2));
        assert_eq!(record.reason.as_deref(), Some("attempt 1: failure 1; attempt 2: failure 2"));
    }
}
