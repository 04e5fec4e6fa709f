//! The MPI rows of `cargo xtask bench`, one scenario per run under mpirun; rank 0 prints
//! `BENCH <key> <value>` lines that the xtask parses (other lines are for people).
//!
//! - `dispatch N`: a raw rsmpi master/worker loop (a `u64` out, a `u64` back, the same
//!   pattern as the backend's) and then `N` no-op processes through the backend.
//!   Batching is switched off with `TASKFARM_MPI_MAX_BATCH=1` in the environment.
//! - `balance`: 400 sleeping processes with heavy-tailed durations (fixed seed, 10 s of work
//!   in all); prints the makespan, the longest process, the total work, and the makespans
//!   of a static round-robin split and of the ideal dynamic schedule of the same durations.
//! - `hybrid N T`: `N` processes of 2 ms on ranks of `T` threads each; prints the rate and
//!   the master's CPU time.
//! - `learn` / `in-order`: 400 sleeps whose durations grow with their parameter (heavy
//!   tailed, shuffled, 10 s in all), with the look-ahead window or in id order; prints the
//!   makespan, the bound, and the ideal in-order, static and LPT schedules' makespans.
//! - `memory N`: `N` no-op processes; prints rank 0's peak RSS (VmHWM) at the end,
//!   consolidation included.
//! - `straggler` / `straggler-off`: 40 processes of 500 ms, the last 10× its prediction the
//!   first time it runs, with and without copies of stragglers; prints the makespan and the
//!   bound.
//!
//! Run e.g. `mpirun -n 5 target/release/examples/mpi_bench dispatch 100000`.

use std::time::{Duration, Instant};

use backend_core::{Backend, Operation, Process, ProcessContext, ProcessError};
use backend_mpi::{MpiBackend, MpiOptions};
use mpi::collective::CommunicatorCollectives;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use serde::{Deserialize, Serialize};

/// A process that does nothing, or sleeps for some microseconds.
#[derive(Serialize, Deserialize)]
enum Bench {
    Noop,
    SleepUs(u64),
    /// Runs `sleep` for `ms` milliseconds as a child in a group of its own (as the `command`
    /// kind runs its commands, so a losing copy can be killed); with a `straggles` marker
    /// directory that it is the first to make, ten times as long.
    Nap {
        ms: u64,
        straggles: Option<String>,
    },
}

impl Process for Bench {
    type Output = u64;
    const ENFORCES_TIMEOUT: bool = true;
    fn run(&self, ctx: &ProcessContext) -> Result<u64, ProcessError> {
        match self {
            Bench::Noop => {}
            Bench::SleepUs(us) => std::thread::sleep(Duration::from_micros(*us)),
            Bench::Nap { ms, straggles } => {
                let first = straggles.as_ref().is_some_and(|marker| std::fs::create_dir(marker).is_ok());
                let ms = if first { ms * 10 } else { *ms };
                let mut sleep = std::process::Command::new("sleep");
                sleep.arg(format!("{:.3}", ms as f64 / 1000.0));
                let outcome = backend_core::run_with_deadline(sleep, None, None, true).map_err(ProcessError::from)?;
                if !outcome.status.is_some_and(|status| status.success()) {
                    return Err(ProcessError::msg("sleep was stopped"));
                }
            }
        }
        Ok(ctx.id())
    }
}

