//! The master's dispatch loop, apart from MPI: it pulls jobs lazily from the operation,
//! hands them out as its [`Policy`] says, journals results as they arrive (finished records
//! as the workers framed them, without decoding them), runs each retry of a failed process
//! on another rank (with two workers or more), and, after a signal, says which workers held
//! what was unfinished. It talks to the workers through a [`Transport`]: `Wire` under MPI,
//! a simulated cluster in its tests.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use backend_core::{attempt_reason, close_attempts, Collector, Job, JobSource, Process, ProcessRecord, Status};

use crate::message::{work_from_encoded, Message, RecordHead};
use crate::policy::Policy;
use crate::transport::{Arrival, Rank, Transport};
use crate::Error;

/// While journaling a large unit, the master takes in arrived messages every this many records.
const COLLECT_EVERY: usize = 128;
/// How long the master polls (yielding the core between polls) before it falls back to the
/// wire's sleeping backoff: results of tiny units arrive within a few microseconds, and a
/// 50 µs-and-up sleep per message would cap dispatch far below what MPI can do.
const SPIN_BEFORE_SLEEP: Duration = Duration::from_micros(200);
/// After a signal (under `mpirun`: the job is being torn down, e.g. because a host was lost),
/// how long the master still takes in results before it reports what is unfinished.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How often the master looks for jobs of a fed source while it has none (see [`Jobs::Fed`]).
const FED_POLL: Duration = Duration::from_millis(5);
/// How often the master looks at the stop flag while it waits for results.
const STOP_CHECK: Duration = Duration::from_millis(50);

/// How the dispatch loop ended.
pub(crate) enum Ended {
    /// Every process has its record.
    Complete,
    /// A signal stopped it; what was unfinished has been reported.
    Interrupted,
}

/// What the master knows of one worker.
#[derive(Debug, Clone)]
struct Slot {
    /// The units sent and not yet wholly answered, oldest first.
    units: Vec<Unit>,
    /// The worker's host, once a record named it.
    host: Option<String>,
    /// When the worker was last heard from (or first sent work).
    last_heard: Instant,
}

/// A unit sent to a worker; its records come back in one message or several, in the order
/// its jobs finish.
#[derive(Debug, Clone)]
struct Unit {
    /// Its jobs' ids, in order.
    ids: Vec<u64>,
    /// The ids of the records that came back, in the order they came.
    returned: Vec<u64>,
    /// The threads the policy counts for it on its worker: what its unfinished jobs take.
    threads: usize,
    /// How long those ran, in seconds in all.
    run_s: f64,
}

impl Unit {
    fn new(ids: Vec<u64>, threads: usize) -> Self {
        Unit { ids, returned: Vec::new(), threads, run_s: 0.0 }
    }

    /// The ids of its jobs whose records have not come back, in the unit's order.
    fn unfinished(&self) -> Vec<u64> {
        let back: BTreeSet<u64> = self.returned.iter().copied().collect();
        self.ids.iter().copied().filter(|id| !back.contains(id)).collect()
    }
}

/// The master's dispatch loop and what it knows of each worker (see the [module
/// documentation](self)).
pub(crate) struct Scheduler<P: Process> {
    slots: Vec<Slot>,
    /// Which worker gets the next unit and how large it is.
    policy: Policy,
    jobs: Jobs<P>,
    /// The source has ended.
    exhausted: bool,
    /// A fed source had no job ready at the last fill (it waits for records).
    starved: bool,
    /// Set when the master hands retries to other ranks.
    pub(crate) retries: Option<Retries>,
}

/// The retries the master hands to other ranks: every job in flight, kept encoded until its
/// last attempt, and the failed ones waiting for a rank that has not run them yet.
pub(crate) struct Retries {
    /// Retries each process may have.
    allowed: u32,
    /// Each job in flight, by id.
    in_flight: HashMap<u64, Attempts>,
    /// Ids of failed jobs waiting to run again, oldest first.
    waiting: VecDeque<u64>,
}

/// One job in flight under master-side retries.
struct Attempts {
    /// The job, encoded as it was first sent.
    job: Vec<u8>,
    /// The reasons of its failed attempts, oldest first.
    reasons: Vec<String>,
    /// The ranks it ran on (or runs on), oldest first.
    tried: Vec<Rank>,
}

impl Retries {
    pub(crate) fn new(allowed: u32) -> Self {
        Retries { allowed, in_flight: HashMap::new(), waiting: VecDeque::new() }
    }

    /// Encodes the jobs of a unit for `worker` one by one, keeps each until its last
    /// attempt, and returns the unit's `Work` message built from them.
    fn send<P: Process>(&mut self, unit: &[Job<P>], worker: Rank) -> Result<Vec<u8>, Error> {
        let mut encoded = Vec::with_capacity(unit.len());
        for job in unit {
            let bytes = postcard::to_stdvec(job).map_err(|e| Error::Encode { what: "work", reason: e.to_string() })?;
            encoded.push((job.id, bytes));
        }
        let message = work_from_encoded::<P>(encoded.iter().map(|(_, bytes)| bytes.as_slice()))?;
        for (id, job) in encoded {
            self.in_flight.insert(id, Attempts { job, reasons: Vec::new(), tried: vec![worker] });
        }
        Ok(message)
    }

