//! A worker rank: serves units of work from the master until it is told to shut down, runs
//! each process through `execute_job` (a panicking process becomes a crash record), frames
//! each record for the master's journal and sends the records back.
//!
//! The main thread only talks MPI: it hands every job of every unit it receives to a
//! [`ThreadExecutor`] of `threads_per_rank` T threads (one by default) and keeps taking the
//! master's messages while processes run, so the master's send of a unit larger than MPI's
//! eager limit (which completes only once this rank takes it) never waits for a process to
//! end. Records leave the rank as they finish: a unit's finished records go to the master
//! once they fill a chunk ([`CHUNK_BYTES`], which MPI sends at once), once the unit is
//! done, or at the latest [`HOLD_AT_MOST`] after the first of them finished, so the master
//! hands a thread whose job is done more work even while the rest of its unit runs. The master keeps up to T × prefetch threads of work in flight on a rank once
//! processes are measured short, so no thread waits for it.
//!
//! The kept output of its processes (`output = "files"` or `"log"`) leaves the rank too, in
//! `Output` messages after the records that were due, within a window of what the master
//! has said it took (see [`crate::output`]); all of it before the rank's `Bye`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use backend_core::{Job, Location, Process, ProcessRecord, RunOptions, Status};
use backend_local::{ExecutorConfig, ThreadExecutor};
use mpi::topology::Rank;

use crate::env::{Mpi, Wire};
use crate::message::{FramedRecords, Message, CHUNK_BYTES, TYPICAL_FRAME};
use crate::output::Outgoing;
use crate::Error;

/// What a worker did for one operation.
#[derive(Debug, Default, Clone)]
pub(crate) struct Served {
    /// The master's result directory (empty if the operation never started).
    pub(crate) dir: PathBuf,
    /// Processes that finished here.
    pub(crate) finished: u64,
    /// Processes that crashed (or timed out) here.
    pub(crate) crashed: u64,
    /// The operation's timeout, retries and isolation, from the master.
    pub(crate) options: RunOptions,
}

