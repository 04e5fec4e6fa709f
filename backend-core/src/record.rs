//! `ProcessRecord`: what became of one process (finished or crashed, where, how long).
//! Records are what the journal stores and what the consolidated files are made of.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::{Once, OnceLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::{Job, Params, Process, ProcessContext, Value};

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// It returned an output.
    Finished,
    /// It returned an error or panicked (or its subprocess died).
    Crashed,
    /// It ran past its timeout and was stopped (or, in thread isolation, ended too late).
    TimedOut,
}

impl Status {
    /// The word used in `results.csv`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Finished => "finished",
            Status::Crashed => "crashed",
            Status::TimedOut => "timed_out",
        }
    }
}

/// Where a process ran: the host and the worker on it (a thread of the local pool, an
/// MPI rank, or the serial backend).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// The host name (under MPI, the processor name).
    pub host: String,
    /// The worker on that host, e.g. `thread-3` or `rank-2`.
    pub worker: String,
}

impl Location {
    /// A location on this host.
    pub fn here(worker: impl Into<String>) -> Self {
        Location { host: this_host().to_owned(), worker: worker.into() }
    }
}

/// This machine's host name, looked up once.
pub fn this_host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| gethostname::gethostname().to_string_lossy().into_owned())
}

/// What became of one process: one row of `results.csv`, one record of the journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessRecord {
    /// The process's id in the operation.
    pub id: u64,
    /// Its run number.
    pub run: u32,
    /// The parameters it was made from.
    pub params: Params,
    /// How it ended.
    pub status: Status,
    /// Its output (`Null` when it crashed).
    pub output: Value,
    /// Why it crashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The end of its stderr, when it ran a command and crashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr_tail: Option<String>,
    /// How many times it was run (more than 1 with `retries`; then `reason` lists the
    /// reason of every failed attempt).
    pub attempts: u32,
    /// When it started, in seconds since the Unix epoch.
    pub started_at: f64,
    /// How long it ran, in seconds.
    pub duration_s: f64,
    /// Where it ran.
    pub location: Location,
}

/// Runs one job: catches a panic or an error as a crash, times it, and records where it ran.
/// Every backend runs processes through this function, so they all record the same way.
pub fn run_job<P: Process>(job: &Job<P>, result_dir: &Path, location: &Location) -> ProcessRecord {
    run_job_until(job, result_dir, location, None)
}

/// Like [`run_job`], with a deadline the process sees in its context. An error the process
/// marks as a timeout ([`ProcessError::timed_out`](crate::ProcessError::timed_out)) is recorded as timed out.
pub(crate) fn run_job_until<P: Process>(
    job: &Job<P>,
    result_dir: &Path,
    location: &Location,
    deadline: Option<Instant>,
) -> ProcessRecord {
    run_job_with(job, result_dir, location, deadline, 1)
}

/// Like [`run_job_until`], with the number of threads the process may use
/// ([`ProcessContext::threads`]).
pub(crate) fn run_job_with<P: Process>(
    job: &Job<P>,
    result_dir: &Path,
    location: &Location,
    deadline: Option<Instant>,
    threads: usize,
) -> ProcessRecord {
    let mut record = run_attempt(job, result_dir, location, deadline, threads);
    record.params = job.params.clone();
    record
}

/// Runs one attempt of a job as [`run_job_with`] does, leaving the record's `params` empty
/// for the caller that owns the job to move them in ([`execute_job`](crate::execute_job)).
pub(crate) fn run_attempt<P: Process>(
    job: &Job<P>,
    result_dir: &Path,
    location: &Location,
    deadline: Option<Instant>,
    threads: usize,
) -> ProcessRecord {
    install_quiet_panic_hook();
    let started_at = now_s();
    let clock = Instant::now();
    let ctx = ProcessContext::new(job.id, job.run, &job.params, result_dir, location)
        .with_deadline(deadline)
        .with_threads(threads);
    let was_inside = INSIDE_PROCESS.with(|inside| inside.replace(true));
    crate::oplog::set_current(Some((&location.worker, job.id)));
    let result = catch_unwind(AssertUnwindSafe(|| job.process.run(&ctx)));
    crate::oplog::set_current(None);
    INSIDE_PROCESS.with(|inside| inside.set(was_inside));
    let elapsed = clock.elapsed().as_secs_f64();
    // Start-up shared with later processes is not the process's time (see `exclude_setup`).
    let setup = ctx.setup_time().as_secs_f64().min(elapsed);
    let (started_at, duration_s) = (started_at + setup, elapsed - setup);
    let (status, output, reason, stderr_tail) = match result {
        Ok(Ok(output)) => match output_value(output) {
            Ok(value) => (Status::Finished, value, None, None),
            Err(e) => (Status::Crashed, Value::Null, Some(format!("its output could not be recorded: {e}")), None),
        },
        Ok(Err(error)) => {
            let status = if error.timed_out { Status::TimedOut } else { Status::Crashed };
            (status, Value::Null, Some(error.reason), error.stderr_tail)
        }
        Err(payload) => (Status::Crashed, Value::Null, Some(format!("panicked: {}", panic_message(&*payload))), None),
    };
    ProcessRecord {
        id: job.id,
        run: job.run,
        params: Params::new(),
        status,
        output,
        reason,
        stderr_tail,
        attempts: 1,
        started_at,
        duration_s,
        location: location.clone(),
    }
}

