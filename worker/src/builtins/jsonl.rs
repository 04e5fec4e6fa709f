//! The built-in kind `jsonl`: a long-lived program per worker slot that runs many
//! processes, one JSON line in and one JSON line out each (the protocol is in
//! `PROTOCOL.md` at the repository's root).
//!
//! ```toml
//! kind = "jsonl"
//! program = ["python3", "sim.py"]     # or one string, run with sh -c
//! ready = true                        # optional: the program prints {"ready": true} once started
//! startup_timeout = "5m"              # optional: how long the start-up may take
//! [constants]                         # optional: sent with every process
//! data = "big.npy"
//! ```
//!
//! **One program per worker slot.** Each thread that runs processes (a thread of the local
//! pool, an MPI worker rank, a thread of a rank with `threads_per_rank > 1`) starts the
//! program at its first process and keeps it for the next ones: `Pool` holds it in a
//! thread-local slot. A slot keeps one program; a process of another spec (other argv)
//! replaces it. The program runs as a command does: in a process group of its own,
//! registered with the guardian, so it dies with the worker, and it is closed (stdin
//! closed, then killed 200 ms later) when its thread ends.
//!
//! **Start-up.** With `ready = true` the first process waits for the program's ready line
//! (bounded by `startup_timeout`) before it is sent, and that wait is left out of the
//! process's duration ([`ProcessContext::exclude_setup`]) and logged in `operation.log`.
//! With `ready = false` (the default) the program is taken as ready when it starts.
//!
//! **Faults.** A program that exits while it runs a process costs that process (crashed,
//! with the exit status or signal and the end of its stderr) and is started again for the
//! next one. A program that exits before it is ready (with `ready = false`: before its
//! first answer), when no program of this spec was ever ready in this worker, stops the
//! run with one error ([`ProcessError::cannot_run`]). Past the process's `timeout` the
//! program is killed with its group and started again for the next process. A line that
//! is not a reply (not JSON, not an object, another id) is a crash that names the line,
//! and the program is started again (it is out of step). A process that is run again
//! (`retries`) after it failed in this slot runs on a fresh instance of the program.

use std::cell::RefCell;
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use taskfarm::process_tools::{text_tail, LineChild, LineEvent};
use taskfarm::{Params, ProcessContext, ProcessError, Value};

use crate::json;
use crate::kind::{check_keys, Kind, KindError, KindSpec};

/// How many lines of stderr a crash record keeps.
const STDERR_TAIL_LINES: usize = 20;
/// At most this many bytes of stderr tail.
const STDERR_TAIL_BYTES: usize = 4096;
/// How much of a line that is not a reply its crash reason quotes.
const QUOTED_LINE: usize = 200;

/// How a worker slot's program is started and spoken to: what the `jsonl` and `python`
/// kinds make of their spec fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProgramSpec {
    /// The program and its arguments: also what tells one spec's programs from another's.
    pub argv: Vec<String>,
    /// How messages name the program.
    pub label: String,
    /// The kind's name, for messages.
    pub kind: &'static str,
    /// Whether the program prints a ready line once started.
    pub ready_line: bool,
    /// How long the start-up may take (until the ready line).
    pub startup_timeout: Option<Duration>,
    /// The `constants` table as a JSON object, sent with every process.
    pub constants_json: String,
}

/// What this worker program knows of the start-ups of each spec's programs (by argv),
/// across its threads: whether one was ever ready, or why the first one failed.
#[derive(Debug, Clone)]
enum StartState {
    Ready,
    Failed(String),
}

static STARTS: Mutex<Option<HashMap<Vec<String>, StartState>>> = Mutex::new(None);

fn start_state(argv: &[String]) -> Option<StartState> {
    STARTS.lock().unwrap_or_else(PoisonError::into_inner).as_ref().and_then(|m| m.get(argv).cloned())
}

fn set_start_state(argv: &[String], state: StartState) {
    let mut starts = STARTS.lock().unwrap_or_else(PoisonError::into_inner);
    let starts = starts.get_or_insert_with(HashMap::new);
    // A spec whose program was once ready stays so: later start-up failures cost a process.
    if !matches!(starts.get(argv), Some(StartState::Ready)) {
        starts.insert(argv.to_vec(), state);
    }
}

