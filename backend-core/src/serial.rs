//! `SerialBackend`: runs the processes one after another on a background thread. It is
//! the reference every other backend must agree with.

use crate::{execute_job, BackendKind, Collector, Dispatch, Executor, Location, Process, Result, Runner};

/// Runs one process at a time, in id order: simple, deterministic, the reference.
pub type SerialBackend<P> = Runner<P, Serial>;

/// The executor of [`SerialBackend`]: one process after another, in id order.
#[derive(Debug, Clone, Copy, Default)]
pub struct Serial;

impl<P: Process> Executor<P> for Serial {
    const KIND: BackendKind = BackendKind::Serial;
    const IN_ORDER: bool = true;
    type Options = ();

    fn new((): ()) -> Result<Self> {
        Ok(Serial)
    }

    fn run(&self, dispatch: Dispatch<P>, collector: &mut Collector) -> Result<()> {
        run_serially(dispatch, collector, &Location::here("serial"))
    }
}

/// Runs every job of `dispatch` on the calling thread, one after another, as `location`
/// (the serial backend, and an MPI world of one rank).
pub fn run_serially<P: Process>(dispatch: Dispatch<P>, collector: &mut Collector, location: &Location) -> Result<()> {
    collector.learner().set_slots(1);
    for job in dispatch.jobs {
        collector.board().started(1);
        let record = execute_job(job, &dispatch.dir, location, &dispatch.options);
        collector.record(&record)?;
    }
    Ok(())
}

impl<P: Process> Default for SerialBackend<P> {
    fn default() -> Self {
        Runner::with_executor(Serial)
    }
}
