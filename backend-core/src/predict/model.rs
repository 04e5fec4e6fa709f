//! The duration model: a process's duration predicted from its parameters in log space, per
//! parameter value, with how far its own predictions can be trusted. One concept (about 400
//! lines with its tests), read top to bottom: features, their statistics, the model.

use std::collections::{BTreeMap, HashMap};

use super::{MAX_VALUES, MIN_TRUST};
use crate::{Params, Value};

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
/// A parameter with at most this many distinct values seen is a grid or a setting whose
/// unseen values may take any time; beyond, it is a seed or an index whose next value says
/// little (see [`DurationModel::measured_shorter_than`]).
pub const FEW_VALUES: usize = 64;

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
pub(super) struct U64Hasher(u64);

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
pub(super) type U64Map<V> = HashMap<u64, V, std::hash::BuildHasherDefault<U64Hasher>>;

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

/// Predicts a process's duration from its parameters (see the [module docs](super)).
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

    /// Whether a process with `features` was measured shorter than `limit_s`: every value it
    /// has of a parameter with few distinct values (at most [`FEW_VALUES`]: a grid, a
    /// setting, not a seed) has been seen and ran shorter on (geometric) average, and its
    /// predicted median is below the limit. A
    /// value never seen may change the duration by any factor, so such a process counts as
    /// of unknown duration, however short everything so far was.
    pub fn measured_shorter_than(&self, features: &Features, limit_s: f64) -> bool {
        let limit_log = limit_s.ln();
        // Each value's own (geometric) mean, unshrunk: one long run of a value is enough to
        // call the value long.
        let known = features.0.iter().all(|f| {
            self.params.get(&f.param).is_some_and(|p| {
                p.values.len() > FEW_VALUES || p.values.get(&f.value).is_some_and(|stat| stat.mean() < limit_log)
            })
        });
        known && self.predict_median(features).is_some_and(|s| s < limit_s)
    }

    /// The predicted duration in seconds of a process with `features` (its expected value:
    /// the median times [`correction`](Self::correction)); `None` before anything was learnt.
    pub fn predict(&self, features: &Features) -> Option<f64> {
        self.predict_median(features).map(|median| median * self.correction()).filter(|s| s.is_finite())
    }

    /// The predicted median duration in seconds of a process with `features`, without the
    /// correction for the model's error: what a prediction kept for later is kept as, since
    /// the correction changes as the model learns.
    pub fn predict_median(&self, features: &Features) -> Option<f64> {
        self.predict_log(features).map(f64::exp).filter(|s| s.is_finite())
    }

    /// The factor from a median prediction to an expected duration: the log-normal
    /// correction `exp(σ²/2)` for the model's running error now.
    pub fn correction(&self) -> f64 {
        (self.error_model.clamp(0.0, MAX_CORRECTION_VAR) / 2.0).exp()
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

#[cfg(test)]
mod tests {
    use super::super::tests::params;
    use super::*;
    use proptest::prelude::*;

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
    fn only_processes_whose_values_were_seen_short_are_measured_short() {
        let mut model = DurationModel::default();
        for _ in 0..10 {
            model.learn(&size(1), 0.001);
            model.learn(&size(2), 0.002);
        }
        assert!(model.measured_shorter_than(&size(1), 0.05));
        // An unseen value of a parameter of few values: unknown, however short the rest.
        assert!(!model.measured_shorter_than(&size(1000), 0.05));
        // Seen, but long.
        model.learn(&size(3), 10.0);
        assert!(!model.measured_shorter_than(&size(3), 0.05));
        // A parameter of many values (a seed): its next value is not news.
        let seed = |n: i64| Features::of(&[("seed".to_owned(), Value::Int(n))].into_iter().collect());
        let mut model = DurationModel::default();
        for n in 0..=FEW_VALUES as i64 {
            assert!(!model.measured_shorter_than(&seed(n), 0.05), "value {n} is new among few");
            model.learn(&seed(n), 0.001);
        }
        assert!(model.measured_shorter_than(&seed(1_000_000), 0.05));
        assert!(!DurationModel::default().measured_shorter_than(&seed(0), 0.05), "nothing learnt");
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
    }
}