/// Heavy-tailed durations (Pareto, shape 1.2, from a fixed seed), scaled to `total` in all.
pub fn heavy_tailed(count: usize, total: Duration, seed: u64) -> Vec<Duration> {
    let mut state = seed.max(1);
    let mut next = move || {
        // xorshift64*: enough randomness for a benchmark's durations.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    };
    let raw: Vec<f64> = (0..count).map(|_| (1.0 - next()).powf(-1.0 / 1.2)).collect();
    let sum: f64 = raw.iter().sum();
    raw.iter().map(|r| total.mul_f64(r / sum)).collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let scenario = args.next().unwrap_or_else(|| "dispatch".into());
    let count: u64 = args.next().map(|n| n.parse()).transpose()?.unwrap_or(100_000);
    // `hybrid COUNT THREADS`: each worker rank runs THREADS processes at once.
    let threads_per_rank: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(1);
    let mut backend = MpiBackend::<Bench>::new(MpiOptions { threads_per_rank, ..MpiOptions::default() })?;
    let world = SimpleCommunicator::world();
    let base = std::env::temp_dir().join(format!("taskfarm-mpi-bench-{}", std::process::id()));
    let report = world.rank() == 0;
    match scenario.as_str() {
        "dispatch" => {
            raw_loop(&world, 20_000 * u64::try_from(world.size() - 1).unwrap_or(1).max(1));
            let operation =
                Operation::from_processes("noop", (0..count).map(|_| Bench::Noop))?.with_results_base(&base);
            let started = Instant::now();
            let summary = backend.run(operation)?;
            if summary.is_report() {
                let wall = started.elapsed().as_secs_f64();
                let done = (summary.finished + summary.crashed) as f64;
                println!("no-op processes: {done} in {wall:.2}s ({:.2}s executing)", summary.wall.as_secs_f64());
                println!("BENCH noop_per_s {:.0}", done / summary.wall.as_secs_f64());
                println!("BENCH noop_per_s_with_consolidation {:.0}", done / wall);
            }
        }
        "balance" => {
            let durations = heavy_tailed(400, Duration::from_secs(10), 42);
            let total: Duration = durations.iter().sum();
            let longest = durations.iter().max().copied().unwrap_or_default();
            // The static split of the same processes: worker w gets processes w, w + W, ...
            let workers = usize::try_from(world.size() - 1).unwrap_or(1).max(1);
            let static_makespan = (0..workers)
                .map(|w| durations.iter().skip(w).step_by(workers).sum::<Duration>())
                .max()
                .unwrap_or_default();
            // The ideal dynamic schedule: each process, in order, to the first free worker,
            // with no overhead (list scheduling; no scheduler that does not know durations
            // in advance does better on this order).
            let mut free_at = vec![Duration::ZERO; workers];
            for &d in &durations {
                if let Some(earliest) = free_at.iter_mut().min() {
                    *earliest += d;
                }
            }
            let ideal_makespan = free_at.into_iter().max().unwrap_or_default();
            let operation = Operation::from_processes(
                "balance",
                durations.iter().map(|d| Bench::SleepUs(d.as_micros() as u64)).collect::<Vec<_>>(),
            )?
            .with_results_base(&base);
            let summary = backend.run(operation)?;
            if summary.is_report() {
                println!("BENCH makespan_s {:.4}", summary.wall.as_secs_f64());
                println!("BENCH longest_s {:.4}", longest.as_secs_f64());
                println!("BENCH total_s {:.4}", total.as_secs_f64());
                println!("BENCH static_makespan_s {:.4}", static_makespan.as_secs_f64());
                println!("BENCH ideal_makespan_s {:.4}", ideal_makespan.as_secs_f64());
                println!("BENCH workers {workers}");
            }
        }
        "hybrid" => {
            // The same 2 ms processes on R ranks × T threads: throughput and the master's CPU.
            let operation = Operation::from_processes("hybrid", (0..count).map(|_| Bench::SleepUs(2_000)))?
                .with_results_base(&base);
            let cpu_before = cpu_seconds();
            let summary = backend.run(operation)?;
            if summary.is_report() {
                let done = (summary.finished + summary.crashed) as f64;
                println!("BENCH hybrid_per_s {:.0}", done / summary.wall.as_secs_f64());
                println!("BENCH master_cpu_s {:.4}", cpu_seconds() - cpu_before);
                println!("BENCH wall_s {:.4}", summary.wall.as_secs_f64());
            }
        }
        "memory" => {
            let operation =
                Operation::from_processes("noop", (0..count).map(|_| Bench::Noop))?.with_results_base(&base);
            let summary = backend.run(operation)?;
            if summary.is_report() {
                println!("BENCH processes {}", summary.finished + summary.crashed);
                println!("BENCH peak_rss_kib {}", peak_rss_kib());
            }
        }
        "learn" | "in-order" => {
            // The learnable workload (durations grow with a parameter, shuffled): with the
            // look-ahead window (learning) or in id order; the schedules to compare beside.
            let tasks = backend_core::testing::learnable_workload(400, Duration::from_secs(10), 42);
            let workers = usize::try_from(world.size() - 1).unwrap_or(1).max(1);
            let durations: Vec<Duration> = tasks.iter().map(|(_, d)| *d).collect();
            let schedules = backend_core::testing::Schedules::of(&durations, workers);
            let jobs = tasks.into_iter().enumerate().map(|(id, (size, d))| backend_core::Job {
                id: id as u64,
                run: 0,
                params: [("size".to_owned(), backend_core::Value::Int(size))].into_iter().collect(),
                process: Bench::SleepUs(d.as_micros() as u64),
            });
            let lookahead = if scenario == "learn" { backend_core::predict::DEFAULT_LOOKAHEAD } else { 1 };
            let operation = Operation::from_jobs("learn", Box::new(jobs), Some(durations.len() as u64))?
                .with_lookahead(lookahead)
                .with_results_base(&base);
            let summary = backend.run(operation)?;
            if summary.is_report() {
                println!("BENCH makespan_s {:.4}", summary.wall.as_secs_f64());
                println!("BENCH bound_s {:.4}", schedules.bound.as_secs_f64());
                println!("BENCH ideal_in_order_s {:.4}", schedules.in_order.as_secs_f64());
                println!("BENCH static_s {:.4}", schedules.static_split.as_secs_f64());
                println!("BENCH lpt_s {:.4}", schedules.lpt.as_secs_f64());
            }
        }
        "straggler" | "straggler-off" => {
            // 40 processes of 500 ms, the last of which takes 10× that the first time it
            // runs (the marker directory says whether it ran), with and without copies.
            let workers = usize::try_from(world.size() - 1).unwrap_or(1).max(1);
            std::fs::create_dir_all(&base)?;
            let marker = base.join("straggled").to_string_lossy().into_owned();
            let count: u64 = 40;
            let jobs = (0..count).map(move |id| backend_core::Job {
                id,
                run: 0,
                params: [("x".to_owned(), backend_core::Value::Int(id as i64 % 4))].into_iter().collect(),
                process: Bench::Nap { ms: 500, straggles: (id == count - 1).then(|| marker.clone()) },
            });
            let operation = Operation::from_jobs("straggler", Box::new(jobs), Some(count))?
                .with_speculation(scenario == "straggler")
                .with_results_base(&base);
            let summary = backend.run(operation)?;
            if summary.is_report() {
                println!("BENCH makespan_s {:.4}", summary.wall.as_secs_f64());
                println!("BENCH bound_s {:.4}", (count as f64 * 0.5 / workers as f64).max(0.5));
            }
        }
        other => {
            let known = "dispatch, balance, hybrid, memory, learn, in-order, straggler, straggler-off";
            return Err(format!("unknown scenario `{other}` ({known})").into());
        }
    }
    if report {
        let _ = std::fs::remove_dir_all(&base);
    }
    Ok(())
}

/// The floor of any master-worker exchange: the master keeps each worker one `u64` ahead
/// and answers whoever sends one back, `rounds` round trips in all.
fn raw_loop(world: &SimpleCommunicator, rounds: u64) {
    let size = world.size();
    world.barrier();
    if size < 2 {
        return;
    }
    if world.rank() == 0 {
        let started = Instant::now();
        let mut sent = 0u64;
        for worker in 1..size {
            world.process_at_rank(worker).send(&sent);
            sent += 1;
        }
        let mut received = 0u64;
        while received < rounds {
            let (value, status) = world.any_process().receive::<u64>();
            debug_assert!(value < u64::MAX);
            received += 1;
            // u64::MAX tells a worker to stop.
            let next = if sent < rounds { sent } else { u64::MAX };
            sent += 1;
            world.process_at_rank(status.source_rank()).send(&next);
        }
        // Workers that got no stop yet are still waiting for an answer they will not need.
        let rate = rounds as f64 / started.elapsed().as_secs_f64();
        println!("raw master/worker loop, {} workers: {rate:.0} round trips/s", size - 1);
        println!("BENCH raw_round_trips_per_s {rate:.0}");
    } else {
        loop {
            let (value, _) = world.process_at_rank(0).receive::<u64>();
            if value == u64::MAX {
                break;
            }
            world.process_at_rank(0).send(&(value + 1));
        }
    }
    world.barrier();
}

/// CPU time (user + system) this process has used, from /proc/self/stat, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set size of this process in KiB (VmHWM of `/proc/self/status`).
fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|n| n.parse().ok()))
        })
        .unwrap_or(0)
}
