//! Sweeps without a spec file, as GNU parallel users write them:
//! `taskfarm-worker run --command 'sim --alpha {alpha} --seed {run}' --param alpha=0.1,0.2
//! --param n=1..100 --runs 3 [--constraint 'alpha < 1'] [--name NAME]`, and a spec read
//! from standard input (`-`). Both become a [`Spec`] as a file would, so the run's
//! operation.toml holds the spec and `--resume` works as for any run.

use std::io::Read;
use std::path::Path;

use taskfarm::{Params, Value};

use crate::spec::{Format, Spec};
use crate::{Registry, WorkerError};

/// The arguments of `run` that describe a sweep on the command line.
#[derive(Debug, Default, clap::Args)]
pub struct QuickArgs {
    /// Run this command (a `command` kind spec made from the arguments) instead of a spec
    /// file: `{name}` placeholders as in a spec, run with sh -c.
    #[arg(long, value_name = "TEMPLATE", conflicts_with = "spec")]
    pub command: Option<String>,
    /// A parameter of --command: `x=1,2,5` (a list), `n=1..100` (whole numbers, both ends
    /// included) or `t=0:1:0.25` (from:to:step, to included). Repeat for a cross product.
    #[arg(long, value_name = "NAME=VALUES", requires = "command")]
    pub param: Vec<String>,
    /// Repetitions of each combination with --command (default 1).
    #[arg(long, value_name = "N", requires = "command")]
    pub runs: Option<u32>,
    /// A constraint on the parameters of --command (repeatable), e.g. 'alpha < beta'.
    #[arg(long, value_name = "EXPR", requires = "command")]
    pub constraint: Vec<String>,
    /// The operation's name with --command (default `command`).
    #[arg(long, value_name = "NAME", requires = "command")]
    pub name: Option<String>,
}

/// What a spec on the command line is called in errors.
const COMMAND_LINE: &str = "the command line";

/// The spec of a run: from `--command` and its parameters, from standard input (`-`), or
/// from the file `spec`.
pub fn load(spec: Option<&Path>, quick: &QuickArgs, registry: &Registry) -> Result<Spec, WorkerError> {
    if let Some(command) = &quick.command {
        return from_arguments(command, quick, registry);
    }
    match spec {
        Some(path) if path == Path::new("-") => from_stdin(registry),
        Some(path) => Spec::load(path, registry),
        None => Err(WorkerError::Argument {
            argument: "run".into(),
            why: "give a spec file, `-` for a spec on standard input, or --command with --param".into(),
        }),
    }
}

/// A spec read from standard input: YAML if its first line is `---`, else TOML.
pub fn from_stdin(registry: &Registry) -> Result<Spec, WorkerError> {
    let path = Path::new("stdin");
    let mut text = String::new();
    let limit = crate::limits::MAX_SPEC_BYTES;
    std::io::stdin()
        .take(limit + 1)
        .read_to_string(&mut text)
        .map_err(|source| WorkerError::Read { path: path.to_owned(), source })?;
    if text.len() as u64 > limit {
        return Err(WorkerError::SpecTooLarge { path: path.to_owned(), limit });
    }
    let format = if text.trim_start().starts_with("---") { Format::Yaml } else { Format::Toml };
    Spec::parse(&text, format, path, registry)
}

fn from_arguments(command: &str, quick: &QuickArgs, registry: &Registry) -> Result<Spec, WorkerError> {
    let mut ranges = Params::new();
    for param in &quick.param {
        let (name, values) = parse_param(param)?;
        if ranges.insert(name.clone(), Value::List(values)).is_some() {
            return Err(WorkerError::Argument {
                argument: format!("--param {param}"),
                why: format!("`{name}` is given twice: give each parameter once"),
            });
        }
    }
    let mut doc = Params::new();
    doc.insert("name".into(), Value::from(quick.name.clone().unwrap_or_else(|| "command".into())));
    doc.insert("kind".into(), Value::from("command"));
    doc.insert("runs".into(), Value::Int(i64::from(quick.runs.unwrap_or(1))));
    if !quick.constraint.is_empty() {
        doc.insert(
            "constraints".into(),
            Value::List(quick.constraint.iter().map(|c| Value::from(c.as_str())).collect()),
        );
    }
    doc.insert("command".into(), Value::from(command));
    if !ranges.is_empty() {
        doc.insert("parameter_ranges".into(), Value::Map(ranges));
    }
    let text = toml::to_string(&Value::Map(doc)).map_err(|e| WorkerError::Argument {
        argument: "--param".into(),
        why: format!("the values cannot be written as a spec: {e}"),
    })?;
    // Lines of the spec made here mean nothing to the user: errors name keys only.
    Spec::parse(&text, Format::Toml, Path::new(COMMAND_LINE), registry).map_err(|e| match e {
        WorkerError::Spec { path, message, .. } => WorkerError::Spec { path, line: None, message },
        WorkerError::Space { path, source, .. } => WorkerError::Space { path, line: None, source },
        WorkerError::UnknownKind { path, kind, known, .. } => {
            WorkerError::UnknownKind { path, line: None, kind, known }
        }
        other => other,
    })
}

