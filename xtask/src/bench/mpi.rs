//! The MPI rows of the benchmark: dispatch, load balance, hybrid ranks, learnt scheduling
//! and the master's memory, each from `mpi_bench` under `mpirun`.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use super::{figure, figures, learn_rows, output_of, Figures, Row, Target};
use crate::mpi::{mpi_environment, on_path};

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

pub(super) fn dispatch_rows(program: &Path, noops: u64) -> Result<Vec<Row>> {
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
pub(super) fn hybrid_row(program: &Path) -> Result<Row> {
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

pub(super) fn balance_rows(program: &Path) -> Result<Vec<Row>> {
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

pub(super) fn learn_rows_mpi(program: &Path) -> Result<Vec<Row>> {
    let learning = mpirun(5, program, &["learn"], &[])?;
    let in_order = mpirun(5, program, &["in-order"], &[])?;
    learn_rows("MPI (4 workers)", &learning, &in_order)
}

/// The straggler rows under `mpirun -n 5` (4 workers; see `super::straggler_rows`).
pub(super) fn straggler_rows_mpi(program: &Path) -> Result<Vec<Row>> {
    let on = mpirun(5, program, &["straggler"], &[])?;
    let off = mpirun(5, program, &["straggler-off"], &[])?;
    super::straggler_rows("MPI (4 workers)", &on, &off)
}

pub(super) fn memory_rows(program: &Path, quick: bool) -> Result<Vec<Row>> {
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
