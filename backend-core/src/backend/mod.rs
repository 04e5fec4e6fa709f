//! The `Backend` trait with pySPACE's lifecycle, and the machinery every backend shares,
//! one concept a file: the `StatusBoard` that `check_status` reads (`board`), the
//! `Collector` that journals results as they arrive (`collector`), what a run came to
//! (`summary`), `Lifecycle`, the state machine behind the trait's calls (`lifecycle`), and
//! `Runner`, the one implementation of the trait over an `Executor` (`runner`).

mod board;
mod collector;
mod lifecycle;
mod runner;
mod summary;

use std::time::Duration;

pub use board::{StatusBoard, StatusCounts};
pub use collector::Collector;
pub use lifecycle::{Dispatch, Lifecycle};
pub use runner::{Executor, Runner};
pub use summary::{Role, Summary};

use crate::{Operation, Process, Result};

/// A backend runs the processes of an operation. The calls follow pySPACE's lifecycle:
/// `stage_in` → `execute` → (`check_status`)* → `retrieve` → `consolidate` → `cleanup`;
/// [`Backend::run`] makes them all in order.
pub trait Backend<P: Process> {
    /// The backend's name (`serial`, `local`, `mpi`).
    fn name(&self) -> &'static str;

    /// Prepares the operation: validates it, creates its result directory, writes
    /// `operation.toml` and opens the journal. Nothing runs yet.
    fn stage_in(&mut self, operation: Operation<P>) -> Result<()>;

    /// Starts running the staged operation. Backends that can run in the background return
    /// at once; the MPI backend's master runs the operation to its end here.
    fn execute(&mut self) -> Result<()>;

    /// Counts of finished, crashed and running processes, callable while executing.
    fn check_status(&self) -> StatusCounts;

    /// Waits until the operation has ended, or `timeout` passed; `Ok(true)` when it ended.
    fn retrieve(&mut self, timeout: Option<Duration>) -> Result<bool>;

    /// Writes the consolidated files from the journal and returns the summary.
    fn consolidate(&mut self) -> Result<Summary>;

    /// Releases what the backend holds for the operation; leaves the result directory.
    fn cleanup(&mut self) -> Result<()>;

    /// Runs the whole lifecycle and returns the summary. If running fails part-way (e.g. the
    /// disk fills), what was journaled is still consolidated before the error is returned.
    fn run(&mut self, operation: Operation<P>) -> Result<Summary> {
        self.stage_in(operation)?;
        let ran = self.execute().and_then(|()| self.retrieve(None));
        let summary = self.consolidate();
        self.cleanup()?;
        ran?;
        summary
    }
}

/// A boxed backend (as `create_backend` returns) is a backend.
impl<P: Process, B: Backend<P> + ?Sized> Backend<P> for Box<B> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn stage_in(&mut self, operation: Operation<P>) -> Result<()> {
        (**self).stage_in(operation)
    }
    fn execute(&mut self) -> Result<()> {
        (**self).execute()
    }
    fn check_status(&self) -> StatusCounts {
        (**self).check_status()
    }
    fn retrieve(&mut self, timeout: Option<Duration>) -> Result<bool> {
        (**self).retrieve(timeout)
    }
    fn consolidate(&mut self) -> Result<Summary> {
        (**self).consolidate()
    }
    fn cleanup(&mut self) -> Result<()> {
        (**self).cleanup()
    }
}
