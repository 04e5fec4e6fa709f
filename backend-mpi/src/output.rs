//! Processes' kept output (`output = "files"` or `"log"`) on its way from a worker rank to
//! the master, apart from MPI.
//!
//! A worker rank's processes queue their laid-out output (`backend_core::process_output`,
//! forwarding); the worker's main thread cuts it into [`OutputChunk`]s ([`Outgoing`]) and
//! sends them in `Output` messages of about [`CHUNK_BYTES`], which MPI sends at once, a few
//! messages between its records' messages. The master puts each process's chunks back
//! together ([`Incoming`]) and writes the output into its result directory once the last
//! chunk came. Messages between two ranks arrive in the order sent and a rank sends one
//! output's chunks in order, so the master holds at most one unfinished output per worker.
//!
//! **A window.** A worker has at most [`OUTPUT_WINDOW`] bytes of output on their way that
//! the master has not said it took (`OutputTaken`, every [`ACK_EVERY`] bytes or so): a
//! large output never fills the master's queue of arrived messages, where the records of
//! every rank would wait behind it, so dispatch goes on while it streams.

use std::collections::HashMap;
use std::path::PathBuf;

use backend_core::process_output::{OutputLayout, ProcessOutput};
use serde::{Deserialize, Serialize};

use crate::message::CHUNK_BYTES;
use crate::transport::Rank;
use crate::Error;

/// A piece of one process's laid-out output: `bytes` go at `offset` of its `total` bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutputChunk {
    /// The process's id.
    pub(crate) id: u64,
    /// Which files the whole output goes to.
    pub(crate) layout: OutputLayout,
    /// The length of the whole output.
    pub(crate) total: u64,
    /// Where these bytes start in it.
    pub(crate) offset: u64,
    /// The bytes.
    #[serde(with = "serde_bytes")]
    pub(crate) bytes: Vec<u8>,
}

/// What a chunk costs in a message beyond its bytes (id, layout, total, offset, length), at
/// most: counted so that a message of many empty outputs stays small too.
const CHUNK_OVERHEAD: usize = 40;

/// The most bytes of output (with [`CHUNK_OVERHEAD`] a chunk) a worker has on their way
/// that the master has not said it took: about 20 messages, which the master takes in a
/// few hundred microseconds.
pub(crate) const OUTPUT_WINDOW: u64 = 64 * 1024;

/// The master says it took a worker's output once this many bytes of it came since it last
/// said so: a quarter of the window, so the window refills before the worker runs dry.
pub(crate) const ACK_EVERY: u64 = OUTPUT_WINDOW / 4;

impl OutputChunk {
    /// What the chunk counts for in the window.
    fn weight(&self) -> u64 {
        (self.bytes.len() + CHUNK_OVERHEAD) as u64
    }
}

/// The outputs of a worker rank on their way out: the one being sent and how far, and how
/// much the master has not said it took.
#[derive(Debug, Default)]
pub(crate) struct Outgoing {
    current: Option<(ProcessOutput, usize)>,
    in_flight: u64,
}

impl Outgoing {
    /// Whether the window has room for another message.
    pub(crate) fn has_room(&self) -> bool {
        self.in_flight < OUTPUT_WINDOW
    }

    /// The master took `bytes` more (its `OutputTaken`).
    pub(crate) fn taken(&mut self, bytes: u64) {
        self.in_flight = self.in_flight.saturating_sub(bytes);
    }

    /// Whether an output is part-sent, or one more is waiting in `more`: taken in, so that
    /// the next [`chunks`](Self::chunks) has it.
    pub(crate) fn pending(&mut self, more: impl FnOnce() -> Option<ProcessOutput>) -> bool {
        if self.current.is_none() {
            self.current = more().map(|output| (output, 0));
        }
        self.current.is_some()
    }

    /// The chunks of the next message: about [`CHUNK_BYTES`] at most (a message holds at
    /// least one chunk), outputs taken from `more` in order; empty when none is left. They
    /// count in the window from now on (see [`has_room`](Self::has_room)).
    pub(crate) fn chunks(&mut self, mut more: impl FnMut() -> Option<ProcessOutput>) -> Vec<OutputChunk> {
        let mut chunks = Vec::new();
        let mut room = CHUNK_BYTES;
        while room > CHUNK_OVERHEAD || chunks.is_empty() {
            if !self.pending(&mut more) {
                break;
            }
            let Some((output, sent)) = self.current.as_mut() else { break };
            let take = (output.bytes.len() - *sent).min(room.saturating_sub(CHUNK_OVERHEAD).max(1));
            chunks.push(OutputChunk {
                id: output.id,
                layout: output.layout,
                total: output.bytes.len() as u64,
                offset: *sent as u64,
                bytes: output.bytes[*sent..*sent + take].to_vec(),
            });
            *sent += take;
            room = room.saturating_sub(take + CHUNK_OVERHEAD);
            self.in_flight += (take + CHUNK_OVERHEAD) as u64;
            if *sent == output.bytes.len() {
                self.current = None;
            }
        }
        chunks
    }
}

