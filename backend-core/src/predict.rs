//! Predicted durations, and the look-ahead window that hands out the longest predicted
//! process first.
//!
//! **The model** ([`DurationModel`]) predicts a process's duration from its parameters. It
//! works in log space (durations are positive and spread over orders of magnitude, and a
//! parameter usually *multiplies* the time: twice the mesh, twice the work): the prediction
//! is the mean log-duration of everything seen, plus, for each parameter, how far the mean
//! log-duration of the processes with the same value of that parameter lies from it. Each
//! such effect is shrunk towards 0 by `n / (n + 2)` (a value seen once says little), and a
//! numeric value not seen yet takes the effect interpolated between its nearest seen
//! neighbours. So learning and predicting cost one hash lookup per parameter, memory is
//! bounded (at most [`MAX_VALUES`] values tracked per parameter), and with nothing known of
//! a parameter the prediction falls back to the overall (geometric) mean.
//!
//! The model is **trusted** for ordering once it has seen [`MIN_TRUST`] processes and its
//! recent predictions — each made *before* the process's duration was learnt — err
//! clearly less (in mean squared log error) than the overall mean would have: parameters
//! that do not explain durations never reorder a run. Predictions in seconds include the
//! log-normal correction `exp(σ²/2)` of the model's own recent error, so sums of predictions
//! (the ETA) are sums of means, not of medians.
//!
//! **The window** ([`Lookahead`]) pulls up to a bound of jobs ahead from the lazy source
//! (never the whole operation), and hands out the one predicted longest while the model is
//! trusted, in id order before (and always with a bound of 1). The [`Learner`] is what the
//! window, the collector and the status thread share: the model, the jobs handed out and not
//! yet recorded (with their features and predictions, so that an MPI master learns from a
//! record's id and duration alone, without decoding it), and what the ETA needs.

use std::collections::{BTreeMap, BinaryHeap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::{Error, Job, JobSource, Params, Result, Status, Value};

/// How many jobs the look-ahead window holds by default.
pub const DEFAULT_LOOKAHEAD: usize = 4096;
/// How many durations the model must have learnt before its predictions order the window
/// or give the ETA.
pub const MIN_TRUST: u64 = 32;
/// The most distinct values of one parameter the model keeps statistics for (a parameter
/// with more, such as a seed, stops adding values: memory stays bounded).
pub const MAX_VALUES: usize = 4096;
/// Pseudo-count of the shrinkage of each value's effect towards the overall mean.
const SHRINK: f64 = 2.0;
/// Durations below this count as this (the log of 0 is not a number).
const MIN_DURATION_S: f64 = 1e-6;
/// Weight of the latest squared error in the model's running error.
const ERROR_WEIGHT: f64 = 1.0 / 64.0;
/// The model orders the window while its running error is below this fraction of the
/// overall mean's.
const TRUST_RATIO: f64 = 0.8;
/// The largest log-normal variance correction applied to predictions in seconds.
const MAX_CORRECTION_VAR: f64 = 4.0;

/// A parameter's name and value, hashed: what the model keys its statistics by.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Feature {
    /// The parameter's name.
    param: u64,
    /// The parameter's value.
    value: u64,
    /// The value as a number, when it is one (finite): unseen values are interpolated.
    numeric: Option<f64>,
}

/// What the model knows of one process: its parameters, hashed once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Features(Vec<Feature>);

impl Features {
    /// The features of a process with `params`.
    pub fn of(params: &Params) -> Self {
        Features(
            params
                .iter()
                .map(|(name, value)| {
                    let mut hash = Fnv::default();
                    hash.write(name.as_bytes());
                    let param = hash.0;
                    hash_value(&mut hash, value);
                    let numeric = match value {
                        Value::Int(i) => Some(*i as f64),
                        Value::UInt(u) => Some(*u as f64),
                        Value::Float(f) if f.is_finite() => Some(*f),
                        _ => None,
                    };
                    Feature { param, value: hash.0, numeric }
                })
                .collect(),
        )
    }
}

