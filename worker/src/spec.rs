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
//! Reliability options (see `backend_core`'s `execute` docs): `timeout = "30s"` (or a number
//! of seconds; also `"250ms"`, `"5m"`, `"2h"`) stops a process past it and records it as
//! timed out; `retries = 2` runs a crashed or timed-out process up to 2 more times;
//! `isolation = "subprocess"` runs each process in a child of the worker, so a segfault or
//! an abort costs only that process (default `"thread"`). In thread isolation only the
//! `command` kind can honour a timeout (it kills its command's process group); any other
//! kind with a `timeout` needs `isolation = "subprocess"`, and validation says so.
//!
//! `backend` may name the backend to use when the command line does not (the
//! `operation.toml` of a result directory says which backend ran it, and is itself a spec
//! that can be run again). Every other top-level key is a field of the kind; a key the kind
//! does not take is an error. Errors name the file and, where known, the line.
//!
//! This module is not for running anything: see [`crate::cli`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use backend_core::{parse_duration, seconds_to_duration, Isolation, RunOptions, MAX_TIMEOUT_SECONDS};
use indexmap::IndexMap;
use serde::Deserialize;
use taskfarm::{CoreError, Count, Operation, ParameterSpace, Params, Value};

use crate::kind::KindSpec;
use crate::registry::{Registry, SpecProcess};
use crate::WorkerError;

/// The top-level keys that belong to the spec itself; every other key is the kind's.
pub const SPEC_KEYS: [&str; 18] = [
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

/// The spec's own keys, read with serde (so a wrong type is reported with its line).
#[derive(Debug, Deserialize)]
struct Header {
    name: Option<String>,
    kind: String,
    // Read by `sweep::read` from the document; declared so that a key given twice in them
    // is named with its line.
    #[serde(rename = "parameter_ranges")]
    _ranges: Option<UniqueMap<Value>>,
    #[serde(rename = "parameter_settings")]
    _settings: Option<Vec<UniqueMap<Value>>>,
    #[serde(default)]
    runs: Runs,
    /// The numeric output fields the processes give, when the spec declares them (an
    /// adaptive `until` is then checked against them before anything runs).
    outputs: Option<Vec<String>>,
    backend: Option<String>,
    timeout: Option<Value>,
    retries: Option<Value>,
    isolation: Option<Value>,
    threads: Option<Value>,
    threads_per_rank: Option<Value>,
}

/// `runs`: a number of runs per point, or adaptive runs `{ min, max, until }`.
#[derive(Debug, Clone, PartialEq)]
enum Runs {
    Fixed(u32),
    Adaptive { min: u32, max: u32, until: String },
}

impl Default for Runs {
    fn default() -> Self {
        Runs::Fixed(1)
    }
}

impl<'de> Deserialize<'de> for Runs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Runs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("u32, or a table { min = N, max = M, until = \"<condition>\" } for adaptive runs")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Runs, E> {
                u32::try_from(n)
                    .map(Runs::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Runs, E> {
                u64::try_from(n)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Runs, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Table {
                    min: u32,
                    max: u32,
                    until: String,
                }
                let Table { min, max, until } = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Runs::Adaptive { min, max, until })
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// A table read from a spec in which each key appears once: YAML admits a key twice and
/// would keep only its last value (`{x: [1, 2], x: [3]}` would sweep `x = 3` alone).
#[derive(Debug)]
struct UniqueMap<V>(IndexMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = IndexMap::new();
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate key `{key}`: a key may appear once in a table"
                        )));
                    }
                    let value = access.next_value::<V>()?;
                    map.insert(key, value);
                }
                Ok(UniqueMap(map))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}

/// A loaded and validated spec, ready to run.
#[derive(Debug)]
pub struct Spec {
    path: PathBuf,
    kind: String,
    runs: u32,
    adaptive: Option<backend_core::summary::AdaptiveRuns>,
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