impl Served {
    /// Counts a record of a process run here.
    fn count(&mut self, record: &ProcessRecord) {
        match record.status {
            Status::Finished => self.finished += 1,
            Status::Crashed | Status::TimedOut => self.crashed += 1,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Shutdown,
    Abandon,
}

struct Worker<'a, P: Process> {
    wire: Wire<'a>,
    rank: Rank,
    host: String,
    served: Served,
    end: Option<End>,
    failure: Option<Error>,
    /// The thread pool and the units it runs (made at `Start`).
    pool: Option<Pool<P>>,
    /// Processes' kept output on its way to the master.
    output: Outgoing,
}

/// A worker's thread pool and the units it is running.
struct Pool<P: Process> {
    executor: ThreadExecutor<P>,
    /// Units handed to the executor and not yet wholly answered, by sequence number (the
    /// order they came in).
    units: BTreeMap<u64, UnitRecords>,
    /// The unit of each running job.
    places: HashMap<u64, u64>,
    next_unit: u64,
    /// Jobs handed over whose record has not come back (nor been cancelled).
    running: usize,
}

/// The records of one unit, framed as its jobs finish and sent in chunks.
struct UnitRecords {
    /// The id of the unit's first job, which names it to the master.
    first: Option<u64>,
    /// Its jobs still running (or waiting to).
    running: usize,
    /// Records framed and not yet sent, in the order they finished.
    framed: FramedRecords,
    /// When the oldest of `framed` came.
    waiting_since: Option<Instant>,
}

/// The longest the main thread waits for a record before it looks for messages from the
/// master again.
const LONGEST_WAIT: Duration = Duration::from_millis(1);
const FIRST_WAIT: Duration = Duration::from_micros(50);

/// The longest a finished record waits on the rank for more to share its message: a record
/// reaches the master's journal within about this (plus the master's own few milliseconds),
/// whatever runs after it.
pub(crate) const HOLD_AT_MOST: Duration = Duration::from_millis(2);

/// Room, in records of a typical size, for a chunk.
const CHUNK_RECORDS: usize = CHUNK_BYTES / TYPICAL_FRAME;

/// How many `Output` messages (about [`CHUNK_BYTES`] each) the main thread sends at most
/// before it looks at its records and the master's messages again: a large output goes out
/// between records, never ahead of them all.
const OUTPUT_MESSAGES_AT_ONCE: usize = 16;

/// Serves the master until `Shutdown` (→ `Ok`) or `Abandon` (→ `Err`).
pub(crate) fn serve<P: Process>(mpi: &Mpi) -> Result<Served, Error> {
    // This rank has no operation.log of its own: its records travel to the master, and so
    // does the kept output of its processes.
    backend_core::oplog::forward();
    backend_core::process_output::forward();
    let mut worker = Worker::<P> {
        wire: Wire::new(&mpi.world),
        rank: mpi.rank,
        host: mpi.host.clone(),
        served: Served::default(),
        end: None,
        failure: None,
        pool: None,
        output: Outgoing::default(),
    };
    let mut wait = FIRST_WAIT;
    loop {
        worker.take_arrived();
        if worker.end == Some(End::Abandon) {
            worker.cancel_and_wait();
            break;
        }
        let answered = worker.answer_finished(Duration::ZERO);
        // Output goes out after the records that were due, a bounded share at a time.
        let output_left = worker.send_output();
        if answered {
            wait = FIRST_WAIT;
            continue;
        }
        let running = worker.pool.as_ref().map_or(0, |p| p.running);
        match (running, worker.end) {
            // More output can go at once.
            _ if output_left && worker.output.has_room() => {}
            (0, Some(_)) if !output_left => break,
            // Nothing runs: wait for the master (work, the end, or room for more output;
            // every output reaches the master before this rank's `Bye`).
            (0, _) => {
                let (from, bytes) = worker.wire.receive();
                worker.take(from, &bytes);
            }
            _ => {
                // Wake at once for a record; look for the master's messages between waits.
                if worker.answer_finished(wait) {
                    wait = FIRST_WAIT;
                } else {
                    wait = (wait * 2).min(LONGEST_WAIT);
                    // A long process's log lines leave the rank while it runs.
                    worker.send_log();
                }
            }
        }
    }
    worker.send_log();
    let processes = worker.served.finished + worker.served.crashed;
    match (Message::<P>::Bye { processes }).encode() {
        Ok(bye) => worker.wire.send(0, &bye),
        Err(error) => worker.failure = worker.failure.or(Some(error)),
    }
    match (worker.failure, worker.end) {
        (Some(error), _) => Err(error),
        (None, Some(End::Abandon)) => Err(Error::MasterStopped { rank: worker.rank }),
        _ => Ok(worker.served),
    }
}

impl<P: Process> Worker<'_, P> {
    /// Takes in every message that has arrived, until the master abandoned the operation
    /// (after a shutdown it still says how much output it took).
    fn take_arrived(&mut self) {
        while self.end != Some(End::Abandon) {
            match self.wire.try_receive() {
                Some((from, bytes)) => self.take(from, &bytes),
                None => break,
            }
        }
    }

    /// Takes in one message from `from`.
    fn take(&mut self, from: Rank, bytes: &[u8]) {
        if from != 0 {
            return self.fail(Error::Unexpected { from, what: "worker-to-worker" });
        }
        match Message::<P>::decode(from, bytes) {
            Ok(Message::Start { dir, options, threads_per_rank }) => {
                self.served.dir = dir;
                self.served.options = options;
                self.start_pool(threads_per_rank.max(1));
            }
            Ok(Message::Work(unit)) if self.failure.is_none() => self.hand_over(unit),
            Ok(Message::Work(_)) => {}
            Ok(Message::Cancel { id }) => self.cancel_copy(id),
            Ok(Message::OutputTaken { bytes }) => self.output.taken(bytes),
            Ok(Message::Shutdown) => self.end = Some(End::Shutdown),
            Ok(Message::Abandon) => self.end = Some(End::Abandon),
            Ok(other) => self.fail(Error::Unexpected { from, what: other.kind() }),
            Err(error) => self.fail(error),
        }
    }

