//! The spec's fields of the `command` kind (`command`, `env`, `cwd`, `command_files`,
//! `stdout_lines`, `output`), each read with an error that names it.

use taskfarm::{Params, Value};

use super::CommandKind;
use crate::kind::KindError;
use crate::output::OutputMode;

pub(super) const FIELDS: [&str; 6] = ["command", "stdout_lines", "env", "cwd", "command_files", "output"];

/// One file a process's command reads, written into its scratch directory from a template.
pub(super) struct CommandFile {
    /// The path in the scratch directory (a template).
    pub(super) path: String,
    /// The content (a template).
    pub(super) template: String,
}

impl CommandKind {
    /// The argument templates of a spec's `command` field.
    pub(super) fn templates(config: &Params) -> Result<Vec<String>, KindError> {
        let wrong = || {
            KindError::at(
                "command",
                "`command` must be a non-empty list of strings, such as [\"sh\", \"-c\", \"./sim {alpha}\"], \
                 or one string to run with sh -c",
            )
        };
        match config.get("command") {
            None => Err(KindError::new(
                "kind `command` needs a `command` field, such as command = [\"sh\", \"-c\", \"./sim --alpha {alpha}\"]",
            )),
            Some(Value::Str(line)) if !line.trim().is_empty() => Ok(vec!["sh".into(), "-c".into(), line.clone()]),
            Some(Value::List(items)) if !items.is_empty() => {
                items.iter().map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong)).collect()
            }
            Some(_) => Err(wrong()),
        }
    }

    /// Every template of `config` that can name placeholders, as far as it is well formed.
    pub(super) fn all_templates(config: &Params) -> Vec<String> {
        let mut all = Self::templates(config).unwrap_or_default();
        all.extend(Self::env(config).unwrap_or_default().into_iter().map(|(_, v)| v));
        all.extend(Self::cwd(config).ok().flatten());
        for file in Self::files(config).unwrap_or_default() {
            all.extend([file.path, file.template]);
        }
        all
    }

    /// `env = { NAME = "template", ... }`.
    pub(super) fn env(config: &Params) -> Result<Vec<(String, String)>, KindError> {
        match config.get("env") {
            None => Ok(Vec::new()),
            Some(Value::Map(map)) => map
                .iter()
                .map(|(name, value)| match value {
                    Value::Str(template) if !name.is_empty() && !name.contains('=') => {
                        Ok((name.clone(), template.clone()))
                    }
                    other => Err(KindError::at(
                        "env",
                        format!(
                            "`env.{name}` must be a string template such as \"{{threads}}\", not {other} ({}): write \
                             numbers in quotes",
                            other.type_name()
                        ),
                    )),
                })
                .collect(),
            Some(_) => Err(KindError::at(
                "env",
                "`env` must be a table of strings, as env = { OMP_NUM_THREADS = \"{threads}\" }",
            )),
        }
    }

    /// `cwd = "template"`.
    pub(super) fn cwd(config: &Params) -> Result<Option<String>, KindError> {
        match config.get("cwd") {
            None => Ok(None),
            Some(Value::Str(template)) if !template.is_empty() => Ok(Some(template.clone())),
            Some(_) => Err(KindError::at("cwd", "`cwd` must be a path template, such as \"{scratch_dir}\"")),
        }
    }

    /// `[[command_files]]` entries: `path` and `template` (spec loading turns a
    /// `template_file` into its `template`).
    pub(super) fn files(config: &Params) -> Result<Vec<CommandFile>, KindError> {
        let usage = "each [[command_files]] entry needs `path` (relative to the scratch directory) and `template` \
                     (or `template_file`)";
        match config.get("command_files") {
            None => Ok(Vec::new()),
            Some(Value::List(items)) => items
                .iter()
                .map(|item| match item {
                    Value::Map(map) => match (map.get("path"), map.get("template")) {
                        (Some(Value::Str(path)), Some(Value::Str(template))) if map.len() == 2 => {
                            Ok(CommandFile { path: path.clone(), template: template.clone() })
                        }
                        _ => Err(KindError::at("command_files", usage)),
                    },
                    _ => Err(KindError::at("command_files", usage)),
                })
                .collect(),
            Some(_) => Err(KindError::at("command_files", usage)),
        }
    }

    pub(super) fn stdout_lines(config: &Params) -> Result<usize, KindError> {
        match config.get("stdout_lines") {
            None => Ok(1),
            Some(Value::Int(n)) if (1..=10_000).contains(n) => Ok(*n as usize),
            Some(other) => Err(KindError::at(
                "stdout_lines",
                format!("`stdout_lines` must be a whole number from 1 to 10000, not {other} ({})", other.type_name()),
            )),
        }
    }

    pub(super) fn output_mode(config: &Params) -> Result<OutputMode, KindError> {
        let Some(value) = config.get("output") else { return Ok(OutputMode::Tail) };
        match value.as_str().and_then(OutputMode::parse) {
            Some(mode) => Ok(mode),
            None => Err(KindError::at(
                "output",
                format!(
                    "`output` must be \"tail\" (the default: the record keeps stdout's last lines and the end of \
                     stderr), \"files\" (logs/<id>.out and .err) or \"log\" (one output.log with an index), not {value}"
                ),
            )),
        }
    }
}
