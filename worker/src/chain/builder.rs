//! [`ChainBuilder`]: a chain made in code, stage by stage, instead of read from a file.

use std::path::Path;

use taskfarm::{Params, Value};

use super::{Chain, Source};
use crate::{Registry, WorkerError};

/// Builds a chain in code, stage by stage, with the stages' specs as tables (the keys of a
/// spec file):
///
/// ```no_run
/// use taskfarm::{Params, Value};
/// use taskfarm_worker::chain::{ChainArgs, ChainBuilder, Source};
/// use taskfarm_worker::Registry;
///
/// let table = |pairs: &[(&str, Value)]| -> Params { pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect() };
/// let simulate = table(&[
///     ("kind", Value::Str("monte_carlo_pi".into())),
///     ("runs", Value::Int(4)),
///     ("parameter_ranges", Value::Map(table(&[("samples", Value::List(vec![Value::Int(1000), Value::Int(10000)]))]))),
/// ]);
/// let analyse = table(&[
///     ("kind", Value::Str("command".into())),
///     ("command", Value::List(vec![Value::Str("cat".into()), Value::Str("{input}".into())])),
/// ]);
/// let registry = Registry::with_builtins();
/// let chain = ChainBuilder::new("campaign")
///     .stage("simulate", Source::Sweep, simulate)
///     .stage("analyse", Source::Groups("simulate".into(), vec!["samples".into()]), analyse)
///     .require_all()
///     .build(&registry)?;
/// let args = ChainArgs { backend: Some("local".into()), pool_size: None, results: "results".into(), resume: None, quiet: true };
/// let status = taskfarm_worker::chain::run_chain(&registry, &chain, args)?;
/// # Ok::<(), taskfarm_worker::WorkerError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ChainBuilder {
    name: String,
    stages: Vec<Params>,
}

impl ChainBuilder {
    /// A chain named `name` (its directory under the results), with no stage yet.
    pub fn new(name: impl Into<String>) -> Self {
        ChainBuilder { name: name.into(), stages: Vec::new() }
    }

    /// Adds a stage named `name` whose processes come from `source`, with the spec `spec`
    /// (relative paths in it are read from the working directory).
    pub fn stage(mut self, name: impl Into<String>, source: Source, spec: Params) -> Self {
        let mut entry = Params::new();
        entry.insert("name".into(), Value::Str(name.into()));
        let names = |v: &[String]| Value::List(v.iter().cloned().map(Value::Str).collect());
        match source {
            Source::Sweep => {}
            Source::Rows(from) => {
                entry.insert("from".into(), Value::Str(from));
            }
            Source::Groups(from, by) => {
                entry.insert("from".into(), Value::Str(from));
                entry.insert("group_by".into(), names(&by));
            }
            Source::All(from) => {
                entry.insert("from".into(), Value::Str(from));
                entry.insert("all".into(), Value::Bool(true));
            }
        }
        entry.extend(spec.into_iter().filter(|(k, _)| k != "name"));
        self.stages.push(entry);
        self
    }

    /// The last stage added fails the chain if a row of its source crashed.
    pub fn require_all(mut self) -> Self {
        if let Some(last) = self.stages.last_mut() {
            last.insert("require".into(), Value::Str("all".into()));
        }
        self
    }

    /// The last stage added declares its output fields, so later stages are checked
    /// against them before anything runs.
    pub fn outputs(mut self, fields: &[&str]) -> Self {
        if let Some(last) = self.stages.last_mut() {
            last.insert("outputs".into(), Value::List(fields.iter().map(|f| Value::Str((*f).to_owned())).collect()));
        }
        self
    }

    /// Checks the chain as a chain file is checked (names, sources, every stage's spec).
    pub fn build(self, registry: &Registry) -> Result<Chain, WorkerError> {
        let mut doc = Params::new();
        doc.insert("kind".into(), Value::Str("chain".into()));
        doc.insert("name".into(), Value::Str(self.name.clone()));
        doc.insert("stages".into(), Value::List(self.stages.into_iter().map(Value::Map).collect()));
        let chain = Chain::from_document(Path::new(&format!("{}.toml", self.name)), &doc)?;
        chain.check(registry)?;
        Ok(chain)
    }
}