/// A running program of a worker slot.
struct Slot {
    argv: Vec<String>,
    child: LineChild,
    /// It printed its ready line, or answered a process.
    ready: bool,
    /// The id of the last process it failed, so a retry of it goes to a fresh instance.
    last_failed: Option<u64>,
}

thread_local! {
    /// This thread's program, if it runs one.
    static SLOT: RefCell<Option<Slot>> = const { RefCell::new(None) };
}

/// The per-thread programs (see the [module docs](self)).
pub(crate) struct Pool;

impl Pool {
    /// Runs the process of `ctx` on this thread's program of `spec`, started first if need
    /// be.
    pub(crate) fn run(spec: &ProgramSpec, ctx: &ProcessContext<'_>) -> Result<Value, ProcessError> {
        if let Some(StartState::Failed(reason)) = start_state(&spec.argv) {
            return Err(ProcessError::cannot_run(reason));
        }
        let slot = SLOT.with(|slot| slot.borrow_mut().take());
        let slot = slot.filter(|s| s.argv == spec.argv && s.last_failed != Some(ctx.id()));
        let mut slot = match slot {
            Some(slot) => slot,
            None => start(spec, ctx)?,
        };
        let result = exchange(spec, &mut slot, ctx);
        match &result {
            Ok(_) => slot.last_failed = None,
            Err(_) => slot.last_failed = Some(ctx.id()),
        }
        if result.as_ref().is_err_and(|e| e.timed_out) || !slot_alive(&result) {
            // Out of step or gone: the next process starts a fresh program.
            drop(slot);
        } else {
            SLOT.with(|s| *s.borrow_mut() = Some(slot));
        }
        result.map_err(|e| e.0)
    }
}

/// Whether the slot's program can serve another process after `result`.
fn slot_alive(result: &Result<Value, Failure>) -> bool {
    result.as_ref().map_or_else(Failure::keep, |_| true)
}

/// A failed process, and whether its program can go on.
struct Failure(ProcessError, bool);

impl Failure {
    fn keep(&self) -> bool {
        self.1
    }
}

impl std::ops::Deref for Failure {
    type Target = ProcessError;
    fn deref(&self) -> &ProcessError {
        &self.0
    }
}

/// Starts `spec`'s program for this thread, and waits for its ready line if it prints one.
fn start(spec: &ProgramSpec, ctx: &ProcessContext<'_>) -> Result<Slot, ProcessError> {
    let (program, args) = spec
        .argv
        .split_first()
        .ok_or_else(|| ProcessError::msg(format!("kind `{}`: the program is empty", spec.kind)))?;
    let mut command = Command::new(program);
    command.args(args).env("TASKFARM_WORKER", &ctx.location().worker).env("TASKFARM_RESULT_DIR", ctx.result_dir());
    let started = Instant::now();
    let child = LineChild::spawn(command, !taskfarm::process_tools::in_child()).map_err(|e| {
        let reason = format!("the program {} of kind `{}` could not be started: {e}", spec.label, spec.kind);
        set_start_state(&spec.argv, StartState::Failed(reason.clone()));
        ProcessError::cannot_run(reason)
    })?;
    let mut slot = Slot { argv: spec.argv.clone(), child, ready: !spec.ready_line, last_failed: None };
    if !spec.ready_line {
        return Ok(slot);
    }
    let deadline = spec.startup_timeout.map(|t| started + t);
    loop {
        let event = slot.child.exchange(b"", deadline);
        match event {
            Ok(LineEvent::Line(line)) if is_ready_line(&line) => break,
            Ok(LineEvent::Line(line)) => {
                tracing::warn!(
                    target: "taskfarm_worker::jsonl",
                    "the program {} wrote a line before its ready line (ignored): {}",
                    spec.label,
                    quote(&line)
                );
            }
            Ok(LineEvent::Overlong) => {
                tracing::warn!(target: "taskfarm_worker::jsonl", "the program {} wrote an overlong line before its ready line (ignored)", spec.label)
            }
            Ok(LineEvent::Exited(status)) => {
                return Err(start_failed(
                    spec,
                    &mut slot.child,
                    format!("{} before it was ready", taskfarm::process_tools::describe_exit(&status)),
                ))
            }
            Ok(LineEvent::TimedOut) => {
                let _ = slot.child.kill();
                let limit = spec.startup_timeout.map(taskfarm::run_control::format_duration).unwrap_or_default();
                return Err(start_failed(
                    spec,
                    &mut slot.child,
                    format!("was not ready within {limit} (startup_timeout)"),
                ));
            }
            Err(e) => return Err(start_failed(spec, &mut slot.child, format!("could not be read from: {e}"))),
        }
    }
    let took = started.elapsed();
    ctx.exclude_setup(took);
    slot.ready = true;
    set_start_state(&spec.argv, StartState::Ready);
    tracing::info!(
        target: "taskfarm_worker::jsonl",
        "started the program {} (pid {}) for {}: ready in {:.3} s",
        spec.label,
        slot.child.id(),
        ctx.location().worker,
        took.as_secs_f64()
    );
    Ok(slot)
}

