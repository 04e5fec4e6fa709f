//! The MPI tests `cargo xtask test` runs under a real mpirun: the conformance suite against
//! serial, threads per rank, tiny processes exactly once, failures that end every rank, the
//! worker binary end to end, scheduling (which rank ran what), and a killed worker rank.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{build_worker, describe, found, launch, mpi_environment, on_path, MpirunArgs, INSTALL_HINT};
use crate::results::{compare_results, find_results_csv, journal_len, read_results, run_dir};
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
            worker_end_to_end(&scratch, &mut tally, ci, &worker);
            sweep_shapes(&scratch, &mut tally, &worker);
            chain_stages(&scratch, &mut tally, &worker);
            super::persistent::cases(&scratch, &mut tally, &worker);
            ranks_against_threads(&scratch, &mut tally);
            scheduling(&scratch, &mut tally);
            worker_rank_killed(&scratch, &mut tally);
            super::signals::signals_mid_run(&scratch, &mut tally);
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
    fn check(&mut self, name: &str, outcome: Result<Outcome>, verdict: impl FnOnce(&Outcome) -> Result<()>) {
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

/// The worker binary through `cargo xtask mpirun`, against `--backend serial` on the same spec.
fn worker_end_to_end(scratch: &Path, tally: &mut Tally, ci: bool, worker: &Path) {
    let name = "taskfarm-worker through cargo xtask mpirun -n 4, same results.csv as serial";
    let Some(spec) = sweep_spec() else {
        if ci {
            tally.record(name, Err(anyhow::anyhow!("no spec in examples/specs/ to run")));
        } else {
            eprintln!("xtask: skipping the worker end-to-end MPI test: no spec in examples/specs/");
        }
        return;
    };
    let outcome = mpi_and_serial(scratch, worker, &spec, 4, "end-to-end")
        .and_then(|both| compare_results(&both.serial_dir, &both.mpi_dir));
    tally.record(name, outcome);
}

/// A spec run under `mpirun -n ranks` and with `--backend serial`, both successful.
struct Both {
    mpi: Outcome,
    mpi_dir: PathBuf,
    serial_dir: PathBuf,
}

/// Runs `spec` under `mpirun -n ranks` into `scratch/<label>-mpi` and on the serial backend
/// into `scratch/<label>-serial`; an error unless both succeed.
fn mpi_and_serial(scratch: &Path, worker: &Path, spec: &Path, ranks: u32, label: &str) -> Result<Both> {
    let (mpi_dir, serial_dir) = (scratch.join(format!("{label}-mpi")), scratch.join(format!("{label}-serial")));
    let args = oversubscribed(
        ranks,
        vec!["run".into(), path_arg(spec), "--results".into(), path_arg(&mpi_dir), "--quiet".into()],
    );
    let mpi = run_with_timeout(scratch, launch(&args)?)?;
    let mut serial = Command::new(worker);
    serial.arg("run").arg(spec).args(["--backend", "serial", "--quiet", "--results"]).arg(&serial_dir);
    let serial = run_with_timeout(scratch, serial)?;
    expect_success(&mpi)?;
    expect_success(&serial)?;
    Ok(Both { mpi, mpi_dir, serial_dir })
}

/// The example chain under `mpirun -n 3` (every rank runs the chain, rank 0 leads) gives
/// the serial rows in both stages.
fn chain_stages(scratch: &Path, tally: &mut Tally, worker: &Path) {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/specs/chain_simulate_analyse.toml");
    let outcome = (|| -> Result<()> {
        let both = mpi_and_serial(scratch, worker, &spec, 3, "chain")?;
        expect_in(&both.mpi.stdout, "stage `analyse`: 3 finished")?;
        let (mpi_chain, serial_chain) = (run_dir(&both.mpi_dir)?, run_dir(&both.serial_dir)?);
        compare_results(&serial_chain.join("simulate"), &mpi_chain.join("simulate"))?;
        // The analyse stage's `input` names a file in each chain's own directory.
        let without_input = |dir: &Path| -> Result<Vec<Vec<String>>> {
            let (header, rows) = read_results(dir)?;
            let keep: Vec<usize> = (0..header.len())
                .filter(|&i| !["input", "duration_s", "started_at", "host", "worker"].contains(&header[i].as_str()))
                .collect();
            Ok(rows.iter().map(|r| keep.iter().map(|&i| r.get(i).cloned().unwrap_or_default()).collect()).collect())
        };
        let (want, got) = (without_input(&serial_chain.join("analyse"))?, without_input(&mpi_chain.join("analyse"))?);
        if want != got {
            bail!("the analyse stage's rows differ: {want:?} vs {got:?}");
        }
        Ok(())
    })();
    tally.record("chain_simulate_analyse.toml: -n 3 gives the serial rows in both stages", outcome);
    // Rank 0 fails between two stages (a crashed row that the next stage requires): it
    // releases the worker ranks, which wait for the next stage, and every rank ends.
    let spec = scratch.join("chain-require.toml");
    let outcome = std::fs::write(
        &spec,
        "kind = \"chain\"\nname = \"require\"\n\n[[stages]]\nname = \"simulate\"\nkind = \"command\"\n\
         command = [\"sh\", \"-c\", \"if [ {x} = 2 ]; then exit 1; fi; echo {x}\"]\n\
         parameter_ranges = { x = [1, 2, 3] }\n\n[[stages]]\nname = \"analyse\"\nfrom = \"simulate\"\n\
         require = \"all\"\nkind = \"command\"\ncommand = [\"echo\", \"{stdout}\"]\n",
    )
    .map_err(anyhow::Error::from)
    .and_then(|()| {
        let results = scratch.join("chain-require-results");
        let args = oversubscribed(
            3,
            vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&results), "--quiet".into()],
        );
        run_with_timeout(scratch, launch(&args)?)
    });
    tally.check("a chain failing between stages under -n 3: every rank ends, the error says why", outcome, |o| {
        expect_failure(o)?;
        expect_in(&o.stderr, "it requires every row of stage `simulate` to have finished")
    });
}

