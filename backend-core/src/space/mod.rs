//! Parameter spaces, as in pySPACE: a cross product of `parameter_ranges` or an explicit
//! list of `parameter_settings`, filtered by `constraints`.
//!
//! Beyond those: linked parameters (lists that vary together inside the product),
//! sampled parameters (an axis of points drawn from distributions, see [`crate::sample`]),
//! constants (values every combination has) and unions of sub-spaces (conditional
//! parameters: the combinations of each block follow each other).
//!
//! A space is enumerated lazily: a sweep of a million combinations never holds a
//! million parameter tables at once.
//!
//! This module holds the space's types and its description for `operation.toml`; `build`
//! makes spaces (ranges, links, samples, settings, unions, constants), `constraint` filters
//! them (evaluated as Python would), and `enumerate` lists and counts their combinations.

mod build;
mod constraint;
mod enumerate;

use indexmap::IndexMap;

use self::constraint::Constraint;
use crate::sample::Samples;
use crate::{Error, Params, Value};

/// The combinations of parameters an operation is made of.
#[derive(Debug, Clone)]
pub struct ParameterSpace {
    source: Source,
    names: Vec<String>,
    constraints: Vec<Constraint>,
    /// Values every combination has, after its own parameters.
    constants: Params,
}

#[derive(Debug, Clone)]
enum Source {
    Ranges(IndexMap<String, Vec<Value>>),
    Settings(Vec<Params>),
    /// A cross product of axes, the last varying fastest: one or more ranges that vary
    /// together (a plain range is an axis of one), or a sample.
    Axes(Vec<Axis>),
    /// Sub-spaces whose combinations follow each other, each with its own constraints.
    Union(Vec<ParameterSpace>),
}

#[derive(Debug, Clone)]
enum Axis {
    /// Linked ranges of equal length: the i-th combination takes the i-th value of each.
    Linked(IndexMap<String, Vec<Value>>),
    Sampled(Samples),
}

impl Axis {
    fn len(&self) -> u64 {
        match self {
            Axis::Linked(ranges) => ranges.values().next().map_or(0, |v| v.len() as u64),
            Axis::Sampled(samples) => samples.len(),
        }
    }

    fn push_row(&self, row: u64, out: &mut Params) {
        match self {
            Axis::Linked(ranges) => {
                for (name, values) in ranges {
                    out.insert(name.clone(), values[row as usize].clone());
                }
            }
            Axis::Sampled(samples) => out.extend(samples.point(row)),
        }
    }
}

fn invalid(why: String) -> Error {
    Error::InvalidParameters { why }
}

/// How often a long loop over combinations looks at the clock and for a stop request.
const CHECK_EVERY: u64 = 256;

/// What [`ParameterSpace::count_within`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Count {
    /// Every combination was examined: this many satisfy the constraints.
    Exact(u64),
    /// Counting stopped (its time ran out, or a stop was requested) after `examined` of the
    /// `of` combinations, of which `admitted` satisfy the constraints.
    AtLeast {
        /// Combinations found to satisfy the constraints.
        admitted: u64,
        /// Combinations examined.
        examined: u64,
        /// Combinations there are before the constraints.
        of: u64,
    },
}

impl Count {
    /// The count, if it is exact.
    pub fn exact(self) -> Option<u64> {
        match self {
            Count::Exact(n) => Some(n),
            Count::AtLeast { .. } => None,
        }
    }

    /// The count, or the lower bound found so far.
    pub fn at_least(self) -> u64 {
        match self {
            Count::Exact(n) | Count::AtLeast { admitted: n, .. } => n,
        }
    }
}

impl ParameterSpace {
    /// The space as spec fields (`parameter_ranges` or `parameter_settings`, `constraints`),
    /// for `operation.toml`.
    pub fn describe(&self) -> Params {
        let mut spec = Params::new();
        match &self.source {
            Source::Ranges(ranges) => {
                let table = ranges.iter().map(|(k, v)| (k.clone(), Value::List(v.clone()))).collect();
                spec.insert("parameter_ranges".into(), Value::Map(table));
            }
            Source::Settings(settings) => {
                let list = settings.iter().map(|s| Value::Map(s.clone())).collect();
                spec.insert("parameter_settings".into(), Value::List(list));
            }
            Source::Axes(axes) => {
                let mut ranges = Params::new();
                let mut links = Vec::new();
                for axis in axes {
                    match axis {
                        Axis::Linked(group) => {
                            ranges.extend(group.iter().map(|(k, v)| (k.clone(), Value::List(v.clone()))));
                            if group.len() > 1 {
                                links.push(Value::List(group.keys().map(|k| Value::Str(k.clone())).collect()));
                            }
                        }
                        Axis::Sampled(samples) => {
                            spec.insert("parameter_samples".into(), Value::Map(samples.describe()));
                        }
                    }
                }
                if !ranges.is_empty() {
                    spec.insert("parameter_ranges".into(), Value::Map(ranges));
                }
                if !links.is_empty() {
                    spec.insert("link".into(), Value::List(links));
                }
            }
            Source::Union(blocks) => {
                let list = blocks.iter().map(|b| Value::Map(b.describe())).collect();
                spec.insert("sweep".into(), Value::List(list));
            }
        }
        if !self.constants.is_empty() {
            spec.insert("constants".into(), Value::Map(self.constants.clone()));
        }
        if !self.constraints.is_empty() {
            let list = self.constraints.iter().map(|c| Value::Str(c.text.clone())).collect();
            spec.insert("constraints".into(), Value::List(list));
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use crate::{Params, Value};

    /// Whole numbers as values.
    pub(super) fn ints(v: &[i64]) -> Vec<Value> {
        v.iter().map(|&i| Value::Int(i)).collect()
    }

    /// A table of these pairs.
    pub(super) fn map(pairs: &[(&str, Value)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }
}
