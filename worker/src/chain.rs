//! Chains of operations on the command line: `run CHAIN`, `validate CHAIN`,
//! `report CHAIN_DIR`, and the first rows of `summary.csv` in `report`.
//!
//! A chain file (TOML or YAML, `kind = "chain"`) lists stages, each an operation given inline
//! or by the path of its spec (`spec = "simulate.toml"`, relative to the chain file):
//!
//! ```toml
//! kind = "chain"
//! name = "campaign"                  # optional: the file's stem by default
//!
//! [[stages]]
//! name = "simulate"
//! spec = "simulate.toml"
//! outputs = ["energy"]               # optional: the output fields later stages may name,
//!                                    # checked before anything runs
//! [[stages]]
//! name = "analyse"
//! from = "simulate"                  # its processes come from simulate's finished rows
//! group_by = ["alpha"]               # one process per alpha (or `all = true`: one process)
//! require = "all"                    # optional: a crashed row of simulate fails the chain
//! kind = "command"
//! command = ["python3", "fit.py", "{input}", "{alpha}"]
//! ```
//!
//! With `from` alone a stage has one process per finished row of that stage, whose
//! parameters are the row's parameters and output fields (and `from_id`, `from_run`); with
//! `group_by` one per group of rows, with the group's values, `input` (a JSON file holding
//! the group's rows, in the stage's `inputs/`) and `rows` (how many); with `all = true` one
//! process with `input` and `rows`. Crashed rows are skipped and counted, unless
//! `require = "all"`.
//!
//! A chain runs into `<results>/<name>/<UTC timestamp>/`: `chain.toml` (the chain as run,
//! every stage inline) and one usual result directory per stage, named after it. Every
//! stage is run as a resumable run of its own directory, so `--resume CHAIN_DIR` finishes
//! each stage with each process exactly once; a stage whose processes all have a record
//! runs nothing again.

use std::io::Write;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use taskfarm::{create_backend, BackendOptions, Params, ProgressMode, Summary, Value};

use crate::spec::Format;
use crate::{Registry, Spec, WorkerError};

/// The file of a chain's result directory that holds the chain as run.
pub const CHAIN_TOML: &str = "chain.toml";

/// How many rows of `summary.csv` `report` shows.
const SUMMARY_ROWS: usize = 5;

/// The keys of a stage that belong to the chain; every other key is the stage's spec.
const STAGE_KEYS: [&str; 6] = ["spec", "from", "group_by", "all", "require", "outputs"];

/// The columns of `results.jsonl` that are not a row's parameters or outputs.
const FIXED_COLUMNS: [&str; 8] = ["status", "duration_s", "started_at", "host", "worker", "attempts", "reason", "id"];

/// A row of `results.jsonl`.
type Row = serde_json::Map<String, serde_json::Value>;

/// Where a stage's processes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Its own parameter space.
    Sweep,
    /// One process per finished row of the stage named.
    Rows(String),
    /// One process per group of finished rows of the stage, by the values of the columns.
    Groups(String, Vec<String>),
    /// One process over every finished row of the stage.
    All(String),
}

impl Source {
    /// The stage it reads, if any.
    pub fn from(&self) -> Option<&str> {
        match self {
            Source::Sweep => None,
            Source::Rows(from) | Source::Groups(from, _) | Source::All(from) => Some(from),
        }
    }
}

/// One stage of a chain.
#[derive(Debug, Clone)]
pub struct Stage {
    /// Its name: the operation's name and its directory's.
    pub name: String,
    /// Where its processes come from.
    pub source: Source,
    /// Whether a crashed row of its source fails the chain (else it is skipped and counted).
    pub require_all: bool,
    /// The output fields it declares (for later stages to be checked before anything runs).
    pub outputs: Option<Vec<String>>,
    /// Its spec document, `name` set.
    pub doc: Params,
    /// The file its relative paths are read from (its spec file, or the chain file).
    pub file: PathBuf,
}

/// A loaded and checked chain, its stages in an order in which each comes after its source.
#[derive(Debug, Clone)]
pub struct Chain {
    /// The chain file.
    pub path: PathBuf,
    /// The chain's name (its directory under the results).
    pub name: String,
    /// The backend the chain asks for, if any.
    pub backend: Option<String>,
    /// The stages.
    pub stages: Vec<Stage>,
}

/// Whether `path` is a chain file: a TOML or YAML file whose `kind` is `chain`.
pub fn is_chain_file(path: &Path) -> bool {
    if path.as_os_str() == "-" || !path.is_file() {
        return false;
    }
    // Only a file that mentions `chain` is parsed here; the spec loader reads the others.
    let mentions_chain = crate::limits::read_bounded(path).ok().flatten().is_some_and(|text| text.contains("chain"));
    mentions_chain && read_document(path).is_ok_and(|doc| doc.get("kind").and_then(Value::as_str) == Some("chain"))
}