/// FNV-1a, 64 bits: a hash cheap for the short keys of parameters, and the same in every
/// program (a model seeded from a journal keys values as the run that learns from it).
#[derive(Debug, Clone, Copy)]
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

fn hash_value(hash: &mut Fnv, value: &Value) {
    match value {
        Value::Null => hash.write(&[0]),
        Value::Bool(b) => hash.write(&[1, u8::from(*b)]),
        // A whole number is the same value whether it came as an integer or a float (as a
        // journal read back may give it).
        Value::Int(i) => number(hash, *i as f64),
        Value::UInt(u) => number(hash, *u as f64),
        Value::Float(f) => number(hash, *f),
        Value::Str(s) => {
            hash.write(&[3]);
            hash.write(s.as_bytes());
        }
        Value::List(items) => {
            hash.write(&[4]);
            items.iter().for_each(|v| hash_value(hash, v));
        }
        Value::Map(map) => {
            hash.write(&[5]);
            for (k, v) in map {
                hash.write(k.as_bytes());
                hash_value(hash, v);
            }
        }
    }
}

fn number(hash: &mut Fnv, x: f64) {
    // -0.0 and 0.0 are one value.
    let x = if x == 0.0 { 0.0 } else { x };
    hash.write(&[2]);
    hash.write(&x.to_bits().to_le_bytes());
}

/// Hashes the `u64` keys of the model's maps (already hashes, or process ids) with one
/// multiplication, instead of SipHash: learning and the in-flight set cost per process.
#[derive(Debug, Clone, Copy, Default)]
struct U64Hasher(u64);

impl std::hash::Hasher for U64Hasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing spreads consecutive ids over the table's high bits too.
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(26);
    }
}

/// A map keyed by `u64`, hashed by [`U64Hasher`].
type U64Map<V> = HashMap<u64, V, std::hash::BuildHasherDefault<U64Hasher>>;

/// A count and a sum of log-durations.
#[derive(Debug, Clone, Copy, Default)]
struct Stat {
    n: u64,
    sum_log: f64,
}

impl Stat {
    fn add(&mut self, log: f64) {
        self.n += 1;
        self.sum_log += log;
    }

    fn mean(&self) -> f64 {
        if self.n == 0 {
            0.0
        } else {
            self.sum_log / self.n as f64
        }
    }

    /// How far this value's mean lies from `overall`, shrunk towards 0 for few samples.
    fn effect(&self, overall: f64) -> f64 {
        let n = self.n as f64;
        (self.mean() - overall) * n / (n + SHRINK)
    }
}

/// An `f64` ordered totally, to key numeric values.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Ordered(f64);

impl Eq for Ordered {}

impl PartialOrd for Ordered {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ordered {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&other.0)
    }
}

/// What the model knows of one parameter.
#[derive(Debug, Clone, Default)]
struct ParamStats {
    /// By value.
    values: U64Map<Stat>,
    /// The numeric values seen, to interpolate unseen ones between their neighbours.
    numeric: BTreeMap<Ordered, u64>,
}

impl ParamStats {
    fn effect(&self, feature: &Feature, overall: f64) -> f64 {
        if let Some(stat) = self.values.get(&feature.value) {
            return stat.effect(overall);
        }
        let Some(x) = feature.numeric else { return 0.0 };
        let effect_of = |(k, v): (&Ordered, &u64)| (k.0, self.values.get(v).map_or(0.0, |s| s.effect(overall)));
        let below = self.numeric.range(..Ordered(x)).next_back().map(effect_of);
        let above = self.numeric.range(Ordered(x)..).next().map(effect_of);
        match (below, above) {
            (Some((x0, e0)), Some((x1, e1))) if x1 > x0 => e0 + (e1 - e0) * (x - x0) / (x1 - x0),
            (Some((_, e)), _) | (None, Some((_, e))) => e,
            (None, None) => 0.0,
        }
    }

    fn learn(&mut self, feature: &Feature, log: f64) {
        if let Some(stat) = self.values.get_mut(&feature.value) {
            stat.add(log);
        } else if self.values.len() < MAX_VALUES {
            let mut stat = Stat::default();
            stat.add(log);
            self.values.insert(feature.value, stat);
            if let Some(x) = feature.numeric {
                self.numeric.insert(Ordered(x), feature.value);
            }
        }
    }
}

