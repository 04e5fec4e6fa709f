//! `Operation`: a named set of processes and where their results go.
//!
//! The processes come from a lazy source: an operation of a million processes builds each
//! one only when a backend asks for the next, so memory stays flat however long it is.
//! `sweep.rs` makes one from a parameter space.

mod sweep;

use std::path::{Path, PathBuf};

use std::time::Duration;

use crate::{format_duration, Error, Isolation, Job, Params, Process, ProgressMode, Result, RunOptions, Value};

pub use sweep::SWEEP_COUNT_BUDGET;

/// The longest operation name: it names a directory, and file systems take names of up to
/// 255 bytes.
const MAX_NAME_LEN: usize = 255;

/// The lazy source of an operation's jobs.
pub type JobSource<P> = Box<dyn Iterator<Item = Job<P>> + Send>;

/// A named set of independent processes, with where their results go and how progress shows.
pub struct Operation<P: Process> {
    name: String,
    results_base: PathBuf,
    jobs: JobSource<P>,
    len: Option<u64>,
    spec: Params,
    progress: ProgressMode,
    resume: Option<Resume>,
    options: RunOptions,
    failure: SourceFailure,
    deadline: Option<Deadline>,
    /// Result directories of earlier runs to learn durations from.
    history: Vec<PathBuf>,
    /// How many jobs the look-ahead window holds (1: in order).
    lookahead: usize,
    observer: Option<crate::adaptive::RecordObserver>,
}

/// When an operation stops starting processes: a wall-clock time (e.g. the end of a batch
/// allocation) and a margin kept free before it (to journal, consolidate and leave). A
/// process starts only if it is expected to end before `at - margin` — by the duration
/// model's prediction for it while the model is trusted, else by the operation's `timeout`,
/// else by the longest process of the run so far; once one would not, no other starts, the
/// running ones finish, and the run ends resumable
/// ([`Summary::deadline_reached`](crate::Summary::deadline_reached)). A batch system's early
/// warning ([`reach_deadline_now`](crate::reach_deadline_now)) ends the starting at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    /// When the run must have ended.
    pub at: std::time::SystemTime,
    /// The time kept free before `at`.
    pub margin: Duration,
}

/// Why an operation's lazy source stopped before its end (its `make` failed): the source
/// sets it and ends; the lifecycle fails the run with it once the started processes ended.
#[derive(Debug, Clone, Default)]
pub struct SourceFailure(std::sync::Arc<std::sync::Mutex<Option<Error>>>);

impl SourceFailure {
    pub(crate) fn set(&self, error: Error) {
        let mut slot = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        slot.get_or_insert(error);
    }

    /// Takes the error, if the source failed.
    pub fn take(&self) -> Option<Error> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
    }
}

/// Where an operation resumes: an earlier run's result directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resume {
    /// The earlier run's result directory (it holds `operation.toml` and `journal`).
    pub dir: PathBuf,
    /// Whether processes that crashed are run again (otherwise only missing ones run).
    pub rerun_crashed: bool,
}

impl<P: Process> std::fmt::Debug for Operation<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operation").field("name", &self.name).field("len", &self.len).finish_non_exhaustive()
    }
}

impl<P: Process> Operation<P> {
    /// What the collector calls with each record it journals (and a resumed run with each
    /// record it finds), for a source that decides from results: adaptive runs.
    pub fn observer(&self) -> Option<crate::adaptive::RecordObserver> {
        self.observer.clone()
    }

    /// An operation of the given processes, one each, in order. The parameters of each are
    /// the process's own fields, so they appear in `results.csv`.
    pub fn from_processes<I>(name: impl Into<String>, processes: I) -> Result<Self>
    where
        I: IntoIterator<Item = P>,
        I::IntoIter: Send + 'static,
    {
        let iter = processes.into_iter();
        let len = match iter.size_hint() {
            (lower, Some(upper)) if lower == upper => Some(lower as u64),
            _ => None,
        };
        let jobs = iter.enumerate().map(|(id, process)| {
            let params = match Value::from_serialize(&process) {
                Ok(Value::Map(map)) => map,
                Ok(other) => Params::from_iter([("process".to_owned(), other)]),
                Err(_) => Params::new(),
            };
            Job { id: id as u64, run: 0, params, process }
        });
        let mut spec = Params::new();
        spec.insert("runs".into(), Value::Int(1));
        Self::from_parts(name.into(), Box::new(jobs), len, spec)
    }

