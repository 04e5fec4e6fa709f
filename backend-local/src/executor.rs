//! [`ThreadExecutor`]: the threads of this host that run jobs through
//! [`execute_job`], fed from the operation's lazy source or over a channel, each process
//! holding as many of its slots as it asks threads for.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::straggler::{copy_of_a_straggler, Running, Speculation};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use std::thread::ThreadId;

use backend_core::{
    execute_job, execute_shared_job, Error, Job, JobSource, Location, Process, ProcessRecord, Result, RunOptions,
};
use crossbeam_channel::{Receiver, Sender};

use crate::check_process_threads;

/// How a [`ThreadExecutor`] is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// How many threads run processes (its slots; at least 1).
    pub threads: usize,
    /// The threads' name prefix.
    pub name: &'static str,
}

/// A pool of threads of this host that runs jobs through [`execute_job`]: jobs come from
/// the operation's lazy source ([`ThreadExecutor::pulling`], the local backend) or are
/// submitted over an unbounded channel ([`ThreadExecutor::submit`], an MPI worker rank with
/// several threads, whose main thread alone talks MPI and never blocks); records come out
/// over another channel ([`ThreadExecutor::records`]) in the order they finish.
///
/// A process that asks for `k` threads ([`RunOptions::threads`]) occupies `k` of the
/// executor's slots while it runs (first come, first served), so at most `threads / k` such
/// processes run at once, and sees `k` in
/// [`ProcessContext::threads`](backend_core::ProcessContext::threads). The records channel
/// ends when the executor is [closed](ThreadExecutor::close) (or its source is exhausted)
/// and every job is done.
pub struct ThreadExecutor<P: Process> {
    jobs: Option<Sender<(Job<P>, bool)>>,
    feed: Arc<Feed<P>>,
    records: Receiver<ProcessRecord>,
    /// What each thread runs now, when stragglers may run a copy.
    running: Arc<Vec<Mutex<Option<Running<P>>>>>,
    _pool: rayon::ThreadPool,
}

impl<P: Process> std::fmt::Debug for ThreadExecutor<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadExecutor").finish_non_exhaustive()
    }
}

/// Where an executor's threads take their jobs from.
pub(crate) enum Feed<P> {
    /// Jobs submitted over a channel (an MPI worker hands over the units it receives).
    Submitted(Receiver<(Job<P>, bool)>),
    /// The operation's lazy source itself, behind a mutex (as rayon's `par_bridge` does):
    /// no feeder thread, and no wake-up per job.
    Pulled {
        /// The source.
        jobs: Mutex<JobSource<P>>,
        /// Set by `cancel_pending`: take no more jobs.
        cancelled: AtomicBool,
        /// Why the source could not make a job (it panicked), if it could not.
        failure: Mutex<Option<String>>,
        /// The source has ended: every job was taken.
        ended: AtomicBool,
        /// How many jobs were taken from the source.
        taken: AtomicU64,
    },
}

impl<P> Feed<P> {
    /// The next job to run, and whether it was submitted to be stoppable; `None` when
    /// there are no more.
    fn next(&self) -> Option<(Job<P>, bool)> {
        match self {
            Feed::Submitted(queue) => queue.recv().ok(),
            Feed::Pulled { jobs, cancelled, failure, ended, taken } => {
                if cancelled.load(Ordering::Relaxed) {
                    return None;
                }
                let mut jobs = jobs.lock().unwrap_or_else(PoisonError::into_inner);
                match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| jobs.next())) {
                    Ok(None) => {
                        ended.store(true, Ordering::SeqCst);
                        None
                    }
                    Ok(job) => {
                        taken.fetch_add(1, Ordering::SeqCst);
                        job.map(|job| (job, false))
                    }
                    Err(payload) => {
                        cancelled.store(true, Ordering::Relaxed);
                        let reason = backend_core::panic_message(payload.as_ref());
                        *failure.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason);
                        None
                    }
                }
            }
        }
    }
}