/// Predicts a process's duration from its parameters (see the [module docs](self)).
#[derive(Debug, Clone, Default)]
pub struct DurationModel {
    /// Every duration learnt, in log space.
    overall: Stat,
    /// The sum of the durations learnt, in seconds.
    sum_s: f64,
    params: U64Map<ParamStats>,
    /// Running mean squared log error of the model's predictions made before learning.
    error_model: f64,
    /// The same for the overall mean.
    error_mean: f64,
    /// How many predictions were scored.
    scored: u64,
}

impl DurationModel {
    /// How many durations it learnt.
    pub fn seen(&self) -> u64 {
        self.overall.n
    }

    /// The mean duration learnt, in seconds.
    pub fn mean_s(&self) -> Option<f64> {
        (self.overall.n > 0).then(|| self.sum_s / self.overall.n as f64)
    }

    /// Whether its predictions order the window: it has learnt [`MIN_TRUST`] durations, and
    /// its recent predictions erred clearly less than the overall mean.
    pub fn trusted(&self) -> bool {
        self.seen() >= MIN_TRUST && self.error_model < TRUST_RATIO * self.error_mean
    }

    fn predict_log(&self, features: &Features) -> Option<f64> {
        if self.overall.n == 0 {
            return None;
        }
        let overall = self.overall.mean();
        let effects: f64 =
            features.0.iter().filter_map(|f| self.params.get(&f.param).map(|p| p.effect(f, overall))).sum();
        Some(overall + effects)
    }

    /// The predicted duration in seconds of a process with `features`; `None` before
    /// anything was learnt.
    pub fn predict(&self, features: &Features) -> Option<f64> {
        let var = self.error_model.clamp(0.0, MAX_CORRECTION_VAR);
        self.predict_log(features).map(|log| (log + var / 2.0).exp()).filter(|s| s.is_finite())
    }

    /// Learns that a process with `features` ran `duration_s` seconds.
    pub fn learn(&mut self, features: &Features, duration_s: f64) {
        if !duration_s.is_finite() {
            return;
        }
        let duration_s = duration_s.max(MIN_DURATION_S);
        let log = duration_s.ln();
        if let Some(predicted) = self.predict_log(features) {
            self.scored += 1;
            let weight = (1.0 / self.scored as f64).max(ERROR_WEIGHT);
            let mean = self.overall.mean();
            self.error_model += weight * ((predicted - log).powi(2) - self.error_model);
            self.error_mean += weight * ((mean - log).powi(2) - self.error_mean);
        }
        self.overall.add(log);
        self.sum_s += duration_s;
        for feature in &features.0 {
            self.params.entry(feature.param).or_default().learn(feature, log);
        }
    }
}

/// A job handed out and not yet recorded.
#[derive(Debug)]
struct InFlight {
    features: Features,
    predicted_s: Option<f64>,
    since: Instant,
}

#[derive(Debug, Default)]
struct LearnerState {
    model: DurationModel,
    in_flight: U64Map<InFlight>,
    /// Jobs in the look-ahead window, and the sum of their predictions.
    window_len: usize,
    window_s: f64,
    /// How many processes run at once.
    slots: usize,
}

/// The model with what the window, the collector and the status thread share about the
/// run (see the [module docs](self)); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Learner(Arc<Mutex<LearnerState>>);

impl Learner {
    fn state(&self) -> std::sync::MutexGuard<'_, LearnerState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Learns that a process with `params` ran `duration_s` seconds (seeding).
    pub fn learn(&self, params: &Params, duration_s: f64) {
        self.state().model.learn(&Features::of(params), duration_s);
    }

    /// A copy of the model as it is now.
    pub fn model(&self) -> DurationModel {
        self.state().model.clone()
    }

    /// Says how many processes run at once (the ETA divides the work left by it).
    pub fn set_slots(&self, slots: usize) {
        self.state().slots = slots.max(1);
    }

