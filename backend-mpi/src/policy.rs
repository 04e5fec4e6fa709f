//! The master's scheduling decisions, apart from MPI and jobs: which worker gets the next
//! unit, how many jobs the unit holds, and how much work each worker may hold. The master
//! (`master.rs`) asks this policy before every send and tells it what it sent and what came
//! back; everything here is plain arithmetic, tested without MPI.
//!
//! The rules, and why:
//!
//! - **Breadth first, least loaded first.** The next unit goes to the worker with the fewest
//!   threads in flight, so every worker gets its first unit before any gets a second, and no
//!   worker gets a second while another has room and nothing to do.
//! - **The window counts threads.** A worker rank with T threads holds at most T threads of
//!   work while nothing is known of how long processes take, T × `prefetch` once they are
//!   known to be short (T running, T × (`prefetch` − 1) waiting), and more (up to
//!   `MAX_WINDOW` × T) while units are far shorter than [`UNIT_TARGET`] although batches are
//!   at their cap. A unit of n jobs of k threads each takes min(n × k, T) threads: a rank
//!   never runs more than T at once.
//! - **Only what has been measured short waits in a queue or shares a unit.** Processes of
//!   unknown duration are sent one to a unit and one per free thread: a long process never
//!   waits behind another on a busy worker while another worker is idle. The evidence is
//!   twofold. Per job, the duration model (`backend_core::predict`) must have measured its
//!   parameters short: a job with a value not seen yet of a parameter of few values (say
//!   `s = 10` after only `s = 0`), or predicted long, goes alone to a free thread, however
//!   short everything before it was (the scheduler asks before it queues or batches a job).
//!   Overall, a streak: how many of the latest records, in the order they came, ran shorter
//!   than [`SHORT_PROCESS`]. A worker's window goes beyond T only while the streak is at least
//!   twice the threads of all workers, and a unit holds at most half the streak's jobs; one
//!   long process ends the streak, and every worker goes back to one process per thread.
//!   So a sweep of tiny processes ramps up to large batches within a few round trips, and a
//!   sweep that mixes tiny and long processes runs the long ones side by side.
//! - **Near the end, small units.** A unit holds at most an even share of the jobs not yet
//!   sent (per thread of every worker, times `prefetch`), and no worker queues work once
//!   fewer jobs remain than the workers have threads × `prefetch`: the last processes spread
//!   over every worker.

use std::time::Duration;

/// A unit should run about this long, so dispatch costs stay far below run time.
pub(crate) const UNIT_TARGET: Duration = Duration::from_millis(10);
/// The largest batch of jobs in one unit.
pub(crate) const MAX_BATCH: usize = 1024;
/// The deepest window, in units per thread, of a worker whose units are far shorter than
/// `UNIT_TARGET` and cannot grow (batches at their cap): a deeper window hides the round trip.
const MAX_WINDOW: usize = 16;
/// A process that ran shorter than this counts as measured short: a queue in front of a
/// worker costs at most this much idle time elsewhere, while a round trip (what a queue
/// hides) costs far less than a process this long anyway.
pub(crate) const SHORT_PROCESS: Duration = Duration::from_millis(50);

/// What the master knows of one worker's load.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Load {
    /// Jobs per unit, adapted to how long the worker's processes take.
    batch: usize,
    /// Units per thread to keep in flight once processes are measured short: `prefetch`,
    /// deeper while units are tiny and batches capped.
    depth: usize,
    /// Threads of work in flight: the sum of the costs of its unanswered units.
    busy: usize,
}

/// The master's scheduling policy (see the [module documentation](self)).
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    prefetch: usize,
    /// Threads of each worker rank (T).
    threads: usize,
    /// Threads each process takes (k ≤ T).
    process_threads: usize,
    max_batch: usize,
    loads: Vec<Load>,
    /// Jobs not yet sent, when the number of jobs to run is known.
    remaining: Option<u64>,
    /// How many of the latest records, in a row, ran shorter than [`SHORT_PROCESS`].
    streak: u64,
}

impl Policy {
    /// The policy for `workers` workers of `threads` threads each, keeping `prefetch` units
    /// per thread in flight once processes are measured short, with processes of
    /// `process_threads` threads, `remaining` jobs to send when known, and batches of at
    /// most `max_batch` jobs.
    pub(crate) fn new(
        workers: usize,
        prefetch: usize,
        threads: usize,
        process_threads: usize,
        remaining: Option<u64>,
        max_batch: usize,
    ) -> Self {
        let threads = threads.max(1);
        let prefetch = prefetch.max(1);
        Policy {
            prefetch,
            threads,
            process_threads: process_threads.clamp(1, threads),
            max_batch: max_batch.max(1),
            loads: vec![Load { batch: 1, depth: prefetch, busy: 0 }; workers],
            remaining,
            streak: 0,
        }
    }

