//! The one place results arrive: the `Collector` journals each record at once, counts it,
//! teaches the duration model, tells an adaptive source, and drives the progress display.

use std::time::{Duration, Instant};

use super::StatusBoard;
use crate::journal::JournalWriter;
use crate::predict::Learner;
use crate::{stop_now_requested, stop_requested, ProcessRecord, ProgressDisplay, Result, Status};

/// The one place results arrive: it journals each record at once (flushed in batches),
/// updates the status board and drives the progress display.
#[derive(Debug)]
pub struct Collector {
    pub(super) journal: JournalWriter,
    pub(super) board: StatusBoard,
    pub(super) progress: ProgressDisplay,
    /// Learns each finished process's duration; gives the progress display its ETA.
    pub(super) learner: Learner,
    /// When the progress display's ETA was last computed.
    pub(super) eta_at: Option<Instant>,
    /// Told of each journaled record, when the operation's source decides from results.
    pub(super) observer: crate::adaptive::Observed,
    /// The retries each process may have (`RunOptions::retries`).
    pub(super) retries: u32,
}

impl Collector {
    /// Accepts the record of a process that ended. After a second stop request ("stop now",
    /// see [`request_stop`](crate::request_stop)) records are dropped: those processes were
    /// cut short and run again on `--resume`.
    pub fn record(&mut self, record: &ProcessRecord) -> Result<()> {
        crate::subprocess::check_children()?;
        if stop_now_requested()
            || cut_short_by_stop(record.status, record.reason.as_deref())
            || self.retry_stopped(record.status, record.attempts)
        {
            self.board.unstarted(1);
            return Ok(());
        }
        if record.status != Status::Finished {
            check_cannot_run(record.reason.as_deref())?;
        }
        let journaled = self.journal.append(record)?;
        if let Some(observer) = &self.observer.0 {
            observer(record);
        }
        self.board.ran(record.duration_s);
        self.learner.recorded(record.id, journaled, record.duration_s);
        if journaled != Status::Finished {
            let reason = match (journaled == record.status, record.reason.as_deref()) {
                (true, Some(reason)) => reason,
                (true, None) => "no reason given",
                (false, _) => "its record is larger than the journal takes",
            };
            log_failed(record, journaled, reason);
        }
        self.ended(journaled);
        Ok(())
    }

    /// Accepts the record of a process that ended as a journal frame made by
    /// [`encode_frame`](crate::journal::encode_frame) (on an MPI worker), with its status and
    /// how long it ran: it is journaled as it is, and a failed one is decoded to be logged.
    pub fn record_frame(&mut self, status: Status, duration_s: f64, frame: &[u8]) -> Result<()> {
        crate::subprocess::check_children()?;
        if stop_now_requested() {
            self.board.unstarted(1);
            return Ok(());
        }
        if status != Status::Finished {
            let record = crate::journal::decode_frame(frame)?;
            if cut_short_by_stop(status, record.reason.as_deref()) || self.retry_stopped(status, record.attempts) {
                self.board.unstarted(1);
                return Ok(());
            }
            crate::subprocess::check_reason(record.reason.as_deref())?;
            check_cannot_run(record.reason.as_deref())?;
            log_failed(&record, status, record.reason.as_deref().unwrap_or("no reason given"));
        }
        self.journal.append_frame(frame)?;
        if let Some(observer) = &self.observer.0 {
            observer(&crate::journal::decode_frame(frame)?);
        }
        self.board.ran(duration_s);
        self.ended(status);
        Ok(())
    }

    /// Whether a failed process had retries left when a stop came: it gets no record, so
    /// that `--resume` runs it again with all its retries, as it does the processes that
    /// never started (`execute_job` starts no attempt after a stop).
    fn retry_stopped(&self, status: Status, attempts: u32) -> bool {
        status != Status::Finished && attempts <= self.retries && stop_requested()
    }

    /// Counts a journaled record on the board and the progress display.
    fn ended(&mut self, status: Status) {
        self.board.ended(status);
        let counts = self.board.snapshot();
        // The predicted ETA sums over the processes in flight: a few times a second is enough.
        if self.eta_at.is_none_or(|at| at.elapsed() >= ETA_EVERY) {
            self.eta_at = Some(Instant::now());
            let left = counts.total.map(|t| t.saturating_sub(counts.finished + counts.crashed));
            self.progress.set_predicted_eta(left.and_then(|left| self.learner.eta_s(left)));
        }
        self.progress.update(&counts);
    }

