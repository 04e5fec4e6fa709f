//! [`Until`], the condition that ends the runs of a point in an adaptive run, compiled
//! with evalexpr over the point's statistics, and [`AdaptiveRuns`], the `runs = { min, max,
//! until }` of a spec.

use evalexpr::{ContextWithMutableFunctions, ContextWithMutableVariables, DefaultNumericTypes, HashMapContext, Node};

use super::{PointStats, STATISTICS};
use crate::{Error, Params, Result, Value};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProcessRecord, Status};

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
