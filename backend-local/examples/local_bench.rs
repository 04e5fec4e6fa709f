//! The local-backend rows of `cargo xtask bench`: 100 µs CPU-bound processes on the local
//! backend against a raw rayon `par_iter` over the same closures (efficiency), and the
//! throughput of 1 µs processes; with `learn` or `in-order`, the learnable workload (see
//! `mpi_bench`) on a pool of 4 threads; with `straggler` or `straggler-off`, one process 10×
//! its prediction with and without a copy of it. Prints `BENCH <key> <value>` lines that the xtask parses.
//!
//! Run: `cargo run --release -p taskfarm-backend-local --example local_bench [processes]`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use backend_core::{Backend, Operation, Process, ProcessContext, ProcessError};
use backend_local::{default_pool_size, LocalBackend};
use rayon::iter::{IntoParallelIterator, ParallelIterator};
use serde::{Deserialize, Serialize};

/// A CPU-bound process: `rounds` rounds of an integer hash.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Spin {
    rounds: u64,
}

fn spin(seed: u64, rounds: u64) -> u64 {
    let mut x = seed | 1;
    for _ in 0..rounds {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
    }
    black_box(x)
}

impl Process for Spin {
    type Output = u64;
    fn run(&self, ctx: &ProcessContext) -> Result<u64, ProcessError> {
        Ok(spin(ctx.id(), self.rounds))
    }
}

/// Rounds of [`spin`] that take about `target` on this machine: the median of five probes
/// after a warm-up (a single cold probe was off by up to twice on this shared machine).
fn calibrate(target: Duration) -> u64 {
    let probe = 1_000_000u64;
    spin(1, probe);
    let mut per_round: Vec<f64> = (0..5)
        .map(|i| {
            let started = Instant::now();
            spin(i, probe);
            started.elapsed().as_secs_f64() / probe as f64
        })
        .collect();
    per_round.sort_by(f64::total_cmp);
    (target.as_secs_f64() / per_round[2]).max(1.0) as u64
}

/// Sleeps for some microseconds.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Sleep {
    us: u64,
}

impl Process for Sleep {
    type Output = u64;
    fn run(&self, _: &ProcessContext) -> Result<u64, ProcessError> {
        std::thread::sleep(Duration::from_micros(self.us));
        Ok(self.us)
    }
}

/// `learn` / `in-order`: the learnable workload on a pool of `workers` threads, with the
/// look-ahead window or in id order; prints the makespan and the schedules beside.
fn learn(scenario: &str, workers: usize) -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::temp_dir().join(format!("taskfarm-local-bench-{}", std::process::id()));
    let tasks = backend_core::testing::learnable_workload(400, Duration::from_secs(10), 42);
    let durations: Vec<Duration> = tasks.iter().map(|(_, d)| *d).collect();
    let schedules = backend_core::testing::Schedules::of(&durations, workers);
    let jobs = tasks.into_iter().enumerate().map(|(id, (size, d))| backend_core::Job {
        id: id as u64,
        run: 0,
        params: [("size".to_owned(), backend_core::Value::Int(size))].into_iter().collect(),
        process: Sleep { us: d.as_micros() as u64 },
    });
    let lookahead = if scenario == "learn" { backend_core::predict::DEFAULT_LOOKAHEAD } else { 1 };
    let operation = Operation::from_jobs("learn", Box::new(jobs), Some(durations.len() as u64))?
        .with_lookahead(lookahead)
        .with_results_base(&base);
    let summary = LocalBackend::new(Some(workers))?.run(operation)?;
    println!("BENCH makespan_s {:.4}", summary.wall.as_secs_f64());
    println!("BENCH bound_s {:.4}", schedules.bound.as_secs_f64());
    println!("BENCH ideal_in_order_s {:.4}", schedules.in_order.as_secs_f64());
    println!("BENCH static_s {:.4}", schedules.static_split.as_secs_f64());
    println!("BENCH lpt_s {:.4}", schedules.lpt.as_secs_f64());
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

/// Runs `sleep` for `ms` milliseconds as a child in a group of its own (as the `command`
/// kind runs its commands, so a losing copy can be killed); the process marked `straggles`
/// takes ten times as long the first time it runs.
#[derive(Clone, Copy, Serialize, Deserialize)]
struct Nap {
    ms: u64,
    straggles: bool,
}

