//! The built-in kind `command`: each process runs an external program whose argument list
//! is a template filled with the process's parameters.
//!
//! ```toml
//! kind = "command"
//! command = ["sh", "-c", "./sim --alpha {alpha} --seed {run} > out-{id}.txt"]
//! stdout_lines = 1          # optional: how many last lines of stdout to keep (default 1)
//! output = "tail"           # optional: "tail" (default), "files" or "log" (see below)
//! ```
//!
//! Placeholders: `{name}` (or `{name:raw}`, below) of every parameter, `{run}` (the run number), `{id}` (the process
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
//! `output = "files"` also keeps each process's whole stdout and stderr in
//! `logs/<id>.out` and `logs/<id>.err`, and `output = "log"` in one `output.log` per run
//! with an index (see [`crate::output`]; `taskfarm-worker log DIR ID` prints either). Under
//! MPI a worker rank sends the output to the master, which writes it.
//!
//! **Values are data.** A placeholder in an argument that no shell parses is replaced by
//! the value's text as it is: the argument is passed to the program as one argument. In the
//! script of a shell (the argument after `-c` when the program is `sh`, `bash`, `dash`,
//! `zsh` or `ksh`, and a one-string `command`), a string value is quoted for the place it
//! stands in (between words, inside `"…"`, `'…'`, `$'…'`, `$(…)`, backticks), so the
//! shell reads back exactly the value, as one word, and runs none of it. Numbers and
//! booleans are written as they are (their text holds no shell syntax), so arithmetic such
//! as `$(( {alpha} * 2 ))` works. `{name:raw}` opts out: the value is pasted into the script
//! as it is, for templates that mean to pass shell code. A placeholder right after a `$` or
//! a backslash in a script is refused when the spec is validated (the shell would read the
//! two together). See [`crate::shell`].
//!
//! This module holds the kind and what it does when it runs; `fields` reads and checks the
//! spec's fields of the kind, and `template` parses argument templates and fills them. The
//! kind is one concept (about 400 lines with its tests), read top to bottom: check, preview, run.

mod fields;
mod template;

use std::process::Command;

use taskfarm::process_tools::{describe_exit, text_tail};
use taskfarm::{Params, ProcessContext, ProcessError, Value};

use self::fields::FIELDS;
use self::template::{escapes_scratch, render, render_argv, resolve, unknown_placeholder};
use crate::json;
use crate::kind::{check_keys, Kind, KindError, KindSpec};
use crate::shell;

pub use template::{parse_template, Piece};

/// The placeholders every command template may use besides the parameters.
pub const BUILTIN_PLACEHOLDERS: [&str; 4] = ["run", "id", "result_dir", "scratch_dir"];

/// How many lines of stderr a crash record keeps.
const STDERR_TAIL_LINES: usize = 20;
/// At most this many bytes of stderr tail.
const STDERR_TAIL_BYTES: usize = 4096;

