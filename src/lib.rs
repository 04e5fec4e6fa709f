//! taskfarm runs an *operation* — many independent *processes*, e.g. one per parameter
//! combination of a sweep — on a *backend* of your choice: `serial`, `local` (every core of
//! this machine) or `mpi` (a cluster), with the same code.
//!
//! This crate is the facade users depend on: it re-exports the model of `backend-core` and
//! the backends this build has (Cargo features `local`, on by default, and `mpi`), and picks
//! one by name at run time with [`create_backend`]. It holds no logic of its own. docs.rs
//! has no MPI, so its pages show the build without `mpi`: `MpiBackend` and `MpiOptions` are
//! documented in a local `cargo doc --features mpi`.
//!
//! The root holds what a program that runs operations uses. The modules hold the rest, each
//! for one reader: [`results`] for reading a result directory, [`oplog`] for the run's log,
//! [`backend`] for an author of a backend, and [`process_tools`] and [`run_control`] for
//! process kinds that start child programs and for a front end such as `taskfarm-worker`.
//!
//! ```
//! use taskfarm::{create_backend, BackendOptions, Operation, ParameterSpace, ParamsExt, Process,
//!                ProcessContext, ProcessError};
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
//! let space = ParameterSpace::ranges([("x", vec![1, 2, 3, 4])])?;
//! let operation = Operation::try_sweep("squares", space, 1, |p, _run| Ok(Square { x: p.i64("x")? }))?
//! .with_results_base(dir.path());
//! let mut backend = create_backend("local", &BackendOptions::default())?;
//! let summary = backend.run(operation)?;
//! assert_eq!(summary.finished, 4);
//! assert!(summary.results_csv().is_file());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use backend_core::sample::Samples;
pub use backend_core::summary::AdaptiveRuns;
pub use backend_core::{
    run_child_if_requested, Backend, BackendKind, Count, Deadline, Error as CoreError, Isolation, Operation,
    ParameterSpace, Params, ParamsExt, Process, ProcessContext, ProcessError, ProgressMode, Role, SerialBackend,
    StatusCounts, Summary, UnknownBackend, Value,
};
#[cfg(feature = "local")]
pub use backend_local::{process_pool, LocalBackend};
#[cfg(feature = "mpi")]
pub use backend_mpi::{MpiBackend, MpiOptions};

pub mod oplog {
    //! The log of a run, `operation.log`, for a program that runs operations.
    //!
    //! Processes log with plain `tracing` macros; [`install`] (once, first in `main`) shows
    //! records on the console and writes them to the run's `operation.log`. A program with a
    //! `tracing` subscriber of its own adds [`OperationLogLayer`] to it instead.

    pub use backend_core::oplog::{install, OperationLogLayer};
}

pub mod results {
    //! The result directory, for a program that reads what a run left: its file names
    //! ([`files`]), `results.jsonl` ([`read_results_jsonl`]), the [`journal`] of records, the
    //! [`report`] computed from it, the statistics over runs of `summary.csv` ([`summary`]), and
    //! the RFC 3339 times of its `started_at` columns ([`utc`]).
    //!
    //! It also makes and consolidates result directories ([`create_result_dir`],
    //! [`consolidate_dir`]), for a front end that stages runs itself, as `taskfarm-worker`'s
    //! chains do. A record of the journal is a [`ProcessRecord`](crate::backend::ProcessRecord).

    pub use backend_core::results::{
        check_format, consolidate_dir, create_result_dir, files, read_results_jsonl, write_operation_toml,
        write_report_page, Consolidated, FIXED_COLUMNS, FORMAT_VERSION,
    };
    pub use backend_core::{journal, report, summary, utc};
}

pub mod backend {
    //! What an author of a backend builds on: a [`Runner`] of an [`Executor`] is a backend
    //! that runs on this program's threads; [`Lifecycle`] and [`Collector`] are the state
    //! machine and the recording behind [`Backend`](crate::Backend) for a backend that is not
    //! a `Runner`; [`execute_job`] runs one [`Job`] with the operation's [`RunOptions`] into
    //! a [`ProcessRecord`].
    //!
    //! A user who runs operations needs none of this: [`create_backend`](crate::create_backend)
    //! and the backends at the crate's root are enough.

    pub use backend_core::{
        attempt_reason, close_attempts, execute_job, panic_message, run_job, run_serially, Collector, Dispatch,
        Executor, Job, JobSource, Lifecycle, Location, ProcessRecord, RecordObserver, Result, Resume, RunOptions,
        Runner, Serial, SourceFailure, Status, StatusBoard,
    };
    #[cfg(feature = "local")]
    pub use backend_local::Pool;
}

pub mod process_tools {
    //! For the code of a process that starts child programs, as `taskfarm-worker`'s
    //! `command`, `jsonl` and `python` kinds do. [`run_with_deadline`] runs a child to its
    //! end, its process group killed at the deadline and when this program dies; `LineChild`
    //! (Unix) keeps one child for many processes, a line in and a line out at a time;
    //! [`describe_exit`] and [`text_tail`] put what a child came to into a process's reason.
    //! A child gets a process group of its own unless [`in_child`] says that this program is
    //! a child of subprocess isolation, whose group its parent kills. [`output::keep`] keeps
    //! a child's whole stdout and stderr in the result directory (`logs/` or `output.log`),
    //! wherever the process ran: under MPI it travels to the master.

