//! Where the scheduler takes its jobs: the operation's lazy source, or, for a source that
//! waits for the records of the jobs it gave (adaptive runs), a channel fed by a thread of
//! its own, so the master never waits for the source on the thread that journals records.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use backend_core::{Job, JobSource, Process};

use crate::Error;

/// Where the scheduler takes its jobs.
pub(crate) enum Jobs<P: Process> {
    /// The operation's source, pulled on the master's thread: it never waits.
    Source(JobSource<P>),
    /// Jobs that a feeder thread pulls from a source that waits for the records of the jobs
    /// it gave (adaptive runs, see [`fed`]): the master takes those that are there and
    /// never waits for the source on the thread that journals the records it waits for.
    Fed {
        jobs: Receiver<Job<P>>,
        /// Jobs taken off the channel by [`Jobs::wait`], not yet handed out.
        held: VecDeque<Job<P>>,
    },
}

/// What taking the next job gave.
pub(super) enum Next<P> {
    Job(Job<P>),
    /// None is ready yet (a fed source is deciding).
    NotYet,
    /// The source has ended.
    Ended,
}

impl<P: Process> Jobs<P> {
    /// The next job, if one is ready.
    pub(super) fn next_job(&mut self) -> Next<P> {
        match self {
            Jobs::Source(source) => source.next().map_or(Next::Ended, Next::Job),
            Jobs::Fed { jobs, held } => match held.pop_front() {
                Some(job) => Next::Job(job),
                None => match jobs.try_recv() {
                    Ok(job) => Next::Job(job),
                    Err(TryRecvError::Empty) => Next::NotYet,
                    Err(TryRecvError::Disconnected) => Next::Ended,
                },
            },
        }
    }

    /// Waits up to `timeout` for a fed job (keeping it for [`next_job`](Self::next_job)) or the
    /// source's end.
    pub(super) fn wait(&mut self, timeout: Duration) {
        if let Jobs::Fed { jobs, held } = self {
            if held.is_empty() {
                match jobs.recv_timeout(timeout) {
                    Ok(job) => held.push_back(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
                }
            }
        }
    }
}

/// How many fed jobs wait ready for the master at most.
const FED_AHEAD: usize = 1024;

/// Jobs of `source` pulled by a feeder thread, for a source that waits in `next` for the
/// records of the jobs it gave (see [`Jobs::Fed`]).
pub(crate) fn fed<P: Process>(source: JobSource<P>) -> Result<Jobs<P>, Error> {
    let (send, jobs) = std::sync::mpsc::sync_channel(FED_AHEAD);
    std::thread::Builder::new()
        .name("taskfarm-feeder".into())
        .spawn(move || {
            for job in source {
                if send.send(job).is_err() {
                    // The master has gone: nothing takes jobs any more.
                    break;
                }
            }
        })
        .map_err(|e| Error::Core(backend_core::Error::Internal(format!("the feeder thread could not start: {e}"))))?;
    Ok(Jobs::Fed { jobs, held: VecDeque::new() })
}
