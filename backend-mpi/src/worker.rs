//! A worker rank: serves units of work from the master until it is told to shut down, runs
//! each process through `run_job` (a panicking process becomes a crash record) and sends
//! each unit's records back as soon as the unit is done.

use std::collections::VecDeque;
use std::path::PathBuf;

use backend_core::{execute_job, Job, Location, Process, ProcessRecord, RunOptions, Status};
use mpi::topology::Rank;

use crate::env::{Mpi, ProcessRunning, Wire};
use crate::message::Message;
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Shutdown,
    Abandon,
}

struct Worker<'a, P: Process> {
    wire: Wire<'a>,
    rank: Rank,
    queue: VecDeque<Vec<Job<P>>>,
    served: Served,
    started: bool,
    end: Option<End>,
    failure: Option<Error>,
}

/// Serves the master until `Shutdown` (→ `Ok`) or `Abandon` (→ `Err`).
pub(crate) fn serve<P: Process>(mpi: &Mpi) -> Result<Served, Error> {
    let location = Location { host: mpi.host.clone(), worker: format!("rank-{}", mpi.rank) };
    // This rank has no operation.log of its own: its records travel to the master.
    backend_core::oplog::forward();
    let mut worker = Worker::<P> {
        wire: Wire::new(&mpi.world),
        rank: mpi.rank,
        queue: VecDeque::new(),
        served: Served::default(),
        started: false,
        end: None,
        failure: None,
    };
    loop {
        while worker.end.is_none() {
            match worker.wire.try_receive() {
                Some((from, bytes)) => worker.take(from, &bytes),
                None => break,
            }
        }
        if worker.end == Some(End::Abandon) {
            break;
        }
        if let Some(unit) = worker.queue.pop_front() {
            worker.run_unit(&unit, &location);
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
    /// Takes in one message from `from`.
    fn take(&mut self, from: Rank, bytes: &[u8]) {
        if from != 0 {
            return self.fail(Error::Unexpected { from, what: "worker-to-worker" });
        }
        match Message::<P>::decode(from, bytes) {
            Ok(Message::Start { dir, options }) => {
                self.served.dir = dir;
                self.served.options = options.into();
                self.started = true;
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

    /// This worker cannot go on: tells the master (which abandons the operation) and keeps
    /// only the first reason.
    fn fail(&mut self, error: Error) {
        if self.failure.is_some() {
            return;
        }
        self.queue.clear();
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

    /// Runs one unit and sends its records back.
    fn run_unit(&mut self, unit: &[Job<P>], location: &Location) {
        if !self.started {
            return self.fail(Error::Unexpected { from: 0, what: "work before start" });
        }
        let records: Vec<ProcessRecord> = unit
            .iter()
            .map(|job| {
                let _running = ProcessRunning::new();
                execute_job(job, &self.served.dir, location, &self.served.options)
            })
            .collect();
        for record in &records {
            match record.status {
                Status::Finished => self.served.finished += 1,
                Status::Crashed | Status::TimedOut => self.served.crashed += 1,
            }
        }
        self.send_log();
        match Message::<P>::Results(records).encode() {
            Ok(bytes) => self.wire.send(0, &bytes),
            Err(error) => self.fail(error),
        }
    }
}