/// `name=1,2,5`, `name=1..100` or `name=0:1:0.25`.
fn parse_param(param: &str) -> Result<(String, Vec<Value>), WorkerError> {
    let bad = |why: String| WorkerError::Argument { argument: format!("--param {param}"), why };
    let (name, values) = param.split_once('=').ok_or_else(|| {
        bad("a parameter is NAME=VALUES, as alpha=0.1,0.2 or n=1..100 or t=0:1:0.25 (`=` is missing)".into())
    })?;
    let name = name.trim();
    if name.is_empty() || !name.chars().all(|c| c.is_alphanumeric() || c == '_') {
        return Err(bad(format!("`{name}` is not a parameter name: use letters, digits and _")));
    }
    if let Some((from, to)) = values.split_once("..") {
        let (Ok(from), Ok(to)) = (from.trim().parse::<i64>(), to.trim().parse::<i64>()) else {
            return Err(bad("a range a..b takes two whole numbers, as 1..100".into()));
        };
        if from > to {
            return Err(bad(format!("the range {from}..{to} is empty: write the smaller number first")));
        }
        if to - from >= 10_000_000 {
            return Err(bad("the range has more than 10^7 values: give the values in a spec file".into()));
        }
        return Ok((name.to_owned(), (from..=to).map(Value::Int).collect()));
    }
    let parts: Vec<&str> = values.split(':').collect();
    if parts.len() == 3 {
        let numbers: Result<Vec<f64>, _> = parts.iter().map(|p| p.trim().parse::<f64>()).collect();
        let Ok(n) = numbers else {
            return Err(bad("a range from:to:step takes three numbers, as 0:1:0.25".into()));
        };
        let (from, to, step) = (n[0], n[1], n[2]);
        if !(step > 0.0 && from <= to && from.is_finite() && to.is_finite()) {
            return Err(bad("in from:to:step, step must be more than 0 and from at most to".into()));
        }
        let count = ((to - from) / step + 1e-9).floor() as u64 + 1;
        if count > 10_000_000 {
            return Err(bad("the range has more than 10^7 values: give the values in a spec file".into()));
        }
        let all_whole = n.iter().all(|x| x.fract() == 0.0 && x.abs() < 1e15);
        let values = (0..count)
            .map(|i| {
                let x = from + i as f64 * step;
                // Rounded to 12 significant digits: 0.1 * 3 is 0.3, not 0.30000000000000004.
                let x: f64 = format!("{x:.12e}").parse().unwrap_or(x);
                if all_whole {
                    Value::Int(x as i64)
                } else {
                    Value::Float(x)
                }
            })
            .collect();
        return Ok((name.to_owned(), values));
    }
    let values: Vec<Value> = values.split(',').map(|v| scalar(v.trim())).collect();
    if values.iter().any(|v| v.as_str() == Some("")) {
        return Err(bad("a value is empty: write the values as a,b,c".into()));
    }
    Ok((name.to_owned(), values))
}

/// A value of the command line: a whole number, a number, or text.
fn scalar(text: &str) -> Value {
    if let Ok(i) = text.parse::<i64>() {
        return Value::Int(i);
    }
    match text.parse::<f64>() {
        Ok(x) if x.is_finite() => Value::Float(x),
        _ => Value::from(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(param: &str) -> Vec<Value> {
        parse_param(param).expect("parses").1
    }

    #[test]
    fn parameters_parse_as_lists_and_ranges() {
        assert_eq!(values("x=1..3"), [Value::Int(1), Value::Int(2), Value::Int(3)]);
        assert_eq!(values("x=0.1,a,2"), [Value::Float(0.1), Value::from("a"), Value::Int(2)]);
        assert_eq!(values("t=0:1:0.25").len(), 5);
        assert_eq!(values("t=0:0.3:0.1")[3], Value::Float(0.3));
        assert_eq!(values("t=0:10:5"), [Value::Int(0), Value::Int(5), Value::Int(10)]);
        assert!(parse_param("x").unwrap_err().to_string().contains("`=` is missing"));
        assert!(parse_param("x=5..1").is_err());
        assert!(parse_param("x=0:1:0").is_err());
        assert!(parse_param("a b=1").is_err());
    }
}
