//! How a backend runs one job with the operation's reliability options: per-process
//! `timeout`, `retries` and `isolation` (`thread` or `subprocess`), and the process-wide
//! stop flag that Ctrl-C sets. Every backend calls [`execute_job`], so serial, local and MPI
//! behave alike.
//!
//! **Subprocess isolation.** Each attempt runs in a child of the current executable: the
//! child is the same program started again with the environment variable
//! `TASKFARM_CHILD=1`; it reads the job on stdin, runs it through [`run_job`], writes the
//! record on stdout and exits. So the program's `main` must call
//! [`run_child_if_requested`] first, before anything else (the `taskfarm-worker` binary and
//! `taskfarm_worker::main_with` do it). A segfault, an abort, `std::process::exit` or an
//! out-of-memory kill inside a process then costs only that process: it is recorded as
//! crashed with the signal's name or the exit status. The child runs in a process group of
//! its own, killed as a whole when the process passes its timeout.
//!
//! **Timeouts in thread isolation** cannot be enforced (a thread cannot be killed): the
//! process is given the deadline ([`ProcessContext::deadline`](crate::ProcessContext::deadline))
//! and a process that honours it, such as the worker's `command` kind (it kills its child
//! process group), stops in time; a result that comes after the deadline is recorded as
//! timed out all the same.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::record::run_attempt;
use crate::{run_job_with, Job, Location, Process, ProcessRecord, Status, Value};

/// Where a process runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    /// In a thread of the worker (the default): cheap; a panic is caught, but a segfault or
    /// an abort takes the worker down, and a timeout cannot be enforced.
    #[default]
    Thread,
    /// In a child of the worker program, one per attempt: a crash costs only that process
    /// and a timeout kills it (and its process group).
    Subprocess,
}

impl Isolation {
    /// The word used in spec files and `operation.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Thread => "thread",
            Isolation::Subprocess => "subprocess",
        }
    }

    /// Reads `thread` or `subprocess`; the error is a sentence.
    pub fn parse(text: &str) -> Result<Isolation, String> {
        match text {
            "thread" => Ok(Isolation::Thread),
            "subprocess" => Ok(Isolation::Subprocess),
            other => Err(format!("`isolation` must be \"thread\" or \"subprocess\", not \"{other}\"")),
        }
    }
}

/// The reliability options of an operation (see the [module docs](self)), and how many
/// threads each process takes. Serde is for backends that send them to their workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunOptions {
    /// How long one attempt of a process may run; `None`: no limit.
    pub timeout: Option<Duration>,
    /// How many more times a crashed or timed-out process is run.
    pub retries: u32,
    /// Where each attempt runs.
    pub isolation: Isolation,
    /// How many threads of its worker each process occupies (default 1; 0 counts as 1): a
    /// backend with a pool of threads reserves that many slots for it, and the process sees
    /// the number in [`ProcessContext::threads`](crate::ProcessContext::threads).
    pub threads: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions { timeout: None, retries: 0, isolation: Isolation::Thread, threads: 1 }
    }
}

impl RunOptions {
    /// The threads each process occupies, at least 1.
    pub fn process_threads(&self) -> usize {
        self.threads.max(1)
    }
}

/// Reads a duration: a number of seconds (`30`, `1.5`) or a number with a unit
/// (`250ms`, `30s`, `5m`, `2h`). The error is a sentence.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 0.001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => f64::NAN,
    };
    let value: f64 = number.parse().unwrap_or(f64::NAN);
    seconds_to_duration(value * scale).ok_or_else(|| {
        format!(
            "`{text}` is not a duration: write a positive number of seconds below {MAX_TIMEOUT_SECONDS:e}, or e.g. \
             \"250ms\", \"30s\", \"5m\", \"2h\""
        )
    })
}

/// The longest timeout, in seconds (exclusive; about 31,700 years): far beyond any run, and
/// far from where adding it to a clock's reading could overflow.
pub const MAX_TIMEOUT_SECONDS: f64 = 1e12;

/// A positive, finite number of seconds below [`MAX_TIMEOUT_SECONDS`] as a duration.
pub fn seconds_to_duration(seconds: f64) -> Option<Duration> {
    (seconds.is_finite() && seconds > 0.0 && seconds < MAX_TIMEOUT_SECONDS).then(|| Duration::from_secs_f64(seconds))
}