/// A process's output as a [`Value`]: through serde, except an output that is a `Value`
/// already (every kind of `taskfarm-worker`), which is taken as it is and only made what
/// the trip through serde would make it ([`as_through_serde`]), with no copy.
fn output_value<O: serde::Serialize + 'static>(output: O) -> Result<Value, String> {
    let mut output = Some(output);
    let any: &mut dyn std::any::Any = &mut output;
    if let Some(mut value) = any.downcast_mut::<Option<Value>>().and_then(Option::take) {
        as_through_serde(&mut value);
        return Ok(value);
    }
    output.map_or(Ok(Value::Null), |output| Value::from_serialize(&output))
}

/// Makes `value` what [`Value::from_serialize`] makes of it: an unsigned integer that fits
/// an `i64` is an `Int`, and every NaN is the one NaN.
fn as_through_serde(value: &mut Value) {
    match value {
        Value::UInt(u) => *value = Value::from(*u),
        Value::Float(f) if f.is_nan() => *f = f64::NAN,
        Value::List(items) => items.iter_mut().for_each(as_through_serde),
        Value::Map(map) => map.values_mut().for_each(as_through_serde),
        _ => {}
    }
}

/// Now, in seconds since the Unix epoch.
pub(crate) fn now_s() -> f64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

thread_local! {
    static INSIDE_PROCESS: Cell<bool> = const { Cell::new(false) };
}

/// Whether the calling thread is inside `Process::run` (through [`run_job`]). A panic hook
/// that aborts an MPI job must let such panics pass: `run_job` catches them and records
/// them as crashes.
pub fn inside_process() -> bool {
    INSIDE_PROCESS.with(Cell::get)
}

/// Keeps panics of processes off stderr (their message is in the crash record, and a sweep
/// with many of them would drown the terminal); other panics reach the previous hook.
fn install_quiet_panic_hook() {
    static INSTALLED: Once = Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !inside_process() {
                previous(info);
            }
        }));
    });
}

/// The message of a caught panic.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-text payload".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProcessError;
    use serde::{Deserialize, Serialize};

    #[test]
    fn an_output_that_is_a_value_is_what_serde_would_make_of_it() {
        let map = |pairs: Vec<(&str, Value)>| Value::Map(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect());
        let outputs = [
            Value::UInt(5),
            Value::UInt(u64::MAX),
            Value::Float(-f64::NAN),
            Value::Float(f64::NEG_INFINITY),
            Value::Float(-0.0),
            Value::List(vec![Value::UInt(1), Value::Null, Value::Bool(true), Value::Str("x".into())]),
            map(vec![
                ("$float", Value::Str("NaN".into())),
                ("$$float", Value::Float(f64::NAN)),
                ("n", map(vec![("u", Value::UInt(7)), ("i", Value::Int(-3)), ("f", Value::Float(2.5))])),
            ]),
        ];
        for output in outputs {
            let through_serde = Value::from_serialize(&output).unwrap();
            let taken = output_value(output).unwrap();
            assert_eq!(format!("{taken:?}"), format!("{through_serde:?}"));
        }
        // Any other output still goes through serde.
        assert_eq!(output_value((1u8, "a")).unwrap(), Value::List(vec![Value::Int(1), Value::Str("a".into())]));
    }

    /// Says whether `inside_process` holds on its own thread and, at the same moment, on
    /// another thread.
    #[derive(Serialize, Deserialize)]
    struct Asks;

    impl Process for Asks {
        type Output = (bool, bool);
        fn run(&self, _: &crate::ProcessContext<'_>) -> Result<(bool, bool), ProcessError> {
            let elsewhere = std::thread::spawn(inside_process).join().unwrap_or(true);
            Ok((inside_process(), elsewhere))
        }
    }

    #[test]
    fn only_the_thread_that_runs_a_process_is_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let job = Job { id: 0, run: 0, params: crate::Params::new(), process: Asks };
        let record = run_job(&job, dir.path(), &Location::here("test"));
        assert_eq!(record.output, Value::List(vec![Value::Bool(true), Value::Bool(false)]));
        assert!(!inside_process(), "and not after it");
    }

    #[derive(Serialize, Deserialize)]
    struct Div(i64);

    impl Process for Div {
        type Output = i64;
        fn run(&self, _ctx: &ProcessContext) -> Result<i64, ProcessError> {
            match self.0 {
                0 => panic!("division by zero"),
                1 => Err(ProcessError::msg("one is not allowed")),
                n => Ok(100 / n),
            }
        }
    }

    fn job(n: i64) -> Job<Div> {
        Job { id: n as u64, run: 0, params: Params::new(), process: Div(n) }
    }

    #[test]
    fn records_outputs_errors_and_panics() {
        let here = Location::here("test");
        let dir = Path::new("/nonexistent");
        let ok = run_job(&job(4), dir, &here);
        assert_eq!((ok.status, ok.output), (Status::Finished, Value::Int(25)));
        let err = run_job(&job(1), dir, &here);
        assert_eq!(err.status, Status::Crashed);
        assert_eq!(err.reason.as_deref(), Some("one is not allowed"));
        let panicked = run_job(&job(0), dir, &here);
        assert_eq!(panicked.status, Status::Crashed);
        assert_eq!(panicked.reason.as_deref(), Some("panicked: division by zero"));
    }
}
