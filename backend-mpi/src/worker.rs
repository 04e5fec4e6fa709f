//! A worker rank: serves units of work from the master until it is told to shut down, runs
//! each process through `execute_job` (a panicking process becomes a crash record), frames
//! each record for the master's journal and sends the records back.
//!
//! With one thread per rank (the default) the main thread runs the units one after another,
//! sending a unit's records in chunks under 4 KiB as they are made (MPI sends those at once,
//! so the worker never waits for a busy master), the last chunk when the unit is done.
//! With `threads_per_rank` T > 1 the main thread only talks MPI: it hands every job of every
//! unit it receives to a [`ThreadExecutor`] of T threads, gathers the records per unit and
//! sends a unit's records as soon as its last job is done. The master keeps up to
//! T × prefetch threads of work in flight on such a rank once processes are measured short,
//! so no thread waits for it.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use backend_core::{execute_job, Job, Location, Process, ProcessRecord, RunOptions, Status};
use backend_local::{ExecutorConfig, ThreadExecutor};
use mpi::topology::Rank;

use crate::env::{Mpi, Wire};
use crate::message::{FramedRecords, Message, CHUNK_BYTES, TYPICAL_FRAME};
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
    queue: VecDeque<Vec<Job<P>>>,
    served: Served,
    started: bool,
    end: Option<End>,
    failure: Option<Error>,
    /// Threads per rank, from the master's `Start` (1 until then).
    threads: usize,
    /// The thread pool, when `threads > 1` (made at `Start`).
    pool: Option<Pool<P>>,
}

/// A worker's thread pool and the units it is running.
struct Pool<P: Process> {
    executor: ThreadExecutor<P>,
    /// Units handed to the executor and not yet answered, by sequence number.
    units: HashMap<u64, UnitRecords>,
    /// Where each running job's record goes: its unit and its place in it.
    places: HashMap<u64, (u64, usize)>,
    next_unit: u64,
    /// Jobs handed over whose record has not come back (nor been cancelled).
    running: usize,
}

struct UnitRecords {
    records: Vec<Option<ProcessRecord>>,
    missing: usize,
}

/// The longest the main thread of a worker with threads waits for a record before it looks
/// for messages from the master again.
const LONGEST_WAIT: Duration = Duration::from_millis(1);
const FIRST_WAIT: Duration = Duration::from_micros(50);

/// While a unit of many short processes runs, how often the worker takes in the master's
/// messages (the master's send of a large unit waits until it is taken).
const LOOK_EVERY: Duration = Duration::from_micros(25);