    #[cfg(unix)]
    pub use backend_core::persistent::{LineChild, LineEvent, MAX_LINE, STDERR_KEPT};
    pub use backend_core::{
        describe_exit, in_child, run_with_deadline, text_tail, ChildOutcome, CANNOT_RUN_MARK, EXIT_GRACE,
    };

    pub mod output {
        //! A process's whole stdout and stderr in the result directory: laid out where it
        //! ran, written there or, on an MPI worker rank, sent to the master, which writes it.
        pub use backend_core::process_output::{keep, OutputLayout, OutputMode, ProcessOutput};
    }
}

pub mod run_control {
    //! What a front end — a program that reads run settings, starts runs and answers signals,
    //! as `taskfarm-worker` does — needs beyond running an operation: the process-wide stop
    //! request that Ctrl-C sets and its exit status, the deadline a batch system's early
    //! warning brings forward, the children to kill on a second signal,
    //! durations as settings write them, the default pool size, the result directory's
    //! one-writer [`lock`] and the [`status`] file of a running run.

    pub use backend_core::{
        deadline_now, default_pool_size, format_duration, kill_running_children, parse_duration, reach_deadline_now,
        request_drain, request_stop, seconds_to_duration, set_stop_exit_status, stop_drains, stop_exit_status,
        stop_requested, MAX_TIMEOUT_SECONDS,
    };
    pub use backend_core::{lock, status};
}

/// The names of the backends there are, whether or not this build has them (see
/// [`BackendKind`]).
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
    #[error("there is no backend called `{name}`: choose one of {}", BackendKind::names())]
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
    /// The program is one of several ranks of an MPI job, and the backend asked for is not
    /// `mpi`: every rank would run the whole operation.
    #[error("this program is one of {} ranks of an MPI job ({}), and the {backend} backend would run the whole operation once in every rank, into as many result directories: use the mpi backend (`--backend mpi` for taskfarm-worker, `create_backend(\"mpi\", ...)` in a program), or start a single copy without mpirun or srun", launch.ranks, launch.variable)]
    ManyRanks {
        /// The backend asked for.
        backend: String,
        /// The MPI job the program was started in.
        launch: MpiLaunch,
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
/// Started as one of several ranks of an MPI job (by `mpirun`, `mpiexec` or `srun`; see
/// [`MpiLaunch`]), any backend but `mpi` is an error: each rank would run the whole
/// operation. (`SerialBackend::default()` and `LocalBackend::new(..)` are not refused, for a
/// program that means to run a copy in each rank.)
#[cfg_attr(not(any(feature = "local", feature = "mpi")), allow(unused_variables))]
pub fn create_backend<P: Process>(name: &str, options: &BackendOptions) -> Result<Box<dyn Backend<P>>, Error> {
    let kind: BackendKind = name.parse().map_err(|_| Error::UnknownBackend { name: name.to_owned() })?;
    refuse_under_many_ranks(kind, MpiLaunch::detect())?;
    match kind {
        BackendKind::Serial => Ok(Box::new(SerialBackend::default())),
        #[cfg(feature = "local")]
        BackendKind::Local => Ok(Box::new(LocalBackend::new(options.pool_size)?)),
        #[cfg(not(feature = "local"))]
        BackendKind::Local => Err(Error::NotInThisBuild { name: name.into(), feature: "local" }),
        #[cfg(feature = "mpi")]
        BackendKind::Mpi => {
            let default = MpiOptions::default();
            Ok(Box::new(MpiBackend::new(MpiOptions {
                prefetch: options.prefetch.unwrap_or(default.prefetch),
                threads_per_rank: options.threads_per_rank.unwrap_or(default.threads_per_rank),
            })?))
        }
        #[cfg(not(feature = "mpi"))]
        BackendKind::Mpi => Err(Error::NotInThisBuild { name: name.into(), feature: "mpi" }),
    }
}

/// Whether this build has the backend called `name`.
pub fn has_backend(name: &str) -> bool {
    match name.parse() {
        Ok(BackendKind::Serial) => true,
        Ok(BackendKind::Local) => cfg!(feature = "local"),
        Ok(BackendKind::Mpi) => cfg!(feature = "mpi"),
        Err(_) => false,
    }
}

/// An MPI job of more than one rank that this program was started in, as the launcher's
/// environment says: `OMPI_COMM_WORLD_SIZE` (Open MPI), `PMI_SIZE` (MPICH, Intel MPI),
/// `MV2_COMM_WORLD_SIZE` (MVAPICH), `PMIX_RANK` with one of those or a rank above 0 (PMIx),
/// or `SLURM_STEP_NUM_TASKS` (`SLURM_NTASKS` with `SLURM_STEP_ID`) inside an `srun` step
/// (not in a batch script, which runs once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiLaunch {
    /// How many ranks the job has (at least 2).
    pub ranks: u64,
    /// The variable that says so, as `NAME=value`.
    pub variable: String,
}