/// Whether the straggler's first run has started.
static STRAGGLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Process for Nap {
    type Output = u64;
    const ENFORCES_TIMEOUT: bool = true;
    fn run(&self, _: &ProcessContext) -> Result<u64, ProcessError> {
        let first = self.straggles && !STRAGGLED.swap(true, std::sync::atomic::Ordering::SeqCst);
        let ms = if first { self.ms * 10 } else { self.ms };
        let mut sleep = std::process::Command::new("sleep");
        sleep.arg(format!("{:.3}", ms as f64 / 1000.0));
        let outcome = backend_core::run_with_deadline(sleep, None, None, true).map_err(ProcessError::from)?;
        match outcome.status {
            Some(status) if status.success() => Ok(ms),
            _ => Err(ProcessError::msg("sleep was stopped")),
        }
    }
}

/// `straggler` / `straggler-off`: 40 processes of 500 ms on 4 threads, the last of which
/// takes 10× that the first time it runs, with and without a copy of stragglers; prints the
/// makespan and the bound (`max(longest expected, total expected / workers)`).
fn straggler(scenario: &str, workers: usize) -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::temp_dir().join(format!("taskfarm-local-bench-{}", std::process::id()));
    let count: u64 = 40;
    let jobs = (0..count).map(move |id| backend_core::Job {
        id,
        run: 0,
        params: [("x".to_owned(), backend_core::Value::Int(id as i64 % 4))].into_iter().collect(),
        process: Nap { ms: 500, straggles: id == count - 1 },
    });
    let operation = Operation::from_jobs("straggler", Box::new(jobs), Some(count))?
        .with_speculation(scenario == "straggler")
        .with_results_base(&base);
    let summary = LocalBackend::new(Some(workers))?.run(operation)?;
    println!("BENCH makespan_s {:.4}", summary.wall.as_secs_f64());
    println!("BENCH bound_s {:.4}", (count as f64 * 0.5 / workers as f64).max(0.5));
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if let Some(scenario) = std::env::args().nth(1).filter(|a| a == "learn" || a == "in-order") {
        return learn(&scenario, 4);
    }
    if let Some(scenario) = std::env::args().nth(1).filter(|a| a == "straggler" || a == "straggler-off") {
        return straggler(&scenario, 4);
    }
    let count: u64 = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(20_000);
    let pool = default_pool_size();
    let base = std::env::temp_dir().join(format!("taskfarm-local-bench-{}", std::process::id()));
    let rounds_100us = calibrate(Duration::from_micros(100));
    let rounds_1us = calibrate(Duration::from_micros(1));

    // Raw rayon over the same closures, on a pool of the same size, and taskfarm, taking
    // turns (so a slow spell of this shared machine hits both alike); best of three each.
    let rayon_pool = rayon::ThreadPoolBuilder::new().num_threads(pool).build()?;
    let mut raws = Vec::new();
    let mut runs = Vec::new();
    for _ in 0..3 {
        let started = Instant::now();
        let sum: u64 = rayon_pool.install(|| (0..count).into_par_iter().map(|i| spin(i, rounds_100us)).sum());
        black_box(sum);
        raws.push(started.elapsed());

        let mut backend = LocalBackend::new(Some(pool))?;
        let operation = Operation::from_processes("spin100", (0..count).map(move |_| Spin { rounds: rounds_100us }))?
            .with_results_base(&base);
        let started = Instant::now();
        let summary = backend.run(operation)?;
        runs.push((summary.wall, started.elapsed()));
    }
    let raw = raws.into_iter().min().unwrap_or_default();
    let (executing, whole) = runs.into_iter().min().unwrap_or_default();
    println!(
        "{count} processes of 100 µs on {pool} threads: raw rayon {:.3}s, taskfarm {:.3}s executing ({:.3}s with staging and consolidation)",
        raw.as_secs_f64(),
        executing.as_secs_f64(),
        whole.as_secs_f64()
    );
    println!("BENCH pool {pool}");
    println!("BENCH raw_rayon_s {:.4}", raw.as_secs_f64());
    println!("BENCH taskfarm_s {:.4}", executing.as_secs_f64());
    println!("BENCH taskfarm_whole_s {:.4}", whole.as_secs_f64());
    println!("BENCH efficiency {:.3}", raw.as_secs_f64() / executing.as_secs_f64());

    let tiny = count * 10;
    let mut backend = LocalBackend::new(Some(pool))?;
    let operation = Operation::from_processes("spin1", (0..tiny).map(move |_| Spin { rounds: rounds_1us }))?
        .with_results_base(&base);
    let summary = backend.run(operation)?;
    let rate = tiny as f64 / summary.wall.as_secs_f64();
    println!("{tiny} processes of 1 µs: {rate:.0} processes/s");
    println!("BENCH tiny_per_s {rate:.0}");
    let _ = std::fs::remove_dir_all(&base);
    Ok(())
}
