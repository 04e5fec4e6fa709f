//! A child process that lives for many processes of an operation (a persistent
//! interpreter) and talks in lines: [`LineChild`] writes a request on its stdin and waits
//! for the next line of its stdout, its exit or a deadline, whichever comes first.
//!
//! It is started as [`run_with_deadline`](crate::run_with_deadline) starts its children:
//! in a process group of its own (unless `own_group` is false, inside a subprocess-isolation
//! child whose group the worker kills), registered for "stop now"
//! ([`kill_running_children`](crate::kill_running_children)) and with the
//! guardian (the process that kills a dead program's children), so it dies with the program that started it, even by SIGKILL.
//! Dropping a `LineChild` closes its stdin, gives it [`EXIT_GRACE`] to exit, then kills its
//! process group.
//!
//! Its stderr is read while it runs (so a chatty child never blocks on a full pipe) and
//! the last [`STDERR_KEPT`] bytes are kept for [`LineChild::take_stderr`].

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions};

use crate::child::{kill_group, poll_pipes, LiveGroup, EXIT_GRACE, FIRST_PAUSE};

/// How many bytes of a child's stderr are kept between two [`LineChild::take_stderr`].
pub const STDERR_KEPT: usize = 64 * 1024;

/// The longest line read from a child's stdout; a longer one is [`LineEvent::Overlong`].
pub const MAX_LINE: usize = 64 * 1024 * 1024;

/// What [`LineChild::exchange`] came to.
#[derive(Debug, PartialEq, Eq)]
pub enum LineEvent {
    /// A line of stdout, without its newline.
    Line(Vec<u8>),
    /// The child exited (its output read to the end, no whole line left).
    Exited(ExitStatus),
    /// The deadline passed first; the child still runs.
    TimedOut,
    /// The child wrote more than [`MAX_LINE`] bytes without a newline.
    Overlong,
}

/// A running child that answers in lines (see the [module docs](self)).
#[derive(Debug)]
pub struct LineChild {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    pidfd: Option<OwnedFd>,
    pid: Option<Pid>,
    /// Bytes of stdout read but not yet returned as a line.
    out: Vec<u8>,
    /// The end of stderr since the last `take_stderr`.
    err: Vec<u8>,
    exited: Option<ExitStatus>,
    own_group: bool,
    _live: Option<LiveGroup>,
}

impl LineChild {
    /// Starts `command` with its three pipes, in a process group of its own when
    /// `own_group`, registered with the guardian.
    pub fn spawn(mut command: Command, own_group: bool) -> std::io::Result<LineChild> {
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        if own_group {
            std::os::unix::process::CommandExt::process_group(&mut command, 0);
            crate::guard::start();
        }
        let mut child = command.spawn()?;
        let live = own_group.then(|| LiveGroup::new(child.id()));
        let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
        for fd in [stdin.as_ref().map(AsFd::as_fd), stdout.as_ref().map(AsFd::as_fd), stderr.as_ref().map(AsFd::as_fd)]
            .into_iter()
            .flatten()
        {
            rustix::io::ioctl_fionbio(fd, true)?;
        }
        let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
        let pidfd = pid.and_then(|pid| rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok());
        Ok(LineChild {
            child,
            stdin,
            stdout,
            stderr,
            pidfd,
            pid,
            out: Vec::new(),
            err: Vec::new(),
            exited: None,
            own_group,
            _live: live,
        })
    }

    /// The child's process id (and, with `own_group`, its process group's).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Writes `input` on the child's stdin (all of it, unless the child stops reading) and
    /// waits for the next whole line of its stdout, its exit, or `deadline`. A line the
    /// child wrote before it exited is returned before its exit.
    pub fn exchange(&mut self, input: &[u8], deadline: Option<Instant>) -> std::io::Result<LineEvent> {
        let mut written = if self.stdin.is_some() { 0 } else { input.len() };
        let mut pause = FIRST_PAUSE;
        let mut exited_at: Option<Instant> = None;
        loop {
            if let Some(line) = self.take_line() {
                return Ok(line);
            }
            if self.exited.is_none() && exited_at.is_none() && self.has_exited()? {
                exited_at = Some(Instant::now());
            }
            let now = Instant::now();
            let mut until = deadline;
            if let Some(at) = exited_at.or(self.exited.map(|_| now)) {
                // Gone: what is left in the pipes is read for a short while at most.
                if self.stdout.is_none() && self.stderr.is_none() || now >= at + EXIT_GRACE {
                    if !self.out.is_empty() {
                        // A last line without its newline.
                        return Ok(LineEvent::Line(std::mem::take(&mut self.out)));
                    }
                    return self.reap().map(LineEvent::Exited);
                }
                until = Some(at + EXIT_GRACE);
            } else if deadline.is_some_and(|d| now >= d) {
                return Ok(LineEvent::TimedOut);
            }
            let want_in = written < input.len() && exited_at.is_none();
            let ready = poll_pipes(
                [
                    self.stdin.as_ref().filter(|_| want_in).map(AsFd::as_fd),
                    self.stdout.as_ref().map(AsFd::as_fd),
                    self.stderr.as_ref().map(AsFd::as_fd),
                    self.pidfd.as_ref().filter(|_| exited_at.is_none()).map(AsFd::as_fd),
                ],
                until.map(|u| u.saturating_duration_since(now)),
                &mut pause,
            )?;
            let (in_ready, out_ready, err_ready) = (ready.stdin, ready.stdout, ready.stderr);
            if in_ready {
                if let Some(pipe) = self.stdin.as_mut() {
                    match pipe.write(input.get(written..).unwrap_or_default()) {
                        Ok(n) => written += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                        // The child closed its stdin: it will not read more; its exit says why.
                        Err(_) => {
                            written = input.len();
                            self.stdin = None;
                        }
                    }
                }
            }
            if out_ready && drain(self.stdout.as_mut(), &mut self.out, None) {
                self.stdout = None;
            }
            if err_ready && drain(self.stderr.as_mut(), &mut self.err, Some(STDERR_KEPT)) {
                self.stderr = None;
            }
        }
    }

