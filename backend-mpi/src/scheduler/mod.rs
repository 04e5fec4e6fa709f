//! The master's dispatch loop, apart from MPI: it pulls jobs lazily from the operation,
//! hands them out as its [`Policy`] says, journals results as they arrive (finished records
//! as the workers framed them, without decoding them), runs each retry of a failed process
//! on another rank (with two workers or more), and, after a signal, says which workers held
//! what was unfinished. It talks to the workers through a [`Transport`]: `Wire` under MPI,
//! a simulated cluster in its tests.

mod held;
mod jobs;
mod pending;
mod retries;
#[cfg(test)]
mod simulated;
mod speculation;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use backend_core::{Collector, Process};

pub(crate) use self::jobs::{fed, Jobs};
use self::pending::SHORT_PROCESS_S;
pub(crate) use self::retries::Retries;
use self::retries::Settled;
pub(crate) use self::speculation::Speculation;
use self::speculation::STRAGGLER_POLL;
use crate::message::Message;
use crate::output::Incoming;
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
/// how long the master still takes in results before it reports what is unfinished. A
/// `cancel` (a drain, see [`backend_core::request_drain`]) has no such limit: no launcher
/// tears the job down, so the master waits for every unit its workers hold.
const STOP_GRACE: Duration = Duration::from_secs(1);
/// How often the master looks for jobs of a fed source while it has none (see [`Jobs::Fed`]).
const FED_POLL: Duration = Duration::from_millis(5);
/// How often the master looks at the stop flag while it waits for results.
const STOP_CHECK: Duration = Duration::from_millis(50);
/// How often at most the master says which processes its workers hold (for `status.json`,
/// rewritten every [`STATUS_EVERY`](backend_core::status::STATUS_EVERY)).
const PUBLISH_EVERY: Duration = Duration::from_millis(200);

/// How the dispatch loop ended.
pub(crate) enum Ended {
    /// Every process has its record.
    Complete,
    /// A signal (or `cancel --now`) stopped it; what was unfinished has been reported.
    Interrupted,
}

/// What the master knows of one worker.
#[derive(Debug, Clone)]
struct WorkerState {
    /// The units sent and not yet wholly answered, oldest first.
    units: Vec<Unit>,
    /// The worker's host, once a record named it.
    host: Option<String>,
    /// When the worker was last heard from, or sent work while it had none.
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
    /// Whether its jobs were measured short (asked of the duration model when it matters:
    /// before work is queued behind it); a batch of several is, by construction.
    short: Option<bool>,
    /// When it was sent, and when its latest records came back (its next job started
    /// about then).
    sent: Instant,
    last_back: Option<Instant>,
}

impl WorkerState {
    /// Remembers a unit sent to this worker; its silence counts from when it has work.
    fn hold(&mut self, unit: Unit) {
        if self.units.is_empty() {
            self.last_heard = Instant::now();
        }
        self.units.push(unit);
    }
}

impl Unit {
    fn new(ids: Vec<u64>, threads: usize) -> Self {
        let short = (ids.len() > 1).then_some(true);
        Unit { ids, returned: Vec::new(), threads, run_s: 0.0, short, sent: Instant::now(), last_back: None }
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
    slots: Vec<WorkerState>,
    /// Which worker gets the next unit and how large it is.
    policy: Policy,
    jobs: Jobs<P>,
    /// The source has ended.
    exhausted: bool,
    /// A fed source had no job ready at the last fill (it waits for records).
    starved: bool,
    /// Set when the master hands retries to other ranks.
    pub(crate) retries: Option<Retries>,
    /// Jobs taken from the source and not sent yet, in order: one of unknown duration that
    /// no free thread was there for, or jobs after one that ended a unit of measured short
    /// ones.
    pending: std::collections::VecDeque<backend_core::Job<P>>,
    /// Set when a straggler may run a copy on another rank.
    pub(crate) speculation: Option<Speculation>,
    /// What the workers hold changed since it was last said ([`Scheduler::publish_running`]),
    /// and when that was.
    unpublished: bool,
    published_at: Instant,
    /// Processes' kept output coming from the workers, written into the result directory.
    pub(crate) outputs: Incoming,
}

impl<P: Process> Scheduler<P> {
    /// A scheduler whose workers' kept output goes into the result directory `dir`.
    pub(crate) fn new(policy: Policy, jobs: Jobs<P>, dir: PathBuf) -> Self {
        let workers = policy.workers();
        Scheduler {
            slots: vec![WorkerState { units: Vec::new(), host: None, last_heard: Instant::now() }; workers],
            policy,
            jobs,
            exhausted: false,
            starved: false,
            retries: None,
            pending: std::collections::VecDeque::new(),
            speculation: None,
            unpublished: false,
            published_at: Instant::now(),
            outputs: Incoming::new(dir),
        }
    }

