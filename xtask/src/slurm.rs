//! `cargo xtask slurm-test`: a one-node Slurm cluster made on this machine (root; Debian's
//! `slurm-wlm` and `munge`), and taskfarm run through it as users run it: the shipped batch
//! script submitted from a fresh directory outside the checkout with only a worker binary
//! and a spec there, `taskfarm-worker submit` with a user's own worker binary, and a job
//! cancelled mid-run (`scancel`) then resumed.
//!
//! The daemons (munged, slurmctld, slurmd) run with a configuration generated in a
//! temporary directory, on free ports, and are stopped at the end, also when a case fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::mpi::{on_path, running_as_root};
use crate::results::{compare_rows, read_results};
use crate::{cargo, root, run_checked, target_dir, Tally};

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
    drop(cluster);
    tally.finish()
}

/// The running daemons of a one-node cluster, stopped when dropped.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
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
        let _ = self.command("scancel").args(["--user", "root"]).status();
        for pid_file in ["slurmd.pid", "slurmctld.pid", "munge/munged.pid"] {
            let pid = std::fs::read_to_string(self.dir.join(pid_file)).ok();
            if let Some(pid) = pid.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
                let _ = Command::new("kill").arg(pid).status();
            }
        }
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::fs::remove_dir_all(&self.dir);
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
fn expect_ok(mut command: Command, what: &str) -> Result<String> {
    let out = command.output().with_context(|| format!("could not start {what}"))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        bail!("{what} exited with {:?}:\n{}", out.status.code(), crate::runner::tail(&text));
    }
    Ok(text)
}

/// The shipped batch script, submitted with `sbatch --wait` from a directory that holds only
/// the worker binary and a spec: the same rows as `--backend serial`.
fn batch_script_from_a_fresh_directory(cluster: &Cluster) -> Result<()> {
    let dir = cluster.case_dir("script")?;
    let worker = copy_into(&release("taskfarm-worker"), &dir)?;
    let spec = copy_into(&root().join("examples/specs/command_sweep.toml"), &dir)?;
    let script = copy_into(&root().join("examples/slurm/sweep.sbatch"), &dir)?;
    let mut sbatch = cluster.command("sbatch");
    sbatch.args(["--wait", "--time=3"]).arg(&script).arg(&spec).current_dir(&dir);
    let said = expect_ok(sbatch, "sbatch --wait sweep.sbatch").with_context(|| job_outputs(&dir))?;
    let mut serial = Command::new(&worker);
    serial
        .args(["run", "command_sweep.toml", "--backend", "serial", "--quiet", "--results", "serial"])
        .current_dir(&dir);
    expect_ok(serial, "the serial run")?;
    compare_rows(&dir.join("serial"), &dir.join("results")).map(drop).with_context(|| said.clone())
}

/// `taskfarm-worker submit --worker ./custom_worker --wait`: a user's own worker binary, its
/// own process kind, in a batch job.
fn submit_a_custom_worker(cluster: &Cluster) -> Result<()> {
    let dir = cluster.case_dir("custom")?;
    let worker = copy_into(&release("examples/custom_worker"), &dir)?;
    let spec = copy_into(&root().join("examples/specs/rosenbrock.toml"), &dir)?;
    let mut submit = Command::new(&worker);
    submit
        .args(["submit", "--wait", "--time", "3", "--worker"])
        .arg(&worker)
        .arg(&spec)
        .env("SLURM_CONF", &cluster.conf)
        .current_dir(&dir);
    let said = expect_ok(submit, "custom_worker submit --wait").with_context(|| job_outputs(&dir))?;
    if !said.contains("ended with status 0") {
        bail!("submit did not report the job's end:\n{said}");
    }
    let mut serial = Command::new(&worker);
    serial.args(["run", "rosenbrock.toml", "--backend", "serial", "--quiet", "--results", "serial"]).current_dir(&dir);
    expect_ok(serial, "the serial run")?;
    compare_rows(&dir.join("serial"), &dir.join("results")).map(drop).with_context(|| said.clone())
}

