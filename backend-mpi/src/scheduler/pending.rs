//! The jobs the master has taken from the source and not sent, and whether a job was
//! measured short: only such a job may wait in a worker's queue or share a unit.

use backend_core::{Collector, Process};

use super::jobs::Next;
use super::Scheduler;

impl<P: Process> Scheduler<P> {
    /// The next job to send: the one kept back, else the source's next (`None`, with
    /// `exhausted` or `starved` set, when there is none).
    pub(super) fn next_job(&mut self) -> Option<backend_core::Job<P>> {
        if let Some(job) = self.pending.pop_front() {
            return Some(job);
        }
        if self.exhausted || self.starved {
            return None;
        }
        match self.jobs.next_job() {
            Next::Job(job) => Some(job),
            Next::NotYet => {
                self.starved = true;
                None
            }
            Next::Ended => {
                self.exhausted = true;
                None
            }
        }
    }

    /// Whether every unit worker `w` holds was measured short, so work may wait behind them.
    pub(super) fn holds_only_short(&mut self, w: usize, collector: &Collector) -> bool {
        let Some(slot) = self.slots.get_mut(w) else { return false };
        slot.units.iter_mut().all(|unit| {
            *unit.short.get_or_insert_with(|| {
                unit.ids.iter().all(|&id| collector.learner().measured_shorter_than(id, SHORT_PROCESS_S))
            })
        })
    }

    /// Whether the next job to send was measured short, so it may wait in a worker's queue
    /// (takes it from the source and keeps it); `true` when there is none.
    pub(super) fn next_measured_short(&mut self, collector: &Collector) -> bool {
        if self.pending.is_empty() {
            if let Some(job) = self.next_job() {
                self.pending.push_back(job);
            }
        }
        self.pending.front().is_none_or(|job| collector.learner().measured_shorter_than(job.id, SHORT_PROCESS_S))
    }
}

/// [`SHORT_PROCESS`](crate::policy::SHORT_PROCESS) in seconds: the duration below which a
/// job measured by the model may wait in a queue or share a unit.
pub(super) const SHORT_PROCESS_S: f64 = crate::policy::SHORT_PROCESS.as_secs_f64();