/// Serves the master until `Shutdown` (→ `Ok`) or `Abandon` (→ `Err`).
pub(crate) fn serve<P: Process>(mpi: &Mpi) -> Result<Served, Error> {
    let location = Location { host: mpi.host.clone(), worker: format!("rank-{}", mpi.rank) };
    // This rank has no operation.log of its own: its records travel to the master.
    backend_core::oplog::forward();
    let mut worker = Worker::<P> {
        wire: Wire::new(&mpi.world),
        rank: mpi.rank,
        host: mpi.host.clone(),
        queue: VecDeque::new(),
        served: Served::default(),
        started: false,
        end: None,
        failure: None,
        threads: 1,
        pool: None,
    };
    let mut wait = FIRST_WAIT;
    let mut last_look = Instant::now();
    loop {
        // Between tiny units, looking for messages costs more than running one: look when
        // the queue runs short, or every `LOOK_EVERY`.
        if worker.queue.len() < 2 || last_look.elapsed() >= LOOK_EVERY {
            worker.take_arrived();
            last_look = Instant::now();
        }
        if worker.end == Some(End::Abandon) {
            if worker.pool.is_some() {
                worker.cancel_and_wait();
            }
            break;
        }
        if worker.pool.is_some() {
            // With threads (`Start` may just have asked for them): units go to the pool.
            let handed = worker.hand_over();
            let answered = worker.answer_finished(Duration::ZERO);
            if handed || answered {
                wait = FIRST_WAIT;
                continue;
            }
            let running = worker.pool.as_ref().map_or(0, |p| p.running);
            match (running, worker.end) {
                (0, Some(_)) => break,
                (0, None) => {
                    let (from, bytes) = worker.wire.receive();
                    worker.take(from, &bytes);
                }
                _ => {
                    // Wake at once for a record; look for the master's messages between waits.
                    if worker.answer_finished(wait) {
                        wait = FIRST_WAIT;
                    } else {
                        wait = (wait * 2).min(LONGEST_WAIT);
                    }
                }
            }
            continue;
        }
        if let Some(unit) = worker.queue.pop_front() {
            worker.run_unit(unit, &location);
            continue;
        }
        if worker.end.is_some() {
            break;
        }
        let (from, bytes) = worker.wire.receive();
        worker.take(from, &bytes);
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
    /// Takes in every message that has arrived, until the master said the end.
    fn take_arrived(&mut self) {
        while self.end.is_none() {
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
                self.threads = threads_per_rank.max(1);
                self.started = true;
                if self.threads > 1 {
                    self.start_pool();
                }
            }
            Ok(Message::Work(unit)) if self.failure.is_none() => self.queue.push_back(unit),
            Ok(Message::Work(_)) => {}
            Ok(Message::Shutdown) => self.end = Some(End::Shutdown),
            Ok(Message::Abandon) => {
                self.end = Some(End::Abandon);
                self.queue.clear();
            }
            Ok(other) => self.fail(Error::Unexpected { from, what: other.kind() }),
            Err(error) => self.fail(error),
        }
    }

    /// Starts the thread pool for `self.threads` threads (at `Start`).
    fn start_pool(&mut self) {
        let (rank, host) = (self.rank, self.host.clone());
        let config = ExecutorConfig { threads: self.threads, name: "taskfarm-rank" };
        let started = ThreadExecutor::start(
            config,
            self.served.dir.clone(),
            self.served.options,
            |i| Location { host: host.clone(), worker: format!("rank-{rank}/thread-{i}") },
            || (),
        );
        match started {
            Ok(executor) => {
                self.pool =
                    Some(Pool { executor, units: HashMap::new(), places: HashMap::new(), next_unit: 0, running: 0 })
            }
            Err(error) => self.fail(Error::Core(error)),
        }
    }

    /// Hands every queued unit to the thread pool; whether there was any.
    fn hand_over(&mut self) -> bool {
        let Some(pool) = self.pool.as_mut() else { return false };
        let mut any = false;
        while let Some(unit) = self.queue.pop_front() {
            any = true;
            let seq = pool.next_unit;
            pool.next_unit += 1;
            if unit.is_empty() {
                // Nothing to run, but the master counts the unit: answer it at once.
                pool.units.insert(seq, UnitRecords { records: Vec::new(), missing: 0 });
                continue;
            }
            pool.units.insert(seq, UnitRecords { records: vec![None; unit.len()], missing: unit.len() });
            for (place, job) in unit.into_iter().enumerate() {
                pool.places.insert(job.id, (seq, place));
                if pool.executor.submit(job).is_ok() {
                    pool.running += 1;
                }
            }
        }
        if any {
            self.send_complete_units();
        }
        any
    }

    /// Takes in the records that have come (waiting up to `wait` for the first) and sends
    /// every unit that is complete; whether any record came.
    fn answer_finished(&mut self, wait: Duration) -> bool {
        let Some(pool) = self.pool.as_mut() else { return false };
        let mut came = Vec::new();
        if !wait.is_zero() {
            match pool.executor.records().recv_timeout(wait) {
                Ok(record) => came.push(record),
                Err(_) => return false,
            }
        }
        came.extend(pool.executor.records().try_iter());
        if came.is_empty() {
            return false;
        }
        for record in came {
            pool.running = pool.running.saturating_sub(1);
            self.served.count(&record);
            let Some((seq, place)) = pool.places.remove(&record.id) else { continue };
            if let Some(unit) = pool.units.get_mut(&seq) {
                if let Some(slot) = unit.records.get_mut(place) {
                    *slot = Some(record);
                    unit.missing = unit.missing.saturating_sub(1);
                }
            }
        }
        self.send_complete_units();
        true
    }

    /// Sends the records of every unit whose jobs are all done, oldest unit first.
    fn send_complete_units(&mut self) {
        let Some(pool) = self.pool.as_mut() else { return };
        let mut done: Vec<u64> = pool.units.iter().filter(|(_, u)| u.missing == 0).map(|(seq, _)| *seq).collect();
        if done.is_empty() {
            return;
        }
        done.sort_unstable();
        let units: Vec<Vec<ProcessRecord>> = done
            .iter()
            .filter_map(|seq| pool.units.remove(seq))
            .map(|u| u.records.into_iter().flatten().collect())
            .collect();
        if self.failure.is_some() {
            return;
        }
        for records in units {
            // A whole unit in one message: the main thread only talks MPI, so waiting for
            // the master to take a large one keeps no process from running.
            let mut framed = FramedRecords::new(&self.host, records.first().map(|r| r.id), records.len());
            framed.ends_unit = true;
            if let Err(error) = records.iter().try_for_each(|record| framed.push(record)) {
                return self.fail(error);
            }
            self.send_results(framed);
            if self.failure.is_some() {
                return;
            }
        }
    }

    /// The operation is abandoned or this worker failed: drops the jobs not started and
    /// waits for the running ones (a process in a thread cannot be stopped), sending nothing.
    fn cancel_and_wait(&mut self) {
        self.queue.clear();
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
        self.queue.clear();
        if let Some(pool) = self.pool.as_mut() {
            let dropped = pool.executor.cancel_pending();
            pool.running = pool.running.saturating_sub(dropped);
        }
        if let Ok(bytes) = (Message::<P>::Failed { reason: error.to_string() }).encode() {
            self.wire.send(0, &bytes);
        }
        self.failure = Some(error);
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

    /// Runs one unit on the main thread and sends its records in chunks of about
    /// [`CHUNK_BYTES`] as they are made (MPI sends a message that small at once), the last
    /// one when the unit is done.
    fn run_unit(&mut self, unit: Vec<Job<P>>, location: &Location) {
        if !self.started {
            return self.fail(Error::Unexpected { from: 0, what: "work before start" });
        }
        let first = unit.first().map(|job| job.id);
        let room = unit.len().min(CHUNK_BYTES / TYPICAL_FRAME + 1);
        let mut framed = FramedRecords::new(&self.host, first, room);
        let mut last_look = Instant::now();
        let count = unit.len();
        for (i, job) in unit.into_iter().enumerate() {
            let record = execute_job(job, &self.served.dir, location, &self.served.options);
            self.served.count(&record);
            if let Err(error) = framed.push(&record) {
                return self.fail(error);
            }
            // The unit's last records go in the chunk that ends it (no empty chunk after).
            if framed.frames_len() >= CHUNK_BYTES && i + 1 < count {
                self.send_results(std::mem::replace(&mut framed, FramedRecords::new(&self.host, first, room)));
                if self.failure.is_some() {
                    return;
                }
            }
            if last_look.elapsed() >= LOOK_EVERY {
                // Take in the master's next units now: its send waits until they are taken.
                self.wire.collect();
                last_look = Instant::now();
            }
        }
        framed.ends_unit = true;
        self.send_results(framed);
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