    /// Settles the record of an attempt that `from` ran, given as its head and journal
    /// frame: a success at the first attempt is journaled as it is; a failure waits to run
    /// again elsewhere or, at the last attempt, is closed with the reasons of every attempt.
    /// A finished process whose record was too large for the journal is not a failure: its
    /// stand-in is the last attempt (its reason as `execute_job` would leave it, with every
    /// attempt counted).
    fn settle(&mut self, head: RecordHead, frame: &[u8], from: Rank) -> Result<Settled, Error> {
        let failed_before = self.in_flight.get(&head.id).is_some_and(|attempts| !attempts.reasons.is_empty());
        if head.status == Status::Finished && !failed_before {
            self.in_flight.remove(&head.id);
            return Ok(Settled::AsFramed);
        }
        if head.too_large {
            // Not a failure of the process (its record is a stand-in that says it was too
            // large for the journal): its last attempt, as on every other backend.
            let Some(attempts) = self.in_flight.remove(&head.id).filter(|a| !a.reasons.is_empty()) else {
                return Ok(Settled::AsFramed);
            };
            let mut record = backend_core::journal::decode_frame(frame)?;
            record.attempts = u32::try_from(attempts.reasons.len() + 1).unwrap_or(u32::MAX);
            return Ok(Settled::Closed(Box::new(record)));
        }
        let record = backend_core::journal::decode_frame(frame)?;
        Ok(self.settle_record(record, from).map_or(Settled::Again, |record| Settled::Closed(Box::new(record))))
    }

    /// Settles the decoded record of an attempt that `from` ran: the process's last attempt,
    /// closed and ready for the journal, or `None` when the process waits to run again elsewhere.
    fn settle_record(&mut self, mut record: ProcessRecord, from: Rank) -> Option<ProcessRecord> {
        let Some(mut attempts) = self.in_flight.remove(&record.id) else {
            // Not a job the master kept (cannot happen with a well-behaved worker): take it as it is.
            return Some(record);
        };
        let failed = record.status != Status::Finished;
        // After a stop it waits too (no retry is sent any more): it gets no record, so that
        // `--resume` runs it again, as on every backend.
        if failed && attempts.reasons.len() < self.allowed as usize {
            let reason = attempt_reason(&mut record);
            tracing::info!(
                target: "taskfarm",
                "process {} {} on rank-{from} (attempt {} of {}): {reason}; it runs again on another rank",
                record.id,
                record.status.as_str().replace('_', " "),
                attempts.reasons.len() + 1,
                self.allowed + 1,
            );
            attempts.reasons.push(reason);
            self.in_flight.insert(record.id, attempts);
            self.waiting.push_back(record.id);
            return None;
        }
        close_attempts(&mut record, attempts.reasons);
        Some(record)
    }

    /// Takes the oldest waiting job that `worker` may run (one it has not run yet, or, when
    /// every one of `workers` has run it, any but the last that did): its id and its `Work`
    /// message, alone in its unit.
    fn take_for<P: Process>(&mut self, worker: Rank, workers: usize) -> Result<Option<(u64, Vec<u8>)>, Error> {
        let position = self
            .waiting
            .iter()
            .position(|id| self.in_flight.get(id).is_some_and(|a| may_retry_on(&a.tried, worker, workers)));
        let Some(id) = position.and_then(|i| self.waiting.remove(i)) else { return Ok(None) };
        let Some(attempts) = self.in_flight.get_mut(&id) else { return Ok(None) };
        attempts.tried.push(worker);
        Ok(Some((id, work_from_encoded::<P>([attempts.job.as_slice()])?)))
    }
}

/// What became of an attempt's record under master-side retries.
enum Settled {
    /// Journal the worker's frame as it is.
    AsFramed,
    /// Journal this record, the process's last attempt closed with every attempt's reason.
    Closed(Box<ProcessRecord>),
    /// The process runs again on another rank.
    Again,
}

/// Whether a job that ran on the ranks `tried` may run again on `worker`: if it has not run
/// there yet, or if it ran on every one of the `workers` and `worker` was not the last.
fn may_retry_on(tried: &[Rank], worker: Rank, workers: usize) -> bool {
    if !tried.contains(&worker) {
        return true;
    }
    let distinct: BTreeSet<Rank> = tried.iter().copied().collect();
    distinct.len() >= workers && tried.last() != Some(&worker)
}

impl<P: Process> Scheduler<P> {
    pub(crate) fn new(policy: Policy, jobs: Jobs<P>) -> Self {
        let workers = policy.workers();
        Scheduler {
            slots: vec![Slot { units: Vec::new(), host: None, last_heard: Instant::now() }; workers],
            policy,
            jobs,
            exhausted: false,
            starved: false,
            retries: None,
        }
    }

    fn slot(&mut self, rank: Rank) -> Result<&mut Slot, Error> {
        usize::try_from(rank - 1)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .ok_or(Error::Unexpected { from: rank, what: "results" })
    }

