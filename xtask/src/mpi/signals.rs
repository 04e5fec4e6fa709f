//! MPI runs stopped mid-way while long processes run and short ones have finished — SIGINT
//! or SIGTERM to mpirun, SIGINT to rank 0, `kill -9` of a worker rank or of rank 0, `cancel`
//! from outside — then resumed: what finished is consolidated (or, with rank 0 killed, in
//! the journal), nothing survives, every process runs once. A `cancel` drains: the
//! processes running at that moment finish and are recorded.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::suite::{expect_in, expect_success, oversubscribed, path_arg, run_with_timeout};
use super::{describe, launch};
use crate::release_worker;
use crate::results::{read_results, run_dir};
use crate::runner::{run_to_files, tail};
use crate::Tally;

/// How a run under mpirun is stopped in [`signals_mid_run`].
#[derive(Debug, Clone, Copy)]
enum MpiStop {
    /// `kill -INT` of mpirun, launched as `cargo xtask mpirun` launches it (5 s between
    /// mpirun's SIGTERM and SIGKILL to the ranks).
    IntToMpirun,
    /// `kill -TERM` of mpirun (as a batch system's time limit sends it).
    TermToMpirun,
    /// `kill -INT` of rank 0 alone.
    IntToMaster,
    /// `kill -9` of worker rank 1.
    KillWorker,
    /// `kill -9` of rank 0, the master: nobody consolidates, but every finished record is
    /// in the journal and `--resume` consolidates.
    KillMaster,
}

/// Stopped mid-run while long processes run and short ones have finished: the job ends
/// (no rank is left waiting), every finished process is in results.csv and the journal,
/// the resume command is printed, no command the run started survives, and `--resume`
/// then runs every process exactly once.
pub(super) fn signals_mid_run(scratch: &Path, tally: &mut Tally) {
    let stops =
        [MpiStop::IntToMpirun, MpiStop::TermToMpirun, MpiStop::IntToMaster, MpiStop::KillWorker, MpiStop::KillMaster];
    for stop in stops {
        let name =
            format!("{stop:?} while long processes run: finished ones consolidated, no survivors, then --resume");
        let outcome = signal_case(scratch, stop);
        tally.record(&name, outcome);
    }
    tally.record(
        "cancel while long processes run, 4 ranks: they finish and are recorded, workers end normally, exit 130, \
         then --resume runs the rest once",
        cancel_case(scratch),
    );
}