    /// Parses and validates spec text; `path` names the file in errors (and gives the
    /// default operation name, its stem).
    pub fn parse(text: &str, format: Format, path: &Path, registry: &Registry) -> Result<Spec, WorkerError> {
        let at = |key: &str| line_of_key(text, key);
        let spec_error =
            |line: Option<usize>, message: String| WorkerError::Spec { path: path.to_owned(), line, message };
        let space_error = |key: &str, source: CoreError| WorkerError::Space {
            path: path.to_owned(),
            line: at(key),
            source: Box::new(source),
        };

        // Before parsing: a deeply nested document takes the YAML parser minutes.
        if let Some(line) = crate::limits::line_too_deep(text, crate::limits::MAX_SPEC_DEPTH) {
            return Err(spec_error(
                Some(line),
                format!(
                    "lists and tables nest more than {} levels deep here: a spec needs a few levels; write the \
                     values flatter",
                    crate::limits::MAX_SPEC_DEPTH
                ),
            ));
        }
        let (header, document): (Header, UniqueMap<Value>) = match format {
            Format::Toml => {
                let document: UniqueMap<Value> = toml::from_str(text).map_err(|e| toml_error(text, path, &e))?;
                pyspace_keys(&document.0).map_err(|(key, m)| spec_error(at(key), m))?;
                let header = toml::from_str(text).map_err(|e| toml_error(text, path, &e))?;
                (header, document)
            }
            Format::Yaml => {
                let document: Result<UniqueMap<Value>, _> = serde_yaml_ng::from_str(text);
                if let Ok(document) = &document {
                    pyspace_keys(&document.0).map_err(|(key, m)| spec_error(at(key), m))?;
                }
                let header = serde_yaml_ng::from_str(text).map_err(|e| yaml_error(text, path, &e))?;
                let document = document.map_err(|e| yaml_error(text, path, &e))?;
                (header, document)
            }
        };
        let document_params: Params = document.0;
        let mut config: Params = document_params
            .iter()
            .filter(|(k, _)| !SPEC_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();

        let kind = registry.get(&header.kind).ok_or_else(|| WorkerError::UnknownKind {
            path: path.to_owned(),
            line: at("kind"),
            kind: header.kind.clone(),
            known: registry.names().join(", "),
        })?;
        if kind.takes_constants() {
            if let Some(constants) = document_params.get("constants") {
                config.insert("constants".into(), constants.clone());
            }
        }

        // operation.toml is TOML, which has no null: a null would vanish from it, so a run
        // repeated or resumed from it would be another run.
        if let Some((key, _)) = config.iter().find(|(_, value)| value.holds_null()) {
            return Err(spec_error(
                at(key),
                format!(
                    "`{key}` is null or holds a null (YAML `~` or `null`), which a run's operation.toml cannot \
                     record (TOML has no null): leave the key out, or write \"\" for an empty value"
                ),
            ));
        }

        if let Some((key, value)) = config.iter().find_map(|(key, value)| Some((key, value.huge_int()?))) {
            return Err(spec_error(
                at(key),
                format!(
                    "the whole number {value} is too large: whole numbers go from {} to {} (write it as a string, or \
                     as a float such as 1.8e19 if an approximation will do)",
                    i64::MIN,
                    i64::MAX
                ),
            ));
        }

        let mut options = run_options(&header.timeout, &header.retries, &header.isolation)
            .map_err(|(key, message)| spec_error(at(key), message))?;
        let threads = thread_count("threads", &header.threads).map_err(|m| spec_error(at("threads"), m))?;
        options.threads = threads.unwrap_or(1);
        let threads_per_rank = thread_count("threads_per_rank", &header.threads_per_rank)
            .map_err(|m| spec_error(at("threads_per_rank"), m))?;
        if let (Some(asked), Some(limit)) = (threads, threads_per_rank) {
            if asked > limit {
                return Err(spec_error(at("threads"), too_many_threads(asked, limit, "each MPI worker rank has")));
            }
        }
        if options.timeout.is_some() && options.isolation == Isolation::Thread && !kind.enforces_timeout() {
            return Err(spec_error(
                at("timeout"),
                format!(
                    "a `timeout` cannot be enforced for kind `{}` in thread isolation (a process running in a thread \
                     of the worker cannot be stopped): add isolation = \"subprocess\", or remove the timeout \
                     (only the `command` kind can time out in thread isolation)",
                    header.kind
                ),
            ));
        }

        // A plain top-level value that the kind's templates name is a constant.
        let mut config = config;
        inline_template_files(&mut config, path.parent().unwrap_or(Path::new(".")))
            .map_err(|m| spec_error(at("template_file"), m))?;
        let mut constants = Params::new();
        if let Some(named) = kind.placeholders(&config) {
            let (taken, rest): (Params, Params) = config.into_iter().partition(|(key, value)| {
                !named.contains(key)
                    || !matches!(
                        value,
                        Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Bool(_) | Value::Str(_)
                    )
            });
            config = taken;
            constants = rest;
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let crate::sweep::Read { space, parts } =
            crate::sweep::read(&document_params, constants, dir).map_err(|f| match f {
                crate::sweep::Fault::Spec(key, message) => spec_error(at(&key), message),
                crate::sweep::Fault::Core(key, source) => space_error(&key, source),
            })?;
        let space_key = ["sweep", "parameter_ranges", "parameter_groups", "parameter_samples", "parameter_settings"]
            .into_iter()
            .find(|k| document_params.contains_key(*k))
            .unwrap_or("runs");
        if let Some(name) = space.names().iter().find(|n| RESERVED_PARAMETERS.contains(&n.as_str())) {
            return Err(spec_error(
                at(name).or(at(space_key)),
                format!(
                    "`{name}` cannot be a parameter name: {} are columns of results.csv already",
                    RESERVED_PARAMETERS.join(", ")
                ),
            ));
        }
        let parameter_names = space.names().to_vec();
        let probe = space.clone();

        let name = match header.name {
            Some(name) => name,
            None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let mut as_run = Params::new();
        as_run.insert("name".into(), Value::Str(name.clone()));
        as_run.insert("kind".into(), Value::Str(header.kind.clone()));
        as_run.extend(space.describe());
        let (runs, adaptive) = match &header.runs {
            Runs::Fixed(n) => (*n, None),
            Runs::Adaptive { min, max, until } => {
                let adaptive = backend_core::summary::AdaptiveRuns::new(*min, *max, until)
                    .map_err(|e| spec_error(at("runs"), e.to_string()))?;
                if let Some(outputs) = &header.outputs {
                    if let Some(field) = adaptive.until.fields().into_iter().find(|f| !outputs.iter().any(|o| o == f)) {
                        return Err(spec_error(
                            at("until").or(at("runs")),
                            format!(
                                "the condition `until = \"{until}\"` names the field `{field}`, which is not among the \
                                 `outputs` the spec declares: {}",
                                outputs.join(", ")
                            ),
                        ));
                    }
                }
                (*min, Some(adaptive))
            }
        };
        match &adaptive {
            None => as_run.insert("runs".into(), Value::Int(i64::from(runs))),
            Some(adaptive) => as_run.insert("runs".into(), adaptive.describe()),
        };
        if let Some(outputs) = &header.outputs {
            as_run.insert("outputs".into(), Value::List(outputs.iter().cloned().map(Value::Str).collect()));
        }
        if let Some(n) = threads_per_rank {
            as_run.insert("threads_per_rank".into(), Value::Int(n as i64));
        }
        as_run.extend(config.iter().map(|(k, v)| (k.clone(), v.clone())));

        let config = Arc::new(config);
        let process = SpecProcess { kind: header.kind.clone(), config: config.clone() };
        let made = match adaptive.clone() {
            None => Operation::sweep(name, space, runs, move |_params, _run| process.clone()),
            Some(adaptive) => {
                Operation::try_sweep_adaptive(name, space, adaptive, move |_params, _run| Ok(process.clone()))
            }
        };
        let operation = made
            .map_err(|e| {
                let key = match e {
                    CoreError::ZeroRuns | CoreError::TooManyProcesses { .. } => "runs",
                    CoreError::InvalidName { .. } | CoreError::NameTooLong { .. } => "name",
                    _ => "constraints",
                };
                space_error(key, e)
            })?
            .with_spec(as_run)
            .with_options(options);
        let kind_error = |e: crate::KindError, part: Option<&str>| {
            let line = e.key.as_deref().and_then(at);
            let message = match part {
                Some(label) => format!("{label}: {}", e.message),
                None => e.message,
            };
            spec_error(line, message)
        };
        if !parts.is_empty() {
            for (label, first) in &parts {
                let names: Vec<String> = first.keys().cloned().collect();
                kind.validate(&KindSpec { config: &config, parameter_names: &names, first })
                    .map_err(|e| kind_error(e, Some(label)))?;
            }
        } else {
            // The first combination the constraints admit, if counting met one (looking for
            // one could take as long as counting); else the first of the cross product,
            // which has the same parameters.
            let first = if operation.len().is_some() { probe.iter().next() } else { probe.first_unconstrained() };
            let first = first.unwrap_or_default();
            kind.validate(&KindSpec { config: &config, parameter_names: &parameter_names, first: &first })
                .map_err(|e| kind_error(e, None))?;
        }
        Ok(Spec {
            path: path.to_owned(),
            kind: header.kind,
            runs,
            adaptive,
            backend: header.backend,
            threads_per_rank,
            threads_line: at("threads"),
            parameter_names,
            space: probe,
            constraints_line: at("constraints"),
            operation,
        })
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
    pub fn adaptive(&self) -> Option<&backend_core::summary::AdaptiveRuns> {
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

/// Keys of pySPACE's operation specs that taskfarm does not implement, with what to use
/// instead: one sentence naming the key rather than "missing field kind" or "not a spec key".
fn pyspace_keys(document: &Params) -> Result<(), (&'static str, String)> {
    const KEYS: [(&str, &str); 7] = [
        ("type", "taskfarm runs processes of a `kind` (`taskfarm-worker kinds`): replace `type` by e.g. kind = \"command\" with a `command` that runs your node chain"),
        ("input_path", "name the inputs as a parameter instead, e.g. parameter_ranges = { input = { glob = \"data/*\" } }, and use {input} in the command"),
        ("templates", "write the template as [[command_files]] (path and template, or template_file) and run it with a `command`"),
        ("node_chain", "write the node chain as [[command_files]] (path and template_file) and run it with a `command`"),
        ("configuration_template", "write it as [[command_files]] with path and template_file"),
        ("hide_parameters", "every parameter is a column of results.csv; leave it out"),
        ("storage_format", "results go to results.csv and results.jsonl; leave it out"),
    ];
    for (key, instead) in KEYS {
        if document.contains_key(key) {
            return Err((key, format!("`{key}` is a pySPACE key that taskfarm does not implement: {instead}")));
        }
    }
    Ok(())
}

/// Replaces each `template_file` of `[[command_files]]` by its text as `template` (read
/// relative to `dir`), so operation.toml holds the template a run used and a resume does
/// not depend on the file.
fn inline_template_files(config: &mut Params, dir: &Path) -> Result<(), String> {
    let Some(Value::List(files)) = config.get_mut("command_files") else { return Ok(()) };
    for file in files {
        let Value::Map(entry) = file else { continue };
        let Some(name) = entry.get("template_file") else { continue };
        if entry.contains_key("template") {
            return Err("a [[command_files]] entry takes `template` or `template_file`, not both".into());
        }
        let Value::Str(name) = name else { return Err("`template_file` must be a path (a string)".into()) };
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        let full = dir.join(name);
        let text = crate::limits::read_bounded(&full)
            .map_err(|e| format!("the `template_file` {} cannot be read: {e}", full.display()))?
            .ok_or_else(|| format!("the `template_file` {} is larger than a spec may be", full.display()))?;
        let name = name.clone();
        entry.shift_remove("template_file");
        let at = entry.get_index_of("path").map_or(entry.len(), |i| i + 1);
        entry.shift_insert(at, "template".into(), Value::Str(text));
        tracing::debug!("command file template {name} read");
    }
    Ok(())
}

/// The reliability options of a spec; an error names its key and says what is wrong.
fn run_options(
    timeout: &Option<Value>,
    retries: &Option<Value>,
    isolation: &Option<Value>,
) -> Result<RunOptions, (&'static str, String)> {
    let parsed_timeout = match timeout {
        None => None,
        Some(Value::Str(text)) => Some(parse_duration(text).map_err(|e| ("timeout", format!("`timeout`: {e}")))?),
        Some(Value::Int(n)) => seconds_in_range(*n as f64, &format!("{n}"))?,
        Some(Value::Float(x)) => seconds_in_range(*x, &format!("{x:?}"))?,
        Some(other) => {
            return Err((
                "timeout",
                format!("`timeout` must be a duration such as \"30s\" or a number of seconds, not {other}"),
            ))
        }
    };
    if timeout.is_some() && parsed_timeout.is_none() {
        return Err(("timeout", "`timeout` must be more than 0 seconds (leave it out for no limit)".into()));
    }
    let retries = match retries {
        None => 0,
        Some(Value::Int(n)) if (0..=MAX_RETRIES).contains(n) => *n as u32,
        Some(other) => {
            return Err(("retries", format!("`retries` must be a whole number from 0 to {MAX_RETRIES}, not {other}")))
        }
    };
    let isolation = match isolation {
        None => Isolation::Thread,
        Some(Value::Str(text)) => Isolation::parse(text).map_err(|e| ("isolation", e))?,
        Some(other) => {
            return Err(("isolation", format!("`isolation` must be \"thread\" or \"subprocess\", not {other}")))
        }
    };
    Ok(RunOptions { timeout: parsed_timeout, retries, isolation, threads: 1 })
}

/// A `timeout` given as a number of seconds: more than 0 and below
/// [`MAX_TIMEOUT_SECONDS`]; the error says which bound `shown` is past.
fn seconds_in_range(seconds: f64, shown: &str) -> Result<Option<std::time::Duration>, (&'static str, String)> {
    if seconds.is_nan() || seconds >= MAX_TIMEOUT_SECONDS {
        return Err((
            "timeout",
            format!(
                "`timeout` must be a number of seconds below {MAX_TIMEOUT_SECONDS:e} (about 31,700 years), not \
                 {shown}: leave it out for no limit"
            ),
        ));
    }
    Ok(seconds_to_duration(seconds))
}

/// A count of threads (`threads`, `threads_per_rank`): a whole number from 1 to
/// [`MAX_THREADS`]; the error is a sentence naming the key.
fn thread_count(key: &str, value: &Option<Value>) -> Result<Option<usize>, String> {
    match value {
        None => Ok(None),
        Some(Value::Int(n)) if (1..=MAX_THREADS).contains(n) => Ok(Some(*n as usize)),
        Some(other) => Err(format!("`{key}` must be a whole number from 1 to {MAX_THREADS}, not {other}")),
    }
}

/// The sentence for processes that ask for more threads than a worker has.
fn too_many_threads(asked: usize, limit: usize, what: &str) -> String {
    format!(
        "each process asks for {asked} threads (`threads`) but {what} {limit}: ask for at most {limit}, \
         or give each worker more threads (`threads_per_rank` / --threads-per-rank for mpi, --pool-size for local)"
    )
}

/// The 1-based line of `text` where the top-level key `key` is set (`key = ...`,
/// `key: ...` or `[key]`), if any.
fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let trimmed = line.trim_end();
            if trimmed == format!("[{key}]") || trimmed == format!("[[{key}]]") {
                return true;
            }
            let rest = [key.to_owned(), format!("\"{key}\""), format!("'{key}'")]
                .iter()
                .find_map(|k| line.strip_prefix(k.as_str()).map(str::trim_start));
            matches!(rest, Some(r) if r.starts_with('=') || r.starts_with(':'))
        })
        .map(|i| i + 1)
}

/// The key set on 1-based line `line` of `text`, if that line is `key = ...` or `key: ...`.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let content = text.lines().nth(line.checked_sub(1)?)?.trim_start().trim_start_matches("- ");
    let end = content.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))?;
    let (key, rest) = content.split_at(end);
    let rest = rest.trim_start();
    (!key.is_empty() && (rest.starts_with('=') || rest.starts_with(':'))).then(|| key.to_owned())
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// One line: the message with newlines turned into `; ` (and no internal type names).
fn one_line(message: &str) -> String {
    let message = message.replace("struct Header", "a table of spec keys (name, kind, parameter_ranges, ...)");
    message.trim().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// Prefixes a type error with the key on `line` when the message does not name it already
/// (syntax errors are about the line, not about a key).
fn with_key(text: &str, line: Option<usize>, message: String) -> String {
    let about_a_value = ["invalid type", "invalid value", "invalid length", "unknown variant"]
        .iter()
        .any(|start| message.starts_with(start));
    if !about_a_value {
        return message;
    }
    match line.and_then(|l| key_at_line(text, l)) {
        Some(key) if !message.contains(&format!("`{key}`")) && !message.starts_with(&key) => {
            format!("`{key}`: {message}")
        }
        _ => message,
    }
}

fn toml_error(text: &str, path: &Path, error: &toml::de::Error) -> WorkerError {
    let message = one_line(error.message());
    // A missing key has no line of its own (toml points at the whole document).
    let line = if message.starts_with("missing field") {
        None
    } else {
        error.span().map(|span| line_of_offset(text, span.start))
    };
    WorkerError::Spec { path: path.to_owned(), line, message: with_key(text, line, message) }
}

fn yaml_error(text: &str, path: &Path, error: &serde_yaml_ng::Error) -> WorkerError {
    let location = error.location();
    let mut message = error.to_string();
    if let Some(l) = &location {
        message = message.replace(&format!(" at line {} column {}", l.line(), l.column()), "");
    }
    let message = one_line(&message);
    // serde_yaml_ng names the key of a type error itself (`runs: invalid type ...`); a
    // missing key has no line of its own.
    let mut line = if message.starts_with("missing field") { None } else { location.map(|l| l.line()) };
    // A duplicate key is reported where its table starts: point at the second occurrence.
    if let (Some(start), Some(key)) = (line, duplicated_key(&message)) {
        line = second_occurrence(text, start, key).or(line);
    }
    WorkerError::Spec { path: path.to_owned(), line, message }
}

/// The key of a "duplicate key `k`" message.
fn duplicated_key(message: &str) -> Option<&str> {
    let rest = &message[message.find("duplicate key `")? + "duplicate key `".len()..];
    Some(&rest[..rest.find('`')?])
}

/// The 1-based line, from line `start` on, where block-style YAML sets `key` for the second
/// time at the column where it was first set (the column tells one table from another).
fn second_occurrence(text: &str, start: usize, key: &str) -> Option<usize> {
    let mut column = None;
    for (i, line) in text.lines().enumerate().skip(start.checked_sub(1)?) {
        let indent = line.len() - line.trim_start().len();
        let content = line.trim_start();
        let (offset, content) = match content.strip_prefix("- ") {
            Some(after) => (indent + 2 + (after.len() - after.trim_start().len()), after.trim_start()),
            None => (indent, content),
        };
        let sets_key = [key.to_owned(), format!("\"{key}\""), format!("'{key}'")]
            .iter()
            .any(|k| content.strip_prefix(k.as_str()).is_some_and(|rest| rest.trim_start().starts_with(':')));
        if !sets_key {
            continue;
        }
        match column {
            None => column = Some(offset),
            Some(c) if c == offset => return Some(i + 1),
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, format: Format) -> Result<Spec, WorkerError> {
        let path = match format {
            Format::Toml => Path::new("spec.toml"),
            Format::Yaml => Path::new("spec.yaml"),
        };
        Spec::parse(text, format, path, &Registry::with_builtins())
    }

    fn error(text: &str, format: Format) -> String {
        parse(text, format).expect_err("an error").to_string()
    }

    #[test]
    fn loads_a_toml_sweep() {
        let spec = parse(
            "name = 'sweep'\nkind = 'command'\nruns = 2\nconstraints = ['alpha < 3']\n\
             command = ['echo', '{alpha}']\n[parameter_ranges]\nalpha = [1, 2, 3]\n",
            Format::Toml,
        )
        .unwrap();
        assert_eq!((spec.name(), spec.kind(), spec.runs(), spec.len()), ("sweep", "command", 2, Some(4)));
        assert_eq!(spec.parameter_names(), ["alpha"]);
        let operation = spec.into_operation();
        let as_run = operation.spec();
        assert_eq!(as_run["runs"], Value::Int(2));
        assert!(as_run.contains_key("command") && as_run.contains_key("constraints"));
        let jobs: Vec<_> = operation.into_jobs().collect();
        assert_eq!(jobs.len(), 4);
        assert_eq!(jobs[3].params["alpha"], Value::Int(2));
        assert_eq!(jobs[3].run, 1);
    }

    #[test]
    fn loads_a_yaml_spec_with_settings_and_defaults() {
        let spec = parse(
            "kind: monte_carlo_pi\nsamples: 100\nparameter_settings:\n  - {seed: 1}\n  - {seed: 2}\n",
            Format::Yaml,
        )
        .unwrap();
        assert_eq!((spec.name(), spec.runs(), spec.len()), ("spec", 1, Some(2)));
        assert_eq!(spec.backend(), None);
    }

    #[test]
    fn a_spec_without_parameters_repeats_runs() {
        let spec = parse("kind = 'monte_carlo_pi'\nsamples = 10\nruns = 3\nbackend = 'serial'", Format::Toml).unwrap();
        assert_eq!(spec.len(), Some(3));
        assert_eq!(spec.backend(), Some("serial"));
    }

    #[test]
    fn errors_name_the_line_and_key() {
        let err = error("kind = 'monte_carlo_pi'\nsamples = 10\nruns = 'three'\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line 3: `runs`: invalid type"), "{err}");
        let err = error("kind = 'monte_carlo_pi'\nsamples = [\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line"), "{err}");
        let err = error("kind: monte_carlo_pi\nsamples: 10\nruns: three\n", Format::Yaml);
        assert!(err.starts_with("spec.yaml, line 3: runs: invalid type"), "{err}");
        let err = error("kind: [\n", Format::Yaml);
        assert!(err.starts_with("spec.yaml, line"), "{err}");
        let err = error("kind = 'monte_carlo_pi'\nsamples = 'many'\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line 2: field `samples`"), "{err}");
        let err = error("kind = 'monte_carlo_pi'\nsamples = 1\ncolour = 'red'\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line 3: `colour` is not a spec key"), "{err}");
        let err = error("- a\n- b\n", Format::Yaml);
        assert!(err.contains("expected a table of spec keys"), "{err}");
        let err = error("name = 'x'\n", Format::Toml);
        assert_eq!(err, "spec.toml: missing field `kind`");
    }

    #[test]
    fn space_errors_name_the_key() {
        let err = error("kind = 'monte_carlo_pi'\nsamples = 1\n[parameter_ranges]\nseed = []\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line 3: the parameter space is empty"), "{err}");
        let err = error(
            "kind = 'monte_carlo_pi'\nsamples = 1\nconstraints = ['seed > 5']\nparameter_ranges = { seed = [1] }\n",
            Format::Toml,
        );
        assert!(err.starts_with("spec.toml, line 3: the constraints exclude every"), "{err}");
        let err = error("kind = 'monte_carlo_pi'\nsamples = 1\nparameter_ranges = { run = [1] }\n", Format::Toml);
        assert!(err.contains("`run` cannot be a parameter name"), "{err}");
        let err = error("kind = 'monte_carlo_pi'\nsamples = 1\nruns = 0\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line 3: `runs` must be at least 1"), "{err}");
        let err = error("name = 'a b'\nkind = 'monte_carlo_pi'\nsamples = 1\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line 1: the operation name `a b`"), "{err}");
    }

    #[test]
    fn unknown_kinds_list_the_known_ones() {
        let err = error("kind = 'nosuch'\n", Format::Toml);
        assert!(err.contains("line 1: there is no process kind `nosuch`: the known kinds are command, monte_carlo_pi"));
    }

    #[test]
    fn finds_keys_and_lines() {
        let text = "a = 1\n[parameter_ranges]\nb: 2\n\"c\" = 3\n  - d: 4\n";
        assert_eq!(line_of_key(text, "a"), Some(1));
        assert_eq!(line_of_key(text, "parameter_ranges"), Some(2));
        assert_eq!(line_of_key(text, "b"), Some(3));
        assert_eq!(line_of_key(text, "c"), Some(4));
        assert_eq!(line_of_key(text, "z"), None);
        assert_eq!(key_at_line(text, 1).as_deref(), Some("a"));
        assert_eq!(key_at_line(text, 2), None);
        assert_eq!(key_at_line(text, 5).as_deref(), Some("d"));
        assert_eq!(key_at_line(text, 99), None);
        assert_eq!(line_of_offset("a\nb\nc", 2), 2);
    }

    #[test]
    fn format_comes_from_the_extension() {
        assert_eq!(Format::of(Path::new("a.TOML")).unwrap(), Format::Toml);
        assert_eq!(Format::of(Path::new("a.yml")).unwrap(), Format::Yaml);
        assert!(Format::of(Path::new("a.json")).unwrap_err().to_string().contains(".toml, .yaml or .yml"));
        assert!(Format::of(Path::new("spec")).is_err());
    }

    /// Values as a spec may hold them: no null (refused at validation).
    fn spec_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            proptest::num::f64::NORMAL.prop_map(Value::Float),
            Just(Value::Float(0.0)),
            Just(Value::Float(-0.0)),
            Just(Value::Float(f64::NAN)),
            Just(Value::Float(f64::INFINITY)),
            Just(Value::Float(f64::NEG_INFINITY)),
            (-1000i32..1000).prop_map(|i| Value::Float(f64::from(i))),
            "\\PC{0,8}".prop_map(Value::Str),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::List),
                proptest::collection::vec(("\\PC{0,4}", inner), 0..3)
                    .prop_map(|kv| Value::Map(kv.into_iter().collect())),
            ]
        })
    }

    fn parameter_name() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        "[a-z][a-z0-9_]{0,5}".prop_filter("not a reserved name", |n| !RESERVED_PARAMETERS.contains(&n.as_str()))
    }

    /// A spec document: `parameter_ranges` (linked or not), `parameter_settings`,
    /// `parameter_samples` or `sweep` blocks, `runs`, and maybe constants.
    fn spec_document() -> impl proptest::strategy::Strategy<Value = Params> {
        use proptest::prelude::*;
        let ranges = proptest::collection::vec((parameter_name(), proptest::collection::vec(spec_value(), 1..4)), 1..4)
            .prop_map(|ranges| {
                let table: Params = ranges.into_iter().map(|(k, v)| (k, Value::List(v))).collect();
                ("parameter_ranges", Value::Map(table))
            });
        let settings =
            proptest::collection::vec(proptest::collection::vec((parameter_name(), spec_value()), 0..3), 1..4)
                .prop_map(|settings| {
                    let list = settings.into_iter().map(|s| Value::Map(s.into_iter().collect())).collect();
                    ("parameter_settings", Value::List(list))
                });
        // Two linked parameters of equal length, crossed with a third.
        let linked = (
            proptest::collection::vec((spec_value(), spec_value()), 1..4),
            proptest::collection::vec(spec_value(), 1..3),
        )
            .prop_map(|(pairs, other)| {
                let (a, b): (Vec<Value>, Vec<Value>) = pairs.into_iter().unzip();
                let table: Params = [
                    ("la".to_owned(), Value::List(a)),
                    ("o".to_owned(), Value::List(other)),
                    ("lb".to_owned(), Value::List(b)),
                ]
                .into_iter()
                .collect();
                ("parameter_ranges", Value::Map(table))
            });
        // Blocks of a union, each with a constant of its own.
        let union = proptest::collection::vec(
            (parameter_name(), proptest::collection::vec(spec_value(), 1..3), spec_value()),
            1..3,
        )
        .prop_map(|blocks| {
            let list = blocks
                .into_iter()
                .map(|(name, values, constant)| {
                    let mut block = Params::new();
                    block.insert(
                        "parameter_ranges".into(),
                        Value::Map([(name, Value::List(values))].into_iter().collect()),
                    );
                    block.insert(
                        "constants".into(),
                        Value::Map([("k_block".to_owned(), constant)].into_iter().collect()),
                    );
                    Value::Map(block)
                })
                .collect();
            ("sweep", Value::List(list))
        });
        let samples = (1i64..5, 0i64..1000, proptest::bool::ANY).prop_map(|(n, seed, lhs)| {
            let table: Params = [
                ("method".to_owned(), Value::from(if lhs { "latin_hypercube" } else { "random" })),
                ("samples".to_owned(), Value::Int(n)),
                ("seed".to_owned(), Value::Int(seed)),
                ("x".to_owned(), Value::from("uniform(-1, 2.5)")),
                ("c".to_owned(), Value::from("choice([1, \"a\", 2.5])")),
            ]
            .into_iter()
            .collect();
            ("parameter_samples", Value::Map(table))
        });
        let constants = proptest::option::of(proptest::collection::vec(("k_[a-z]{1,3}", spec_value()), 1..3));
        (prop_oneof![ranges, settings, linked, union, samples], 1u32..3, constants).prop_map(
            |((key, space), runs, constants)| {
                let mut doc = Params::new();
                doc.insert("name".into(), Value::from("roundtrip"));
                doc.insert("kind".into(), Value::from("command"));
                doc.insert("command".into(), Value::List(vec![Value::from("true")]));
                doc.insert("runs".into(), Value::Int(i64::from(runs)));
                if key == "parameter_ranges" && matches!(&space, Value::Map(t) if t.contains_key("la")) {
                    doc.insert(
                        "link".into(),
                        Value::List(vec![Value::List(vec![Value::from("la"), Value::from("lb")])]),
                    );
                }
                doc.insert(key.into(), space);
                if let Some(constants) = constants {
                    doc.insert("constants".into(), Value::Map(constants.into_iter().collect()));
                }
                doc
            },
        )
    }

    /// Equality of values as a run sees them: NaN equals NaN.
    fn same_value(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b)),
            (Value::Map(x), Value::Map(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|((ka, a), (kb, b))| ka == kb && same_value(a, b))
            }
            _ => a == b,
        }
    }

    /// The jobs of a spec: (id, run, parameters).
    fn jobs_of(spec: Spec) -> Vec<(u64, u32, Params)> {
        spec.into_operation().into_jobs().map(|job| (job.id, job.run, job.params)).collect()
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
        /// Every spec that validates is recorded in operation.toml exactly: the run read back
        /// from it has the same processes under the same ids, from TOML and from YAML.
        #[test]
        fn operation_toml_regenerates_the_same_processes(doc in spec_document(), yaml in proptest::bool::ANY) {
            let (text, format) = if yaml {
                (serde_yaml_ng::to_string(&Value::Map(doc.clone())).unwrap(), Format::Yaml)
            } else {
                (toml::to_string(&Value::Map(doc.clone())).unwrap(), Format::Toml)
            };
            let spec = match parse(&text, format) {
                Ok(spec) => spec,
                // A space with a value that cannot be a parameter, e.g. a setting with no
                // key at all, is refused; refusal is not the concern here.
                Err(e) => return Err(proptest::test_runner::TestCaseError::reject(e.to_string())),
            };
            let dir = tempfile::tempdir().unwrap();
            let operation = spec.into_operation();
            taskfarm::results::write_operation_toml(dir.path(), operation.spec()).unwrap();
            let first: Vec<_> = operation.into_jobs().map(|job| (job.id, job.run, job.params)).collect();
            let again = Spec::load(&dir.path().join("operation.toml"), &Registry::with_builtins())
                .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{text}")))?;
            let again = jobs_of(again);
            proptest::prop_assert_eq!(first.len(), again.len(), "{}", text);
            for (a, b) in first.iter().zip(&again) {
                proptest::prop_assert!(
                    a.0 == b.0 && a.1 == b.1 && same_value(&Value::Map(a.2.clone()), &Value::Map(b.2.clone())),
                    "{:?} became {:?}\nspec:\n{}", a, b, text
                );
            }
        }
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_level() {
        let err = error("kind: command\ncommand: ['true']\nkind: command\n", Format::Yaml);
        assert!(err.contains("duplicate") && err.contains("kind"), "{err}");
        let err =
            error("kind: command\ncommand: ['true']\nparameter_ranges:\n  x: [1]\n  y: [2]\n  x: [3]\n", Format::Yaml);
        assert!(err.starts_with("spec.yaml, line 6: parameter_ranges: duplicate key `x`"), "{err}");
        let err = error(
            "kind: command\ncommand: ['true']\nparameter_settings:\n  - x: 1\n    t: {a: 1, a: 2}\n",
            Format::Yaml,
        );
        assert!(err.contains("line 5") && err.contains("duplicate key `a`"), "{err}");
        let err = error("kind = 'command'\ncommand = ['true']\n[parameter_ranges]\nx = [1]\nx = [2]\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line 5") && err.contains("duplicate key"), "{err}");
    }

    #[test]
    fn finds_the_second_occurrence_of_a_key() {
        let text = "a: 1\nlist:\n  - a: 2\n    b: 3\n  - b: 4\n    b: 5\na: 6\n";
        assert_eq!(second_occurrence(text, 1, "a"), Some(7));
        assert_eq!(second_occurrence(text, 5, "b"), Some(6));
        assert_eq!(second_occurrence(text, 1, "zz"), None);
        assert_eq!(duplicated_key("p[0]: duplicate key `k`: a key may appear once"), Some("k"));
    }

    #[test]
    fn constraints_divide_as_python_does() {
        let spec = parse(
            "kind = 'command'\ncommand = ['true']\nconstraints = ['x != 0 && 1 / x > 0']\n\
             parameter_ranges = { x = [1, 0, 2] }\n",
            Format::Toml,
        )
        .unwrap();
        let kept: Vec<_> = jobs_of(spec).into_iter().map(|(_, _, params)| params["x"].clone()).collect();
        assert_eq!(kept, [Value::Int(1), Value::Int(2)]);
    }

    #[test]
    fn null_values_are_refused() {
        let err = error("kind: command\ncommand: ['true']\nparameter_ranges:\n  x: [~, a, b]\n", Format::Yaml);
        assert!(err.starts_with("spec.yaml, line 3: the parameter `x` has a null value"), "{err}");
        let err =
            error("kind: command\ncommand: ['true']\nparameter_settings: [{a: 1}, {a: [1, null]}]\n", Format::Yaml);
        assert!(err.contains("the parameter `a` has a null value"), "{err}");
        let err = error("kind: command\ncommand: ['true', ~]\n", Format::Yaml);
        assert!(err.starts_with("spec.yaml, line 2: `command` is null or holds a null"), "{err}");
    }
}
