//! Subprocess isolation: each attempt of a process runs in a child of the current
//! executable, the same program started again with `TASKFARM_CHILD=1`. The child reads the
//! job on stdin (JSON), runs it through [`run_job_with`], writes the record on stdout after
//! a mark line and exits (a process's kept output and its log records go before it, each
//! after a mark of its own). So the program's `main` must call [`run_child_if_requested`]
//! first, before anything else (the `taskfarm-worker` binary and `taskfarm_worker::main_with`
//! do it). A segfault, an abort, `std::process::exit` or an out-of-memory kill inside a
//! process then costs only that process: it is recorded as crashed with the signal's name
//! or the exit status. The child runs in a process group of its own (see [`crate::child`]),
//! killed as a whole at the deadline, when the child exits, and when the parent dies.
//!
//! **A program that forgot [`run_child_if_requested`]** would run its whole `main` again in
//! every child, start the operation again there, and so on without end. A program started
//! as a child therefore never starts an operation: `stage_in` refuses with
//! [`Error::OperationInChild`] and tells the parent so on stdout; the parent then stops
//! starting children and the run fails with [`Error::ChildWithoutEntry`] (under MPI, the
//! master fails the run on the first record from a worker that says so).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::child::{describe_exit, run_with_deadline};
use crate::execute::{seconds_to_duration, text_tail, timed_out_reason};
use crate::{run_job_with, Error, Job, Location, Process, ProcessRecord, Result, Status, Value};

/// The environment variable that makes a program a child of subprocess isolation.
pub const CHILD_ENV: &str = "TASKFARM_CHILD";
/// The arguments a child is started with. A program's `main` ignores them (it calls
/// [`run_child_if_requested`] first); a Rust test binary runs only its test of this name,
/// which calls [`run_child_if_requested`] — so subprocess isolation is testable in tests.
pub const CHILD_ARGS: [&str; 3] = ["__taskfarm_child", "--exact", "--nocapture"];
/// The line before the record on a child's stdout (a process may print to stdout too).
const RECORD_MARK: &str = "\n@taskfarm-record@ ";
/// The line a child writes on stdout when its program tried to start an operation.
const REFUSED_MARK: &str = "\n@taskfarm-child-refused-operation@\n";

/// Set when a child said that its program tried to start an operation: no more children
/// start, and the run fails with [`Error::ChildWithoutEntry`].
static CHILDREN_WITHOUT_ENTRY: AtomicBool = AtomicBool::new(false);

/// What a parent sends its child on stdin.
#[derive(Serialize, Deserialize)]
struct ChildRequest<J> {
    /// A `Job<P>` (a reference to one when sent).
    job: J,
    dir: PathBuf,
    location: Location,
    /// Seconds left until the deadline, if any.
    timeout_s: Option<f64>,
    /// Threads the process may use.
    #[serde(default = "one_thread")]
    threads: usize,
}

fn one_thread() -> usize {
    1
}

/// Whether this program is a child of subprocess isolation (it runs one process and exits).
pub fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some_and(|v| v == "1")
}

