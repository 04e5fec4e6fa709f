//! `Lifecycle`: the state machine behind the `Backend` calls, the same for every backend —
//! the result directory and its lock, the journal, resume, the job source (its look-ahead
//! window, deadline and stop), the status file, consolidation and the summary.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Collector, Role, StatusBoard, StatusCounts, Summary};
use crate::journal::{read_journal_with, Damage, JournalWriter, TornTail};
use crate::lock::RunLock;
use crate::predict::{Learner, Lookahead};
use crate::results::{consolidate_dir, create_result_dir, files, to_toml_table, write_operation_toml};
use crate::status::{RunState, StatusSource, StatusWriter};
use crate::{
    stop_requested, Error, JobSource, Operation, Params, Process, ProgressDisplay, Result, Resume, RunOptions, Status,
};

/// A staged operation, as a backend's dispatch loop receives it.
pub struct Dispatch<P: Process> {
    /// The lazy source of jobs.
    pub jobs: JobSource<P>,
    /// The result directory (processes get it in their context).
    pub dir: PathBuf,
    /// How many jobs `jobs` will yield, when known (for a resumed run, those still to run).
    pub len: Option<u64>,
    /// Timeout, retries and isolation: give them to [`execute_job`](crate::execute_job).
    pub options: RunOptions,
    /// Whether `jobs` may wait in `next` for the records of the jobs it gave (adaptive
    /// runs): a backend must not pull it on the thread that hands records to the collector.
    pub waits_for_records: bool,
}

/// Refuses a timeout that nothing would enforce: in thread isolation only a process type
/// that stops at its deadline itself ([`Process::ENFORCES_TIMEOUT`]) can time out.
fn refuse_unenforceable_timeout<P: Process>(operation: &Operation<P>) -> Result<()> {
    let options = operation.options();
    if options.timeout.is_some() && options.isolation == crate::Isolation::Thread && !P::ENFORCES_TIMEOUT {
        return Err(Error::TimeoutNotEnforced { process: std::any::type_name::<P>() });
    }
    Ok(())
}

struct StagedState<P: Process> {
    dispatch: Dispatch<P>,
    collector: Collector,
}

enum State<P: Process> {
    Idle,
    Staged(Box<StagedState<P>>),
    Running { done: mpsc::Receiver<Result<()>>, thread: JoinHandle<()> },
    Executed(Result<()>),
    Consolidated(Summary),
}

/// The lifecycle state machine every backend uses behind the `Backend` calls, so the
/// result directory, the journal and the summary are made the same way everywhere.
pub struct Lifecycle<P: Process> {
    backend: &'static str,
    state: State<P>,
    board: StatusBoard,
    name: String,
    dir: PathBuf,
    started: Option<Instant>,
    wall: Duration,
    resumed_torn_tail: Option<TornTail>,
    /// The result directory's lock, held from `stage_in` to `cleanup`.
    lock: Option<RunLock>,
    /// Keeps `status.json` and answers `cancel` from `execute` to `consolidate`.
    status: Option<StatusWriter>,
    /// Where the operation's job source leaves the error that stopped it early.
    source_failure: crate::operation::SourceFailure,
    /// Set when the operation's deadline stopped it from starting processes.
    deadline_reached: Arc<AtomicBool>,
    /// The duration model of the staged operation, and its jobs in flight.
    learner: Learner,
    /// Hands out jobs in id order whatever the predictions (the serial reference).
    in_order: bool,
}

