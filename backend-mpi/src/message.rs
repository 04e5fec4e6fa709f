//! The one message enum that travels between the master (rank 0) and the workers, and its
//! postcard encoding. A message that does not decode is an error, never a panic.

use std::path::PathBuf;

use backend_core::{Isolation, Job, ProcessRecord, RunOptions};
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
        /// The operation's timeout, retries, isolation and threads per process.
        options: WireOptions,
        /// How many processes each worker rank runs at once (its thread pool; 1: in its
        /// main thread, one after another).
        threads_per_rank: usize,
    },
    /// Master → worker: a unit of work (one or a batch of jobs).
    Work(Vec<Job<P>>),
    /// Worker → master: the records of one unit, in the unit's order.
    Results(Vec<ProcessRecord>),
    /// Worker → master: log records made on the worker (lines of `operation.log`), sent before
    /// the results of the unit that made them.
    Log(Vec<String>),
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

/// [`RunOptions`] as they travel (the core type has no serde of its own).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct WireOptions {
    /// The timeout in seconds, if any.
    timeout_s: Option<f64>,
    /// Retries of a failed process.
    retries: u32,
    /// Where each attempt runs.
    isolation: Isolation,
    /// Threads each process occupies.
    threads: usize,
}

impl From<RunOptions> for WireOptions {
    fn from(o: RunOptions) -> Self {
        WireOptions {
            timeout_s: o.timeout.map(|t| t.as_secs_f64()),
            retries: o.retries,
            isolation: o.isolation,
            threads: o.threads,
        }
    }
}

impl From<WireOptions> for RunOptions {
    fn from(o: WireOptions) -> Self {
        let timeout = o.timeout_s.and_then(backend_core::seconds_to_duration);
        RunOptions { timeout, retries: o.retries, isolation: o.isolation, threads: o.threads }
    }
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
            Message::Log(_) => "log",
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

/// Decodes `bytes` as a message carrying processes shaped like the worker's (a kind name
/// and a table of fields); whether it decoded. For the fuzz target in `fuzz/`: decoding
/// arbitrary bytes must return, never panic.
#[doc(hidden)]
pub fn decode_for_fuzzing(bytes: &[u8]) -> bool {
    #[derive(Debug, Serialize, Deserialize)]
    struct Fields {
        kind: String,
        config: backend_core::Params,
    }
    Message::<Fields>::decode(0, bytes).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_core::{Params, Value};

    /// A process type shaped like the worker's `SpecProcess`: a name and a map of fields.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct SpecLike {
        kind: String,
        config: Params,
    }

    fn work() -> Vec<u8> {
        let config: Params =
            [("command".to_owned(), Value::from("echo {x}")), ("n".to_owned(), Value::Int(3))].into_iter().collect();
        let job = Job { id: 7, run: 1, params: config.clone(), process: SpecLike { kind: "command".into(), config } };
        Message::Work(vec![job]).encode().expect("encodes")
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder() {
        // Every truncation and every single-byte change of a real message, and a stream of
        // pseudo-random byte strings (xorshift: deterministic, no dependency).
        let valid = work();
        assert!(Message::<SpecLike>::decode(1, &valid).is_ok());
        for cut in 0..valid.len() {
            let _ = Message::<SpecLike>::decode(1, &valid[..cut]);
        }
        for at in 0..valid.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut bytes = valid.clone();
                bytes[at] ^= flip;
                let _ = Message::<SpecLike>::decode(1, &bytes);
            }
        }
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 64) as usize;
            let bytes: Vec<u8> = (0..len).map(|i| (state >> (i % 8 * 8)) as u8 ^ i as u8).collect();
            if let Err(error) = Message::<SpecLike>::decode(3, &bytes) {
                assert!(error.to_string().contains("rank 3 sent a message"), "{error}");
            }
        }
    }
}