impl<P: Process> ThreadExecutor<P> {
    /// Starts `config.threads` threads that run the jobs submitted to it with `options` in
    /// result directory `dir`; thread `i` records `location(i)` as where its processes ran,
    /// and calls `on_start()` before each job, keeping what it returns (a guard) until the
    /// job is done. A process asking for more threads than the executor has is refused with
    /// a sentence.
    pub fn start<G: 'static>(
        config: ExecutorConfig,
        dir: PathBuf,
        options: RunOptions,
        location: impl Fn(usize) -> Location,
        on_start: impl Fn() -> G + Send + Sync + 'static,
    ) -> Result<Self> {
        let (jobs, pending) = crossbeam_channel::unbounded();
        let mut executor = Self::with_feed(config, Feed::Submitted(pending), dir, options, location, on_start, None)?;
        // Kept out of the shared feed, so that dropping it (`close`) ends the queue.
        executor.jobs = Some(jobs);
        Ok(executor)
    }

    /// Like [`start`](Self::start), with threads that take their jobs from `jobs` itself, one
    /// at a time, until it ends (nothing is submitted). The records
    /// channel ends when the source is exhausted and every job is done. A source that panics
    /// ends the run: [`failure`](Self::failure) says why.
    ///
    /// With `speculation` (and the operation's `speculate` option), a thread that finds the
    /// source exhausted runs a copy of a process running far past its prediction, if there
    /// is one, instead of ending; [`stop_copies_of`](Self::stop_copies_of) stops the copy
    /// that lost.
    pub fn pulling<G: 'static>(
        config: ExecutorConfig,
        jobs: JobSource<P>,
        dir: PathBuf,
        options: RunOptions,
        location: impl Fn(usize) -> Location,
        on_start: impl Fn() -> G + Send + Sync + 'static,
        speculation: Option<Speculation>,
    ) -> Result<Self> {
        let feed = Feed::Pulled {
            jobs: Mutex::new(jobs),
            cancelled: AtomicBool::new(false),
            failure: Mutex::new(None),
            ended: AtomicBool::new(false),
            taken: AtomicU64::new(0),
        };
        let speculation = speculation.filter(|_| options.speculate);
        Self::with_feed(config, feed, dir, options, location, on_start, speculation)
    }

    fn with_feed<G: 'static>(
        config: ExecutorConfig,
        feed: Feed<P>,
        dir: PathBuf,
        options: RunOptions,
        location: impl Fn(usize) -> Location,
        on_start: impl Fn() -> G + Send + Sync + 'static,
        speculation: Option<Speculation>,
    ) -> Result<Self> {
        let threads = config.threads;
        if threads == 0 {
            return Err(Error::InvalidOption("the pool size must be at least 1".into()));
        }
        check_process_threads(options.process_threads(), threads, "the pool has")?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(move |i| format!("{}-{i}", config.name))
            .build()
            .map_err(|e| Error::Internal(format!("the thread pool could not start: {e}")))?;
        // Pulled for the local collector: room for the records of a few milliseconds of tiny
        // processes (see `COLLECT_PAUSE`). Submitted units (an MPI rank) are answered as they
        // end. A bounded channel allocates every slot up front.
        let per_thread = match feed {
            Feed::Pulled { .. } => 4096,
            Feed::Submitted(_) => 256,
        };
        let (results, records) = crossbeam_channel::bounded(threads * per_thread);
        let locations: Vec<Location> = (0..threads).map(location).collect();
        let per_process = options.process_threads();
        let slots = (per_process > 1).then(|| Slots::new(threads));
        let feed = Arc::new(feed);
        let queue = Arc::clone(&feed);
        let running: Arc<Vec<Mutex<Option<Running<P>>>>> = Arc::new((0..threads).map(|_| Mutex::new(None)).collect());
        let now_running = Arc::clone(&running);
        // What each thread runs is kept when a copy may be made of it here (`speculation`),
        // or when it was submitted to be stoppable (an MPI rank, whose master runs copies).
        let track_all = speculation.is_some();
        pool.spawn_broadcast(move |ctx| {
            let here = &locations[ctx.index() % locations.len()];
            let mine = &now_running[ctx.index() % now_running.len()];
            loop {
                let job = match (queue.next(), &speculation) {
                    (Some((job, stoppable)), _) => Ok((job, stoppable || track_all)),
                    (None, Some(speculation)) => match copy_of_a_straggler(speculation, &now_running, &queue, here) {
                        Some(copy) => Err(copy),
                        None => break,
                    },
                    (None, None) => break,
                };
                let _slots = slots.as_ref().map(|s| s.acquire(per_process));
                let _guard = on_start();
                let record = match job {
                    Ok((job, false)) => execute_job(job, &dir, here, &options),
                    job => {
                        let job = job.map_or_else(|copy| copy, |(job, _)| Arc::new(job));
                        let stopped = Arc::new(AtomicBool::new(false));
                        let thread = std::thread::current().id();
                        *lock(mine) = Some(Running { job: Arc::clone(&job), thread, stopped: Arc::clone(&stopped) });
                        let record = execute_shared_job(job, &dir, here, &options, &stopped);
                        lock(mine).take();
                        record
                    }
                };
                if results.send(record).is_err() {
                    // Nobody reads records any more: the owner went away.
                    break;
                }
            }
        });
        Ok(ThreadExecutor { jobs: None, feed, records, running, _pool: pool })
    }

    /// Stops the copies of process `id` that still run (the loser of a process run twice):
    /// starts no more attempt of them, and kills the commands, subprocesses and persistent
    /// programs their threads started. A
    /// copy running in the thread itself cannot be killed: it ends by itself. Returns how
    /// many process groups were killed.
    pub fn stop_copies_of(&self, id: u64) -> usize {
        let threads: Vec<ThreadId> = self
            .running
            .iter()
            .filter_map(|slot| {
                let running = lock(slot);
                let running = running.as_ref().filter(|r| r.job.id == id)?;
                running.stopped.store(true, Ordering::SeqCst);
                Some(running.thread)
            })
            .collect();
        threads.into_iter().map(backend_core::kill_children_of).sum()
    }

    /// Queues `job`; gives it back when the executor was closed or takes its jobs from a
    /// source.
    pub fn submit(&self, job: Job<P>) -> std::result::Result<(), Job<P>> {
        self.submit_as(job, false)
    }

    /// Like [`submit`](Self::submit), for a job that [`stop_copies_of`](Self::stop_copies_of)
    /// may have to stop (a copy of it may run elsewhere): its thread keeps it at hand.
    pub fn submit_stoppable(&self, job: Job<P>) -> std::result::Result<(), Job<P>> {
        self.submit_as(job, true)
    }

    fn submit_as(&self, job: Job<P>, stoppable: bool) -> std::result::Result<(), Job<P>> {
        match &self.jobs {
            Some(jobs) => jobs.send((job, stoppable)).map_err(|e| e.into_inner().0),
            None => Err(job),
        }
    }

    /// Takes no more jobs: once the queue is empty, the threads end and
    /// [`records`](Self::records) disconnects.
    pub fn close(&mut self) {
        self.jobs = None;
    }

    /// Drops every job still waiting in the queue (the running ones finish); returns how
    /// many were dropped. An executor [`pulling`](Self::pulling) from a source takes no more
    /// jobs from it (and returns 0).
    pub fn cancel_pending(&self) -> usize {
        match &*self.feed {
            Feed::Submitted(pending) => pending.try_iter().count(),
            Feed::Pulled { cancelled, .. } => {
                cancelled.store(true, Ordering::Relaxed);
                0
            }
        }
    }

    /// How many jobs an executor [`pulling`](Self::pulling) jobs took from its source, once
    /// the source has ended (every job was taken; some may still run); `None` before.
    pub fn taken_when_ended(&self) -> Option<u64> {
        match &*self.feed {
            Feed::Pulled { ended, taken, .. } if ended.load(Ordering::SeqCst) => Some(taken.load(Ordering::SeqCst)),
            _ => None,
        }
    }

    /// Why the source of an executor [`pulling`](Self::pulling) jobs could not make one, as
    /// an error (the source panicked while making a process).
    pub fn failure(&self) -> Option<Error> {
        let Feed::Pulled { failure, .. } = &*self.feed else { return None };
        let reason = failure.lock().unwrap_or_else(PoisonError::into_inner).clone()?;
        Some(Error::Internal(format!("making the operation's next process panicked: {reason}")))
    }

    /// The records of finished jobs, in the order they finish.
    pub fn records(&self) -> &Receiver<ProcessRecord> {
        &self.records
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A counting semaphore served first come, first served (a ticket lock), so a process that
/// needs many slots is not starved by ones that need few.
struct Slots {
    state: Mutex<SlotState>,
    changed: Condvar,
}

struct SlotState {
    free: usize,
    next_ticket: u64,
    serving: u64,
}

impl Slots {
    fn new(free: usize) -> Arc<Self> {
        Arc::new(Slots { state: Mutex::new(SlotState { free, next_ticket: 0, serving: 0 }), changed: Condvar::new() })
    }

    /// Waits for its turn and for `k` free slots, takes them; they return when the guard drops.
    fn acquire(self: &Arc<Self>, k: usize) -> SlotGuard {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        while state.serving != ticket || state.free < k {
            state = self.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.free -= k;
        state.serving += 1;
        drop(state);
        self.changed.notify_all();
        SlotGuard { slots: Arc::clone(self), k }
    }
}

struct SlotGuard {
    slots: Arc<Slots>,
    k: usize,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.state.lock().unwrap_or_else(PoisonError::into_inner).free += self.k;
        self.slots.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::process_pool;
    use backend_core::{Params, ProcessContext, ProcessError, Status};
    use serde::{Deserialize, Serialize};
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    static NOW: AtomicUsize = AtomicUsize::new(0);
    static PEAK: AtomicUsize = AtomicUsize::new(0);

    /// Counts how many of its kind run at once.
    #[derive(Debug, Serialize, Deserialize)]
    struct Wide;

    impl Process for Wide {
        type Output = usize;
        fn run(&self, ctx: &ProcessContext<'_>) -> std::result::Result<usize, ProcessError> {
            let now = NOW.fetch_add(1, Ordering::SeqCst) + 1;
            PEAK.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(15));
            NOW.fetch_sub(1, Ordering::SeqCst);
            Ok(process_pool(ctx)?.current_num_threads())
        }
    }

    #[test]
    fn a_process_of_k_threads_takes_k_slots_and_gets_a_pool_of_k() {
        let dir = tempfile::tempdir().unwrap();
        let options = RunOptions { threads: 2, ..RunOptions::default() };
        let config = ExecutorConfig { threads: 4, name: "test" };
        let mut executor =
            ThreadExecutor::start(config, dir.path().to_owned(), options, |i| Location::here(format!("t{i}")), || ())
                .unwrap();
        for id in 0..12 {
            executor.submit(Job { id, run: 0, params: Params::new(), process: Wide }).unwrap();
        }
        executor.close();
        let records: Vec<ProcessRecord> = executor.records().iter().collect();
        assert_eq!(records.len(), 12);
        assert!(records.iter().all(|r| r.status == Status::Finished && r.output == backend_core::Value::Int(2)));
        assert_eq!(PEAK.load(Ordering::SeqCst), 2, "4 slots hold two processes of 2 threads at once");
        let too_wide = RunOptions { threads: 5, ..RunOptions::default() };
        let err =
            ThreadExecutor::<Wide>::start(config, dir.path().to_owned(), too_wide, |_| Location::here("t"), || ())
                .unwrap_err();
        assert!(err.to_string().contains("asks for 5 threads") && err.to_string().contains("has 4"), "{err}");
    }
}
