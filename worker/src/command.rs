//! The built-in kind `command`: each process runs an external program whose argument list
//! is a template filled with the process's parameters.
//!
//! ```toml
//! kind = "command"
//! command = ["sh", "-c", "./sim --alpha {alpha} --seed {run} > out-{id}.txt"]
//! stdout_lines = 1          # optional: how many last lines of stdout to keep (default 1)
//! ```
//!
//! Placeholders: `{name}` of every parameter, `{run}` (the run number), `{id}` (the process
//! id), `{result_dir}` (the operation's result directory) and `{scratch_dir}` (a directory for
//! this process alone, created when named). `{{` and `}}` stand for literal braces. An
//! unknown placeholder is an error before anything runs. `command` may also be one string,
//! which runs as `sh -c "<string>"`.
//!
//! The command runs in the worker's working directory with stdin closed, in a process group
//! of its own, and with `TASKFARM_ID`, `TASKFARM_RUN` and `TASKFARM_RESULT_DIR` set.
//!
//! **End and timeout.** A command ends when the program it names exits: what it left
//! running in the background (`sleep 30 &`) may hold its output for 200 ms more at most,
//! then its process group is killed. With a spec `timeout`, a command still running at the
//! deadline is killed with its whole process group (SIGKILL) and recorded as timed out; this
//! works in thread isolation too. If the worker dies, even by SIGKILL, its commands die with
//! it. (In subprocess isolation the command stays in the child's process group, which the
//! worker kills as a whole.)
//!
//! **Output.** Exit status 0 means finished. If the last non-empty line of stdout is a JSON
//! object, its fields are the output (columns of `results.csv`); otherwise the output is
//! `{ stdout = "<the last stdout_lines lines>" }`. Any other exit status (or a signal) means
//! crashed, with the status as the reason and the last lines of stderr as the stderr tail.
//!
//! This module is not for shell quoting: substituted values are inserted as they are (a
//! parameter becomes exactly one argument, or part of one, when no shell is involved).

use std::process::Command;

use backend_core::text_tail;
use taskfarm::{Params, ProcessContext, ProcessError, Value};

use crate::registry::{check_keys, Kind, KindError, KindSpec};

/// The placeholders every command template may use besides the parameters.
pub const BUILTIN_PLACEHOLDERS: [&str; 4] = ["run", "id", "result_dir", "scratch_dir"];

/// How many lines of stderr a crash record keeps.
const STDERR_TAIL_LINES: usize = 20;
/// At most this many bytes of stderr tail.
const STDERR_TAIL_BYTES: usize = 4096;

/// One piece of a parsed argument template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A `{name}` placeholder.
    Placeholder(String),
}