/// The example specs of linked, unioned and sampled parameters, and of adaptive runs, under
/// `mpirun -n 3` give the serial rows (the adaptive one the same runs per point).
fn sweep_shapes(scratch: &Path, tally: &mut Tally, worker: &Path) {
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/specs");
    for shape in ["linked", "union", "samples", "sobol", "pi_adaptive"] {
        let spec = specs.join(format!("{shape}.toml"));
        let outcome = mpi_and_serial(scratch, worker, &spec, 3, shape)
            .and_then(|both| compare_results(&both.serial_dir, &both.mpi_dir));
        tally.record(&format!("{shape}.toml: -n 3 gives the serial rows"), outcome);
    }
}

/// The same sweep through the worker binary with `-n 5` × 1 thread and `-n 2` × 4 threads
/// gives the same rows.
fn ranks_against_threads(scratch: &Path, tally: &mut Tally) {
    let name = "taskfarm-worker: -n 5 × 1 thread and -n 2 × 4 threads give the same results.csv";
    let Some(spec) = sweep_spec() else {
        eprintln!("xtask: skipping {name}: no spec in examples/specs/");
        return;
    };
    let outcome = (|| -> Result<Outcome> {
        let run = |ranks: u32, threads: &str, dir: &Path| -> Result<Outcome> {
            let args = oversubscribed(
                ranks,
                vec![
                    "run".into(),
                    path_arg(&spec),
                    "--results".into(),
                    path_arg(dir),
                    "--threads-per-rank".into(),
                    threads.into(),
                    "--quiet".into(),
                ],
            );
            let outcome = run_with_timeout(scratch, launch(&args)?)?;
            expect_success(&outcome)?;
            Ok(outcome)
        };
        let (ranks_dir, threads_dir) = (scratch.join("ranks-results"), scratch.join("threads-results"));
        run(5, "1", &ranks_dir)?;
        let outcome = run(2, "4", &threads_dir)?;
        compare_results(&ranks_dir, &threads_dir)?;
        let text = std::fs::read_to_string(find_results_csv(&threads_dir)?)?;
        if !text.contains("rank-1/thread-") {
            bail!("with 4 threads per rank the worker column should name the threads");
        }
        Ok(outcome)
    })();
    tally.record(name, outcome.map(drop));
}

/// One row of a scheduling case: the process's `s` parameter (how long it sleeps), the rank
/// that ran it (`rank-2` of `rank-2/thread-1`) and when it started.
struct Ran {
    s: f64,
    rank: String,
    started_at: f64,
}

/// Runs `sh -c "sleep {s}; echo {s}"` for each of `sleeps` through the worker under
/// `mpirun -n ranks` with `extra` arguments (and `threads` per process), and returns its rows.
fn run_sleeps(
    scratch: &Path,
    name: &str,
    ranks: u32,
    sleeps: &[f64],
    threads: u32,
    extra: &[&str],
) -> Result<Vec<Ran>> {
    run_padded_sleeps(scratch, name, ranks, sleeps, threads, extra, 0)
}

/// [`run_sleeps`] with a shell comment of `padding` characters after the command, which
/// makes every unit of work a message that large.
fn run_padded_sleeps(
    scratch: &Path,
    name: &str,
    ranks: u32,
    sleeps: &[f64],
    threads: u32,
    extra: &[&str],
    padding: usize,
) -> Result<Vec<Ran>> {
    let comment = if padding == 0 { String::new() } else { format!(" # {}", "x".repeat(padding)) };
    let spec = scratch.join(format!("{name}.toml"));
    let settings: Vec<String> = sleeps.iter().map(|s| format!("{{s = {s:?}}}")).collect();
    std::fs::write(
        &spec,
        format!(
            "name = \"{name}\"\nkind = \"command\"\nthreads = {threads}\n\
             command = [\"sh\", \"-c\", \"sleep {{s}}; echo {{s}}{comment}\"]\nparameter_settings = [{}]\n",
            settings.join(", ")
        ),
    )?;
    let results = scratch.join(format!("{name}-results"));
    let mut args = vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&results), "--quiet".into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let outcome = run_with_timeout(scratch, launch(&oversubscribed(ranks, args))?)?;
    expect_success(&outcome)?;
    let (header, rows) = read_results(&results)?;
    let column = |name: &str| header.iter().position(|h| h == name).with_context(|| format!("no {name} column"));
    let (s, worker, started) = (column("s")?, column("worker")?, column("started_at")?);
    let field = |row: &Vec<String>, i: usize| row.get(i).cloned().unwrap_or_default();
    let ran: Vec<Ran> = rows
        .iter()
        .map(|row| -> Result<Ran> {
            Ok(Ran {
                s: field(row, s).parse().context("s is not a number")?,
                rank: field(row, worker).split('/').next().unwrap_or_default().to_owned(),
                started_at: field(row, started).parse().context("started_at is not a number")?,
            })
        })
        .collect::<Result<_>>()?;
    if ran.len() != sleeps.len() {
        bail!("{} rows for {} processes", ran.len(), sleeps.len());
    }
    Ok(ran)
}

