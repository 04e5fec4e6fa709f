//! The taskfarm worker: runs an operation described in a spec file on any backend.
//!
//! It has three parts:
//! - a [`Registry`] of process *kinds* by name: the built-ins [`command`]
//!   (an external program per process) and [`monte_carlo_pi`](crate::pi), and a user's own
//!   [`Process`](taskfarm::Process) types, registered with [`Registry::register`];
//! - [spec loading](crate::spec) from TOML or YAML, validated before anything runs, with
//!   errors that name the file and the line;
//! - the [command line](crate::cli) `taskfarm-worker run|validate|kinds`, as a library
//!   function ([`main_with`]) so a user's own binary can serve their own kinds.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use taskfarm::{Process, ProcessContext, ProcessError};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Rosenbrock { x: f64, y: f64 }
//!
//! impl Process for Rosenbrock {
//!     type Output = f64;
//!     fn run(&self, _ctx: &ProcessContext) -> Result<f64, ProcessError> {
//!         Ok((1.0 - self.x).powi(2) + 100.0 * (self.y - self.x * self.x).powi(2))
//!     }
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     let registry = taskfarm_worker::Registry::with_builtins()
//!         .register::<Rosenbrock>("rosenbrock", "the Rosenbrock function at (x, y)");
//!     taskfarm_worker::main_with(registry)
//! }
//! ```
//!
//! Every operation the worker runs is made of [`SpecProcess`]es, which carry a kind's name
//! and the spec's fields; under MPI they travel between ranks and are run by looking the
//! kind up in the table [`Registry::install`] fills (every rank runs the same binary).
//!
//! This crate is not for defining backends or the result directory: those are `taskfarm`'s.

pub mod allocation;
mod builtins;
pub mod chain;
pub mod cli;
mod error;
mod json;
mod kind;
pub mod limits;
pub mod observe;
pub mod output;
pub mod quick;
mod registry;
pub mod shell;
pub mod spec;
pub mod submit;
mod sweep;
mod typed;

pub use builtins::{command, pi};
#[cfg(unix)]
pub use builtins::{jsonl, python};
pub use cli::{main_with, run_with_args, EXIT_BAD_INPUT, EXIT_CRASHED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM};
pub use error::WorkerError;
pub use kind::{check_keys, Kind, KindError, KindSpec};
pub use registry::{Registry, SpecProcess};
pub use spec::Spec;
