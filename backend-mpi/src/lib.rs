//! The MPI backend: runs an operation's processes over the ranks of one `mpirun`, with rank 0
//! as the master and every other rank as a worker (dynamic master-worker scheduling).
//!
//! This crate is for clusters (or many cores) under MPI. It is not for one machine without
//! MPI (that is `backend-local`) and it adds nothing to the model: staging, journaling and
//! consolidation are `backend-core`'s [`Lifecycle`], the same for every backend.
//!
//! # The SPMD contract
//!
//! Every rank runs the same program and makes the same calls: `MpiBackend::new`, then
//! [`Backend::run`] (or the lifecycle calls one by one) with an operation of the same
//! process type. What the calls do depends on the rank:
//!
//! - **Rank 0, the master**, stages the operation in (result directory, `operation.toml`,
//!   journal), pulls the processes lazily from the operation, hands them out, journals each
//!   record as it arrives and consolidates. Its [`Summary`] is the operation's report
//!   (`role: Role::Master`).
//! - **Every other rank, a worker**, drops the operation it was given in `stage_in` (the
//!   master's copy is the one that runs), serves units of work in `execute` until the master
//!   says it is done, and gets from `consolidate` a [`Summary`] with
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
//! (under 50 ms) — so a process of unknown duration never waits in a queue behind another,
//! and, near the end of the run, no worker queues work at all. A worker rank runs its
//! processes on a thread pool of T threads (`backend_local::ThreadExecutor`; with T > 1,
//! one rank per node and a thread per core) while its main thread alone talks MPI, so it
//! takes the master's messages even while a long process runs; with T > 1 records name
//! the thread (`rank-2/thread-5`). A process that asks for k threads
//! (`Operation::with_threads`) occupies k of them, in the window too, and an operation whose processes ask for
//! more than T is refused before anything runs. A unit is one job, or a batch of jobs when
//! processes have been measured tiny (batches grow until a unit takes about 10 ms, hold at
//! most half as many jobs as the latest short processes in a row, and shrink near the end;
//! one long process sends every worker back to single jobs). Master and workers
//! exchange one postcard-encoded message enum on one tag; a message that does not decode is
//! an error, never a panic. Workers frame each record for the master's journal, so the
//! master writes finished ones without decoding them, and a worker sends records as they finish,
//! in chunks under 4 KiB (which MPI sends without waiting for the master), each at most a
//! few milliseconds after it finished. With two worker ranks or more, the master runs each retry of a failed
//! process on another rank (a worker's counts are then attempts). While waiting, every rank
//! polls: it yields the core for 100 µs (the master first polls for 200 µs), then sleeps
//! with a backoff growing from 50 µs to 1 ms, so a master sharing a node with workers does
//! not burn a core.
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

mod env;
mod master;
mod message;
mod policy;
mod scheduler;
mod transport;
mod worker;

use std::time::{Duration, Instant};

use backend_core::{Backend, Lifecycle, Operation, Process, Role, StatusCounts, Summary};

pub use env::finalize;
#[doc(hidden)]
pub use message::decode_for_fuzzing;

/// Why the MPI backend could not start or go on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `prefetch` is 0.
    #[error("the MPI prefetch window must be at least 1 unit per worker (got 0)")]
    ZeroPrefetch,
    /// `threads_per_rank` is 0.
    #[error("the MPI threads per rank must be at least 1 (got 0)")]
    ZeroThreadsPerRank,
    /// The operation's processes ask for more threads than a worker rank has.
    #[error(
        "each process asks for {asked} threads (`threads`) but each MPI worker rank has {limit} \
         (`threads_per_rank`): ask for at most {limit}, or give each rank more threads (--threads-per-rank)"
    )]
    TooManyThreads {
        /// The threads each process asks for.
        asked: usize,
        /// The threads each worker rank has.
        limit: usize,
    },
    /// The MPI library cannot let processes start threads.
    #[error(
        "the MPI library gives only `{provided}` thread support and taskfarm needs `Funneled` or higher: \
         use an MPI built with thread support (Open MPI and MPICH are, by default)"
    )]
    Threading {
        /// The level the library provided.
        provided: String,
    },
    /// The backend was made on another thread than the one that initialized MPI.
    #[error(
        "MPI was initialized on another thread of this program: make the MPI backend on the thread \
         that initialized MPI (usually the main thread), the only one that may talk MPI"
    )]
    WrongThread,
    /// MPI was finalized already.
    #[error(
        "MPI was already finalized in this program and cannot start again: make every MPI backend \
         before calling backend_mpi::finalize"
    )]
    Finalized,
    /// A message could not be encoded.
    #[error("could not encode a `{what}` message for MPI: {reason}")]
    Encode {
        /// The kind of message.
        what: &'static str,
        /// What postcard said.
        reason: String,
    },
    /// A message did not decode.
    #[error(
        "rank {from} sent a message of {len} bytes that does not decode ({reason}): \
         are all ranks running the same build of the same program?"
    )]
    Decode {
        /// The sender.
        from: i32,
        /// The message's length.
        len: usize,
        /// What postcard said.
        reason: String,
    },
    /// A message came where the protocol has no place for it.
    #[error(
        "rank {from} sent a `{what}` message where none was expected: \
         are all ranks running the same build of the same program?"
    )]
    Unexpected {
        /// The sender.
        from: i32,
        /// What came.
        what: &'static str,
    },
    /// A worker told the master it cannot go on.
    #[error("worker rank {rank} could not go on: {reason}")]
    WorkerFailed {
        /// The worker.
        rank: i32,
        /// Its reason.
        reason: String,
    },
    /// The master stopped the operation; it reports why.
    #[error(
        "rank {rank} stopped serving: the master (rank 0) ended the operation with an error, which rank 0 reports"
    )]
    MasterStopped {
        /// This worker's rank.
        rank: i32,
    },
    /// An error of the model (result directory, journal, ...).
    #[error(transparent)]
    Core(#[from] backend_core::Error),
}