    /// The next whole line read, or a too long one.
    fn take_line(&mut self) -> Option<LineEvent> {
        match self.out.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let mut line: Vec<u8> = self.out.drain(..=end).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                Some(LineEvent::Line(line))
            }
            None if self.out.len() > MAX_LINE => {
                self.out.clear();
                Some(LineEvent::Overlong)
            }
            None => None,
        }
    }

    /// What the child wrote on stderr since the last call (its last [`STDERR_KEPT`] bytes),
    /// with what its pipe holds now.
    pub fn take_stderr(&mut self) -> Vec<u8> {
        if drain(self.stderr.as_mut(), &mut self.err, Some(STDERR_KEPT)) {
            self.stderr = None;
        }
        std::mem::take(&mut self.err)
    }

    /// Kills the child with its process group (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> std::io::Result<ExitStatus> {
        if self.exited.is_none() && !(self.own_group && kill_group(self.child.id())) {
            let _ = self.child.kill();
        }
        self.reap()
    }

    /// Whether the child has exited, without reaping it: its pid, and so its process
    /// group's id, stays taken until [`Self::reap`].
    fn has_exited(&mut self) -> std::io::Result<bool> {
        let Some(pid) = self.pid else { return self.child.try_wait().map(|s| s.is_some()) };
        let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
        Ok(rustix::process::waitid(WaitId::Pid(pid), options)?.is_some())
    }

    /// Kills what the child left in its group (while the exited leader still holds the
    /// group's id), closes its pipes and reaps it.
    fn reap(&mut self) -> std::io::Result<ExitStatus> {
        if let Some(status) = self.exited {
            return Ok(status);
        }
        if drain(self.stderr.as_mut(), &mut self.err, Some(STDERR_KEPT)) {
            self.stderr = None;
        }
        if self.own_group {
            kill_group(self.child.id());
        }
        self.stdin = None;
        self.stdout = None;
        self.stderr = None;
        let status = self.child.wait()?;
        self.exited = Some(status);
        Ok(status)
    }
}

impl Drop for LineChild {
    /// Closes the child's stdin (end of input: a well-behaved child exits), waits
    /// [`EXIT_GRACE`] at most for it to go, then kills its group.
    fn drop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        self.stdin = None;
        let until = Instant::now() + EXIT_GRACE;
        while Instant::now() < until {
            match self.has_exited() {
                Ok(false) => std::thread::sleep(Duration::from_millis(2)),
                _ => break,
            }
        }
        let _ = self.kill();
    }
}

/// Reads what `pipe` holds now into `into`, keeping its last `keep` bytes when given; true
/// at its end (or on an error).
fn drain(pipe: Option<&mut impl Read>, into: &mut Vec<u8>, keep: Option<usize>) -> bool {
    let Some(pipe) = pipe else { return true };
    let mut buffer = [0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) => return true,
            Ok(n) => {
                into.extend_from_slice(buffer.get(..n).unwrap_or_default());
                if let Some(keep) = keep.filter(|&k| into.len() > k) {
                    into.drain(..into.len() - keep);
                }
                // A line protocol's next line is usually whole now: return it at once.
                if keep.is_none() && n < buffer.len() {
                    return false;
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> LineChild {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        LineChild::spawn(command, true).unwrap()
    }

    fn soon() -> Option<Instant> {
        Some(Instant::now() + Duration::from_secs(20))
    }

    #[test]
    fn answers_line_by_line_and_keeps_stderr() {
        let mut child = sh("while read x; do echo \"got $x\" >&2; echo \"re $x\"; done");
        for i in 0..3 {
            let event = child.exchange(format!("{i}\n").as_bytes(), soon()).unwrap();
            assert_eq!(event, LineEvent::Line(format!("re {i}").into_bytes()));
        }
        std::thread::sleep(Duration::from_millis(50));
        let err = String::from_utf8(child.take_stderr()).unwrap();
        assert!(err.contains("got 0") && err.contains("got 2"), "{err}");
    }

    #[test]
    fn a_line_before_the_exit_comes_first_then_the_exit() {
        let mut child = sh("read x; echo last; exit 3");
        assert_eq!(child.exchange(b"go\n", soon()).unwrap(), LineEvent::Line(b"last".to_vec()));
        let LineEvent::Exited(status) = child.exchange(b"", soon()).unwrap() else { panic!("exited") };
        assert_eq!(status.code(), Some(3));
    }

    #[test]
    fn a_deadline_leaves_the_child_running_until_killed() {
        let mut child = sh("sleep 30");
        let event = child.exchange(b"x\n", Some(Instant::now() + Duration::from_millis(100))).unwrap();
        assert_eq!(event, LineEvent::TimedOut);
        let pid = child.id();
        let status = child.kill().unwrap();
        assert!(!status.success());
        assert!(crate::child::gone_soon(pid));
    }

    #[test]
    fn dropping_the_child_ends_it_and_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        let child = sh(&format!("sleep 30 & echo $! > {}; while read x; do :; done", file.display()));
        let mut pid = None;
        for _ in 0..500 {
            pid = std::fs::read_to_string(&file).ok().and_then(|s| s.trim().parse::<u32>().ok());
            if pid.is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let leader = child.id();
        drop(child);
        assert!(crate::child::gone_soon(leader));
        assert!(crate::child::gone_soon(pid.expect("the background pid")));
    }
}