/// A duration as spec files write it, e.g. `30s` or `0.25s`.
pub fn format_duration(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

static STOP: AtomicU8 = AtomicU8::new(0);

/// Asks every backend of this program to stop pulling jobs (a first Ctrl-C): processes
/// already running finish and are recorded. A second request means "stop now": records
/// that arrive after it are not journaled (those processes run again on `--resume`).
/// Returns how many times a stop has been requested.
pub fn request_stop() -> u8 {
    STOP.fetch_add(1, Ordering::SeqCst).saturating_add(1)
}

/// Whether a stop was requested (see [`request_stop`]).
pub fn stop_requested() -> bool {
    STOP.load(Ordering::SeqCst) > 0
}

/// Whether a second stop ("stop now") was requested.
pub fn stop_now_requested() -> bool {
    STOP.load(Ordering::SeqCst) > 1
}

/// Runs `job` with `options`: in this thread or in a child, again after a crash or a timeout
/// up to `options.retries` times. The record's `attempts` counts the attempts; when more than
/// one failed, `reason` lists every attempt's reason (`attempt 1: ...; attempt 2: ...`).
/// The job's params move into the record.
pub fn execute_job<P: Process>(job: Job<P>, dir: &Path, location: &Location, options: &RunOptions) -> ProcessRecord {
    let mut reasons: Vec<String> = Vec::new();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let mut record = match options.isolation {
            Isolation::Thread => {
                let deadline = options.timeout.map(|t| Instant::now() + t);
                let mut record = run_attempt(&job, dir, location, deadline, options.process_threads());
                if let (Some(timeout), Status::Finished) = (options.timeout, record.status) {
                    if record.duration_s > timeout.as_secs_f64() {
                        record.status = Status::TimedOut;
                        record.output = Value::Null;
                        record.reason = Some(timed_out_reason(timeout));
                    }
                }
                record
            }
            Isolation::Subprocess => run_in_child(&job, dir, location, options.timeout, options.process_threads()),
        };
        if record.status == Status::Finished || attempt > options.retries {
            close_attempts(&mut record, reasons);
            record.params = job.params;
            return record;
        }
        reasons.push(attempt_reason(&mut record));
    }
}

/// Takes the reason a failed attempt is remembered by, until the process's last attempt
/// closes its record ([`close_attempts`]).
pub fn attempt_reason(failed: &mut ProcessRecord) -> String {
    failed.reason.take().unwrap_or_else(|| "no reason given".into())
}

/// Closes the record of a process's last attempt, given the reasons of the attempts that
/// failed before it: `attempts` counts them all and, when any failed before, `reason` lists
/// every attempt's reason (`attempt 1: ...; attempt 2: ...`). [`execute_job`] closes its
/// records with it, and so does the MPI master, which runs each retry on another rank: a
/// retried process's row reads the same whichever backend ran it.
pub fn close_attempts(record: &mut ProcessRecord, mut earlier: Vec<String>) {
    record.attempts = u32::try_from(earlier.len() + 1).unwrap_or(u32::MAX);
    if earlier.is_empty() {
        return;
    }
    if let Some(last) = record.reason.take() {
        earlier.push(last);
    }
    let listed: Vec<String> = earlier.iter().enumerate().map(|(i, r)| format!("attempt {}: {r}", i + 1)).collect();
    record.reason = Some(listed.join("; "));
}

fn timed_out_reason(timeout: Duration) -> String {
    format!("timed out after {}", format_duration(timeout))
}

/// The environment variable that makes a program a child of subprocess isolation.
pub const CHILD_ENV: &str = "TASKFARM_CHILD";
/// The arguments a child is started with. A program's `main` ignores them (it calls
/// [`run_child_if_requested`] first); a Rust test binary runs only its test of this name,
/// which calls [`run_child_if_requested`] — so subprocess isolation is testable in tests.
pub const CHILD_ARGS: [&str; 3] = ["__taskfarm_child", "--exact", "--nocapture"];
/// The line before the record on a child's stdout (a process may print to stdout too).
const RECORD_MARK: &str = "\n@taskfarm-record@ ";

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
fn run_in_child<P: Process>(
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
    let deadline = timeout.map(|t| clock + t);
    match run_with_deadline(command, Some(input), deadline, true) {
        Err(e) => crashed(Status::Crashed, format!("the subprocess could not be started: {e}"), None),
        Ok(outcome) => {
            let stdout = String::from_utf8_lossy(&outcome.stdout);
            // The child's log records, also those of a child that crashed.
            crate::oplog::append_forwarded(&crate::oplog::child_records(&stdout));
            let tail = Some(tail_of(&String::from_utf8_lossy(&outcome.stderr))).filter(|t| !t.is_empty());
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
                        _ => crashed(Status::Crashed, format!("its subprocess {}", describe_exit(&status)), tail),
                    }
                }
            }
        }
    }
}