impl<P: Process> std::fmt::Debug for Lifecycle<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lifecycle").field("backend", &self.backend).field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl<P: Process> Lifecycle<P> {
    /// A lifecycle for `backend`.
    pub fn new(backend: crate::BackendKind) -> Self {
        Lifecycle {
            backend: backend.as_str(),
            state: State::Idle,
            board: StatusBoard::default(),
            name: String::new(),
            dir: PathBuf::new(),
            started: None,
            wall: Duration::ZERO,
            resumed_torn_tail: None,
            lock: None,
            status: None,
            source_failure: Default::default(),
            deadline_reached: Arc::default(),
            learner: Learner::default(),
            in_order: false,
        }
    }

    /// The same lifecycle, handing out jobs in id order whatever the predictions.
    pub fn in_order(mut self) -> Self {
        self.in_order = true;
        self
    }

    /// `stage_in`: creates the result directory, writes `operation.toml`, opens the journal.
    /// A resumed operation ([`Operation::resume_from`]) continues its earlier run instead.
    pub fn stage_in(&mut self, operation: Operation<P>) -> Result<()> {
        crate::subprocess::refuse_operation_in_child()?;
        refuse_unenforceable_timeout(&operation)?;
        self.learner = Learner::default();
        if let Some(resume) = operation.resume().cloned() {
            return self.stage_in_resumed(operation, resume);
        }
        let dir = create_result_dir(operation.results_base(), operation.name())?;
        self.stage_in_dir(operation, dir)
    }

    /// Stages the jobs that the earlier run in `resume.dir` did not finish.
    fn stage_in_resumed(&mut self, operation: Operation<P>, resume: Resume) -> Result<()> {
        let dir = resume.dir;
        for (file, missing) in [(files::JOURNAL, "journal"), (files::OPERATION, "operation.toml")] {
            if !dir.join(file).is_file() {
                return Err(Error::NotARun { path: dir, missing });
            }
        }
        crate::results::check_format(&dir)?;
        check_same_spec(&dir, operation.spec())?;
        // Before the journal is read: a run still writing it would change it under us.
        self.lock = Some(RunLock::acquire(&dir)?);
        let journal_path = dir.join(files::JOURNAL);
        let mut done = IdSet::default();
        let (mut finished, mut crashed) = (IdSet::default(), IdSet::default());
        let learner = self.learner.clone();
        let damage = read_journal_with(&journal_path, |record| match record.status {
            Status::Finished => {
                // A resumed run predicts from what its earlier run measured.
                learner.learn(&record.params, record.duration_s);
                finished.insert(record.id);
                crashed.remove(record.id);
            }
            Status::Crashed | Status::TimedOut => {
                crashed.insert(record.id);
            }
        })?;
        if let Some(torn) = &damage.torn_tail {
            // Records appended after a torn one would be skipped as damage: cut the tail off
            // first. Corrupt records in the middle stay; readers skip them.
            crate::journal::cut_at(&journal_path, torn.offset)?;
        }
        done.clone_from(&finished);
        if !resume.rerun_crashed {
            crashed.iter().for_each(|id| done.insert(id));
        }
        let previously_crashed = if resume.rerun_crashed { 0 } else { crashed.count() };
        self.resumed_torn_tail = damage.torn_tail;
        if let Some(observer) = operation.observer() {
            // A source that decides from results learns what the earlier run recorded.
            read_journal_with(&journal_path, |record| {
                if done.contains(record.id) {
                    observer(&record);
                }
            })?;
        }
        let journal = JournalWriter::append_to(&journal_path)?;
        self.stage(operation, dir, journal, Some(done))?;
        self.board.preset(finished.count(), previously_crashed);
        Ok(())
    }

    /// `stage_in` into a result directory that already exists and is empty (the MPI
    /// backend's workers use the directory the master created).
    pub fn stage_in_dir(&mut self, operation: Operation<P>, dir: PathBuf) -> Result<()> {
        crate::subprocess::refuse_operation_in_child()?;
        refuse_unenforceable_timeout(&operation)?;
        self.learner = Learner::default();
        self.lock = Some(RunLock::acquire(&dir)?);
        let mut spec = operation.spec().clone();
        spec.insert("backend".into(), crate::Value::Str(self.backend.into()));
        write_operation_toml(&dir, &spec)?;
        let journal = JournalWriter::create(&dir.join(files::JOURNAL))?;
        self.stage(operation, dir, journal, None)
    }

    /// What both ways of staging share: the counts, the progress display, the log, and the
    /// dispatch of the jobs without a record in `done`, appended to `journal`.
    fn stage(
        &mut self,
        operation: Operation<P>,
        dir: PathBuf,
        journal: JournalWriter,
        done: Option<IdSet>,
    ) -> Result<()> {
        let len = operation.len();
        self.board = StatusBoard::new(len);
        let progress = ProgressDisplay::new(operation.progress(), operation.name(), len);
        self.name = operation.name().to_owned();
        self.dir = dir.clone();
        crate::oplog::open(&dir)?;
        tracing::info!(target: "taskfarm", "operation `{}` staged in {} on the {} backend: {} processes", operation.name(), dir.display(), self.backend, len.map(|n| n.to_string()).unwrap_or_else(|| "an unknown number of".into()));
        for history in operation.history() {
            let learnt = self.learner.seed_from_dir(history, operation.name())?;
            tracing::info!(target: "taskfarm", "learnt {learnt} durations from {}", history.display());
        }
        let learner = self.learner.clone();
        let observer = crate::adaptive::Observed(operation.observer());
        let options = operation.options();
        let collector = Collector {
            journal,
            board: self.board.clone(),
            progress,
            learner,
            eta_at: None,
            observer,
            retries: options.retries,
        };
        let deadline = operation.deadline();
        self.source_failure = operation.source_failure();
        // The dispatch's length is what the source will yield: a resumed run skips the ids
        // recorded already (those of this operation: an id past its end is none of its jobs).
        let to_run = match (&done, len) {
            (Some(done), Some(len)) => Some(len.saturating_sub(done.iter().take_while(|&id| id < len).count() as u64)),
            _ => len,
        };
        // A source that decides from results (adaptive runs) may wait in `next` for the
        // records of the jobs it gave: a window that pulled ahead of those jobs, holding them
        // unstarted, would wait for ever. Such a source runs in order.
        let waits_for_records = operation.observer().is_some();
        let lookahead = if self.in_order || waits_for_records { 1 } else { operation.lookahead() };
        let jobs = match len {
            Some(_) => operation.into_jobs(),
            None => counted(operation.into_jobs(), self.board.clone()),
        };
        let jobs: JobSource<P> = match done {
            Some(done) => Box::new(jobs.filter(move |job| !done.contains(job.id))),
            None => jobs,
        };
        let jobs: JobSource<P> = Box::new(Lookahead::new(jobs, lookahead, self.learner.clone()));
        let jobs = match deadline {
            Some(deadline) => until_deadline(jobs, deadline, self.board.clone(), Arc::clone(&self.deadline_reached)),
            None => jobs,
        };
        let dispatch = Dispatch { jobs: until_stopped(jobs), dir, len: to_run, options, waits_for_records };
        self.state = State::Staged(Box::new(StagedState { dispatch, collector }));
        Ok(())
    }

    fn take_staged(&mut self) -> Result<StagedState<P>> {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Staged(staged) => Ok(*staged),
            other => {
                self.state = other;
                Err(Error::OutOfOrder { call: "execute", needs: "stage_in" })
            }
        }
    }

    /// `execute` on a background thread running `dispatch`; `retrieve` waits for it.
    pub fn execute_in_background(
        &mut self,
        dispatch: impl FnOnce(Dispatch<P>, &mut Collector) -> Result<()> + Send + 'static,
    ) -> Result<()> {
        let StagedState { dispatch: staged, mut collector } = self.take_staged()?;
        let (tx, done) = mpsc::channel();
        self.started = Some(Instant::now());
        self.start_status();
        let thread = std::thread::Builder::new()
            .name(format!("taskfarm-{}", self.backend))
            .spawn(move || {
                let result = dispatch(staged, &mut collector);
                let finished = collector.finish();
                let _ = tx.send(result.and(finished));
            })
            .map_err(|e| Error::Internal(format!("the dispatch thread could not start: {e}")))?;
        self.state = State::Running { done, thread };
        Ok(())
    }

    /// `execute` on the calling thread, to the end (for backends whose communication must
    /// stay on one thread, such as MPI's master).
    pub fn execute_here(&mut self, dispatch: impl FnOnce(Dispatch<P>, &mut Collector) -> Result<()>) -> Result<()> {
        let StagedState { dispatch: staged, mut collector } = self.take_staged()?;
        let started = Instant::now();
        self.started = Some(started);
        self.start_status();
        let result = dispatch(staged, &mut collector);
        let finished = collector.finish();
        self.wall = started.elapsed();
        self.state = State::Executed(result.and(finished));
        Ok(())
    }

    /// Starts keeping `status.json` of the run (see [`crate::status`]).
    fn start_status(&mut self) {
        self.status = Some(StatusWriter::start(StatusSource {
            dir: self.dir.clone(),
            name: self.name.clone(),
            backend: self.backend.to_owned(),
            board: self.board.clone(),
            learner: self.learner.clone(),
        }));
    }

    /// The duration model of the staged operation (seeded from its history and, resumed,
    /// from its own journal) and its jobs in flight.
    pub fn learner(&self) -> &Learner {
        &self.learner
    }

    /// `check_status`.
    pub fn check_status(&self) -> StatusCounts {
        self.board.snapshot()
    }

    /// `retrieve`: waits for the end or the timeout; `Ok(true)` when ended. An error of the
    /// dispatch loop surfaces here.
    pub fn retrieve(&mut self, timeout: Option<Duration>) -> Result<bool> {
        let state = std::mem::replace(&mut self.state, State::Idle);
        let (result, thread) = match state {
            State::Running { done, thread } => {
                let received = match timeout {
                    None => done.recv().map_err(|_| ()),
                    Some(t) => match done.recv_timeout(t) {
                        Ok(r) => Ok(r),
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.state = State::Running { done, thread };
                            return Ok(false);
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => Err(()),
                    },
                };
                let result = received
                    .unwrap_or_else(|()| Err(Error::Internal("the dispatch thread ended without a result".into())));
                (result, Some(thread))
            }
            State::Executed(result) => (result, None),
            State::Consolidated(summary) => {
                self.state = State::Consolidated(summary);
                return Ok(true);
            }
            other => {
                self.state = other;
                return Err(Error::OutOfOrder { call: "retrieve", needs: "execute" });
            }
        };
        if let Some(thread) = thread {
            if thread.join().is_err() {
                self.state = State::Executed(Ok(()));
                return Err(Error::Internal("the dispatch thread panicked".into()));
            }
            self.wall = self.started.map(|s| s.elapsed()).unwrap_or_default();
        }
        self.state = State::Executed(Ok(()));
        result?;
        match self.source_failure.take() {
            Some(error) => Err(error),
            None => Ok(true),
        }
    }

    /// `consolidate`: writes the consolidated files and returns the summary.
    pub fn consolidate(&mut self) -> Result<Summary> {
        match &self.state {
            State::Executed(_) => {}
            State::Consolidated(summary) => return Ok(summary.clone()),
            _ => return Err(Error::OutOfOrder { call: "consolidate", needs: "retrieve" }),
        }
        let consolidated = consolidate_dir(&self.dir)?;
        let summary = Summary {
            name: self.name.clone(),
            backend: self.backend,
            dir: self.dir.clone(),
            total: self.board.snapshot().total,
            finished: consolidated.finished,
            crashed: consolidated.crashed,
            timed_out: consolidated.timed_out,
            wall: self.wall,
            damage: Damage {
                torn_tail: consolidated.damage.torn_tail.or_else(|| self.resumed_torn_tail.clone()),
                skipped: consolidated.damage.skipped,
            },
            role: Role::Master,
            interrupted: stop_requested(),
            deadline_reached: self.deadline_reached.load(Ordering::SeqCst),
        };
        if let Some(status) = self.status.take() {
            let complete = summary.missing() == 0 && !summary.interrupted;
            status.finish(if complete { RunState::Finished } else { RunState::Interrupted }, summary.wall);
        }
        tracing::info!(
            target: "taskfarm",
            "consolidated: {} finished, {} crashed or timed out, {:.3} s",
            summary.finished,
            summary.crashed,
            summary.wall.as_secs_f64()
        );
        self.state = State::Consolidated(summary.clone());
        Ok(summary)
    }

    /// `cleanup`: forgets the operation; removes the scratch folder if no process used it.
    pub fn cleanup(&mut self) -> Result<()> {
        if let State::Running { .. } = self.state {
            return Err(Error::OutOfOrder { call: "cleanup", needs: "retrieve" });
        }
        let _ = std::fs::remove_dir(self.dir.join("scratch"));
        crate::oplog::close();
        self.state = State::Idle;
        self.lock = None;
        Ok(())
    }
}