/// The error of a program that failed before it was ready: the run's one error if no
/// program of this spec was ever ready in this worker, otherwise a crash of the process.
fn start_failed(spec: &ProgramSpec, child: &mut LineChild, what: String) -> ProcessError {
    let stderr = child.take_stderr();
    let tail = text_tail(&String::from_utf8_lossy(&stderr), STDERR_TAIL_LINES, STDERR_TAIL_BYTES);
    let last = tail.lines().next_back().unwrap_or_default().trim();
    let said = if last.is_empty() { String::new() } else { format!(": {last}") };
    let reason = format!("the program {} of kind `{}` {what}{said}", spec.label, spec.kind);
    if matches!(start_state(&spec.argv), Some(StartState::Ready)) {
        return ProcessError::msg(reason).with_stderr_tail(tail);
    }
    set_start_state(&spec.argv, StartState::Failed(reason.clone()));
    ProcessError::cannot_run(reason).with_stderr_tail(tail)
}

fn is_ready_line(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    matches!(json::parse(&text), Ok(Value::Map(map)) if map.contains_key("ready") && !map.contains_key("id"))
}

/// A line of output, quoted for a message: at most [`QUOTED_LINE`] characters.
fn quote(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let cut: String = text.chars().take(QUOTED_LINE).collect();
    if cut.len() < text.len() {
        format!("`{cut}...`")
    } else {
        format!("`{cut}`")
    }
}

/// The request line of the process of `ctx` (see `PROTOCOL.md`).
fn request(spec: &ProgramSpec, ctx: &ProcessContext<'_>) -> String {
    let mut line = String::with_capacity(128 + spec.constants_json.len());
    line.push_str("{\"id\":");
    line.push_str(&ctx.id().to_string());
    line.push_str(",\"run\":");
    line.push_str(&ctx.run().to_string());
    line.push_str(",\"params\":");
    json::write(&Value::Map(ctx.params().clone()), &mut line);
    line.push_str(",\"constants\":");
    line.push_str(&spec.constants_json);
    line.push_str(",\"worker\":");
    json::write_str(&ctx.location().worker, &mut line);
    let scratch = ctx.result_dir().join("scratch").join(ctx.id().to_string());
    line.push_str(",\"result_dir\":");
    json::write_str(&ctx.result_dir().to_string_lossy(), &mut line);
    line.push_str(",\"scratch_dir\":");
    json::write_str(&scratch.to_string_lossy(), &mut line);
    line.push_str("}\n");
    line
}

