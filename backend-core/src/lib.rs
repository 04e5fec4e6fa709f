//! The taskfarm model: what an operation is, how its processes are described, run and
//! recorded, and the serial reference backend.
//!
//! This crate is for the contract every backend shares: [`Process`], [`Operation`],
//! [`ParameterSpace`], [`ProcessRecord`], the [`Backend`] trait with pySPACE's lifecycle, the
//! result directory and its [journal], and [`SerialBackend`], the reference implementation.
//!
//! It is not for parallelism: it knows nothing of rayon or MPI. The `local` and `mpi`
//! backends live in their own crates and build on [`Lifecycle`], [`Collector`] and
//! [`run_job`], so every backend records, journals and consolidates the same way.
//!
//! With the feature `testing`, `testing` holds the conformance suite every backend passes.

// Every `pub` item is reachable from the root, for the other crates; what only this crate
// uses is `pub(crate)`.
#![warn(unreachable_pub)]

mod adaptive;
mod backend;
mod child;
mod error;
mod execute;
mod guard;
pub mod journal;
mod kind;
pub mod lock;
mod operation;
pub mod oplog;
mod page;
#[cfg(unix)]
pub mod persistent;
pub mod predict;
mod process;
pub mod process_output;
mod progress;
mod record;
pub mod report;
pub mod results;
pub mod sample;
mod serial;
mod space;
pub mod speculate;
pub mod status;
mod subprocess;
pub mod summary;
#[cfg(feature = "testing")]
pub mod testing;
pub mod timeline;
pub mod utc;
mod value;

pub use adaptive::RecordObserver;
pub use backend::{
    Backend, Collector, Dispatch, Executor, Lifecycle, Role, Runner, StatusBoard, StatusCounts, Summary,
};
pub use child::{describe_exit, kill_children_of, kill_running_children, run_with_deadline, ChildOutcome, EXIT_GRACE};
pub use error::{Error, Result};
pub(crate) use execute::stop_now_requested;
pub use execute::{
    attempt_reason, close_attempts, deadline_now, default_pool_size, execute_job, execute_shared_job, format_duration,
    parse_duration, reach_deadline_now, request_drain, request_stop, seconds_to_duration, set_stop_exit_status,
    stop_drains, stop_exit_status, stop_requested, text_tail, Isolation, RunOptions, MAX_TIMEOUT_SECONDS,
};
pub use kind::{BackendKind, UnknownBackend};
pub use operation::{Deadline, JobSource, Operation, Resume, SourceFailure, SWEEP_COUNT_BUDGET};
pub use process::{Job, Process, ProcessContext, ProcessError, CANNOT_RUN_MARK};
pub(crate) use progress::ProgressDisplay;
pub use progress::ProgressMode;
pub(crate) use record::run_job_with;
pub use record::{inside_process, panic_message, run_job, this_host, Location, ProcessRecord, Status};
pub use serial::{run_serially, Serial, SerialBackend};
pub use space::{Count, ParameterSpace};
pub use subprocess::{in_child, run_child_if_requested, CHILD_ARGS, CHILD_ENV};
pub use value::{Params, ParamsExt, Value};
