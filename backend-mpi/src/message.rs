//! The one message enum that travels between the master (rank 0) and the workers, and its
//! postcard encoding. A message that does not decode is an error, never a panic.

use std::path::PathBuf;

use backend_core::journal::encode_frame;
use backend_core::{Job, ProcessRecord, RunOptions, Status};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::output::OutputChunk;
use crate::transport::Rank;
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
        /// How many processes each worker rank runs at once (its thread pool; 1: one after
        /// another).
        threads_per_rank: usize,
    },
    /// Master → worker: a unit of work (one or a batch of jobs).
    Work(Vec<Job<P>>),
    /// Worker → master: records of one unit, in the unit's order, framed for the journal:
    /// the whole unit or a chunk of it (`ends_unit` marks the last).
    Results(FramedRecords),
    /// Worker → master: log records made on the worker (lines of `operation.log`), sent before
    /// the results of the unit that made them.
    Log(Vec<String>),
    /// Master → worker: process `id` ran twice and the other copy's record was journaled:
    /// stop the copy running here (its commands are killed; its record is dropped).
    Cancel {
        /// The process whose copy here lost.
        id: u64,
    },
    /// Worker → master: pieces of processes' kept output (`output = "files"` or `"log"`),
    /// about [`CHUNK_BYTES`] a message, which the master writes into its result directory
    /// (see [`crate::output`]).
    Output(Vec<OutputChunk>),
    /// Master → worker: the master took this many more bytes of the worker's output (see
    /// [`crate::output`]): room for as many more on their way.
    OutputTaken {
        /// The bytes taken, counted as the worker counts its window.
        bytes: u64,
    },
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

/// Records of one unit, in the unit's order, as the worker framed them for the journal (see
/// [`encode_frame`]), so the master writes them as they are: it decodes a record only when
/// the process failed. Beside the frames, what the master schedules by. A worker sends a
/// unit's records in chunks small enough for MPI to send at once ([`CHUNK_BYTES`]): it
/// never waits for the master to take its results.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct FramedRecords {
    /// The worker's host.
    pub(crate) host: String,
    /// The id of the unit's first job, which names the unit (`None`: a unit without jobs).
    pub(crate) unit: Option<u64>,
    /// Whether these are the unit's last records.
    pub(crate) ends_unit: bool,
    /// One per record, in the unit's order.
    pub(crate) heads: Vec<RecordHead>,
    /// The records' journal frames, one after another.
    #[serde(with = "serde_bytes")]
    frames: Vec<u8>,
}

/// A chunk of results is sent once its frames reach this many bytes: the whole message then
/// usually stays under 4 KiB (unless its last record is large), which every MPI transport
/// sends at once (eagerly), without waiting for the receiver. A larger message waits for the master to take it, and on a node with
/// more ranks than cores that can take milliseconds each.
pub(crate) const CHUNK_BYTES: usize = 3 * 1024;

/// Bytes a record's frame usually takes (a few parameters, a small output).
pub(crate) const TYPICAL_FRAME: usize = 384;

/// What the master needs to know of a record without decoding it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub(crate) struct RecordHead {
    /// The process's id.
    pub(crate) id: u64,
    /// How it ended.
    pub(crate) status: Status,
    /// How long it ran, in seconds.
    pub(crate) duration_s: f64,
    /// The length of its frame.
    len: u32,
    /// Whether the frame is the stand-in for a finished process's record too large for the
    /// journal (see [`encode_frame`]): a crash in the journal, but no failure of the
    /// process, so it is never run again.
    pub(crate) too_large: bool,
}

impl FramedRecords {
    /// Records of the unit whose first job is `unit`, with room for `records` of a typical size.
    pub(crate) fn new(host: &str, unit: Option<u64>, records: usize) -> Self {
        FramedRecords {
            host: host.to_owned(),
            unit,
            ends_unit: false,
            heads: Vec::with_capacity(records),
            frames: Vec::with_capacity(records.saturating_mul(TYPICAL_FRAME)),
        }
    }

    /// How many bytes the frames take.
    pub(crate) fn frames_len(&self) -> usize {
        self.frames.len()
    }

    /// Frames one more record.
    pub(crate) fn push(&mut self, record: &ProcessRecord) -> Result<(), Error> {
        let start = self.frames.len();
        let status = encode_frame(record, &mut self.frames)?;
        let len = u32::try_from(self.frames.len() - start)
            .map_err(|_| Error::Encode { what: "results", reason: "a record is larger than 4 GiB".into() })?;
        // Only a finished process's record turns into a crash by being too large; a failed
        // one stays a failure (and is retried as one) whatever its size.
        let too_large = record.status == Status::Finished && status != Status::Finished;
        self.heads.push(RecordHead { id: record.id, status, duration_s: record.duration_s, len, too_large });
        Ok(())
    }

