//! The rows of the release `taskfarm-worker` running commands: the `command` kind against
//! `xargs -P` (and GNU parallel), and end to end.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use super::{Row, Target};
use crate::mpi::on_path;

pub(super) fn command_rows(worker: &Path, scratch: &Path, cores: usize, mpi: bool) -> Result<Vec<Row>> {
    let runs = 2000;
    let cores = cores.to_string();
    let spec = scratch.join("true.toml");
    let ids: Vec<String> = (0..runs).map(|i| i.to_string()).collect();
    std::fs::write(
        &spec,
        format!(
            "name = \"bench_true\"\nkind = \"command\"\ncommand = [\"true\"]\n\n[parameter_ranges]\ni = [{}]\n",
            ids.join(", ")
        ),
    )?;
    let list = scratch.join("list");
    std::fs::write(&list, ids.join("\n") + "\n")?;

    // Times `command` (its stdin as set: the list, or nothing) with its stdout discarded.
    let time = |command: &mut Command, what: &str| -> Result<f64> {
        eprintln!("xtask: bench: {what}");
        let started = Instant::now();
        let status = command.stdout(Stdio::null()).status().with_context(|| format!("could not start {what}"))?;
        let wall = started.elapsed().as_secs_f64();
        if !status.success() {
            bail!("{what} failed ({status})");
        }
        Ok(wall)
    };
    let with_list = |program: &str, args: &[&str]| -> Result<Command> {
        let mut command = Command::new(program);
        command.args(args).stdin(std::fs::File::open(&list)?);
        Ok(command)
    };
    let best = |f: &mut dyn FnMut() -> Result<f64>| -> Result<f64> { Ok(f()?.min(f()?)) };
    let taskfarm = best(&mut || {
        time(
            Command::new(worker)
                .stdin(Stdio::null())
                .args(["run"])
                .arg(&spec)
                .args(["--backend", "local", "--quiet", "--results"])
                .arg(scratch.join("results")),
            "taskfarm-worker run (2000 x true, local backend)",
        )
    })?;
    let xargs = best(&mut || {
        let mut command = with_list("xargs", &["-P", &cores, "-n", "1", "true"])?;
        time(&mut command, &format!("xargs -P {cores} -n 1 true < list"))
    })?;
    let mut rows = vec![Row::new(
        "Command kind, 2000 x `true`: wall time vs xargs -P",
        format!("{taskfarm:.2}s"),
        format!("{xargs:.2}s xargs -P {cores}"),
        taskfarm / xargs,
        Target::AtMost(1.1),
    )];
    // The same processes writing a line each, with their output kept in one output.log
    // (output = "log") against kept only in the record (output = "tail", the default),
    // taking turns so both see the same machine.
    let output_spec = |mode: &str| -> Result<PathBuf> {
        let path = scratch.join(format!("echo_{mode}.toml"));
        std::fs::write(
            &path,
            format!(
                "name = \"bench_echo_{mode}\"\nkind = \"command\"\noutput = \"{mode}\"\n\
                 command = [\"echo\", \"process {{i}}\"]\n\n[parameter_ranges]\ni = [{}]\n",
                ids.join(", ")
            ),
        )?;
        Ok(path)
    };
    let (tail_spec, log_spec) = (output_spec("tail")?, output_spec("log")?);
    // Under mpirun -n 3 (two worker ranks) the kept output travels to the master in chunks.
    let run_spec = |spec: &Path, backend: &str, what: &str| -> Result<f64> {
        let mut command = if backend == "mpi" {
            let mut mpirun = Command::new(on_path("mpirun").context("mpirun was not found on PATH")?);
            crate::mpi::mpi_environment(&mut mpirun, true);
            mpirun.args(["-n", "3"]).arg(worker);
            mpirun
        } else {
            Command::new(worker)
        };
        command.stdin(Stdio::null()).args(["run"]).arg(spec).args(["--backend", backend, "--quiet", "--results"]);
        time(command.arg(scratch.join("results")), what)
    };
    let backends: &[&str] = if mpi { &["local", "mpi"] } else { &["local"] };
    for &backend in backends {
        let (mut tail, mut log) = (f64::INFINITY, f64::INFINITY);
        for _ in 0..2 {
            let what =
                |mode: &str| format!("taskfarm-worker run (2000 x echo, output = \"{mode}\", {backend} backend)");
            tail = tail.min(run_spec(&tail_spec, backend, &what("tail"))?);
            log = log.min(run_spec(&log_spec, backend, &what("log"))?);
        }
        let name = if backend == "mpi" {
            "Command kind, 2000 x `echo` under mpirun -n 3: output = \"log\" vs \"tail\""
        } else {
            "Command kind, 2000 x `echo`: output = \"log\" vs \"tail\""
        };
        rows.push(Row::new(
            name,
            format!("{log:.2}s"),
            format!("{tail:.2}s output = \"tail\""),
            log / tail,
            Target::AtMost(1.1),
        ));
    }
    if on_path("parallel").is_some() {
        let mut command = with_list("parallel", &["-j", &cores, "true"])?;
        eprintln!("xtask: bench: parallel -j {cores} true < list");
        let started = Instant::now();
        command.stdout(Stdio::null()).status()?;
        let parallel = started.elapsed().as_secs_f64();
        rows.push(Row::new(
            "Command kind, 2000 x `true`: wall time vs GNU parallel",
            format!("{taskfarm:.2}s"),
            format!("{parallel:.2}s parallel -j {cores}"),
            taskfarm / parallel,
            Target::None,
        ));
    } else {
        eprintln!("xtask: bench: GNU parallel is not installed: its row is skipped");
    }
    let _ = std::io::stderr().flush();
    Ok(rows)
}

