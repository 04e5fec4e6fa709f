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

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::mpi::{mpi_environment, on_path};
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
        cargo().args([
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
        ]),
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
        if mpi {
            rows.extend(learn_rows_mpi(&examples.join("mpi_bench"))?);
        }
    }
    if wants("local") {
        rows.extend(local_rows(&examples.join("local_bench"))?);
    }
    if wants("command") {
        rows.extend(command_rows(&release_worker(), &scratch, cores)?);
    }
    if wants("python") {
        rows.extend(crate::bench_python::rows(&scratch, mpi, false)?);
    }
    if wants("e2e") {
        rows.extend(end_to_end_rows(&release_worker(), &scratch)?);
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

/// `mpirun -n ranks program args` with the environment of `cargo xtask mpirun --oversubscribe`.
fn mpirun(ranks: u32, program: &Path, args: &[&str], env: &[(&str, &str)]) -> Result<Figures> {
    let launcher = on_path("mpirun").context("mpirun was not found on PATH")?;
    let mut command = Command::new(launcher);
    command.arg("-n").arg(ranks.to_string());
    mpi_environment(&mut command, true);
    for (k, v) in env {
        command.env(k, v);
    }
    command.arg(program).args(args);
    let what = format!(
        "mpirun -n {ranks} mpi_bench {} {}",
        args.join(" "),
        env.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ")
    );
    Ok(figures(&output_of(&mut command, what.trim())?))
}

fn dispatch_rows(program: &Path, noops: u64) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let n = noops.to_string();
    for workers in [1u32, 2, 4] {
        for (batching, env, target) in [
            ("no batching", &[("TASKFARM_MPI_MAX_BATCH", "1")][..], Target::AtLeast(0.5)),
            ("adaptive batching", &[][..], Target::AtLeast(1.0)),
        ] {
            let f = mpirun(workers + 1, program, &["dispatch", &n], env)?;
            let (rate, raw) = (figure(&f, "noop_per_s")?, figure(&f, "raw_round_trips_per_s")?);
            rows.push(Row::new(
                format!("MPI dispatch, {workers} worker(s), {batching}"),
                format!("{rate:.0} proc/s"),
                format!("{raw:.0} raw round trips/s"),
                rate / raw,
                target,
            ));
        }
    }
    Ok(rows)
}

/// The same 2 ms processes on 4 worker ranks × 1 thread and on 1 worker rank × 4 threads:
/// throughput (ratio: per-node layout ÷ per-core layout) and the master's CPU time beside.
fn hybrid_row(program: &Path) -> Result<Row> {
    let count = "2000";
    let per_core = mpirun(5, program, &["hybrid", count, "1"], &[])?;
    let per_node = mpirun(2, program, &["hybrid", count, "4"], &[])?;
    let (core_rate, node_rate) = (figure(&per_core, "hybrid_per_s")?, figure(&per_node, "hybrid_per_s")?);
    let (core_cpu, node_cpu) = (figure(&per_core, "master_cpu_s")?, figure(&per_node, "master_cpu_s")?);
    Ok(Row::new(
        "Hybrid, 2000 × 2 ms: 1 rank × 4 threads vs 4 ranks × 1 thread",
        format!("{node_rate:.0} proc/s, master CPU {node_cpu:.2}s"),
        format!("{core_rate:.0} proc/s, master CPU {core_cpu:.2}s"),
        node_rate / core_rate,
        Target::AtLeast(0.9),
    ))
}

