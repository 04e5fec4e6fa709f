//! Running a command of the xtask's test suites (mpirun, a worker, a batch job) to its end
//! or to a timeout, its output in files, and showing the end of what it printed.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::mpi::describe;

/// What one run of a command (under mpirun, or on the test cluster) came to.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The exit code; `None` when a signal ended the command.
    pub(crate) code: Option<i32>,
    /// What it printed on stdout.
    pub(crate) stdout: String,
    /// What it printed on stderr.
    pub(crate) stderr: String,
    /// From its start to its end.
    pub(crate) elapsed: Duration,
    /// Whether it ran past its timeout and was killed.
    pub(crate) timed_out: bool,
}

/// The pids of the commands [`run_to_files`] runs now, for [`end_running`].
static RUNNING: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Lists a running command's pid in [`RUNNING`] while it lives.
struct Listed(u32);

impl Listed {
    fn new(pid: u32) -> Listed {
        RUNNING.lock().unwrap_or_else(PoisonError::into_inner).push(pid);
        Listed(pid)
    }
}

impl Drop for Listed {
    fn drop(&mut self) {
        RUNNING.lock().unwrap_or_else(PoisonError::into_inner).retain(|&pid| pid != self.0);
    }
}

/// Set once [`end_running`] was called: no command starts after it.
static ENDING: AtomicBool = AtomicBool::new(false);

/// Sends SIGTERM to every command [`run_to_files`] runs now, and to its process group when
/// it leads one (a command started with `process_group(0)`, so that what it started ends
/// too), and lets no other start: an xtask stopped by a signal ends them rather than leave
/// them behind (e.g. an `sbatch --wait` waiting for ever for a Slurm controller that is gone).
pub(crate) fn end_running() {
    ENDING.store(true, Ordering::SeqCst);
    let pids = std::mem::take(&mut *RUNNING.lock().unwrap_or_else(PoisonError::into_inner));
    for pid in pids {
        let _ = Command::new("kill").arg("-TERM").arg("--").arg(format!("-{pid}")).stderr(Stdio::null()).status();
        let _ = Command::new("kill").arg("-TERM").arg(pid.to_string()).stderr(Stdio::null()).status();
    }
}

/// Runs `command` with stdin closed and its output to `<name>.stdout` and `<name>.stderr` in
/// `dir`, for at most `timeout`: past it the command gets SIGTERM (mpirun takes its ranks
/// down on it; SIGKILL would leave them), and SIGKILL 5 s later if it is still there.
/// `during` is called every 50 ms with the time since the start (to act on the run from
/// outside); its error ends the command (SIGTERM) and is returned.
pub(crate) fn run_to_files(
    dir: &Path,
    name: &str,
    mut command: Command,
    timeout: Duration,
    mut during: impl FnMut(Duration) -> Result<()>,
) -> Result<Outcome> {
    let line = describe(&command);
    if ENDING.load(Ordering::SeqCst) {
        anyhow::bail!("not started, the xtask is stopping: {line}");
    }
    let (out_path, err_path) = (dir.join(format!("{name}.stdout")), dir.join(format!("{name}.stderr")));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("could not start {line}"))?;
    let _listed = Listed::new(child.id());
    let start = Instant::now();
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait()? {
            break (Some(status), false);
        }
        if start.elapsed() >= timeout {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(5) && child.try_wait()?.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            break (child.wait().ok(), true);
        }
        if let Err(e) = during(start.elapsed()) {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Outcome {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed: start.elapsed(),
        timed_out,
    })
}

/// The end of a program's output, after the message of any panic (which a backtrace would
/// otherwise push out of view).
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut shown: Vec<&str> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("panicked at") {
            shown.extend(lines[i..(i + 3).min(lines.len())].iter());
        }
    }
    shown.extend(lines[lines.len().saturating_sub(15)..].iter());
    shown.join("\n")
}