thread_local! {
    /// Set while `validate --show` renders templates: nothing is made on disk.
    static PREVIEW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The built-in `command` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct CommandKind;

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

    fn placeholders(&self, config: &Params) -> Option<Vec<String>> {
        let mut names = Vec::new();
        for template in Self::all_templates(config) {
            for piece in parse_template(&template).unwrap_or_default() {
                if let Piece::Placeholder { name, .. } = piece {
                    if !FIELDS.contains(&name.as_str()) && !names.contains(&name) {
                        names.push(name);
                    }
                }
            }
        }
        Some(names)
    }

    fn validate(&self, spec: &KindSpec<'_>) -> Result<(), KindError> {
        check_keys("command", spec.config, &FIELDS)?;
        let templates = Self::templates(spec.config)?;
        Self::stdout_lines(spec.config)?;
        let mut plain: Vec<(&str, String)> = Self::env(spec.config)?.into_iter().map(|(_, t)| ("env", t)).collect();
        plain.extend(Self::cwd(spec.config)?.map(|t| ("cwd", t)));
        for file in Self::files(spec.config)? {
            let literal: String = parse_template(&file.path)
                .map_err(|e| KindError::at("command_files", e))?
                .into_iter()
                .map(|p| match p {
                    Piece::Text(t) => t,
                    Piece::Placeholder { .. } => "x".into(),
                })
                .collect();
            if let Some(why) = escapes_scratch(&literal) {
                return Err(KindError::at(
                    "command_files",
                    format!(
                        "the file `{}` of `command_files` {why}: write a path relative to the scratch directory",
                        file.path
                    ),
                ));
            }
            plain.push(("command_files", file.path));
            plain.push(("command_files", file.template));
        }
        for (key, template) in &plain {
            for piece in parse_template(template).map_err(|e| KindError::at(*key, e))? {
                if let Piece::Placeholder { name, .. } = piece {
                    if resolve(&name, spec.parameter_names).is_none() {
                        return Err(unknown_placeholder(key, &name, spec.parameter_names));
                    }
                }
            }
        }
        Self::output_mode(spec.config)?;
        let script = shell::script_index(&templates);
        for (i, template) in templates.iter().enumerate() {
            let pieces = parse_template(template).map_err(|e| KindError::at("command", e))?;
            let mut lexer = (script == Some(i)).then(shell::Lexer::default);
            for piece in pieces {
                let (name, raw) = match piece {
                    Piece::Text(text) => {
                        if let Some(lexer) = &mut lexer {
                            lexer.feed(&text);
                        }
                        continue;
                    }
                    Piece::Placeholder { name, raw } => (name, raw),
                };
                if let (Some(lexer), false) = (&mut lexer, raw) {
                    if let Err(why) = lexer.context() {
                        return Err(KindError::at(
                            "command",
                            format!("the placeholder `{{{name}}}` in the shell script of `command` {why}"),
                        ));
                    }
                    lexer.placeholder();
                }
                if resolve(&name, spec.parameter_names).is_none() {
                    return Err(unknown_placeholder("command", &name, spec.parameter_names));
                }
            }
        }
        Ok(())
    }

    fn preview(&self, config: &Params, id: u64, run: u32, params: &Params) -> Vec<String> {
        let here = taskfarm::backend::Location::here("validate");
        let result_dir = std::path::Path::new("<result dir>");
        let ctx = ProcessContext::new(id, run, params, result_dir, &here);
        PREVIEW.with(|p| p.set(true));
        let show = |template: &str, in_script: bool| {
            render(template, &ctx, in_script).unwrap_or_else(|e| format!("<{}>", e.reason))
        };
        let mut lines = Vec::new();
        if let Ok(templates) = Self::templates(config) {
            let script = shell::script_index(&templates);
            let argv: Vec<String> =
                templates.iter().enumerate().map(|(i, t)| format!("{:?}", show(t, script == Some(i)))).collect();
            lines.push(format!("argv: [{}]", argv.join(", ")));
        }
        for (name, template) in Self::env(config).unwrap_or_default() {
            lines.push(format!("env: {name}={}", show(&template, false)));
        }
        if let Ok(Some(cwd)) = Self::cwd(config) {
            lines.push(format!("cwd: {}", show(&cwd, false)));
        }
        for file in Self::files(config).unwrap_or_default() {
            lines.push(format!("file {}:", show(&file.path, false)));
            lines.extend(show(&file.template, false).lines().map(|l| format!("  {l}")));
        }
        PREVIEW.with(|p| p.set(false));
        lines
    }

    fn run(&self, config: &Params, ctx: &ProcessContext<'_>) -> Result<Value, ProcessError> {
        let templates = Self::templates(config).map_err(|e| ProcessError::msg(e.message))?;
        let stdout_lines = Self::stdout_lines(config).map_err(|e| ProcessError::msg(e.message))?;
        let output_mode = Self::output_mode(config).map_err(|e| ProcessError::msg(e.message))?;
        let argv = render_argv(&templates, ctx)?;
        let (program, args) = argv.split_first().ok_or_else(|| ProcessError::msg("the command is empty"))?;
        for file in Self::files(config).map_err(|e| ProcessError::msg(e.message))? {
            let path = render(&file.path, ctx, false)?;
            if let Some(why) = escapes_scratch(&path) {
                return Err(ProcessError::msg(format!("the command file `{path}` {why}")));
            }
            let dir = ctx
                .scratch_dir()
                .map_err(|e| ProcessError::msg(format!("the scratch directory could not be made: {e}")))?;
            let target = dir.join(&path);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| ProcessError::msg(format!("{} could not be made: {e}", parent.display())))?;
            }
            std::fs::write(&target, render(&file.template, ctx, false)?).map_err(|e| {
                ProcessError::msg(format!("the command file {} could not be written: {e}", target.display()))
            })?;
        }
        let mut command = Command::new(program);
        for (name, template) in Self::env(config).map_err(|e| ProcessError::msg(e.message))? {
            command.env(name, render(&template, ctx, false)?);
        }
        if let Some(cwd) = Self::cwd(config).map_err(|e| ProcessError::msg(e.message))? {
            command.current_dir(render(&cwd, ctx, false)?);
        }
        command
            .args(args)
            .env("TASKFARM_ID", ctx.id().to_string())
            .env("TASKFARM_RUN", ctx.run().to_string())
            .env("TASKFARM_RESULT_DIR", ctx.result_dir());
        // A process group of its own (so it and its children can be killed together), set
        // without a pre_exec hook so spawning stays on the fast posix_spawn path; inside a
        // subprocess-isolation child it stays in the child's group, which the worker kills.
        let own_group = !taskfarm::process_tools::in_child();
        let output = taskfarm::process_tools::run_with_deadline(command, None, ctx.deadline(), own_group)
            .map_err(|e| ProcessError::msg(format!("the command `{program}` could not be started: {e}")))?;
        if let Err(e) = crate::output::keep(output_mode, ctx.result_dir(), ctx.id(), &output.stdout, &output.stderr) {
            // The record is still right; only the full output is lost, and the log says so.
            tracing::warn!(
                target: "taskfarm_worker::command",
                "the output of the command `{program}` could not be kept in {}: {e}",
                ctx.result_dir().display()
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stderr_tail = text_tail(&stderr, STDERR_TAIL_LINES, STDERR_TAIL_BYTES);
        match output.status {
            Some(status) if status.success() => {
                tracing::debug!(target: "taskfarm_worker::command", "`{program}` exited with status 0, {} bytes on stdout", output.stdout.len());
                Ok(output_of(&stdout, stdout_lines))
            }
            Some(status) => Err(ProcessError::msg(format!("the command `{program}` {}", describe_exit(&status)))
                .with_stderr_tail(stderr_tail)),
            None => Err(ProcessError::timed_out(format!(
                "the command `{program}` ran past its timeout and was killed with its process group"
            ))
            .with_stderr_tail(stderr_tail)),
        }
    }
}