    /// Each record's head and frame, in order; an error (the message was damaged) if the
    /// frames' lengths do not add up.
    pub(crate) fn records(&self, from: Rank) -> Result<Vec<(RecordHead, &[u8])>, Error> {
        let mut start = 0usize;
        let mut records = Vec::with_capacity(self.heads.len());
        for head in &self.heads {
            let end = start.saturating_add(head.len as usize);
            let frame = self.frames.get(start..end).ok_or_else(|| Error::Decode {
                from,
                len: self.frames.len(),
                reason: "the records' frames are shorter than their heads say".into(),
            })?;
            records.push((*head, frame));
            start = end;
        }
        if start != self.frames.len() {
            return Err(Error::Decode {
                from,
                len: self.frames.len(),
                reason: "the records' frames are longer than their heads say".into(),
            });
        }
        Ok(records)
    }
}

impl<P: Serialize> Message<P> {
    /// The message's bytes on the wire.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, Error> {
        // Results carry most of the bytes: room for them up front, not grown step by step.
        let room = match self {
            Message::Results(framed) => framed.frames.len() + framed.heads.len() * 24 + framed.host.len() + 16,
            Message::Output(chunks) => chunks.iter().map(|c| c.bytes.len() + 40).sum::<usize>() + 8,
            _ => 64,
        };
        postcard::to_extend(self, Vec::with_capacity(room))
            .map_err(|e| Error::Encode { what: self.kind(), reason: e.to_string() })
    }

    /// The message's name, for errors.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Message::Start { .. } => "start",
            Message::Work(_) => "work",
            Message::Results(_) => "results",
            Message::Log(_) => "log",
            Message::Cancel { .. } => "cancel",
            Message::Output(_) => "output",
            Message::OutputTaken { .. } => "output taken",
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

    fn record(id: u64, status: Status) -> ProcessRecord {
        ProcessRecord {
            id,
            run: 0,
            params: [("x".to_owned(), Value::Int(id as i64))].into_iter().collect(),
            status,
            output: Value::Null,
            reason: (status != Status::Finished).then(|| "boom".to_owned()),
            stderr_tail: None,
            attempts: 1,
            started_at: 1.5,
            duration_s: 0.25,
            location: backend_core::Location { host: "node-1".into(), worker: "rank-2".into() },
        }
    }

    #[test]
    fn framed_records_travel_with_their_heads_and_decode_as_they_were() {
        let records = [record(3, Status::Finished), record(4, Status::Crashed), record(5, Status::TimedOut)];
        let mut framed = FramedRecords::new("node-1", Some(3), 0);
        records.iter().try_for_each(|r| framed.push(r)).expect("frames");
        let bytes = Message::<SpecLike>::Results(framed).encode().expect("encodes");
        let Ok(Message::Results(framed)) = Message::<SpecLike>::decode(2, &bytes) else { panic!("decodes") };
        assert_eq!(framed.host, "node-1");
        let got = framed.records(2).expect("lengths add up");
        assert_eq!(got.len(), 3);
        for ((head, frame), record) in got.into_iter().zip(&records) {
            assert_eq!((head.id, head.status, head.duration_s), (record.id, record.status, record.duration_s));
            assert_eq!(&backend_core::journal::decode_frame(frame).expect("decodes"), record);
        }
    }

    #[test]
    fn frames_that_do_not_match_their_heads_are_an_error() {
        let mut framed = FramedRecords::new("h", Some(1), 0);
        framed.push(&record(1, Status::Finished)).expect("frames");
        framed.push(&record(2, Status::Finished)).expect("frames");
        let mut short = FramedRecords {
            frames: framed.frames[..framed.frames.len() - 1].to_vec(),
            ..FramedRecords::new("h", Some(1), 0)
        };
        short.heads = framed.heads.clone();
        assert!(short.records(4).expect_err("too short").to_string().contains("rank 4"));
        let mut long = FramedRecords { frames: framed.frames.clone(), ..FramedRecords::new("h", Some(1), 0) };
        long.frames.push(0);
        long.heads = framed.heads.clone();
        assert!(long.records(4).is_err());
        assert_eq!(framed.records(4).expect("consistent").len(), 2);
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