/// Refuses to start an operation in a child of subprocess isolation: its program's `main`
/// did not call [`run_child_if_requested`] first. Tells the parent on stdout, so that it
/// fails the run instead of starting children that start operations in turn.
pub(crate) fn refuse_operation_in_child() -> Result<()> {
    if !in_child() {
        return Ok(());
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(REFUSED_MARK.as_bytes()).and_then(|()| out.flush());
    Err(Error::OperationInChild)
}

/// Fails when a child said that its program does not call [`run_child_if_requested`]
/// (see the [module docs](self)); the collector checks it before each record.
pub(crate) fn check_children() -> Result<()> {
    if CHILDREN_WITHOUT_ENTRY.load(Ordering::Relaxed) {
        return Err(Error::ChildWithoutEntry);
    }
    Ok(())
}

/// Fails, as [`check_children`] will from now on, when a failed record's `reason` says that
/// its subprocess started the program again: an MPI master learns so from its workers.
pub(crate) fn check_reason(reason: Option<&str>) -> Result<()> {
    if reason.is_some_and(|r| r.contains(&Error::ChildWithoutEntry.to_string())) {
        CHILDREN_WITHOUT_ENTRY.store(true, Ordering::Relaxed);
    }
    check_children()
}

/// In a child of subprocess isolation (`TASKFARM_CHILD=1`), runs the job read from stdin,
/// writes its record on stdout and exits the program; otherwise returns at once. Call it
/// first in `main` of every program that runs operations with `isolation = subprocess`,
/// with the operation's process type:
///
/// ```no_run
/// # use backend_core::*;
/// # #[derive(serde::Serialize, serde::Deserialize)] struct MyProcess;
/// # impl Process for MyProcess { type Output = ();
/// #   fn run(&self, _: &ProcessContext) -> Result<(), ProcessError> { Ok(()) } }
/// fn main() {
///     backend_core::run_child_if_requested::<MyProcess>();
///     // ... build the operation and run it
/// }
/// ```
pub fn run_child_if_requested<P: Process>() {
    if !in_child() {
        return;
    }
    let mut input = Vec::new();
    let code = match std::io::stdin().read_to_end(&mut input) {
        Err(e) => {
            eprintln!("taskfarm child: could not read the job from stdin: {e}");
            3
        }
        Ok(_) => match serde_json::from_slice::<ChildRequest<Job<P>>>(&input) {
            Err(e) => {
                eprintln!("taskfarm child: the job on stdin does not decode ({e}): is the parent the same program?");
                3
            }
            Ok(request) => {
                crate::oplog::to_parent();
                crate::process_output::to_parent();
                let deadline = request.timeout_s.and_then(seconds_to_duration).map(|t| Instant::now() + t);
                let record = run_job_with(&request.job, &request.dir, &request.location, deadline, request.threads);
                match serde_json::to_string(&record) {
                    Ok(json) => {
                        let mut out = std::io::stdout().lock();
                        let written = writeln!(out, "{RECORD_MARK}{json}").and_then(|()| out.flush());
                        if written.is_ok() {
                            0
                        } else {
                            3
                        }
                    }
                    Err(e) => {
                        eprintln!("taskfarm child: the record could not be encoded: {e}");
                        3
                    }
                }
            }
        },
    };
    std::process::exit(code);
}

/// Runs one attempt of `job` in a child of this program (see the [module docs](self)).
pub(crate) fn run_in_child<P: Process>(
    job: &Job<P>,
    dir: &Path,
    location: &Location,
    timeout: Option<Duration>,
    threads: usize,
) -> ProcessRecord {
    let started_at = crate::record::now_s();
    let clock = Instant::now();
    let crashed = |status: Status, reason: String, stderr_tail: Option<String>| ProcessRecord {
        id: job.id,
        run: job.run,
        params: job.params.clone(),
        status,
        output: Value::Null,
        reason: Some(reason),
        stderr_tail,
        attempts: 1,
        started_at,
        duration_s: clock.elapsed().as_secs_f64(),
        location: location.clone(),
    };
    if check_children().is_err() {
        return crashed(Status::Crashed, Error::ChildWithoutEntry.to_string(), None);
    }
    let request = ChildRequest {
        job,
        dir: dir.to_owned(),
        location: location.clone(),
        timeout_s: timeout.map(|t| t.as_secs_f64()),
        threads,
    };
    let input = match serde_json::to_vec(&request) {
        Ok(input) => input,
        Err(e) => {
            return crashed(Status::Crashed, format!("the process could not be sent to its subprocess: {e}"), None)
        }
    };
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(e) => {
            return crashed(
                Status::Crashed,
                format!("the worker program could not be found to start a subprocess: {e}"),
                None,
            )
        }
    };
    let mut command = Command::new(program);
    command.args(CHILD_ARGS).env(CHILD_ENV, "1");
    die_with_parent(&mut command);
    let deadline = timeout.map(|t| clock + t);
    match run_with_deadline(command, Some(input), deadline, true) {
        Err(e) => crashed(Status::Crashed, format!("the subprocess could not be started: {e}"), None),
        Ok(mut outcome) => {
            // The processes' kept output first: its bytes are not the child's text.
            crate::process_output::take_from_child(&mut outcome.stdout, dir);
            let stdout = String::from_utf8_lossy(&outcome.stdout);
            // The child's log records, also those of a child that crashed.
            crate::oplog::append_forwarded(&crate::oplog::child_records(&stdout));
            let tail = Some(tail_of(&String::from_utf8_lossy(&outcome.stderr))).filter(|t| !t.is_empty());
            if stdout.contains(REFUSED_MARK) {
                CHILDREN_WITHOUT_ENTRY.store(true, Ordering::Relaxed);
                return crashed(Status::Crashed, Error::ChildWithoutEntry.to_string(), tail);
            }
            match outcome.status {
                None => crashed(Status::TimedOut, timed_out_reason(timeout.unwrap_or_default()), tail),
                Some(status) => {
                    let record = stdout.rfind(RECORD_MARK).and_then(|at| {
                        serde_json::from_str::<ProcessRecord>(stdout[at + RECORD_MARK.len()..].trim()).ok()
                    });
                    match record {
                        Some(mut record) if status.success() => {
                            if timeout.is_some_and(|t| record.duration_s > t.as_secs_f64()) {
                                record.status = Status::TimedOut;
                                record.output = Value::Null;
                                record.reason = Some(timed_out_reason(timeout.unwrap_or_default()));
                            }
                            record
                        }
                        None if status.success() => crashed(
                            Status::Crashed,
                            "its subprocess exited with status 0 without a record: does the program's `main` call \
                             `run_child_if_requested` first?"
                                .into(),
                            tail,
                        ),
                        _ => crashed(Status::Crashed, format!("its subprocess {}", describe_exit(&status)), tail),
                    }
                }
            }
        }
    }
}

/// Has the kernel kill the child when the thread that starts it dies (which waits for it,
/// so: when this program dies): the guardian covers the child's group, this covers the
/// moment between the child's start and its registration with the guardian.
// A pre_exec hook is unsafe to install.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = rustix::process::getpid();
        // SAFETY: the hook makes two system calls and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
                // The parent died before the call: nobody will send the signal.
                if rustix::process::getppid() != Some(parent) {
                    return Err(rustix::io::Errno::SRCH.into());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// The last lines of a child's stderr kept in a crash record.
fn tail_of(text: &str) -> String {
    text_tail(text.trim_end(), 20, 4096)
}
