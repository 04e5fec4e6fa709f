//! The scheduler on a simulated cluster: an in-memory [`Transport`] whose workers run each
//! process for a simulated time on T threads, so whole runs take microseconds of real time
//! and every moment of them can be checked.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use backend_core::{
    BackendKind, Job, Lifecycle, Location, Operation, ProcessContext, ProcessError, ProcessRecord, ProgressMode,
    Status, Value,
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
            // The simulated copy runs to its end; the master drops its record.
            Message::Cancel { .. } => {}
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
            let policy =
                Policy::new(workers, prefetch, threads, dispatch.options.process_threads(), dispatch.len, MAX_BATCH);
            let mut scheduler = Scheduler::new(policy, Jobs::Source(dispatch.jobs), dispatch.dir.clone());
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

#[test]
fn the_status_lists_what_each_worker_runs_not_what_it_queues() {
    // Two workers of two threads each, processes of one thread.
    let policy = Policy::new(2, 2, 2, 1, Some(10), MAX_BATCH);
    let mut scheduler =
        Scheduler::<Sleep>::new(policy, Jobs::Source(Box::new(std::iter::empty())), std::env::temp_dir());
    let early = Instant::now();
    // Worker rank 1: a batch of three (one came back) and a queued unit.
    let mut batch = Unit::new(vec![1, 2, 3], 2);
    batch.returned.push(1);
    batch.last_back = Some(early);
    scheduler.slots[0].hold(batch);
    scheduler.slots[0].hold(Unit::new(vec![4], 1));
    // Worker rank 2, whose host is known: one process.
    scheduler.slots[1].host = Some("node7".into());
    scheduler.slots[1].hold(Unit::new(vec![5], 1));
    let held: Vec<(u64, String)> = scheduler.held_now().into_iter().map(|p| (p.id, p.worker)).collect();
    assert_eq!(held, [(2, "rank-1".to_owned()), (3, "rank-1".to_owned()), (5, "node7/rank-2".to_owned())]);
    // The batch's next jobs started when its latest record came back.
    assert!(scheduler.held_now().iter().filter(|p| p.id < 4).all(|p| p.since == early));
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

#[test]
fn processes_of_unknown_duration_after_a_streak_of_tiny_ones_run_side_by_side() {
    // 300 tiny processes, then two of 10 s (a value of `micros` never seen), then 300 tiny:
    // the long ones are neither batched together nor queued behind each other, so they run
    // at once on the two workers and the run ends soon after 10 s, not 20 s.
    for prefetch in [1, 2] {
        for tiny in [50, 2000] {
            let mut micros = vec![tiny; 300];
            micros.extend([10_000_000, 10_000_000]);
            micros.extend(vec![tiny; 300]);
            let ran = simulate(sleeps(&micros), 2, 1, prefetch, 0);
            assert_eq!(ran.ended, Ok(()));
            assert!(ran.cluster.ran.len() == 602 && ran.cluster.ran.values().all(|&n| n == 1));
            let makespan_s = ran.cluster.now as f64 / 1e6;
            assert!(makespan_s < 11.0, "prefetch {prefetch}, tiny {tiny} µs: {makespan_s} s (simulated)");
        }
    }
}
