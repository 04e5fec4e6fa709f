//! `cargo xtask bench`: measures taskfarm against baselines run side by side in the same
//! run (these machines are noisy, so every figure is a ratio), prints one table and writes
//! it as JSON to `target/bench/<unix seconds>.json` so that two runs can be compared.
//!
//! Rows: MPI dispatch (no-op processes/s against a raw rsmpi master/worker loop, with and
//! without batching, 1/2/4 workers), load balance (heavy-tailed sleeps on 4 workers, against
//! the lower bound and a static round-robin split), local backend (efficiency against raw
//! rayon, throughput of 1 µs processes), command kind (2,000 runs of `true` against
//! `xargs -P`, and GNU parallel when installed), the `python` kind (see [`crate::bench_python`];
//! `--only python` runs these rows alone), and the master's peak RSS at 10^5 and 10^6
//! processes. The programs measured are `backend-mpi/examples/mpi_bench.rs`,
//! `backend-local/examples/local_bench.rs` and the release `taskfarm-worker`.

mod command;
mod eta;
mod local;
mod mpi;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use command::{command_rows, end_to_end_rows};
use eta::eta_rows;
use local::{learn_rows_local, local_rows, straggler_rows_local};
use mpi::{balance_rows, dispatch_rows, hybrid_row, learn_rows_mpi, memory_rows, straggler_rows_mpi};

use crate::{cargo, release_worker, run_checked, target_dir};

/// Arguments of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// No-op processes per MPI dispatch run.
    #[arg(long, default_value_t = 100_000)]
    pub noops: u64,
    /// Skips the MPI rows (dispatch, load balance, memory).
    #[arg(long)]
    pub no_mpi: bool,
    /// Skips the memory row at 10^6 processes (the longest row).
    #[arg(long)]
    pub quick: bool,
    /// Runs only these groups of rows (repeatable): dispatch, balance, hybrid, local,
    /// command, memory, learn, e2e, python. Default: all but e2e.
    #[arg(long, value_name = "GROUP")]
    pub only: Vec<String>,
}

/// One row of the table.
#[derive(Debug, Clone, serde::Serialize)]
pub(crate) struct Row {
    /// What is measured.
    name: String,
    /// taskfarm's figure, with its unit.
    taskfarm: String,
    /// The baseline's figure (or the bound), with its unit.
    baseline: String,
    /// The ratio the target is about.
    ratio: f64,
    /// The target, e.g. `>= 0.5`.
    target: String,
    /// Whether the target is met.
    met: bool,
}

impl Row {
    pub(crate) fn new(name: impl Into<String>, taskfarm: String, baseline: String, ratio: f64, target: Target) -> Self {
        Row { name: name.into(), taskfarm, baseline, ratio, target: target.describe(), met: target.met(ratio) }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    AtLeast(f64),
    AtMost(f64),
    None,
}

impl Target {
    fn describe(self) -> String {
        match self {
            Target::AtLeast(x) => format!(">= {x}"),
            Target::AtMost(x) => format!("<= {x}"),
            Target::None => "-".into(),
        }
    }