    /// The duration model and the jobs in flight: a backend that journals frames
    /// ([`record_frame`](Self::record_frame)) tells it each record's id and duration
    /// ([`Learner::recorded`]), and every backend says how many processes run at once.
    pub fn learner(&self) -> &Learner {
        &self.learner
    }

    /// The status board, to count processes as they start.
    pub fn board(&self) -> &StatusBoard {
        &self.board
    }

    /// Syncs the journal and clears the progress display.
    pub fn finish(&mut self) -> Result<()> {
        self.progress.finish(&self.board.snapshot());
        self.journal.sync()
    }
}

/// Whether a failed process was cut short by a stop rather than crashed: once a stop was
/// requested, a process whose last attempt a stopping signal ended (SIGTERM, SIGINT, SIGHUP,
/// SIGKILL). A batch system or a launcher that stops a job signals every process of it at
/// once (`scancel`, mpirun's teardown), so the process's own death is the stop's, not a
/// fault of the process: it gets no record and runs again on `--resume`.
fn cut_short_by_stop(status: Status, reason: Option<&str>) -> bool {
    stop_requested() && ended_by_a_stopping_signal(status, reason)
}

/// Whether a failed process's last attempt was ended by SIGTERM, SIGINT, SIGHUP or SIGKILL.
fn ended_by_a_stopping_signal(status: Status, reason: Option<&str>) -> bool {
    if status == Status::Finished {
        return false;
    }
    let Some(reason) = reason else { return false };
    // With retries the reason lists every attempt: the last one is the stop's.
    let last = reason.rsplit("; attempt ").next().unwrap_or(reason);
    last.contains("killed by signal")
        && ["(SIGTERM)", "(SIGINT)", "(SIGHUP)", "(SIGKILL)"].iter().any(|signal| last.contains(signal))
}

/// Fails the run when a failed record's reason says that no process can run (see
/// [`ProcessError::cannot_run`](crate::ProcessError::cannot_run)); the error is that
/// reason (its last attempt's, after retries), without the mark.
fn check_cannot_run(reason: Option<&str>) -> Result<()> {
    let mark = crate::process::CANNOT_RUN_MARK;
    match reason.and_then(|r| r.rfind(mark).map(|at| &r[at + mark.len()..])) {
        Some(why) => Err(crate::Error::CannotRun(why.to_owned())),
        None => Ok(()),
    }
}
/// How often the collector computes the predicted ETA for the progress display.
const ETA_EVERY: Duration = Duration::from_millis(250);

/// Says in operation.log that a process failed (the console shows it with -v; the summary
/// counts crashes).
fn log_failed(record: &ProcessRecord, status: Status, reason: &str) {
    tracing::info!(
        target: "taskfarm",
        "process {} {} on {}/{}: {reason}",
        record.id,
        status.as_str().replace('_', " "),
        record.location.host,
        record.location.worker,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_ended_by_a_stopping_signal_is_told_from_a_crash() {
        let stopped = [
            "the command `sh` was killed by signal 15 (SIGTERM)",
            "its subprocess was killed by signal 9 (SIGKILL), as the out-of-memory killer does",
            "attempt 1: the command `sh` exited with status 3; attempt 2: the command `sh` was killed by signal 2 (SIGINT)",
        ];
        for reason in stopped {
            assert!(ended_by_a_stopping_signal(Status::Crashed, Some(reason)), "{reason}");
        }
        let crashed = [
            "the command `sh` was killed by signal 11 (SIGSEGV)",
            "the command `sh` exited with status 143",
            "attempt 1: the command `sh` was killed by signal 15 (SIGTERM); attempt 2: the command `sh` exited with status 1",
        ];
        for reason in crashed {
            assert!(!ended_by_a_stopping_signal(Status::Crashed, Some(reason)), "{reason}");
        }
        assert!(!ended_by_a_stopping_signal(Status::Finished, Some(stopped[0])));
        assert!(!ended_by_a_stopping_signal(Status::Crashed, None));
    }
}
