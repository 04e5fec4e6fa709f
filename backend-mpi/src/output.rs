//! Processes' kept output (`output = "files"` or `"log"`) on its way from a worker rank to
//! the master, apart from MPI.
//!
//! A worker rank's processes queue their laid-out output (`backend_core::process_output`,
//! forwarding); the worker's main thread cuts it into [`OutputChunk`]s ([`Outgoing`]) and
//! sends them in `Output` messages of about [`CHUNK_BYTES`], which MPI sends at once, a few
//! messages between its records' messages. The master writes each chunk into its result
//! directory as it comes ([`Incoming`], through `backend_core`'s `OutputWriter`: the files
//! of `output = "files"`, or the output's block of `output.log`, reserved at its first
//! chunk and indexed after its last), so it never holds an output whole and spends a
//! bounded time on each message. Messages between two ranks arrive in the order sent, and
//! a rank sends one output's chunks in order.
//!
//! **A window.** A worker has at most [`OUTPUT_WINDOW`] bytes of output on their way that
//! the master has not said it took (`OutputTaken`, every [`ACK_EVERY`] bytes or so): a
//! large output never fills the master's queue of arrived messages, where the records of
//! every rank would wait behind it, so dispatch goes on while it streams.
//!
//! Output goes after the records that were due, so a record may reach the master before
//! its process's output: a run stopped by a signal (the master leaves after a short grace)
//! can lack the output of processes that ended in its last moments.

use std::collections::HashMap;
use std::path::PathBuf;

use backend_core::process_output::{OutputLayout, OutputWriter, ProcessOutput, StreamedOutput};
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

/// Outputs coming in on the master, written into its result directory piece by piece.
#[derive(Debug)]
pub(crate) struct Incoming {
    writer: OutputWriter,
    dir: PathBuf,
    /// By sender and process: the output coming in.
    partial: HashMap<(Rank, u64), Partial>,
    /// By sender: the bytes (by [`OutputChunk::weight`]) taken since the sender was last told.
    untold: HashMap<Rank, u64>,
}

/// An output of which some chunks came.
#[derive(Debug)]
struct Partial {
    layout: OutputLayout,
    total: u64,
    /// How many of its bytes came.
    came: u64,
    /// Where it is written; `None` once writing it failed (its chunks are still checked).
    stream: Option<StreamedOutput>,
}

impl Incoming {
    /// Nothing received yet; outputs go into the result directory `dir`.
    pub(crate) fn new(dir: PathBuf) -> Self {
        Incoming { writer: OutputWriter::new(dir.clone()), dir, partial: HashMap::new(), untold: HashMap::new() }
    }