/// Reads a TOML or YAML file as a table.
fn read_document(path: &Path) -> Result<Params, WorkerError> {
    let format = Format::of(path)?;
    let text = crate::limits::read_bounded(path)
        .map_err(|source| WorkerError::Read { path: path.to_owned(), source })?
        .ok_or_else(|| WorkerError::SpecTooLarge { path: path.to_owned(), limit: crate::limits::MAX_SPEC_BYTES })?;
    let bad = |message: String| WorkerError::Chain { path: path.to_owned(), message };
    // Before parsing: a deeply nested document takes the YAML parser minutes.
    if let Some(line) = crate::limits::line_too_deep(&text, crate::limits::MAX_SPEC_DEPTH) {
        return Err(bad(format!(
            "line {line}: lists and tables nest more than {} levels deep: write the values flatter",
            crate::limits::MAX_SPEC_DEPTH
        )));
    }
    let value: Value = match format {
        Format::Toml => toml::from_str(&text).map_err(|e| bad(one_line(&e.to_string())))?,
        Format::Yaml => serde_yaml_ng::from_str(&text).map_err(|e| bad(one_line(&e.to_string())))?,
    };
    match value {
        Value::Map(map) => Ok(map),
        _ => Err(bad("the file must hold a table of keys".into())),
    }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

impl Chain {
    /// Reads a chain file and checks it: stage names, sources (an unknown or cyclic `from`),
    /// and every stage's spec, as far as it can be known before anything runs.
    pub fn load(path: &Path, registry: &Registry) -> Result<Chain, WorkerError> {
        let doc = read_document(path)?;
        let chain = Chain::from_document(path, &doc)?;
        chain.check(registry)?;
        Ok(chain)
    }

    fn from_document(path: &Path, doc: &Params) -> Result<Chain, WorkerError> {
        let bad = |message: String| WorkerError::Chain { path: path.to_owned(), message };
        for key in doc.keys() {
            if !["kind", "name", "backend", "stages"].contains(&key.as_str()) {
                return Err(bad(format!(
                    "`{key}` is not a key of a chain: a chain has `name`, `backend` and `stages` (each stage's spec \
                     goes inside its stage)"
                )));
            }
        }
        let name = match doc.get("name") {
            Some(Value::Str(name)) => name.clone(),
            Some(_) => return Err(bad("`name` must be text".into())),
            None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default(),
        };
        let backend = doc.get("backend").and_then(Value::as_str).map(str::to_owned);
        let Some(Value::List(entries)) = doc.get("stages") else {
            return Err(bad(
                "a chain needs `stages`, a list of tables (`[[stages]]` in TOML), one per operation".into()
            ));
        };
        if entries.is_empty() {
            return Err(bad("`stages` is empty: a chain needs at least one stage".into()));
        }
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut stages: Vec<Stage> = Vec::new();
        for (n, entry) in entries.iter().enumerate() {
            let Value::Map(entry) = entry else {
                return Err(bad(format!("stage {} must be a table", n + 1)));
            };
            let stage_name = match entry.get("name") {
                Some(Value::Str(name)) => name.clone(),
                _ => return Err(bad(format!("stage {} needs a `name` (text): it names its directory", n + 1))),
            };
            let at = |message: String| bad(format!("stage `{stage_name}`: {message}"));
            if stages.iter().any(|s| s.name == stage_name) {
                return Err(at("two stages have this name: each stage needs a name of its own".into()));
            }
            let strings = |key: &str| -> Result<Option<Vec<String>>, WorkerError> {
                match entry.get(key) {
                    None => Ok(None),
                    Some(Value::List(items)) => items
                        .iter()
                        .map(|item| item.as_str().map(str::to_owned))
                        .collect::<Option<Vec<_>>>()
                        .map(Some)
                        .ok_or_else(|| at(format!("`{key}` must be a list of names"))),
                    Some(_) => Err(at(format!("`{key}` must be a list of names"))),
                }
            };
            let from = match entry.get("from") {
                None => None,
                Some(Value::Str(from)) => Some(from.clone()),
                Some(_) => return Err(at("`from` must name a stage".into())),
            };
            let group_by = strings("group_by")?;
            let all = match entry.get("all") {
                None => false,
                Some(Value::Bool(all)) => *all,
                Some(_) => return Err(at("`all` must be true or false".into())),
            };
            let require_all = match entry.get("require").map(|v| v.as_str()) {
                None | Some(Some("finished")) => false,
                Some(Some("all")) => true,
                Some(_) => {
                    return Err(at(
                        "`require` must be \"all\" (a crashed row fails the chain) or \"finished\" (crashed rows \
                         are skipped, the default)"
                            .into(),
                    ))
                }
            };
            let source = match (from, group_by, all) {
                (None, None, false) => Source::Sweep,
                (None, _, _) => {
                    return Err(at("`group_by` and `all` need `from`, the stage whose rows they read".into()))
                }
                (Some(from), None, false) => Source::Rows(from),
                (Some(from), Some(by), false) if !by.is_empty() => Source::Groups(from, by),
                (Some(_), Some(_), false) => return Err(at("`group_by` names no column".into())),
                (Some(from), None, true) => Source::All(from),
                (Some(_), Some(_), true) => {
                    return Err(at("`group_by` and `all = true` exclude each other: choose one".into()))
                }
            };
            let mut spec_doc = Params::new();
            let mut file = path.to_owned();
            if let Some(spec) = entry.get("spec") {
                let Some(spec) = spec.as_str() else { return Err(at("`spec` must be the path of a spec file".into())) };
                file = dir.join(spec);
                spec_doc = read_document(&file).map_err(|e| at(e.to_string()))?;
            }
            spec_doc.extend(
                entry.iter().filter(|(k, _)| !STAGE_KEYS.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())),
            );
            spec_doc.insert("name".into(), Value::Str(stage_name.clone()));
            if source != Source::Sweep {
                if let Some(key) =
                    ["parameter_ranges", "parameter_settings", "sweep", "parameter_groups", "parameter_samples"]
                        .into_iter()
                        .find(|k| spec_doc.contains_key(*k))
                {
                    return Err(at(format!(
                        "`{key}` cannot be given to a stage that takes its processes from another (`from`): its \
                         parameters are the rows it reads"
                    )));
                }
            }
            stages.push(Stage {
                name: stage_name.clone(),
                source,
                require_all,
                outputs: strings("outputs")?,
                doc: spec_doc,
                file,
            });
        }
        let names: Vec<String> = stages.iter().map(|s| s.name.clone()).collect();
        // Each stage has at most one source: following `from` from a stage either ends at a
        // sweep or comes back round (a cycle).
        let mut depth = IndexMap::new();
        for stage in &stages {
            let mut seen = vec![stage.name.clone()];
            let mut at = stage;
            while let Some(from) = at.source.from() {
                let Some(next) = stages.iter().find(|s| s.name == from) else {
                    return Err(bad(format!(
                        "stage `{}` reads `from = \"{from}\"`, but there is no such stage: the stages are {}",
                        at.name,
                        names.join(", ")
                    )));
                };
                if seen.contains(&next.name) {
                    seen.push(next.name.clone());
                    return Err(bad(format!(
                        "the stages form a cycle ({}): each stage must read a stage that does not read it back",
                        seen.join(" reads ")
                    )));
                }
                seen.push(next.name.clone());
                at = next;
            }
            depth.insert(stage.name.clone(), seen.len());
        }
        stages.sort_by_key(|s| depth.get(&s.name).copied().unwrap_or(0));
        Ok(Chain { path: path.to_owned(), name, backend, stages })
    }

    /// The stage named `name`.
    fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }

    /// The columns the rows of `stage` are known to have before it runs: its parameters and
    /// its declared outputs (`None` when it declares none: its outputs are known once it ran).
    fn known_columns(&self, stage: &Stage, registry: &Registry) -> Result<(Vec<String>, bool), WorkerError> {
        let mut columns: Vec<String> = match &stage.source {
            Source::Sweep => self.sweep_spec(stage, registry)?.parameter_names().to_vec(),
            Source::Rows(from) => {
                let from = self.stage(from).ok_or_else(|| self.bad(stage, "its source is unknown"))?;
                let (mut columns, _) = self.known_columns(from, registry)?;
                columns.extend(["from_id".to_owned(), "from_run".to_owned()]);
                columns
            }
            Source::Groups(_, by) => by.iter().cloned().chain(["input".to_owned(), "rows".to_owned()]).collect(),
            Source::All(_) => vec!["input".to_owned(), "rows".to_owned()],
        };
        let complete = stage.outputs.is_some();
        columns.extend(stage.outputs.iter().flatten().cloned());
        Ok((columns, complete))
    }

    fn bad(&self, stage: &Stage, message: &str) -> WorkerError {
        WorkerError::Chain { path: self.path.clone(), message: format!("stage `{}`: {message}", stage.name) }
    }

    /// The spec of a stage with its own parameter space.
    fn sweep_spec(&self, stage: &Stage, registry: &Registry) -> Result<Spec, WorkerError> {
        parse_stage(&self.path, stage, &stage.doc, registry)
    }

    /// Checks every stage: a sweep stage's spec in full; a stage reading rows against the
    /// columns its source is known to produce (its parameters and declared outputs).
    fn check(&self, registry: &Registry) -> Result<(), WorkerError> {
        for stage in &self.stages {
            let Some(from_name) = stage.source.from() else {
                self.sweep_spec(stage, registry)?;
                continue;
            };
            let Some(from) = self.stage(from_name) else { continue };
            let (columns, complete) = self.known_columns(from, registry)?;
            if let Source::Groups(_, by) = &stage.source {
                if let Some(unknown) = by.iter().find(|c| !columns.contains(c)).filter(|_| complete) {
                    return Err(self.bad(
                        stage,
                        &format!(
                            "`group_by` names `{unknown}`, which stage `{from_name}` does not produce: it produces {}",
                            columns.join(", ")
                        ),
                    ));
                }
            }
            if !complete {
                // Its source's outputs are known once it ran: the stage is checked then.
                continue;
            }
            let (mut own, _) = self.known_columns(&Stage { outputs: None, ..stage.clone() }, registry)?;
            if let Source::Rows(_) = stage.source {
                own = columns.clone();
                own.extend(["from_id".to_owned(), "from_run".to_owned()]);
            }
            let probe: Params = own.iter().map(|c| (c.clone(), Value::Int(1))).collect();
            let doc = with_settings(&stage.doc, vec![Value::Map(probe)]);
            parse_stage(&self.path, stage, &doc, registry).map_err(|e| {
                self.bad(
                    stage,
                    &format!("{}; stage `{from_name}` produces the fields {}", spec_message(e), columns.join(", ")),
                )
            })?;
        }
        Ok(())
    }

    /// The chain as run: every stage inline, its spec file read.
    fn as_run(&self) -> Params {
        let stages = self
            .stages
            .iter()
            .map(|stage| {
                let mut entry = Params::new();
                entry.insert("name".into(), Value::Str(stage.name.clone()));
                match &stage.source {
                    Source::Sweep => {}
                    Source::Rows(from) => {
                        entry.insert("from".into(), Value::Str(from.clone()));
                    }
                    Source::Groups(from, by) => {
                        entry.insert("from".into(), Value::Str(from.clone()));
                        entry.insert("group_by".into(), Value::List(by.iter().cloned().map(Value::Str).collect()));
                    }
                    Source::All(from) => {
                        entry.insert("from".into(), Value::Str(from.clone()));
                        entry.insert("all".into(), Value::Bool(true));
                    }
                }
                if stage.require_all {
                    entry.insert("require".into(), Value::Str("all".into()));
                }
                if let Some(outputs) = &stage.outputs {
                    entry.insert("outputs".into(), Value::List(outputs.iter().cloned().map(Value::Str).collect()));
                }
                entry.extend(stage.doc.iter().filter(|(k, _)| *k != "name").map(|(k, v)| (k.clone(), v.clone())));
                Value::Map(entry)
            })
            .collect();
        let mut doc = Params::new();
        doc.insert("kind".into(), Value::Str("chain".into()));
        doc.insert("name".into(), Value::Str(self.name.clone()));
        if let Some(backend) = &self.backend {
            doc.insert("backend".into(), Value::Str(backend.clone()));
        }
        doc.insert("stages".into(), Value::List(stages));
        doc
    }
}