/// The jobs of `jobs` until a stop is requested: checked before each job is pulled, so a
/// stopped operation starts no new process while those running finish.
/// Counts the jobs of a source of unknown length as they are made, and sets the board's
/// total when the source ends by itself (not when a stop ended it: then what is left is
/// unknown).
fn counted<P: Process>(mut jobs: JobSource<P>, board: StatusBoard) -> JobSource<P> {
    let mut made = 0u64;
    Box::new(std::iter::from_fn(move || match jobs.next() {
        Some(job) => {
            made += 1;
            Some(job)
        }
        None => {
            if !stop_requested() {
                board.set_total(made);
            }
            None
        }
    }))
}

/// The jobs of `jobs` while the longest process of the run so far, started now, would end
/// before `deadline.at - deadline.margin`; checked before each job is pulled, so once one
/// would not, no process starts and the source ends (see [`Deadline`](crate::Deadline)).
fn until_deadline<P: Process>(
    jobs: JobSource<P>,
    deadline: crate::Deadline,
    board: StatusBoard,
    reached: Arc<AtomicBool>,
) -> JobSource<P> {
    let last_start = deadline.at.checked_sub(deadline.margin).unwrap_or(std::time::UNIX_EPOCH);
    Box::new(jobs.take_while(move |_| {
        let fits = std::time::SystemTime::now().checked_add(board.longest()).is_some_and(|end| end <= last_start);
        if !fits && !reached.swap(true, Ordering::SeqCst) {
            tracing::warn!(
                target: "taskfarm",
                "the deadline is near: no new process starts (the longest so far took {:.1} s); the running ones finish",
                board.longest().as_secs_f64()
            );
        }
        fits
    }))
}