/// What a child came to: its exit status (`None` when it was killed at the deadline) and
/// its output.
#[derive(Debug)]
pub struct ChildOutcome {
    /// How it ended; `None` when it passed the deadline and its process group was killed.
    pub status: Option<ExitStatus>,
    /// Everything it wrote on stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote on stderr.
    pub stderr: Vec<u8>,
}

/// Starts `command` (stdout and stderr captured, `input` on stdin or stdin closed), in a
/// process group of its own when `own_group`, and waits for it until `deadline`: past it,
/// the whole process group is killed (SIGKILL) and the outcome's `status` is `None`.
/// (`process_group(0)` keeps spawning on the fast `posix_spawn` path.)
pub fn run_with_deadline(
    mut command: Command,
    input: Option<Vec<u8>>,
    deadline: Option<Instant>,
    own_group: bool,
) -> std::io::Result<ChildOutcome> {
    command
        .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    #[cfg(unix)]
    if own_group {
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
    }
    let mut child = command.spawn()?;
    let _live = own_group.then(|| LiveGroup::new(child.id()));
    let writer = match (input, child.stdin.take()) {
        (Some(bytes), Some(mut stdin)) => Some(std::thread::spawn(move || {
            // A child that exits early closes its stdin: that is its business, not an error here.
            let _ = stdin.write_all(&bytes);
        })),
        _ => None,
    };
    let stdout = child.stdout.take().map(read_all_in_background);
    let stderr = child.stderr.take().map(read_all_in_background);
    let status = wait_until(&mut child, deadline, own_group)?;
    let collect = |reader: Option<std::thread::JoinHandle<Vec<u8>>>| {
        reader.map(|r| r.join().unwrap_or_default()).unwrap_or_default()
    };
    let outcome = ChildOutcome { status, stdout: collect(stdout), stderr: collect(stderr) };
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    Ok(outcome)
}

/// Process groups of running children (those made by [`run_with_deadline`]).
static LIVE_GROUPS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());

/// Keeps a child's process group in [`LIVE_GROUPS`] while it lives.
struct LiveGroup(u32);

impl LiveGroup {
    fn new(pgid: u32) -> Self {
        LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner).insert(pgid);
        LiveGroup(pgid)
    }
}

impl Drop for LiveGroup {
    fn drop(&mut self) {
        LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner).remove(&self.0);
    }
}

/// Kills (SIGKILL) the process group of every running command and subprocess this program
/// started through [`run_with_deadline`]: "stop now" after a second Ctrl-C.
pub fn kill_running_children() {
    let groups: Vec<u32> = LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner).iter().copied().collect();
    #[cfg(unix)]
    for pgid in groups {
        if let Some(pid) = i32::try_from(pgid).ok().and_then(rustix::process::Pid::from_raw) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
}

fn read_all_in_background(mut from: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = from.read_to_end(&mut bytes);
        bytes
    })
}

/// Waits for `child` until `deadline`; past it kills the child (and its group) and reaps it.
fn wait_until(child: &mut Child, deadline: Option<Instant>, own_group: bool) -> std::io::Result<Option<ExitStatus>> {
    let Some(deadline) = deadline else { return child.wait().map(Some) };
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        let now = Instant::now();
        if now >= deadline {
            kill_tree(child, own_group);
            child.wait()?;
            return Ok(None);
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Kills a child with SIGKILL: its whole process group when it leads one.
fn kill_tree(child: &mut Child, own_group: bool) {
    #[cfg(unix)]
    if own_group {
        let pid = i32::try_from(child.id()).ok().and_then(rustix::process::Pid::from_raw);
        if let Some(pid) = pid {
            if rustix::process::kill_process_group(pid, rustix::process::Signal::KILL).is_ok() {
                return;
            }
        }
    }
    let _ = child.kill();
}

/// "exited with status 3" or "was killed by signal 11 (SIGSEGV)".
pub fn describe_exit(status: &ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exited with status {code}");
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(signal) = status.signal() {
            let name = signal_name(signal).map(|n| format!(" ({n})")).unwrap_or_default();
            let oom = if signal == 9 { ", as the out-of-memory killer does" } else { "" };
            return format!("was killed by signal {signal}{name}{oom}");
        }
    }
    format!("ended with {status}")
}

/// The name of a Linux signal number, for the common ones.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        _ => return None,
    })
}

