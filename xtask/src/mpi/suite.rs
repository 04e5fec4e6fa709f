//! The MPI tests `cargo xtask test` runs under a real mpirun: the conformance suite against
//! serial, threads per rank, tiny processes exactly once, failures that end every rank, the
//! worker binary end to end, scheduling (which rank ran what), and a killed worker rank.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{build_worker, describe, found, launch, mpi_environment, on_path, MpirunArgs, INSTALL_HINT};
use crate::results::{journal_len, read_results, run_dir};
use crate::runner::{run_to_files, tail, Outcome};
use crate::{cargo, root, run_checked, target_dir, Tally};

/// Builds and runs the MPI tests under mpirun when it is found (a failure under CI when not).
pub fn test(ci: bool) -> Result<()> {
    if !found() {
        if ci {
            bail!("the MPI tests must run under CI but mpirun/mpicc were not found: {INSTALL_HINT}");
        }
        eprintln!("xtask: skipping MPI tests: mpirun not found ({INSTALL_HINT})");
        return Ok(());
    }
    let scenarios = scenario_binary()?;
    let scratch = std::env::temp_dir().join(format!("taskfarm-xtask-mpi-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("could not create {}", scratch.display()))?;
    let mut tally = Tally::new("mpi");
    for ranks in [1, 2, 3, 5] {
        let outcome = run_case(&scratch, ranks, &scenarios, &["conformance"]);
        tally.check(&format!("conformance against serial, {ranks} rank(s)"), outcome, |o| {
            expect_success(o)?;
            expect_in(&o.stdout, "same as serial")
        });
    }
    for (ranks, threads) in [(2, "2"), (3, "2"), (2, "4"), (3, "4")] {
        let outcome = run_case(&scratch, ranks, &scenarios, &["conformance", threads]);
        tally.check(&format!("conformance against serial, {ranks} ranks × {threads} threads"), outcome, |o| {
            expect_success(o)?;
            expect_in(&o.stdout, "same as serial")
        });
    }
    for (ranks, threads) in [(2, "4"), (3, "2")] {
        let outcome = run_case(&scratch, ranks, &scenarios, &["hybrid", threads]);
        let name = format!(
            "2-thread processes, crash, timeout, retry: same as serial, {ranks} ranks × {threads} threads{}",
            if ranks > 2 { ", each retry on another rank" } else { "" }
        );
        tally.check(&name, outcome, |o| {
            expect_success(o)?;
            expect_in(&o.stdout, "same as serial")?;
            if ranks > 2 {
                expect_in(&o.stdout, "retries ran on another rank")?;
            }
            Ok(())
        });
    }
    let outcome = run_case(&scratch, 2, &scenarios, &["too-many-threads", "2"]);
    tally.check("processes asking for more threads than a rank has: every rank ends with an error", outcome, |o| {
        expect_failure(o)?;
        expect_in(&o.stderr, "each MPI worker rank has 2")
    });
    let outcome = run_case(&scratch, 4, &scenarios, &["exactly-once"]);
    tally.check("1198 tiny processes, each exactly once, 4 ranks", outcome, expect_success);
    let outcome = run_case(&scratch, 3, &scenarios, &["unwritable"]);
    tally.check("a master that cannot write its results ends every rank, non-zero exit", outcome, |o| {
        expect_failure(o)?;
        expect_in(&o.stderr, "is a file, not a directory")
    });
    let outcome = run_case(&scratch, 3, &scenarios, &["stray-panic"]);
    tally.check("a panic outside any process aborts the job", outcome, |o| {
        expect_failure(o)?;
        expect_in(&o.stderr, "aborting the MPI job")
    });
    spmd_example(&scratch, &mut tally);
    match build_worker() {
        Ok(worker) => {
            super::rows::worker_end_to_end(&scratch, &mut tally, ci, &worker);
            super::rows::sweep_shapes(&scratch, &mut tally, &worker);
            super::rows::chain_stages(&scratch, &mut tally, &worker);
            super::persistent::cases(&scratch, &mut tally, &worker);
            super::output::cases(&scratch, &mut tally, &worker);
            super::rows::ranks_against_threads(&scratch, &mut tally);
            super::scheduling::scheduling(&scratch, &mut tally);
            worker_rank_killed(&scratch, &mut tally);
            super::signals::signals_mid_run(&scratch, &mut tally);
            super::speculation::cases(&scratch, &mut tally);
        }
        Err(e) => tally.record("build the release worker with MPI for the worker tests", Err(e)),
    }
    let _ = std::fs::remove_dir_all(&scratch);
    tally.finish()
}

/// Builds backend-mpi's MPI test program and returns its path.
pub(crate) fn scenario_binary() -> Result<PathBuf> {
    eprintln!("xtask: build the MPI tests (cargo test -p taskfarm-backend-mpi --no-run)");
    let output = cargo()
        .args(["test", "-p", "taskfarm-backend-mpi", "--test", "mpi_scenarios", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("could not start cargo")?;
    if !output.status.success() {
        bail!("building the MPI tests failed ({})", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter(|line| line.contains("\"name\":\"mpi_scenarios\""))
        .find_map(|line| json_string_after(line, "\"executable\":\""))
        .map(PathBuf::from)
        .context("cargo did not name the mpi_scenarios test program")
}

/// The JSON string value that starts right after `key` in `line` (escapes `\\` and `\"` only).
fn json_string_after(line: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(key)? + key.len()..];
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(chars.next()?),
            c => value.push(c),
        }
    }
    None
}

/// The longest any MPI test may take: beyond, it hangs, which is a failure.
const CASE_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `program args` under `mpirun -n ranks` (oversubscribed), output to files, with a timeout.
fn run_case(scratch: &Path, ranks: u32, program: &Path, args: &[&str]) -> Result<Outcome> {
    let mpirun = on_path("mpirun").context(format!("mpirun was not found on PATH: {INSTALL_HINT}"))?;
    let mut command = Command::new(mpirun);
    command.arg("-n").arg(ranks.to_string());
    mpi_environment(&mut command, true);
    command.arg(program).args(args).current_dir(scratch);
    run_with_timeout(scratch, command)
}

pub(super) fn run_with_timeout(scratch: &Path, command: Command) -> Result<Outcome> {
    let line = describe(&command);
    eprintln!("xtask: {line}");
    let outcome = run_to_files(scratch, "case", command, CASE_TIMEOUT, |_| Ok(()))?;
    if outcome.timed_out {
        bail!("`{line}` hung: no end after {}s\n{}", CASE_TIMEOUT.as_secs(), tail(&outcome.stderr));
    }
    Ok(outcome)
}

pub(super) fn expect_success(outcome: &Outcome) -> Result<()> {
    if outcome.code != Some(0) {
        bail!("exit code {:?}, expected 0\n{}", outcome.code, tail(&outcome.stderr));
    }
    Ok(())
}

pub(super) fn expect_failure(outcome: &Outcome) -> Result<()> {
    if outcome.code == Some(0) {
        bail!("exit code 0, expected a failure\n{}", tail(&outcome.stderr));
    }
    Ok(())
}

pub(super) fn expect_in(text: &str, needle: &str) -> Result<()> {
    if !text.contains(needle) {
        bail!("expected `{needle}` in the output\n{}", tail(text));
    }
    Ok(())
}

impl Tally {
    /// Records an MPI case: its run, then `verdict` on what it printed.
    pub(super) fn check(&mut self, name: &str, outcome: Result<Outcome>, verdict: impl FnOnce(&Outcome) -> Result<()>) {
        self.record(name, outcome.and_then(|o| verdict(&o)));
    }
}

/// The library user's example: one `main` for every rank.
fn spmd_example(scratch: &Path, tally: &mut Tally) {
    let name = "the spmd example under mpirun, 3 ranks";
    let built = run_checked(
        cargo().args(["build", "-p", "examples", "--example", "spmd", "--features", "mpi"]),
        "build the spmd example with MPI",
    );
    let outcome = built.and_then(|()| {
        let spmd = target_dir().join("debug").join("examples").join("spmd");
        run_case(scratch, 3, &spmd, &[&path_arg(scratch)])
    });
    tally.check(name, outcome, |o| {
        expect_success(o)?;
        expect_in(&o.stdout, "processes finished")?;
        // The workers' log records travelled to the master's operation.log.
        let log = std::fs::read_dir(scratch.join("oscillator"))?
            .flatten()
            .map(|run| run.path().join("operation.log"))
            .find(|log| log.is_file())
            .context("the spmd run has an operation.log")?;
        let text = std::fs::read_to_string(&log)?;
        for rank in ["rank-1", "rank-2"] {
            if !text.contains(&format!(" {rank} process=")) {
                bail!("{} has no record of {rank}:\n{text}", log.display());
            }
        }
        Ok(())
    });
}

/// kill -9 of one worker rank mid-run: the job ends non-zero (as MPI jobs do), the journal
/// keeps what finished, and `--resume` on fewer ranks runs every process exactly once.
fn worker_rank_killed(scratch: &Path, tally: &mut Tally) {
    let name = "kill -9 of a worker rank mid-run, then --resume: every process exactly once";
    let total = 120;
    let outcome = (|| -> Result<Outcome> {
        let spec = scratch.join("killed_rank.toml");
        std::fs::write(
            &spec,
            format!(
                "name = \"killed_rank\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 0.05; echo {{x}}\"]\n\
                 [parameter_ranges]\nx = [{}]\n",
                (0..total).map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
            ),
        )?;
        let results = scratch.join("killed-results");
        let run_args = vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&results), "--quiet".into()];
        let command = launch(&oversubscribed(4, run_args))?;
        eprintln!("xtask: {}", describe(&command));
        // Once some records are journaled, kill -9 the worker rank 2.
        let mut victim = None;
        let killed = run_to_files(scratch, "killed", command, Duration::from_secs(120), |_| {
            if victim.is_none() && journal_len(&results) > 4_000 {
                let pid = rank_pid(2, &path_arg(&spec)).context("no process of MPI rank 2 was found")?;
                eprintln!("xtask:   kill -9 of rank 2 (pid {pid})");
                Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
                victim = Some(pid);
            }
            Ok(())
        })?;
        if victim.is_none() {
            bail!("the run ended or stalled before 4 kB of records were journaled");
        }
        if killed.timed_out {
            bail!("the job did not end after one of its ranks was killed");
        }
        if killed.code == Some(0) {
            bail!("the job exited 0 after one of its ranks was killed");
        }
        let dir = run_dir(&results)?;
        let resume = vec![
            "run".into(),
            path_arg(&dir.join("operation.toml")),
            "--resume".into(),
            path_arg(&dir),
            "--quiet".into(),
        ];
        let outcome = run_with_timeout(scratch, launch(&oversubscribed(3, resume))?)?;
        expect_success(&outcome)?;
        let (_, rows) = read_results(&dir)?;
        let ids: std::collections::BTreeSet<&str> = rows.iter().filter_map(|r| r.first().map(String::as_str)).collect();
        if rows.len() != total || ids.len() != total {
            bail!("after --resume: {} rows and {} distinct ids, expected {total}", rows.len(), ids.len());
        }
        Ok(outcome)
    })();
    tally.record(name, outcome.map(drop));
}

/// The pid of the process of MPI rank `rank` (from `OMPI_COMM_WORLD_RANK` in its
/// environment) whose command line names `marker` (so no other job's rank is taken).
pub(super) fn rank_pid(rank: u32, marker: &str) -> Option<u32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("taskfarm-worker") || !cmdline.contains(marker) {
            return None;
        }
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        environ.split(|&b| b == 0).any(|var| var == wanted.as_bytes()).then_some(pid)
    })
}

/// `cargo xtask mpirun -n ranks --oversubscribe -- worker_args`, as the worker tests launch it.
pub(super) fn oversubscribed(ranks: u32, worker_args: Vec<String>) -> MpirunArgs {
    MpirunArgs { ranks: Some(ranks), hostfile: None, oversubscribe: true, per_node: false, dry_run: false, worker_args }
}

pub(super) fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A spec of examples/specs/ to run end to end: pi.toml (a kind the stock worker knows), else a sweep, else the first.
pub(super) fn sweep_spec() -> Option<PathBuf> {
    let mut specs: Vec<PathBuf> = std::fs::read_dir(root().join("examples").join("specs"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    specs.sort();
    ["pi.toml", "sweep"]
        .iter()
        .find_map(|name| specs.iter().find(|p| p.to_string_lossy().contains(name)))
        .or(specs.first())
        .cloned()
}