/// Parses one argument template: text with `{name}` placeholders and `{{`/`}}` escapes.
/// The error says what is wrong and where.
pub fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                chars.next();
                text.push('}');
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    return Err(format!(
                        "the `{{` at character {} of `{template}` is never closed (write `{{{{` for a literal brace)",
                        at + 1
                    ));
                }
                if name.is_empty() || name.contains('{') {
                    return Err(format!(
                        "`{template}` has a placeholder without a name at character {} (write `{{{{` and `}}}}` \
                         for literal braces)",
                        at + 1
                    ));
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Placeholder(name));
            }
            '}' => {
                return Err(format!(
                    "the `}}` at character {} of `{template}` closes no placeholder (write `}}}}` for a literal brace)",
                    at + 1
                ))
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// The built-in `command` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandKind;

const FIELDS: [&str; 2] = ["command", "stdout_lines"];

impl CommandKind {
    /// The argument templates of a spec's `command` field.
    fn templates(config: &Params) -> Result<Vec<String>, KindError> {
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

    fn stdout_lines(config: &Params) -> Result<usize, KindError> {
        match config.get("stdout_lines") {
            None => Ok(1),
            Some(Value::Int(n)) if (1..=10_000).contains(n) => Ok(*n as usize),
            Some(other) => Err(KindError::at(
                "stdout_lines",
                format!("`stdout_lines` must be a whole number from 1 to 10000, not {other} ({})", other.type_name()),
            )),
        }
    }
}

impl Kind for CommandKind {
    fn name(&self) -> &str {
        "command"
    }

    fn help(&self) -> &str {
        "runs an external command, e.g. command = [\"sh\", \"-c\", \"./sim --alpha {alpha} --seed {run}\"]; \
         exit 0 = finished (a JSON object on stdout's last line gives the output fields)"
    }

    fn enforces_timeout(&self) -> bool {
        true
    }

    fn validate(&self, spec: &KindSpec<'_>) -> Result<(), KindError> {
        check_keys("command", spec.config, &FIELDS)?;
        let templates = Self::templates(spec.config)?;
        Self::stdout_lines(spec.config)?;
        for template in &templates {
            let pieces = parse_template(template).map_err(|e| KindError::at("command", e))?;
            for piece in pieces {
                let Piece::Placeholder(name) = piece else { continue };
                let known = spec.parameter_names.contains(&name) || BUILTIN_PLACEHOLDERS.contains(&&*name);
                if !known {
                    let parameters = if spec.parameter_names.is_empty() {
                        "there are no parameters".to_owned()
                    } else {
                        format!("the parameters are {}", spec.parameter_names.join(", "))
                    };
                    return Err(KindError::at(
                        "command",
                        format!(
                            "the placeholder `{{{name}}}` in `command` is not a parameter: {parameters}, and {} are \
                             always known (write `{{{{` and `}}}}` for literal braces)",
                            BUILTIN_PLACEHOLDERS.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn run(&self, config: &Params, ctx: &ProcessContext<'_>) -> Result<Value, ProcessError> {
        let templates = Self::templates(config).map_err(|e| ProcessError::msg(e.message))?;
        let stdout_lines = Self::stdout_lines(config).map_err(|e| ProcessError::msg(e.message))?;
        let mut argv = Vec::with_capacity(templates.len());
        for template in &templates {
            argv.push(render(template, ctx)?);
        }
        let (program, args) = argv.split_first().ok_or_else(|| ProcessError::msg("the command is empty"))?;
        let mut command = Command::new(program);
        command
            .args(args)
            .env("TASKFARM_ID", ctx.id().to_string())
            .env("TASKFARM_RUN", ctx.run().to_string())
            .env("TASKFARM_RESULT_DIR", ctx.result_dir());
        // A process group of its own (so it and its children can be killed together), set
        // without a pre_exec hook so spawning stays on the fast posix_spawn path; inside a
        // subprocess-isolation child it stays in the child's group, which the worker kills.
        let own_group = !backend_core::in_child();
        let output = backend_core::run_with_deadline(command, None, ctx.deadline(), own_group)
            .map_err(|e| ProcessError::msg(format!("the command `{program}` could not be started: {e}")))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr_tail = text_tail(&stderr, STDERR_TAIL_LINES, STDERR_TAIL_BYTES);
        match output.status {
            Some(status) if status.success() => {
                tracing::debug!("`{program}` exited with status 0, {} bytes on stdout", output.stdout.len());
                Ok(output_of(&stdout, stdout_lines))
            }
            Some(status) => {
                Err(ProcessError::msg(format!("the command `{program}` {}", backend_core::describe_exit(&status)))
                    .with_stderr_tail(stderr_tail))
            }
            None => Err(ProcessError::timed_out(format!(
                "the command `{program}` ran past its timeout and was killed with its process group"
            ))
            .with_stderr_tail(stderr_tail)),
        }
    }
}

/// Fills one template for the process of `ctx`.
fn render(template: &str, ctx: &ProcessContext<'_>) -> Result<String, ProcessError> {
    let pieces = parse_template(template).map_err(ProcessError::msg)?;
    let mut out = String::new();
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.push_str(&text),
            Piece::Placeholder(name) => match (ctx.params().get(&name), name.as_str()) {
                (Some(value), _) => out.push_str(&value.to_string()),
                (None, "run") => out.push_str(&ctx.run().to_string()),
                (None, "id") => out.push_str(&ctx.id().to_string()),
                (None, "result_dir") => out.push_str(&ctx.result_dir().to_string_lossy()),
                (None, "scratch_dir") => {
                    let dir = ctx
                        .scratch_dir()
                        .map_err(|e| ProcessError::msg(format!("the scratch directory could not be made: {e}")))?;
                    out.push_str(&dir.to_string_lossy());
                }
                (None, _) => return Err(ProcessError::msg(format!("the placeholder `{{{name}}}` has no value"))),
            },
        }
    }
    Ok(out)
}

/// The output of a command that finished: the fields of a JSON object on stdout's last
/// non-empty line, or its last `lines` lines as `stdout`.
fn output_of(stdout: &str, lines: usize) -> Value {
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    if last.trim_start().starts_with('{') {
        if let Ok(object @ serde_json::Value::Object(_)) = serde_json::from_str::<serde_json::Value>(last) {
            return Value::from(object);
        }
    }
    let mut output = Params::new();
    output.insert("stdout".into(), Value::Str(text_tail(stdout, lines, usize::MAX)));
    Value::Map(output)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use taskfarm::Location;

    fn p(name: &str) -> Piece {
        Piece::Placeholder(name.into())
    }
    fn t(text: &str) -> Piece {
        Piece::Text(text.into())
    }

    #[test]
    fn parses_placeholders_and_escapes() {
        assert_eq!(parse_template("plain").unwrap(), vec![t("plain")]);
        assert_eq!(parse_template("").unwrap(), vec![]);
        assert_eq!(parse_template("--alpha={alpha}").unwrap(), vec![t("--alpha="), p("alpha")]);
        assert_eq!(parse_template("{a}{b}").unwrap(), vec![p("a"), p("b")]);
        assert_eq!(parse_template("{{x}} {y}").unwrap(), vec![t("{x} "), p("y")]);
        assert_eq!(parse_template("awk '{{print $1}}'").unwrap(), vec![t("awk '{print $1}'")]);
        assert_eq!(parse_template("é{ü}é").unwrap(), vec![t("é"), p("ü"), t("é")]);
    }

    #[test]
    fn template_errors_say_where() {
        let err = parse_template("x {alpha").unwrap_err();
        assert!(err.contains("character 3") && err.contains("never closed"), "{err}");
        let err = parse_template("a } b").unwrap_err();
        assert!(err.contains("character 3") && err.contains("closes no placeholder"), "{err}");
        assert!(parse_template("{}").unwrap_err().contains("without a name"));
        assert!(parse_template("{a{b}").unwrap_err().contains("without a name"));
    }

    fn config(command: Value) -> Params {
        [("command".to_owned(), command)].into_iter().collect()
    }

    fn validate(command: Value, names: &[&str]) -> Result<(), KindError> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let first = Params::new();
        CommandKind.validate(&KindSpec { config: &config(command), parameter_names: &names, first: &first })
    }

    #[test]
    fn validation_names_unknown_placeholders() {
        let argv = |s: &str| Value::List(vec![Value::from("sh"), Value::from("-c"), Value::from(s)]);
        assert!(validate(argv("./sim {alpha} {run} {id} {scratch_dir}"), &["alpha"]).is_ok());
        let err = validate(argv("./sim {gamma}"), &["alpha", "beta"]).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("command"));
        assert!(err.message.contains("`{gamma}`") && err.message.contains("alpha, beta"), "{err}");
        assert!(validate(Value::from("echo {alpha}"), &["alpha"]).is_ok());
        assert!(validate(Value::List(vec![]), &[]).unwrap_err().message.contains("non-empty list"));
        assert!(validate(Value::Int(3), &[]).is_err());
    }

    fn run(command: &str, params: &Params) -> Result<Value, ProcessError> {
        let here = Location::here("test");
        let dir = tempfile::tempdir().unwrap();
        let ctx = ProcessContext::new(7, 2, params, dir.path(), &here);
        CommandKind.run(&config(Value::from(command)), &ctx)
    }

    #[test]
    fn runs_commands_and_reads_their_output() {
        let params: Params = [("alpha".to_owned(), Value::Float(0.5))].into_iter().collect();
        let out = run("echo noise; echo '{{\"a\": {alpha}, \"id\": {id}}}'", &params).unwrap();
        let Value::Map(map) = out else { panic!("a map") };
        assert_eq!(map["a"], Value::Float(0.5));
        assert_eq!(map["id"], Value::Int(7));
        let out = run("echo one; echo run={run}; echo", &params).unwrap();
        assert_eq!(out, Value::Map([("stdout".to_owned(), Value::from("run=2"))].into_iter().collect()));
        let err = run("echo bad >&2; exit 3", &params).unwrap_err();
        assert!(err.reason.contains("exited with status 3"), "{err}");
        assert_eq!(err.stderr_tail.as_deref(), Some("bad"));
        let err = run("kill -9 $$", &params).unwrap_err();
        assert!(err.reason.contains("signal 9"), "{err}");
        let here = Location::here("test");
        let ctx = ProcessContext::new(0, 0, &params, Path::new("/"), &here);
        let missing = config(Value::List(vec![Value::from("/nonexistent/taskfarm-sim")]));
        let err = CommandKind.run(&missing, &ctx).unwrap_err();
        assert!(err.reason.contains("could not be started"), "{err}");
    }

    #[test]
    fn tails_are_bounded() {
        assert_eq!(text_tail("a\nb\nc\n", 2, 100), "b\nc");
        assert_eq!(text_tail("abcdef", 1, 3), "...def");
        assert_eq!(text_tail("", 3, 10), "");
    }
}