/// Sends the process of `ctx` to the slot's program and reads its reply.
fn exchange(spec: &ProgramSpec, slot: &mut Slot, ctx: &ProcessContext<'_>) -> Result<Value, Failure> {
    let _ = slot.child.take_stderr();
    // The timeout counts from here: the program's start-up is not the process's time.
    let deadline = ctx.deadline().map(|d| d + ctx.setup_time());
    let mut input = request(spec, ctx).into_bytes();
    loop {
        let event = slot.child.exchange(&input, deadline);
        input.clear();
        let line = match event {
            Ok(LineEvent::Line(line)) => line,
            Ok(LineEvent::Exited(status)) => {
                let what = format!("{} while it ran this process", taskfarm::process_tools::describe_exit(&status));
                if !slot.ready {
                    return Err(Failure(start_failed(spec, &mut slot.child, what), false));
                }
                return Err(fail(spec, slot, what, false));
            }
            Ok(LineEvent::TimedOut) => {
                let _ = slot.child.kill();
                let tail = stderr_tail(&mut slot.child);
                let reason = format!(
                    "ran past its timeout: the program {} was killed with its process group (it is started again \
                     for the next process)",
                    spec.label
                );
                return Err(Failure(ProcessError::timed_out(reason).with_stderr_tail(tail), false));
            }
            Ok(LineEvent::Overlong) => {
                let what = format!("wrote a line longer than {} MiB", taskfarm::process_tools::MAX_LINE >> 20);
                return Err(fail(spec, slot, what, false));
            }
            Err(e) => return Err(fail(spec, slot, format!("could not be written to or read from: {e}"), false)),
        };
        if !slot.ready && is_ready_line(&line) {
            // A ready line from a program not asked to wait for one: taken, not a reply.
            continue;
        }
        let text = String::from_utf8_lossy(&line);
        let reply = match json::parse(&text) {
            Ok(Value::Map(map)) => map,
            Ok(_) => {
                return Err(fail(
                    spec,
                    slot,
                    format!("wrote a line that is not a JSON object: {}", quote(&line)),
                    false,
                ))
            }
            Err(e) => {
                return Err(fail(spec, slot, format!("wrote a line that is not JSON ({e}): {}", quote(&line)), false))
            }
        };
        if reply.get("id").and_then(Value::as_u64) != Some(ctx.id()) {
            let what = format!("answered process {} with a line of another id: {}", ctx.id(), quote(&line));
            return Err(fail(spec, slot, what, false));
        }
        if !slot.ready {
            slot.ready = true;
            set_start_state(&spec.argv, StartState::Ready);
        }
        return match (reply.get("error"), reply.get("output")) {
            (Some(error), _) => {
                let message = error.as_str().map_or_else(|| error.to_string(), str::to_owned);
                let tail = stderr_tail(&mut slot.child);
                Err(Failure(ProcessError::msg(message).with_stderr_tail(tail), true))
            }
            (None, Some(output)) => Ok(output.clone()),
            (None, None) => Ok(Value::Map(Params::new())),
        };
    }
}

/// A crash of the process because its program failed: the program is killed unless `keep`.
fn fail(spec: &ProgramSpec, slot: &mut Slot, what: String, keep: bool) -> Failure {
    if !keep {
        let _ = slot.child.kill();
    }
    let tail = stderr_tail(&mut slot.child);
    Failure(ProcessError::msg(format!("the program {} {what}", spec.label)).with_stderr_tail(tail), keep)
}

fn stderr_tail(child: &mut LineChild) -> String {
    text_tail(&String::from_utf8_lossy(&child.take_stderr()), STDERR_TAIL_LINES, STDERR_TAIL_BYTES)
}

/// Reads the `constants` table of a spec as a JSON object.
pub(crate) fn constants(config: &Params) -> Result<(Params, String), KindError> {
    let table = match config.get("constants") {
        None => Params::new(),
        Some(Value::Map(map)) => map.clone(),
        Some(other) => {
            return Err(KindError::at(
                "constants",
                format!("`constants` must be a table, such as [constants] followed by data = \"x.npy\", not {other}"),
            ))
        }
    };
    let mut json_text = String::new();
    json::write(&Value::Map(table.clone()), &mut json_text);
    Ok((table, json_text))
}

/// Reads an optional duration field such as `startup_timeout = "5m"`.
pub(crate) fn duration_field(config: &Params, key: &str) -> Result<Option<Duration>, KindError> {
    let wrong = |why: String| KindError::at(key, format!("`{key}`: {why}"));
    match config.get(key) {
        None => Ok(None),
        Some(Value::Str(text)) => taskfarm::run_control::parse_duration(text).map(Some).map_err(wrong),
        Some(value) => match value.as_f64().and_then(taskfarm::run_control::seconds_to_duration) {
            Some(d) => Ok(Some(d)),
            None => Err(wrong(format!("{value} is not a positive number of seconds"))),
        },
    }
}

/// The built-in `jsonl` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonlKind;

const FIELDS: [&str; 4] = ["program", "ready", "startup_timeout", "constants"];