    /// The master journaled the other copy of process `id`: stops the copy running here
    /// (its commands, subprocesses and persistent programs are killed, and its record comes
    /// back to be dropped). A copy that runs in its thread cannot be killed: it is answered
    /// as ended at once (its unit may end without its record, which is dropped when it
    /// comes), so neither this rank nor the master waits for it.
    fn cancel_copy(&mut self, id: u64) {
        let Some(pool) = self.pool.as_mut() else { return };
        if pool.executor.stop_copies_of(id) > 0 {
            return;
        }
        let Some(seq) = pool.places.remove(&id) else { return };
        pool.running = pool.running.saturating_sub(1);
        if let Some(unit) = pool.units.get_mut(&seq) {
            unit.running = unit.running.saturating_sub(1);
        }
        self.send_finished();
    }

    /// Starts the thread pool of `threads` threads (at `Start`).
    fn start_pool(&mut self, threads: usize) {
        let (rank, host) = (self.rank, self.host.clone());
        let config = ExecutorConfig { threads, name: "taskfarm-rank" };
        let location = move |i| {
            let worker = if threads == 1 { format!("rank-{rank}") } else { format!("rank-{rank}/thread-{i}") };
            Location { host: host.clone(), worker }
        };
        match ThreadExecutor::start(config, self.served.dir.clone(), self.served.options, location, || ()) {
            Ok(executor) => {
                self.pool =
                    Some(Pool { executor, units: BTreeMap::new(), places: HashMap::new(), next_unit: 0, running: 0 })
            }
            Err(error) => self.fail(Error::Core(error)),
        }
    }

    /// Hands a unit's jobs to the thread pool.
    fn hand_over(&mut self, unit: Vec<Job<P>>) {
        let Some(pool) = self.pool.as_mut() else {
            return self.fail(Error::Unexpected { from: 0, what: "work before start" });
        };
        let seq = pool.next_unit;
        pool.next_unit += 1;
        let first = unit.first().map(|job| job.id);
        // A unit without jobs is answered at once (the master counts it).
        let framed = FramedRecords::new(&self.host, first, unit.len().min(CHUNK_RECORDS));
        pool.units.insert(seq, UnitRecords { first, running: unit.len(), framed, waiting_since: None });
        // The master copies stragglers only of jobs sent alone: those are kept stoppable.
        let stoppable = unit.len() == 1 && self.served.options.speculate;
        for job in unit {
            pool.places.insert(job.id, seq);
            let submitted = if stoppable { pool.executor.submit_stoppable(job) } else { pool.executor.submit(job) };
            if submitted.is_ok() {
                pool.running += 1;
            }
        }
        self.send_finished();
    }

    /// Takes in the records that have come (waiting up to `wait` for the first) and sends
    /// what is due; whether any record came.
    fn answer_finished(&mut self, wait: Duration) -> bool {
        let Some(pool) = self.pool.as_mut() else { return false };
        let mut came = Vec::new();
        if !wait.is_zero() {
            if let Ok(record) = pool.executor.records().recv_timeout(wait) {
                came.push(record);
            }
        }
        came.extend(pool.executor.records().try_iter());
        let any = !came.is_empty();
        let now = Instant::now();
        let mut failure = None;
        for record in came {
            // A copy the master cancelled was answered then (see `cancel_copy`).
            let Some(seq) = pool.places.remove(&record.id) else { continue };
            pool.running = pool.running.saturating_sub(1);
            self.served.count(&record);
            if let Some(unit) = pool.units.get_mut(&seq) {
                unit.running = unit.running.saturating_sub(1);
                unit.waiting_since.get_or_insert(now);
                if let Err(error) = unit.framed.push(&record) {
                    failure.get_or_insert(error);
                }
            }
        }
        if let Some(error) = failure {
            self.fail(error);
        }
        // Also when nothing came: a held record may have waited long enough.
        self.send_finished();
        any
    }