    pub(crate) fn run(&mut self, wire: &mut impl Transport, collector: &mut Collector) -> Result<Ended, Error> {
        self.fill(wire, collector)?;
        let mut stop_deadline = None;
        loop {
            if self.slots.iter().all(|slot| slot.units.is_empty()) {
                if !self.starved {
                    break;
                }
                // Nothing runs and a fed source has no job yet: it is deciding from the
                // records journaled so far.
                self.jobs.wait(STOP_CHECK);
                self.fill(wire, collector)?;
                continue;
            }
            let poll = self.starved.then_some(FED_POLL);
            let (from, bytes) = match receive_or_stop(wire, &mut stop_deadline, poll) {
                Received::Message(arrival) => arrival,
                Received::Idle => {
                    self.fill(wire, collector)?;
                    continue;
                }
                Received::Stopped => {
                    self.report_unfinished();
                    return Ok(Ended::Interrupted);
                }
            };
            if let Ok(slot) = self.slot(from) {
                slot.last_heard = Instant::now();
            }
            match Message::<P>::decode(from, &bytes)? {
                Message::Results(framed) => {
                    let records = framed.records(from)?;
                    let slot = self.slot(from)?;
                    // A unit is named by its first job's id (the oldest, for one without jobs).
                    let position = match framed.unit {
                        Some(first) => slot.units.iter().position(|unit| unit.ids.first() == Some(&first)),
                        None => (!slot.units.is_empty()).then_some(0),
                    };
                    let fits = |unit: &Unit| unit.returned.len() + records.len() <= unit.ids.len();
                    let Some(position) = position.filter(|&p| slot.units.get(p).is_some_and(fits)) else {
                        return Err(Error::Unexpected { from, what: "results" });
                    };
                    let unit = &mut slot.units[position];
                    unit.returned.extend(records.iter().map(|(head, _)| head.id));
                    unit.run_s += records.iter().map(|(head, _)| head.duration_s).sum::<f64>();
                    let left = unit.ids.len() - unit.returned.len();
                    if slot.host.is_none() && !records.is_empty() {
                        slot.host = Some(framed.host.clone());
                    }
                    // Threads its unfinished jobs no longer need are free for more work.
                    let still = if framed.ends_unit { 0 } else { self.policy.cost(left) };
                    let slot = self.slot(from)?;
                    let unit = &mut slot.units[position];
                    let freed = unit.threads.saturating_sub(still);
                    unit.threads -= freed;
                    let ended = framed.ends_unit.then(|| slot.units.remove(position));
                    for (head, _) in &records {
                        self.policy.measured(head.duration_s);
                    }
                    self.policy.released(worker_index(from), freed);
                    if let Some(unit) = &ended {
                        self.policy.unit_done(worker_index(from), unit.ids.len(), unit.run_s);
                    }
                    if freed > 0 {
                        // Refill first, so no worker's queue runs dry while we journal.
                        self.fill(wire, collector)?;
                    }
                    let mut again = false;
                    for (i, (head, frame)) in records.into_iter().enumerate() {
                        if i % COLLECT_EVERY == COLLECT_EVERY - 1 {
                            // A worker's results wait until they are taken (see `Wire::collect`).
                            wire.collect();
                        }
                        // The model learns from the head: the frame stays undecoded.
                        let learnt = |collector: &mut Collector| {
                            collector.learner().recorded(head.id, head.status, head.duration_s);
                        };
                        match &mut self.retries {
                            None => {
                                learnt(collector);
                                collector.record_frame(head.status, head.duration_s, frame)?;
                            }
                            Some(retries) => match retries.settle(head, frame, from)? {
                                Settled::AsFramed => {
                                    learnt(collector);
                                    collector.record_frame(head.status, head.duration_s, frame)?;
                                }
                                Settled::Closed(record) => collector.record(&record)?,
                                Settled::Again => again = true,
                            },
                        }
                    }
                    if again || self.starved {
                        // Retries wait, or a fed source may have jobs now that it saw these.
                        self.fill(wire, collector)?;
                    }
                }
                Message::Log(lines) => backend_core::oplog::append_forwarded(&lines),
                Message::Failed { reason } => return Err(Error::WorkerFailed { rank: from, reason }),
                other => return Err(Error::Unexpected { from, what: other.kind() }),
            }
        }
        if self.retries.as_ref().is_some_and(|r| !r.waiting.is_empty()) {
            // A signal came while they waited: `--resume` runs them.
            self.report_unfinished();
        }
        Ok(Ended::Complete)
    }

    /// Says which workers still hold unfinished processes, the ones silent longest first (a
    /// lost host's ranks fall silent before the job is torn down), and how many processes
    /// were never handed out: on stderr and in operation.log.
    fn report_unfinished(&self) {
        let mut holding: Vec<(usize, &Slot)> =
            self.slots.iter().enumerate().filter(|(_, s)| s.units.iter().any(|u| !u.unfinished().is_empty())).collect();
        holding.sort_by_key(|(_, s)| s.last_heard);
        let unfinished: usize =
            holding.iter().map(|(_, s)| s.units.iter().map(|unit| unit.unfinished().len()).sum::<usize>()).sum();
        let mut report = format!("stopped by a signal with {unfinished} processes unfinished");
        for (i, slot) in &holding {
            let mut ids: Vec<u64> = slot.units.iter().flat_map(Unit::unfinished).collect();
            ids.sort_unstable();
            let shown: Vec<String> = ids.iter().take(20).map(u64::to_string).collect();
            let more = if ids.len() > 20 { format!(" and {} more", ids.len() - 20) } else { String::new() };
            report.push_str(&format!(
                "; rank-{} on {} (silent for {:.1} s) held processes {}{more}",
                i + 1,
                slot.host.as_deref().unwrap_or("an unknown host"),
                slot.last_heard.elapsed().as_secs_f64(),
                shown.join(", ")
            ));
        }
        if let Some(retries) = self.retries.as_ref().filter(|r| !r.waiting.is_empty()) {
            report.push_str(&format!("; {} failed processes were waiting to run again", retries.waiting.len()));
        }
        match self.policy.remaining() {
            Some(n) => report.push_str(&format!("; {n} processes were not handed out")),
            None if !self.exhausted => report.push_str("; more processes were not handed out"),
            None => {}
        }
        eprintln!("taskfarm: {report}");
        // Also in operation.log (the console has it already).
        tracing::info!(target: "taskfarm", "{report}");
    }

