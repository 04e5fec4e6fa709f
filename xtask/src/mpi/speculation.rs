//! Duplicated stragglers under a real `mpirun`: once nothing is left to send, a process
//! running far past its prediction runs a copy on another rank; the first copy to finish is
//! recorded once, and the rank running the other is told to stop it (its command is killed).
//! With `speculate = false` the straggler runs once, to its end.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::launch;
use super::suite::{expect_in, expect_success, oversubscribed, path_arg, run_with_timeout};
use crate::release_worker;
use crate::results::{read_results, run_dir};
use crate::Tally;

/// Runs the cases with the release worker built with MPI.
pub(super) fn cases(scratch: &Path, tally: &mut Tally) {
    let dir = scratch.join("speculation");
    tally.record(
        "a straggler under -n 3 runs a copy on another rank; the first to finish is recorded once, the other killed",
        straggler(&dir, "copied", 120, ""),
    );
    tally.record(
        "speculate = false under -n 3: the straggler runs once, to its end",
        straggler(&dir, "once", 3, "speculate = false"),
    );
}

/// 40 processes of 50 ms; the first copy of x = 39 to start (the one that makes the
/// directory `started`) takes `long` seconds, any later copy 50 ms.
fn straggler(dir: &Path, name: &str, long: u32, extra: &str) -> Result<()> {
    let case = dir.join(name);
    std::fs::create_dir_all(&case)?;
    let xs: Vec<String> = (0..40).map(|x| x.to_string()).collect();
    let spec = case.join("straggle.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"straggle\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", '''if [ {{x}} = 39 ] && mkdir \
             \"{{result_dir}}/started\" 2>/dev/null; then echo $$ > \"{{result_dir}}/first-pid\"; sleep {long}; echo \
             first; else sleep 0.05; echo later; fi''']\nparameter_ranges = {{ x = [{}] }}\n{extra}\n",
            xs.join(", ")
        ),
    )?;
    let results = case.join("results");
    let args =
        vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&results), "--quiet".into(), "-v".into()];
    let outcome = run_with_timeout(&case, launch(&oversubscribed(3, args))?)?;
    expect_success(&outcome)?;
    let (header, rows) = read_results(&results)?;
    let column = |name: &str| header.iter().position(|h| h == name).with_context(|| format!("no {name} column"));
    let (id, output) = (column("id")?, column("stdout")?);
    let mut ids: Vec<&str> = rows.iter().filter_map(|r| r.get(id).map(String::as_str)).collect();
    ids.sort_unstable();
    ids.dedup();
    if rows.len() != 40 || ids.len() != 40 {
        bail!("{} rows, {} distinct ids: expected 40 of each", rows.len(), ids.len());
    }
    let row = rows.iter().find(|r| r.get(id).is_some_and(|i| i == "39")).context("no row of process 39")?;
    let who = row.get(output).map(String::as_str).unwrap_or_default();
    let log = std::fs::read_to_string(run_dir(&results)?.join("operation.log"))?;
    if extra.is_empty() {
        if who != "later" {
            bail!("process 39's row is the first copy's ({who}), which runs {long} s: no copy won");
        }
        expect_in(&log, "a copy starts on rank-")?;
        expect_in(&log, "process 39 ran twice")?;
        let pid: u32 = std::fs::read_to_string(run_dir(&results)?.join("first-pid"))?.trim().parse()?;
        expect_gone(pid)?;
    } else {
        if who != "first" {
            bail!("process 39's row is `{who}`, not the only copy's (`first`)");
        }
        if log.contains("a copy starts") {
            bail!("a copy started although speculate = false:\n{log}");
        }
    }
    // The journal holds one record per process (the loser's was dropped).
    let report = Command::new(release_worker()).arg("report").arg(run_dir(&results)?).output()?;
    expect_in(&String::from_utf8_lossy(&report.stdout), "processes: 40 recorded, 40 finished")
}

/// Fails when the process `pid` still runs 10 s from now.
fn expect_gone(pid: u32) -> Result<()> {
    let start = Instant::now();
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        if stat.is_err() || stat.is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'))) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(10) {
            bail!("the losing copy's shell {pid} still runs");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
