//! `Runner`: the one implementation of [`Backend`] for backends that run the processes of a
//! staged operation on this program's threads. What differs between such backends — how the
//! jobs of a dispatch run — is an [`Executor`], a few dozen lines plus its options; staging,
//! journaling, status, retrieval and consolidation are the shared [`Lifecycle`].

use std::sync::Arc;
use std::time::Duration;

use super::{Backend, Collector, Dispatch, Lifecycle, StatusCounts, Summary};
use crate::{BackendKind, Operation, Process, Result};

/// How a backend runs the jobs of a staged operation.
pub trait Executor<P: Process>: Send + Sync + Sized + 'static {
    /// What the backend is called in records, summaries and on the command line.
    const KIND: BackendKind;
    /// Whether jobs are handed out in id order, whatever the duration model predicts (the
    /// serial reference); otherwise the longest predicted first within the look-ahead window.
    const IN_ORDER: bool = false;
    /// What it is made from (e.g. a pool size).
    type Options;

    /// The executor for `options`; an error says which option is wrong and why.
    fn new(options: Self::Options) -> Result<Self>;

    /// Refuses an operation it cannot run, before anything is staged (e.g. processes that
    /// ask for more threads than it has).
    fn check(&self, operation: &Operation<P>) -> Result<()> {
        let _ = operation;
        Ok(())
    }

    /// Runs every job of `dispatch`, handing each record to `collector` (on a thread of its
    /// own: `execute` has returned).
    fn run(&self, dispatch: Dispatch<P>, collector: &mut Collector) -> Result<()>;
}

/// A backend made of an [`Executor`] and the shared [`Lifecycle`]: `execute` runs the
/// executor on a background thread and returns at once.
#[derive(Debug)]
pub struct Runner<P: Process, E> {
    lifecycle: Lifecycle<P>,
    executor: Arc<E>,
}

impl<P: Process, E: Executor<P>> Runner<P, E> {
    /// The backend of an executor made from `options`.
    pub fn new(options: E::Options) -> Result<Self> {
        Ok(Self::with_executor(E::new(options)?))
    }

    /// The backend of `executor`.
    pub fn with_executor(executor: E) -> Self {
        let lifecycle = Lifecycle::new(E::KIND);
        let lifecycle = if E::IN_ORDER { lifecycle.in_order() } else { lifecycle };
        Runner { lifecycle, executor: Arc::new(executor) }
    }

    /// Its executor.
    pub fn executor(&self) -> &E {
        &self.executor
    }
}

impl<P: Process, E: Executor<P>> Backend<P> for Runner<P, E> {
    fn name(&self) -> &'static str {
        E::KIND.as_str()
    }

    fn stage_in(&mut self, operation: Operation<P>) -> Result<()> {
        self.executor.check(&operation)?;
        self.lifecycle.stage_in(operation)
    }

    fn execute(&mut self) -> Result<()> {
        let executor = Arc::clone(&self.executor);
        self.lifecycle.execute_in_background(move |dispatch, collector| executor.run(dispatch, collector))
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
