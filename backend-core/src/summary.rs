//! Statistics over the runs of each parameter point: `summary.csv`, and the `until`
//! condition of adaptive runs, which reads the same statistics.
//!
//! For an operation whose points have more than one run, consolidation writes `summary.csv`:
//! one row per parameter point (in the order of its first id), its parameters, how many runs
//! it has, how many finished and crashed, and for each numeric output field the count, mean,
//! sample standard deviation, standard error, and the half width and bounds of the 95 %
//! confidence interval of the mean (Student t with count − 1 degrees of freedom). Statistics
//! a count cannot give (a standard deviation of one value) are empty cells. When the run's
//! `operation.toml` has adaptive runs (`runs = { min, max, until }`), the row also says
//! whether the point converged or stopped at `max`.

use std::fs;
use std::io::Write;
use std::path::Path;

use evalexpr::{ContextWithMutableFunctions, ContextWithMutableVariables, DefaultNumericTypes, HashMapContext, Node};
use indexmap::IndexMap;

use crate::results::files;
use crate::{Error, Params, ProcessRecord, Result, Status, Value};

/// The file name of the summary in a result directory.
pub const SUMMARY_CSV: &str = "summary.csv";

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

type Evaluated = evalexpr::Value<DefaultNumericTypes>;

/// A compiled `until` condition of adaptive runs, e.g.
/// `energy.ci95 < 0.01 * abs(energy.mean)`: a boolean expression over `<field>.<statistic>`
/// (statistics: [`STATISTICS`]) and `runs`, with `abs`, `sqrt`, `min` and `max`.
#[derive(Debug, Clone)]
pub struct Until {
    text: String,
    tree: Node<DefaultNumericTypes>,
    names: Vec<String>,
}

impl Until {
    /// Parses `text`; an expression that does not parse, or names something other than
    /// `runs` and `<field>.<statistic>`, is an error that says so.
    pub fn parse(text: &str) -> Result<Until> {
        let tree = evalexpr::build_operator_tree::<DefaultNumericTypes>(text)
            .map_err(|e| Error::BadUntil { until: text.to_owned(), reason: format!("it does not parse ({e})") })?;
        let mut names: Vec<String> = tree.iter_variable_identifiers().map(str::to_owned).collect();
        names.dedup();
        for name in &names {
            if name == "runs" {
                continue;
            }
            let statistic = name.rsplit_once('.').map(|(_, s)| s);
            if !statistic.is_some_and(|s| STATISTICS.contains(&s)) {
                return Err(Error::BadUntil {
                    until: text.to_owned(),
                    reason: format!(
                        "`{name}` is not `<field>.<statistic>` with a statistic among {} (or `runs`)",
                        STATISTICS.join(", ")
                    ),
                });
            }
        }
        for function in tree.iter_function_identifiers() {
            if !["abs", "sqrt", "min", "max"].contains(&function) {
                return Err(Error::BadUntil {
                    until: text.to_owned(),
                    reason: format!("`{function}` is not a function it knows (abs, sqrt, min, max)"),
                });
            }
        }
        let until = Until { text: text.to_owned(), tree, names };
        // A tree can parse and still not be a condition (`energy.mean <`, `energy.mean + 1`):
        // tried once on ones, it must give true or false.
        let context = until.context(|_| Some(1.0)).unwrap_or_default();
        if let Err(e) = until.tree.eval_boolean_with_context(&context) {
            return Err(Error::BadUntil {
                until: text.to_owned(),
                reason: format!("it is not a condition that is true or false ({e})"),
            });
        }
        Ok(until)
    }

    /// The context holding each name's value (`None` if a value is missing) and the
    /// functions.
    fn context(&self, value_of: impl Fn(&str) -> Option<f64>) -> Option<HashMapContext<DefaultNumericTypes>> {
        let mut context = HashMapContext::<DefaultNumericTypes>::new();
        for name in &self.names {
            let v = value_of(name).filter(|v| v.is_finite())?;
            let _ = context.set_value(name.clone(), Evaluated::Float(v));
        }
        let unary = |f: fn(f64) -> f64| {
            evalexpr::Function::<DefaultNumericTypes>::new(move |a: &Evaluated| Ok(Evaluated::Float(f(a.as_number()?))))
        };
        let _ = context.set_function("abs".into(), unary(f64::abs));
        let _ = context.set_function("sqrt".into(), unary(f64::sqrt));
        Some(context)
    }

    /// The expression as written.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The output fields it names (`energy` for `energy.ci95`).
    pub fn fields(&self) -> Vec<&str> {
        let mut fields: Vec<&str> =
            self.names.iter().filter_map(|n| n.rsplit_once('.').map(|(field, _)| field)).collect();
        fields.dedup();
        fields
    }

    /// Whether the condition holds for `point`. A field the point has no value of yet, a
    /// statistic that is not a number yet (the interval of one value) or an expression that
    /// is not true all read as "not yet".
    pub fn holds(&self, point: &PointStats) -> bool {
        let value_of = |name: &str| {
            if name == "runs" {
                Some(point.runs as f64)
            } else {
                name.rsplit_once('.').and_then(|(field, stat)| point.fields.get(field)?.get(stat))
            }
        };
        let Some(context) = self.context(value_of) else { return false };
        matches!(self.tree.eval_boolean_with_context(&context), Ok(true))
    }
}

