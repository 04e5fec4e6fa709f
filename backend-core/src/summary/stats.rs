//! The statistics over the runs of a parameter point: [`Stats`] of one stream of values
//! (count, mean, standard deviation, standard error, 95 % interval) and [`PointStats`] of
//! one point's records.

use indexmap::IndexMap;

use crate::{ProcessRecord, Status, Value};

/// The statistics `until` may name for a field `f`: `f.count`, `f.mean`, ...
pub const STATISTICS: [&str; 7] = ["count", "mean", "std", "sem", "ci95", "ci95_low", "ci95_high"];

/// The two-sided 95 % quantile of Student's t distribution, t(0.975, df), for df = 1..=30
/// (as tabulated, e.g. by `scipy.stats.t.ppf(0.975, df)`).
const T975: [f64; 30] = [
    12.706204736,
    4.302652730,
    3.182446305,
    2.776445105,
    2.570581836,
    2.446911851,
    2.364624252,
    2.306004135,
    2.262157163,
    2.228138852,
    2.200985160,
    2.178812830,
    2.160368656,
    2.144786688,
    2.131449546,
    2.119905299,
    2.109815578,
    2.100922040,
    2.093024054,
    2.085963447,
    2.079613845,
    2.073873068,
    2.068657610,
    2.063898562,
    2.059538553,
    2.055529439,
    2.051830516,
    2.048407142,
    2.045229642,
    2.042272456,
];

/// t(0.975, df): the table up to 30 degrees of freedom, above it the Cornish–Fisher
/// expansion around the normal quantile (its error is below 1e-6 from df = 30 on).
pub(crate) fn t975(df: u64) -> f64 {
    match df {
        0 => f64::NAN,
        1..=30 => T975[(df - 1) as usize],
        _ => {
            let z = 1.959_963_984_540_054_f64;
            let v = df as f64;
            let z3 = z.powi(3);
            let z5 = z.powi(5);
            let z7 = z.powi(7);
            let z9 = z.powi(9);
            z + (z3 + z) / (4.0 * v)
                + (5.0 * z5 + 16.0 * z3 + 3.0 * z) / (96.0 * v * v)
                + (3.0 * z7 + 19.0 * z5 + 17.0 * z3 - 15.0 * z) / (384.0 * v.powi(3))
                + (79.0 * z9 + 776.0 * z7 + 1482.0 * z5 - 1920.0 * z3 - 945.0 * z) / (92160.0 * v.powi(4))
        }
    }
}

/// Count, mean and the sum of squared deviations of a stream of values (Welford's update,
/// which stays accurate when the values are large and close together).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Stats {
    count: u64,
    mean: f64,
    m2: f64,
}

impl Stats {
    /// Adds one value.
    pub fn add(&mut self, x: f64) {
        self.count += 1;
        let delta = x - self.mean;
        self.mean += delta / self.count as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// How many values were added.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Their mean (NaN for none).
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            f64::NAN
        } else {
            self.mean
        }
    }

    /// The sample standard deviation (n − 1 in the denominator; NaN below two values).
    pub fn std(&self) -> f64 {
        if self.count < 2 {
            f64::NAN
        } else {
            (self.m2 / (self.count - 1) as f64).sqrt()
        }
    }

    /// The standard error of the mean, std / √n.
    pub fn sem(&self) -> f64 {
        self.std() / (self.count as f64).sqrt()
    }

    /// The half width of the 95 % confidence interval of the mean: t(0.975, n − 1) · sem.
    pub fn ci95(&self) -> f64 {
        t975(self.count.saturating_sub(1)) * self.sem()
    }

    /// The statistic named `name` (one of [`STATISTICS`]).
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "count" => self.count as f64,
            "mean" => self.mean(),
            "std" => self.std(),
            "sem" => self.sem(),
            "ci95" => self.ci95(),
            "ci95_low" => self.mean() - self.ci95(),
            "ci95_high" => self.mean() + self.ci95(),
            _ => return None,
        })
    }
}

/// The statistics of one parameter point over its runs.
#[derive(Debug, Clone, Default)]
pub struct PointStats {
    /// Runs with a record.
    pub runs: u64,
    /// Of those, finished.
    pub finished: u64,
    /// Of those, crashed or timed out.
    pub crashed: u64,
    /// Per numeric output field (flattened as in `results.csv`), over the finished runs.
    pub fields: IndexMap<String, Stats>,
}

impl PointStats {
    /// Adds the record of one run.
    pub fn add(&mut self, record: &ProcessRecord) {
        self.runs += 1;
        if record.status != Status::Finished {
            self.crashed += 1;
            return;
        }
        self.finished += 1;
        for (name, value) in numeric_fields(&record.output) {
            self.fields.entry(name).or_default().add(value);
        }
    }
}

/// The numeric leaves of an output, flattened with `.` (an output that is a plain number is
/// the field `output`); booleans, text and non-finite numbers are left out.
pub(crate) fn numeric_fields(output: &Value) -> Vec<(String, f64)> {
    let mut leaves = Vec::new();
    match output {
        Value::Map(_) => output.flatten_into("", &mut leaves),
        Value::Null => {}
        other => leaves.push(("output".to_owned(), other.clone())),
    }
    leaves
        .into_iter()
        .filter_map(|(name, value)| match value {
            Value::Int(_) | Value::UInt(_) | Value::Float(_) => {
                value.as_f64().filter(|x| x.is_finite()).map(|x| (name, x))
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mean, sample standard deviation, standard error and interval computed the textbook
    /// way (two passes), independently of `Stats`.
    fn textbook(xs: &[f64], t: f64) -> (f64, f64, f64, f64) {
        let n = xs.len() as f64;
        let mean = xs.iter().sum::<f64>() / n;
        let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let sem = var.sqrt() / n.sqrt();
        (mean, var.sqrt(), sem, t * sem)
    }

    #[test]
    fn student_t_quantiles_match_published_values() {
        // scipy.stats.t.ppf(0.975, df)
        for (df, t) in [
            (1, 12.706204736),
            (4, 2.776445105),
            (30, 2.042272456),
            (40, 2.021075390),
            (60, 2.000297822),
            (120, 1.979930405),
            (1000, 1.962339081),
        ] {
            assert!((t975(df) - t).abs() < 2e-6, "df {df}: {} vs {t}", t975(df));
        }
        assert!(t975(0).is_nan());
    }

    #[test]
    fn statistics_match_a_textbook_computation() {
        let xs = [3.2, 4.1, 2.9, 5.0, 3.7, 4.4];
        let mut s = Stats::default();
        xs.iter().for_each(|&x| s.add(x));
        let (mean, std, sem, ci) = textbook(&xs, 2.570581836);
        assert_eq!(s.count(), 6);
        assert!((s.mean() - mean).abs() < 1e-12);
        assert!((s.std() - std).abs() < 1e-12);
        assert!((s.sem() - sem).abs() < 1e-12);
        assert!((s.ci95() - ci).abs() < 1e-9);
        let mut one = Stats::default();
        one.add(1.0);
        assert!(one.std().is_nan() && one.ci95().is_nan());
    }
}
