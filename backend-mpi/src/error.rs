//! The MPI backend's one error enum: each variant a sentence a user can act on, and how it
//! travels as a `backend_core::Error` through the `Backend` trait.

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