impl MpiLaunch {
    /// The MPI job of more than one rank this program runs in, if any.
    pub fn detect() -> Option<MpiLaunch> {
        MpiLaunch::from_env(|name| std::env::var(name).ok())
    }

    /// Like [`MpiLaunch::detect`], with the environment read through `var`.
    pub fn from_env(var: impl Fn(&str) -> Option<String>) -> Option<MpiLaunch> {
        let number = |name: &str| var(name).and_then(|v| v.trim().parse::<u64>().ok().map(|n| (n, v)));
        let launch = |name: &str, (ranks, value): (u64, String)| {
            (ranks > 1).then(|| MpiLaunch { ranks, variable: format!("{name}={}", value.trim()) })
        };
        let in_srun_step = var("SLURM_STEP_ID").is_some_and(|id| {
            // The batch script and the extern step have step ids of their own; neither is
            // a task of a parallel step.
            !matches!(id.trim(), "4294967294" | "4294967293" | "batch" | "extern")
        });
        let mut sizes = vec!["OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"];
        if in_srun_step {
            sizes.push("SLURM_NTASKS");
        }
        if let Some(found) = sizes.into_iter().find_map(|name| number(name).and_then(|n| launch(name, n))) {
            return Some(found);
        }
        // PMIx gives each rank its rank but not always the size: a rank above 0 means two
        // ranks at least.
        number("PMIX_RANK")
            .filter(|(rank, _)| *rank > 0)
            .map(|(rank, value)| MpiLaunch { ranks: rank + 1, variable: format!("PMIX_RANK={}", value.trim()) })
    }
}

/// The error for a backend other than `mpi` in an MPI job of several ranks.
fn refuse_under_many_ranks(kind: BackendKind, launch: Option<MpiLaunch>) -> Result<(), Error> {
    match launch {
        Some(launch) if kind != BackendKind::Mpi => Err(Error::ManyRanks { backend: kind.to_string(), launch }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(vars: &[(&str, &str)]) -> Option<MpiLaunch> {
        MpiLaunch::from_env(|name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()))
    }

    #[test]
    fn launchers_of_several_ranks_are_recognised() {
        let four = |variable: &str| Some(MpiLaunch { ranks: 4, variable: variable.to_owned() });
        assert_eq!(launch(&[("OMPI_COMM_WORLD_SIZE", "4")]), four("OMPI_COMM_WORLD_SIZE=4"));
        assert_eq!(launch(&[("PMI_SIZE", "4")]), four("PMI_SIZE=4"));
        assert_eq!(launch(&[("PMIX_RANK", "0"), ("PMI_SIZE", "4")]), four("PMI_SIZE=4"));
        assert_eq!(launch(&[("PMIX_RANK", "3")]), four("PMIX_RANK=3"));
        assert_eq!(launch(&[("SLURM_STEP_ID", "0"), ("SLURM_STEP_NUM_TASKS", "4")]), four("SLURM_STEP_NUM_TASKS=4"));
        assert_eq!(launch(&[("SLURM_STEP_ID", "2"), ("SLURM_NTASKS", "4")]), four("SLURM_NTASKS=4"));
        // One rank, a batch script, no launcher, or nonsense: no MPI job of several ranks.
        assert_eq!(launch(&[("OMPI_COMM_WORLD_SIZE", "1")]), None);
        assert_eq!(launch(&[("PMIX_RANK", "0")]), None);
        assert_eq!(launch(&[("SLURM_NTASKS", "16"), ("SLURM_JOB_ID", "7")]), None);
        assert_eq!(launch(&[("SLURM_STEP_ID", "4294967294"), ("SLURM_NTASKS", "16")]), None);
        assert_eq!(launch(&[("PMI_SIZE", "many")]), None);
        assert_eq!(launch(&[]), None);
    }

    #[test]
    fn only_the_mpi_backend_runs_in_several_ranks() {
        let job = launch(&[("OMPI_COMM_WORLD_SIZE", "4")]);
        for (kind, name) in [(BackendKind::Serial, "serial"), (BackendKind::Local, "local")] {
            let err = refuse_under_many_ranks(kind, job.clone()).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, Error::ManyRanks { .. }), "{text}");
            assert!(
                text.starts_with(&format!(
                    "this program is one of 4 ranks of an MPI job (OMPI_COMM_WORLD_SIZE=4), and the {name} backend"
                )),
                "{text}"
            );
            assert!(text.contains("`--backend mpi`"), "{text}");
        }
        assert!(refuse_under_many_ranks(BackendKind::Mpi, job).is_ok());
        assert!(refuse_under_many_ranks(BackendKind::Serial, None).is_ok());
        // An unknown name is reported as unknown, under a launcher too.
        let err = create_backend::<backend_core::testing::Probe>("cloud", &BackendOptions::default()).err();
        assert!(matches!(err, Some(Error::UnknownBackend { .. })), "{err:?}");
    }
}
