//! `cargo xtask slurm-test`: a one-node Slurm cluster made on this machine (root; Debian's
//! `slurm-wlm` and `munge`), and taskfarm run through it as users run it: the shipped batch
//! script submitted from a fresh directory outside the checkout with only a worker binary
//! and a spec there, `taskfarm-worker submit` with a user's own worker binary, a job
//! cancelled mid-run (`scancel`) then resumed, a run continued across allocations, and a run
//! stopped by Slurm's early warning (`--signal`) whose `--continue` is at its cap.
//!
//! The daemons (munged, slurmctld, slurmd) run with a configuration generated in a
//! temporary directory, on free ports, and are stopped at the end, also when a case fails
//! and when the xtask is stopped by SIGINT, SIGTERM or SIGHUP. Every Slurm command a case
//! waits for is given up on (and killed) after [`CASE_TIMEOUT`].

mod cases;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::mpi::{on_path, running_as_root};
use crate::{cargo, run_checked, target_dir, Tally};
use cases::{
    batch_script_from_a_fresh_directory, continue_across_allocations, early_warning_then_resume, scancel_then_resume,
    submit_a_custom_worker,
};

/// How long a case may take before it counts as hung.
const CASE_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs the Slurm cases; without root or Slurm's programs it says so and passes, unless
/// `ci` (then that is a failure).
pub fn slurm_test(ci: bool) -> Result<()> {
    let missing: Vec<&str> = ["munged", "slurmctld", "slurmd", "sbatch", "scancel", "squeue", "sinfo", "mpirun"]
        .into_iter()
        .filter(|p| on_path(p).is_none() && !Path::new("/usr/sbin").join(p).is_file())
        .collect();
    if !missing.is_empty() || !running_as_root() {
        let why = if missing.is_empty() {
            "it must run as root".to_owned()
        } else {
            format!("{} not found (apt-get install slurm-wlm munge openmpi-bin)", missing.join(", "))
        };
        if ci {
            bail!("the Slurm tests must run under CI but {why}");
        }
        eprintln!("xtask: skipping the Slurm tests: {why}");
        return Ok(());
    }
    run_checked(
        cargo().args(["build", "--release", "-p", "taskfarm-worker", "--features", "mpi"]),
        "build the release worker with MPI",
    )?;
    run_checked(
        cargo().args(["build", "--release", "-p", "examples", "--example", "custom_worker", "--features", "mpi"]),
        "build the custom_worker example with MPI",
    )?;
    stop_the_cluster_on_signals();
    let cluster = Cluster::start()?;
    let mut tally = Tally::new("slurm");
    tally.record("the batch script, submitted from a fresh directory, same results.csv as serial", {
        batch_script_from_a_fresh_directory(&cluster)
    });
    tally.record("taskfarm-worker submit with a user's own worker binary, same results.csv as serial", {
        submit_a_custom_worker(&cluster)
    });
    tally.record("scancel mid-run, then --resume: nothing lost, nothing run twice", scancel_then_resume(&cluster));
    tally.record(
        "a sweep longer than its 1-minute allocations, --continue: every process once, none cut by the limit",
        continue_across_allocations(&cluster),
    );
    tally.record(
        "Slurm's early warning (--signal) mid-run: exit 75, --continue at its cap, every process once after --resume",
        early_warning_then_resume(&cluster),
    );
    drop(cluster);
    tally.finish()
}

/// The running daemons of a one-node cluster, stopped when dropped.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

/// The directory and configuration of the cluster that is up, for the signal handler to stop
/// it (taken by whichever stops it first: the handler or `Cluster`'s drop).
static UP: Mutex<Option<(PathBuf, PathBuf)>> = Mutex::new(None);

/// On SIGINT, SIGTERM or SIGHUP: ends the Slurm commands a case waits for, stops the cluster
/// that is up (its jobs cancelled, its daemons killed, its directory removed) and exits 128 +
/// the signal, so that a test stopped by hand or by CI leaves no slurmctld, slurmd, munged
/// or `sbatch --wait` behind.
fn stop_the_cluster_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        eprintln!("xtask: warning: no signal handler: stopping the xtask now leaves the Slurm daemons running");
        return;
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            eprintln!("xtask: signal {signal}: stopping the Slurm cluster");
            crate::runner::end_running();
            stop_cluster();
            std::process::exit(128 + signal);
        }
    });
}