fn signal_case(scratch: &Path, stop: MpiStop) -> Result<()> {
    let case = scratch.join(format!("signal-{stop:?}"));
    std::fs::create_dir_all(&case)?;
    let d = case.display();
    // x = 4 and 5 wait for the file `go` (40 s at most); 0 to 3 end at once. The short ones
    // come first: the master queues nothing behind a process of unknown duration, so a short
    // one after a long one would wait for a worker.
    let spec = case.join("slow.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"slow\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", '''echo $$ >> {d}/pids; i=0; \
             if [ {{x}} = 4 ] || [ {{x}} = 5 ]; then while [ ! -e {d}/go ] && [ $i -lt 400 ]; do sleep 0.1; \
             i=$((i + 1)); done; fi; echo {{x}}''']\n[parameter_ranges]\nx = [0, 1, 2, 3, 4, 5]\n"
        ),
    )?;
    let results = case.join("results");
    // `-vv`: operation.log then says when each process ended (the check below reads it).
    let args =
        vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&results), "--quiet".into(), "-vv".into()];
    let command = launch(&oversubscribed(3, args))?;
    eprintln!("xtask: {}", describe(&command));
    let mut signalled = false;
    let outcome = run_to_files(&case, "run", command, Duration::from_secs(120), |_| {
        // Once the four short processes are journaled (and only the long ones run).
        if signalled || finished_in_log(&results) < 4 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
        let marker = path_arg(&spec);
        let (signal, pid) = match stop {
            MpiStop::IntToMpirun => ("-INT", pid_of("mpirun", &marker, None)),
            MpiStop::TermToMpirun => ("-TERM", pid_of("mpirun", &marker, None)),
            MpiStop::IntToMaster => ("-INT", pid_of("taskfarm-worker", &marker, Some(0))),
            MpiStop::KillWorker => ("-KILL", pid_of("taskfarm-worker", &marker, Some(1))),
            MpiStop::KillMaster => ("-KILL", pid_of("taskfarm-worker", &marker, Some(0))),
        };
        let pid = pid.context("the process to signal was not found")?;
        eprintln!("xtask:   kill {signal} {pid}");
        Command::new("kill").args([signal, &pid.to_string()]).status()?;
        signalled = true;
        Ok(())
    })?;
    if !signalled {
        bail!("the run ended before the short processes were journaled:\n{}", tail(&outcome.stderr));
    }
    if outcome.timed_out {
        bail!("the job did not end after the signal:\n{}", tail(&outcome.stderr));
    }
    match stop {
        MpiStop::IntToMaster if outcome.code != Some(130) => {
            bail!("exit {:?}, expected 130:\n{}", outcome.code, tail(&outcome.stderr))
        }
        _ if outcome.code == Some(0) => bail!("exit 0 after a signal"),
        _ => {}
    }
    let said = format!("{}{}", outcome.stdout, outcome.stderr);
    if let MpiStop::KillMaster = stop {
        // Nobody is left to consolidate or to print the resume command: the journal holds
        // what finished, as `report` says.
        let dir = run_dir(&results)?;
        let report = Command::new(release_worker()).arg("report").arg(&dir).output()?;
        expect_in(&String::from_utf8_lossy(&report.stdout), "processes: 4 recorded, 4 finished")?;
    } else {
        expect_in(&said, "--resume")?;
        let (_, rows) = read_results(&results)?;
        let ids: BTreeSet<&str> = rows.iter().filter_map(|r| r.first().map(String::as_str)).collect();
        for id in ["0", "1", "2", "3"] {
            if !ids.contains(id) {
                bail!("process {id} finished before the signal but is not in results.csv: {ids:?}");
            }
        }
    }
    match stop {
        // The master names the ranks that held the long processes.
        MpiStop::KillWorker | MpiStop::IntToMpirun | MpiStop::TermToMpirun => expect_in(&said, "held processes")?,
        _ => {}
    }
    if let MpiStop::IntToMpirun | MpiStop::TermToMpirun | MpiStop::IntToMaster = stop {
        // Said once, by rank 0, not once per rank.
        let said_stop = said.matches("no new process starts").count();
        if said_stop > 1 {
            bail!("the stop was announced {said_stop} times:\n{}", tail(&outcome.stderr));
        }
    }
    expect_no_survivors(&case.join("pids"))?;
    // The resume runs the rest at once (the long ones no longer wait) and only the rest.
    std::fs::write(case.join("go"), "")?;
    let dir = run_dir(&results)?;
    let resume =
        vec!["run".into(), path_arg(&dir.join("operation.toml")), "--resume".into(), path_arg(&dir), "--quiet".into()];
    let resumed = run_with_timeout(&case, launch(&oversubscribed(3, resume))?)?;
    expect_success(&resumed)?;
    let (_, rows) = read_results(&results)?;
    let ids: BTreeSet<&str> = rows.iter().filter_map(|r| r.first().map(String::as_str)).collect();
    if rows.len() != 6 || ids.len() != 6 {
        bail!("after --resume: {} rows and {} distinct ids, expected 6", rows.len(), ids.len());
    }
    expect_no_survivors(&case.join("pids"))
}

/// How long each long process of [`cancel_case`] runs, in seconds.
const LONG_S: f64 = 4.0;