/// The message of a spec error without the generated document's file and line.
fn spec_message(e: WorkerError) -> String {
    match e {
        WorkerError::Spec { message, .. } => message,
        other => other.to_string(),
    }
}

/// `doc` with `parameter_settings` set to `settings`.
fn with_settings(doc: &Params, settings: Vec<Value>) -> Params {
    let mut doc = doc.clone();
    doc.insert("parameter_settings".into(), Value::List(settings));
    doc
}

/// Parses a stage's spec document as a spec whose relative paths are read from its file.
fn parse_stage(chain: &Path, stage: &Stage, doc: &Params, registry: &Registry) -> Result<Spec, WorkerError> {
    let text = serde_json::to_string(&serde_json::Value::from(Value::Map(doc.clone())))
        .map_err(|e| WorkerError::Chain { path: chain.to_owned(), message: e.to_string() })?;
    // JSON is YAML: the document goes through the spec loader unchanged.
    Spec::parse(&text, Format::Yaml, &stage.file, registry).map_err(|e| WorkerError::Chain {
        path: chain.to_owned(),
        message: format!("stage `{}`: {}", stage.name, spec_message(e)),
    })
}

/// What `run CHAIN` takes from the command line.
#[derive(Debug, Clone)]
pub struct ChainArgs {
    /// The backend, if given.
    pub backend: Option<String>,
    /// Threads of the local backend.
    pub pool_size: Option<usize>,
    /// Where the chain's directory goes.
    pub results: PathBuf,
    /// The chain directory to finish.
    pub resume: Option<PathBuf>,
    /// No progress display.
    pub quiet: bool,
}

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