    /// Takes in the chunks of an `Output` message from `from`, writing each at once (so a
    /// large output costs the master a bounded time per message and is never held whole);
    /// the bytes to tell `from` were taken (`OutputTaken`), once they reach [`ACK_EVERY`].
    /// An output that cannot be written is lost and `operation.log` says why; chunks that
    /// do not follow one another are an error (the message was damaged).
    pub(crate) fn take(&mut self, from: Rank, chunks: Vec<OutputChunk>) -> Result<Option<u64>, Error> {
        let tell = self.count(from, &chunks);
        for chunk in chunks {
            self.write(from, chunk)?;
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

    /// Checks that a chunk follows the ones before it and writes it.
    fn write(&mut self, from: Rank, chunk: OutputChunk) -> Result<(), Error> {
        let OutputChunk { id, layout, total, offset, bytes } = chunk;
        let damaged = |reason: String| Error::Decode { from, len: bytes.len(), reason };
        let end = offset.checked_add(bytes.len() as u64).filter(|&end| end <= total).ok_or_else(|| {
            damaged(format!(
                "a chunk of process {id}'s output ends past its {total} bytes (at {offset} + {})",
                bytes.len()
            ))
        })?;
        let key = (from, id);
        let mut partial = if offset == 0 {
            let stream = self.writer.begin(id, layout, total).map_err(|e| self.lost(id, from, &e)).ok();
            Partial { layout, total, came: 0, stream }
        } else {
            let partial = self.partial.remove(&key).ok_or_else(|| {
                damaged(format!("a chunk of process {id}'s output starts at {offset}, but none came before it"))
            })?;
            if partial.layout != layout || partial.total != total || partial.came != offset {
                return Err(damaged(format!(
                    "a chunk of process {id}'s output does not follow the one before (at {offset}, {} bytes came)",
                    partial.came
                )));
            }
            partial
        };
        if let Some(stream) = partial.stream.as_mut() {
            if let Err(e) = self.writer.write(stream, &bytes) {
                self.lost(id, from, &e);
                partial.stream = None;
            }
        }
        partial.came = end;
        if end < total {
            self.partial.insert(key, partial);
        }
        Ok(())
    }

    /// Says in `operation.log` that an output could not be written.
    fn lost(&self, id: u64, from: Rank, error: &std::io::Error) {
        tracing::warn!(
            target: "taskfarm",
            "the output of process {id} from rank {from} could not be written into {}: {error}",
            self.dir.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_core::process_output::OutputMode;
    use std::collections::VecDeque;
    use std::path::Path;

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

    /// What the result directory `dir` holds of process `id`'s output, laid out as `layout`
    /// (the latest block of the log).
    fn written(dir: &Path, id: u64, layout: OutputLayout) -> Vec<u8> {
        match layout {
            OutputLayout::Files { .. } => {
                let mut bytes = std::fs::read(dir.join(format!("logs/{id}.out"))).expect("stdout written");
                bytes.extend(std::fs::read(dir.join(format!("logs/{id}.err"))).expect("stderr written"));
                bytes
            }
            OutputLayout::Log => {
                let index = std::fs::read_to_string(dir.join("output.idx")).expect("the index");
                let line = index.lines().rfind(|l| l.starts_with(&format!("{id} "))).expect("an index line");
                let n: Vec<usize> = line.split(' ').map(|f| f.parse().expect("a number")).collect();
                std::fs::read(dir.join("output.log")).expect("the log")[n[1]..n[1] + n[2]].to_vec()
            }
        }
    }

    #[test]
    fn outputs_cut_into_bounded_messages_are_written_whole() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // One over 1 MiB, small ones, empty ones, both layouts.
        let outputs = vec![
            output(1, OutputMode::Files, 3),
            output(2, OutputMode::Log, (1 << 20) + 123),
            ProcessOutput::new(OutputMode::Files, 3, b"", b"").expect("kept"),
            output(4, OutputMode::Files, 5000),
            output(5, OutputMode::Log, 10),
            ProcessOutput::new(OutputMode::Log, 6, b"", b"").expect("kept"),
        ];
        let messages = messages(&outputs);
        for message in &messages {
            let encoded = postcard::to_stdvec(message).expect("encodes");
            assert!(encoded.len() <= CHUNK_BYTES + 64, "a message of {} bytes", encoded.len());
        }
        assert!(messages.len() > (1 << 20) / CHUNK_BYTES, "the large output took many messages");
        assert!(messages[0].len() > 1, "small outputs share a message");
        let mut incoming = Incoming::new(dir.path().to_owned());
        let (mut told, mut weight) = (0, 0);
        for message in messages {
            weight += message.iter().map(OutputChunk::weight).sum::<u64>();
            told += incoming.take(3, message).expect("in order").unwrap_or(0);
            assert!(incoming.untold[&3] < ACK_EVERY, "the master tells once it took a quarter window");
        }
        assert_eq!(told + incoming.untold[&3], weight, "every byte taken is told or waits to be");
        assert!(incoming.partial.is_empty());
        for output in &outputs {
            assert_eq!(written(dir.path(), output.id, output.layout), output.bytes, "process {}", output.id);
        }
    }

    #[test]
    fn a_worker_sends_no_more_than_a_window_ahead_of_what_the_master_took() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let big = output(1, OutputMode::Log, 1 << 20);
        let mut queue: VecDeque<ProcessOutput> = [big.clone()].into_iter().collect();
        let mut outgoing = Outgoing::default();
        let mut incoming = Incoming::new(dir.path().to_owned());
        let mut in_transit = VecDeque::new();
        while outgoing.pending(|| queue.pop_front()) || !in_transit.is_empty() {
            while outgoing.has_room() && outgoing.pending(|| queue.pop_front()) {
                in_transit.push_back(outgoing.chunks(|| queue.pop_front()));
            }
            let in_flight: u64 = in_transit.iter().flatten().map(OutputChunk::weight).sum();
            assert!(in_flight <= OUTPUT_WINDOW + CHUNK_BYTES as u64, "{in_flight} bytes on their way");
            // The master takes one message; what it says it took frees the window.
            let Some(chunks) = in_transit.pop_front() else { break };
            if let Some(bytes) = incoming.take(1, chunks).expect("in order") {
                outgoing.taken(bytes);
            }
        }
        assert_eq!(written(dir.path(), 1, OutputLayout::Log), big.bytes);
    }

    #[test]
    fn chunks_of_two_ranks_interleave_and_damage_is_an_error() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let (a, b) = (output(7, OutputMode::Log, 9000), output(8, OutputMode::Files, 7000));
        let (ma, mb) = (messages(std::slice::from_ref(&a)), messages(std::slice::from_ref(&b)));
        let mut incoming = Incoming::new(dir.path().to_owned());
        for i in 0..ma.len().max(mb.len()) {
            for (rank, message) in [(1, ma.get(i)), (2, mb.get(i))] {
                if let Some(message) = message {
                    incoming.take(rank, message.clone()).expect("in order");
                }
            }
        }
        assert_eq!(written(dir.path(), 7, a.layout), a.bytes);
        assert_eq!(written(dir.path(), 8, b.layout), b.bytes);
        // A chunk without its predecessor, one past the total, one out of place.
        let chunks: Vec<OutputChunk> = ma.into_iter().flatten().collect();
        let error = incoming.take(1, vec![chunks[1].clone()]).expect_err("no first chunk");
        assert!(error.to_string().contains("rank 1") && error.to_string().contains("process 7"), "{error}");
        let past = OutputChunk { total: 2, ..chunks[0].clone() };
        assert!(incoming.take(1, vec![past]).is_err());
        incoming.take(1, vec![chunks[0].clone()]).expect("a first chunk");
        assert!(incoming.take(1, vec![chunks[2].clone()]).is_err(), "a chunk skipped");
    }

    #[test]
    fn an_output_that_cannot_be_written_is_lost_alone() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let gone = dir.path().join("elsewhere");
        let mut incoming = Incoming::new(gone.clone());
        for message in messages(&[output(1, OutputMode::Files, 10_000), output(2, OutputMode::Log, 10)]) {
            incoming.take(1, message).expect("the chunks follow one another");
        }
        assert!(incoming.partial.is_empty());
        assert!(!gone.exists(), "nothing is made where the result directory is missing");
    }
}
