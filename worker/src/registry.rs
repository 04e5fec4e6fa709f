//! The registry of process kinds: what a spec's `kind = "..."` names, and `SpecProcess`,
//! the one process type the worker runs (and sends between MPI ranks).
//!
//! This module is for naming and looking up kinds. It is not for reading spec files
//! ([`crate::spec`]) nor for the built-in kinds themselves (`builtins`: [`crate::command`],
//! [`crate::pi`]).
//!
//! Under MPI every rank runs the same binary with the same arguments, so the kinds a worker
//! can run are kept in a process-wide table that [`Registry::install`] fills at start-up;
//! a [`SpecProcess`] received from another rank only carries the kind's *name* and its
//! fields, and is run by looking the name up in that table. Installing the same kinds
//! twice (tests running in parallel in one process) is harmless.

use std::sync::{Arc, OnceLock, PoisonError, RwLock};

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use taskfarm::{Params, Process, ProcessContext, ProcessError, Value};

use crate::kind::Kind;
use crate::typed::TypedKind;

/// A set of process kinds by name: the built-ins and a user's own.
///
/// ```
/// use taskfarm_worker::Registry;
/// use taskfarm::{Process, ProcessContext, ProcessError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Square { x: f64 }
///
/// impl Process for Square {
///     type Output = f64;
///     fn run(&self, _ctx: &ProcessContext) -> Result<f64, ProcessError> { Ok(self.x * self.x) }
/// }
///
/// let registry = Registry::with_builtins().register::<Square>("square", "x squared");
/// assert!(registry.get("square").is_some());
/// assert!(registry.get("command").is_some());
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    kinds: IndexMap<String, Arc<dyn Kind>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("kinds", &self.kinds.keys().collect::<Vec<_>>()).finish()
    }
}

impl Registry {
    /// A registry without any kind.
    pub fn new() -> Self {
        Registry::default()
    }

    /// A registry of the built-in kinds: `command`, `monte_carlo_pi`, and (on Unix) `jsonl`
    /// and `python`.
    pub fn with_builtins() -> Self {
        let registry = Registry::new().register_kind(crate::command::CommandKind).register::<crate::pi::MonteCarloPi>(
            "monte_carlo_pi",
            "estimates pi from `samples` random points (seeded by `seed`, default 0, and the run number) \
             -> estimate, error",
        );
        #[cfg(unix)]
        let registry = registry.register_kind(crate::jsonl::JsonlKind).register_kind(crate::python::PythonKind);
        registry
    }

    /// Registers the [`Process`] type `P` as the kind `name`.
    ///
    /// Each process of a spec of this kind is deserialized (through serde) from, in order of
    /// precedence: the process's parameters, the spec's own fields, and, if `P` has a field
    /// called `run` that neither sets, the run number. So a field can be fixed in the spec
    /// or swept as a parameter. The output's fields become columns of `results.csv`.
    ///
    /// Validation deserializes the first process, so a missing field or a wrong type is
    /// reported before anything runs, with the field's name; a spec key that is not a field
    /// of `P` is an error (unless `P` uses `#[serde(flatten)]`, whose fields cannot be known).
    /// A kind registered under a name already taken replaces it.
    pub fn register<P: Process>(self, name: &str, help: &str) -> Self {
        self.register_kind(TypedKind::<P>::new(name, help))
    }

    /// Registers a hand-written [`Kind`] under its own name (replacing one of that name).
    pub fn register_kind(mut self, kind: impl Kind) -> Self {
        self.kinds.insert(kind.name().to_owned(), Arc::new(kind));
        self
    }

    /// The kind called `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Kind>> {
        self.kinds.get(name).cloned()
    }

    /// The registered kinds, in the order they were registered.
    pub fn kinds(&self) -> impl Iterator<Item = &dyn Kind> {
        self.kinds.values().map(|k| &**k)
    }

    /// The names of the registered kinds.
    pub fn names(&self) -> Vec<&str> {
        self.kinds.keys().map(String::as_str).collect()
    }

    /// Makes these kinds runnable by [`SpecProcess`] in this program (the CLI does it at
    /// start-up). Kinds installed before stay, unless one of these has the same name.
    pub fn install(&self) {
        let table = installed_table();
        let mut table = table.write().unwrap_or_else(PoisonError::into_inner);
        for (name, kind) in &self.kinds {
            table.insert(name.clone(), kind.clone());
        }
    }
}

type KindTable = RwLock<IndexMap<String, Arc<dyn Kind>>>;

fn installed_table() -> &'static KindTable {
    static TABLE: OnceLock<KindTable> = OnceLock::new();
    TABLE.get_or_init(Default::default)
}

fn installed(name: &str) -> Option<Arc<dyn Kind>> {
    installed_table().read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
}

/// The process type of every operation the worker runs: the name of a kind and the spec's
/// fields for it. It is plain data (postcard-encoded under MPI); running it looks the kind
/// up among those [installed](Registry::install) in this program.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpecProcess {
    /// The kind's name.
    pub kind: String,
    /// The spec's fields for the kind (shared by every process of an operation).
    pub config: Arc<Params>,
}

impl Process for SpecProcess {
    type Output = Value;

    /// Whether a timeout can work in thread isolation depends on the kind
    /// ([`Kind::enforces_timeout`]), which one type cannot say: spec validation refuses a
    /// timeout in thread isolation for every kind that does not enforce it, so an operation
    /// of spec processes that reaches `stage_in` with one has a kind that does.
    const ENFORCES_TIMEOUT: bool = true;

    fn run(&self, ctx: &ProcessContext<'_>) -> Result<Value, ProcessError> {
        let kind = installed(&self.kind).ok_or_else(|| {
            ProcessError::msg(format!(
                "the process kind `{}` is not registered in this worker program (under MPI, every rank \
                 must run the same binary)",
                self.kind
            ))
        })?;
        kind.run(&self.config, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_process_round_trips_through_postcard() {
        let config: Params = [
            ("command".to_owned(), Value::List(vec![Value::from("echo"), Value::from("{x}")])),
            ("n".to_owned(), Value::Int(3)),
            ("f".to_owned(), Value::Float(0.5)),
        ]
        .into_iter()
        .collect();
        let process = SpecProcess { kind: "command".into(), config: Arc::new(config) };
        let bytes = postcard::to_allocvec(&process).expect("encodes");
        let back: SpecProcess = postcard::from_bytes(&bytes).expect("decodes");
        assert_eq!(back, process);
    }

    #[test]
    fn installing_twice_is_harmless_and_unknown_kinds_crash_clearly() {
        Registry::with_builtins().install();
        Registry::with_builtins().install();
        assert!(installed("command").is_some());
        let params = Params::new();
        let here = taskfarm::backend::Location::here("test");
        let ctx = ProcessContext::new(0, 0, &params, std::path::Path::new("/nonexistent"), &here);
        let process = SpecProcess { kind: "nosuch".into(), config: Arc::new(Params::new()) };
        let err = process.run(&ctx).unwrap_err();
        assert!(err.reason.contains("`nosuch` is not registered"), "{err}");
    }
}
