//! [`Spec::parse`]: spec text read, checked against its kind, and turned into an operation
//! with the spec as run (for `operation.toml`); one function that reads top to bottom, in
//! the order its checks are made. Also the pySPACE keys it refuses and the template files it
//! inlines.

use std::path::Path;
use std::sync::Arc;

use taskfarm::Isolation;
use taskfarm::{CoreError, Operation, Params, Value};

use super::errors::{line_of_key, toml_error, yaml_error};
use super::header::{Header, Runs, UniqueMap};
use super::options::{run_options, speculation, thread_count, too_many_threads};
use super::{Format, Spec, RESERVED_PARAMETERS, SPEC_KEYS};
use crate::kind::KindSpec;
use crate::registry::{Registry, SpecProcess};
use crate::WorkerError;

impl Spec {
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
        options.speculate = speculation(&header.speculate, &header.idempotent)
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
        let crate::sweep::Read { space, parts, variants } = crate::sweep::read(&document_params, constants, dir)
            .map_err(|f| match f {
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
                let adaptive = taskfarm::AdaptiveRuns::new(*min, *max, until)
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
            // Settings of several shapes: each replaces every setting's names.
            let first = &parts[0].1;
            for variant in &variants {
                kind.check_values(&config, &variant.over(first)).map_err(|e| kind_error(e, Some(&variant.label)))?;
            }
        } else {
            // The first combination the constraints admit, if counting met one (looking for
            // one could take as long as counting); else the first of the cross product,
            // which has the same parameters.
            let first = if operation.len().is_some() { probe.iter().next() } else { probe.first_unconstrained() };
            let first = first.unwrap_or_default();
            kind.validate(&KindSpec { config: &config, parameter_names: &parameter_names, first: &first })
                .map_err(|e| kind_error(e, None))?;
            for variant in &variants {
                kind.check_values(&config, &variant.over(&first)).map_err(|e| kind_error(e, Some(&variant.label)))?;
            }
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

#[cfg(test)]
mod tests {
    use super::super::tests::{error, jobs_of, parse};
    use super::*;

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