/// `run CHAIN [--resume CHAIN_DIR]`: runs every stage in order, each as a resumable run of
/// its own directory; returns the exit status (1 when a process of some stage crashed).
pub fn run(registry: &Registry, path: &Path, args: ChainArgs) -> Result<u8, WorkerError> {
    let chain = Chain::load(path, registry)?;
    run_chain(registry, &chain, args)
}

/// Runs a loaded or built chain (see [`run`]).
pub fn run_chain(registry: &Registry, chain: &Chain, args: ChainArgs) -> Result<u8, WorkerError> {
    // The kinds the stages' processes are run by (harmless if installed already).
    registry.install();
    let path = &chain.path;
    let chain = chain.clone();
    let backend_name = args.backend.clone().or(chain.backend.clone()).unwrap_or_else(|| "local".into());
    if backend_name == "mpi" {
        return Err(WorkerError::Chain {
            path: path.to_owned(),
            message: "chains run on the serial and local backends: run each stage under mpirun as an operation of its \
                      own, or use --backend local"
                .into(),
        });
    }
    let as_run = chain.as_run();
    let dir = match &args.resume {
        Some(dir) => {
            check_same_chain(dir, &as_run)?;
            dir.clone()
        }
        None => {
            let dir = taskfarm::results::create_result_dir(&args.results, &chain.name)?;
            write_chain_toml(&dir, &as_run)?;
            dir
        }
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    let mut out = std::io::stdout().lock();
    let mut crashed = false;
    for stage in &chain.stages {
        let stage_dir = dir.join(&stage.name);
        let Some(spec) = stage_spec(&chain, stage, &dir, registry)? else {
            let _ = writeln!(out, "stage `{}`: no finished row to read: skipped", stage.name);
            continue;
        };
        let summary = run_stage(spec, &stage_dir, &backend_name, &args)
            .map_err(|e| WorkerError::Chain { path: dir.clone(), message: format!("stage `{}`: {e}", stage.name) })?;
        if !summary.is_report() {
            return Ok(crate::EXIT_OK);
        }
        let _ = writeln!(
            out,
            "stage `{}`: {} finished, {} crashed{} in {:.2} s on the {} backend",
            stage.name,
            summary.finished,
            summary.crashed,
            summary.total.map(|t| format!(" of {t}")).unwrap_or_default(),
            summary.wall.as_secs_f64(),
            summary.backend
        );
        crashed |= summary.crashed > 0;
        if summary.interrupted || summary.missing() > 0 {
            let _ = writeln!(out, "interrupted: what finished is in the chain's directory; to finish the chain:");
            let _ = writeln!(out, "  {}", resume_command(&dir));
            return Ok(match (summary.interrupted, backend_core::stop_exit_status()) {
                (true, Some(code)) => code,
                (true, None) => crate::EXIT_SIGINT,
                (false, _) => crate::cli::EXIT_UNFINISHED,
            });
        }
    }
    let _ = writeln!(out, "chain directory: {}", dir.display());
    Ok(if crashed { crate::EXIT_CRASHED } else { crate::EXIT_OK })
}

/// The command that finishes the chain in `dir`.
fn resume_command(dir: &Path) -> String {
    let program = std::env::args().next().unwrap_or_else(|| "taskfarm-worker".into());
    format!("{program} run {} --resume {}", dir.join(CHAIN_TOML).display(), dir.display())
}

/// The spec of a stage as it runs: its own, or one setting per row or group of its source's
/// finished rows (`None` when the source has none).
fn stage_spec(chain: &Chain, stage: &Stage, dir: &Path, registry: &Registry) -> Result<Option<Spec>, WorkerError> {
    let Some(from) = stage.source.from() else { return chain.sweep_spec(stage, registry).map(Some) };
    let bad = |message: String| WorkerError::Chain {
        path: dir.to_owned(),
        message: format!("stage `{}`: {message}", stage.name),
    };
    let from_dir = dir.join(from);
    let rows = taskfarm::results::read_results_jsonl(&from_dir).map_err(|e| bad(e.to_string()))?;
    let (finished, failed): (Vec<_>, Vec<_>) =
        rows.into_iter().partition(|row| row.get("status").and_then(|s| s.as_str()) == Some("finished"));
    if !failed.is_empty() {
        let ids: Vec<String> = failed.iter().take(5).filter_map(|r| r.get("id")).map(|id| id.to_string()).collect();
        if stage.require_all {
            return Err(bad(format!(
                "it requires every row of stage `{from}` to have finished, but {} crashed (ids {}): run them again \
                 with `--resume` after a fix, or leave out `require = \"all\"`",
                failed.len(),
                ids.join(", ")
            )));
        }
        println!(
            "stage `{}`: {} crashed rows of stage `{from}` skipped (ids {})",
            stage.name,
            failed.len(),
            ids.join(", ")
        );
    }
    if finished.is_empty() {
        return Ok(None);
    }
    let value = |v: &serde_json::Value| serde_json::from_value::<Value>(v.clone()).ok();
    let settings: Vec<Value> = match &stage.source {
        Source::Sweep => Vec::new(),
        Source::Rows(_) => finished
            .iter()
            .map(|row| {
                let mut setting = Params::new();
                for (key, cell) in row {
                    let key = match key.as_str() {
                        "id" => "from_id",
                        "run" => "from_run",
                        k if FIXED_COLUMNS.contains(&k) => continue,
                        k => k,
                    };
                    if let Some(v) = value(cell).filter(|v| !v.holds_null()) {
                        setting.insert(key.to_owned(), v);
                    }
                }
                Value::Map(setting)
            })
            .collect(),
        Source::Groups(_, by) => {
            let mut groups: IndexMap<String, (Params, Vec<&Row>)> = IndexMap::new();
            for row in &finished {
                let mut key = Params::new();
                for column in by {
                    let Some(cell) = row.get(column).and_then(value) else {
                        let columns: Vec<&str> =
                            row.keys().map(String::as_str).filter(|k| !FIXED_COLUMNS.contains(k)).collect();
                        return Err(bad(format!(
                            "`group_by` names `{column}`, which stage `{from}` does not produce: its rows have {}",
                            columns.join(", ")
                        )));
                    };
                    key.insert(column.clone(), cell);
                }
                let text = serde_json::to_string(&serde_json::Value::from(Value::Map(key.clone()))).unwrap_or_default();
                groups.entry(text).or_insert_with(|| (key, Vec::new())).1.push(row);
            }
            let mut settings = Vec::new();
            for (n, (_, (mut key, rows))) in groups.into_iter().enumerate() {
                let input = write_input(dir, stage, &format!("group-{n}.json"), &rows)?;
                key.insert("input".into(), Value::Str(input));
                key.insert("rows".into(), Value::Int(rows.len() as i64));
                settings.push(Value::Map(key));
            }
            settings
        }
        Source::All(_) => {
            let rows: Vec<_> = finished.iter().collect();
            let input = write_input(dir, stage, "all.json", &rows)?;
            let mut setting = Params::new();
            setting.insert("input".into(), Value::Str(input));
            setting.insert("rows".into(), Value::Int(rows.len() as i64));
            vec![Value::Map(setting)]
        }
    };
    let columns: Vec<String> = finished
        .first()
        .map(|row| row.keys().filter(|k| !FIXED_COLUMNS.contains(&k.as_str())).cloned().collect())
        .unwrap_or_default();
    let doc = with_settings(&stage.doc, settings);
    parse_stage(&chain.path, stage, &doc, registry)
        .map_err(|e| bad(format!("{}; stage `{from}` produces the fields {}", spec_message(e), columns.join(", "))))
        .map(Some)
}

/// Writes the rows of a group to `<chain dir>/<stage>/inputs/<file>` (beside, then renamed
/// into place) and returns its path.
fn write_input(dir: &Path, stage: &Stage, file: &str, rows: &[&Row]) -> Result<String, WorkerError> {
    let inputs = dir.join(&stage.name).join("inputs");
    let path = inputs.join(file);
    let tmp = inputs.join(format!(".{file}.tmp"));
    let io = |e: std::io::Error| taskfarm::CoreError::io("write", &path, e);
    std::fs::create_dir_all(&inputs).map_err(io)?;
    let text = serde_json::to_string_pretty(rows).unwrap_or_default();
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    Ok(path.to_string_lossy().into_owned())
}

/// Runs one stage in `stage_dir` as a resumable run: the first time, the directory, its
/// `operation.toml` and an empty journal are made; then only processes without a record run.
fn run_stage(spec: Spec, stage_dir: &Path, backend_name: &str, args: &ChainArgs) -> Result<Summary, WorkerError> {
    use taskfarm::results::files;
    let mut options = BackendOptions::default();
    if let Some(n) = args.pool_size {
        options = options.pool_size(n);
    }
    let mut backend = create_backend(backend_name, &options)?;
    let progress = if args.quiet { ProgressMode::Quiet } else { ProgressMode::Auto };
    let operation = spec.into_operation().with_progress(progress);
    if !stage_dir.join(files::JOURNAL).is_file() {
        std::fs::create_dir_all(stage_dir).map_err(|e| taskfarm::CoreError::io("create", stage_dir, e))?;
        let mut as_run = operation.spec().clone();
        as_run.insert("backend".into(), Value::Str(backend_name.to_owned()));
        taskfarm::results::write_operation_toml(stage_dir, &as_run)?;
        // The journal last: a stage directory with a journal is a run that can be resumed.
        let journal = stage_dir.join(files::JOURNAL);
        let tmp = stage_dir.join(".journal.tmp");
        backend_core::journal::JournalWriter::create(&tmp)?.sync()?;
        std::fs::rename(&tmp, &journal).map_err(|e| taskfarm::CoreError::io("move into place", &tmp, e))?;
    }
    let operation = operation.resume_from(stage_dir, false);
    backend.stage_in(operation)?;
    let ran = backend.execute().and_then(|()| backend.retrieve(None));
    let consolidated = backend.consolidate();
    let cleaned = backend.cleanup();
    let summary = ran.and(consolidated).and_then(|summary| cleaned.map(|()| summary))?;
    Ok(summary)
}

/// Writes `chain.toml`, the chain as run.
fn write_chain_toml(dir: &Path, as_run: &Params) -> Result<(), WorkerError> {
    let path = dir.join(CHAIN_TOML);
    let text = toml::to_string(as_run).map_err(|e| WorkerError::Chain {
        path: path.clone(),
        message: format!("the chain cannot be written as TOML: {e}"),
    })?;
    std::fs::write(&path, text).map_err(|e| taskfarm::CoreError::io("write", &path, e).into())
}

/// Refuses to resume a chain directory whose chain differs from `as_run`, naming the first
/// stage that differs.
fn check_same_chain(dir: &Path, as_run: &Params) -> Result<(), WorkerError> {
    let path = dir.join(CHAIN_TOML);
    if !path.is_file() {
        return Err(WorkerError::Chain {
            path: dir.to_owned(),
            message: "this is not a chain's directory (it has no chain.toml): give the directory that `run CHAIN` made"
                .into(),
        });
    }
    let was = read_document(&path)?;
    let stages = |doc: &Params| -> Vec<serde_json::Value> {
        match doc.get("stages") {
            Some(Value::List(list)) => list.iter().cloned().map(serde_json::Value::from).collect(),
            _ => Vec::new(),
        }
    };
    let (was_stages, now_stages) = (stages(&was), stages(as_run));
    let name_of = |v: &serde_json::Value| v.get("name").and_then(|n| n.as_str()).unwrap_or("?").to_owned();
    for (n, now) in now_stages.iter().enumerate() {
        match was_stages.get(n) {
            Some(was) if was == now => {}
            Some(was) if name_of(was) != name_of(now) => {
                return Err(WorkerError::Chain {
                    path: dir.to_owned(),
                    message: format!(
                    "stage {} was `{}` and is now `{}`: a chain resumes only as it was run; start a new run instead",
                    n + 1,
                    name_of(was),
                    name_of(now)
                ),
                })
            }
            Some(_) => {
                return Err(WorkerError::Chain {
                    path: dir.to_owned(),
                    message: format!(
                        "stage `{}` differs from the one this chain ran (see its chain.toml): a chain resumes only as \
                         it was run; start a new run instead",
                        name_of(now)
                    ),
                })
            }
            None => {
                return Err(WorkerError::Chain {
                    path: dir.to_owned(),
                    message: format!(
                        "stage `{}` is not in the chain that ran here: a chain resumes only as it was run; start a new \
                         run instead",
                        name_of(now)
                    ),
                })
            }
        }
    }
    if let Some(gone) = was_stages.get(now_stages.len()) {
        return Err(WorkerError::Chain {
            path: dir.to_owned(),
            message: format!(
                "stage `{}` of the chain that ran here is missing: a chain resumes only as it was run",
                name_of(gone)
            ),
        });
    }
    Ok(())
}

/// `validate CHAIN`: checks the chain and says, per stage, how many processes it will have
/// (or where they come from); runs nothing.
pub fn validate(registry: &Registry, path: &Path) -> Result<(), WorkerError> {
    let chain = Chain::load(path, registry)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}: chain `{}` of {} stages", path.display(), chain.name, chain.stages.len());
    for stage in &chain.stages {
        let kind = stage.doc.get("kind").and_then(Value::as_str).unwrap_or("?");
        let what = match &stage.source {
            Source::Sweep => {
                let spec = chain.sweep_spec(stage, registry)?;
                let count = spec.count_within(std::time::Duration::from_secs(2))?;
                match count.exact() {
                    Some(n) => format!("{n} processes ({} run(s) each)", spec.runs()),
                    None => format!("at least {} processes", count.at_least()),
                }
            }
            Source::Rows(from) => format!("one process per finished row of `{from}`"),
            Source::Groups(from, by) => {
                format!("one process per group of `{}` of the finished rows of `{from}`", by.join("`, `"))
            }
            Source::All(from) => format!("one process over every finished row of `{from}`"),
        };
        let _ = writeln!(out, "  stage `{}` (kind `{kind}`): {what}", stage.name);
    }
    let _ = writeln!(out, "ok: the chain is valid (nothing was run)");
    Ok(())
}

