//! The local backend: runs an operation's processes on a rayon pool of `pool_size` threads
//! (default: every core of this machine).
//!
//! This crate is for one machine. The threads of a [`ThreadExecutor`] (a rayon pool, also
//! used by MPI worker ranks with several threads, which feed it over a channel) pull the
//! processes lazily from the operation's source; each result flows over a
//! `crossbeam-channel` to the one collector thread, which journals it and drives the
//! progress display, waking once per few records rather than once per record. It is not for
//! several machines (that is `backend-mpi`) and it adds nothing to the model: staging,
//! journaling and consolidation are `backend-core`'s [`Lifecycle`](backend_core::Lifecycle), shared by all backends.

mod executor;
mod straggler;

use std::sync::Arc;
use std::time::Duration;

use backend_core::speculate::{Copies, Settled};
use backend_core::{
    BackendKind, Collector, Dispatch, Error, Executor, Location, Operation, Process, ProcessContext, ProcessError,
    Result, Runner,
};

pub use executor::{ExecutorConfig, ThreadExecutor};
pub use straggler::Speculation;

/// Runs processes on a pool of threads of this machine: `LocalBackend::new(Some(n))` for
/// n threads, `LocalBackend::new(None)` for one per core (0 is an error).
pub type LocalBackend<P> = Runner<P, Pool>;

/// The executor of [`LocalBackend`]: a pool of threads of this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pool {
    pool_size: usize,
}

impl Pool {
    /// How many threads run processes.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }
}

pub use backend_core::default_pool_size;

impl<P: Process> Executor<P> for Pool {
    const KIND: BackendKind = BackendKind::Local;
    /// The pool size, or one thread per core when `None`.
    type Options = Option<usize>;

    fn new(pool_size: Option<usize>) -> Result<Self> {
        let pool_size = match pool_size {
            Some(0) => return Err(Error::InvalidOption("the pool size must be at least 1".into())),
            Some(n) => n,
            None => default_pool_size(),
        };
        Ok(Pool { pool_size })
    }

    fn check(&self, operation: &Operation<P>) -> Result<()> {
        check_process_threads(operation.options().process_threads(), self.pool_size, "the pool has")
    }

    fn run(&self, dispatch: Dispatch<P>, collector: &mut Collector) -> Result<()> {
        run_on_pool(self.pool_size, dispatch, collector)
    }
}

/// Runs every job of `dispatch` on a pool of `pool_size` threads; the calling thread is
/// the collector. A [`ThreadExecutor`] does the running, its threads pulling jobs from the
/// lazy source one at a time (so memory stays flat, and after a signal the source simply
/// ends: no queued job starts).
pub fn run_on_pool<P: Process>(pool_size: usize, dispatch: Dispatch<P>, collector: &mut Collector) -> Result<()> {
    let board = collector.board().clone();
    let Dispatch { jobs, dir, options, .. } = dispatch;
    collector.learner().set_slots(pool_size / options.process_threads().max(1));
    let config = ExecutorConfig { threads: pool_size, name: "taskfarm-local" };
    let copies = Arc::new(Copies::default());
    let speculation = Speculation { learner: collector.learner().clone(), copies: Arc::clone(&copies) };
    let executor = ThreadExecutor::pulling(
        config,
        jobs,
        dir,
        options,
        |i| Location::here(format!("thread-{i}")),
        move || board.started(1),
        Some(speculation),
    )?;
    let records = executor.records();
    let mut outcome = Ok(());
    // Records that settled a process (one per job taken from the source).
    let mut settled = 0u64;
    while let Ok(first) = records.recv() {
        let mut taken = 0usize;
        for record in std::iter::once(first).chain(records.try_iter()) {
            taken += 1;
            match copies.settle(record.id, record.status) {
                Settled::Journal { cancel_other } => {
                    settled += 1;
                    if cancel_other {
                        let killed = executor.stop_copies_of(record.id);
                        tracing::info!(
                            target: "taskfarm",
                            "process {} ran twice: the copy on {} finished first and is recorded; the other was {}",
                            record.id,
                            record.location.worker,
                            if killed > 0 { "killed" } else { "left to end, its result to be dropped" }
                        );
                    }
                }
                Settled::Drop => {
                    // The other copy's record is (or will be) the one journaled.
                    collector.board().unstarted(1);
                    continue;
                }
            };
            if outcome.is_ok() {
                outcome = collector.record(&record);
                if outcome.is_err() {
                    // Stop handing out jobs; keep draining so no thread blocks on a full channel.
                    executor.cancel_pending();
                }
            }
        }
        if outcome.is_ok() && executor.taken_when_ended() == Some(settled) {
            // Every process has its record: what still runs is the losing copy of a process
            // run twice that cannot be killed (it runs in its thread); its result would be
            // dropped, so the run does not wait for it.
            break;
        }
        if taken > 1 && taken < COLLECT_BEHIND {
            // Records are flowing: let them gather rather than wake up for each one (on a
            // machine whose every core runs a process, each wake-up takes one's time). When
            // many were waiting, the collector is behind: it goes on at once.
            std::thread::sleep(COLLECT_PAUSE);
        }
    }
    outcome?;
    executor.failure().map_or(Ok(()), Err)
}

/// How long the local collector pauses while records flow in, so that it wakes up once per
/// many records instead of once per record (at most this much later into the journal): each
/// wake-up takes a core from a running process.
const COLLECT_PAUSE: Duration = Duration::from_millis(5);
/// Records waiting at once that mean the collector is the bottleneck (it then never pauses).
const COLLECT_BEHIND: usize = 256;

/// Refuses processes that ask for more threads than a worker has, with a sentence naming
/// the limit: `what` says what has `limit` threads (e.g. "the pool has", "each MPI worker
/// rank has").
pub fn check_process_threads(asked: usize, limit: usize, what: &str) -> Result<()> {
    if asked > limit {
        return Err(Error::InvalidOption(format!(
            "each process asks for {asked} threads (`threads`) but {what} {limit} thread(s): \
             ask for at most {limit}, or give each worker more threads"
        )));
    }
    Ok(())
}

/// A rayon pool of [`ProcessContext::threads`](backend_core::ProcessContext::threads)
/// threads for a multi-threaded process: `process_pool(ctx)?.install(|| ...)` runs its
/// parallel work on exactly the threads the backend reserved for it.
pub fn process_pool(ctx: &ProcessContext<'_>) -> std::result::Result<rayon::ThreadPool, ProcessError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(ctx.threads())
        .thread_name(|i| format!("taskfarm-process-{i}"))
        .build()
        .map_err(|e| ProcessError::msg(format!("the process's thread pool of {} could not start: {e}", ctx.threads())))
}

#[cfg(test)]
mod tests {
    use super::*;

    use backend_core::Backend;

    #[test]
    fn a_source_that_panics_ends_the_run_with_an_error() {
        let base = tempfile::tempdir().unwrap();
        let processes = (0..10u32).map(|i| {
            assert!(i < 5, "process {i} cannot be made, on purpose");
            backend_core::testing::Probe { x: 2, scale: 1.0, run: 0 }
        });
        let operation = Operation::from_processes("broken_source", processes).unwrap().with_results_base(base.path());
        let mut backend = LocalBackend::new(Some(2)).unwrap();
        let err = backend.run(operation).unwrap_err().to_string();
        assert!(err.contains("making the operation's next process panicked") && err.contains("on purpose"), "{err}");
    }

    #[test]
    fn a_pool_of_zero_threads_is_refused() {
        let err = LocalBackend::<backend_core::testing::Probe>::new(Some(0)).unwrap_err();
        assert!(err.to_string().contains("at least 1"));
    }
}
