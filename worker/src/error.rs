//! `WorkerError`: everything that stops the worker before or while it runs an operation,
//! each a sentence a user can act on. The binary prints it as `error: <sentence>` and
//! exits with status 2.
//!
//! Processes that crash are not errors here: they are records in the result directory.

use std::fmt;
use std::path::{Path, PathBuf};

/// Why the worker could not load a spec or run it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// `submit` could not hand the job to Slurm.
    #[error("could not submit the job: {0}")]
    Submit(String),
    /// `cancel` was given a run that nothing is writing.
    #[error("no run is writing {} (it finished or stopped); to finish it:\n  {resume}", dir.display())]
    NotRunning {
        /// The result directory.
        dir: PathBuf,
        /// The command that resumes it.
        resume: String,
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
    /// The backend could not be made (unknown, not in this build, bad option).
    #[error(transparent)]
    Backend(Box<taskfarm::Error>),
    /// The operation could not be run (e.g. the results directory is not writable).
    #[error(transparent)]
    Run(Box<taskfarm::CoreError>),
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