/// Adaptive runs as `operation.toml` records them: `runs = { min, max, until }`.
#[derive(Debug, Clone)]
pub struct AdaptiveRuns {
    /// Runs every point gets.
    pub min: u32,
    /// Runs no point goes beyond.
    pub max: u32,
    /// When a point has run enough.
    pub until: Until,
}

impl AdaptiveRuns {
    /// Checks `min <= max`, `min >= 1` and parses `until`.
    pub fn new(min: u32, max: u32, until: &str) -> Result<AdaptiveRuns> {
        if min == 0 || min > max {
            return Err(Error::BadRuns { min, max });
        }
        Ok(AdaptiveRuns { min, max, until: Until::parse(until)? })
    }

    /// `runs = { min, max, until }` as a spec records it.
    pub fn describe(&self) -> Value {
        Value::Map(
            [
                ("min".to_owned(), Value::Int(i64::from(self.min))),
                ("max".to_owned(), Value::Int(i64::from(self.max))),
                ("until".to_owned(), Value::Str(self.until.text().to_owned())),
            ]
            .into_iter()
            .collect(),
        )
    }

    /// Reads `runs = { min, max, until }` from a spec (`None` when `runs` is a number).
    pub(crate) fn from_spec(spec: &Params) -> Result<Option<AdaptiveRuns>> {
        let Some(Value::Map(runs)) = spec.get("runs") else { return Ok(None) };
        let number = |key: &str| runs.get(key).and_then(Value::as_u64).map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        let until = runs.get("until").and_then(Value::as_str).unwrap_or("");
        let (Some(min), Some(max)) = (number("min"), number("max")) else {
            return Err(Error::BadUntil {
                until: until.to_owned(),
                reason: "`runs` must be a whole number or a table { min = N, max = M, until = \"...\" }".into(),
            });
        };
        AdaptiveRuns::new(min, max, until).map(Some)
    }

    /// Whether `point` needs no more runs: it has `max`, or at least `min` and the
    /// condition holds.
    pub fn done(&self, point: &PointStats) -> bool {
        point.runs >= u64::from(self.max) || (point.runs >= u64::from(self.min) && self.until.holds(point))
    }
}

/// The statistics of each parameter point, gathered from the latest record of each id in
/// id order (as consolidation streams them), for `summary.csv`. Memory grows with the
/// number of points, not of records; when no point has more than one run it gathers
/// nothing.
#[derive(Debug)]
pub struct SummaryPass {
    /// Whether some point has more than one run: there is a summary to write.
    repeated: bool,
    /// Each point, keyed by its parameters as JSON: its first id and its parameters.
    points: IndexMap<String, (u64, Params)>,
    /// The statistics of each point, in the order of `points`.
    stats: Vec<PointStats>,
    /// The key of the record being added (kept to spare an allocation per record).
    key: Vec<u8>,
}

impl SummaryPass {
    /// A pass for an operation where some point has more than one run when `repeated`
    /// (a record with `run > 0`), otherwise one that gathers nothing and removes a stale
    /// `summary.csv`.
    pub fn new(repeated: bool) -> SummaryPass {
        SummaryPass { repeated, points: IndexMap::new(), stats: Vec::new(), key: Vec::new() }
    }

    /// Adds the latest record of one id; records are added in id order.
    pub fn add(&mut self, record: &ProcessRecord) {
        if !self.repeated {
            return;
        }
        self.key.clear();
        if serde_json::to_writer(&mut self.key, &record.params).is_err() {
            self.key.clear();
        }
        let key = std::str::from_utf8(&self.key).unwrap_or_default();
        let index = match self.points.get_index_of(key) {
            Some(index) => {
                if let Some((first, _)) = self.points.get_index_mut(index).map(|(_, point)| point) {
                    *first = (*first).min(record.id);
                }
                index
            }
            None => {
                self.points.insert(key.to_owned(), (record.id, record.params.clone()));
                self.stats.push(PointStats::default());
                self.stats.len() - 1
            }
        };
        if let Some(stats) = self.stats.get_mut(index) {
            stats.add(record);
        }
    }

    /// Writes `summary.csv` in `dir` (beside, then renamed into place), or removes a stale
    /// one when no point has more than one run.
    pub fn write(self, dir: &Path) -> Result<()> {
        let path = dir.join(SUMMARY_CSV);
        if !self.repeated {
            let _ = fs::remove_file(&path);
            return Ok(());
        }
        let SummaryPass { points, stats, .. } = self;
        let spec = read_spec(dir);
        let adaptive = spec.as_ref().map(AdaptiveRuns::from_spec).transpose().ok().flatten().flatten();
        write_points(&path, dir, &points, &stats, adaptive.as_ref())
    }
}