/// The last lines of a child's stderr kept in a crash record.
fn tail_of(text: &str) -> String {
    text_tail(text.trim_end(), 20, 4096)
}

/// The last `lines` lines of `text` (without trailing newlines), at most `bytes` long (cut
/// at a character boundary, marked with `...`): what crash records keep of a stderr, and
/// what the `command` kind keeps of a stdout.
pub fn text_tail(text: &str, lines: usize, bytes: usize) -> String {
    let text = text.trim_end_matches(['\n', '\r']);
    // From the end, only as far as the lines kept (a command may print megabytes).
    let mut last: Vec<&str> = text.lines().rev().take(lines).collect();
    last.reverse();
    let mut kept = last.join("\n");
    if kept.len() > bytes {
        let mut cut = kept.len() - bytes;
        while !kept.is_char_boundary(cut) {
            cut += 1;
        }
        kept = format!("...{}", &kept[cut..]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Params, ProcessContext, ProcessError};

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "soon", "-3s", "0", "3 weeks", "1.2.3s", "s"] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
        assert_eq!(parse_duration(&format_duration(Duration::from_millis(2500))), Ok(Duration::from_millis(2500)));
    }

    #[test]
    fn isolation_words() {
        assert_eq!(Isolation::parse("subprocess"), Ok(Isolation::Subprocess));
        assert!(Isolation::parse("fork").unwrap_err().contains("\"thread\" or \"subprocess\""));
    }

    #[derive(Serialize, Deserialize)]
    struct Flaky;

    impl Process for Flaky {
        type Output = u32;
        fn run(&self, ctx: &ProcessContext<'_>) -> Result<u32, ProcessError> {
            let dir = ctx.result_dir().join(format!("attempt-{}", ctx.id()));
            let n = std::fs::read_to_string(&dir).ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(0) + 1;
            std::fs::write(&dir, n.to_string()).map_err(ProcessError::from)?;
            if n < 3 {
                return Err(ProcessError::msg(format!("failure {n}")));
            }
            Ok(n)
        }
    }

    #[test]
    fn retries_run_again_and_keep_every_reason() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_owned();
        let here = Location::here("test");
        let job = |id| Job { id, run: 0, params: Params::new(), process: Flaky };
        let options = RunOptions { retries: 2, ..RunOptions::default() };
        let record = execute_job(job(0), &dir, &here, &options);
        assert_eq!((record.status, record.attempts), (Status::Finished, 3));
        assert_eq!(record.reason.as_deref(), Some("attempt 1: failure 1; attempt 2: failure 2"));
        let options = RunOptions { retries: 1, ..RunOptions::default() };
        let record = execute_job(job(1), &dir, &here, &options);
        assert_eq!((record.status, record.attempts), (Status::Crashed, 2));
        assert_eq!(record.reason.as_deref(), Some("attempt 1: failure 1; attempt 2: failure 2"));
    }

    #[test]
    fn a_child_past_its_deadline_is_killed_with_its_group() {
        let mut command = Command::new("sh");
        command.args(["-c", "sleep 30 & sleep 30"]);
        let deadline = Instant::now() + Duration::from_millis(200);
        let outcome = run_with_deadline(command, None, Some(deadline), true).unwrap();
        assert!(outcome.status.is_none(), "the child was killed at its deadline");
        let mut command = Command::new("sh");
        command.args(["-c", "echo out; echo err >&2; kill -SEGV $$"]);
        let outcome = run_with_deadline(command, None, None, true).unwrap();
        let status = outcome.status.unwrap();
        assert_eq!(describe_exit(&status), "was killed by signal 11 (SIGSEGV)");
        assert_eq!((outcome.stdout.as_slice(), outcome.stderr.as_slice()), (&b"out\n"[..], &b"err\n"[..]));
    }
}
