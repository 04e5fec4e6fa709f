//! The one message enum that travels between the master (rank 0) and the workers, and its
//! postcard encoding. A message that does not decode is an error, never a panic.

use std::path::PathBuf;

use backend_core::{Job, ProcessRecord};
use mpi::topology::Rank;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::Error;

/// Everything master and workers say to each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(serialize = "P: Serialize", deserialize = "P: DeserializeOwned"))]
pub(crate) enum Message<P> {
    /// Master → worker: the operation starts; its result directory.
    Start {
        /// The master's result directory (processes see it in their context).
        dir: PathBuf,
    },
    /// Master → worker: a unit of work (one or a batch of jobs).
    Work(Vec<Job<P>>),
    /// Worker → master: the records of one unit, in the unit's order.
    Results(Vec<ProcessRecord>),
    /// Master → worker: no more work; finish the queue, say `Bye` and return.
    Shutdown,
    /// Master → worker: the operation failed; drop the queue, say `Bye` and return an error.
    Abandon,
    /// Worker → master: this worker cannot go on (the master abandons the operation).
    Failed {
        /// Why, in one sentence.
        reason: String,
    },
    /// Worker → master: the last message of a worker; how many processes it ran.
    Bye {
        /// Processes this worker ran.
        processes: u64,
    },
}

impl<P: Serialize> Message<P> {
    /// The message's bytes on the wire.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, Error> {
        postcard::to_stdvec(self).map_err(|e| Error::Encode { what: self.kind(), reason: e.to_string() })
    }

    /// The message's name, for errors.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Message::Start { .. } => "start",
            Message::Work(_) => "work",
            Message::Results(_) => "results",
            Message::Shutdown => "shutdown",
            Message::Abandon => "abandon",
            Message::Failed { .. } => "failed",
            Message::Bye { .. } => "bye",
        }
    }
}

impl<P: DeserializeOwned> Message<P> {
    /// Decodes a message that `from` sent.
    pub(crate) fn decode(from: Rank, bytes: &[u8]) -> Result<Self, Error> {
        postcard::from_bytes(bytes).map_err(|e| Error::Decode { from, len: bytes.len(), reason: e.to_string() })
    }
}
