//! The local backend: runs an operation's processes on a rayon pool of `pool_size` threads
//! (default: every core of this machine).
//!
//! This crate is for one machine. The processes are pulled lazily from the operation's
//! source by the pool's threads; each result flows over a `crossbeam-channel` to the one
//! collector thread, which journals it and drives the progress display. It is not for
//! several machines (that is `backend-mpi`) and it adds nothing to the model: staging,
//! journaling and consolidation are `backend-core`'s [`Lifecycle`], shared by all backends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backend_core::{
    execute_job, Backend, Collector, Dispatch, Error, Lifecycle, Location, Operation, Process, Result, StatusCounts,
    Summary,
};
use rayon::iter::{ParallelBridge, ParallelIterator};

/// Runs processes on a pool of threads of this machine.
#[derive(Debug)]
pub struct LocalBackend<P: Process> {
    lifecycle: Lifecycle<P>,
    pool_size: usize,
}

impl<P: Process> LocalBackend<P> {
    /// A local backend with `pool_size` threads, or one per core when `None`.
    /// A pool size of 0 is an error.
    pub fn new(pool_size: Option<usize>) -> Result<Self> {
        let pool_size = match pool_size {
            Some(0) => return Err(Error::InvalidOption("the pool size must be at least 1".into())),
            Some(n) => n,
            None => default_pool_size(),
        };
        Ok(LocalBackend { lifecycle: Lifecycle::new("local"), pool_size })
    }

    /// How many threads run processes.
    pub fn pool_size(&self) -> usize {
        self.pool_size
    }
}

/// One thread per core this process may use.
pub fn default_pool_size() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

impl<P: Process> Backend<P> for LocalBackend<P> {
    fn name(&self) -> &'static str {
        "local"
    }

    fn stage_in(&mut self, operation: Operation<P>) -> Result<()> {
        self.lifecycle.stage_in(operation)
    }

    fn execute(&mut self) -> Result<()> {
        let pool_size = self.pool_size;
        self.lifecycle.execute_in_background(move |dispatch, collector| run_on_pool(pool_size, dispatch, collector))
    }

    fn check_status(&self) -> StatusCounts {
        self.lifecycle.check_status()
    }

    fn retrieve(&mut self, timeout: Option<Duration>) -> Result<bool> {
        self.lifecycle.retrieve(timeout)
    }

    fn consolidate(&mut self) -> Result<Summary> {
        self.lifecycle.consolidate()
    }

    fn cleanup(&mut self) -> Result<()> {
        self.lifecycle.cleanup()
    }
}

/// Runs every job of `dispatch` on a pool of `pool_size` threads; the calling thread is
/// the collector. Reusable by other backends that run processes on threads of one host
/// (e.g. a worker rank with several threads), with their own `label` for the worker column.
pub fn run_on_pool<P: Process>(pool_size: usize, dispatch: Dispatch<P>, collector: &mut Collector) -> Result<()> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(pool_size)
        .thread_name(|i| format!("taskfarm-local-{i}"))
        .build()
        .map_err(|e| Error::Internal(format!("the thread pool could not start: {e}")))?;
    let locations: Vec<Location> = (0..pool_size).map(|i| Location::here(format!("thread-{i}"))).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let (results, arrivals) = crossbeam_channel::bounded(pool_size * 256);
    let board = collector.board().clone();
    let Dispatch { jobs, dir, options, .. } = dispatch;
    let stop_source = Arc::clone(&stop);
    let jobs = jobs.take_while(move |_| !stop_source.load(Ordering::Relaxed));

    std::thread::scope(|scope| {
        let dir = &dir;
        let locations = &locations;
        scope.spawn(move || {
            pool.install(|| {
                jobs.par_bridge().for_each_with(results, |results, job| {
                    board.started(1);
                    let thread = rayon::current_thread_index().unwrap_or(0);
                    let record = execute_job(&job, dir, &locations[thread % locations.len()], &options);
                    // The collector has stopped only after an error it reports itself.
                    let _ = results.send(record);
                });
            });
        });
        let mut outcome = Ok(());
        for record in arrivals.iter() {
            if outcome.is_ok() {
                outcome = collector.record(&record);
                if outcome.is_err() {
                    // Stop handing out jobs; keep draining so no thread blocks on a full channel.
                    stop.store(true, Ordering::Relaxed);
                }
            }
        }
        outcome
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_of_zero_threads_is_refused() {
        let err = LocalBackend::<backend_core::testing::Probe>::new(Some(0)).unwrap_err();
        assert!(err.to_string().contains("at least 1"));
    }
}