/// Stops the cluster that is up, if any: cancels its jobs, kills its daemons (by the pids
/// they wrote), removes its directory. The lock is held to the end, so that a second caller
/// (the main thread's drop while the signal handler stops it) returns only once it is done.
fn stop_cluster() {
    let mut up = UP.lock().unwrap_or_else(PoisonError::into_inner);
    let Some((dir, conf)) = up.take() else { return };
    let _ = Command::new("scancel").env("SLURM_CONF", &conf).args(["--user", "root"]).status();
    for pid_file in ["slurmd.pid", "slurmctld.pid", "munge/munged.pid"] {
        let pid = std::fs::read_to_string(dir.join(pid_file)).ok();
        if let Some(pid) = pid.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
            let _ = Command::new("kill").arg(pid).status();
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let _ = std::fs::remove_dir_all(&dir);
    drop(up);
}

impl Cluster {
    fn start() -> Result<Cluster> {
        let dir = std::env::temp_dir().join(format!("taskfarm-slurm-test-{}", std::process::id()));
        for sub in ["state", "spool", "munge", "cases"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let munge = dir.join("munge");
        set_mode(&munge, 0o700)?;
        let key_path = munge.join("munge.key");
        std::fs::write(&key_path, read_random(1024).context("could not read /dev/urandom for munge's key")?)?;
        set_mode(&key_path, 0o400)?;
        let socket = munge.join("munge.sock");
        let cluster = Cluster { conf: dir.join("slurm.conf"), dir };
        *UP.lock().unwrap_or_else(PoisonError::into_inner) = Some((cluster.dir.clone(), cluster.conf.clone()));
        run_checked(
            Command::new(program("munged"))
                .arg("--force")
                .arg(format!("--key-file={}", key_path.display()))
                .arg(format!("--socket={}", socket.display()))
                .arg(format!("--pid-file={}", munge.join("munged.pid").display()))
                .arg(format!("--log-file={}", munge.join("munged.log").display()))
                .arg(format!("--seed-file={}", munge.join("munged.seed").display())),
            "start munged",
        )?;
        let host = hostname()?;
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        let (ctld_port, d_port) = (free_port()?, free_port()?);
        let d = cluster.dir.display();
        std::fs::write(
            &cluster.conf,
            format!(
                "ClusterName=taskfarm\nSlurmctldHost={host}\nSlurmUser=root\nSlurmdUser=root\n\
                 AuthType=auth/munge\nAuthInfo=socket={socket}\nCredType=cred/munge\n\
                 StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
                 SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
                 SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd.log\n\
                 SlurmctldPort={ctld_port}\nSlurmdPort={d_port}\n\
                 ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\n\
                 SelectType=select/cons_tres\nSelectTypeParameters=CR_Core\nReturnToService=2\n\
                 MpiDefault=none\nSchedulerType=sched/backfill\nJobCompType=jobcomp/none\n\
                 AccountingStorageType=accounting_storage/none\nKillWait=10\nMinJobAge=60\n\
                 InactiveLimit=0\nNodeName={host} CPUs={cpus} State=UNKNOWN\n\
                 PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP\n",
                socket = socket.display()
            ),
        )?;
        run_checked(Command::new(program("slurmctld")).arg("-f").arg(&cluster.conf), "start slurmctld")?;
        run_checked(Command::new(program("slurmd")).arg("-f").arg(&cluster.conf), "start slurmd")?;
        let start = Instant::now();
        loop {
            let out = cluster.command("sinfo").args(["-h", "-o", "%t"]).output()?;
            if String::from_utf8_lossy(&out.stdout).trim() == "idle" {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let log = std::fs::read_to_string(cluster.dir.join("slurmctld.log")).unwrap_or_default();
                bail!("the Slurm node never became idle:\n{}", crate::runner::tail(&log));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        eprintln!("xtask: Slurm is up: one node `{host}` with {cpus} CPUs (configuration {})", cluster.conf.display());
        Ok(cluster)
    }

    /// A Slurm command that talks to this cluster.
    fn command(&self, name: &str) -> Command {
        let mut command = Command::new(name);
        command.env("SLURM_CONF", &self.conf);
        command
    }

    /// A fresh directory for a case, outside the checkout.
    fn case_dir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.dir.join("cases").join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        stop_cluster();
    }
}

/// The daemons live in /usr/sbin, which a root PATH may lack.
fn program(name: &str) -> PathBuf {
    on_path(name).unwrap_or_else(|| Path::new("/usr/sbin").join(name))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("could not set the mode of {}", path.display()))
}

fn read_random(n: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut bytes = vec![0; n];
    std::fs::File::open("/dev/urandom").ok()?.read_exact(&mut bytes).ok()?;
    Some(bytes)
}

fn hostname() -> Result<String> {
    let out = Command::new("hostname").arg("-s").output().context("hostname")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Copies `from` into `dir` (keeping its name) and returns the copy's path.
fn copy_into(from: &Path, dir: &Path) -> Result<PathBuf> {
    let to = dir.join(from.file_name().context("a file name")?);
    std::fs::copy(from, &to).with_context(|| format!("could not copy {}", from.display()))?;
    Ok(to)
}

fn release(name: &str) -> PathBuf {
    target_dir().join("release").join(name)
}

/// Runs `command` to its end (at most [`CASE_TIMEOUT`]); fails with its output unless it
/// exits 0.
fn expect_ok(command: Command, what: &str) -> Result<String> {
    let out = run_within(command, what)?;
    let text = format!("{}{}", out.stdout, out.stderr);
    if out.code != Some(0) {
        bail!("{what} exited with {:?}:\n{}", out.code, crate::runner::tail(&text));
    }
    Ok(text)
}

/// Runs `command` to its end, at most [`CASE_TIMEOUT`]: past it, it is killed (SIGTERM, then
/// SIGKILL) and the case fails, saying so.
fn run_within(mut command: Command, what: &str) -> Result<crate::runner::Outcome> {
    // A group of its own: a stopped xtask ends the command with what it started (a worker's
    // `submit` runs sbatch), and Ctrl-C reaches it through the xtask's handler only.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    // Its output goes through files (a pipe could hold the run up); each command its own.
    static RUNS: AtomicU64 = AtomicU64::new(0);
    let logs = std::env::temp_dir().join(format!("taskfarm-slurm-test-{}-logs", std::process::id()));
    std::fs::create_dir_all(&logs)?;
    let name = format!("command-{}", RUNS.fetch_add(1, Ordering::Relaxed));
    let out = crate::runner::run_to_files(&logs, &name, command, CASE_TIMEOUT, |_| Ok(()))
        .with_context(|| format!("could not run {what}"));
    for end in ["stdout", "stderr"] {
        let _ = std::fs::remove_file(logs.join(format!("{name}.{end}")));
    }
    let _ = std::fs::remove_dir(&logs);
    let out = out?;
    if out.timed_out {
        bail!(
            "{what} did not end within {} s and was killed:\n{}",
            CASE_TIMEOUT.as_secs(),
            crate::runner::tail(&format!("{}{}", out.stdout, out.stderr))
        );
    }
    Ok(out)
}