impl JsonlKind {
    fn spec(config: &Params) -> Result<ProgramSpec, KindError> {
        let wrong = || {
            KindError::at(
                "program",
                "`program` must be a non-empty list of strings, such as [\"python3\", \"sim.py\"], or one string to \
                 run with sh -c",
            )
        };
        let argv: Vec<String> = match config.get("program") {
            None => {
                return Err(KindError::new(
                    "kind `jsonl` needs a `program` field, such as program = [\"python3\", \"sim.py\"]",
                ))
            }
            Some(Value::Str(line)) if !line.trim().is_empty() => vec!["sh".into(), "-c".into(), line.clone()],
            Some(Value::List(items)) if !items.is_empty() => {
                items.iter().map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong)).collect::<Result<_, _>>()?
            }
            Some(_) => return Err(wrong()),
        };
        let ready_line = match config.get("ready") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(KindError::at("ready", format!("`ready` must be true or false, not {other}"))),
        };
        let (_, constants_json) = constants(config)?;
        Ok(ProgramSpec {
            label: format!("`{}`", argv.join(" ")),
            argv,
            kind: "jsonl",
            ready_line,
            startup_timeout: duration_field(config, "startup_timeout")?,
            constants_json,
        })
    }
}

/// Whether `program` names a program that exists: a path to a file, or a name on `PATH`.
pub(crate) fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

impl Kind for JsonlKind {
    fn takes_constants(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        "jsonl"
    }

    fn help(&self) -> &str {
        "a long-lived program per worker slot, one JSON line in and out per process (see PROTOCOL.md), e.g. \
         program = [\"python3\", \"sim.py\"]"
    }

    fn enforces_timeout(&self) -> bool {
        true
    }

    fn validate(&self, spec: &KindSpec<'_>) -> Result<(), KindError> {
        check_keys("jsonl", spec.config, &FIELDS)?;
        let program = Self::spec(spec.config)?;
        if let Some(name) = program.argv.first().filter(|p| !program_exists(p)) {
            return Err(KindError::at("program", format!("the program `{name}` of `program` is not found")));
        }
        Ok(())
    }

