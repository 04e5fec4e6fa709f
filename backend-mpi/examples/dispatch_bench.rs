//! Measures the MPI backend's dispatch: no-op processes per second, beside a raw rsmpi
//! ping-pong loop (one u64 out, one u64 back) measured in the same run, and the master's CPU
//! time while its workers run sleeping processes. Run it under mpirun, e.g.
//! `mpirun -n 3 target/release/examples/dispatch_bench [noop-processes]`: rank 0 prints.

use std::time::{Duration, Instant};

use backend_core::{Backend, Operation, Process, ProcessContext, ProcessError};
use backend_mpi::{MpiBackend, MpiOptions};
use mpi::collective::CommunicatorCollectives;
use mpi::point_to_point::{Destination, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use serde::{Deserialize, Serialize};

/// A process that does nothing, or sleeps.
#[derive(Serialize, Deserialize)]
enum Bench {
    Noop,
    SleepMs(u64),
}

impl Process for Bench {
    type Output = u64;
    fn run(&self, ctx: &ProcessContext) -> Result<u64, ProcessError> {
        if let Bench::SleepMs(ms) = self {
            std::thread::sleep(Duration::from_millis(*ms));
        }
        Ok(ctx.id())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let noops: u64 = std::env::args().nth(1).map(|n| n.parse()).transpose()?.unwrap_or(200_000);
    let mut backend = MpiBackend::<Bench>::new(MpiOptions::default())?;
    let world = SimpleCommunicator::world();
    let (rank, size) = (world.rank(), world.size());
    let base = std::env::temp_dir().join(format!("taskfarm-dispatch-bench-{}", std::process::id()));

    // Raw ping-pong between rank 0 and rank 1, the floor of any master-worker exchange.
    let rounds = 20_000u64;
    world.barrier();
    if size > 1 && rank <= 1 {
        let started = Instant::now();
        for i in 0..rounds {
            if rank == 0 {
                world.process_at_rank(1).send(&i);
                let (back, _) = world.process_at_rank(1).receive::<u64>();
                assert_eq!(back, i + 1);
            } else {
                let (out, _) = world.process_at_rank(0).receive::<u64>();
                world.process_at_rank(0).send(&(out + 1));
            }
        }
        if rank == 0 {
            let rate = rounds as f64 / started.elapsed().as_secs_f64();
            println!("raw ping-pong (u64 out, u64 back), rank 0 <-> 1: {rate:.0} round trips/s");
        }
    }
    // No barrier here: ranks 2.. go on to serve, waiting with the backend's sleeping poll,
    // so they do not take cores from the ping-pong.

    // No-op processes through the backend.
    let operation = Operation::from_processes("noop", (0..noops).map(|_| Bench::Noop))?.with_results_base(&base);
    let started = Instant::now();
    let summary = backend.run(operation)?;
    let wall = started.elapsed().as_secs_f64();
    if summary.is_report() {
        let rate = (summary.finished + summary.crashed) as f64 / wall;
        println!("no-op processes, {} workers: {} in {wall:.2}s = {rate:.0} processes/s", (size - 1).max(1), noops);
    }

    // The master's CPU time while its workers sleep.
    let per_worker = 20u64;
    let sleep_ms = 50u64;
    let count = per_worker * (size as u64 - 1).max(1);
    let operation =
        Operation::from_processes("sleep", (0..count).map(move |_| Bench::SleepMs(sleep_ms)))?.with_results_base(&base);
    let cpu_before = thread_cpu();
    let started = Instant::now();
    let summary = backend.run(operation)?;
    let wall = started.elapsed();
    let cpu = thread_cpu().saturating_sub(cpu_before);
    if summary.is_report() {
        println!(
            "master while {count} processes of {sleep_ms} ms run: wall {:.2}s, master CPU {:.1} ms ({:.2}% of one core)",
            wall.as_secs_f64(),
            cpu.as_secs_f64() * 1e3,
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64()
        );
        // The same no-op operation on the serial backend: the cost of journaling alone.
        let operation = Operation::from_processes("noop", (0..noops).map(|_| Bench::Noop))?.with_results_base(&base);
        let started = Instant::now();
        let summary = backend_core::SerialBackend::new().run(operation)?;
        let wall = started.elapsed().as_secs_f64();
        let rate = (summary.finished + summary.crashed) as f64 / wall;
        println!(
            "no-op processes, serial backend (no MPI, same journal): {noops} in {wall:.2}s = {rate:.0} processes/s"
        );
        let _ = std::fs::remove_dir_all(&base);
    } else {
        println!(
            "worker rank {rank}: CPU {:.1} ms over {:.2}s (it sleeps in its processes)",
            cpu.as_secs_f64() * 1e3,
            wall.as_secs_f64()
        );
    }
    Ok(())
}

/// CPU time of this thread so far (user + system), from `/proc/thread-self/schedstat`.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|text| text.split_whitespace().next().and_then(|ns| ns.parse().ok()))
        .map(Duration::from_nanos)
        .unwrap_or_default()
}
