//! `WorkerError`: everything that stops the worker before or while it runs an operation,
//! each a sentence a user can act on. The binary prints it as `error: <sentence>` and
//! exits with status 2 (3 for a failed read or write of a file, [`WorkerError::is_io`]).
//!
//! Processes that crash are not errors here: they are records in the result directory.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why the worker could not load a spec or run it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// A command-line option has a value it cannot take.
    #[error("{0}")]
    Usage(String),
    /// `submit` could not hand the job to Slurm.
    #[error("could not submit the job: {0}")]
    Submit(String),
    /// `submit` was given a worker binary built without the MPI backend, which the batch
    /// job runs it on.
    #[error(
        "the worker {} was built without MPI, and the batch job runs it under mpirun on the mpi backend: build it \
         with `cargo build --release -p taskfarm-worker --features mpi` (or `cargo install taskfarm-worker --features \
         mpi`; your own worker with taskfarm-worker's `mpi` feature), then submit again, with --worker PATH if it is \
         not this program",
        worker.display()
    )]
    WorkerWithoutMpi {
        /// The worker binary.
        worker: PathBuf,
    },
    /// `cancel` was given a run that nothing is writing.
    #[error("no run is writing {} (it finished or stopped); to finish it:\n  {resume}", dir.display())]
    NotRunning {
        /// The result directory.
        dir: PathBuf,
        /// The command that resumes it.
        resume: String,
    },
    /// `status SPEC` or `cancel SPEC`: the spec's operation has no run under the results base.
    #[error(
        "the spec {} names the operation `{name}`, which has no run under {}: run it first, or give --results \
         with the directory its runs go to",
        spec.display(),
        results.display()
    )]
    NoRunOfSpec {
        /// The spec file.
        spec: PathBuf,
        /// Its operation's name.
        name: String,
        /// The results base looked in.
        results: PathBuf,
    },
    /// A command-line argument is malformed (e.g. `--param` without `=`).
    #[error("`{argument}`: {why}")]
    Argument {
        /// The argument as given.
        argument: String,
        /// What is wrong and what to write, as a sentence.
        why: String,
    },
    /// `log DIR ID` found no output of that process.
    #[error("no output of process {id} in {}: {why}", dir.display())]
    NoOutput {
        /// The result directory.
        dir: PathBuf,
        /// The process.
        id: u64,
        /// Why none was found.
        why: String,
    },
    /// The spec file's name does not say its format.
    #[error("the spec file {} must end in .toml, .yaml or .yml", path.display())]
    UnknownExtension {
        /// The spec file.
        path: PathBuf,
    },
    /// The spec file cannot be read.
    #[error("could not read the spec file {}: {source}", path.display())]
    Read {
        /// The spec file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The spec file is larger than a spec can be.
    #[error("the spec file {} is larger than {} MiB (is it a spec file?): a spec of a million parameter values takes a few MiB; give the values as ranges, or split the operation", path.display(), limit / (1024 * 1024))]
    SpecTooLarge {
        /// The spec file.
        path: PathBuf,
        /// The largest size read, in bytes.
        limit: u64,
    },
    /// The spec is malformed or does not suit its kind.
    #[error("{}: {message}", At(path, *line))]
    Spec {
        /// The spec file.
        path: PathBuf,
        /// The line the problem is on, when known.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// A chain file or a chain's result directory cannot be used.
    #[error("{}: {message}", path.display())]
    Chain {
        /// The chain file or the chain's result directory.
        path: PathBuf,
        /// What is wrong, naming the stage.
        message: String,
    },
    /// The spec names a kind that is not registered.
    #[error("{}: there is no process kind `{kind}`: the known kinds are {known} (see `taskfarm-worker kinds`)",
        At(path, *line))]
    UnknownKind {
        /// The spec file.
        path: PathBuf,
        /// The line of `kind`, when known.
        line: Option<usize>,
        /// The kind asked for.
        kind: String,
        /// The registered kinds, joined.
        known: String,
    },
    /// The parameter space of the spec is empty or its constraints are wrong.
    #[error("{}: {source}", At(path, *line))]
    Space {
        /// The spec file.
        path: PathBuf,
        /// The line of the key at fault, when known.
        line: Option<usize>,
        /// The core's sentence.
        source: Box<taskfarm::CoreError>,
    },
    /// A thread count on the command line is far beyond this machine.
    #[error("{option} {asked} is more than {} threads per core of this machine ({cores} cores: at most {limit}): one thread per core is the default, and more only help processes that mostly wait; add --force to use {asked} anyway", crate::limits::MAX_THREADS_PER_CORE)]
    TooManyThreads {
        /// The option, e.g. `--pool-size`.
        option: &'static str,
        /// The number given.
        asked: usize,
        /// The cores of this machine.
        cores: usize,
        /// The largest number taken without --force.
        limit: usize,
    },
    /// The backend could not be made (unknown, not in this build, bad option).
    #[error(transparent)]
    Backend(Box<taskfarm::Error>),
    /// The operation could not be run (e.g. the results directory is not writable).
    #[error(transparent)]
    Run(Box<taskfarm::CoreError>),
    /// The run failed after its result directory was made (e.g. the disk filled up).
    #[error("{source}")]
    RunFailed {
        /// The run's result directory.
        dir: PathBuf,
        /// Why it failed.
        source: Box<taskfarm::CoreError>,
    },
}

impl WorkerError {
    /// Whether reading or writing a file failed (the disk is full, a device failed), as
    /// opposed to bad input: the binary exits with its own status for it.
    pub fn is_io(&self) -> bool {
        match self {
            WorkerError::Run(e) | WorkerError::RunFailed { source: e, .. } => {
                matches!(**e, taskfarm::CoreError::Io { .. })
            }
            _ => false,
        }
    }

    /// The result directory of a run that failed part-way and can be resumed: it holds a
    /// journal and the spec as run.
    pub fn resumable_dir(&self) -> Option<&Path> {
        match self {
            WorkerError::RunFailed { dir, .. }
                if dir.join(taskfarm::results::files::JOURNAL).is_file()
                    && dir.join(taskfarm::results::files::OPERATION).is_file() =>
            {
                Some(dir)
            }
            _ => None,
        }
    }
}

impl From<taskfarm::Error> for WorkerError {
    fn from(e: taskfarm::Error) -> Self {
        WorkerError::Backend(Box::new(e))
    }
}

impl From<taskfarm::CoreError> for WorkerError {
    fn from(e: taskfarm::CoreError) -> Self {
        WorkerError::Run(Box::new(e))
    }
}

/// `path, line N` or `path`.
struct At<'a>(&'a Path, Option<usize>);

impl fmt::Display for At<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(line) => write!(f, "{}, line {line}", self.0.display()),
            None => write!(f, "{}", self.0.display()),
        }
    }
}
