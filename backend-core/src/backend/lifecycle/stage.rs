//! Staging an operation: its result directory, `operation.toml` and journal, and the job
//! source a backend dispatches (counted, in the look-ahead window, until the deadline or a
//! stop).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::resume::IdSet;
use super::{Dispatch, Lifecycle, StagedState, State};
use crate::backend::{Collector, StatusBoard};
use crate::journal::JournalWriter;
use crate::lock::RunLock;
use crate::predict::{Learner, Lookahead};
use crate::results::{create_result_dir, files, write_operation_toml};
use crate::{deadline_now, stop_requested, Error, JobSource, Operation, Process, ProgressDisplay, Result};

impl<P: Process> Lifecycle<P> {
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
    pub(super) fn stage(
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
        let fit = Fit { learner: self.learner.clone(), timeout: options.timeout, board: self.board.clone() };
        let jobs = until_deadline(jobs, deadline, fit, Arc::clone(&self.deadline_reached));
        let dispatch = Dispatch { jobs: until_stopped(jobs), dir, len: to_run, options, waits_for_records };
        self.state = State::Staged(Box::new(StagedState { dispatch, collector }));
        Ok(())
    }
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

/// What judges whether a process started now ends before a deadline: how long it is
/// expected to run.
struct Fit {
    learner: Learner,
    /// The operation's `timeout`: no attempt runs longer.
    timeout: Option<Duration>,
    board: StatusBoard,
}

/// How long a process is expected to run, and what says so: the duration model's prediction
/// for it while the model is trusted (capped at the timeout, past which no attempt runs),
/// else the operation's timeout, else the longest process of the run so far (zero before
/// any ended).
fn expected_duration(
    predicted_s: Option<f64>,
    timeout: Option<Duration>,
    longest: Duration,
) -> (Duration, &'static str) {
    match (predicted_s.and_then(crate::seconds_to_duration), timeout) {
        (Some(predicted), Some(timeout)) if timeout < predicted => (timeout, "its timeout"),
        (Some(predicted), _) => (predicted, "its predicted duration"),
        (None, Some(timeout)) => (timeout, "its timeout"),
        (None, None) => (longest, "the longest so far"),
    }
}

/// The jobs of `jobs` while each, started now, is expected to end before `deadline.at -
/// deadline.margin` (see [`expected_duration`]), and until the batch system's early warning
/// brings the deadline to now ([`deadline_now`]); checked before each job is pulled, so once
/// one would not fit, no process starts, the source ends and the run ends resumable (see
/// [`Deadline`](crate::Deadline)). The job held back is forgotten by the learner.
fn until_deadline<P: Process>(
    jobs: JobSource<P>,
    deadline: Option<crate::Deadline>,
    fit: Fit,
    reached: Arc<AtomicBool>,
) -> JobSource<P> {
    let last_start = deadline.map(|d| d.at.checked_sub(d.margin).unwrap_or(std::time::UNIX_EPOCH));
    Box::new(jobs.take_while(move |job| {
        let why_not = if deadline_now() {
            Some("the batch system's early warning came".to_owned())
        } else if let Some(last_start) = last_start {
            let predicted = fit.learner.trusted_prediction_s(job.id);
            let (expected, basis) = expected_duration(predicted, fit.timeout, fit.board.longest());
            let fits = SystemTime::now().checked_add(expected).is_some_and(|end| end <= last_start);
            (!fits).then(|| format!("process {} would not end in time ({basis}: {:.1} s)", job.id, expected.as_secs_f64()))
        } else {
            None
        };
        let Some(why_not) = why_not else { return true };
        fit.learner.held_back(job.id);
        if !reached.swap(true, Ordering::SeqCst) {
            tracing::warn!(target: "taskfarm", "the deadline is near: no new process starts ({why_not}); the running ones finish");
        }
        false
    }))
}

/// The jobs of `jobs` until a stop is requested: checked before each job is pulled, so a
/// stopped operation starts no new process while those running finish.
fn until_stopped<P: Process>(jobs: JobSource<P>) -> JobSource<P> {
    Box::new(jobs.take_while(|_| !stop_requested()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_expected_to_run_its_prediction_else_its_timeout_else_the_longest_so_far() {
        let s = Duration::from_secs;
        assert_eq!(expected_duration(Some(3.0), Some(s(10)), s(7)), (s(3), "its predicted duration"));
        assert_eq!(expected_duration(Some(3.0), None, s(7)), (s(3), "its predicted duration"));
        assert_eq!(expected_duration(Some(30.0), Some(s(10)), s(7)), (s(10), "its timeout"), "no attempt runs longer");
        assert_eq!(expected_duration(None, Some(s(10)), s(7)), (s(10), "its timeout"));
        assert_eq!(expected_duration(None, None, s(7)), (s(7), "the longest so far"));
        assert_eq!(expected_duration(None, None, Duration::ZERO), (Duration::ZERO, "the longest so far"));
        assert_eq!(
            expected_duration(Some(f64::NAN), None, s(7)),
            (s(7), "the longest so far"),
            "a prediction that is no duration is ignored"
        );
    }
}