/// The output of a command that finished: the fields of a JSON object on stdout's last
/// non-empty line (`NaN`, `Infinity` and `-Infinity` read as floats, as Python writes them),
/// or its last `lines` lines as `stdout`. A last line that starts like an object but does
/// not parse is logged as a warning, saying why.
fn output_of(stdout: &str, lines: usize) -> Value {
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    if last.trim_start().starts_with('{') {
        match json::parse(last) {
            Ok(object @ Value::Map(_)) => return object,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(target: "taskfarm_worker::command", "the last line of stdout looks like a JSON object but is not ({e}): kept as `stdout`")
            }
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
    use taskfarm::backend::Location;

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
        // A `$` or a backslash right before a placeholder in a script would swallow the value.
        let err = validate(argv("echo ${alpha}"), &["alpha"]).unwrap_err();
        assert!(err.message.contains("`{alpha}`") && err.message.contains("`$`"), "{err}");
        assert!(validate(argv("echo \\{alpha}"), &["alpha"]).unwrap_err().message.contains("backslash"));
        assert!(validate(argv("echo ${alpha:raw} '${alpha}'"), &["alpha"]).is_ok());
        // Outside a shell script nothing is parsed: a `$` there is a character.
        let plain = Value::List(vec![Value::from("echo"), Value::from("${alpha}")]);
        assert!(validate(plain, &["alpha"]).is_ok());
    }

    #[test]
    fn values_in_a_shell_script_are_quoted_unless_raw_numbers_or_booleans() {
        let params: Params = [
            ("s".to_owned(), Value::from("a b; echo INJECTED")),
            ("n".to_owned(), Value::Int(-4)),
            ("f".to_owned(), Value::Float(0.5)),
            ("b".to_owned(), Value::Bool(true)),
            ("cmd".to_owned(), Value::from("echo raw")),
        ]
        .into_iter()
        .collect();
        let out = run("printf '%s|' {s} \"{s}\" '{s}' $(( {n} * 2 )) {f} {b} {id}; {cmd:raw}", &params).unwrap();
        let text = "a b; echo INJECTED|a b; echo INJECTED|a b; echo INJECTED|-8|0.5|true|7|raw";
        assert_eq!(out, Value::Map([("stdout".to_owned(), Value::from(text))].into_iter().collect()));
        // A whole argument outside the script is one argument already: never quoted.
        let here = Location::here("test");
        let ctx = ProcessContext::new(7, 2, &params, Path::new("/"), &here);
        let argv = ["printf".to_owned(), "%s".to_owned(), "{s}".to_owned()];
        assert_eq!(render_argv(&argv, &ctx).unwrap()[2], "a b; echo INJECTED");
        let argv = ["sh".to_owned(), "-c".to_owned(), "{s}".to_owned(), "{s}".to_owned()];
        assert_eq!(render_argv(&argv, &ctx).unwrap()[2..], ["'a b; echo INJECTED'", "a b; echo INJECTED"]);
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
    fn outputs_keep_non_finite_floats_and_large_integers() {
        let out = output_of("noise\n{\"a\": NaN, \"b\": -Infinity, \"n\": 18446744073709551615}\n\n", 1);
        let Value::Map(map) = out else { panic!("a map") };
        assert!(matches!(map["a"], Value::Float(f) if f.is_nan()), "{map:?}");
        assert_eq!(map["b"], Value::Float(f64::NEG_INFINITY));
        assert_eq!(map["n"], Value::UInt(u64::MAX));
        let out = output_of("{\"a\": nan}", 1);
        assert_eq!(out, Value::Map([("stdout".to_owned(), Value::from("{\"a\": nan}"))].into_iter().collect()));
    }

    #[test]
    fn tails_are_bounded() {
        assert_eq!(text_tail("a\nb\nc\n", 2, 100), "b\nc");
        assert_eq!(text_tail("abcdef", 1, 3), "...def");
        assert_eq!(text_tail("", 3, 10), "");
    }
}
