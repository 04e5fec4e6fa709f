//! `MpiBackend` and its options: the same calls on every rank, with what they do depending
//! on the rank (the master's lifecycle on rank 0, serving on the others).

use std::time::{Duration, Instant};

use backend_core::{Backend, Lifecycle, Operation, Process, Role, StatusCounts, Summary};

use crate::{env, master, worker, Error};

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
