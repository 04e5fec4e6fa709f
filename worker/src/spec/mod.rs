//! Spec files: reading an operation spec in TOML (`.toml`) or YAML (`.yaml`, `.yml`),
//! checking it against its kind, and turning it into an [`Operation`] of [`SpecProcess`]es.
//!
//! ```toml
//! name = "sweep"                 # optional: the file's stem by default
//! kind = "command"               # a registered kind (`taskfarm-worker kinds`)
//! runs = 2                       # optional, default 1: repetitions, each gets its run number
//! constraints = ["alpha < beta"] # optional: boolean expressions over parameter names
//! command = ["sh", "-c", "./sim --alpha {alpha} --beta {beta} --seed {run}"]  # the kind's own fields
//!
//! [parameter_ranges]             # the cross product ...
//! alpha = [1, 2, 3]
//! beta = [2, 4]
//! # ... or an explicit list: parameter_settings = [{ alpha = 1, beta = 2 }, ...]
//! ```
//!
//! Reliability options (see [`RunOptions`](taskfarm::backend::RunOptions)): `timeout = "30s"`
//! (or a number of seconds; also `"250ms"`, `"5m"`, `"2h"`) stops a process past it and
//! records it as timed out; `retries = 2` runs a crashed or timed-out process up to 2 more times;
//! `isolation = "subprocess"` runs each process in a child of the worker, so a segfault or
//! an abort costs only that process (default `"thread"`); `speculate = false` (or
//! `idempotent = false`, for processes with side effects) never runs a straggler twice. In
//! thread isolation only the
//! `command` kind can honour a timeout (it kills its command's process group); any other
//! kind with a `timeout` needs `isolation = "subprocess"`, and validation says so.
//!
//! `backend` may name the backend to use when the command line does not (the
//! `operation.toml` of a result directory says which backend ran it, and is itself a spec
//! that can be run again). Every other top-level key is a field of the kind; a key the kind
//! does not take is an error. Errors name the file and, where known, the line.
//!
//! This module is not for running anything: see [`crate::cli`]. It holds the spec's
//! constants, [`Format`] and [`Spec`] with its accessors; `parse` turns text into a
//! [`Spec`] (and the spec as run, for `operation.toml`), `header` reads the spec's own keys
//! with serde, `options` checks the reliability and thread options, and `errors` says where
//! in the text a parser's error is.

mod errors;
mod header;
mod options;
mod parse;
#[cfg(test)]
mod roundtrip;

use std::path::{Path, PathBuf};

use taskfarm::{Count, Operation, ParameterSpace};

use self::options::too_many_threads;
use crate::registry::{Registry, SpecProcess};
use crate::WorkerError;

/// The top-level keys that belong to the spec itself; every other key is the kind's.
pub const SPEC_KEYS: [&str; 20] = [
    "name",
    "kind",
    "parameter_ranges",
    "parameter_settings",
    "constraints",
    "link",
    "parameter_groups",
    "parameter_samples",
    "constants",
    "sweep",
    "runs",
    "backend",
    "timeout",
    "retries",
    "isolation",
    "speculate",
    "idempotent",
    "threads",
    "threads_per_rank",
    "outputs",
];

/// The most threads a spec may ask for, per process or per MPI rank.
pub const MAX_THREADS: i64 = 4096;

/// The most retries a spec may ask for.
pub const MAX_RETRIES: i64 = 100;

/// Parameter names that would clash with the fixed columns of `results.csv`.
pub const RESERVED_PARAMETERS: [&str; 9] = taskfarm::results::FIXED_COLUMNS;

/// The format of a spec file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// TOML.
    Toml,
    /// YAML (pySPACE's operation specs are YAML).
    Yaml,
}

impl Format {
    /// The format a file's extension names.
    pub fn of(path: &Path) -> Result<Format, WorkerError> {
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("toml") => Ok(Format::Toml),
            Some("yaml" | "yml") => Ok(Format::Yaml),
            _ => Err(WorkerError::UnknownExtension { path: path.to_owned() }),
        }
    }
}

/// A loaded and validated spec, ready to run.
#[derive(Debug)]
pub struct Spec {
    path: PathBuf,
    kind: String,
    runs: u32,
    adaptive: Option<taskfarm::AdaptiveRuns>,
    backend: Option<String>,
    threads_per_rank: Option<usize>,
    threads_line: Option<usize>,
    parameter_names: Vec<String>,
    /// The parameter space, for counting it.
    space: ParameterSpace,
    constraints_line: Option<usize>,
    operation: Operation<SpecProcess>,
}

impl Spec {
    /// Reads, parses and validates the spec file at `path` against the kinds of `registry`.
    pub fn load(path: &Path, registry: &Registry) -> Result<Spec, WorkerError> {
        let format = Format::of(path)?;
        let text = crate::limits::read_bounded(path)
            .map_err(|source| WorkerError::Read { path: path.to_owned(), source })?
            .ok_or_else(|| WorkerError::SpecTooLarge { path: path.to_owned(), limit: crate::limits::MAX_SPEC_BYTES })?;
        Spec::parse(&text, format, path, registry)
    }