/// The chain directory `path` names (it, or its `latest`), if it is one.
pub fn chain_dir(path: &Path) -> Option<PathBuf> {
    if path.join(CHAIN_TOML).is_file() {
        return Some(path.to_owned());
    }
    let latest = path.join(taskfarm::results::files::LATEST);
    latest.join(CHAIN_TOML).is_file().then(|| std::fs::canonicalize(&latest).unwrap_or(latest))
}

/// `report CHAIN_DIR`: per stage, its counts and wall time, and what is left to run.
pub fn report(dir: &Path) -> Result<u8, WorkerError> {
    let doc = read_document(&dir.join(CHAIN_TOML))?;
    let chain = Chain::from_document(&dir.join(CHAIN_TOML), &doc)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "chain: {} (`{}`, {} stages)", dir.display(), chain.name, chain.stages.len());
    let mut unfinished = false;
    for stage in &chain.stages {
        let stage_dir = dir.join(&stage.name);
        if !stage_dir.join(taskfarm::results::files::JOURNAL).is_file() {
            unfinished = true;
            let _ = writeln!(out, "  stage `{}`: not started", stage.name);
            continue;
        }
        let report = taskfarm::report::RunReport::from_dir(&stage_dir)?;
        let _ = writeln!(
            out,
            "  stage `{}`: {} recorded, {} finished, {} crashed, wall time {:.3} s",
            stage.name, report.recorded, report.finished, report.crashed, report.wall_s
        );
    }
    if unfinished {
        let _ = writeln!(out, "unfinished: to finish the chain:\n  {}", resume_command(dir));
    }
    Ok(crate::EXIT_OK)
}

