//! The errors of the core: each variant is a sentence a user can act on.

use std::path::{Path, PathBuf};

/// What can go wrong while defining, staging, running or consolidating an operation.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The parameter space has no combination at all.
    #[error("the parameter space is empty: {why}")]
    EmptyParameterSpace {
        /// Which part of the spec made it empty.
        why: String,
    },
    /// Constraints removed every combination.
    #[error("the constraints exclude every parameter combination ({constraints}): nothing would run")]
    ConstraintsExcludeAll {
        /// The constraints, joined.
        constraints: String,
    },
    /// A constraint expression has a syntax error.
    #[error("the constraint `{constraint}` does not parse: {reason}")]
    ConstraintSyntax {
        /// The constraint as written.
        constraint: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A constraint names a variable that is not a parameter.
    #[error("the constraint `{constraint}` names `{name}`, which is not a parameter (the parameters are: {known})")]
    ConstraintUnknownParameter {
        /// The constraint as written.
        constraint: String,
        /// The unknown name.
        name: String,
        /// The parameters there are.
        known: String,
    },
    /// A constraint does not evaluate to a boolean.
    #[error("the constraint `{constraint}` must be true or false for every combination, but: {reason}")]
    ConstraintNotBoolean {
        /// The constraint as written.
        constraint: String,
        /// What the evaluator said.
        reason: String,
    },
    /// A parameter value is null, or holds a null in a list or table (YAML `~`, `null`).
    #[error("the parameter `{name}` has a null value (YAML `~` or `null`), which a run's operation.toml cannot record (TOML has no null), so the run could not be repeated or resumed as it was: write \"\" for an empty value")]
    NullParameter {
        /// The parameter.
        name: String,
    },
    /// A parameter's value holds a whole number beyond 64-bit integers.
    #[error("the parameter `{name}` holds the whole number {value}, which is too large: whole numbers go from {} to {} (write it as a string, or as a float such as 1.8e19 if an approximation will do)", i64::MIN, i64::MAX)]
    HugeIntParameter {
        /// The parameter.
        name: String,
        /// The number.
        value: u64,
    },
    /// Linked parameters, samples, constants or sub-sweeps that do not fit together (lists
    /// of unequal length, a distribution with `lo >= hi`, a constant named like a parameter).
    #[error("{why}")]
    InvalidParameters {
        /// What is wrong and what to write instead, as a sentence.
        why: String,
    },
    /// The operation has more processes than a 64-bit id can number.
    #[error("the operation has more processes than taskfarm can number ({what}, more than 18446744073709551615 = 2^64 - 1): split it into several operations, e.g. one per value of a parameter")]
    TooManyProcesses {
        /// How the count is made, e.g. `2 × 2 × 79 values of 3 parameters`.
        what: String,
    },
    /// A constraint cannot be evaluated for some combination (e.g. divides by zero).
    #[error("the constraint `{constraint}` cannot be evaluated for {combination}: {reason}: make it true or false for every combination (`&&` and `||` stop when their left side decides, e.g. `x != 0 && 1 / x > 0`)")]
    ConstraintFailed {
        /// The constraint as written.
        constraint: String,
        /// The combination, as `name = value, ...`.
        combination: String,
        /// What the evaluator said.
        reason: String,
    },
    /// A timeout in thread isolation for a process type that cannot stop at its deadline.
    #[error(
        "a `timeout` cannot be enforced for process type `{process}` in thread isolation (a process running in a \
         thread of the worker cannot be stopped): add `.with_isolation(Isolation::Subprocess)`, or remove the \
         timeout (or, if the process returns `ProcessError::timed_out` at `ctx.deadline()`, set \
         `const ENFORCES_TIMEOUT: bool = true` in its `impl Process`)"
    )]
    TimeoutNotEnforced {
        /// The process type's name.
        process: &'static str,
    },
    /// A process asked for a parameter that it was not given.
    #[error("there is no parameter `{name}` (the parameters are: {known}): check its spelling")]
    ParameterMissing {
        /// The name asked for.
        name: String,
        /// The parameters there are, joined.
        known: String,
    },
    /// A parameter holds another type than the one asked for.
    #[error("the parameter `{name}` is {found}, not {expected}")]
    ParameterType {
        /// The parameter.
        name: String,
        /// What it holds, e.g. `the string "a"`.
        found: String,
        /// What was asked for, e.g. `a number`.
        expected: String,
    },
    /// The operation's `make` failed for a process after the run had started.
    #[error("making process {id} of the operation failed, so no further process was started: {reason}")]
    MakingProcess {
        /// The process's id.
        id: u64,
        /// Why, as `make` said.
        reason: String,
    },
    /// `runs` is 0.
    #[error("`runs` must be at least 1")]
    ZeroRuns,
    /// Adaptive runs whose `min` is 0 or above `max`.
    #[error("adaptive runs need 1 <= min <= max, but min is {min} and max is {max}: raise max or lower min")]
    BadRuns {
        /// The runs every point gets.
        min: u32,
        /// The most runs a point gets.
        max: u32,
    },
    /// An `until` condition of adaptive runs that cannot be used.
    #[error("the condition `until = \"{until}\"` cannot be used: {reason}")]
    BadUntil {
        /// The condition as written.
        until: String,
        /// Why not.
        reason: String,
    },
    /// The operation's name cannot be a directory name.
    #[error("the operation name `{name}` cannot name a directory: use letters, digits, `-`, `_` and `.`")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// The operation's name is longer than a directory name can be.
    #[error("the operation name is {length} characters long: it names a directory, so it may have at most 255")]
    NameTooLong {
        /// The name's length in bytes.
        length: usize,
    },
    /// The results path exists but is a file.
    #[error("the results path {} is a file, not a directory: choose another with --results", path.display())]
    ResultsNotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// The result directory cannot be created or written.
    #[error("the results directory {} is not writable ({source}): choose another with --results", path.display())]
    ResultsNotWritable {
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("could not {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A file that should be a journal is not.
    #[error("{} is not a taskfarm journal", path.display())]
    NotAJournal {
        /// The path.
        path: PathBuf,
    },
    /// `--resume` was given a directory that is not a taskfarm run.
    #[error("{} is not a taskfarm run directory (it has no {missing}): give the directory of an earlier run, e.g. results/<name>/<timestamp>", path.display())]
    NotARun {
        /// The directory given.
        path: PathBuf,
        /// The file that is missing.
        missing: &'static str,
    },
    /// `--resume` was given the run of another spec.
    #[error("{} was run with another spec (`{key}` differs: {was} there, {now} now): resume it with the spec it was run with, or start a new run", path.display())]
    ResumeSpecDiffers {
        /// The directory given.
        path: PathBuf,
        /// The first field that differs.
        key: String,
        /// Its value in the earlier run.
        was: String,
        /// Its value now.
        now: String,
    },
    /// A result directory of a newer format than this taskfarm reads.
    #[error("{} was written by a newer taskfarm (result directory format {found}; this one reads up to {supported}): use that taskfarm or a newer one to read or resume it", path.display())]
    FormatTooNew {
        /// The result directory.
        path: PathBuf,
        /// The version it says.
        found: String,
        /// The newest version this taskfarm reads.
        supported: u32,
    },
    /// A journal of a newer format than this taskfarm reads.
    #[error("{} is a journal of a newer taskfarm ({found}; this one reads v1): use that taskfarm or a newer one to read or resume it", path.display())]
    JournalTooNew {
        /// The journal.
        path: PathBuf,
        /// The header's version, e.g. `v2`.
        found: String,
    },
    /// Another run holds the result directory.
    #[error("{} is in use by a run that is still going ({holder}): wait for it to end or stop it first; two runs in one directory would run processes twice", path.display())]
    RunInProgress {
        /// The result directory.
        path: PathBuf,
        /// Who holds it: `pid N on host H`.
        holder: String,
    },
    /// A lifecycle call came in the wrong order.
    #[error("`{call}` was called before `{needs}`")]
    OutOfOrder {
        /// The call made.
        call: &'static str,
        /// The call that must come first.
        needs: &'static str,
    },
    /// A program started as a subprocess-isolation child tried to start an operation.
    #[error(
        "this program was started by taskfarm as a subprocess-isolation child (TASKFARM_CHILD is set) and must run \
         the one process it is given, not an operation: call `run_child_if_requested::<YourProcess>()` first in \
         `main`, before anything else"
    )]
    OperationInChild,
    /// The children of subprocess isolation started the whole program again.
    #[error(
        "the subprocesses of this program do not run their process: each started the program's `main` again, which \
         tried to run an operation (refused): call `run_child_if_requested::<YourProcess>()` first in `main`, before \
         anything else (taskfarm_worker::main_with does it)"
    )]
    ChildWithoutEntry,
    /// A process said that no process of the operation can run (see
    /// [`ProcessError::cannot_run`](crate::ProcessError::cannot_run)).
    #[error("{0}")]
    CannotRun(String),
    /// A backend's setting is out of range.
    #[error("{0}")]
    InvalidOption(String),
    /// A bug or an unexpected failure inside taskfarm.
    #[error("internal error: {0} (please report this)")]
    Internal(String),
}

impl Error {
    /// An I/O error on a path.
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        Error::Io { action, path: path.to_owned(), source }
    }
}

/// The core's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