    /// Learns from the finished records of the journal of the result directory `dir`, a run
    /// of the operation `name`: `dir` is a run (it holds a journal and `operation.toml`) or
    /// holds runs (`results/<name>`, every run in it). Returns how many durations it learnt.
    pub fn seed_from_dir(&self, dir: &Path, name: &str) -> Result<u64> {
        let runs: Vec<std::path::PathBuf> = if dir.join(crate::results::files::JOURNAL).is_file() {
            vec![dir.to_owned()]
        } else {
            let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read the history directory", dir, e))?;
            let mut runs: Vec<_> = entries
                // Not through `latest`, a link to one of them.
                .filter_map(|e| e.ok().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()))
                .filter(|p| p.join(crate::results::files::JOURNAL).is_file())
                .collect();
            runs.sort();
            runs
        };
        if runs.is_empty() {
            return Err(Error::NotARun { path: dir.to_owned(), missing: "journal (for --history)" });
        }
        let mut learnt = 0;
        for run in runs {
            let was = operation_name(&run)?;
            if was != name {
                return Err(Error::InvalidOption(format!(
                    "--history {}: it is a run of the operation `{was}`, not of `{name}`",
                    run.display()
                )));
            }
            let mut state = self.state();
            crate::journal::read_journal_with(&run.join(crate::results::files::JOURNAL), |record| {
                if record.status == Status::Finished {
                    state.model.learn(&Features::of(&record.params), record.duration_s);
                    learnt += 1;
                }
            })?;
        }
        Ok(learnt)
    }

    /// The record of the job `id` came back with `status` after `duration_s` seconds: a
    /// finished one is learnt (a failure says nothing of how long the process takes).
    pub fn recorded(&self, id: u64, status: Status, duration_s: f64) {
        let mut state = self.state();
        if let Some(job) = state.in_flight.remove(&id) {
            if status == Status::Finished {
                state.model.learn(&job.features, duration_s);
            }
        }
    }

    /// Seconds until every one of `left` processes (those without a record, in flight or
    /// not) has ended, from the predictions: the work left (what the processes in flight
    /// still have to run, the window's predictions, the mean for those not yet pulled) over
    /// the processes running at once, and at least what the longest in flight still needs.
    /// `None` until the model has learnt [`MIN_TRUST`] durations.
    pub fn eta_s(&self, left: u64) -> Option<f64> {
        let state = self.state();
        let model = &state.model;
        let mean = model.mean_s().filter(|_| model.seen() >= MIN_TRUST)?;
        let mut work = 0.0;
        let mut longest: f64 = 0.0;
        for job in state.in_flight.values() {
            let rest = (job.predicted_s.unwrap_or(mean) - job.since.elapsed().as_secs_f64()).max(0.0);
            work += rest;
            longest = longest.max(rest);
        }
        let pulled = state.in_flight.len() as u64 + state.window_len as u64;
        work += state.window_s.max(0.0) + left.saturating_sub(pulled) as f64 * mean;
        let eta = (work / state.slots.max(1) as f64).max(longest);
        eta.is_finite().then_some(eta)
    }

    /// How many jobs are handed out and not yet recorded.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight.len()
    }
}

