//! Duplicated stragglers: when no process is left to start and a thread would idle while a
//! process runs far past its prediction ([`Learner::straggler`](crate::predict::Learner::straggler)),
//! a copy of that process runs on the idle thread (under MPI, on another rank). The first
//! copy to finish is journaled; the other is killed (its commands, subprocesses and
//! persistent programs: [`kill_children_of`](crate::kill_children_of)) or, for a process
//! that runs in the worker's own thread and cannot be killed, left to end and its record
//! dropped. [`Copies`] is the bookkeeping every backend shares: which processes run twice,
//! and which of their records is the one.
//!
//! A copy runs only when the operation allows it (`speculate`, on by default; off for a
//! process with side effects: `idempotent = false`), and at most one per process. Its
//! record is like any other: `operation.log` says that a copy ran and which one won.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::Status;

/// What to do with a record that came back ([`Copies::settle`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Journal it. `cancel_other`: a copy of it still runs, and is to be stopped.
    Journal {
        /// Whether the other copy still runs.
        cancel_other: bool,
    },
    /// Drop it: the other copy's record was journaled (it won), or this one failed while
    /// the other still runs (the other's record is journaled, whatever it is).
    Drop,
}

#[derive(Debug)]
struct Pair {
    /// Copies of the process still running (2, then 1, then 0).
    running: u8,
    /// A record of it was journaled.
    settled: bool,
}

/// The processes that run twice, and which of their records is journaled (see the
/// [module docs](self)).
#[derive(Debug, Default)]
pub struct Copies {
    pairs: Mutex<HashMap<u64, Pair>>,
    /// How many processes have pairs: records of others skip the lock.
    live: AtomicUsize,
}

impl Copies {
    fn pairs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pair>> {
        self.pairs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of process `id` starts; `false` (and nothing starts) if one already ran.
    pub fn copying(&self, id: u64) -> bool {
        let mut pairs = self.pairs();
        if pairs.contains_key(&id) {
            return false;
        }
        pairs.insert(id, Pair { running: 2, settled: false });
        self.live.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Whether process `id` runs (or ran) a copy.
    pub fn has_copy(&self, id: u64) -> bool {
        self.live.load(Ordering::SeqCst) > 0 && self.pairs().contains_key(&id)
    }

    /// Decides the fate of a record of process `id` that came back with `status`: the first
    /// finished record of a process run twice is journaled (and the other copy is to be
    /// stopped); a failure while the other copy runs is dropped (the other's record is
    /// journaled, whatever it is); the loser's record is dropped. A record of a process that
    /// runs once is journaled as it is.
    pub fn settle(&self, id: u64, status: Status) -> Settled {
        if self.live.load(Ordering::SeqCst) == 0 {
            return Settled::Journal { cancel_other: false };
        }
        let mut pairs = self.pairs();
        let Some(pair) = pairs.get_mut(&id) else {
            return Settled::Journal { cancel_other: false };
        };
        pair.running = pair.running.saturating_sub(1);
        let still_running = pair.running > 0;
        let settled = if pair.settled {
            Settled::Drop
        } else if status == Status::Finished || !still_running {
            pair.settled = true;
            Settled::Journal { cancel_other: still_running }
        } else {
            Settled::Drop
        };
        if !still_running {
            pairs.remove(&id);
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JOURNAL: Settled = Settled::Journal { cancel_other: false };
    const WINS: Settled = Settled::Journal { cancel_other: true };

    #[test]
    fn a_process_that_runs_once_is_journaled_as_it_is() {
        let copies = Copies::default();
        assert_eq!(copies.settle(1, Status::Crashed), JOURNAL);
        assert!(!copies.has_copy(1));
    }

    #[test]
    fn the_first_copy_to_finish_wins_and_the_other_is_dropped() {
        let copies = Copies::default();
        assert!(copies.copying(3));
        assert!(!copies.copying(3), "one copy at most");
        assert!(copies.has_copy(3));
        assert_eq!(copies.settle(3, Status::Finished), WINS);
        assert_eq!(copies.settle(3, Status::Finished), Settled::Drop, "the loser leaves no trace");
        assert!(!copies.has_copy(3), "forgotten once both ended");
        assert_eq!(copies.settle(3, Status::Finished), JOURNAL);
    }

    #[test]
    fn a_failure_waits_for_the_other_copy() {
        let copies = Copies::default();
        copies.copying(4);
        assert_eq!(copies.settle(4, Status::Crashed), Settled::Drop);
        assert_eq!(copies.settle(4, Status::Finished), JOURNAL);
        copies.copying(5);
        assert_eq!(copies.settle(5, Status::TimedOut), Settled::Drop);
        assert_eq!(copies.settle(5, Status::Crashed), JOURNAL, "both failed: the last is journaled");
        assert!(!copies.has_copy(4) && !copies.has_copy(5));
    }
}