/// A job cancelled with `scancel` while it runs, then resumed in a second job: every process
/// has exactly one row and one journal record.
fn scancel_then_resume(cluster: &Cluster) -> Result<()> {
    let dir = cluster.case_dir("scancel")?;
    copy_into(&release("taskfarm-worker"), &dir)?;
    let total = 40;
    let xs: Vec<String> = (0..total).map(|x| x.to_string()).collect();
    std::fs::write(
        dir.join("slow.toml"),
        format!(
            "name = \"slow\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 0.25; echo {{x}}\"]\n\
             [parameter_ranges]\nx = [{}]\n",
            xs.join(", ")
        ),
    )?;
    let script = copy_into(&root().join("examples/slurm/sweep.sbatch"), &dir)?;
    let mut sbatch = cluster.command("sbatch");
    sbatch.args(["--parsable", "--time=3"]).arg(&script).arg("slow.toml").current_dir(&dir);
    let job = expect_ok(sbatch, "sbatch")?.trim().to_owned();
    // Once some records are journaled, cancel the job.
    let start = Instant::now();
    while journal_records(&dir.join("results/slow/latest/journal")) < 6 {
        if start.elapsed() > CASE_TIMEOUT {
            bail!("job {job} journaled nothing");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    expect_ok(
        {
            let mut scancel = cluster.command("scancel");
            scancel.arg(&job);
            scancel
        },
        "scancel",
    )?;
    while !squeue_is_empty(cluster)? {
        if start.elapsed() > CASE_TIMEOUT {
            bail!("job {job} did not end after scancel");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let run_dir = std::fs::canonicalize(dir.join("results/slow/latest"))?;
    let before = journal_records(&run_dir.join("journal"));
    if before >= total {
        bail!("the job finished before it was cancelled");
    }
    let mut resume = cluster.command("sbatch");
    resume
        .args(["--wait", "--time=3"])
        .arg(&script)
        .arg(run_dir.join("operation.toml"))
        .arg("--resume")
        .arg(&run_dir)
        .current_dir(&dir);
    expect_ok(resume, "sbatch --wait of the resume").with_context(|| job_outputs(&dir))?;
    let (header, rows) = read_results(&dir.join("results"))?;
    let ids: BTreeSet<&str> = rows.iter().filter_map(|r| r.first().map(String::as_str)).collect();
    let status = header.iter().position(|h| h == "status").context("results.csv has no status column")?;
    if let Some(row) = rows.iter().find(|r| r.get(status).is_none_or(|s| s != "finished")) {
        bail!("a process the cancel cut short was recorded as failed: {row:?}");
    }
    let records = journal_records(&run_dir.join("journal"));
    if rows.len() != total || ids.len() != total || records != total {
        bail!(
            "after the resume: {} rows, {} distinct ids and {records} journal records ({before} before it), \
             expected {total} each",
            rows.len(),
            ids.len()
        );
    }
    Ok(())
}

/// The end of every job output (`taskfarm-<job>.out`) under `dir`, to say why a case failed.
fn job_outputs(dir: &Path) -> String {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n.to_string_lossy().starts_with("taskfarm-")) {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                found.push(format!("{}:\n{}", path.display(), crate::runner::tail(&text)));
            }
        }
    }
    found.join("\n")
}

/// A sweep that needs about three 1-minute allocations, submitted with `--continue`: each
/// allocation stops starting processes before its end, resubmits the run, and the chain
/// ends with every process recorded once, none of them failed (none cut by the limit).
fn continue_across_allocations(cluster: &Cluster) -> Result<()> {
    let dir = cluster.case_dir("continue")?;
    copy_into(&release("taskfarm-worker"), &dir)?;
    // 110 × 2 s on one worker rank with 2 threads: about 96 thread-seconds fit in a minute
    // after the 10 s margin and the start.
    let total = 110;
    let xs: Vec<String> = (0..total).map(|x| x.to_string()).collect();
    std::fs::write(
        dir.join("long.toml"),
        format!(
            "name = \"long\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 2; echo {{x}}\"]\n\
             [parameter_ranges]\nx = [{}]\n",
            xs.join(", ")
        ),
    )?;
    let script = copy_into(&root().join("examples/slurm/sweep.sbatch"), &dir)?;
    let mut sbatch = cluster.command("sbatch");
    sbatch.args(["--parsable", "--time=1"]).arg(&script).args(["long.toml", "--continue", "6"]).current_dir(&dir);
    let first = expect_ok(sbatch, "sbatch")?.trim().to_owned();
    eprintln!("xtask:   job {first} and its follow-ups (about 3 minutes)");
    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(2));
        if squeue_is_empty(cluster)? {
            // A follow-up is submitted before its predecessor ends: an empty queue is the end.
            std::thread::sleep(Duration::from_secs(2));
            if squeue_is_empty(cluster)? {
                break;
            }
        }
        if start.elapsed() > Duration::from_secs(600) {
            bail!("the chain of jobs from {first} did not end in 10 minutes:\n{}", job_outputs(&dir));
        }
    }
    let run_dir = std::fs::canonicalize(dir.join("results/long/latest"))?;
    let (header, rows) = read_results(&dir.join("results")).with_context(|| job_outputs(&dir))?;
    let ids: BTreeSet<&str> = rows.iter().filter_map(|r| r.first().map(String::as_str)).collect();
    let status = header.iter().position(|h| h == "status").context("results.csv has no status column")?;
    if let Some(row) = rows.iter().find(|r| r.get(status).is_none_or(|s| s != "finished")) {
        bail!("a process was not finished (cut by the time limit?): {row:?}");
    }
    let records = journal_records(&run_dir.join("journal"));
    let allocations = std::fs::read_to_string(run_dir.join("allocations.jsonl")).unwrap_or_default().lines().count();
    if rows.len() != total || ids.len() != total || records != total {
        bail!(
            "{} rows, {} distinct ids and {records} journal records, expected {total} each:\n{}",
            rows.len(),
            ids.len(),
            job_outputs(&dir)
        );
    }
    if !(2..=4).contains(&allocations) {
        bail!("the run went through {allocations} allocations, expected about 3:\n{}", job_outputs(&dir));
    }
    let report = Command::new(release("taskfarm-worker")).arg("report").arg(&run_dir).output()?;
    let report = String::from_utf8_lossy(&report.stdout).into_owned();
    if !report.contains(&format!("allocations: job {first} (")) {
        bail!("report does not name the allocations:\n{report}");
    }
    eprintln!("xtask:   {}", report.lines().find(|l| l.starts_with("allocations:")).unwrap_or_default());
    Ok(())
}

fn squeue_is_empty(cluster: &Cluster) -> Result<bool> {
    let out = cluster.command("squeue").args(["-h", "-o", "%i"]).output()?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().is_empty())
}

/// How many intact records a journal holds (its frames: a 4-byte length, a 4-byte CRC, the
/// payload), 0 while there is none. The xtask links none of taskfarm's crates, so it reads
/// the frames itself; it checks lengths, not checksums.
fn journal_records(path: &Path) -> usize {
    let Ok(bytes) = std::fs::read(path) else { return 0 };
    let mut at = b"taskfarm-journal v1\n".len();
    let mut count = 0;
    while let Some(head) = bytes.get(at..at + 4) {
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        if at + 8 + len > bytes.len() {
            break;
        }
        at += 8 + len;
        count += 1;
    }
    count
}
