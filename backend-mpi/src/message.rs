//! The one message enum that travels between the master (rank 0) and the workers, and its
//! postcard encoding. A message that does not decode is an error, never a panic.

use std::path::PathBuf;

use backend_core::{Job, ProcessRecord, RunOptions};
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
        options: RunOptions,
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

/// The bytes of a `Work` message whose jobs were encoded one by one (each as
/// `postcard::to_stdvec(&job)`), without decoding them: postcard writes the variant's
/// index, then the number of jobs, then each job. The master keeps jobs encoded this way for
/// retries, so each job is encoded once.
pub(crate) fn work_from_encoded<'a, P: Serialize>(jobs: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>, Error> {
    let jobs: Vec<&[u8]> = jobs.into_iter().collect();
    // `Work` of no jobs: the variant's index, then the length 0 (one byte), dropped here.
    let mut bytes = Message::<P>::Work(Vec::new()).encode()?;
    bytes.pop();
    let len = postcard::to_stdvec(&jobs.len()).map_err(|e| Error::Encode { what: "work", reason: e.to_string() })?;
    bytes.extend_from_slice(&len);
    jobs.iter().for_each(|job| bytes.extend_from_slice(job));
    Ok(bytes)
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
    fn work_from_jobs_encoded_one_by_one_is_the_work_message() {
        let job = |id: u64| {
            let config: Params = [("n".to_owned(), Value::Int(id as i64))].into_iter().collect();
            Job { id, run: 0, params: config.clone(), process: SpecLike { kind: "command".into(), config } }
        };
        // Past 127 jobs the length takes two bytes.
        for n in [0u64, 1, 3, 127, 128, 300] {
            let jobs: Vec<Job<SpecLike>> = (0..n).map(job).collect();
            let encoded: Vec<Vec<u8>> = jobs.iter().map(|j| postcard::to_stdvec(j).expect("encodes")).collect();
            let built = work_from_encoded::<SpecLike>(encoded.iter().map(Vec::as_slice)).expect("builds");
            assert_eq!(built, Message::Work(jobs).encode().expect("encodes"), "{n} jobs");
        }
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