fn balance_rows(program: &Path) -> Result<Vec<Row>> {
    let f = mpirun(5, program, &["balance"], &[])?;
    let (makespan, longest, total) = (figure(&f, "makespan_s")?, figure(&f, "longest_s")?, figure(&f, "total_s")?);
    let workers = figure(&f, "workers")?;
    let bound = longest.max(total / workers);
    let statically = figure(&f, "static_makespan_s")?;
    let ideal = figure(&f, "ideal_makespan_s")?;
    Ok(vec![
        Row::new(
            "Load balance, 400 heavy-tailed sleeps, 4 workers: makespan / bound",
            format!("{makespan:.2}s"),
            format!(
                "bound {bound:.2}s; ideal dynamic {ideal:.2}s = {:.3}x; static round-robin {statically:.2}s = {:.2}x",
                ideal / bound,
                statically / bound
            ),
            makespan / bound,
            Target::AtMost(1.05),
        ),
        Row::new(
            "Load balance: makespan / ideal dynamic schedule (same order, no overhead)",
            format!("{makespan:.2}s"),
            format!("{ideal:.2}s"),
            makespan / ideal,
            Target::None,
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

fn learn_rows_local(program: &Path) -> Result<Vec<Row>> {
    let learning = figures(&output_of(Command::new(program).arg("learn"), "local_bench learn")?);
    let in_order = figures(&output_of(Command::new(program).arg("in-order"), "local_bench in-order")?);
    learn_rows("local (4 threads)", &learning, &in_order)
}

fn learn_rows_mpi(program: &Path) -> Result<Vec<Row>> {
    let learning = mpirun(5, program, &["learn"], &[])?;
    let in_order = mpirun(5, program, &["in-order"], &[])?;
    learn_rows("MPI (4 workers)", &learning, &in_order)
}

/// The efficiency row and the throughput row.
fn local_rows(program: &Path) -> Result<Vec<Row>> {
    let f = figures(&output_of(&mut Command::new(program), "local_bench")?);
    let (raw, taskfarm, whole) =
        (figure(&f, "raw_rayon_s")?, figure(&f, "taskfarm_s")?, figure(&f, "taskfarm_whole_s")?);
    let tiny = figure(&f, "tiny_per_s")?;
    let row = Row::new(
        "Local, 100 us CPU-bound processes: efficiency vs raw rayon",
        format!("{taskfarm:.3}s ({whole:.3}s with stage-in + consolidation)"),
        format!("{raw:.3}s raw rayon par_iter"),
        raw / taskfarm,
        Target::AtLeast(0.95),
    );
    let throughput =
        Row::new("Local, 1 us processes: throughput", format!("{tiny:.0} proc/s"), "-".into(), tiny, Target::None);
    Ok(vec![row, throughput])
}

fn command_rows(worker: &Path, scratch: &Path, cores: usize) -> Result<Vec<Row>> {
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
    let run_spec = |spec: &Path, what: &str| {
        time(
            Command::new(worker)
                .stdin(Stdio::null())
                .args(["run"])
                .arg(spec)
                .args(["--backend", "local", "--quiet", "--results"])
                .arg(scratch.join("results")),
            what,
        )
    };
    let (mut tail, mut log) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..2 {
        tail = tail.min(run_spec(&tail_spec, "taskfarm-worker run (2000 x echo, output = \"tail\")")?);
        log = log.min(run_spec(&log_spec, "taskfarm-worker run (2000 x echo, output = \"log\")")?);
    }
    rows.push(Row::new(
        "Command kind, 2000 x `echo`: output = \"log\" vs \"tail\"",
        format!("{log:.2}s"),
        format!("{tail:.2}s output = \"tail\""),
        log / tail,
        Target::AtMost(1.1),
    ));
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
/// on the local backend, whole command: the wall time, and each file's size beside.
fn end_to_end_rows(worker: &Path, scratch: &Path) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (count, target) in [(100_000u64, 0.5), (1_000_000, 5.0)] {
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
        let results = scratch.join(format!("e2e-{count}"));
        eprintln!("xtask: bench: taskfarm-worker run ({count} no-ops, local backend)");
        let started = Instant::now();
        let status = Command::new(worker)
            .args(["run"])
            .arg(&spec)
            .args(["--backend", "local", "--quiet", "--results"])
            .arg(&results)
            .stdout(Stdio::null())
            .status()
            .context("could not start taskfarm-worker")?;
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
        rows.push(Row::new(
            format!("End to end, taskfarm-worker run of {count} no-ops, local: wall time (s)"),
            format!("{wall:.2}s"),
            sizes,
            wall,
            Target::AtMost(target),
        ));
        let _ = std::fs::remove_dir_all(&results);
    }
    Ok(rows)
}

fn memory_rows(program: &Path, quick: bool) -> Result<Vec<Row>> {
    let small = figure(&mpirun(3, program, &["memory", "100000"], &[])?, "peak_rss_kib")? / 1024.0;
    let mut rows = vec![Row::new(
        "Memory, master peak RSS, 10^5 no-op processes",
        format!("{small:.1} MiB"),
        "-".into(),
        small,
        Target::AtMost(100.0),
    )];
    if !quick {
        let large = figure(&mpirun(3, program, &["memory", "1000000"], &[])?, "peak_rss_kib")? / 1024.0;
        rows.push(Row::new(
            "Memory, master peak RSS, 10^6 no-op processes (MiB; <= 100)",
            format!("{large:.1} MiB"),
            "-".into(),
            large,
            Target::AtMost(100.0),
        ));
        rows.push(Row::new(
            "Memory, peak RSS at 10^6 / at 10^5",
            format!("{large:.1} MiB"),
            format!("{small:.1} MiB"),
            large / small,
            Target::AtMost(1.2),
        ));
    }
    Ok(rows)
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