/// For a run with adaptive runs: how many of its `points` parameter points still need runs
/// (none recorded, or `unfinished` in `summary.csv`); `None` for other runs.
pub fn adaptive_points_left(spec: &Spec, dir: &Path) -> Option<u64> {
    spec.adaptive()?;
    let points = spec.count_within(std::time::Duration::from_secs(2)).ok()?.at_least() / u64::from(spec.runs().max(1));
    let Ok(Some((header, rows))) = backend_core::summary::read_summary(dir) else { return Some(points) };
    let stopped = header.iter().position(|h| h == "stopped")?;
    let unfinished = rows.iter().filter(|r| r.get(stopped).map(String::as_str) == Some("unfinished")).count() as u64;
    Some(points.saturating_sub(rows.len() as u64) + unfinished)
}

/// Writes the first rows of the run's `summary.csv` (statistics over runs), if it has one:
/// the parameters, the counts and, per numeric field, its mean and the 95 % half width.
pub fn print_summary(dir: &Path, out: &mut impl Write) {
    let Ok(Some((header, rows))) = backend_core::summary::read_summary(dir) else { return };
    let _ = writeln!(out, "summary over runs (summary.csv, {} points):", rows.len());
    // Columns shown: everything up to the statistics, then `<field>.mean` and `<field>.ci95`.
    let shown: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, name)| {
            let statistic = name.rsplit_once('.').map(|(_, s)| s);
            !statistic.is_some_and(|s| backend_core::summary::STATISTICS.contains(&s))
                || name.ends_with(".mean")
                || name.ends_with(".ci95")
        })
        .map(|(i, _)| i)
        .collect();
    let _ = writeln!(out, "  {}", shown.iter().map(|&i| header[i].as_str()).collect::<Vec<_>>().join("  "));
    for row in rows.iter().take(SUMMARY_ROWS) {
        let cells: Vec<&str> = shown.iter().map(|&i| row.get(i).map(String::as_str).unwrap_or("")).collect();
        let _ = writeln!(out, "  {}", cells.join("  "));
    }
    if rows.len() > SUMMARY_ROWS {
        let _ = writeln!(out, "  ... and {} more points", rows.len() - SUMMARY_ROWS);
    }
}