impl From<Error> for backend_core::Error {
    fn from(error: Error) -> Self {
        match error {
            Error::Core(core) => core,
            // Sentences a user can act on; the core has no MPI variant, so they travel as text.
            stopped @ (Error::MasterStopped { .. }
            | Error::ZeroPrefetch
            | Error::ZeroThreadsPerRank
            | Error::TooManyThreads { .. }
            | Error::Threading { .. }
            | Error::WrongThread
            | Error::Finalized) => backend_core::Error::InvalidOption(stopped.to_string()),
            protocol => backend_core::Error::Internal(protocol.to_string()),
        }
    }
}

/// Settings of the MPI backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpiOptions {
    /// How many units per thread each worker keeps in flight once processes are measured
    /// short (at least 1; default 2). A worker rank with T threads then holds T × prefetch
    /// threads of work (T running, T × (prefetch − 1) waiting); before that, and near the
    /// end of the run, T (nothing waiting).
    pub prefetch: usize,
    /// How many processes each worker rank runs at once, on a pool of that many threads
    /// while its main thread alone talks MPI (at least 1; default 1: one after another). One rank per node with one thread per core is the layout
    /// for clusters (`cargo xtask mpirun --per-node`). The master's value holds for every rank.
    pub threads_per_rank: usize,
}

impl Default for MpiOptions {
    fn default() -> Self {
        MpiOptions { prefetch: 2, threads_per_rank: 1 }
    }
}

impl MpiOptions {
    /// Sets the prefetch window.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }

    /// Sets the threads per worker rank.
    pub fn threads_per_rank(mut self, n: usize) -> Self {
        self.threads_per_rank = n;
        self
    }
}

/// The MPI backend: rank 0 runs the operation with the other ranks as workers. See the
/// [crate documentation](crate) for what each rank does.
pub struct MpiBackend<P: Process> {
    mpi: env::Mpi,
    prefetch: usize,
    threads_per_rank: usize,
    part: Part<P>,
}

enum Part<P: Process> {
    Master {
        lifecycle: Box<Lifecycle<P>>,
        /// Whether the workers have been told to end (or never had to be).
        released: bool,
    },
    Worker(WorkerPart),
}

#[derive(Debug, Default)]
struct WorkerPart {
    name: String,
    staged: bool,
    served: Option<worker::Served>,
    wall: Duration,
}

impl<P: Process> std::fmt::Debug for MpiBackend<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MpiBackend")
            .field("rank", &self.mpi.rank)
            .field("size", &self.mpi.size)
            .field("prefetch", &self.prefetch)
            .field("threads_per_rank", &self.threads_per_rank)
            .finish_non_exhaustive()
    }
}

impl<P: Process> MpiBackend<P> {
    /// Initializes MPI if this program has not (once per program) and makes the backend of
    /// this rank: the master on rank 0, a worker on the others. Every rank must call it.
    pub fn new(options: MpiOptions) -> Result<Self, Error> {
        if options.prefetch == 0 {
            return Err(Error::ZeroPrefetch);
        }
        if options.threads_per_rank == 0 {
            return Err(Error::ZeroThreadsPerRank);
        }
        let mpi = env::start()?;
        let part = if mpi.rank == 0 {
            Part::Master { lifecycle: Box::new(Lifecycle::new(backend_core::BackendKind::Mpi)), released: true }
        } else {
            Part::Worker(WorkerPart::default())
        };
        Ok(MpiBackend { mpi, prefetch: options.prefetch, threads_per_rank: options.threads_per_rank, part })
    }

    /// This rank (0 is the master).
    pub fn rank(&self) -> i32 {
        self.mpi.rank
    }

    /// How many ranks the world has.
    pub fn size(&self) -> i32 {
        self.mpi.size
    }