/// `taskfarm-worker run` of 10^5 and 10^6 no-op processes (`monte_carlo_pi` of one sample)
/// on the local backend and, with `mpi`, under `mpirun -n 3` (two workers), whole command:
/// the wall time, and each file's size beside.
pub(super) fn end_to_end_rows(worker: &Path, scratch: &Path, mpi: bool) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let backends: &[&str] = if mpi { &["local", "mpi"] } else { &["local"] };
    for (&backend, (count, target)) in
        backends.iter().flat_map(|b| std::iter::repeat(b).zip([(100_000u64, 0.5), (1_000_000, 5.0)]))
    {
        let spec = scratch.join(format!("noops_{count}.toml"));
        let seeds: Vec<String> = (0..1000).map(|i| i.to_string()).collect();
        std::fs::write(
            &spec,
            format!(
                "name = \"noops\"\nkind = \"monte_carlo_pi\"\nsamples = 1\nruns = {}\n\n[parameter_ranges]\nseed = [{}]\n",
                count / 1000,
                seeds.join(", ")
            ),
        )?;
        let results = scratch.join(format!("e2e-{backend}-{count}"));
        eprintln!("xtask: bench: taskfarm-worker run ({count} no-ops, {backend} backend)");
        let mut command = if backend == "mpi" {
            let mut mpirun = Command::new(crate::mpi::on_path("mpirun").context("mpirun was not found on PATH")?);
            crate::mpi::mpi_environment(&mut mpirun, true);
            mpirun.args(["-n", "3"]).arg(worker);
            mpirun
        } else {
            Command::new(worker)
        };
        command.args(["run"]).arg(&spec).args(["--backend", backend, "--quiet", "--results"]).arg(&results);
        let started = Instant::now();
        let status = command.stdout(Stdio::null()).status().context("could not start taskfarm-worker")?;
        let wall = started.elapsed().as_secs_f64();
        if !status.success() {
            bail!("taskfarm-worker run of {count} no-ops failed ({status})");
        }
        let run_dir = std::fs::read_dir(results.join("noops"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.join("journal").is_file())
            .context("no result directory")?;
        let mib = |file: &str| {
            std::fs::metadata(run_dir.join(file)).map(|m| m.len() as f64 / (1 << 20) as f64).unwrap_or(0.0)
        };
        let sizes = ["journal", "results.jsonl", "results.csv", "operation.log"]
            .map(|f| format!("{f} {:.0} MiB", mib(f)))
            .join(", ");
        // The targets are the local backend's; under MPI the row is for comparison.
        let target = if backend == "local" { Target::AtMost(target) } else { Target::None };
        let what = if backend == "mpi" { "mpirun -n 3 (2 workers)" } else { "local" };
        rows.push(Row::new(
            format!("End to end, taskfarm-worker run of {count} no-ops, {what}: wall time (s)"),
            format!("{wall:.2}s"),
            sizes,
            wall,
            target,
        ));
        let _ = std::fs::remove_dir_all(&results);
    }
    Ok(rows)
}