    fn slot(&mut self, rank: Rank) -> Result<&mut WorkerState, Error> {
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
            // A fed source is looked at often; what the workers hold is said once quiet; a
            // straggler may be copied once nothing is left to send.
            let poll = if self.starved {
                Some(FED_POLL)
            } else if self.unpublished {
                Some(STOP_CHECK)
            } else if self.may_copy_a_straggler() {
                Some(STRAGGLER_POLL)
            } else {
                None
            };
            let (from, bytes) = match receive_or_stop(wire, &mut stop_deadline, poll) {
                Received::Message(arrival) => arrival,
                Received::Idle => {
                    self.publish_running();
                    if self.starved || self.may_copy_a_straggler() {
                        self.fill(wire, collector)?;
                    }
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
                    unit.last_back = Some(Instant::now());
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
                        if !self.settle_copies(wire, collector, &head, from) {
                            continue;
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
                    self.unpublished = true;
                    if self.published_at.elapsed() >= PUBLISH_EVERY {
                        self.publish_running();
                    }
                }
                Message::Log(lines) => backend_core::oplog::append_forwarded(&lines),
                Message::Output(chunks) => {
                    if let Some(bytes) = self.outputs.take(from, chunks)? {
                        wire.send(from, &Message::<P>::OutputTaken { bytes }.encode()?);
                    }
                }
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

    /// Sends units while the policy names a worker with room (the least loaded first, see
    /// [`Policy`]), a waiting retry before any new job, until there is nothing to send.
    fn fill(&mut self, wire: &mut impl Transport, collector: &mut Collector) -> Result<(), Error> {
        // Workers that nothing is left for (retries wait only for ranks that have not run them).
        let mut nothing_for = vec![false; self.slots.len()];
        self.starved = false;
        while let Some(mut w) = self.policy.next_worker(|w| nothing_for[w]) {
            let may_queue = self.next_measured_short(collector) && self.holds_only_short(w, collector);
            if !self.policy.has_free_thread(w) && !may_queue {
                // The next job would wait in w's queue, and its duration is unknown, or w
                // runs a job of unknown duration it could wait behind: it goes to a free
                // thread, or waits here for one (a retry waits the same way).
                let free = self.policy.next_worker(|v| nothing_for[v] || !self.policy.has_free_thread(v));
                let Some(free) = free else { break };
                w = free;
            }
            if !self.send_unit(wire, collector, worker_rank(w))? {
                let no_jobs = self.exhausted || self.starved;
                if no_jobs && self.retries.as_ref().is_none_or(|r| r.waiting.is_empty()) {
                    break;
                }
                nothing_for[w] = true;
            }
        }
        if self.may_copy_a_straggler() {
            self.copy_stragglers(wire, collector)?;
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
        self.slot(worker)?.hold(Unit::new(vec![id], threads));
        self.unpublished = true;
        Ok(true)
    }

    /// Sends the next unit to `worker`, a waiting retry first; `false` when there are no
    /// more jobs.
    fn send_unit(&mut self, wire: &mut impl Transport, collector: &mut Collector, worker: Rank) -> Result<bool, Error> {
        if self.send_retry(wire, worker)? {
            return Ok(true);
        }
        // After a stop nothing more is handed out (a fed source may hold jobs pulled before).
        if backend_core::stop_requested() || (self.pending.is_empty() && (self.exhausted || self.starved)) {
            return Ok(false);
        }
        let batch = self.policy.batch(worker_index(worker));
        let mut unit = Vec::with_capacity(batch);
        while unit.len() < batch {
            let Some(job) = self.next_job() else { break };
            unit.push(job);
        }
        if unit.len() > 1 {
            // Only jobs measured short share a unit: one of unknown duration goes alone (it
            // ends the unit it would join, and starts the next). The rest wait, in order.
            let ids: Vec<u64> = unit.iter().map(|job| job.id).collect();
            let keep = collector.learner().leading_measured_shorter_than(&ids, SHORT_PROCESS_S).max(1);
            for job in unit.drain(keep..).rev() {
                self.pending.push_front(job);
            }
        }
        if unit.is_empty() {
            return Ok(false);
        }
        let count = unit.len() as u64;
        let ids: Vec<u64> = unit.iter().map(|job| job.id).collect();
        let bytes = match &mut self.retries {
            Some(retries) => retries.send(&unit, worker)?,
            None => Message::Work(unit).encode()?,
        };
        collector.board().started(count);
        wire.send(worker, &bytes);
        if let (Some(speculation), [id]) = (&mut self.speculation, ids.as_slice()) {
            // The message as sent is the copy's, should this job straggle.
            speculation.keep(*id, bytes);
        }
        let threads = self.policy.sent(worker_index(worker), ids.len());
        self.slot(worker)?.hold(Unit::new(ids, threads));
        self.unpublished = true;
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
/// returns `Idle`); after a signal, messages are still taken for `STOP_GRACE`. A drain
/// (`cancel`) sets no limit: messages are taken until every unit is answered, unless a
/// signal or `cancel --now` follows it.
fn receive_or_stop(wire: &mut impl Transport, stop_deadline: &mut Option<Instant>, poll: Option<Duration>) -> Received {
    loop {
        if backend_core::stop_requested() && !backend_core::stop_drains() {
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
