//! The MPI tests, as one plain program (MPI initializes once per program, so no libtest
//! harness): `cargo xtask test` runs it under `mpirun -n K` with a scenario name. Every rank
//! runs the same scenario; a failed assertion panics, and the backend's panic hook aborts the
//! whole job, so a failure is a non-zero exit of `mpirun`, never a hang.
//!
//! Scenarios: `conformance` (the default: the conformance suite against `SerialBackend`),
//! `exactly-once` (1198 tiny processes, batched), `unwritable` (the master cannot create its
//! result directory: every rank ends with an error, exit code 1) and `stray-panic` (a rank
//! panics outside any process: the job is aborted); for hybrid scheduling, `hybrid`
//! (processes of 2 threads each, a crash, a timeout and a retry: same as serial, and never
//! more processes at once on a rank than its threads allow) and `too-many-threads`
//! (processes asking for more threads than a rank has: every rank ends with an error).
//!
//! A second argument sets `threads_per_rank` (default 1): `mpi_scenarios conformance 4`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use backend_core::testing::{assert_same_results, assert_same_summary, conformance_operation, sized_operation, Probe};
use backend_core::{
    results, Backend, Operation, ParameterSpace, Process, ProcessContext, ProcessError, Role, SerialBackend, Summary,
    Value,
};
use backend_mpi::{MpiBackend, MpiOptions};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::topology::{Communicator, SimpleCommunicator};
use serde::{Deserialize, Serialize};