    /// Sends units while the policy names a worker with room (the least loaded first, see
    /// [`Policy`]), a waiting retry before any new job, until there is nothing to send.
    fn fill(&mut self, wire: &mut impl Transport, collector: &mut Collector) -> Result<(), Error> {
        // Workers that nothing is left for (retries wait only for ranks that have not run them).
        let mut nothing_for = vec![false; self.slots.len()];
        self.starved = false;
        while let Some(w) = self.policy.next_worker(|w| nothing_for[w]) {
            if !self.send_unit(wire, collector, worker_rank(w))? {
                let no_jobs = self.exhausted || self.starved;
                if no_jobs && self.retries.as_ref().is_none_or(|r| r.waiting.is_empty()) {
                    break;
                }
                nothing_for[w] = true;
            }
        }
        Ok(())
    }

    /// Sends `worker` a waiting retry it may run, alone in its unit; whether there was one.
    fn send_retry(&mut self, wire: &mut impl Transport, worker: Rank) -> Result<bool, Error> {
        let workers = self.slots.len();
        let Some(retries) = &mut self.retries else { return Ok(false) };
        if backend_core::stop_requested() {
            return Ok(false);
        }
        let Some((id, bytes)) = retries.take_for::<P>(worker, workers)? else { return Ok(false) };
        wire.send(worker, &bytes);
        let threads = self.policy.sent_retry(worker_index(worker));
        let slot = self.slot(worker)?;
        slot.units.push(Unit::new(vec![id], threads));
        Ok(true)
    }

    /// Sends the next unit to `worker`, a waiting retry first; `false` when there are no
    /// more jobs.
    fn send_unit(&mut self, wire: &mut impl Transport, collector: &mut Collector, worker: Rank) -> Result<bool, Error> {
        if self.send_retry(wire, worker)? {
            return Ok(true);
        }
        if self.exhausted {
            return Ok(false);
        }
        if self.starved {
            return Ok(false);
        }
        let batch = self.policy.batch(worker_index(worker));
        let unit = match self.jobs.take(batch) {
            Taken::Jobs(unit) => unit,
            Taken::NotYet => {
                self.starved = true;
                return Ok(false);
            }
            Taken::Ended => {
                self.exhausted = true;
                return Ok(false);
            }
        };
        let count = unit.len() as u64;
        let ids: Vec<u64> = unit.iter().map(|job| job.id).collect();
        let bytes = match &mut self.retries {
            Some(retries) => retries.send(&unit, worker)?,
            None => Message::Work(unit).encode()?,
        };
        collector.board().started(count);
        wire.send(worker, &bytes);
        let threads = self.policy.sent(worker_index(worker), ids.len());
        let slot = self.slot(worker)?;
        slot.units.push(Unit::new(ids, threads));
        Ok(true)
    }
}

/// The index of worker rank `rank` among the workers (rank 1 is worker 0).
fn worker_index(rank: Rank) -> usize {
    usize::try_from(rank - 1).unwrap_or(usize::MAX)
}

/// The rank of the worker of index `w`.
fn worker_rank(w: usize) -> Rank {
    Rank::try_from(w + 1).unwrap_or(Rank::MAX)
}

/// The next message: polled for `SPIN_BEFORE_SLEEP` (yielding the core between polls), then
/// waited for with the wire's sleeping backoff.
fn receive_soon(wire: &mut impl Transport, deadline: Instant) -> Option<Arrival> {
    let started = Instant::now();
    loop {
        if let Some(arrival) = wire.try_receive() {
            return Some(arrival);
        }
        if started.elapsed() >= SPIN_BEFORE_SLEEP {
            return wire.receive_until(deadline);
        }
        std::thread::yield_now();
    }
}

/// What waiting for a message came to.
enum Received {
    Message(Arrival),
    /// `poll` passed without a message.
    Idle,
    /// A signal came and `STOP_GRACE` passed without a message.
    Stopped,
}

/// The next message, looking at the stop flag every `STOP_CHECK` (or `poll`, after which it
/// returns `Idle`); after a signal, messages are still taken for `STOP_GRACE`.
fn receive_or_stop(wire: &mut impl Transport, stop_deadline: &mut Option<Instant>, poll: Option<Duration>) -> Received {
    loop {
        if backend_core::stop_requested() {
            let deadline = *stop_deadline.get_or_insert_with(|| Instant::now() + STOP_GRACE);
            return receive_soon(wire, deadline).map_or(Received::Stopped, Received::Message);
        }
        if let Some(arrival) = receive_soon(wire, Instant::now() + poll.unwrap_or(STOP_CHECK)) {
            return Received::Message(arrival);
        }
        if poll.is_some() {
            return Received::Idle;
        }
    }
}