    /// How many processes there are, counted for at most `budget` (combinations the
    /// constraints admit × runs): exact, or a lower bound when counting took too long or
    /// was stopped. A constraint that fails to evaluate on a combination examined is an
    /// error that names it.
    pub fn count_within(&self, budget: std::time::Duration) -> Result<Count, WorkerError> {
        let count = self.space.count_within(budget).map_err(|source| WorkerError::Space {
            path: self.path.clone(),
            line: self.constraints_line,
            source: Box::new(source),
        })?;
        let runs = u64::from(self.runs);
        Ok(match count {
            Count::Exact(n) => Count::Exact(n.saturating_mul(runs)),
            Count::AtLeast { admitted, examined, of } => {
                Count::AtLeast { admitted: admitted.saturating_mul(runs), examined, of }
            }
        })
    }

    /// How many parameter combinations there are before the constraints.
    pub fn unconstrained_len(&self) -> u64 {
        self.space.unconstrained_len()
    }

    /// The spec file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The operation's name.
    pub fn name(&self) -> &str {
        self.operation.name()
    }

    /// The kind of its processes.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// How many runs each parameter combination gets.
    pub fn runs(&self) -> u32 {
        self.runs
    }

    /// The adaptive runs of the spec (`runs = { min, max, until }`), if it has them.
    pub fn adaptive(&self) -> Option<&taskfarm::AdaptiveRuns> {
        self.adaptive.as_ref()
    }

    /// How many runs each point gets, as a phrase: `3 run(s) each`, or
    /// `5 to 200 runs each, until <condition>`.
    pub fn describe_runs(&self) -> String {
        match &self.adaptive {
            None => format!("{} run(s) each", self.runs),
            Some(a) => format!("{} to {} runs each, until `{}`", a.min, a.max, a.until.text()),
        }
    }

    /// The backend the spec asks for, if any (the command line's `--backend` wins).
    pub fn backend(&self) -> Option<&str> {
        self.backend.as_deref()
    }

    /// The threads each MPI worker rank runs processes on, if the spec says (the command
    /// line's `--threads-per-rank` wins).
    pub fn threads_per_rank(&self) -> Option<usize> {
        self.threads_per_rank
    }

    /// How many threads each process occupies (`threads`, default 1).
    pub fn threads(&self) -> usize {
        self.operation.options().process_threads()
    }

    /// Refuses a spec whose processes ask for more threads than a worker of the backend has
    /// (`limit`; `what` names the worker, e.g. "each MPI worker rank has"): an error naming
    /// the file, the line of `threads` and the limit.
    pub fn check_threads(&self, limit: usize, what: &str) -> Result<(), WorkerError> {
        let asked = self.threads();
        if asked <= limit {
            return Ok(());
        }
        Err(WorkerError::Spec {
            path: self.path.clone(),
            line: self.threads_line,
            message: too_many_threads(asked, limit, what),
        })
    }

    /// The parameter names, in spec order.
    pub fn parameter_names(&self) -> &[String] {
        &self.parameter_names
    }

    /// How many processes the operation has (combinations × runs), when loading counted
    /// them (see [`Spec::count_within`]).
    pub fn len(&self) -> Option<u64> {
        self.operation.len()
    }

    /// Whether the operation is known to have no process (never, for a spec that loaded).
    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    /// The operation, with the spec as run for `operation.toml`; set its results base and
    /// progress mode before running it.
    pub fn into_operation(self) -> Operation<SpecProcess> {
        self.operation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskfarm::Params;

    /// Parses `text` as the file `spec.toml` or `spec.yaml`, with the built-in kinds.
    pub(super) fn parse(text: &str, format: Format) -> Result<Spec, WorkerError> {
        let path = match format {
            Format::Toml => Path::new("spec.toml"),
            Format::Yaml => Path::new("spec.yaml"),
        };
        Spec::parse(text, format, path, &Registry::with_builtins())
    }

    /// The error that parsing `text` gives, as the user reads it.
    pub(super) fn error(text: &str, format: Format) -> String {
        parse(text, format).expect_err("an error").to_string()
    }

    /// The jobs of a spec: (id, run, parameters).
    pub(super) fn jobs_of(spec: Spec) -> Vec<(u64, u32, Params)> {
        spec.into_operation().into_jobs().map(|job| (job.id, job.run, job.params)).collect()
    }

    #[test]
    fn format_comes_from_the_extension() {
        assert_eq!(Format::of(Path::new("a.TOML")).unwrap(), Format::Toml);
        assert_eq!(Format::of(Path::new("a.yml")).unwrap(), Format::Yaml);
        assert!(Format::of(Path::new("a.json")).unwrap_err().to_string().contains(".toml, .yaml or .yml"));
        assert!(Format::of(Path::new("spec")).is_err());
    }
}