    /// An operation from any lazy source of jobs (ids must be unique); `len` if known.
    pub fn from_jobs(name: impl Into<String>, jobs: JobSource<P>, len: Option<u64>) -> Result<Self> {
        Self::from_parts(name.into(), jobs, len, Params::new())
    }

    fn from_parts(name: String, jobs: JobSource<P>, len: Option<u64>, mut spec: Params) -> Result<Self> {
        let valid = !name.is_empty()
            && name != "."
            && name != ".."
            && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !valid {
            return Err(Error::InvalidName { name });
        }
        if name.len() > MAX_NAME_LEN {
            return Err(Error::NameTooLong { length: name.len() });
        }
        spec.shift_insert(0, "name".into(), Value::Str(name.clone()));
        Ok(Operation {
            name,
            results_base: PathBuf::from("results"),
            jobs,
            len,
            spec,
            progress: ProgressMode::Quiet,
            resume: None,
            options: RunOptions::default(),
            failure: SourceFailure::default(),
            deadline: None,
            history: Vec::new(),
            lookahead: crate::predict::DEFAULT_LOOKAHEAD,
            observer: None,
        })
    }

    /// Sets the base directory of results (default `results`): the run writes to
    /// `<base>/<name>/<UTC timestamp>/`.
    pub fn with_results_base(mut self, base: impl Into<PathBuf>) -> Self {
        self.results_base = base.into();
        self
    }

    /// Replaces the spec written to `operation.toml` (the worker writes the spec file as run).
    /// The options (`timeout`, `retries`, `isolation`) are written to it as they are set.
    pub fn with_spec(mut self, spec: Params) -> Self {
        self.spec = spec;
        self.write_options_to_spec();
        self
    }