/// `taskfarm-worker cancel DIR` under `mpirun -n 4` while three long processes run (one
/// per worker, listed by `status.json` as running on their ranks) and more wait to be
/// handed out: nothing more is handed out, the running ones
/// finish and get their records (they do not run again on `--resume`), the workers are shut
/// down normally (no `MPI_Abort`), the run says how to resume and exits 130; `--resume`
/// then runs every other process, and each process has run exactly once.
fn cancel_case(scratch: &Path) -> Result<()> {
    let case = scratch.join("cancel");
    std::fs::create_dir_all(&case)?;
    let d = case.display();
    // x = 0 to 3 end at once, 4 to 15 run LONG_S; the short ones come first (see
    // `signal_case`). `runs` says when each starts and ends.
    let total = 16u32;
    let spec = case.join("slow.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"slow\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", '''echo $$ >> {d}/pids; \
             echo start {{x}} >> {d}/runs; if [ {{x}} -ge 4 ]; then sleep {LONG_S}; fi; echo end {{x}} >> {d}/runs; \
             echo {{x}}''']\n[parameter_ranges]\nx = [{}]\n",
            (0..total).map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
        ),
    )?;
    let results = case.join("results");
    let runs = case.join("runs");
    let args = vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&results), "--quiet".into()];
    let command = launch(&oversubscribed(4, args))?;
    eprintln!("xtask: {}", describe(&command));
    // The processes started when the cancel was sent.
    let mut started_before: Option<BTreeSet<u32>> = None;
    let outcome = run_to_files(&case, "run", command, Duration::from_secs(120), |_| {
        if started_before.is_some() {
            return Ok(());
        }
        let (started, ended) = runs_of(&runs);
        // Once the short ones ended and every worker runs a long one.
        if ended.len() < 4 || started.iter().filter(|&&x| x >= 4).count() < 3 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
        let dir = run_dir(&results)?;
        // status.json lists the long ones by the ranks that run them (rewritten twice a second).
        let listed = Instant::now();
        while let Err(e) = lists_long_ones(&dir) {
            if listed.elapsed() > Duration::from_millis(1500) {
                bail!("status.json does not list what the workers run: {e}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (started, _) = runs_of(&runs);
        eprintln!("xtask:   taskfarm-worker cancel {} (started: {started:?})", dir.display());
        let cancel = Command::new(release_worker()).arg("cancel").arg(&dir).output()?;
        if !cancel.status.success() {
            bail!("cancel failed: {}", String::from_utf8_lossy(&cancel.stderr));
        }
        started_before = Some(started.into_iter().collect());
        Ok(())
    })?;
    let Some(started_before) = started_before else {
        bail!("the run ended before the long processes started:\n{}", tail(&outcome.stderr));
    };
    if outcome.timed_out {
        bail!("the job did not end after the cancel:\n{}", tail(&outcome.stderr));
    }
    if outcome.code != Some(130) {
        bail!("exit {:?}, expected 130:\n{}", outcome.code, tail(&outcome.stderr));
    }
    let said = format!("{}{}", outcome.stdout, outcome.stderr);
    expect_in(&said, "--resume")?;
    if said.contains("MPI_ABORT") || said.contains("unfinished") {
        bail!("the cancelled job was aborted, not drained:\n{}", tail(&said));
    }
    // Every process started before the cancel ran to its end and has a finished row, and
    // none started after it.
    let (header, rows) = read_results(&results)?;
    let column = |name: &str| header.iter().position(|h| h == name).with_context(|| format!("no {name} column"));
    let (status, duration) = (column("status")?, column("duration_s")?);
    let recorded: BTreeSet<u32> = rows.iter().filter_map(|r| r.first()?.parse().ok()).collect();
    if recorded != started_before {
        bail!("after the cancel, records of {recorded:?}; expected those started before it: {started_before:?}");
    }
    for row in rows.iter().filter(|r| r.first().and_then(|id| id.parse::<u32>().ok()).is_some_and(|x| x >= 4)) {
        let ran_s: f64 = row.get(duration).and_then(|d| d.parse().ok()).unwrap_or(0.0);
        if row.get(status).map(String::as_str) != Some("finished") || ran_s < LONG_S * 0.9 {
            bail!("a long process running at the cancel was cut short: {row:?}");
        }
    }
    if recorded.len() == total as usize {
        bail!("every process was handed out before the cancel: nothing left to resume");
    }
    expect_no_survivors(&case.join("pids"))?;
    let dir = run_dir(&results)?;
    let resume =
        vec!["run".into(), path_arg(&dir.join("operation.toml")), "--resume".into(), path_arg(&dir), "--quiet".into()];
    let resumed = run_with_timeout(&case, launch(&oversubscribed(4, resume))?)?;
    expect_success(&resumed)?;
    let (_, rows) = read_results(&results)?;
    let ids: BTreeSet<&str> = rows.iter().filter_map(|r| r.first().map(String::as_str)).collect();
    if rows.len() != total as usize || ids.len() != total as usize {
        bail!("after --resume: {} rows and {} distinct ids, expected {total}", rows.len(), ids.len());
    }
    let (started, ended) = runs_of(&runs);
    for x in 0..total {
        let (s, e) = (started.iter().filter(|&&y| y == x).count(), ended.iter().filter(|&&y| y == x).count());
        if (s, e) != (1, 1) {
            bail!("process {x} started {s} times and ended {e} times, expected once each");
        }
    }
    expect_no_survivors(&case.join("pids"))
}

/// Whether `status.json` in `dir` lists three processes of [`cancel_case`]'s long ones
/// (ids 4 and up), each on a rank of its own, with their time so far.
fn lists_long_ones(dir: &Path) -> Result<()> {
    let text = std::fs::read_to_string(dir.join("status.json"))?;
    let status: serde_json::Value = serde_json::from_str(&text)?;
    let listed = status["longest_running"].as_array().context("no longest_running")?;
    let long: Vec<&serde_json::Value> = listed.iter().filter(|p| p["id"].as_u64().is_some_and(|id| id >= 4)).collect();
    let ranks: BTreeSet<&str> =
        long.iter().filter_map(|p| p["worker"].as_str()).filter(|w| w.contains("rank-")).collect();
    if long.len() != 3 || ranks.len() != 3 || long.iter().any(|p| p["running_s"].as_f64().is_none_or(|s| s <= 0.0)) {
        bail!("{text}");
    }
    Ok(())
}

/// The processes that started and those that ended, as `runs` lists them (`start X`, `end X`).
fn runs_of(runs: &Path) -> (Vec<u32>, Vec<u32>) {
    let text = std::fs::read_to_string(runs).unwrap_or_default();
    let of =
        |what: &str| -> Vec<u32> { text.lines().filter_map(|l| l.strip_prefix(what)?.trim().parse().ok()).collect() };
    (of("start "), of("end "))
}

/// How many commands `operation.log` under `base` says ended with status 0.
fn finished_in_log(base: &Path) -> usize {
    let log = run_dir(base).ok().and_then(|dir| std::fs::read_to_string(dir.join("operation.log")).ok());
    log.map_or(0, |log| log.lines().filter(|l| l.contains("exited with status 0")).count())
}

/// The pid of a process whose command line starts with a program named `program`, names
/// `marker`, and (when `rank` is given) whose environment makes it that MPI rank; the
/// lowest such pid (a rank's forked helpers come after it).
fn pid_of(program: &str, marker: &str, rank: Option<u32>) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let mut args = cmdline.split(|&b| b == 0).map(String::from_utf8_lossy);
            let first = args.next()?;
            if Path::new(first.as_ref()).file_name().is_none_or(|n| n != program) {
                return None;
            }
            if !String::from_utf8_lossy(&cmdline).contains(marker) {
                return None;
            }
            if let Some(rank) = rank {
                let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
                let environ = std::fs::read(entry.path().join("environ")).ok()?;
                if !environ.split(|&b| b == 0).any(|var| var == wanted.as_bytes()) {
                    return None;
                }
            }
            Some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids.first().copied()
}

/// Fails when a pid listed in `pids` (one per line) still runs 10 s from now.
fn expect_no_survivors(pids: &Path) -> Result<()> {
    let text = std::fs::read_to_string(pids).unwrap_or_default();
    let start = Instant::now();
    for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
            let alive = stat.is_ok_and(|s| !s.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'));
            if !alive {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("command {pid} started by the run still runs after the job ended");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}
