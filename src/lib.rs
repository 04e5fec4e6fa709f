//! taskfarm runs an *operation* — many independent *processes*, e.g. one per parameter
//! combination of a sweep — on a *backend* of your choice: `serial`, `local` (every core of
//! this machine) or `mpi` (a cluster), with the same code.
//!
//! This crate is the facade users depend on: it re-exports the model of `backend-core` and
//! the backends this build has (Cargo features `local`, on by default, and `mpi`), and picks
//! one by name at run time with [`create_backend`]. It holds no logic of its own.
//!
//! ```
//! use taskfarm::{create_backend, BackendOptions, Operation, ParameterSpace, Process,
//!                ProcessContext, ProcessError, Value};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Square { x: i64 }
//!
//! impl Process for Square {
//!     type Output = i64;
//!     fn run(&self, _ctx: &ProcessContext) -> Result<i64, ProcessError> { Ok(self.x * self.x) }
//! }
//!
//! # let dir = tempfile::tempdir()?;
//! let space = ParameterSpace::ranges([("x", (1..=4).map(Value::from).collect())])?;
//! let operation = Operation::sweep("squares", space, 1, |p, _run| Square {
//!     x: p["x"].as_i64().unwrap_or_default(),
//! })?
//! .with_results_base(dir.path());
//! let mut backend = create_backend("local", &BackendOptions::default())?;
//! let summary = backend.run(operation)?;
//! assert_eq!(summary.finished, 4);
//! assert!(summary.results_csv().is_file());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use backend_core::{
    execute_job, journal, lock, oplog, parse_duration, report, request_stop, results, run_child_if_requested, run_job,
    stop_requested, Backend, Error as CoreError, Isolation, Job, Location, Operation, ParameterSpace, Params, Process,
    ProcessContext, ProcessError, ProcessRecord, ProgressMode, Role, RunOptions, SerialBackend, Status, StatusCounts,
    Summary, Value,
};
#[cfg(feature = "local")]
pub use backend_local::{process_pool, LocalBackend};
#[cfg(feature = "mpi")]
pub use backend_mpi::{MpiBackend, MpiOptions};

/// The backends there are, whether or not this build has them.
pub const BACKENDS: [&str; 3] = ["serial", "local", "mpi"];

/// Settings that some backends use; the others ignore them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackendOptions {
    /// `local`: how many threads (default: one per core). 0 is an error.
    pub pool_size: Option<usize>,
    /// `mpi`: how many units each worker keeps in flight (default 2).
    pub prefetch: Option<usize>,
    /// `mpi`: how many processes each worker rank runs at once on its own thread pool
    /// (default 1). 0 is an error.
    pub threads_per_rank: Option<usize>,
}

impl BackendOptions {
    /// Sets the local backend's pool size.
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = Some(n);
        self
    }

    /// Sets the MPI backend's prefetch window.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = Some(n);
        self
    }

    /// Sets the MPI backend's threads per worker rank.
    pub fn threads_per_rank(mut self, n: usize) -> Self {
        self.threads_per_rank = Some(n);
        self
    }
}

/// Why a backend could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No backend has this name.
    #[error("there is no backend called `{name}`: choose one of {}", BACKENDS.join(", "))]
    UnknownBackend {
        /// The name asked for.
        name: String,
    },
    /// The backend exists but this build was made without it.
    #[error("the {name} backend is not in this build: enable the `{feature}` feature of taskfarm (e.g. `cargo build --features {feature}`)")]
    NotInThisBuild {
        /// The backend asked for.
        name: String,
        /// The Cargo feature that brings it.
        feature: &'static str,
    },
    /// The backend refused its settings or could not start.
    #[error(transparent)]
    Core(#[from] backend_core::Error),
    /// The MPI backend could not start.
    #[cfg(feature = "mpi")]
    #[error(transparent)]
    Mpi(#[from] backend_mpi::Error),
}

/// Makes the backend called `name` (`serial`, `local` or `mpi`) for processes of type `P`.
///
/// Asking for a backend this build lacks is an error that names the feature to enable.
#[cfg_attr(not(any(feature = "local", feature = "mpi")), allow(unused_variables))]
pub fn create_backend<P: Process>(name: &str, options: &BackendOptions) -> Result<Box<dyn Backend<P>>, Error> {
    match name {
        "serial" => Ok(Box::new(SerialBackend::new())),
        #[cfg(feature = "local")]
        "local" => Ok(Box::new(LocalBackend::new(options.pool_size)?)),
        #[cfg(not(feature = "local"))]
        "local" => Err(Error::NotInThisBuild { name: name.into(), feature: "local" }),
        #[cfg(feature = "mpi")]
        "mpi" => {
            let default = MpiOptions::default();
            Ok(Box::new(MpiBackend::new(MpiOptions {
                prefetch: options.prefetch.unwrap_or(default.prefetch),
                threads_per_rank: options.threads_per_rank.unwrap_or(default.threads_per_rank),
            })?))
        }
        #[cfg(not(feature = "mpi"))]
        "mpi" => Err(Error::NotInThisBuild { name: name.into(), feature: "mpi" }),
        other => Err(Error::UnknownBackend { name: other.into() }),
    }
}

/// Whether this build has the backend called `name`.
pub fn has_backend(name: &str) -> bool {
    (name == "serial") || (name == "local" && cfg!(feature = "local")) || (name == "mpi" && cfg!(feature = "mpi"))
}
