//! The MPI backend: runs an operation's processes over the ranks of one `mpirun`, with rank 0
//! as the master and every other rank as a worker (dynamic master-worker scheduling).
//!
//! This crate is for clusters (or many cores) under MPI. It is not for one machine without
//! MPI (that is `backend-local`) and it adds nothing to the model: staging, journaling and
//! consolidation are `backend-core`'s [`Lifecycle`](backend_core::Lifecycle), the same for every backend.
//!
//! # Features
//!
//! `mpi` (on by default) is the backend itself, [`MpiBackend`](#the-spmd-contract), built on
//! the system's MPI library (`apt-get install libopenmpi-dev openmpi-bin libclang-dev`).
//! Without it only the transport-free scheduler, its policy and the messages build, with
//! their tests: that is what docs.rs, which has no MPI, shows. Build the docs where MPI is
//! installed (`cargo doc -p taskfarm-backend-mpi`) to see `MpiBackend`, `MpiOptions` and
//! `finalize`; users reach them through the facade's `mpi` feature (`taskfarm::MpiBackend`).
//!
//! # The SPMD contract
//!
//! Every rank runs the same program and makes the same calls: `MpiBackend::new`, then
//! [`Backend::run`](backend_core::Backend::run) (or the lifecycle calls one by one) with an operation of the same
//! process type. What the calls do depends on the rank:
//!
//! - **Rank 0, the master**, stages the operation in (result directory, `operation.toml`,
//!   journal), pulls the processes lazily from the operation, hands them out, journals each
//!   record as it arrives and consolidates. Its [`Summary`](backend_core::Summary) is the operation's report
//!   (`role: Role::Master`).
//! - **Every other rank, a worker**, drops the operation it was given in `stage_in` (the
//!   master's copy is the one that runs), serves units of work in `execute` until the master
//!   says it is done, and gets from `consolidate` a [`Summary`](backend_core::Summary) with
//!   `role: Role::Worker { worker: rank, processes }`, its own counts and the master's
//!   result directory. It should then return quietly.
//! - **A world of one rank** runs the whole operation on rank 0, one process after another,
//!   and says so once on stderr.
//!
//! ```no_run
//! use backend_core::{Backend, Operation, Process, ProcessContext, ProcessError};
//! use backend_mpi::{MpiBackend, MpiOptions};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Square(i64);
//!
//! impl Process for Square {
//!     type Output = i64;
//!     fn run(&self, _ctx: &ProcessContext) -> Result<i64, ProcessError> {
//!         Ok(self.0 * self.0)
//!     }
//! }
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // Every rank: the same calls.
//!     let mut backend = MpiBackend::new(MpiOptions::default())?;
//!     let summary = backend.run(Operation::from_processes("squares", (0..100).map(Square))?)?;
//!     if summary.is_report() {
//!         println!("{} finished, results in {}", summary.finished, summary.dir.display());
//!     }
//!     Ok(()) // MPI finalizes when main returns; backend_mpi::finalize() does it explicitly.
//! }
//! ```
//!
//! # Scheduling
//!
//! The master deals units breadth first: the next unit goes to the worker with the fewest
//! threads of work in flight, so every worker gets its first unit before any gets a second.
//! A worker's window is counted in threads: with `threads_per_rank` T (default 1) it holds
//! T threads of work while the master knows nothing of how long processes take, and
//! T × `prefetch` (default 2: T running, T waiting) once processes are measured short
//! — so a process of unknown duration never waits in a queue behind another,
//! and, near the end of the run, no worker queues work at all. A worker rank runs its
//! processes on a thread pool of T threads (`backend_local::ThreadExecutor`; with T > 1,
//! one rank per node and a thread per core) while its main thread alone talks MPI, so it
//! takes the master's messages even while a long process runs; with T > 1 records name
//! the thread (`rank-2/thread-5`). A process that asks for k threads
//! (`Operation::with_threads`) occupies k of them, in the window too, and an operation whose processes ask for
//! more than T is refused before anything runs. A unit is one job, or a batch of jobs when
//! processes have been measured tiny (batches grow until a unit takes some milliseconds, hold at
//! most half as many jobs as the latest short processes in a row, and shrink near the end;
//! one long process sends every worker back to single jobs). Master and workers
//! exchange one postcard-encoded message enum on one tag; a message that does not decode is
//! an error, never a panic. Workers frame each record for the master's journal, so the
//! master writes finished ones without decoding them, and a worker sends records as they finish,
//! in chunks under 4 KiB (which MPI sends without waiting for the master), each at most a
//! few milliseconds after it finished. With two worker ranks or more, the master runs each retry of a failed
//! process on another rank (a worker's counts are then attempts). While waiting, every rank
//! polls: it yields the core for a moment (the master a little longer), then sleeps with a
//! growing backoff, so a master sharing a node with workers does not burn a core.
//!
//! # Ends
//!
//! MPI is initialized once per program (threading level `Funneled`: only the thread that
//! made the first `MpiBackend` talks MPI) and finalized when that thread (the main thread)
//! exits, or earlier by [`finalize`]. On success every rank returns and no `MPI_Abort` is
//! made. A panic that no process caught (a process's own panics are crash records) prints
//! its message and aborts the whole job, so no rank waits forever. When the master cannot go
//! on (e.g. the result directory is not writable), it tells the workers to stop, they
//! return an error, and the master's `run` returns the error that says why.

// Without the `mpi` feature only what knows nothing of MPI builds: the scheduler, its
// policy, the messages and the transport trait, with their tests.
#![cfg_attr(not(feature = "mpi"), allow(dead_code, unused_imports))]
// The crate docs name `MpiBackend` and `finalize`, which only the `mpi` feature builds (as on
// docs.rs): there they read as plain names.
#![cfg_attr(not(feature = "mpi"), allow(rustdoc::broken_intra_doc_links))]

#[cfg(feature = "mpi")]
mod backend;
#[cfg(feature = "mpi")]
mod env;
mod error;
#[cfg(feature = "mpi")]
mod master;
mod message;
mod output;
mod policy;
mod scheduler;
mod transport;
#[cfg(feature = "mpi")]
mod worker;

#[cfg(feature = "mpi")]
pub use backend::{MpiBackend, MpiOptions};
#[cfg(feature = "mpi")]
pub use env::finalize;
pub use error::Error;
#[doc(hidden)]
pub use message::decode_for_fuzzing;