    /// Whether this rank is the master, whose summary is the operation's report.
    pub fn is_master(&self) -> bool {
        self.mpi.rank == 0
    }

    /// The host this rank runs on (the MPI processor name).
    pub fn host(&self) -> &str {
        &self.mpi.host
    }

    fn abandon_workers(&mut self, why: &Error) {
        if let Part::Master { released, .. } = &mut self.part {
            if !*released && self.mpi.size > 1 {
                let mut wire = env::Wire::new(&self.mpi.world);
                master::abandon::<P>(&self.mpi, &mut wire, why, None);
            }
            *released = true;
        }
    }
}

impl<P: Process> Backend<P> for MpiBackend<P> {
    fn name(&self) -> &'static str {
        backend_core::BackendKind::Mpi.as_str()
    }

    fn stage_in(&mut self, operation: Operation<P>) -> backend_core::Result<()> {
        match &mut self.part {
            Part::Master { lifecycle, released } => {
                *released = false;
                let asked = operation.options().process_threads();
                if asked > self.threads_per_rank {
                    let error = Error::TooManyThreads { asked, limit: self.threads_per_rank };
                    self.abandon_workers(&error);
                    return Err(error.into());
                }
                if let Err(error) = lifecycle.stage_in(operation) {
                    let message = error.to_string();
                    self.abandon_workers(&Error::Core(backend_core::Error::InvalidOption(message)));
                    return Err(error);
                }
                Ok(())
            }
            Part::Worker(part) => {
                // The master's copy of the operation is the one that runs.
                *part = WorkerPart { name: operation.name().to_owned(), staged: true, ..WorkerPart::default() };
                Ok(())
            }
        }
    }

    fn execute(&mut self) -> backend_core::Result<()> {
        let mpi = &self.mpi;
        let (prefetch, threads) = (self.prefetch, self.threads_per_rank);
        match &mut self.part {
            Part::Master { lifecycle, released } => {
                let outcome = lifecycle
                    .execute_here(|dispatch, collector| Ok(master::run(mpi, prefetch, threads, dispatch, collector)?));
                // `master::run` released every worker, whatever its outcome.
                *released = outcome.is_ok() || *released;
                outcome
            }
            Part::Worker(part) => {
                if !part.staged {
                    return Err(backend_core::Error::OutOfOrder { call: "execute", needs: "stage_in" });
                }
                let started = Instant::now();
                let served = worker::serve::<P>(mpi);
                part.wall = started.elapsed();
                part.staged = false;
                part.served = Some(served?);
                Ok(())
            }
        }
    }

    fn check_status(&self) -> StatusCounts {
        match &self.part {
            Part::Master { lifecycle, .. } => lifecycle.check_status(),
            Part::Worker(part) => {
                let served = part.served.clone().unwrap_or_default();
                StatusCounts { finished: served.finished, crashed: served.crashed, running: 0, total: None }
            }
        }
    }

    fn retrieve(&mut self, timeout: Option<Duration>) -> backend_core::Result<bool> {
        match &mut self.part {
            Part::Master { lifecycle, .. } => lifecycle.retrieve(timeout),
            Part::Worker(part) if part.served.is_some() => Ok(true),
            Part::Worker(_) => Err(backend_core::Error::OutOfOrder { call: "retrieve", needs: "execute" }),
        }
    }

    fn consolidate(&mut self) -> backend_core::Result<Summary> {
        match &mut self.part {
            Part::Master { lifecycle, .. } => lifecycle.consolidate(),
            Part::Worker(part) => {
                let Some(served) = &part.served else {
                    return Err(backend_core::Error::OutOfOrder { call: "consolidate", needs: "retrieve" });
                };
                let processes = served.finished + served.crashed;
                Ok(Summary {
                    name: part.name.clone(),
                    backend: "mpi",
                    dir: served.dir.clone(),
                    total: None,
                    finished: served.finished,
                    crashed: served.crashed,
                    timed_out: 0,
                    wall: part.wall,
                    damage: backend_core::journal::Damage::default(),
                    interrupted: false,
                    deadline_reached: false,
                    role: Role::Worker { worker: u32::try_from(self.mpi.rank).unwrap_or(0), processes },
                })
            }
        }
    }

    fn cleanup(&mut self) -> backend_core::Result<()> {
        match &mut self.part {
            Part::Master { lifecycle, .. } => lifecycle.cleanup(),
            Part::Worker(part) => {
                part.staged = false;
                Ok(())
            }
        }
    }
}

impl<P: Process> Drop for MpiBackend<P> {
    fn drop(&mut self) {
        // A master dropped between `stage_in` and `execute` must not leave workers waiting.
        if !std::thread::panicking() && !mpi::environment::is_finalized() {
            self.abandon_workers(&Error::Core(backend_core::Error::InvalidOption(
                "the program dropped the MPI backend before executing the operation".into(),
            )));
        }
    }
}
