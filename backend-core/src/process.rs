//! `Process`: one independent unit of work, and what it is given (`ProcessContext`) and
//! may return (`ProcessError`). `Job` is a process with its id, run number and parameters,
//! as a backend hands it to a worker.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{Location, Params};

/// One independent unit of work of an operation.
///
/// A process is plain data (it is sent to other machines under MPI) and `run` computes its
/// output. A panic inside `run` is caught and recorded as a crash; the operation goes on.
///
/// ```
/// use backend_core::{Process, ProcessContext, ProcessError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Square { x: f64 }
///
/// #[derive(Serialize, Deserialize)]
/// struct Squared { y: f64 }
///
/// impl Process for Square {
///     type Output = Squared;
///     fn run(&self, _ctx: &ProcessContext) -> Result<Squared, ProcessError> {
///         Ok(Squared { y: self.x * self.x })
///     }
/// }
/// ```
pub trait Process: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// What the process computes. Its fields become columns of `results.csv`.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Whether the process stops at its deadline by itself, so a timeout works in thread
    /// isolation: its `run` watches [`ProcessContext::deadline`] and returns
    /// [`ProcessError::timed_out`] when it passes (or kills what it waits for, as the
    /// `command` kind does). Nothing can stop a thread from outside, so `stage_in` refuses a
    /// timeout in thread isolation for a process type that leaves this `false` (the default):
    /// such a process would run to its end, only to have its result thrown away.
    const ENFORCES_TIMEOUT: bool = false;

    /// Runs the process. An `Err` is recorded as a crash with its message.
    fn run(&self, ctx: &ProcessContext<'_>) -> Result<Self::Output, ProcessError>;
}

/// A process with its identity in the operation: what a backend hands to a worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Job<P> {
    /// The process's stable id: its index in the operation, from 0.
    pub id: u64,
    /// The run number, from 0 to `runs - 1`.
    pub run: u32,
    /// The parameters the process was made from.
    pub params: Params,
    /// The process itself.
    pub process: P,
}

/// What a running process may know about itself.
#[derive(Debug)]
pub struct ProcessContext<'a> {
    id: u64,
    run: u32,
    params: &'a Params,
    result_dir: &'a Path,
    location: &'a Location,
    deadline: Option<Instant>,
    threads: usize,
    /// Nanoseconds of the run spent starting something later processes share.
    setup_ns: AtomicU64,
}

impl<'a> ProcessContext<'a> {
    /// A context for the process `id`; backends make these, tests may too.
    pub fn new(id: u64, run: u32, params: &'a Params, result_dir: &'a Path, location: &'a Location) -> Self {
        ProcessContext {
            id,
            run,
            params,
            result_dir,
            location,
            deadline: None,
            threads: 1,
            setup_ns: AtomicU64::new(0),
        }
    }

    /// Gives the process `threads` threads of its worker (the operation's `threads` option;
    /// at least 1).
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.threads = threads.max(1);
        self
    }

    /// How many threads the process may use (the operation's `threads` option, default 1):
    /// the backend reserved that many slots of its worker's pool for it. A multi-threaded
    /// process sizes its own pool with it (e.g. a rayon pool of `ctx.threads()` threads;
    /// `backend_local::process_pool` builds one).
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Gives the process a deadline (the operation's `timeout`).
    pub fn with_deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// When the process must have ended, if the operation has a `timeout`. In thread
    /// isolation nothing can stop a process from outside: a process that may run long
    /// should check it and return [`ProcessError::timed_out`] (the `command` kind kills its
    /// child process group at the deadline). In subprocess isolation the child is killed.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Says that `time` of this run went to starting something that later processes of
    /// this worker share (the persistent program of the `jsonl` and `python` kinds): it is
    /// left out of the process's `duration_s`, and its `started_at` moves past it, so a
    /// slow start-up is not taken for a slow process. Calls add up.
    pub fn exclude_setup(&self, time: Duration) {
        let ns = u64::try_from(time.as_nanos()).unwrap_or(u64::MAX);
        let _ = self.setup_ns.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n.saturating_add(ns)));
    }

    /// The start-up time given to [`Self::exclude_setup`] so far.
    pub fn setup_time(&self) -> Duration {
        Duration::from_nanos(self.setup_ns.load(Ordering::Relaxed))
    }

    /// The process's id in the operation.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The run number (for `runs > 1`), from 0; use it as a seed.
    pub fn run(&self) -> u32 {
        self.run
    }

    /// The parameters the process was made from.
    pub fn params(&self) -> &Params {
        self.params
    }

    /// Where the process runs (host and worker).
    pub fn location(&self) -> &Location {
        self.location
    }

    /// The operation's result directory.
    pub fn result_dir(&self) -> &Path {
        self.result_dir
    }

    /// A scratch directory for this process alone, `<result dir>/scratch/<id>`, created on
    /// first use (so an operation of a million processes does not make a million folders).
    pub fn scratch_dir(&self) -> std::io::Result<PathBuf> {
        let dir = self.result_dir.join("scratch").join(self.id.to_string());
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

/// What starts the reason of a [`ProcessError::cannot_run`]; a reason that holds it stops
/// the run (it travels in the record, so an MPI master learns it from a worker rank).
pub const CANNOT_RUN_MARK: &str = "[no process can run] ";

/// Why a process failed. Any `std::error::Error` converts into it, so `?` works in `run`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcessError {
    /// What went wrong, in one sentence.
    pub reason: String,
    /// The last lines the process wrote to stderr, if it ran a command.
    pub stderr_tail: Option<String>,
    /// Whether the process stopped because it reached its deadline (recorded as timed out).
    #[serde(default)]
    pub timed_out: bool,
}

impl ProcessError {
    /// A failure with a message.
    pub fn msg(reason: impl fmt::Display) -> Self {
        ProcessError { reason: reason.to_string(), stderr_tail: None, timed_out: false }
    }

    /// The process stopped at its deadline: recorded as timed out with this reason.
    pub fn timed_out(reason: impl fmt::Display) -> Self {
        ProcessError { timed_out: true, ..ProcessError::msg(reason) }
    }

    /// A failure that means no process of the operation can run in this worker (its
    /// persistent program exits at start-up): the run stops with this reason as its one
    /// error ([`Error::CannotRun`](crate::Error::CannotRun)) instead of recording a crash
    /// for every process. The record that carries it is not journaled, so `--resume` runs
    /// the process again.
    pub fn cannot_run(reason: impl fmt::Display) -> Self {
        ProcessError::msg(format!("{CANNOT_RUN_MARK}{reason}"))
    }

    /// Adds the tail of the process's stderr.
    pub fn with_stderr_tail(mut self, tail: impl Into<String>) -> Self {
        self.stderr_tail = Some(tail.into());
        self
    }
}

impl fmt::Display for ProcessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reason)
    }
}

impl<E: std::error::Error> From<E> for ProcessError {
    fn from(e: E) -> Self {
        ProcessError::msg(e)
    }
}
