//! The cases run on the one-node Slurm cluster: the shipped batch script from a fresh
//! directory, `submit` with a custom worker, `scancel` then `--resume`, a run continued
//! across allocations, and a run stopped by Slurm's early warning.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::{copy_into, expect_ok, release, run_within, Cluster, CASE_TIMEOUT};
use crate::results::{compare_rows, read_results};
use crate::root;

/// The shipped batch script, submitted with `sbatch --wait` from a directory that holds only
/// the worker binary and a spec: the same rows as `--backend serial`.
pub(super) fn batch_script_from_a_fresh_directory(cluster: &Cluster) -> Result<()> {
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
pub(super) fn submit_a_custom_worker(cluster: &Cluster) -> Result<()> {
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
pub(super) fn scancel_then_resume(cluster: &Cluster) -> Result<()> {
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
    // Slurm may call the job ended while its processes still exit (the master consolidates
    // after SIGTERM): the resume would be refused while the first run holds the directory.
    wait_for_lock_holder_to_end(&run_dir, start)?;
    let before = journal_records(&run_dir.join("journal"));
    if before >= total {
        bail!("the job finished before it was cancelled");
    }
    resume_job(cluster, &script, &run_dir, &dir, 3)?;
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
pub(super) fn continue_across_allocations(cluster: &Cluster) -> Result<()> {
    let dir = cluster.case_dir("continue")?;
    copy_into(&release("taskfarm-worker"), &dir)?;
    // 110 × 2 s on one worker rank with 2 threads: about 96 thread-seconds fit in a minute
    // after the 10 s margin and the start.
    let total = 110;
    write_long_sweep(&dir, total)?;
    let script = copy_into(&root().join("examples/slurm/sweep.sbatch"), &dir)?;
    let mut sbatch = cluster.command("sbatch");
    // The script's early warning (120 s) would come at once in a 1-minute allocation; 10 s
    // before the end is asked instead (the follow-ups ask the same, through
    // TASKFARM_SIGNAL_BEFORE). Slurm sends it early, 20 to 50 s into the minute, so it may end
    // an allocation before the deadline read from squeue does: an allocation more at most
    // (measured: 26 + 48 + 36 processes in one run, 24 + 48 + 22 + 16 in another).
    sbatch
        .args(["--parsable", "--time=1", "--signal=B:USR1@10"])
        .env("TASKFARM_SIGNAL_BEFORE", "10")
        .arg(&script)
        .args(["long.toml", "--continue", "6"])
        .current_dir(&dir);
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
    check_one_start_each(&dir, total)?;
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

/// The spec `long.toml` in `dir`: `total` processes of 2 s each, each of which appends its
/// x to `starts` when it starts.
fn write_long_sweep(dir: &Path, total: usize) -> Result<()> {
    let xs: Vec<String> = (0..total).map(|x| x.to_string()).collect();
    let starts = dir.join("starts");
    std::fs::write(
        dir.join("long.toml"),
        format!(
            "name = \"long\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo {{x}} >> {}; sleep 2; echo {{x}}\"]\n\
             [parameter_ranges]\nx = [{}]\n",
            starts.display(),
            xs.join(", ")
        ),
    )?;
    Ok(())
}

/// Checks that each of the `total` processes of `write_long_sweep`'s spec in `dir` started
/// exactly once: none was cut by a time limit or a warning and run again.
fn check_one_start_each(dir: &Path, total: usize) -> Result<()> {
    let text = std::fs::read_to_string(dir.join("starts")).unwrap_or_default();
    let mut starts: Vec<usize> = text.lines().filter_map(|l| l.trim().parse().ok()).collect();
    starts.sort_unstable();
    if starts != (0..total).collect::<Vec<_>>() {
        let mut seen = BTreeSet::new();
        let twice: Vec<usize> = starts.iter().copied().filter(|x| !seen.insert(*x)).collect();
        bail!(
            "{} starts for {total} processes (started more than once: {twice:?}); each must start once",
            starts.len()
        );
    }
    Ok(())
}

/// Slurm's early warning mid-run (`--signal=B:USR1@50` in a 2-minute allocation, so it
/// comes at 70 to 100 s; `--deadline 1h` keeps the deadline read from squeue out of it): the
/// batch script passes it on, the run starts no more processes, lets the running ones finish
/// and ends with 75; `--continue 1` is at its cap, so no follow-up is submitted. A resume in a
/// second job then finishes the run: every process started once and finished.
pub(super) fn early_warning_then_resume(cluster: &Cluster) -> Result<()> {
    let dir = cluster.case_dir("warning")?;
    copy_into(&release("taskfarm-worker"), &dir)?;
    // 110 × 2 s on 2 threads take about 110 s: more than the time before the warning.
    let total = 110;
    write_long_sweep(&dir, total)?;
    let script = copy_into(&root().join("examples/slurm/sweep.sbatch"), &dir)?;
    let mut sbatch = cluster.command("sbatch");
    sbatch
        .args(["--wait", "--time=2", "--signal=B:USR1@50"])
        .arg(&script)
        .args(["long.toml", "--deadline", "1h", "--continue", "1"])
        .current_dir(&dir);
    let out = run_within(sbatch, "sbatch --wait with an early warning")?;
    let said = job_outputs(&dir);
    if out.code != Some(75) {
        bail!("the warned job ended with {:?}, not 75 (unfinished, resumable):\n{said}", out.code);
    }
    // The whole output (job_outputs shows only the end of each).
    let whole: String = std::fs::read_dir(&dir)?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".out"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    for expected in [
        "passed on to the run",
        "taskfarm: SIGUSR1: the allocation ends soon",
        "not continued: the run went through 1 allocations, the cap (--continue 1)",
    ] {
        if !whole.contains(expected) {
            bail!("the job's output does not say `{expected}`:\n{whole}");
        }
    }
    if !squeue_is_empty(cluster)? {
        bail!("a follow-up job was submitted past the cap of --continue");
    }
    let run_dir = std::fs::canonicalize(dir.join("results/long/latest"))?;
    let before = journal_records(&run_dir.join("journal"));
    if before == 0 || before >= total {
        bail!("the warning came with {before} of {total} processes recorded: expected some, not all:\n{said}");
    }
    // 5 minutes: the script's own warning (120 s before the end) comes after the resume ends.
    resume_job(cluster, &script, &run_dir, &dir, 5)?;
    let (header, rows) = read_results(&dir.join("results"))?;
    let status = header.iter().position(|h| h == "status").context("results.csv has no status column")?;
    if let Some(row) = rows.iter().find(|r| r.get(status).is_none_or(|s| s != "finished")) {
        bail!("a process was not finished (cut by the warning or the limit?): {row:?}");
    }
    let records = journal_records(&run_dir.join("journal"));
    if rows.len() != total || records != total {
        bail!(
            "after the resume: {} rows and {records} journal records ({before} before it), expected {total} each",
            rows.len()
        );
    }
    check_one_start_each(&dir, total)?;
    eprintln!("xtask:   the warning stopped the run at {before} of {total} processes; the resume did the rest");
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

/// Waits until the program named in `run_dir/run.lock` (`pid N on host H`, on this one-node
/// cluster) has ended.
fn wait_for_lock_holder_to_end(run_dir: &Path, start: Instant) -> Result<()> {
    let text = std::fs::read_to_string(run_dir.join("run.lock")).unwrap_or_default();
    let Some(pid) = text.split_whitespace().skip_while(|w| *w != "pid").nth(1).and_then(|p| p.parse::<u32>().ok())
    else {
        return Ok(());
    };
    let alive = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'))
    };
    while alive() {
        if start.elapsed() > CASE_TIMEOUT {
            bail!("the cancelled run (pid {pid}) still holds {} after the job ended", run_dir.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Submits the batch `script` to resume the run in `run_dir` (from `dir`, within `minutes`)
/// and waits for it to end, which it must do successfully.
fn resume_job(cluster: &Cluster, script: &Path, run_dir: &Path, dir: &Path, minutes: u32) -> Result<()> {
    let mut resume = cluster.command("sbatch");
    resume
        .args(["--wait", &format!("--time={minutes}")])
        .arg(script)
        .arg(run_dir.join("operation.toml"))
        .arg("--resume")
        .arg(run_dir)
        .current_dir(dir);
    expect_ok(resume, "sbatch --wait of the resume").with_context(|| job_outputs(dir)).map(drop)
}
