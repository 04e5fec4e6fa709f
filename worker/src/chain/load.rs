//! Reading a chain file and checking it (stage names, sources, every stage's spec as far as
//! it can be known before anything runs), and the chain as run (`chain.toml`).

use std::path::Path;

use indexmap::IndexMap;
use taskfarm::{Params, Value};

use super::{Chain, Source, Stage};
use crate::spec::Format;
use crate::{Registry, Spec, WorkerError};

/// The keys of a stage that belong to the chain; every other key is the stage's spec.
const STAGE_KEYS: [&str; 6] = ["spec", "from", "group_by", "all", "require", "outputs"];

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
pub(super) fn read_document(path: &Path) -> Result<Params, WorkerError> {
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

    pub(super) fn from_document(path: &Path, doc: &Params) -> Result<Chain, WorkerError> {
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
    pub(super) fn sweep_spec(&self, stage: &Stage, registry: &Registry) -> Result<Spec, WorkerError> {
        parse_stage(&self.path, stage, &stage.doc, registry)
    }

    /// Checks every stage: a sweep stage's spec in full; a stage reading rows against the
    /// columns its source is known to produce (its parameters and declared outputs).
    pub(super) fn check(&self, registry: &Registry) -> Result<(), WorkerError> {
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
    pub(super) fn as_run(&self) -> Params {
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
pub(super) fn spec_message(e: WorkerError) -> String {
    match e {
        WorkerError::Spec { message, .. } => message,
        other => other.to_string(),
    }
}

/// `doc` with `parameter_settings` set to `settings`.
pub(super) fn with_settings(doc: &Params, settings: Vec<Value>) -> Params {
    let mut doc = doc.clone();
    doc.insert("parameter_settings".into(), Value::List(settings));
    doc
}

/// Parses a stage's spec document as a spec whose relative paths are read from its file.
pub(super) fn parse_stage(chain: &Path, stage: &Stage, doc: &Params, registry: &Registry) -> Result<Spec, WorkerError> {
    let text = serde_json::to_string(&serde_json::Value::from(Value::Map(doc.clone())))
        .map_err(|e| WorkerError::Chain { path: chain.to_owned(), message: e.to_string() })?;
    // JSON is YAML: the document goes through the spec loader unchanged.
    Spec::parse(&text, Format::Yaml, &stage.file, registry).map_err(|e| WorkerError::Chain {
        path: chain.to_owned(),
        message: format!("stage `{}`: {}", stage.name, spec_message(e)),
    })
}
