//! `SerialBackend`: runs the processes one after another on a background thread. It is
//! the reference every other backend must agree with.

use std::time::Duration;

use crate::{
    execute_job, Backend, BackendKind, Lifecycle, Location, Operation, Process, Result, StatusCounts, Summary,
};

/// Runs one process at a time, in id order: simple, deterministic, the reference.
#[derive(Debug)]
pub struct SerialBackend<P: Process> {
    lifecycle: Lifecycle<P>,
}

impl<P: Process> Default for SerialBackend<P> {
    fn default() -> Self {
        SerialBackend { lifecycle: Lifecycle::new(BackendKind::Serial).in_order() }
    }
}

impl<P: Process> SerialBackend<P> {
    /// A serial backend.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<P: Process> Backend<P> for SerialBackend<P> {
    fn name(&self) -> &'static str {
        BackendKind::Serial.as_str()
    }

    fn stage_in(&mut self, operation: Operation<P>) -> Result<()> {
        self.lifecycle.stage_in(operation)
    }

    fn execute(&mut self) -> Result<()> {
        self.lifecycle.execute_in_background(|dispatch, collector| {
            let location = Location::here("serial");
            for job in dispatch.jobs {
                collector.board().started(1);
                let record = execute_job(job, &dispatch.dir, &location, &dispatch.options);
                collector.record(&record)?;
            }
            Ok(())
        })
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