    /// Gives each attempt of a process at most `timeout`; past it the process is recorded
    /// as timed out. With `Isolation::Subprocess` the child is killed. In `Isolation::Thread`
    /// nothing can stop a process from outside: `stage_in` refuses the timeout unless the
    /// process type stops at its deadline itself
    /// ([`Process::ENFORCES_TIMEOUT`](crate::Process::ENFORCES_TIMEOUT), see
    /// [`ProcessContext::deadline`](crate::ProcessContext::deadline)).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self.write_options_to_spec();
        self
    }

    /// Runs a crashed or timed-out process again, up to `retries` more times.
    pub fn with_retries(mut self, retries: u32) -> Self {
        self.options.retries = retries;
        self.write_options_to_spec();
        self
    }

    /// Chooses where each process runs. `Isolation::Subprocess` needs the program's `main`
    /// to call [`run_child_if_requested`](crate::run_child_if_requested) first.
    pub fn with_isolation(mut self, isolation: Isolation) -> Self {
        self.options.isolation = isolation;
        self.write_options_to_spec();
        self
    }

    /// Gives each process `threads` threads of its worker (default 1): a backend with a
    /// pool of threads reserves that many slots for each process, and the process reads the
    /// number from [`ProcessContext::threads`](crate::ProcessContext::threads). A backend
    /// refuses an operation whose processes want more threads than one of its workers has.
    pub fn with_threads(mut self, threads: usize) -> Self {
        self.options.threads = threads.max(1);
        self.write_options_to_spec();
        self
    }

    /// Whether a process running far past its prediction may run a second copy on an idle
    /// thread once nothing is left to start, the first to finish being recorded (default
    /// `true`; see [`crate::speculate`]). Turn it off for processes with side effects that
    /// must not run twice.
    pub fn with_speculation(mut self, speculate: bool) -> Self {
        self.options.speculate = speculate;
        self.write_options_to_spec();
        self
    }

    /// Sets every reliability option at once.
    pub fn with_options(mut self, options: RunOptions) -> Self {
        self.options = options;
        self.write_options_to_spec();
        self
    }

    /// The reliability options (timeout, retries, isolation) and the threads per process.
    pub fn options(&self) -> RunOptions {
        self.options
    }

    /// Writes the options that differ from the defaults into the spec (and removes the
    /// others), so `operation.toml` says how the run was made and a resume can compare them.
    fn write_options_to_spec(&mut self) {
        let RunOptions { timeout, retries, isolation, threads, speculate } = self.options;
        match timeout {
            Some(t) => self.spec.insert("timeout".into(), Value::Str(format_duration(t))),
            None => self.spec.shift_remove("timeout"),
        };
        match retries {
            0 => self.spec.shift_remove("retries"),
            n => self.spec.insert("retries".into(), Value::Int(i64::from(n))),
        };
        match isolation {
            Isolation::Thread => self.spec.shift_remove("isolation"),
            other => self.spec.insert("isolation".into(), Value::Str(other.as_str().into())),
        };
        match threads {
            0 | 1 => self.spec.shift_remove("threads"),
            n => self.spec.insert("threads".into(), Value::Int(i64::try_from(n).unwrap_or(i64::MAX))),
        };
        match speculate {
            true => self.spec.shift_remove("speculate"),
            false => self.spec.insert("speculate".into(), Value::Bool(false)),
        };
    }

    /// Chooses how progress is shown (default: quiet, for libraries; the CLI uses `Auto`).
    pub fn with_progress(mut self, progress: ProgressMode) -> Self {
        self.progress = progress;
        self
    }

    /// Resumes the run in `dir` instead of starting a new one: only processes without a
    /// record there run (and crashed ones too with `rerun_crashed`), their records are
    /// appended to the same journal, and the consolidated files are rewritten. `stage_in`
    /// refuses a directory that is not a taskfarm run or whose spec differs from this one.
    pub fn resume_from(mut self, dir: impl Into<PathBuf>, rerun_crashed: bool) -> Self {
        self.resume = Some(Resume { dir: dir.into(), rerun_crashed });
        self
    }

    /// Stops starting processes in time for `deadline` (see [`Deadline`]). Not part of the
    /// spec: a resumed run has a deadline of its own.
    pub fn with_deadline(mut self, deadline: Deadline) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The deadline given with [`with_deadline`](Self::with_deadline), if any.
    pub fn deadline(&self) -> Option<Deadline> {
        self.deadline
    }

    /// Learns durations from earlier runs of this operation before it starts: each of
    /// `dirs` is a result directory (`results/<name>/<timestamp>`) or holds several
    /// (`results/<name>`). `stage_in` refuses one that is not a run of this operation.
    pub fn with_history(mut self, dirs: impl IntoIterator<Item = PathBuf>) -> Self {
        self.history.extend(dirs);
        self
    }

    /// The result directories this operation learns durations from.
    pub fn history(&self) -> &[PathBuf] {
        &self.history
    }

    /// Sets how many jobs the backend pulls ahead of the one it hands out (default
    /// [`DEFAULT_LOOKAHEAD`](crate::predict::DEFAULT_LOOKAHEAD)): among them it hands out the
    /// one predicted longest once predictions are trusted (see [`crate::predict`]). 1 hands
    /// out every job in id order.
    pub fn with_lookahead(mut self, jobs: usize) -> Self {
        self.lookahead = jobs.max(1);
        self
    }

    /// How many jobs the backend pulls ahead.
    pub fn lookahead(&self) -> usize {
        self.lookahead
    }

    /// The run this operation resumes, if any.
    pub fn resume(&self) -> Option<&Resume> {
        self.resume.as_ref()
    }

    /// Replaces the job source (a resumed run keeps only the jobs still to do).
    pub fn map_jobs(mut self, f: impl FnOnce(JobSource<P>) -> JobSource<P>) -> Self {
        let jobs = std::mem::replace(&mut self.jobs, Box::new(std::iter::empty()));
        self.jobs = f(jobs);
        self
    }

    /// The operation's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many processes there are, when known.
    pub fn len(&self) -> Option<u64> {
        self.len
    }

    /// Whether the operation is known to have no process.
    pub fn is_empty(&self) -> bool {
        self.len == Some(0)
    }

    /// Where results go.
    pub fn results_base(&self) -> &Path {
        &self.results_base
    }

    /// The spec written to `operation.toml`.
    pub fn spec(&self) -> &Params {
        &self.spec
    }

    /// How progress is shown.
    pub fn progress(&self) -> ProgressMode {
        self.progress
    }

    /// Where the job source leaves the error that stopped it early, if one does.
    pub fn source_failure(&self) -> SourceFailure {
        self.failure.clone()
    }

    /// Takes the job source out (backends call this when they stage the operation in).
    pub fn into_jobs(self) -> JobSource<P> {
        self.jobs
    }
}