/// Where the scheduler takes its jobs.
pub(crate) enum Jobs<P: Process> {
    /// The operation's source, pulled on the master's thread: it never waits.
    Source(JobSource<P>),
    /// Jobs that a feeder thread pulls from a source that waits for the records of the jobs
    /// it gave (adaptive runs, see [`fed`]): the master takes those that are there and
    /// never waits for the source on the thread that journals the records it waits for.
    Fed {
        jobs: Receiver<Job<P>>,
        /// Jobs taken off the channel by [`Jobs::wait`], not yet handed out.
        held: VecDeque<Job<P>>,
    },
}

/// What taking jobs gave.
enum Taken<P> {
    Jobs(Vec<Job<P>>),
    /// None is ready yet (a fed source is deciding).
    NotYet,
    /// The source has ended.
    Ended,
}

impl<P: Process> Jobs<P> {
    /// Up to `n` jobs.
    fn take(&mut self, n: usize) -> Taken<P> {
        match self {
            Jobs::Source(source) => {
                let unit: Vec<Job<P>> = source.by_ref().take(n).collect();
                if unit.is_empty() {
                    Taken::Ended
                } else {
                    Taken::Jobs(unit)
                }
            }
            Jobs::Fed { jobs, held } => {
                let mut unit: Vec<Job<P>> = held.drain(..n.min(held.len())).collect();
                while unit.len() < n {
                    match jobs.try_recv() {
                        Ok(job) => unit.push(job),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) if unit.is_empty() => return Taken::Ended,
                        Err(TryRecvError::Disconnected) => break,
                    }
                }
                if unit.is_empty() {
                    Taken::NotYet
                } else {
                    Taken::Jobs(unit)
                }
            }
        }
    }

    /// Waits up to `timeout` for a fed job (keeping it for [`take`](Self::take)) or the
    /// source's end.
    fn wait(&mut self, timeout: Duration) {
        if let Jobs::Fed { jobs, held } = self {
            if held.is_empty() {
                match jobs.recv_timeout(timeout) {
                    Ok(job) => held.push_back(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
                }
            }
        }
    }
}

/// How many fed jobs wait ready for the master at most.
const FED_AHEAD: usize = 1024;