fn main() -> ExitCode {
    quiet_on_purpose_panics();
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "conformance".into());
    let threads: usize = std::env::args().nth(2).and_then(|t| t.parse().ok()).unwrap_or(1);
    let options = MpiOptions::default().threads_per_rank(threads);
    match scenario.as_str() {
        "hybrid" => return hybrid(options),
        "too-many-threads" => return too_many_threads(options),
        _ => {}
    }
    let mut backend = match MpiBackend::<Probe>::new(options) {
        Ok(backend) => backend,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    match scenario.as_str() {
        "conformance" => same_as_serial(&mut backend, conformance_operation),
        "exactly-once" => {
            same_as_serial(&mut backend, |base| sized_operation(base, 300));
            drop(backend);
            // Explicitly here; the other scenarios finalize when main returns.
            backend_mpi::finalize();
        }
        "unwritable" => return unwritable(&mut backend),
        "stray-panic" => {
            if backend.rank() == backend.size() - 1 {
                panic!("rank {} panics outside any process on purpose", backend.rank());
            }
            let _ = backend.run(conformance_operation(&scratch()));
            eprintln!("error: rank {} was not stopped by the stray panic", backend.rank());
            return ExitCode::FAILURE;
        }
        other => {
            eprintln!(
                "error: unknown scenario `{other}` \
                 (conformance, exactly-once, unwritable, stray-panic, hybrid, too-many-threads)"
            );
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Runs `make(base)` on every rank under MPI and, on rank 0, on `SerialBackend`; the result
/// directories must agree, every process exactly once, and the workers' counts add up.
fn same_as_serial<P: Process>(backend: &mut MpiBackend<P>, make: impl Fn(&Path) -> Operation<P>) {
    same_as_serial_and(backend, make, |_| {});
}

/// [`same_as_serial`], then `check(report)` on rank 0.
fn same_as_serial_and<P: Process>(
    backend: &mut MpiBackend<P>,
    make: impl Fn(&Path) -> Operation<P>,
    check: impl Fn(&Summary),
) {
    let world = SimpleCommunicator::world();
    let (rank, size) = (world.rank(), world.size());
    let base = tempfile::tempdir().expect("a temporary directory");
    let summary = backend.run(make(base.path())).expect("the MPI backend runs the operation");
    let served = match summary.role {
        Role::Worker { worker, processes } => {
            assert!(rank > 0, "rank 0 got a worker's summary");
            assert_eq!(worker, rank as u32, "the worker's summary names its rank");
            assert_eq!(processes, summary.finished + summary.crashed, "a worker's counts are its own");
            processes
        }
        Role::Master => {
            assert_eq!(rank, 0, "rank {rank} got the report");
            0
        }
    };
    let root = world.process_at_rank(0);
    if rank == 0 {
        let mut served_by_workers = 0u64;
        root.reduce_into_root(&served, &mut served_by_workers, SystemOperation::sum());
        check_report(&summary, size, served_by_workers, &make);
        println!("rank 0 of {size}: {} finished, {} crashed, same as serial", summary.finished, summary.crashed);
    } else {
        root.reduce_into(&served, SystemOperation::sum());
        assert!(summary.dir.is_dir(), "rank {rank}: the summary names the master's result directory");
    }
    if rank == 0 {
        let per_process = make(base.path()).options().process_threads();
        check_threads(&summary, size, backend_threads(), per_process);
        check(&summary);
    }
    // Nobody deletes a directory another rank still reads.
    world.barrier();
}

/// The threads per rank this run was started with (the scenario's second argument).
fn backend_threads() -> usize {
    std::env::args().nth(2).and_then(|t| t.parse().ok()).unwrap_or(1)
}

/// With threads, the worker column names rank and thread, and no rank ran more processes at
/// once than it has threads.
fn check_threads(summary: &Summary, size: i32, threads: usize, per_process: usize) {
    if size == 1 {
        return;
    }
    let rows = results::read_results_jsonl(&summary.dir).expect("results.jsonl is readable");
    let workers: BTreeSet<String> =
        rows.iter().map(|row| row["worker"].as_str().expect("a worker column").to_owned()).collect();
    if threads == 1 {
        assert!(workers.iter().all(|w| !w.contains("/thread-")), "one thread per rank: workers are ranks {workers:?}");
        return;
    }
    assert!(workers.iter().all(|w| w.contains("/thread-")), "workers name their thread: {workers:?}");
    // Intervals of finished processes (a retried process's record spans its attempts), per rank.
    let mut by_rank: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r["status"] == "finished") {
        let worker = row["worker"].as_str().unwrap_or_default();
        let rank = worker.split('/').next().unwrap_or_default().to_owned();
        let start = row["started_at"].as_str().and_then(backend_core::utc::parse_rfc3339).expect("started_at");
        let end = start + row["duration_s"].as_f64().expect("duration_s");
        by_rank.entry(rank).or_default().push((start + 0.002, end - 0.002));
    }
    let limit = threads / per_process;
    for (rank, intervals) in by_rank {
        let mut events: Vec<(f64, i32)> = intervals.iter().flat_map(|&(s, e)| [(s, 1), (e.max(s), -1)]).collect();
        events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let (mut now, mut peak) = (0i32, 0i32);
        for (_, step) in events {
            now += step;
            peak = peak.max(now);
        }
        assert!(peak as usize <= limit, "{rank} ran {peak} processes at once, more than {threads} threads allow");
    }
}

fn check_report<P: Process>(
    summary: &Summary,
    size: i32,
    served_by_workers: u64,
    make: &impl Fn(&Path) -> Operation<P>,
) {
    let reference_base = tempfile::tempdir().expect("a temporary directory");
    let operation = make(reference_base.path());
    let retries = operation.options().retries;
    let reference = SerialBackend::default().run(operation).expect("the serial backend runs");
    assert_eq!(summary.backend, "mpi");
    assert_same_summary(&reference, summary);
    assert_same_results(&reference.dir, &summary.dir);
    let total = summary.finished + summary.crashed;
    let rows = results::read_results_jsonl(&summary.dir).expect("results.jsonl is readable");
    let workers: BTreeSet<String> =
        rows.iter().map(|row| row["worker"].as_str().expect("a worker column").to_owned()).collect();
    if size == 1 {
        assert_eq!(workers, BTreeSet::from(["rank-0".to_owned()]), "one rank runs everything itself");
    } else {
        let retried_elsewhere = size > 2 && retries > 0;
        if retried_elsewhere {
            // Each retry ran on another rank: the workers ran every attempt between them.
            let attempts: u64 = rows.iter().map(|row| row["attempts"].as_u64().expect("attempts")).sum();
            assert_eq!(served_by_workers, attempts, "the workers ran every attempt exactly once between them");
        } else {
            assert_eq!(served_by_workers, total, "the workers ran every process exactly once between them");
        }
        assert!(!workers.contains("rank-0"), "the master runs no process when it has workers");
        let expected = (size as usize - 1).min(2);
        assert!(workers.len() >= expected, "processes ran on {workers:?}, expected at least {expected} ranks");
    }
    let panicked = rows.iter().filter(|row| row["reason"].as_str().is_some_and(|r| r.contains("panicked:"))).count();
    assert!(panicked > 0, "a panicking process is a crash record");
    assert!(
        rows.iter().all(|row| row["host"].as_str().is_some_and(|h| !h.is_empty())),
        "every row names the host it ran on"
    );
}

/// A process of the hybrid scenario: takes 2 threads, reports what its context says, and
/// by its `x` runs into its timeout and stops there (every try: timed out after a retry), panics, fails
/// once then succeeds on the retry, or works for 20 ms.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Busy {
    x: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct BusyOutput {
    square: i64,
    threads: usize,
    pool: usize,
}

impl Process for Busy {
    type Output = BusyOutput;
    // It stops at its deadline (below), so its timeout works in thread isolation.
    const ENFORCES_TIMEOUT: bool = true;

    fn run(&self, ctx: &ProcessContext<'_>) -> Result<BusyOutput, ProcessError> {
        match self.x % 6 {
            0 => {
                let end = std::time::Instant::now() + Duration::from_millis(150);
                while std::time::Instant::now() < end {
                    if ctx.deadline().is_some_and(|d| std::time::Instant::now() >= d) {
                        return Err(ProcessError::timed_out("busy ran past its deadline"));
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            1 => panic!("busy {} panics on purpose", self.x),
            2 => {
                // The marker names the worker of the first attempt.
                let marker = ctx.result_dir().join(format!("tried-{}", self.x));
                if !marker.exists() {
                    std::fs::write(&marker, &ctx.location().worker)?;
                    return Err(ProcessError::msg(format!("busy {} fails once", self.x)));
                }
            }
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
        let pool = backend_local::process_pool(ctx)?;
        Ok(BusyOutput { square: self.x * self.x, threads: ctx.threads(), pool: pool.current_num_threads() })
    }
}

fn busy_operation(base: &Path) -> Operation<Busy> {
    let space = ParameterSpace::ranges([("x", (0..24).map(Value::Int).collect())]).expect("a valid space");
    Operation::sweep("hybrid", space, 1, |p, _| Busy { x: p["x"].as_i64().unwrap_or_default() })
        .expect("a valid operation")
        .with_results_base(base)
        .with_timeout(Duration::from_millis(80))
        .with_retries(1)
        .with_threads(2)
}

/// Processes of 2 threads with crashes, timeouts and retries: the same rows as serial; with
/// two workers or more, each retry ran on another rank than the failed attempt.
fn hybrid(options: MpiOptions) -> ExitCode {
    let mut backend = match MpiBackend::<Busy>::new(options) {
        Ok(backend) => backend,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    same_as_serial_and(&mut backend, busy_operation, |summary| {
        let rows = results::read_results_jsonl(&summary.dir).expect("results.jsonl is readable");
        let status = |s: &str| rows.iter().filter(|r| r["status"] == s).count();
        assert_eq!((status("timed_out"), status("crashed")), (4, 4), "4 time out, 4 panic: {rows:?}");
        let finished: Vec<_> = rows.iter().filter(|r| r["status"] == "finished").collect();
        assert!(finished.iter().all(|r| r["threads"] == 2 && r["pool"] == 2), "2 threads each: {finished:?}");
        let rank_of = |worker: &str| worker.split('/').next().unwrap_or_default().to_owned();
        let mut moved = 0;
        for row in rows.iter().filter(|r| r["x"].as_i64().is_some_and(|x| x % 6 == 2)) {
            let marker = summary.dir.join(format!("tried-{}", row["x"]));
            let first = std::fs::read_to_string(&marker).expect("the first attempt left its marker");
            let last = row["worker"].as_str().expect("a worker column");
            assert_eq!(row["attempts"], 2, "failed once, then finished: {row:?}");
            if SimpleCommunicator::world().size() > 2 {
                assert_ne!(rank_of(&first), rank_of(last), "the retry of {row:?} ran on the rank that failed");
                moved += 1;
            }
        }
        if moved > 0 {
            println!("{moved} retries ran on another rank than their failed attempt");
        }
    });
    ExitCode::SUCCESS
}

/// Processes asking for more threads than a rank has: every rank ends with an error, the
/// master's naming the limit, and nothing runs.
fn too_many_threads(options: MpiOptions) -> ExitCode {
    let limit = options.threads_per_rank;
    let mut backend = match MpiBackend::<Busy>::new(options) {
        Ok(backend) => backend,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    let base = tempfile::tempdir().expect("a temporary directory");
    match backend.run(busy_operation(base.path()).with_threads(limit + 1)) {
        Ok(_) => {
            eprintln!("error: rank {} ran processes that ask for more threads than it has", backend.rank());
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error}");
            let expected = format!("each MPI worker rank has {limit}");
            if backend.is_master() && !error.to_string().contains(&expected) {
                return ExitCode::from(3);
            }
            ExitCode::FAILURE
        }
    }
}

/// The master cannot create its result directory (the base is a file): every rank must end
/// with an error, the master with the reason, and exit 1.
fn unwritable(backend: &mut MpiBackend<Probe>) -> ExitCode {
    let base = tempfile::tempdir().expect("a temporary directory");
    let file = base.path().join("not-a-directory");
    std::fs::write(&file, "a file").expect("a file");
    match backend.run(conformance_operation(&file)) {
        Ok(_) => {
            eprintln!("error: rank {} ran an operation whose results base is a file", backend.rank());
            ExitCode::from(2)
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn scratch() -> std::path::PathBuf {
    std::env::temp_dir().join("taskfarm-mpi-scenarios")
}

/// The conformance probe panics on purpose: keep those quiet, print every other panic.
fn quiet_on_purpose_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = backend_core::panic_message(info.payload());
        if !message.contains("panics on purpose") || message.contains("outside any process") {
            default(info);
        }
    }));
}
