//! Running one child process (a `command`, or a subprocess-isolation child) to its end:
//! [`run_with_deadline`] starts it in a process group of its own, feeds its stdin, reads its
//! stdout and stderr, and makes sure that nothing it started outlives it.
//!
//! - **The child's end is its direct child's exit.** What is left of its output is read for
//!   [`EXIT_GRACE`] (or until the pipes close); then the pipes are closed and the process
//!   group is killed. So `sh -c "sleep 30 & echo 1"` ends at once with output `1`, although
//!   the background `sleep` holds the pipes.
//! - **A deadline kills the whole group** when it passes, whatever holds the pipes.
//! - **Groups are registered while they live** (for "stop now", [`kill_running_children`])
//!   and with the [guardian](crate::guard), a small process that kills every registered
//!   group when this program dies, even by SIGKILL: the children of a killed worker do not
//!   run on under init while `--resume` starts them again.
//!
//! A child that leaves its process group on purpose (`setsid`) is beyond reach.
//!
//! A child that lives for many processes (a persistent interpreter) is run through
//! [`crate::persistent`] instead, with the same process group, registration and guardian.

use std::collections::BTreeMap;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// How long the output of a child is still read after its direct child exited, when
/// something it left behind holds the pipes open.
pub const EXIT_GRACE: Duration = Duration::from_millis(200);

/// What a child came to: its exit status (`None` when it was killed at the deadline) and
/// its output.
#[derive(Debug)]
pub struct ChildOutcome {
    /// How it ended; `None` when it passed the deadline and its process group was killed.
    pub status: Option<ExitStatus>,
    /// What it wrote on stdout.
    pub stdout: Vec<u8>,
    /// What it wrote on stderr.
    pub stderr: Vec<u8>,
}

/// Starts `command` (stdout and stderr captured, `input` on stdin or stdin closed), in a
/// process group of its own when `own_group`, and waits for its direct child to exit or
/// `deadline` to pass; past the deadline the whole group is killed (SIGKILL) and the
/// outcome's `status` is `None`. After the exit, output is read for [`EXIT_GRACE`] more at
/// most, then the group is killed.
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
    if own_group {
        // Before the first child: the guardian watches every group from its start.
        crate::guard::start();
    }
    let mut child = command.spawn()?;
    let _live = own_group.then(|| LiveGroup::new(child.id()));
    #[cfg(unix)]
    {
        unix::run(&mut child, input, deadline, own_group)
    }
    #[cfg(not(unix))]
    {
        fallback::run(&mut child, input, deadline)
    }
}

/// Process groups of running children (those made by [`run_with_deadline`]), with the
/// thread that started each.
static LIVE_GROUPS: Mutex<BTreeMap<u32, ThreadId>> = Mutex::new(BTreeMap::new());

/// Keeps a child's process group in [`LIVE_GROUPS`] and with the guardian while it lives.
#[derive(Debug)]
pub(crate) struct LiveGroup(u32);

impl LiveGroup {
    pub(crate) fn new(pgid: u32) -> Self {
        let mut groups = LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner);
        groups.insert(pgid, std::thread::current().id());
        crate::guard::watch(pgid);
        LiveGroup(pgid)
    }
}

impl Drop for LiveGroup {
    fn drop(&mut self) {
        let mut groups = LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner);
        groups.remove(&self.0);
        crate::guard::unwatch(self.0);
    }
}

/// Kills (SIGKILL) the process group of every running command and subprocess this program
/// started through [`run_with_deadline`]: "stop now" after a second Ctrl-C.
pub fn kill_running_children() {
    let groups: Vec<u32> = LIVE_GROUPS.lock().unwrap_or_else(PoisonError::into_inner).keys().copied().collect();
    for pgid in groups {
        kill_group(pgid);
    }
}

/// Kills (SIGKILL) the process groups of the commands, subprocesses and persistent programs
/// that the thread `thread` started and that still run: the losing copy of a process run
/// twice ([`crate::speculate`]) is stopped so. Returns how many groups it killed.
pub fn kill_children_of(thread: ThreadId) -> usize {
    let groups: Vec<u32> = LIVE_GROUPS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .filter(|(_, started_by)| **started_by == thread)
        .map(|(pgid, _)| *pgid)
        .collect();
    groups.into_iter().filter(|&pgid| kill_group(pgid)).count()
}

/// Sends SIGKILL to the process group `pgid`; false when there is no such group.
pub(crate) fn kill_group(pgid: u32) -> bool {
    #[cfg(unix)]
    if let Some(pid) = i32::try_from(pgid).ok().and_then(rustix::process::Pid::from_raw) {
        return rustix::process::kill_process_group(pid, rustix::process::Signal::KILL).is_ok();
    }
    false
}

#[cfg(unix)]
pub(crate) use unix::{poll_pipes, FIRST_PAUSE};

#[cfg(unix)]
mod unix;

#[cfg(not(unix))]
mod fallback;

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
pub(crate) fn signal_name(signal: i32) -> Option<&'static str> {
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

/// Whether the process `pid` is gone (or a zombie) within a few seconds: tests check that
/// nothing was left behind (a SIGKILL takes a moment to land).
#[cfg(test)]
pub(crate) fn gone_soon(pid: u32) -> bool {
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
    };
    let start = Instant::now();
    while alive() {
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The pid a command wrote to `file`, once it is there.
    fn pid_in(file: &std::path::Path) -> u32 {
        for _ in 0..500 {
            if let Some(pid) = std::fs::read_to_string(file).ok().and_then(|s| s.trim().parse().ok()) {
                return pid;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("no pid in {}", file.display());
    }

    #[test]
    fn a_child_ends_with_its_direct_child_although_a_background_process_holds_its_output() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!("sleep 30 & echo $! > {}; echo 1", pid_file.display()));
        // The deadline is far: the outcome is the exit of `sh`, not the deadline.
        let deadline = Instant::now() + Duration::from_secs(25);
        let outcome = run_with_deadline(command, None, Some(deadline), true).unwrap();
        let status = outcome.status.expect("sh exited: no timeout");
        assert!(status.success(), "{}", describe_exit(&status));
        assert_eq!(outcome.stdout, b"1\n");
        assert!(gone_soon(pid_in(&pid_file)), "the background sleep went with the group");
    }

    #[test]
    fn a_process_that_leaves_the_group_does_not_hold_the_child_up() {
        let mut command = Command::new("sh");
        command.args(["-c", "setsid sleep 25 & echo 1"]);
        let deadline = Instant::now() + Duration::from_secs(20);
        let outcome = run_with_deadline(command, None, Some(deadline), true).unwrap();
        assert!(outcome.status.is_some_and(|s| s.success()), "sh exited: no timeout");
        assert_eq!(outcome.stdout, b"1\n");
    }

    #[test]
    fn stdin_is_fed_and_long_output_is_read_whole() {
        let mut command = Command::new("sh");
        command.args(["-c", "cat; head -c 300000 /dev/zero >&2"]);
        let input = vec![b'x'; 200_000];
        let outcome = run_with_deadline(command, Some(input.clone()), None, true).unwrap();
        assert!(outcome.status.is_some_and(|s| s.success()));
        assert_eq!(outcome.stdout, input);
        assert_eq!(outcome.stderr.len(), 300_000);
    }
}