/// The name of the operation of the run in `dir`, from its `operation.toml`.
fn operation_name(dir: &Path) -> Result<String> {
    let path = dir.join(crate::results::files::OPERATION);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|_| Error::NotARun { path: dir.to_owned(), missing: "readable operation.toml" })?;
    Ok(table.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_owned())
}

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
/// source's order before (see the [module docs](self)). Every job it hands out is counted
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
            let predicted_s = state.model.predict(&features);
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
            w.predicted_s = state.model.predict(&w.features);
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
    use super::*;
    use proptest::prelude::*;

    fn params(pairs: &[(&str, Value)]) -> Params {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    fn size(n: i64) -> Features {
        Features::of(&params(&[("n", Value::Int(n))]))
    }

    #[test]
    fn nothing_learnt_predicts_nothing_and_one_duration_predicts_it() {
        let mut model = DurationModel::default();
        assert_eq!(model.predict(&size(1)), None);
        model.learn(&size(1), 2.0);
        let p = model.predict(&size(1)).unwrap();
        assert!((p - 2.0).abs() < 1e-9, "{p}");
        assert!(!model.trusted());
    }

    #[test]
    fn a_multiplicative_parameter_is_learnt_and_trusted() {
        // duration = n × 10 ms × (2 if fine), in a shuffled order.
        let mut model = DurationModel::default();
        let d = |n: i64, fine: bool| n as f64 * 0.01 * if fine { 2.0 } else { 1.0 };
        let f = |n: i64, fine: bool| Features::of(&params(&[("n", Value::Int(n)), ("fine", Value::Bool(fine))]));
        for round in 0..10 {
            for i in 0..20 {
                let n = (i * 7 + round) % 20 + 1;
                model.learn(&f(n, i % 2 == 0), d(n, i % 2 == 0));
            }
        }
        assert!(model.trusted(), "{model:?}");
        // Ordered as the true durations, and within a factor of the truth.
        let mut last = 0.0;
        for n in 1..=20 {
            let p = model.predict(&f(n, false)).unwrap();
            assert!(p > last, "n = {n}: {p} after {last}");
            last = p;
            assert!(p / d(n, false) < 2.0 && d(n, false) / p < 2.0, "n = {n}: {p} vs {}", d(n, false));
        }
        assert!(model.predict(&f(10, true)).unwrap() > model.predict(&f(10, false)).unwrap());
    }

    #[test]
    fn an_unseen_numeric_value_is_interpolated_between_its_neighbours() {
        let mut model = DurationModel::default();
        for _ in 0..10 {
            model.learn(&size(10), 1.0);
            model.learn(&size(30), 9.0);
        }
        let (lo, mid, hi) =
            (model.predict(&size(10)).unwrap(), model.predict(&size(20)).unwrap(), model.predict(&size(30)).unwrap());
        assert!(lo < mid && mid < hi, "{lo} {mid} {hi}");
        assert!((model.predict(&size(100)).unwrap() - hi).abs() < 1e-9, "beyond the range: the nearest");
        // A text value not seen: the overall mean.
        let unseen = Features::of(&params(&[("mesh", Value::Str("new".into()))]));
        let overall = model.predict(&unseen).unwrap();
        assert!(lo < overall && overall < hi);
    }

    #[test]
    fn parameters_that_do_not_explain_durations_are_not_trusted() {
        let mut model = DurationModel::default();
        let mut state = 7u64;
        for i in 0..500 {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            let noise = 0.001 + (state >> 40) as f64 / (1u64 << 24) as f64;
            model.learn(&size(i % 5), noise);
        }
        assert!(!model.trusted(), "{model:?}");
    }

    #[test]
    fn a_parameter_with_many_values_stays_bounded() {
        let mut model = DurationModel::default();
        for i in 0..(MAX_VALUES as i64 + 100) {
            model.learn(&size(i), 1.0);
        }
        assert_eq!(model.params.values().map(|p| p.values.len()).max(), Some(MAX_VALUES));
        assert!(model.predict(&size(i64::MAX)).is_some());
    }

    fn jobs(durations: Vec<f64>) -> JobSource<f64> {
        Box::new(durations.into_iter().enumerate().map(|(id, d)| Job {
            id: id as u64,
            run: 0,
            params: params(&[("d", Value::Float(d))]),
            process: d,
        }))
    }

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

    #[test]
    fn recorded_jobs_leave_the_in_flight_set_and_the_eta_counts_what_is_left() {
        let learner = Learner::default();
        learner.set_slots(2);
        assert_eq!(learner.eta_s(10), None, "nothing learnt");
        for _ in 0..MIN_TRUST {
            learner.learn(&params(&[("d", Value::Float(1.0))]), 1.0);
        }
        let mut window = Lookahead::new(jobs(vec![1.0; 10]), 4, learner.clone());
        let job = window.next().unwrap();
        assert_eq!(learner.in_flight(), 1);
        // 10 left of 1 s each on 2 slots: about 5 s.
        let eta = learner.eta_s(10).unwrap();
        assert!((4.0..=5.5).contains(&eta), "{eta}");
        learner.recorded(job.id, Status::Crashed, 0.0);
        assert_eq!(learner.in_flight(), 0);
        assert_eq!(learner.model().seen(), MIN_TRUST, "a crash is not learnt");
    }

    #[test]
    fn seeding_refuses_another_operations_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("operation.toml"), "name = \"other\"\n").unwrap();
        crate::journal::JournalWriter::create(&dir.path().join("journal")).unwrap();
        let err = Learner::default().seed_from_dir(dir.path(), "mine").unwrap_err().to_string();
        assert!(err.contains("`other`") && err.contains("`mine`"), "{err}");
        assert_eq!(Learner::default().seed_from_dir(dir.path(), "other").unwrap(), 0);
        let empty = tempfile::tempdir().unwrap();
        assert!(Learner::default().seed_from_dir(empty.path(), "mine").is_err());
    }

    /// Sleeps `ms` milliseconds.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Nap {
        ms: u64,
    }

    impl crate::Process for Nap {
        type Output = u64;
        fn run(&self, _: &crate::ProcessContext<'_>) -> std::result::Result<u64, crate::ProcessError> {
            std::thread::sleep(std::time::Duration::from_millis(self.ms));
            Ok(self.ms)
        }
    }

    fn naps(base: &Path) -> crate::Operation<Nap> {
        crate::Operation::from_processes("naps", [1, 12, 2, 10, 1, 14, 3, 9].map(|ms| Nap { ms }))
            .unwrap()
            .with_results_base(base)
    }

    #[test]
    fn a_resumed_run_and_a_run_with_history_predict_from_earlier_journals() {
        use crate::Backend;
        let base = tempfile::tempdir().unwrap();
        let summary = crate::SerialBackend::new().run(naps(base.path())).unwrap();
        assert_eq!(summary.finished, 8);
        let nap = |ms: u64| Features::of(&params(&[("ms", Value::Int(ms as i64))]));
        let check = |lifecycle: &crate::Lifecycle<Nap>| {
            let model = lifecycle.learner().model();
            assert_eq!(model.seen(), 8);
            assert!(model.predict(&nap(14)).unwrap() > model.predict(&nap(1)).unwrap(), "{model:?}");
        };
        // Resumed: its own journal (nothing is left to run).
        let mut lifecycle = crate::Lifecycle::new(crate::BackendKind::Serial);
        lifecycle.stage_in(naps(base.path()).resume_from(&summary.dir, false)).unwrap();
        check(&lifecycle);
        lifecycle.cleanup().unwrap();
        // `latest` points at the complete run: learnt once, not twice through the link.
        assert_eq!(Learner::default().seed_from_dir(&base.path().join("naps"), "naps").unwrap(), 8);
        // A new run with --history: the run's directory, or the operation's directory of runs.
        for history in [summary.dir.clone(), base.path().join("naps")] {
            let mut lifecycle = crate::Lifecycle::new(crate::BackendKind::Serial);
            lifecycle.stage_in(naps(base.path()).with_history([history])).unwrap();
            check(&lifecycle);
            lifecycle.cleanup().unwrap();
        }
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            "[a-z]{0,4}".prop_map(Value::Str),
            any::<bool>().prop_map(Value::Bool),
        ]
    }

    proptest! {
        #[test]
        fn predictions_are_finite_and_positive(
            learnt in proptest::collection::vec((value(), value(), 0.0f64..1e6), 1..60),
            asked in (value(), value()),
        ) {
            let mut model = DurationModel::default();
            let f = |a: &Value, b: &Value| Features::of(&params(&[("a", a.clone()), ("b", b.clone())]));
            for (a, b, d) in &learnt {
                model.learn(&f(a, b), *d);
            }
            let p = model.predict(&f(&asked.0, &asked.1));
            prop_assert!(p.is_some_and(|p| p.is_finite() && p > 0.0), "{p:?}");
        }

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
