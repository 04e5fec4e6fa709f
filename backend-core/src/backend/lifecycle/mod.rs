//! `Lifecycle`: the state machine behind the `Backend` calls, the same for every backend —
//! the result directory and its lock, the journal, resume, the job source (its look-ahead
//! window, deadline and stop), the status file, consolidation and the summary.
//!
//! `stage.rs` stages an operation (its result directory, journal and job source),
//! `resume.rs` stages one that continues an earlier run.

mod resume;
mod stage;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Collector, Role, StatusBoard, StatusCounts, Summary};
use crate::journal::{Damage, TornTail};
use crate::lock::RunLock;
use crate::predict::Learner;
use crate::results::consolidate_dir;
use crate::status::{RunState, StatusSource, StatusWriter};
use crate::{stop_requested, Error, JobSource, Process, Result, RunOptions};

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
