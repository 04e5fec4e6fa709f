//! The counts behind `check_status`: finished, crashed, running, the total when known, and
//! the longest process so far; shared by the collector, the dispatch loops and the status
//! file.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::Status;

/// What `check_status` reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatusCounts {
    /// Processes that returned an output.
    pub finished: u64,
    /// Processes that crashed.
    pub crashed: u64,
    /// Processes running now.
    pub running: u64,
    /// All processes, when known.
    pub total: Option<u64>,
}

/// Shared counters behind `check_status`; cheap to clone and update from any thread.
#[derive(Debug, Clone, Default)]
pub struct StatusBoard(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    finished: AtomicU64,
    crashed: AtomicU64,
    running: AtomicU64,
    total: AtomicU64,
    /// The longest process of the run so far, in microseconds.
    longest_us: AtomicU64,
}

const UNKNOWN_TOTAL: u64 = u64::MAX;

impl StatusBoard {
    /// A board for `total` processes (if known).
    pub fn new(total: Option<u64>) -> Self {
        let board = StatusBoard::default();
        board.0.total.store(total.unwrap_or(UNKNOWN_TOTAL), Ordering::Relaxed);
        board
    }

    /// The total became known (the source of an operation of unknown length ended).
    pub fn set_total(&self, total: u64) {
        self.0.total.store(total, Ordering::Relaxed);
    }

    /// `n` processes started.
    pub fn started(&self, n: u64) {
        self.0.running.fetch_add(n, Ordering::Relaxed);
    }

    /// `n` processes stopped running without a record (e.g. a batch handed back).
    pub fn unstarted(&self, n: u64) {
        self.0.running.fetch_sub(n, Ordering::Relaxed);
    }

    /// Counts processes that an earlier run already recorded (a resumed run).
    pub fn preset(&self, finished: u64, crashed: u64) {
        self.0.finished.store(finished, Ordering::Relaxed);
        self.0.crashed.store(crashed, Ordering::Relaxed);
    }

    /// A process ended with `status`; it was counted as running.
    pub(super) fn ended(&self, status: Status) {
        let _ = self.0.running.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| Some(r.saturating_sub(1)));
        match status {
            Status::Finished => self.0.finished.fetch_add(1, Ordering::Relaxed),
            Status::Crashed | Status::TimedOut => self.0.crashed.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Notes how long a process that ended ran.
    pub(super) fn ran(&self, duration_s: f64) {
        let us = if duration_s.is_finite() && duration_s > 0.0 { (duration_s * 1e6) as u64 } else { 0 };
        self.0.longest_us.fetch_max(us, Ordering::Relaxed);
    }

    /// The longest a process of this run has run so far (zero before any ended).
    pub fn longest(&self) -> Duration {
        Duration::from_micros(self.0.longest_us.load(Ordering::Relaxed))
    }

    /// The counts now.
    pub fn snapshot(&self) -> StatusCounts {
        let total = self.0.total.load(Ordering::Relaxed);
        StatusCounts {
            finished: self.0.finished.load(Ordering::Relaxed),
            crashed: self.0.crashed.load(Ordering::Relaxed),
            running: self.0.running.load(Ordering::Relaxed),
            total: (total != UNKNOWN_TOTAL).then_some(total),
        }
    }
}