    /// How many workers there are.
    pub(crate) fn workers(&self) -> usize {
        self.loads.len()
    }

    /// Jobs not yet sent, when known.
    pub(crate) fn remaining(&self) -> Option<u64> {
        self.remaining
    }

    /// How many processes a worker rank runs at once (its threads over a process's).
    pub(crate) fn processes_at_once(&self) -> usize {
        (self.threads / self.process_threads).max(1)
    }

    /// The threads a unit of `jobs` jobs takes on a worker.
    pub(crate) fn cost(&self, jobs: usize) -> usize {
        jobs.max(1).saturating_mul(self.process_threads).min(self.threads)
    }

    /// Whether workers may hold more than one process per thread: processes have been
    /// measured short, and more jobs remain than the workers' windows hold.
    fn queues_allowed(&self) -> bool {
        let threads = (self.loads.len() * self.threads) as u64;
        let enough_evidence = self.streak >= 2 * threads;
        let not_the_end = self.remaining.is_none_or(|r| r > threads * self.prefetch as u64);
        enough_evidence && not_the_end
    }

    /// The threads of work worker `w` (0-based) may hold.
    fn capacity(&self, w: usize) -> usize {
        let depth = if self.queues_allowed() { self.loads.get(w).map_or(1, |l| l.depth) } else { 1 };
        self.threads * depth
    }

    /// The worker (0-based) that gets the next unit: of those with room for one more process
    /// and not `skipped`, the one with the fewest threads in flight (the lowest on a tie).
    pub(crate) fn next_worker(&self, skipped: impl Fn(usize) -> bool) -> Option<usize> {
        (0..self.loads.len())
            .filter(|&w| !skipped(w) && self.loads[w].busy + self.process_threads <= self.capacity(w))
            .min_by_key(|&w| self.loads[w].busy)
    }

    /// Whether worker `w` has a thread free for one more process now: a unit sent to it
    /// would start at once, not wait behind another.
    pub(crate) fn has_free_thread(&self, w: usize) -> bool {
        self.loads.get(w).is_some_and(|load| load.busy + self.process_threads <= self.threads)
    }

    /// How many jobs the next unit of worker `w` holds: its adapted batch, at most half the
    /// streak of short processes, and near the end at most an even share of what remains.
    pub(crate) fn batch(&self, w: usize) -> usize {
        let mut batch = self.loads.get(w).map_or(1, |l| l.batch);
        batch = batch.min(usize::try_from(self.streak / 2).unwrap_or(usize::MAX).max(1));
        if let Some(remaining) = self.remaining {
            let share = remaining / (self.loads.len() * self.threads * self.prefetch).max(1) as u64;
            batch = batch.min(usize::try_from(share).unwrap_or(usize::MAX).max(1));
        }
        batch
    }

    /// Worker `w` was sent a unit of `jobs` new jobs; the threads it takes there.
    pub(crate) fn sent(&mut self, w: usize, jobs: usize) -> usize {
        let cost = self.cost(jobs);
        if let Some(load) = self.loads.get_mut(w) {
            load.busy += cost;
        }
        self.remaining = self.remaining.map(|r| r.saturating_sub(jobs as u64));
        cost
    }

    /// Worker `w` was sent a retry (a job sent before, alone in its unit); the threads it
    /// takes there.
    pub(crate) fn sent_retry(&mut self, w: usize) -> usize {
        let cost = self.cost(1);
        if let Some(load) = self.loads.get_mut(w) {
            load.busy += cost;
        }
        cost
    }

    /// `threads` of worker `w` no longer run what it was sent: the records of a unit came
    /// back (all, or some while fewer of its jobs than the threads they took still run).
    pub(crate) fn released(&mut self, w: usize, threads: usize) {
        if let Some(load) = self.loads.get_mut(w) {
            load.busy = load.busy.saturating_sub(threads);
        }
    }

    /// A record came back that ran `duration_s` seconds.
    pub(crate) fn measured(&mut self, duration_s: f64) {
        if duration_s < SHORT_PROCESS.as_secs_f64() {
            self.streak += 1;
        } else {
            self.streak = 0;
        }
    }

    /// Worker `w` answered a whole unit of `jobs` jobs, which ran `run_s` seconds in all:
    /// its next units are sized after it (the threads are [`released`](Self::released)
    /// apart).
    pub(crate) fn unit_done(&mut self, w: usize, jobs: usize, run_s: f64) {
        let (prefetch, max_batch) = (self.prefetch, self.max_batch);
        if let Some(load) = self.loads.get_mut(w) {
            load.batch = adapted_batch(load.batch, jobs, run_s, max_batch);
            load.depth = adapted_depth(load.depth, load.batch, prefetch, run_s, max_batch);
        }
    }

