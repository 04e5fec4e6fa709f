//! Duplicated stragglers under MPI: which job the master copies to which worker once nothing
//! is left to send, and which of the two records it journals (see
//! [`backend_core::speculate`]).

use std::time::Duration;

use backend_core::{Collector, Process};

use super::{worker_rank, Scheduler, Unit};
use crate::message::Message;
use crate::transport::{Rank, Transport};
use crate::Error;

/// Duplicated stragglers under MPI (see [`backend_core::speculate`]): once nothing is left
/// to send, a worker with a free thread runs a copy of a process that runs far past its
/// prediction on another rank; the first record is journaled, and the rank running the
/// other copy is told to stop it.
#[derive(Default)]
pub(crate) struct Speculation {
    /// The `Work` message of each job sent alone in its unit (those worth a copy: batched
    /// ones were measured short), as sent, until its record is journaled.
    kept: std::collections::HashMap<u64, Vec<u8>>,
    copies: backend_core::speculate::Copies,
}

/// How often the master looks for a straggler to copy while a worker has a free thread and
/// nothing is left to send.
pub(super) const STRAGGLER_POLL: Duration = Duration::from_millis(100);

impl Speculation {
    /// Keeps the `Work` message `work` that sent job `id` alone, for a copy of it.
    pub(super) fn keep(&mut self, id: u64, work: Vec<u8>) {
        self.kept.insert(id, work);
    }
}

impl<P: Process> Scheduler<P> {
    /// Whether a straggler may run a copy now: speculation is on, nothing is left to send
    /// (no job, no retry), no stop was asked for, and a worker has a free thread.
    pub(super) fn may_copy_a_straggler(&self) -> bool {
        self.speculation.is_some()
            && self.exhausted
            && self.pending.is_empty()
            && self.retries.as_ref().is_none_or(|r| r.waiting.is_empty())
            && !backend_core::stop_requested()
            && (0..self.slots.len()).any(|w| self.policy.has_free_thread(w))
    }

    /// Sends each worker with a free thread a copy of a straggler that runs on another rank,
    /// if there is one (see [`Speculation`]).
    pub(super) fn copy_stragglers(
        &mut self,
        wire: &mut impl Transport,
        collector: &mut Collector,
    ) -> Result<(), Error> {
        for w in 0..self.slots.len() {
            if !self.policy.has_free_thread(w) {
                continue;
            }
            let Some(speculation) = &self.speculation else { return Ok(()) };
            let holder =
                |id: u64| self.slots.iter().position(|slot| slot.units.iter().any(|u| u.unfinished().contains(&id)));
            let eligible = |id: u64| {
                speculation.kept.contains_key(&id)
                    && !speculation.copies.has_copy(id)
                    && holder(id).is_some_and(|h| h != w)
            };
            let Some(straggler) = collector.learner().straggler(eligible) else { continue };
            let (Some(holder), Some(work)) = (holder(straggler.id), speculation.kept.get(&straggler.id)) else {
                continue;
            };
            let bytes = work.clone();
            if !speculation.copies.copying(straggler.id) {
                continue;
            }
            tracing::info!(
                target: "taskfarm",
                "process {} has run {:.1} s on rank-{}, {:.0}× its expected {:.2} s, and nothing is left to send: a \
                 copy starts on rank-{}; the first to finish is recorded",
                straggler.id,
                straggler.ran_s,
                holder + 1,
                straggler.ran_s / straggler.expected_s,
                straggler.expected_s,
                w + 1
            );
            wire.send(worker_rank(w), &bytes);
            collector.board().started(1);
            let threads = self.policy.sent_retry(w);
            self.slots[w].hold(Unit::new(vec![straggler.id], threads));
        }
        Ok(())
    }

    /// Settles a record of a process that may have run twice; whether to journal it. The
    /// loser's record is dropped; when the first copy's record is journaled, the rank that
    /// runs the other is told to stop it.
    pub(super) fn settle_copies(
        &mut self,
        wire: &mut impl Transport,
        collector: &mut Collector,
        head: &crate::message::RecordHead,
        from: Rank,
    ) -> bool {
        let Some(speculation) = &mut self.speculation else { return true };
        match speculation.copies.settle(head.id, head.status) {
            backend_core::speculate::Settled::Journal { cancel_other } => {
                speculation.kept.remove(&head.id);
                if cancel_other {
                    let other =
                        self.slots.iter().position(|slot| slot.units.iter().any(|u| u.unfinished().contains(&head.id)));
                    if let Some(other) = other.map(worker_rank).filter(|&r| r != from) {
                        if let Ok(cancel) = (Message::<P>::Cancel { id: head.id }).encode() {
                            wire.send(other, &cancel);
                        }
                        tracing::info!(
                            target: "taskfarm",
                            "process {} ran twice: the copy on rank-{from} finished first and is recorded; the other, on \
                             rank-{other}, is stopped",
                            head.id
                        );
                    }
                }
                true
            }
            backend_core::speculate::Settled::Drop => {
                collector.board().unstarted(1);
                false
            }
        }
    }
}