/// Writes the rows of `points` (with their `stats`) to `path`, beside and renamed into place.
fn write_points(
    path: &Path,
    dir: &Path,
    points: &IndexMap<String, (u64, Params)>,
    stats: &[PointStats],
    adaptive: Option<&AdaptiveRuns>,
) -> Result<()> {
    let mut fields: indexmap::IndexSet<String> = indexmap::IndexSet::new();
    let mut param_names: indexmap::IndexSet<String> = indexmap::IndexSet::new();
    for ((_, params), point) in points.values().zip(stats) {
        param_names.extend(params.keys().cloned());
        fields.extend(point.fields.keys().cloned());
    }
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| points[i].0);

    let mut header: Vec<String> = param_names.iter().cloned().collect();
    header.extend(["runs", "finished", "crashed"].map(String::from));
    if adaptive.is_some() {
        header.push("stopped".into());
    }
    for field in &fields {
        header.extend(STATISTICS.iter().map(|s| format!("{field}.{s}")));
    }
    let tmp = dir.join(format!(".{SUMMARY_CSV}.tmp"));
    let write = || -> std::io::Result<()> {
        let mut csv = csv::Writer::from_writer(std::io::BufWriter::new(fs::File::create(&tmp)?));
        csv.write_record(&header)?;
        for i in order {
            let (params, point) = (&points[i].1, &stats[i]);
            let mut row: Vec<String> =
                param_names.iter().map(|n| params.get(n).map(Value::csv_cell).unwrap_or_default()).collect();
            row.extend([point.runs, point.finished, point.crashed].map(|n| n.to_string()));
            if let Some(adaptive) = &adaptive {
                let stopped = match (adaptive.done(point), adaptive.until.holds(point)) {
                    (true, true) => "converged",
                    (true, false) => "max",
                    (false, _) => "unfinished",
                };
                row.push(stopped.into());
            }
            for field in &fields {
                let stats = point.fields.get(field).copied().unwrap_or_default();
                row.extend(STATISTICS.iter().map(|s| match stats.get(s) {
                    Some(x) if x.is_finite() => x.to_string(),
                    _ => String::new(),
                }));
            }
            csv.write_record(&row)?;
        }
        csv.into_inner().map_err(|e| std::io::Error::other(e.to_string()))?.flush()
    };
    if let Err(e) = write() {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("write", &tmp, e));
    }
    fs::rename(&tmp, path).map_err(|e| Error::io("move into place", &tmp, e))
}

/// The spec of the run in `dir` (its `operation.toml`), if it reads.
fn read_spec(dir: &Path) -> Option<Params> {
    let text = fs::read_to_string(dir.join(files::OPERATION)).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    match Value::from_serialize(&table).ok()? {
        Value::Map(map) => Some(map),
        _ => None,
    }
}

/// A CSV file as text: its header and its rows.
pub type CsvText = (Vec<String>, Vec<Vec<String>>);

/// Reads `summary.csv` of `dir`: its header and rows, as text (`None` if there is none).
pub fn read_summary(dir: &Path) -> Result<Option<CsvText>> {
    let path = dir.join(SUMMARY_CSV);
    if !path.is_file() {
        return Ok(None);
    }
    let mut reader = csv::Reader::from_path(&path).map_err(|e| Error::io("read", &path, std::io::Error::other(e)))?;
    let header = reader
        .headers()
        .map_err(|e| Error::io("read", &path, std::io::Error::other(e)))?
        .iter()
        .map(String::from)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.map(|r| r.iter().map(String::from).collect()))
        .collect::<std::result::Result<Vec<Vec<String>>, _>>()
        .map_err(|e| Error::io("read", &path, std::io::Error::other(e)))?;
    Ok(Some((header, rows)))
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

    #[test]
    fn until_reads_statistics_and_refuses_unknown_names() {
        let until = Until::parse("energy.ci95 < 0.5 * abs(energy.mean) && runs >= 3").expect("parses");
        assert_eq!(until.fields(), vec!["energy"]);
        let mut point = PointStats::default();
        for (i, e) in [-10.0, -10.2, -9.9, -10.1].into_iter().enumerate() {
            point.add(&ProcessRecord {
                id: i as u64,
                run: i as u32,
                params: Params::new(),
                status: Status::Finished,
                output: Value::Map([("energy".to_owned(), Value::Float(e))].into_iter().collect()),
                reason: None,
                stderr_tail: None,
                attempts: 1,
                started_at: 0.0,
                duration_s: 0.0,
                location: crate::Location { host: "h".into(), worker: "w".into() },
            });
        }
        assert!(until.holds(&point));
        assert!(!Until::parse("energy.ci95 < 0.0001").expect("parses").holds(&point));
        assert!(!Until::parse("other.mean > 0").expect("parses").holds(&point));
        assert!(Until::parse("energy.width < 1").unwrap_err().to_string().contains("`energy.width`"));
        assert!(Until::parse("energy.mean <").is_err());
        assert!(Until::parse("log(energy.mean) < 1").unwrap_err().to_string().contains("`log`"));
        assert!(matches!(AdaptiveRuns::new(5, 2, "runs > 1"), Err(Error::BadRuns { min: 5, max: 2 })));
    }
}