/// Room reserved up front for an output being put together at most: beyond, it grows as
/// chunks come (its stated total came over the network).
const MOST_RESERVED: u64 = 1 << 20;

/// Outputs being put together on the master, and the result directory they are written to.
#[derive(Debug)]
pub(crate) struct Incoming {
    dir: PathBuf,
    /// By sender and process: the layout, the total and the bytes so far.
    partial: HashMap<(Rank, u64), (OutputLayout, u64, Vec<u8>)>,
    /// By sender: the bytes (by [`OutputChunk::weight`]) taken since the sender was last told.
    untold: HashMap<Rank, u64>,
}

impl Incoming {
    /// Nothing received yet; outputs go into the result directory `dir`.
    pub(crate) fn new(dir: PathBuf) -> Self {
        Incoming { dir, partial: HashMap::new(), untold: HashMap::new() }
    }

    /// Takes in the chunks of an `Output` message from `from` and writes each output whose
    /// last chunk came; the bytes to tell `from` were taken (`OutputTaken`), once they reach
    /// [`ACK_EVERY`]. An output that cannot be written is lost and `operation.log` says
    /// why; chunks that do not follow one another are an error (the message was damaged).
    pub(crate) fn take(&mut self, from: Rank, chunks: Vec<OutputChunk>) -> Result<Option<u64>, Error> {
        let tell = self.count(from, &chunks);
        for chunk in chunks {
            if let Some(output) = self.assemble(from, chunk)? {
                if let Err(e) = output.write(&self.dir) {
                    tracing::warn!(
                        target: "taskfarm",
                        "the output of process {} from rank {from} could not be written into {}: {e}",
                        output.id,
                        self.dir.display()
                    );
                }
            }
        }
        Ok(tell)
    }

    /// Counts the chunks as taken from `from`; the bytes to tell it, once they reach
    /// [`ACK_EVERY`].
    fn count(&mut self, from: Rank, chunks: &[OutputChunk]) -> Option<u64> {
        let untold = self.untold.entry(from).or_default();
        *untold += chunks.iter().map(OutputChunk::weight).sum::<u64>();
        (*untold >= ACK_EVERY).then(|| std::mem::take(untold))
    }

