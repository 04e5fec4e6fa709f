//! Copies of stragglers on a pool of threads: what a thread runs is kept at hand, and a
//! thread that found nothing left to start runs a copy of a process far past its
//! prediction (see [`backend_core::speculate`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use backend_core::predict::Learner;
use backend_core::speculate::Copies;
use backend_core::{Job, Location};

use crate::executor::{lock, Feed};

/// The job a thread runs now (kept when stragglers may run a copy: the copy is made of it).
pub(crate) struct Running<P> {
    pub(crate) job: Arc<Job<P>>,
    pub(crate) thread: ThreadId,
    /// Set when the other copy of the job won: no attempt of it starts any more.
    pub(crate) stopped: Arc<AtomicBool>,
}

/// What a pool needs to run a copy of a straggler on a thread that has nothing left to
/// start (see [`backend_core::speculate`]): the duration model, which says which process
/// runs far past its prediction, and the processes that run twice.
#[derive(Debug, Clone)]
pub struct Speculation {
    /// The run's model and its jobs in flight.
    pub learner: Learner,
    /// The processes that run twice.
    pub copies: Arc<Copies>,
}

/// How often a thread with nothing left to start looks for a straggler to copy.
const STRAGGLER_POLL: Duration = Duration::from_millis(100);

/// For a thread that found nothing left to start: a copy of a process that runs far past
/// its prediction on another thread, once there is one; `None` when every process has its
/// record (or a stop came, or the feed was cancelled), and the thread ends.
pub(crate) fn copy_of_a_straggler<P>(
    speculation: &Speculation,
    running: &[Mutex<Option<Running<P>>>],
    feed: &Feed<P>,
    here: &Location,
) -> Option<Arc<Job<P>>> {
    loop {
        let cancelled = matches!(feed, Feed::Pulled { cancelled, .. } if cancelled.load(Ordering::Relaxed));
        if cancelled || backend_core::stop_requested() || speculation.learner.in_flight() == 0 {
            return None;
        }
        let held = |id: u64| {
            running.iter().find_map(|slot| lock(slot).as_ref().filter(|r| r.job.id == id).map(|r| Arc::clone(&r.job)))
        };
        let straggler = speculation.learner.straggler(|id| !speculation.copies.has_copy(id) && held(id).is_some());
        if let Some(straggler) = straggler {
            if let Some(job) = held(straggler.id).filter(|_| speculation.copies.copying(straggler.id)) {
                tracing::info!(
                    target: "taskfarm",
                    "process {} has run {:.1} s, {:.0}× its expected {:.2} s, and nothing is left to start: a copy \
                     starts on {}; the first to finish is recorded",
                    straggler.id,
                    straggler.ran_s,
                    straggler.ran_s / straggler.expected_s,
                    straggler.expected_s,
                    here.worker
                );
                return Some(job);
            }
        }
        std::thread::sleep(STRAGGLER_POLL);
    }
}
