//! The look-ahead window: up to a bound of jobs pulled ahead from the lazy source, handed
//! out longest predicted first once the model is trusted, in id order before.

use std::collections::{BinaryHeap, VecDeque};
use std::time::Instant;

use super::model::Features;
use super::{InFlight, Learner, MIN_TRUST};
use crate::{Job, JobSource};

/// A job waiting in the window.
struct Waiting<P> {
    /// What orders the window: the prediction while the model is trusted, else 0 (then
    /// `seq` alone orders it: in id order).
    key: f64,
    /// The order it came from the source in.
    seq: u64,
    predicted_s: Option<f64>,
    features: Features,
    job: Job<P>,
}

impl<P> PartialEq for Waiting<P> {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl<P> Eq for Waiting<P> {}

impl<P> PartialOrd for Waiting<P> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl<P> Ord for Waiting<P> {
    /// The greatest is handed out first: the longest key, then the earliest.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key.total_cmp(&other.key).then_with(|| other.seq.cmp(&self.seq))
    }
}

/// The look-ahead window over a lazy job source: holds at most `bound` jobs pulled ahead,
/// hands out the one predicted longest while the [`Learner`]'s model is trusted, and in the
/// source's order before (see the [module docs](super)). Every job it hands out is counted
/// in flight until its record comes back ([`Learner::recorded`]).
pub struct Lookahead<P> {
    source: JobSource<P>,
    /// The window while it is ordered by prediction.
    heap: BinaryHeap<Waiting<P>>,
    /// The window while it is in the source's order (a queue: no sifting per job).
    in_order: VecDeque<Waiting<P>>,
    bound: usize,
    learner: Learner,
    seq: u64,
    ended: bool,
    /// Whether the window is ordered by prediction (the model was trusted when last scored).
    by_prediction: bool,
    /// How many durations the model had learnt when the window was last scored.
    scored_at: u64,
    /// How many jobs were handed out since the window was last scored.
    handed_out_since_scoring: usize,
}

impl<P> Lookahead<P> {
    /// A window of at most `bound` jobs (at least 1) over `source`.
    pub fn new(source: JobSource<P>, bound: usize, learner: Learner) -> Self {
        Lookahead {
            source,
            heap: BinaryHeap::new(),
            in_order: VecDeque::new(),
            bound: bound.max(1),
            learner,
            seq: 0,
            ended: false,
            by_prediction: false,
            scored_at: 0,
            handed_out_since_scoring: 0,
        }
    }

    /// How many jobs the window holds now.
    pub fn len(&self) -> usize {
        self.heap.len() + self.in_order.len()
    }

    /// Whether the window holds no job now.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty() && self.in_order.is_empty()
    }

    /// Pulls from the source until the window holds `bound` jobs or the source ends.
    fn refill(&mut self) {
        while self.len() < self.bound && !self.ended {
            // The job is made without the learner's lock: making it may take a while.
            let Some(job) = self.source.next() else {
                self.ended = true;
                break;
            };
            let features = Features::of(&job.params);
            let mut state = self.learner.state();
            let predicted_s = state.model.predict_median(&features);
            state.window_len += 1;
            state.window_s += predicted_s.unwrap_or(0.0);
            drop(state);
            let key = if self.by_prediction { predicted_s.unwrap_or(0.0) } else { 0.0 };
            let waiting = Waiting { key, seq: self.seq, predicted_s, features, job };
            if self.by_prediction {
                self.heap.push(waiting);
            } else {
                self.in_order.push_back(waiting);
            }
            self.seq += 1;
        }
    }

    /// Scores the window again when the model's trust changed or it learnt a quarter more
    /// since the last scoring (amortised: at most a window's work per quarter of growth).
    fn rescore_if_due(&mut self) {
        let mut state = self.learner.state();
        let seen = state.model.seen();
        let trusted = state.model.trusted();
        let grown = seen >= self.scored_at + (self.scored_at / 4).max(MIN_TRUST);
        let flipped = trusted != self.by_prediction;
        let due = flipped || (trusted && grown);
        if !due {
            return;
        }
        // A model whose error hovers at the threshold of trust flips back and forth, and each
        // flip would score the whole window again: after the first scoring, a flip is acted
        // on once a quarter of the window was handed out since the last one (amortised, a
        // few predictions per job).
        if flipped && self.scored_at > 0 && self.handed_out_since_scoring < self.len() / 4 {
            return;
        }
        self.handed_out_since_scoring = 0;
        self.by_prediction = trusted;
        self.scored_at = seen;
        let mut waiting = std::mem::take(&mut self.heap).into_vec();
        waiting.extend(std::mem::take(&mut self.in_order));
        let mut sum = 0.0;
        for w in &mut waiting {
            w.predicted_s = state.model.predict_median(&w.features);
            sum += w.predicted_s.unwrap_or(0.0);
            w.key = if trusted { w.predicted_s.unwrap_or(0.0) } else { 0.0 };
        }
        state.window_s = sum;
        drop(state);
        if trusted {
            self.heap = BinaryHeap::from(waiting);
        } else {
            waiting.sort_unstable_by_key(|w| w.seq);
            self.in_order = waiting.into();
        }
    }
}

