//! The guardian: a small process that kills the process groups of this program's children
//! when this program dies, whatever killed it (SIGKILL included), so that no command or
//! subprocess-isolation child runs on under init while `--resume` starts it again.
//!
//! At the first child spawn the program forks. The forked guardian leaves the program's
//! process group (a group kill aimed at the program, e.g. when it is itself a
//! subprocess-isolation child past its timeout, must not take the guardian with it), ignores
//! the terminal's and `mpirun`'s signals, closes every file descriptor but the read end of a
//! pipe, and reads messages from it: a positive number registers a process group, a
//! negative one forgets it. The program holds the write end alone (close-on-exec, so no
//! child inherits it); when the program dies, the kernel closes it, the guardian reads end
//! of file, kills every registered group with SIGKILL and exits. Between fork and exit the
//! guardian makes only async-signal-safe calls and allocates nothing.
//!
//! Without Linux (or if the fork fails) there is no guardian: children are still killed
//! at their deadline and on "stop now", but not when the program is killed.

// fork and the guardian's system calls need unsafe; nothing else in this module does.
#![allow(unsafe_code)]

use std::sync::{Mutex, PoisonError};

/// The program's side of the guardian.
enum Guardian {
    NotStarted,
    #[cfg(target_os = "linux")]
    Running(std::os::fd::OwnedFd),
    Unavailable,
}

static GUARDIAN: Mutex<Guardian> = Mutex::new(Guardian::NotStarted);

/// How many process groups the guardian keeps at once; more are not guarded (a worker runs
/// one child per thread of its pool).
#[cfg(target_os = "linux")]
const MAX_GROUPS: usize = 4096;

/// Starts the guardian unless it runs (or could not start).
pub(crate) fn start() {
    let mut guardian = GUARDIAN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Guardian::NotStarted = *guardian {
        *guardian = spawn();
    }
}

/// Has the guardian kill process group `pgid` if this program dies.
pub(crate) fn watch(pgid: u32) {
    send(i32::try_from(pgid).unwrap_or(0));
}

/// Forgets process group `pgid` (it ended).
pub(crate) fn unwatch(pgid: u32) {
    send(i32::try_from(pgid).map(|p| -p).unwrap_or(0));
}

#[cfg(target_os = "linux")]
fn send(message: i32) {
    if message == 0 {
        return;
    }
    let mut guardian = GUARDIAN.lock().unwrap_or_else(PoisonError::into_inner);
    if let Guardian::Running(fd) = &*guardian {
        // 4 bytes: a pipe writes them whole (PIPE_BUF), so messages never interleave.
        let bytes = message.to_ne_bytes();
        let sent = loop {
            match rustix::io::write(fd, &bytes) {
                Err(rustix::io::Errno::INTR) => continue,
                other => break other,
            }
        };
        if sent != Ok(bytes.len()) {
            tracing::warn!(
                target: "taskfarm",
                "the guardian of child processes is gone: the children of this program are not killed if it dies"
            );
            *guardian = Guardian::Unavailable;
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn send(_message: i32) {}

#[cfg(not(target_os = "linux"))]
fn spawn() -> Guardian {
    Guardian::Unavailable
}

#[cfg(target_os = "linux")]
fn spawn() -> Guardian {
    use std::os::fd::AsRawFd;
    let Ok((read, write)) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC) else {
        return Guardian::Unavailable;
    };
    let read_fd = read.as_raw_fd();
    // SAFETY: the forked child runs `guardian_main` only, which makes async-signal-safe
    // calls and never returns.
    match unsafe { libc::fork() } {
        0 => unsafe { guardian_main(read_fd) },
        -1 => Guardian::Unavailable,
        _ => {
            drop(read);
            Guardian::Running(write)
        }
    }
}

/// The guardian's life (see the [module docs](self)).
///
/// # Safety
/// Only in the child of `fork`, with `read_fd` the read end of the guardian's pipe.
#[cfg(target_os = "linux")]
unsafe fn guardian_main(read_fd: libc::c_int) -> ! {
    libc::setpgid(0, 0);
    for signal in
        [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGPIPE, libc::SIGUSR1, libc::SIGUSR2]
    {
        libc::signal(signal, libc::SIG_IGN);
    }
    close_all_but(read_fd);
    let mut groups = [0 as libc::pid_t; MAX_GROUPS];
    let mut buffer = [0u8; 4096];
    let mut pending = [0u8; 4];
    let mut pending_len = 0usize;
    loop {
        let n = libc::read(read_fd, buffer.as_mut_ptr().cast(), buffer.len());
        if n == 0 {
            break;
        }
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
        for &byte in buffer.iter().take(n.unsigned_abs()) {
            if let Some(slot) = pending.get_mut(pending_len) {
                *slot = byte;
            }
            pending_len += 1;
            if pending_len < 4 {
                continue;
            }
            pending_len = 0;
            let message = i32::from_ne_bytes(pending);
            if message > 0 {
                if let Some(free) = groups.iter_mut().find(|g| **g == 0) {
                    *free = message;
                }
            } else if let Some(known) = groups.iter_mut().find(|g| **g == -message) {
                *known = 0;
            }
        }
    }
    for &pgid in groups.iter().filter(|g| **g > 0) {
        libc::kill(-pgid, libc::SIGKILL);
    }
    libc::_exit(0)
}

/// Closes every file descriptor but `keep`: the guardian must hold no pipe of the program
/// (a child's output, a caller's stdout), or whoever waits for its end would wait for the
/// guardian.
///
/// # Safety
/// Async-signal-safe; meant for the guardian only.
#[cfg(target_os = "linux")]
unsafe fn close_all_but(keep: libc::c_int) {
    let keep = libc::c_uint::try_from(keep).unwrap_or(0);
    let below = keep == 0 || libc::syscall(libc::SYS_close_range, 0 as libc::c_uint, keep - 1, 0 as libc::c_uint) == 0;
    let above = libc::syscall(libc::SYS_close_range, keep + 1, libc::c_uint::MAX, 0 as libc::c_uint) == 0;
    if below && above {
        return;
    }
    // Before Linux 5.9: one by one, up to the limit of open files.
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    let max = if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 { limit.rlim_cur.min(1 << 20) } else { 1024 };
    for fd in 0..max {
        let fd = libc::c_int::try_from(fd).unwrap_or(libc::c_int::MAX);
        if libc::c_uint::try_from(fd).ok() != Some(keep) {
            libc::close(fd);
        }
    }
}