/// Jobs of `source` pulled by a feeder thread, for a source that waits in `next` for the
/// records of the jobs it gave (see [`Jobs::Fed`]).
pub(crate) fn fed<P: Process>(source: JobSource<P>) -> Result<Jobs<P>, Error> {
    let (send, jobs) = std::sync::mpsc::sync_channel(FED_AHEAD);
    std::thread::Builder::new()
        .name("taskfarm-feeder".into())
        .spawn(move || {
            for job in source {
                if send.send(job).is_err() {
                    // The master has gone: nothing takes jobs any more.
                    break;
                }
            }
        })
        .map_err(|e| Error::Core(backend_core::Error::Internal(format!("the feeder thread could not start: {e}"))))?;
    Ok(Jobs::Fed { jobs, held: VecDeque::new() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_core::{Location, Params, ProcessContext, ProcessError, Value};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Noop(u32);

    impl Process for Noop {
        type Output = ();
        fn run(&self, _: &ProcessContext<'_>) -> Result<(), ProcessError> {
            Ok(())
        }
    }

    fn record(id: u64, status: Status, reason: Option<&str>) -> ProcessRecord {
        ProcessRecord {
            id,
            run: 0,
            params: Params::new(),
            status,
            output: if status == Status::Finished { Value::Int(1) } else { Value::Null },
            reason: reason.map(str::to_owned),
            stderr_tail: None,
            attempts: 1,
            started_at: 0.0,
            duration_s: 0.001,
            location: Location { host: "h".into(), worker: "rank-1".into() },
        }
    }

    #[test]
    fn a_retry_goes_to_a_rank_that_has_not_run_it_while_there_is_one() {
        assert!(may_retry_on(&[1], 2, 3));
        assert!(!may_retry_on(&[1], 1, 3));
        assert!(!may_retry_on(&[1, 2], 2, 3));
        assert!(may_retry_on(&[1, 2], 3, 3));
        // Every worker ran it: any but the last.
        assert!(may_retry_on(&[1, 2], 1, 2));
        assert!(!may_retry_on(&[1, 2], 2, 2));
    }

    #[test]
    fn failed_attempts_wait_for_another_rank_and_the_last_lists_every_reason() {
        let mut retries = Retries::new(2);
        let job = Job { id: 7, run: 0, params: Params::new(), process: Noop(7) };
        let first = retries.send(std::slice::from_ref(&job), 1).expect("encodes");
        assert_eq!(first, Message::Work(vec![job.clone()]).encode().expect("encodes"));
        assert!(retries.settle_record(record(7, Status::Crashed, Some("boom")), 1).is_none());
        assert!(retries.take_for::<Noop>(1, 3).expect("builds").is_none(), "not on the rank that failed");
        let again = retries.take_for::<Noop>(2, 3).expect("builds").expect("rank 2 may run it");
        assert_eq!(again, (7, first), "the same job, alone in its unit");
        assert!(retries.settle_record(record(7, Status::TimedOut, Some("timed out after 1s")), 2).is_none());
        assert!(retries.take_for::<Noop>(2, 3).expect("builds").is_none());
        assert!(retries.take_for::<Noop>(1, 3).expect("builds").is_none());
        assert!(retries.take_for::<Noop>(3, 3).expect("builds").is_some());
        let Some(last) = retries.settle_record(record(7, Status::Crashed, Some("bang")), 3) else {
            panic!("the third attempt is the last with retries = 2");
        };
        assert_eq!(last.attempts, 3);
        assert_eq!(last.reason.as_deref(), Some("attempt 1: boom; attempt 2: timed out after 1s; attempt 3: bang"));
        assert!(retries.in_flight.is_empty(), "nothing kept after the last attempt");
    }

    /// The head and frame of `record` as a worker frames it.
    fn framed(record: &ProcessRecord) -> (RecordHead, Vec<u8>) {
        let mut framed = crate::message::FramedRecords::new("h", Some(record.id), 1);
        framed.push(record).expect("frames");
        let records = framed.records(1).expect("reads");
        let (head, frame) = records.first().expect("one record");
        (*head, frame.to_vec())
    }

    #[test]
    fn a_record_too_large_for_the_journal_is_never_retried() {
        // A finished process whose output is larger than the journal takes: its stand-in
        // record is a crash, but the process did not fail, so it runs once, as elsewhere.
        let mut huge = record(5, Status::Finished, None);
        huge.output = Value::Str("x".repeat(65 * 1024 * 1024));
        let (head, frame) = framed(&huge);
        assert_eq!(head.status, Status::Crashed, "the stand-in");
        let mut retries = Retries::new(2);
        retries.send(&[Job { id: 5, run: 0, params: Params::new(), process: Noop(5) }], 1).expect("encodes");
        assert!(matches!(retries.settle(head, &frame, 1).expect("settles"), Settled::AsFramed));
        assert!(retries.waiting.is_empty() && retries.in_flight.is_empty(), "nothing runs again");
        // After a failed attempt, the stand-in closes the process with both attempts counted.
        retries.send(&[Job { id: 5, run: 0, params: Params::new(), process: Noop(5) }], 1).expect("encodes");
        assert!(retries.settle_record(record(5, Status::Crashed, Some("once")), 1).is_none());
        let _ = retries.take_for::<Noop>(2, 3).expect("builds").expect("rank 2 may run it");
        let Settled::Closed(last) = retries.settle(head, &frame, 2).expect("settles") else {
            panic!("the stand-in is the last attempt");
        };
        assert_eq!((last.status, last.attempts), (Status::Crashed, 2));
        assert!(last.reason.as_deref().is_some_and(|r| r.contains("more than the journal takes")), "{last:?}");
        assert!(retries.waiting.is_empty() && retries.in_flight.is_empty());
        // A crashed process is retried as before.
        let (head, frame) = framed(&record(6, Status::Crashed, Some("boom")));
        retries.send(&[Job { id: 6, run: 0, params: Params::new(), process: Noop(6) }], 1).expect("encodes");
        assert!(matches!(retries.settle(head, &frame, 1).expect("settles"), Settled::Again));
    }

    #[test]
    fn a_success_after_a_failure_counts_both_attempts() {
        let mut retries = Retries::new(1);
        retries.send(&[Job { id: 3, run: 0, params: Params::new(), process: Noop(3) }], 2).expect("encodes");
        assert!(retries.settle_record(record(3, Status::Crashed, Some("once")), 2).is_none());
        let _ = retries.take_for::<Noop>(1, 2).expect("builds").expect("rank 1 may run it");
        let Some(last) = retries.settle_record(record(3, Status::Finished, None), 1) else {
            panic!("a finished attempt is the last");
        };
        assert_eq!((last.attempts, last.reason.as_deref()), (2, Some("attempt 1: once")));
    }
}

/// The scheduler on a simulated cluster: an in-memory [`Transport`] whose workers run each
/// process for a simulated time on T threads, so whole runs take microseconds of real time
/// and every moment of them can be checked.
#[cfg(test)]
mod simulated {
    use std::collections::BTreeMap;

    use backend_core::{
        BackendKind, Lifecycle, Location, Operation, ProcessContext, ProcessError, ProgressMode, Value,
    };
    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::message::FramedRecords;
    use crate::policy::MAX_BATCH;

    /// A process that takes `micros` of simulated time; only the simulated workers "run" it.
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Sleep {
        micros: u64,
        crashes: bool,
    }

    impl Process for Sleep {
        type Output = ();
        fn run(&self, _: &ProcessContext<'_>) -> Result<(), ProcessError> {
            Ok(())
        }
    }

    /// A job on a simulated worker: its unit and when it ends.
    struct Running {
        end: u64,
        job: Job<Sleep>,
        unit: u64,
    }

    /// A unit on a simulated worker: its first id and how many of its jobs are unfinished.
    struct SimUnit {
        first: Option<u64>,
        jobs: usize,
        left: usize,
    }

    #[derive(Default)]
    struct SimWorker {
        threads: usize,
        waiting: VecDeque<(u64, Job<Sleep>)>,
        running: Vec<Running>,
        units: BTreeMap<u64, SimUnit>,
        next_unit: u64,
        shut_down: bool,
    }

    /// The simulated cluster: `workers` ranks behind rank 0, a clock in microseconds.
    struct Cluster {
        now: u64,
        workers: Vec<SimWorker>,
        outbox: VecDeque<Arrival>,
        /// Jobs in the operation, and how many were handed out so far.
        total: usize,
        sent: usize,
        /// How often each id ran.
        ran: HashMap<u64, u32>,
        /// The first moment a thread idled while jobs were not yet handed out, if any.
        idle_while_waiting: Option<String>,
    }

    impl Cluster {
        fn new(workers: usize, total: usize) -> Self {
            Cluster {
                now: 0,
                workers: (0..workers).map(|_| SimWorker::default()).collect(),
                outbox: VecDeque::new(),
                total,
                sent: 0,
                ran: HashMap::new(),
                idle_while_waiting: None,
            }
        }

        /// Starts waiting jobs on free threads of worker `w`.
        fn start_jobs(&mut self, w: usize) {
            let now = self.now;
            let worker = &mut self.workers[w];
            while worker.running.len() < worker.threads {
                let Some((unit, job)) = worker.waiting.pop_front() else { break };
                *self.ran.entry(job.id).or_default() += 1;
                worker.running.push(Running { end: now + job.process.micros, job, unit });
            }
        }

        /// Checks the promise the policy makes: while jobs wait to be handed out, no thread
        /// of any worker is idle.
        fn check_no_idle_thread(&mut self) {
            if self.sent >= self.total || self.idle_while_waiting.is_some() {
                return;
            }
            for (w, worker) in self.workers.iter().enumerate() {
                if worker.running.len() < worker.threads {
                    let units: Vec<(usize, usize)> = worker.units.values().map(|u| (u.jobs, u.left)).collect();
                    self.idle_while_waiting = Some(format!(
                        "at {} µs worker {w} ran {} of {} threads with {} of {} jobs handed out; its units \
                         (jobs, unfinished): {units:?}",
                        self.now,
                        worker.running.len(),
                        worker.threads,
                        self.sent,
                        self.total
                    ));
                }
            }
        }

        /// Runs the simulation to the next message a worker sends; `None` when nothing runs.
        fn advance(&mut self) -> Option<Arrival> {
            while self.outbox.is_empty() {
                self.check_no_idle_thread();
                let (w, i) = self
                    .workers
                    .iter()
                    .enumerate()
                    .flat_map(|(w, worker)| worker.running.iter().enumerate().map(move |(i, r)| (r.end, w, i)))
                    .min()
                    .map(|(_, w, i)| (w, i))?;
                let done = self.workers[w].running.swap_remove(i);
                self.now = self.now.max(done.end);
                let status = if done.job.process.crashes { Status::Crashed } else { Status::Finished };
                let record = ProcessRecord {
                    id: done.job.id,
                    run: done.job.run,
                    params: done.job.params.clone(),
                    status,
                    output: if status == Status::Finished { Value::Int(1) } else { Value::Null },
                    reason: (status == Status::Crashed).then(|| "simulated crash".to_owned()),
                    stderr_tail: None,
                    attempts: 1,
                    started_at: 0.0,
                    duration_s: done.job.process.micros as f64 / 1e6,
                    location: Location { host: "sim".into(), worker: format!("rank-{}", w + 1) },
                };
                // Like a real worker, each record goes back as it finishes (a real one holds
                // it at most a few milliseconds for others to share its message).
                let worker = &mut self.workers[w];
                if let Some(unit) = worker.units.get_mut(&done.unit) {
                    unit.left -= 1;
                    let (first, ends) = (unit.first, unit.left == 0);
                    if ends {
                        worker.units.remove(&done.unit);
                    }
                    self.answer(w, first, &[record], ends);
                }
                self.start_jobs(w);
            }
            self.outbox.pop_front()
        }

        /// Worker `w` sends records of the unit named by `first`, `ends` if they are its last.
        fn answer(&mut self, w: usize, first: Option<u64>, records: &[ProcessRecord], ends: bool) {
            let mut framed = FramedRecords::new("sim", first, records.len());
            for record in records {
                framed.push(record).expect("frames");
            }
            framed.ends_unit = ends;
            let bytes = Message::<Sleep>::Results(framed).encode().expect("encodes");
            self.outbox.push_back((worker_rank(w), bytes));
        }
    }

    impl Transport for Cluster {
        fn try_receive(&mut self) -> Option<Arrival> {
            self.advance()
        }

        fn receive_until(&mut self, _: Instant) -> Option<Arrival> {
            let arrival = self.advance();
            assert!(arrival.is_some(), "the scheduler waits for a message, but no worker runs anything");
            arrival
        }

        fn send(&mut self, to: Rank, bytes: &[u8]) {
            let w = worker_index(to);
            match Message::<Sleep>::decode(0, bytes).expect("the scheduler sends messages that decode") {
                Message::Start { threads_per_rank, .. } => self.workers[w].threads = threads_per_rank,
                Message::Work(jobs) => {
                    self.sent += jobs.len();
                    let worker = &mut self.workers[w];
                    let seq = worker.next_unit;
                    worker.next_unit += 1;
                    let first = jobs.first().map(|job| job.id);
                    if jobs.is_empty() {
                        self.answer(w, None, &[], true);
                    } else {
                        worker.units.insert(seq, SimUnit { first, jobs: jobs.len(), left: jobs.len() });
                        worker.waiting.extend(jobs.into_iter().map(|job| (seq, job)));
                    }
                    self.start_jobs(w);
                }
                Message::Shutdown | Message::Abandon => self.workers[w].shut_down = true,
                other => panic!("the master sent a worker {}", other.kind()),
            }
        }

        fn collect(&mut self) {}
    }

    /// What a simulated run did.
    struct Ran {
        cluster: Cluster,
        counts: backend_core::StatusCounts,
        ended: Result<(), String>,
    }

    /// Runs `processes` through the scheduler on `workers` simulated ranks of `threads` threads.
    fn simulate(processes: Vec<Sleep>, workers: usize, threads: usize, prefetch: usize, retries: u32) -> Ran {
        let base = tempfile::tempdir().expect("a temporary directory");
        let total = processes.len();
        let operation = Operation::from_processes("sim", processes)
            .expect("an operation")
            .with_results_base(base.path())
            .with_progress(ProgressMode::Quiet)
            .with_retries(retries);
        let mut lifecycle = Lifecycle::new(BackendKind::Mpi);
        lifecycle.stage_in(operation).expect("stages");
        let mut cluster = Cluster::new(workers, total);
        let mut ended = Ok(());
        lifecycle
            .execute_here(|dispatch, collector| {
                let policy = Policy::new(
                    workers,
                    prefetch,
                    threads,
                    dispatch.options.process_threads(),
                    dispatch.len,
                    MAX_BATCH,
                );
                let mut scheduler = Scheduler::new(policy, Jobs::Source(dispatch.jobs));
                if retries > 0 && workers > 1 {
                    scheduler.retries = Some(Retries::new(retries));
                }
                let start =
                    Message::<Sleep>::Start { dir: dispatch.dir, options: dispatch.options, threads_per_rank: threads };
                let start = start.encode().expect("encodes");
                for w in 0..workers {
                    cluster.send(worker_rank(w), &start);
                }
                match scheduler.run(&mut cluster, collector) {
                    Ok(Ended::Complete) => {}
                    Ok(Ended::Interrupted) => ended = Err("interrupted".to_owned()),
                    Err(error) => ended = Err(error.to_string()),
                }
                Ok(())
            })
            .expect("executes");
        lifecycle.retrieve(None).expect("retrieves");
        let counts = lifecycle.check_status();
        Ran { cluster, counts, ended }
    }

    fn sleeps(micros: &[u64]) -> Vec<Sleep> {
        micros.iter().map(|&micros| Sleep { micros, crashes: false }).collect()
    }

    #[test]
    fn a_run_of_tiny_processes_is_dealt_in_batches_and_each_runs_once() {
        let ran = simulate(sleeps(&[2; 5000]), 3, 1, 2, 0);
        assert_eq!(ran.ended, Ok(()));
        assert_eq!((ran.counts.finished, ran.counts.crashed), (5000, 0));
        assert!(ran.cluster.ran.values().all(|&n| n == 1) && ran.cluster.ran.len() == 5000);
        assert_eq!(ran.cluster.idle_while_waiting, None);
    }

    #[test]
    fn a_crash_runs_again_on_another_rank_and_is_recorded_once() {
        let mut processes = sleeps(&[1000; 6]);
        processes[2].crashes = true;
        let ran = simulate(processes, 3, 1, 2, 2);
        assert_eq!(ran.ended, Ok(()));
        assert_eq!((ran.counts.finished, ran.counts.crashed), (5, 1));
        assert_eq!(ran.cluster.ran.get(&2), Some(&3), "three attempts of the crashing process");
    }

    #[test]
    fn every_worker_is_shut_down_only_by_the_caller() {
        // The scheduler returns with every unit answered; shutting down is `master::run`'s.
        let ran = simulate(sleeps(&[10, 20, 30]), 4, 2, 1, 0);
        assert_eq!(ran.ended, Ok(()));
        assert!(ran.cluster.workers.iter().all(|w| !w.shut_down && w.units.is_empty() && w.running.is_empty()));
    }

    /// Durations from a mixture: tiny, short, long and very long processes.
    fn duration() -> impl Strategy<Value = u64> {
        prop_oneof![1u64..50, 1_000u64..20_000, 50_000u64..500_000, 1_000_000u64..5_000_000]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// While processes wait to be handed out, no thread of any worker is idle, and every
        /// process runs and is recorded exactly once.
        #[test]
        fn no_worker_idles_while_work_waits(
            micros in proptest::collection::vec(duration(), 1..400),
            workers in 1usize..6,
            threads in 1usize..4,
            prefetch in 1usize..5,
        ) {
            let n = micros.len();
            let ran = simulate(sleeps(&micros), workers, threads, prefetch, 0);
            prop_assert_eq!(ran.ended, Ok(()));
            prop_assert_eq!(ran.cluster.idle_while_waiting, None);
            prop_assert_eq!(ran.counts.finished, n as u64);
            prop_assert!(ran.cluster.ran.len() == n && ran.cluster.ran.values().all(|&k| k == 1));
        }
    }
}