fn until_stopped<P: Process>(jobs: JobSource<P>) -> JobSource<P> {
    Box::new(jobs.take_while(|_| !stop_requested()))
}

/// A set of process ids (dense from 0), one bit each: a million ids take 125 KiB.
#[derive(Debug, Default, Clone)]
struct IdSet {
    words: Vec<u64>,
}

impl IdSet {
    fn insert(&mut self, id: u64) {
        let (word, bit) = ((id / 64) as usize, id % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    fn remove(&mut self, id: u64) {
        if let Some(w) = self.words.get_mut((id / 64) as usize) {
            *w &= !(1 << (id % 64));
        }
    }

    fn contains(&self, id: u64) -> bool {
        self.words.get((id / 64) as usize).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| (0..64).filter(move |b| w & (1 << b) != 0).map(move |b| i as u64 * 64 + b))
    }
}

/// Refuses to resume a run whose `operation.toml` differs from `spec` (the backend may differ).
fn check_same_spec(dir: &Path, spec: &Params) -> Result<()> {
    let path = dir.join(files::OPERATION);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    let mut was: toml::Table = toml::from_str(&text)
        .map_err(|_| Error::NotARun { path: dir.to_owned(), missing: "readable operation.toml" })?;
    let mut now = to_toml_table(spec);
    was.remove("backend");
    now.remove("backend");
    // Values compare as a run sees them: a NaN parameter is the same NaN there and now
    // (`==` on floats says NaN differs from itself), and the keys of a table in order (the
    // order of `parameter_ranges` numbers the processes).
    fn same(a: &toml::Value, b: &toml::Value) -> bool {
        use toml::Value::{Array, Float, Table};
        match (a, b) {
            (Float(x), Float(y)) => x == y || (x.is_nan() && y.is_nan()),
            (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
            (Table(x), Table(y)) => x.len() == y.len() && x.iter().zip(y).all(|((j, a), (k, b))| j == k && same(a, b)),
            _ => a == b,
        }
    }
    let same_at = |k: &String| match (was.get(k), now.get(k)) {
        (Some(a), Some(b)) => same(a, b),
        (a, b) => a == b,
    };
    let keys: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    let Some(key) = keys.into_iter().find(|k| !same_at(k)).cloned() else {
        return Ok(());
    };
    let show = |v: Option<&toml::Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "absent".into());
    Err(Error::ResumeSpecDiffers { path: dir.to_owned(), was: show(was.get(&key)), now: show(now.get(&key)), key })
}