    /// Sends, unit by unit in the order they came, the framed records that are due: a
    /// chunk's worth, the last of a unit, or records held [`HOLD_AT_MOST`].
    fn send_finished(&mut self) {
        if self.failure.is_some() {
            return;
        }
        let Some(pool) = self.pool.as_mut() else { return };
        let mut chunks = Vec::new();
        pool.units.retain(|_, unit| {
            let held_long = unit.waiting_since.is_some_and(|since| since.elapsed() >= HOLD_AT_MOST);
            let some = !unit.framed.heads.is_empty();
            let last = unit.running == 0;
            if !(last || (some && (held_long || unit.framed.frames_len() >= CHUNK_BYTES))) {
                return true;
            }
            let next = FramedRecords::new(&self.host, unit.first, unit.running.min(CHUNK_RECORDS));
            let mut framed = std::mem::replace(&mut unit.framed, next);
            framed.ends_unit = last;
            unit.waiting_since = None;
            chunks.push(framed);
            !last
        });
        for framed in chunks {
            self.send_results(framed);
            if self.failure.is_some() {
                return;
            }
        }
    }

    /// The operation is abandoned or this worker failed: drops the jobs not started and
    /// waits for the running ones (a process in a thread cannot be stopped), sending nothing.
    fn cancel_and_wait(&mut self) {
        let Some(pool) = self.pool.as_mut() else { return };
        let dropped = pool.executor.cancel_pending();
        pool.running = pool.running.saturating_sub(dropped);
        while pool.running > 0 {
            match pool.executor.records().recv() {
                Ok(_) => pool.running -= 1,
                Err(_) => break,
            }
        }
        pool.units.clear();
        pool.places.clear();
    }

    /// This worker cannot go on: tells the master (which abandons the operation) and keeps
    /// only the first reason.
    fn fail(&mut self, error: Error) {
        if self.failure.is_some() {
            return;
        }
        if let Some(pool) = self.pool.as_mut() {
            let dropped = pool.executor.cancel_pending();
            pool.running = pool.running.saturating_sub(dropped);
        }
        if let Ok(bytes) = (Message::<P>::Failed { reason: error.to_string() }).encode() {
            self.wire.send(0, &bytes);
        }
        self.failure = Some(error);
    }

    /// Sends up to [`OUTPUT_MESSAGES_AT_ONCE`] messages of the kept output queued by this
    /// rank's processes, as the window allows, log records first (so `operation.log` keeps
    /// its order); whether output is left to send. Nothing goes after this worker failed.
    fn send_output(&mut self) -> bool {
        for _ in 0..OUTPUT_MESSAGES_AT_ONCE {
            if self.failure.is_some() || !self.output.pending(backend_core::process_output::take_forwarded) {
                return false;
            }
            if !self.output.has_room() {
                return true;
            }
            self.send_log();
            let chunks = self.output.chunks(backend_core::process_output::take_forwarded);
            match Message::<P>::Output(chunks).encode() {
                Ok(bytes) => self.wire.send(0, &bytes),
                Err(error) => self.fail(error),
            }
        }
        self.failure.is_none() && self.output.pending(backend_core::process_output::take_forwarded)
    }

    /// Sends the log records made on this rank since the last call to the master, which
    /// appends them to `operation.log`.
    fn send_log(&mut self) {
        let lines = backend_core::oplog::take_forwarded();
        if lines.is_empty() {
            return;
        }
        match Message::<P>::Log(lines).encode() {
            Ok(bytes) => self.wire.send(0, &bytes),
            Err(error) => self.fail(error),
        }
    }

    /// Sends records to the master, after the log records made so far (which go first).
    fn send_results(&mut self, framed: FramedRecords) {
        self.send_log();
        match Message::<P>::Results(framed).encode() {
            Ok(bytes) => self.wire.send(0, &bytes),
            Err(error) => self.fail(error),
        }
    }
}