/// The ranks that ran the processes sleeping `s` seconds.
fn ranks_of(ran: &[Ran], s: f64) -> Vec<&str> {
    ran.iter().filter(|r| r.s == s).map(|r| r.rank.as_str()).collect()
}

/// The master's scheduling, checked by where processes ran (never by how long the run took):
/// breadth-first dealing, long processes side by side, windows counted in threads.
fn scheduling(scratch: &Path, tally: &mut Tally) {
    let distinct = |ranks: &[&str]| ranks.iter().collect::<std::collections::BTreeSet<_>>().len();
    for prefetch in ["1", "2"] {
        let name = format!("two 2 s processes among tiny ones ran on different ranks, -n 3 --prefetch {prefetch}");
        let outcome = run_sleeps(
            scratch,
            &format!("long-among-tiny-{prefetch}"),
            3,
            &[0.0, 0.0, 2.0, 2.0, 0.0, 0.0],
            1,
            &["--prefetch", prefetch],
        )
        .and_then(|ran| match ranks_of(&ran, 2.0).as_slice() {
            [a, b] if a != b => Ok(()),
            ranks => bail!("the 2 s processes ran on {ranks:?}"),
        });
        tally.record(&name, outcome);
    }
    let name = "3 × sleep 1 on 3 worker ranks: one on each, -n 4";
    let outcome = run_sleeps(scratch, "breadth-first", 4, &[1.0, 1.0, 1.0], 1, &[]).and_then(|ran| {
        let ranks = ranks_of(&ran, 1.0);
        if distinct(&ranks) != 3 {
            bail!("the three ran on {ranks:?}");
        }
        Ok(())
    });
    tally.record(name, outcome);
    let name = "4 × sleep 1 on 2 worker ranks with --prefetch 4: two on each";
    let outcome =
        run_sleeps(scratch, "breadth-first-prefetch", 3, &[1.0; 4], 1, &["--prefetch", "4"]).and_then(|ran| {
            let ranks = ranks_of(&ran, 1.0);
            if ranks.first().is_none_or(|first| ranks.iter().filter(|r| *r == first).count() != 2) {
                bail!("the four ran on {ranks:?}");
            }
            Ok(())
        });
    tally.record(name, outcome);
    let name = "units larger than MPI's eager limit: no rank waits while another runs a 1 s process, -n 4";
    let mut sleeps = vec![0.0; 12];
    sleeps.extend([1.0; 12]);
    let outcome = run_padded_sleeps(scratch, "large-units", 4, &sleeps, 1, &[], 5000).and_then(|ran| {
        // On each rank, every 1 s process after its first started as the one before ended:
        // the master's send to a busy rank (which MPI completes only once that rank takes the
        // message) must not keep the other ranks waiting.
        let mut long: Vec<&Ran> = ran.iter().filter(|r| r.s == 1.0).collect();
        long.sort_by(|a, b| a.started_at.total_cmp(&b.started_at));
        for (i, r) in long.iter().enumerate() {
            let before = long[..i].iter().rev().find(|p| p.rank == r.rank);
            if let Some(p) = before {
                let idle = r.started_at - (p.started_at + p.s);
                if idle >= 0.5 {
                    bail!("{} was idle {idle:.1} s between two 1 s processes", r.rank);
                }
            }
        }
        Ok(())
    });
    tally.record(name, outcome);
    let name = "2-thread processes on 2-thread ranks: none waits on the rank of a 3 s process, -n 3";
    let outcome =
        run_sleeps(scratch, "thread-window", 3, &[0.1, 3.0, 0.5, 0.5, 0.5, 0.5], 2, &["--threads-per-rank", "2"])
            .and_then(|ran| {
                let long = ran.iter().find(|r| r.s == 3.0).context("no 3 s process")?;
                let behind: Vec<f64> =
                    ran.iter().filter(|r| r.rank == long.rank && r.started_at > long.started_at).map(|r| r.s).collect();
                if !behind.is_empty() {
                    bail!("processes of {behind:?} s ran on {} after its 3 s process", long.rank);
                }
                Ok(())
            });
    tally.record(name, outcome);
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
fn sweep_spec() -> Option<PathBuf> {
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
