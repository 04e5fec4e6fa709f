//! The protocol of the `jsonl` kind: a program per worker slot ([`Pool`]), started (and
//! awaited while it starts up), sent one request line per process and read one reply line,
//! and replaced when it fails (see the [kind's docs](super)).

use std::cell::RefCell;
use std::collections::HashMap;
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use taskfarm::process_tools::{text_tail, LineChild, LineEvent};
use taskfarm::{Params, ProcessContext, ProcessError, Value};

use crate::json;

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

/// The per-thread programs (see the [module docs](super)).
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
    // Not ready until its ready line or, without one, its first reply: a program that dies
    // before either failed to start.
    let mut slot = Slot { argv: spec.argv.clone(), child, ready: false, last_failed: None };
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
    // What the previous process left on stderr is not this one's; a program not ready yet
    // keeps what it said while starting (why it failed, if it does).
    if slot.ready {
        let _ = slot.child.take_stderr();
    }
    // The timeout counts from here: the program's start-up is not the process's time.
    let deadline = ctx.deadline().map(|d| d + ctx.setup_time());
    let mut input = request(spec, ctx).into_bytes();
    loop {
        let event = slot.child.exchange(&input, deadline);
        input.clear();
        let line = match event {
            Ok(LineEvent::Line(line)) => line,
            Ok(LineEvent::Exited(status)) => {
                let exit = taskfarm::process_tools::describe_exit(&status);
                if !slot.ready {
                    let what = format!("{exit} before its first reply");
                    return Err(Failure(start_failed(spec, &mut slot.child, what), false));
                }
                return Err(fail(spec, slot, format!("{exit} while it ran this process"), false));
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
            Err(e) => {
                let what = format!("could not be written to or read from: {e}");
                if !slot.ready {
                    let _ = slot.child.kill();
                    return Err(Failure(start_failed(spec, &mut slot.child, what), false));
                }
                return Err(fail(spec, slot, what, false));
            }
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