impl<P> Iterator for Lookahead<P> {
    type Item = Job<P>;

    fn next(&mut self) -> Option<Job<P>> {
        self.refill();
        if self.bound > 1 {
            self.rescore_if_due();
        }
        let waiting = if self.by_prediction { self.heap.pop() } else { self.in_order.pop_front() }?;
        self.handed_out_since_scoring += 1;
        let mut state = self.learner.state();
        state.window_len = state.window_len.saturating_sub(1);
        state.window_s = if state.window_len == 0 { 0.0 } else { state.window_s - waiting.predicted_s.unwrap_or(0.0) };
        let in_flight =
            InFlight { features: waiting.features, predicted_s: waiting.predicted_s, since: Instant::now() };
        state.in_flight.insert(waiting.job.id, in_flight);
        Some(waiting.job)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{jobs, params};
    use super::*;
    use crate::{Status, Value};
    use proptest::prelude::*;

    #[test]
    fn the_window_hands_out_in_order_until_trusted_then_longest_first() {
        let learner = Learner::default();
        let durations: Vec<f64> = (0..200).map(|i| f64::from((i * 37) % 100 + 1)).collect();
        let mut window = Lookahead::new(jobs(durations.clone()), 50, learner.clone());
        // Untrusted: in order.
        let first: Vec<u64> = window.by_ref().take(10).map(|j| j.id).collect();
        assert_eq!(first, (0..10).collect::<Vec<_>>());
        assert!(window.len() <= 50);
        for id in 0..10 {
            learner.recorded(id, Status::Finished, durations[id as usize]);
        }
        // Seed the model with what it will see, so it is trusted.
        for d in &durations {
            learner.learn(&params(&[("d", Value::Float(*d))]), *d);
        }
        assert!(learner.model().trusted());
        // Each time, the longest of the 50 in the window, which takes in the next from the source.
        let mut held: Vec<f64> = durations[10..59].to_vec();
        for (taken, id) in window.by_ref().take(20).zip(59..) {
            held.push(durations[id]);
            let longest = held.iter().copied().fold(f64::MIN, f64::max);
            assert_eq!(taken.process, longest);
            let at = held.iter().position(|&d| d == longest).unwrap();
            held.swap_remove(at);
        }
    }

    proptest! {
        #[test]
        fn the_window_hands_out_every_job_once_and_holds_at_most_its_bound(
            durations in proptest::collection::vec(0.0f64..100.0, 0..300),
            bound in 1usize..40,
            learn_every in 1usize..5,
        ) {
            let learner = Learner::default();
            let mut window = Lookahead::new(jobs(durations.clone()), bound, learner.clone());
            let mut ids = Vec::new();
            while let Some(job) = window.next() {
                prop_assert!(window.len() < bound.max(1));
                if ids.len() % learn_every == 0 {
                    learner.recorded(job.id, Status::Finished, job.process);
                }
                ids.push(job.id);
            }
            ids.sort_unstable();
            prop_assert_eq!(ids, (0..durations.len() as u64).collect::<Vec<_>>());
        }

        #[test]
        fn a_bound_of_one_keeps_the_source_order(durations in proptest::collection::vec(0.0f64..100.0, 0..100)) {
            let learner = Learner::default();
            for d in &durations {
                learner.learn(&params(&[("d", Value::Float(*d))]), *d);
            }
            let ids: Vec<u64> = Lookahead::new(jobs(durations.clone()), 1, learner).map(|j| j.id).collect();
            prop_assert_eq!(ids, (0..durations.len() as u64).collect::<Vec<_>>());
        }
    }
}