    fn run(&self, config: &Params, ctx: &ProcessContext<'_>) -> Result<Value, ProcessError> {
        let spec = Self::spec(config).map_err(|e| ProcessError::msg(e.message))?;
        Pool::run(&spec, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use taskfarm::backend::Location;

    fn config(program: &str, ready: bool) -> Params {
        [("program".to_owned(), Value::from(program)), ("ready".to_owned(), Value::Bool(ready))].into_iter().collect()
    }

    fn run(config: &Params, id: u64, params: &Params, timeout: Option<Duration>) -> Result<Value, ProcessError> {
        let here = Location::here("test");
        let ctx = ProcessContext::new(id, 0, params, Path::new("/tmp"), &here)
            .with_deadline(timeout.map(|t| Instant::now() + t));
        JsonlKind.run(config, &ctx)
    }

    /// A shell program that answers every request with its pid, or as the parameter `do` says.
    const ECHO: &str = r#"echo '{"ready": true}'; while read -r line; do
        id=${line#*\"id\":}; id=${id%%,*}
        case "$line" in
          *'"do":"exit"'*) echo dying >&2; exit 7 ;;
          *'"do":"junk"'*) echo 'not json' ;;
          *'"do":"fail"'*) echo oops >&2; echo "{\"id\": $id, \"error\": \"failed on purpose\"}" ;;
          *'"do":"sleep"'*) sleep 30 ;;
          *) echo "{\"id\": $id, \"output\": {\"pid\": $$}}" ;;
        esac
    done"#;

    fn with(what: &str) -> Params {
        [("do".to_owned(), Value::from(what))].into_iter().collect()
    }

    fn pid_of(value: Value) -> i64 {
        let Value::Map(map) = value else { panic!("a map: {value:?}") };
        map["pid"].as_i64().expect("a pid")
    }

    #[test]
    fn one_program_serves_many_processes_and_faults_cost_one_process() {
        // Distinct argv per test: the start states are per argv in this test program.
        let config = config(&format!("{ECHO} # faults"), true);
        let first = pid_of(run(&config, 1, &Params::new(), None).unwrap());
        assert_eq!(pid_of(run(&config, 2, &Params::new(), None).unwrap()), first, "the same program");
        // An error reply: crashed, with its stderr; a retry of it runs on a fresh program.
        let err = run(&config, 3, &with("fail"), None).unwrap_err();
        assert_eq!(err.reason, "failed on purpose");
        assert_eq!(err.stderr_tail.as_deref(), Some("oops"));
        let again = pid_of(run(&config, 3, &Params::new(), None).unwrap());
        assert_ne!(again, first, "a retry runs on a fresh instance");
        // The program exits: that process crashes with the status, the next one runs.
        let err = run(&config, 4, &with("exit"), None).unwrap_err();
        assert!(err.reason.contains("exited with status 7") && !err.reason.contains(CANNOT), "{err}");
        assert_eq!(err.stderr_tail.as_deref(), Some("dying"));
        let after_exit = pid_of(run(&config, 5, &Params::new(), None).unwrap());
        assert_ne!(after_exit, again);
        // A malformed line names it, and the program is replaced.
        let err = run(&config, 6, &with("junk"), None).unwrap_err();
        assert!(err.reason.contains("`not json`"), "{err}");
        assert_ne!(pid_of(run(&config, 7, &Params::new(), None).unwrap()), after_exit);
        // A timeout kills the program, and the next process gets a new one.
        let err = run(&config, 8, &with("sleep"), Some(Duration::from_millis(300))).unwrap_err();
        assert!(err.timed_out && err.reason.contains("ran past its timeout"), "{err}");
        pid_of(run(&config, 9, &Params::new(), None).unwrap());
    }

    const CANNOT: &str = taskfarm::process_tools::CANNOT_RUN_MARK;

    #[test]
    fn a_program_that_exits_at_start_up_is_one_error() {
        let config = config("echo 'no such module' >&2; exit 1 # start-up", true);
        let err = run(&config, 0, &Params::new(), None).unwrap_err();
        assert!(err.reason.starts_with(CANNOT), "{err}");
        assert!(err.reason.contains("exited with status 1 before it was ready: no such module"), "{err}");
        // Every later process fails at once with the same reason, without a new start.
        let again = run(&config, 1, &Params::new(), None).unwrap_err();
        assert_eq!(again.reason, err.reason);
        let missing: Params = [("program".to_owned(), Value::List(vec![Value::from("/nonexistent/taskfarm-prog")]))]
            .into_iter()
            .collect();
        let err = run(&missing, 0, &Params::new(), None).unwrap_err();
        assert!(err.reason.starts_with(CANNOT) && err.reason.contains("could not be started"), "{err}");
    }

    #[test]
    fn requests_carry_everything_and_outputs_keep_their_values() {
        let config = config(
            r#"while read -r line; do id=${line#*\"id\":}; id=${id%%,*}; printf '{"id": %s, "output": {"x": NaN, "echo": %s}}\n' "$id" "$line"; done"#,
            false,
        );
        let params: Params = [("a".to_owned(), Value::Float(f64::INFINITY)), ("s".to_owned(), Value::from("x\"y\n"))]
            .into_iter()
            .collect();
        let Value::Map(out) = run(&config, 5, &params, None).unwrap() else { panic!("a map") };
        assert!(matches!(out["x"], Value::Float(f) if f.is_nan()));
        let Value::Map(echo) = &out["echo"] else { panic!("the request") };
        assert_eq!(echo["id"], Value::Int(5));
        assert_eq!(echo["params"], Value::Map(params));
        assert_eq!(echo["constants"], Value::Map(Params::new()));
        assert_eq!(echo["scratch_dir"], Value::from("/tmp/scratch/5"));
    }

    #[test]
    fn validation_checks_the_fields() {
        let check = |config: Params| {
            let first = Params::new();
            JsonlKind.validate(&KindSpec { config: &config, parameter_names: &[], first: &first })
        };
        assert!(check(config("cat", false)).is_ok());
        let missing: Params =
            [("program".to_owned(), Value::List(vec![Value::from("no-such-program-xyz")]))].into_iter().collect();
        assert!(check(missing).unwrap_err().message.contains("not found"));
        let mut bad = config("cat", false);
        bad.insert("startup_timeout".into(), Value::from("soon"));
        assert_eq!(check(bad).unwrap_err().key.as_deref(), Some("startup_timeout"));
        let mut bad = config("cat", false);
        bad.insert("colour".into(), Value::Int(1));
        assert_eq!(check(bad).unwrap_err().key.as_deref(), Some("colour"));
    }
}