    /// Adds a chunk; the whole output once its last chunk came.
    fn assemble(&mut self, from: Rank, chunk: OutputChunk) -> Result<Option<ProcessOutput>, Error> {
        let OutputChunk { id, layout, total, offset, bytes } = chunk;
        let damaged = |reason: String| Error::Decode { from, len: bytes.len(), reason };
        let end = offset.checked_add(bytes.len() as u64).filter(|&end| end <= total).ok_or_else(|| {
            damaged(format!(
                "a chunk of process {id}'s output ends past its {total} bytes (at {offset} + {})",
                bytes.len()
            ))
        })?;
        let key = (from, id);
        let mut so_far = if offset == 0 {
            self.partial.remove(&key);
            let reserve = usize::try_from(total.min(MOST_RESERVED)).unwrap_or(0);
            (layout, total, Vec::with_capacity(reserve))
        } else {
            let so_far = self.partial.remove(&key).ok_or_else(|| {
                damaged(format!("a chunk of process {id}'s output starts at {offset}, but none came before it"))
            })?;
            if so_far.0 != layout || so_far.1 != total || so_far.2.len() as u64 != offset {
                return Err(damaged(format!(
                    "a chunk of process {id}'s output does not follow the one before (at {offset}, {} bytes came)",
                    so_far.2.len()
                )));
            }
            so_far
        };
        so_far.2.extend_from_slice(&bytes);
        if end == total {
            return Ok(Some(ProcessOutput { id, layout, bytes: so_far.2 }));
        }
        self.partial.insert(key, so_far);
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_core::process_output::OutputMode;
    use std::collections::VecDeque;

    fn output(id: u64, mode: OutputMode, len: usize) -> ProcessOutput {
        let stdout: Vec<u8> = (0..len).map(|i| if i % 50 == 49 { b'\n' } else { b'a' + (i % 26) as u8 }).collect();
        ProcessOutput::new(mode, id, &stdout, b"warning\n").expect("kept")
    }

    /// Every message's chunks, as a worker would send them.
    fn messages(outputs: &[ProcessOutput]) -> Vec<Vec<OutputChunk>> {
        let mut queue: VecDeque<ProcessOutput> = outputs.iter().cloned().collect();
        let mut outgoing = Outgoing::default();
        let mut messages = Vec::new();
        while outgoing.pending(|| queue.pop_front()) {
            messages.push(outgoing.chunks(|| queue.pop_front()));
        }
        assert!(outgoing.chunks(|| None).is_empty());
        messages
    }

    #[test]
    fn outputs_cut_into_bounded_messages_come_back_whole() {
        // One over 1 MiB, small ones, an empty one, both layouts.
        let outputs = vec![
            output(1, OutputMode::Files, 3),
            output(2, OutputMode::Log, (1 << 20) + 123),
            ProcessOutput::new(OutputMode::Files, 3, b"", b"").expect("kept"),
            output(4, OutputMode::Files, 5000),
            output(5, OutputMode::Log, 10),
        ];
        let messages = messages(&outputs);
        for message in &messages {
            let encoded = postcard::to_stdvec(message).expect("encodes");
            assert!(encoded.len() <= CHUNK_BYTES + 64, "a message of {} bytes", encoded.len());
        }
        assert!(messages.len() > (1 << 20) / CHUNK_BYTES, "the large output took many messages");
        assert!(messages[0].len() > 1, "small outputs share a message");
        let mut incoming = Incoming::new(PathBuf::new());
        let mut whole = Vec::new();
        for chunk in messages.into_iter().flatten() {
            whole.extend(incoming.assemble(3, chunk).expect("in order"));
        }
        assert_eq!(whole, outputs);
        assert!(incoming.partial.is_empty());
    }

    #[test]
    fn a_worker_sends_no_more_than_a_window_ahead_of_what_the_master_took() {
        let mut queue: VecDeque<ProcessOutput> = [output(1, OutputMode::Log, 1 << 20)].into_iter().collect();
        let mut outgoing = Outgoing::default();
        let mut incoming = Incoming::new(PathBuf::new());
        let (mut in_transit, mut sent, mut whole) = (VecDeque::new(), 0u64, Vec::new());
        while outgoing.pending(|| queue.pop_front()) || !in_transit.is_empty() {
            while outgoing.has_room() && outgoing.pending(|| queue.pop_front()) {
                let chunks = outgoing.chunks(|| queue.pop_front());
                sent += chunks.iter().map(OutputChunk::weight).sum::<u64>();
                in_transit.push_back(chunks);
            }
            let in_flight: u64 = in_transit.iter().flatten().map(OutputChunk::weight).sum();
            assert!(in_flight <= OUTPUT_WINDOW + CHUNK_BYTES as u64, "{in_flight} bytes on their way");
            // The master takes one message; what it says it took frees the window.
            let Some(chunks) = in_transit.pop_front() else { break };
            if let Some(bytes) = incoming.count(1, &chunks) {
                outgoing.taken(bytes);
            }
            for chunk in chunks {
                whole.extend(incoming.assemble(1, chunk).expect("in order"));
            }
        }
        assert_eq!(whole.len(), 1);
        assert!(sent > 1 << 20);
    }

    #[test]
    fn chunks_of_two_ranks_interleave_and_damage_is_an_error() {
        let (a, b) = (output(7, OutputMode::Log, 9000), output(7, OutputMode::Files, 7000));
        let (ma, mb) = (messages(std::slice::from_ref(&a)), messages(std::slice::from_ref(&b)));
        let mut incoming = Incoming::new(PathBuf::new());
        let mut whole = Vec::new();
        for i in 0..ma.len().max(mb.len()) {
            for (rank, message) in [(1, ma.get(i)), (2, mb.get(i))] {
                for chunk in message.into_iter().flatten() {
                    whole.extend(incoming.assemble(rank, chunk.clone()).expect("in order"));
                }
            }
        }
        assert_eq!(whole.len(), 2);
        assert!(whole.contains(&a) && whole.contains(&b));
        // A chunk without its predecessor, one past the total, one out of place.
        let chunks: Vec<OutputChunk> = ma.into_iter().flatten().collect();
        let error = incoming.assemble(1, chunks[1].clone()).expect_err("no first chunk");
        assert!(error.to_string().contains("rank 1") && error.to_string().contains("process 7"), "{error}");
        let past = OutputChunk { total: 2, ..chunks[0].clone() };
        assert!(incoming.assemble(1, past).is_err());
        incoming.assemble(1, chunks[0].clone()).expect("a first chunk");
        assert!(incoming.assemble(1, chunks[2].clone()).is_err(), "a chunk skipped");
    }

    #[test]
    fn the_master_writes_whole_outputs_into_its_directory() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let outputs = [output(1, OutputMode::Files, 10_000), output(2, OutputMode::Log, 10_000)];
        let mut incoming = Incoming::new(dir.path().to_owned());
        let (mut told, mut weight) = (0, 0);
        for message in messages(&outputs) {
            weight += message.iter().map(OutputChunk::weight).sum::<u64>();
            told += incoming.take(1, message).expect("in order").unwrap_or(0);
            assert!(incoming.untold[&1] < ACK_EVERY, "the master tells once it took a quarter window");
        }
        assert_eq!(told + incoming.untold[&1], weight, "every byte taken is told or waits to be");
        let out = std::fs::read(dir.path().join("logs/1.out")).expect("written");
        assert_eq!(out.len(), 10_000);
        assert_eq!(std::fs::read(dir.path().join("logs/1.err")).expect("written"), b"warning\n");
        let log = std::fs::read(dir.path().join("output.log")).expect("written");
        assert_eq!(log, outputs[1].bytes);
        let index = std::fs::read_to_string(dir.path().join("output.idx")).expect("written");
        assert_eq!(index, format!("2 0 {}\n", log.len()));
    }
}
