//! The waiting loop: one thread polls the child's pipes (nonblocking), its pidfd, and
//! the clock, so that it can give up on pipes that something else holds open.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::process::Child;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{Pid, PidfdFlags, WaitId, WaitIdOptions};

use super::{kill_group, ChildOutcome, EXIT_GRACE};

/// How long a wait lasts at most without a pidfd to wake it when the child exits.
const TICK: Duration = Duration::from_millis(20);

/// The first pause of a waiting loop without a pidfd (see [`poll_pipes`]).
pub(crate) const FIRST_PAUSE: Duration = Duration::from_micros(200);

/// Which of a child's pipes [`poll_pipes`] found ready.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready {
    /// Its stdin has room (or was closed by the child).
    pub(crate) stdin: bool,
    /// Its stdout has output (or its end).
    pub(crate) stdout: bool,
    /// Its stderr has output (or its end).
    pub(crate) stderr: bool,
}

/// One step of a waiting loop: polls `[stdin, stdout, stderr, pidfd]` (those given:
/// stdin for room, the others for input) for `wait` at most, or forever when `None`.
/// Without a pidfd nothing wakes the loop when the child exits, so the wait is cut to
/// `pause`, which doubles (up to [`TICK`]) after each step where nothing was ready and
/// starts again at [`FIRST_PAUSE`] after one where something was.
pub(crate) fn poll_pipes(
    fds: [Option<BorrowedFd<'_>>; 4],
    mut wait: Option<Duration>,
    pause: &mut Duration,
) -> std::io::Result<Ready> {
    let [stdin, stdout, stderr, pidfd] = fds;
    if pidfd.is_none() {
        wait = Some(wait.map_or(*pause, |w| w.min(*pause)));
    }
    let watched = [(stdin, PollFlags::OUT), (stdout, PollFlags::IN), (stderr, PollFlags::IN), (pidfd, PollFlags::IN)];
    let mut polled: Vec<PollFd<'_>> = Vec::with_capacity(4);
    let mut at = [None; 4];
    for ((fd, flags), at) in watched.into_iter().zip(at.iter_mut()) {
        if let Some(fd) = fd {
            *at = Some(polled.len());
            polled.push(PollFd::from_borrowed_fd(fd, flags));
        }
    }
    let timespec = wait.map(|w| Timespec::try_from(w).unwrap_or(Timespec { tv_sec: 1, tv_nsec: 0 }));
    match poll(&mut polled, timespec.as_ref()) {
        Ok(0) => *pause = (*pause * 2).min(TICK),
        Ok(_) => *pause = FIRST_PAUSE,
        Err(rustix::io::Errno::INTR) => {}
        Err(e) => return Err(e.into()),
    }
    let ready = |at: Option<usize>| at.and_then(|i| polled.get(i)).is_some_and(|fd| !fd.revents().is_empty());
    let [in_at, out_at, err_at, _] = at;
    Ok(Ready { stdin: ready(in_at), stdout: ready(out_at), stderr: ready(err_at) })
}

pub(super) fn run(
    child: &mut Child,
    input: Option<Vec<u8>>,
    deadline: Option<Instant>,
    own_group: bool,
) -> std::io::Result<ChildOutcome> {
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    for fd in [stdin.as_ref().map(AsFd::as_fd), stdout.as_ref().map(AsFd::as_fd), stderr.as_ref().map(AsFd::as_fd)]
        .into_iter()
        .flatten()
    {
        rustix::io::ioctl_fionbio(fd, true)?;
    }
    let input = input.unwrap_or_default();
    let mut written = 0usize;
    let pid = i32::try_from(child.id()).ok().and_then(Pid::from_raw);
    // Wakes the loop when the child exits (Linux 5.3 and later; otherwise a tick).
    let pidfd: Option<OwnedFd> = pid.and_then(|pid| rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok());
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut timed_out = false;
    let mut exited_at: Option<Instant> = None;
    let mut pause = FIRST_PAUSE;
    loop {
        if exited_at.is_none() && has_exited(child, pid)? {
            exited_at = Some(Instant::now());
            stdin = None;
        }
        let now = Instant::now();
        let pipes_open = stdout.is_some() || stderr.is_some();
        let mut until: Option<Instant> = None;
        match exited_at {
            Some(at) => {
                if !pipes_open || now >= at + EXIT_GRACE {
                    break;
                }
                until = Some(at + EXIT_GRACE);
            }
            None => {
                if let Some(deadline) = deadline {
                    if now >= deadline {
                        timed_out = true;
                        kill(child, own_group);
                        exited_at = Some(Instant::now());
                        stdin = None;
                        continue;
                    }
                    until = Some(deadline);
                }
            }
        }
        // Waits for output, room on stdin, the child's exit or the time to look again.
        let ready = poll_pipes(
            [
                stdin.as_ref().map(AsFd::as_fd),
                stdout.as_ref().map(AsFd::as_fd),
                stderr.as_ref().map(AsFd::as_fd),
                pidfd.as_ref().filter(|_| exited_at.is_none()).map(AsFd::as_fd),
            ],
            until.map(|u| u.saturating_duration_since(now)),
            &mut pause,
        )?;
        let (in_ready, out_ready, err_ready) = (ready.stdin, ready.stdout, ready.stderr);
        if in_ready {
            if let Some(pipe) = stdin.as_mut() {
                match pipe.write(&input[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                    // A child that closes its stdin early: that is its business.
                    Err(_) => written = input.len(),
                }
            }
            if written >= input.len() {
                stdin = None;
            }
        }
        if out_ready && drain(stdout.as_mut(), &mut out) {
            stdout = None;
        }
        if err_ready && drain(stderr.as_mut(), &mut err) {
            stderr = None;
        }
    }
    // Whatever the child left running goes with its group, while the exited leader (not
    // reaped yet) still holds the group's id.
    drop((stdin, stdout, stderr));
    if own_group {
        kill_group(child.id());
    }
    let status = child.wait()?;
    Ok(ChildOutcome { status: (!timed_out).then_some(status), stdout: out, stderr: err })
}

/// Reads what `pipe` holds now into `into`; true at its end (or on an error).
fn drain(pipe: Option<&mut impl Read>, into: &mut Vec<u8>) -> bool {
    let Some(pipe) = pipe else { return true };
    let mut buffer = [0u8; 64 * 1024];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) => return true,
            Ok(n) => into.extend_from_slice(buffer.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return true,
        }
    }
}

/// Whether the child has exited, without reaping it: its pid, and so its process
/// group's id, stays taken until [`Child::wait`].
fn has_exited(child: &mut Child, pid: Option<Pid>) -> std::io::Result<bool> {
    let Some(pid) = pid else { return child.try_wait().map(|s| s.is_some()) };
    let options = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    Ok(rustix::process::waitid(WaitId::Pid(pid), options)?.is_some())
}

/// Kills a child with SIGKILL: its whole process group when it leads one.
fn kill(child: &mut Child, own_group: bool) {
    if own_group && kill_group(child.id()) {
        return;
    }
    let _ = child.kill();
}