    fn met(self, ratio: f64) -> bool {
        match self {
            Target::AtLeast(x) => ratio >= x,
            Target::AtMost(x) => ratio <= x,
            Target::None => true,
        }
    }
}

/// Runs the benchmark, prints the table and writes the JSON.
pub fn bench(args: BenchArgs) -> Result<()> {
    let started = Instant::now();
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mpi = !args.no_mpi && crate::mpi::found();
    if !mpi && !args.no_mpi {
        eprintln!("xtask: mpirun/mpicc not found: the MPI rows are skipped");
    }
    if args.only.len() == 1 && args.only[0] == "python" {
        let scratch = target_dir().join("bench").join(format!("scratch-{}", std::process::id()));
        std::fs::create_dir_all(&scratch).with_context(|| format!("could not create {}", scratch.display()))?;
        let rows = crate::bench_python::rows(&scratch, mpi, true);
        let _ = std::fs::remove_dir_all(&scratch);
        return finish(started, cores, &rows?);
    }
    run_checked(
        cargo()
            .args([
                "build",
                "--release",
                "-p",
                "taskfarm-backend-local",
                "--example",
                "local_bench",
                "-p",
                "taskfarm-worker",
                // Without it, `--example` would leave the worker binary as it was.
                "--bin",
                "taskfarm-worker",
            ])
            // With MPI the worker runs the end-to-end rows under mpirun too (and the others as before).
            .args(if mpi { &["--features", "taskfarm-worker/mpi"][..] } else { &[][..] }),
        "build the local benchmark and the release worker",
    )?;
    if mpi {
        run_checked(
            cargo().args(["build", "--release", "-p", "taskfarm-backend-mpi", "--example", "mpi_bench"]),
            "build the MPI benchmark",
        )?;
    }
    let examples = target_dir().join("release").join("examples");
    let scratch = target_dir().join("bench").join(format!("scratch-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("could not create {}", scratch.display()))?;

    let wants = |group: &str| {
        if args.only.is_empty() {
            group != "e2e"
        } else {
            args.only.iter().any(|g| g == group)
        }
    };
    let mut rows = Vec::new();
    if mpi && wants("dispatch") {
        rows.extend(dispatch_rows(&examples.join("mpi_bench"), args.noops)?);
    }
    if mpi && wants("balance") {
        rows.extend(balance_rows(&examples.join("mpi_bench"))?);
    }
    if mpi && wants("hybrid") {
        rows.push(hybrid_row(&examples.join("mpi_bench"))?);
    }
    if wants("learn") {
        rows.extend(learn_rows_local(&examples.join("local_bench"))?);
        rows.extend(straggler_rows_local(&examples.join("local_bench"))?);
        rows.extend(eta_rows(&release_worker(), &scratch)?);
        if mpi {
            rows.extend(learn_rows_mpi(&examples.join("mpi_bench"))?);
            rows.extend(straggler_rows_mpi(&examples.join("mpi_bench"))?);
        }
    }
    if wants("local") {
        rows.extend(local_rows(&examples.join("local_bench"))?);
    }
    if wants("command") {
        rows.extend(command_rows(&release_worker(), &scratch, cores, mpi)?);
    }
    if wants("python") {
        rows.extend(crate::bench_python::rows(&scratch, mpi, false)?);
    }
    if wants("e2e") {
        rows.extend(end_to_end_rows(&release_worker(), &scratch, mpi)?);
    }
    if mpi && wants("memory") {
        rows.extend(memory_rows(&examples.join("mpi_bench"), args.quick)?);
    }
    let _ = std::fs::remove_dir_all(&scratch);
    finish(started, cores, &rows)
}

/// Prints the table of `rows` and writes it as JSON under `target/bench/`.
fn finish(started: Instant, cores: usize, rows: &[Row]) -> Result<()> {
    print_table(rows);
    let out_dir = target_dir().join("bench");
    let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let path = out_dir.join(format!("{stamp}.json"));
    let json = serde_json::json!({
        "unix_time": stamp,
        "cores": cores,
        "seconds": started.elapsed().as_secs_f64(),
        "rows": rows,
    });
    std::fs::write(&path, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("could not write {}", path.display()))?;
    println!(
        "\n{} of {} targets met in {:.0}s; written to {}",
        rows.iter().filter(|r| r.met).count(),
        rows.len(),
        started.elapsed().as_secs_f64(),
        path.display()
    );
    Ok(())
}

/// The `BENCH key value` lines of a benchmark program's stdout.
type Figures = BTreeMap<String, f64>;

fn figures(stdout: &str) -> Figures {
    stdout
        .lines()
        .filter_map(|l| {
            let mut words = l.strip_prefix("BENCH ")?.split_whitespace();
            Some((words.next()?.to_owned(), words.next()?.parse().ok()?))
        })
        .collect()
}

fn figure(figures: &Figures, key: &str) -> Result<f64> {
    figures.get(key).copied().with_context(|| format!("the benchmark printed no `{key}`"))
}

/// Runs a command to its end; its stdout, and stderr on failure.
fn output_of(command: &mut Command, what: &str) -> Result<String> {
    eprintln!("xtask: bench: {what}");
    let output = command.stdin(Stdio::null()).output().with_context(|| format!("could not start: {what}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        bail!("{what} failed ({}):\n{stdout}\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    for line in stdout.lines().filter(|l| !l.starts_with("BENCH ")) {
        eprintln!("    {line}");
    }
    Ok(stdout)
}

/// The straggler rows of one backend: makespan ÷ bound of a run with one process 10× its
/// prediction, with copies of stragglers (the default) and without, side by side.
fn straggler_rows(backend: &str, on: &Figures, off: &Figures) -> Result<Vec<Row>> {
    let (bound, with, without) = (figure(on, "bound_s")?, figure(on, "makespan_s")?, figure(off, "makespan_s")?);
    Ok(vec![
        Row::new(
            format!("{backend}, one straggler (10x its prediction): makespan / bound, speculation on"),
            format!("{with:.2}s"),
            format!("{bound:.2}s bound; {without:.2}s with speculate = false"),
            with / bound,
            // A copy starts once the straggler ran 3× its prediction: 1.3 is the floor here.
            Target::None,
        ),
        Row::new(
            format!("{backend}, one straggler: makespan speculation on / off"),
            format!("{with:.2}s"),
            format!("{without:.2}s"),
            with / without,
            Target::AtMost(0.8),
        ),
    ])
}

/// The learnt-scheduling rows of one backend, from the `learn` and `in-order` runs of the
/// same workload: makespan ÷ bound with learning, in order, and of the ideal in-order,
/// static and LPT (perfect knowledge) schedules beside.
fn learn_rows(backend: &str, learning: &Figures, in_order: &Figures) -> Result<Vec<Row>> {
    let bound = figure(learning, "bound_s")?;
    let (learnt, ordered) = (figure(learning, "makespan_s")?, figure(in_order, "makespan_s")?);
    let (ideal, statically, lpt) =
        (figure(learning, "ideal_in_order_s")?, figure(learning, "static_s")?, figure(learning, "lpt_s")?);
    let name = format!("Learnt scheduling, {backend}, 400 shuffled sleeps growing with a parameter, 4 workers");
    Ok(vec![
        Row::new(
            format!("{name}: makespan / bound, learning"),
            format!("{learnt:.2}s"),
            format!(
                "bound {bound:.2}s; in order {ordered:.2}s = {:.3}x; ideal in order {:.3}x; static {:.3}x; LPT perfect {:.3}x",
                ordered / bound,
                ideal / bound,
                statically / bound,
                lpt / bound
            ),
            learnt / bound,
            Target::AtMost(1.05),
        ),
        Row::new(
            format!("{name}: makespan learning / ideal in order"),
            format!("{learnt:.2}s"),
            format!("{ideal:.2}s"),
            learnt / ideal,
            Target::AtMost(1.0),
        ),
    ])
}

fn print_table(rows: &[Row]) {
    let widths = [
        rows.iter().map(|r| r.name.len()).max().unwrap_or(0).max(3),
        rows.iter().map(|r| r.taskfarm.len()).max().unwrap_or(0).max(8),
        rows.iter().map(|r| r.baseline.len()).max().unwrap_or(0).max(8),
    ];
    println!();
    println!(
        "{:<w0$} | {:<w1$} | {:<w2$} | {:>9} | {:<7} | met",
        "row",
        "taskfarm",
        "baseline",
        "ratio",
        "target",
        w0 = widths[0],
        w1 = widths[1],
        w2 = widths[2]
    );
    println!("{}", "-".repeat(widths.iter().sum::<usize>() + 40));
    for r in rows {
        println!(
            "{:<w0$} | {:<w1$} | {:<w2$} | {:>9.3} | {:<7} | {}",
            r.name,
            r.taskfarm,
            r.baseline,
            r.ratio,
            r.target,
            if r.met { "yes" } else { "NO" },
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
}