    /// Threads of work in flight on worker `w`.
    #[cfg(test)]
    fn busy(&self, w: usize) -> usize {
        self.loads[w].busy
    }
}

/// The next batch size for a worker whose last unit came back as `records` that ran
/// `run_s` in all: aims at units of `UNIT_TARGET`, growing at most twofold per unit.
fn adapted_batch(batch: usize, records: usize, run_s: f64, max_batch: usize) -> usize {
    if records == 0 {
        return batch;
    }
    let mean = run_s / records as f64;
    let wanted = UNIT_TARGET.as_secs_f64() / mean.max(1e-7);
    let wanted = if wanted.is_finite() { wanted as usize } else { max_batch };
    wanted.clamp(1, batch.saturating_mul(2).min(max_batch))
}

/// The next depth for a worker: deeper (up to `MAX_WINDOW`) while its units take far less
/// than `UNIT_TARGET` although batches are at their cap; back to `prefetch` otherwise.
fn adapted_depth(depth: usize, batch: usize, prefetch: usize, unit_s: f64, max_batch: usize) -> usize {
    if batch >= max_batch && unit_s < UNIT_TARGET.as_secs_f64() / 4.0 {
        depth.saturating_mul(2).clamp(prefetch, MAX_WINDOW.max(prefetch))
    } else {
        prefetch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Worker `w` answered a whole unit of `jobs` jobs that ran `run_s` seconds.
    fn done(policy: &mut Policy, w: usize, jobs: usize, run_s: f64) {
        let cost = policy.cost(jobs);
        policy.released(w, cost);
        policy.unit_done(w, jobs, run_s);
    }

    /// Sends units while the policy names a worker (every job of the operation is there to
    /// send), as the master's fill does; returns (worker, jobs) per unit in order.
    fn fill(policy: &mut Policy) -> Vec<(usize, usize)> {
        let mut sent = Vec::new();
        while let Some(w) = policy.next_worker(|_| false) {
            if policy.remaining() == Some(0) {
                break;
            }
            let jobs = policy.batch(w).min(policy.remaining().map_or(usize::MAX, |r| r as usize));
            policy.sent(w, jobs);
            sent.push((w, jobs));
        }
        sent
    }

    #[test]
    fn the_first_units_are_dealt_breadth_first() {
        // 3 workers, prefetch 4, 3 jobs: one each (#23.3: two on rank-1, none on rank-3).
        let mut policy = Policy::new(3, 4, 1, 1, Some(3), MAX_BATCH);
        assert_eq!(fill(&mut policy), vec![(0, 1), (1, 1), (2, 1)]);
        // 2 workers, prefetch 4, 4 jobs of unknown duration: one each, none waiting.
        let mut policy = Policy::new(2, 4, 1, 1, Some(4), MAX_BATCH);
        assert_eq!(fill(&mut policy), vec![(0, 1), (1, 1)]);
        assert_eq!(policy.remaining(), Some(2));
        // An unknown number of jobs: the same.
        let mut policy = Policy::new(3, 2, 1, 1, None, MAX_BATCH);
        assert_eq!(fill(&mut policy), vec![(0, 1), (1, 1), (2, 1)]);
    }

    #[test]
    fn no_worker_gets_a_second_unit_while_another_has_none() {
        let mut policy = Policy::new(3, 2, 1, 1, None, MAX_BATCH);
        for _ in 0..100 {
            policy.measured(0.001);
        }
        let sent = fill(&mut policy);
        // With queues allowed, still one round to every worker before a second round.
        let firsts: Vec<usize> = sent.iter().take(3).map(|&(w, _)| w).collect();
        assert_eq!(firsts, vec![0, 1, 2]);
        assert!(sent.len() > 3, "measured short processes queue: {sent:?}");
        // Worker 1 answers its units: the next one goes to it, the least loaded.
        let held = policy.busy(1);
        done(&mut policy, 1, 1, 0.001);
        assert!(policy.busy(1) < held);
        assert_eq!(policy.next_worker(|_| false), Some(1));
    }

    #[test]
    fn long_processes_never_queue_behind_each_other() {
        // #14.4: s = [0, 0, 10, 10, 0, 0] on 2 workers, prefetch 1: the two 10 s ones must
        // not go in one unit, nor one behind the other.
        let mut policy = Policy::new(2, 1, 1, 1, Some(6), MAX_BATCH);
        assert_eq!(fill(&mut policy), vec![(0, 1), (1, 1)]);
        policy.measured(0.003);
        done(&mut policy, 0, 1, 0.003);
        // Worker 0 answered fast: its next unit still holds one job.
        assert_eq!(fill(&mut policy), vec![(0, 1)]);
        policy.measured(0.003);
        done(&mut policy, 1, 1, 0.003);
        assert_eq!(fill(&mut policy), vec![(1, 1)], "the second 10 s job goes to the other worker, alone");
        // The same with the default prefetch 2.
        let mut policy = Policy::new(2, 2, 1, 1, Some(6), MAX_BATCH);
        assert_eq!(fill(&mut policy), vec![(0, 1), (1, 1)]);
        policy.measured(0.003);
        done(&mut policy, 0, 1, 0.003);
        assert_eq!(fill(&mut policy), vec![(0, 1)], "nothing queued behind a process of unknown duration");
    }

    #[test]
    fn one_long_process_ends_queues_and_batches() {
        let mut policy = Policy::new(2, 2, 1, 1, None, MAX_BATCH);
        for _ in 0..64 {
            policy.measured(0.0001);
        }
        done(&mut policy, 0, 8, 0.0008);
        assert!(policy.batch(0) > 1);
        assert_eq!(policy.capacity(0), 2);
        policy.measured(3.0);
        assert_eq!(policy.batch(0), 1);
        assert_eq!(policy.capacity(0), 1);
    }

    #[test]
    fn tiny_processes_ramp_up_to_large_batches() {
        let mut policy = Policy::new(2, 2, 1, 1, None, MAX_BATCH);
        let mut units = 0;
        while policy.batch(0) < MAX_BATCH {
            let jobs = policy.batch(0);
            policy.sent(0, jobs);
            for _ in 0..jobs {
                policy.measured(0.000_001);
            }
            done(&mut policy, 0, jobs, jobs as f64 * 0.000_001);
            units += 1;
            assert!(units < 40, "batches should reach the cap within a few dozen units");
        }
        assert!(policy.capacity(0) >= 2, "short processes queue");
    }

    #[test]
    fn the_window_counts_threads() {
        // #23.4: 2 workers × 2 threads, processes of 2 threads, prefetch 2: one process each
        // at first, and never more than one waiting behind a running one.
        let mut policy = Policy::new(2, 2, 2, 2, Some(6), MAX_BATCH);
        assert_eq!(fill(&mut policy), vec![(0, 1), (1, 1)]);
        assert_eq!((policy.busy(0), policy.busy(1)), (2, 2));
        // 1-thread processes on 2-thread ranks: two each.
        let mut policy = Policy::new(2, 2, 2, 1, Some(8), MAX_BATCH);
        assert_eq!(fill(&mut policy), vec![(0, 1), (1, 1), (0, 1), (1, 1)]);
        // Measured short, mid-run: T × prefetch threads each.
        let mut policy = Policy::new(2, 2, 2, 2, None, MAX_BATCH);
        for _ in 0..16 {
            policy.measured(0.001);
        }
        assert_eq!(fill(&mut policy).len(), 4, "one running and one waiting on each");
        assert_eq!((policy.busy(0), policy.busy(1)), (4, 4));
    }

    #[test]
    fn near_the_end_units_shrink_and_nothing_queues() {
        let mut policy = Policy::new(2, 2, 1, 1, Some(100), MAX_BATCH);
        for _ in 0..100 {
            policy.measured(0.0001);
        }
        done(&mut policy, 0, 1, 0.0001);
        done(&mut policy, 0, 2, 0.0002);
        assert_eq!(policy.batch(0), 4, "tiny processes share units mid-run");
        assert_eq!(policy.capacity(0), 2, "and queue mid-run");
        policy.sent(1, 94);
        assert_eq!(policy.batch(0), 1, "6 jobs left over 2 workers × prefetch 2");
        assert_eq!(policy.capacity(0), 2);
        policy.sent(1, 2);
        assert_eq!(policy.capacity(0), 1, "no more jobs left than the workers' windows hold: no queue");
    }

    #[test]
    fn batches_grow_at_most_twofold_and_aim_at_the_unit_target() {
        assert_eq!(adapted_batch(1, 1, 0.000_001, MAX_BATCH), 2);
        assert_eq!(adapted_batch(512, 512, 0.000_512, MAX_BATCH), MAX_BATCH);
        assert_eq!(adapted_batch(8, 8, 8.0, MAX_BATCH), 1);
        assert_eq!(adapted_batch(4, 0, 0.0, MAX_BATCH), 4);
        assert_eq!(adapted_batch(4, 4, 0.0, 1), 1, "max batch 1 switches batching off");
    }
}
