//! The MPI tests, as one plain program (MPI initializes once per program, so no libtest
//! harness): `cargo xtask test` runs it under `mpirun -n K` with a scenario name. Every rank
//! runs the same scenario; a failed assertion panics, and the backend's panic hook aborts the
//! whole job, so a failure is a non-zero exit of `mpirun`, never a hang.
//!
//! Scenarios: `conformance` (the default: the conformance suite against `SerialBackend`),
//! `exactly-once` (1198 tiny processes, batched), `unwritable` (the master cannot create its
//! result directory: every rank ends with an error, exit code 1) and `stray-panic` (a rank
//! panics outside any process: the job is aborted).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;

use backend_core::testing::{assert_same_results, assert_same_summary, conformance_operation, sized_operation, Probe};
use backend_core::{results, Backend, Operation, Role, SerialBackend, Summary};
use backend_mpi::{MpiBackend, MpiOptions};
use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::topology::{Communicator, SimpleCommunicator};

fn main() -> ExitCode {
    quiet_on_purpose_panics();
    let scenario = std::env::args().nth(1).unwrap_or_else(|| "conformance".into());
    let mut backend = match MpiBackend::<Probe>::new(MpiOptions::default()) {
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
            eprintln!("error: unknown scenario `{other}` (conformance, exactly-once, unwritable, stray-panic)");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// Runs `make(base)` on every rank under MPI and, on rank 0, on `SerialBackend`; the result
/// directories must agree, every process exactly once, and the workers' counts add up.
fn same_as_serial(backend: &mut MpiBackend<Probe>, make: impl Fn(&Path) -> Operation<Probe>) {
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
        Role::Coordinator => {
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
    // Nobody deletes a directory another rank still reads.
    world.barrier();
}

fn check_report(summary: &Summary, size: i32, served_by_workers: u64, make: &impl Fn(&Path) -> Operation<Probe>) {
    let reference_base = tempfile::tempdir().expect("a temporary directory");
    let reference = SerialBackend::new().run(make(reference_base.path())).expect("the serial backend runs");
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
        assert_eq!(served_by_workers, total, "the workers ran every process exactly once between them");
        assert!(!workers.contains("rank-0"), "the master runs no process when it has workers");
        let expected = (size as usize - 1).min(2);
        assert!(workers.len() >= expected, "processes ran on {workers:?}, expected at least {expected} ranks");
    }
    let panicked = rows.iter().filter(|row| row["reason"].as_str().is_some_and(|r| r.starts_with("panicked:"))).count();
    assert!(panicked > 0, "a panicking process is a crash record");
    assert!(
        rows.iter().all(|row| row["host"].as_str().is_some_and(|h| !h.is_empty())),
        "every row names the host it ran on"
    );
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
