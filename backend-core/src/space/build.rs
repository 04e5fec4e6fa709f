//! Making parameter spaces: cross products of ranges, linked ranges, sampled axes,
//! explicit settings, unions of blocks, and constants.

use indexmap::IndexMap;

use super::{invalid, Axis, ParameterSpace, Source};
use crate::sample::Samples;
use crate::{Error, Params, Result, Value};

impl ParameterSpace {
    /// The cross product of the given ranges: every combination of one value per parameter,
    /// the last parameter varying fastest.
    ///
    /// ```
    /// use backend_core::{ParameterSpace, Value};
    /// let space = ParameterSpace::ranges([
    ///     ("alpha", vec![Value::from(1), Value::from(2)]),
    ///     ("beta", vec![Value::from(10), Value::from(20), Value::from(30)]),
    /// ]).unwrap();
    /// assert_eq!(space.count().unwrap(), 6);
    /// // Values of one type need no `Value::from`:
    /// let space = ParameterSpace::ranges([("alpha", vec![0.1, 0.2]), ("beta", vec![1.0, 2.0])]).unwrap();
    /// assert_eq!(space.count().unwrap(), 4);
    /// ```
    pub fn ranges<K: Into<String>, V: Into<Value>>(ranges: impl IntoIterator<Item = (K, Vec<V>)>) -> Result<Self> {
        let ranges: IndexMap<String, Vec<Value>> =
            ranges.into_iter().map(|(k, v)| (k.into(), v.into_iter().map(Into::into).collect())).collect();
        if ranges.is_empty() {
            return Err(Error::EmptyParameterSpace { why: "`parameter_ranges` names no parameter".into() });
        }
        if let Some((name, _)) = ranges.iter().find(|(_, values)| values.is_empty()) {
            return Err(Error::EmptyParameterSpace { why: format!("the range of parameter `{name}` has no values") });
        }
        if let Some((name, _)) = ranges.iter().find(|(_, values)| values.iter().any(Value::holds_null)) {
            return Err(Error::NullParameter { name: name.clone() });
        }
        for (name, values) in &ranges {
            if let Some(value) = values.iter().find_map(Value::huge_int) {
                return Err(Error::HugeIntParameter { name: name.clone(), value });
            }
        }
        let lengths = ranges.values().map(|values| values.len() as u64);
        if lengths.clone().try_fold(1u64, u64::checked_mul).is_none() {
            let product = lengths.map(|n| n.to_string()).collect::<Vec<_>>().join(" × ");
            return Err(Error::TooManyProcesses { what: format!("the ranges have {product} combinations") });
        }
        let names = ranges.keys().cloned().collect();
        Ok(ParameterSpace { source: Source::Ranges(ranges), names, constraints: Vec::new(), constants: Params::new() })
    }

    /// The cross product of `ranges` in which the parameters of each group of `links` vary
    /// together: `alpha = [1, 2, 3]` linked with `beta = [10, 20, 30]` gives 3 pairs, crossed
    /// with the other parameters. A group is one axis of the product, placed where its first
    /// member stands in `ranges`. Without links this is [`ParameterSpace::ranges`].
    pub fn linked(ranges: IndexMap<String, Vec<Value>>, links: &[Vec<String>]) -> Result<Self> {
        let space = Self::ranges(ranges)?;
        if links.is_empty() {
            return Ok(space);
        }
        let Source::Ranges(mut ranges) = space.source else { unreachable!("ranges() makes ranges") };
        let mut group_of: IndexMap<&str, usize> = IndexMap::new();
        for (g, group) in links.iter().enumerate() {
            if group.len() < 2 {
                return Err(invalid(format!(
                    "the link [{}] names {} parameter: a link names two or more parameters of `parameter_ranges`",
                    group.join(", "),
                    group.len()
                )));
            }
            for name in group {
                if !ranges.contains_key(name) {
                    return Err(invalid(format!(
                        "the link [{}] names `{name}`, which is not in `parameter_ranges` (it has {})",
                        group.join(", "),
                        ranges.keys().cloned().collect::<Vec<_>>().join(", ")
                    )));
                }
                if group_of.insert(name, g).is_some() {
                    return Err(invalid(format!("`{name}` is in two links: a parameter may be linked once")));
                }
            }
            let lengths: Vec<usize> = group.iter().map(|n| ranges[n.as_str()].len()).collect();
            if lengths.iter().any(|&l| l != lengths[0]) {
                let described: Vec<String> =
                    group.iter().zip(&lengths).map(|(n, l)| format!("`{n}` has {l} values")).collect();
                return Err(invalid(format!(
                    "the linked parameters must have lists of the same length, but {}",
                    described.join(", ")
                )));
            }
        }
        let order: Vec<String> = ranges.keys().cloned().collect();
        let mut axes = Vec::new();
        for name in &order {
            let Some(values) = ranges.shift_remove(name) else { continue };
            let mut axis = IndexMap::new();
            axis.insert(name.clone(), values);
            if let Some(&g) = group_of.get(name.as_str()) {
                for other in links[g].iter().filter(|o| *o != name) {
                    if let Some(values) = ranges.shift_remove(other) {
                        axis.insert(other.clone(), values);
                    }
                }
            }
            axes.push(Axis::Linked(axis));
        }
        Self::from_axes(axes)
    }

    /// This space crossed with an axis of sampled points (the samples vary fastest). Only
    /// a cross product of ranges, or no parameters at all, can take samples.
    pub fn with_samples(self, samples: Samples) -> Result<Self> {
        if !self.constraints.is_empty() || !self.constants.is_empty() {
            return Err(invalid("samples are added to a space before its constraints and constants".into()));
        }
        let mut axes =
            match self.source {
                Source::Ranges(ranges) => {
                    ranges.into_iter().map(|(k, v)| Axis::Linked([(k, v)].into_iter().collect())).collect()
                }
                Source::Axes(axes) => axes,
                Source::Settings(settings) if settings.len() == 1 && settings[0].is_empty() => Vec::new(),
                Source::Settings(_) | Source::Union(_) => return Err(invalid(
                    "`parameter_samples` can be crossed with `parameter_ranges` only, not with `parameter_settings` \
                     or `sweep` blocks (give each block its own samples)"
                        .into(),
                )),
            };
        axes.push(Axis::Sampled(samples));
        Self::from_axes(axes)
    }

    fn from_axes(axes: Vec<Axis>) -> Result<Self> {
        let mut names: Vec<String> = Vec::new();
        for axis in &axes {
            let axis_names: Vec<String> = match axis {
                Axis::Linked(ranges) => ranges.keys().cloned().collect(),
                Axis::Sampled(samples) => samples.names().map(str::to_owned).collect(),
            };
            for name in axis_names {
                if names.contains(&name) {
                    return Err(invalid(format!("`{name}` is both a range and a sampled parameter: give it once")));
                }
                names.push(name);
            }
        }
        let lengths = axes.iter().map(Axis::len);
        if lengths.clone().try_fold(1u64, u64::checked_mul).is_none() {
            let product = lengths.map(|n| n.to_string()).collect::<Vec<_>>().join(" × ");
            return Err(Error::TooManyProcesses {
                what: format!("the ranges and samples have {product} combinations"),
            });
        }
        Ok(ParameterSpace { source: Source::Axes(axes), names, constraints: Vec::new(), constants: Params::new() })
    }

    /// The union of `blocks`: the combinations of the first block, then those of the second,
    /// and so on, each filtered by its own constraints. A parameter that a block lacks is
    /// absent from its combinations (an empty cell in results.csv).
    pub fn union(blocks: Vec<ParameterSpace>) -> Result<Self> {
        if blocks.is_empty() {
            return Err(Error::EmptyParameterSpace { why: "`sweep` has no block".into() });
        }
        if blocks.iter().any(|b| matches!(b.source, Source::Union(_))) {
            return Err(invalid("a `sweep` block cannot hold `sweep` blocks of its own".into()));
        }
        let lengths = blocks.iter().map(ParameterSpace::unconstrained_len);
        if lengths.clone().try_fold(0u64, u64::checked_add).is_none() {
            return Err(Error::TooManyProcesses { what: "the `sweep` blocks together".into() });
        }
        let mut names: Vec<String> = Vec::new();
        for name in blocks.iter().flat_map(|b| b.names.iter()) {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        Ok(ParameterSpace { source: Source::Union(blocks), names, constraints: Vec::new(), constants: Params::new() })
    }

    /// Adds `constants`: values every combination has, after its parameters (and usable in
    /// constraints). A constant may not share a name with a parameter.
    pub fn with_constants(mut self, constants: Params) -> Result<Self> {
        for (name, value) in &constants {
            if self.names.contains(name) {
                return Err(invalid(format!(
                    "`{name}` is both a parameter and a constant: give it once (a one-value range, or a constant)"
                )));
            }
            if value.holds_null() {
                return Err(Error::NullParameter { name: name.clone() });
            }
            if let Some(value) = value.huge_int() {
                return Err(Error::HugeIntParameter { name: name.clone(), value });
            }
            self.names.push(name.clone());
        }
        if let Source::Union(blocks) = self.source {
            // Each block gets them, so its own constraints may name them.
            let blocks = blocks.into_iter().map(|b| b.with_constants(constants.clone())).collect::<Result<Vec<_>>>()?;
            self.source = Source::Union(blocks);
            return Ok(self);
        }
        self.constants.extend(constants);
        Ok(self)
    }

    /// An explicit list of parameter settings, one process (per run) each.
    pub fn settings(settings: Vec<Params>) -> Result<Self> {
        if settings.is_empty() {
            return Err(Error::EmptyParameterSpace { why: "`parameter_settings` is an empty list".into() });
        }
        let mut names: Vec<String> = Vec::new();
        for setting in &settings {
            if let Some((name, _)) = setting.iter().find(|(_, value)| value.holds_null()) {
                return Err(Error::NullParameter { name: name.clone() });
            }
            for (name, value) in setting {
                if let Some(value) = value.huge_int() {
                    return Err(Error::HugeIntParameter { name: name.clone(), value });
                }
            }
            for key in setting.keys() {
                if !names.contains(key) {
                    names.push(key.clone());
                }
            }
        }
        Ok(ParameterSpace {
            source: Source::Settings(settings),
            names,
            constraints: Vec::new(),
            constants: Params::new(),
        })
    }

    /// A space of exactly one empty setting: for operations that only repeat `runs` times.
    pub fn single() -> Self {
        ParameterSpace {
            source: Source::Settings(vec![Params::new()]),
            names: Vec::new(),
            constraints: Vec::new(),
            constants: Params::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ints, map};
    use super::*;

    #[test]
    fn cross_product_last_fastest() {
        let space = ParameterSpace::ranges([("a", ints(&[1, 2])), ("b", ints(&[10, 20]))]).unwrap();
        let all: Vec<_> = space.iter().map(|p| (p["a"].clone(), p["b"].clone())).collect();
        assert_eq!(
            all,
            vec![
                (Value::Int(1), Value::Int(10)),
                (Value::Int(1), Value::Int(20)),
                (Value::Int(2), Value::Int(10)),
                (Value::Int(2), Value::Int(20)),
            ]
        );
    }

    #[test]
    fn null_values_are_refused() {
        // operation.toml is TOML, which has no null: a null would vanish from it and a
        // resumed run would enumerate other combinations under the same ids.
        let err = ParameterSpace::ranges([("x", vec![Value::Null, Value::from("a")])]).unwrap_err();
        assert!(matches!(&err, Error::NullParameter { name } if name == "x"), "{err}");
        assert!(err.to_string().contains("write \"\" for an empty value"), "{err}");
        let nested =
            Value::List(vec![Value::from(1), Value::Map([("k".to_owned(), Value::Null)].into_iter().collect())]);
        assert!(ParameterSpace::ranges([("y", vec![nested])]).is_err());
        let setting: Params = [("a".to_owned(), Value::from(1)), ("b".to_owned(), Value::Null)].into_iter().collect();
        let err = ParameterSpace::settings(vec![setting]).unwrap_err();
        assert!(matches!(&err, Error::NullParameter { name } if name == "b"), "{err}");
    }

    #[test]
    fn more_combinations_than_ids_are_refused() {
        // 2 × 2 × 79 × 167 × 6709 × 10223 × 12301 × 14087 is 4 modulo 2^64.
        let lengths = [2, 2, 79, 167, 6709, 10223, 12301, 14087];
        let ranges = lengths.iter().enumerate().map(|(i, &n)| (format!("p{i}"), ints(&(0..n).collect::<Vec<_>>())));
        let err = ParameterSpace::ranges(ranges).unwrap_err().to_string();
        assert!(err.starts_with("the operation has more processes than taskfarm can number"), "{err}");
        assert!(err.contains("2 × 2 × 79 × 167 × 6709 × 10223 × 12301 × 14087 combinations"), "{err}");
        // 16 parameters of 16 values: 2^64, which is 0 modulo 2^64.
        let ranges = (0..16).map(|i| (format!("p{i}"), ints(&(0..16).collect::<Vec<_>>())));
        assert!(matches!(ParameterSpace::ranges(ranges), Err(Error::TooManyProcesses { .. })));
        // 15 of them fit.
        let ranges = (0..15).map(|i| (format!("p{i}"), ints(&(0..16).collect::<Vec<_>>())));
        assert_eq!(ParameterSpace::ranges(ranges).unwrap().count().unwrap(), 1 << 60);
    }

    #[test]
    fn empty_spaces_are_errors() {
        assert!(ParameterSpace::ranges([("a", Vec::<Value>::new())]).is_err());
        assert!(ParameterSpace::settings(vec![]).is_err());
        let none: [(&str, Vec<Value>); 0] = [];
        assert!(ParameterSpace::ranges(none).is_err());
    }

    #[test]
    fn linked_parameters_vary_together_inside_the_product() {
        let ranges: IndexMap<String, Vec<Value>> =
            [("alpha", ints(&[1, 2, 3])), ("gamma", ints(&[0, 1])), ("beta", ints(&[10, 20, 30]))]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect();
        let space = ParameterSpace::linked(ranges.clone(), &[vec!["alpha".into(), "beta".into()]]).unwrap();
        assert_eq!(space.count().unwrap(), 6);
        let all: Vec<Params> = space.iter().collect();
        assert_eq!(all[0], map(&[("alpha", Value::Int(1)), ("beta", Value::Int(10)), ("gamma", Value::Int(0))]));
        assert_eq!(all[5], map(&[("alpha", Value::Int(3)), ("beta", Value::Int(30)), ("gamma", Value::Int(1))]));
        // Without links: the plain cross product, numbered as before.
        let plain = ParameterSpace::linked(ranges.clone(), &[]).unwrap();
        assert_eq!(
            plain.iter().collect::<Vec<_>>(),
            ParameterSpace::ranges(ranges.clone()).unwrap().iter().collect::<Vec<_>>()
        );
        let mut short = ranges;
        short.insert("beta".into(), ints(&[10, 20]));
        let err = ParameterSpace::linked(short, &[vec!["alpha".into(), "beta".into()]]).unwrap_err().to_string();
        assert!(err.contains("`alpha` has 3 values, `beta` has 2 values"), "{err}");
    }

    #[test]
    fn unions_concatenate_blocks_each_with_its_constraints_and_constants() {
        let cg = ParameterSpace::ranges([("tol", vec![1e-3, 1e-6])])
            .unwrap()
            .with_constants(map(&[("solver", Value::from("cg"))]))
            .unwrap()
            .constrain("tol < 0.01")
            .unwrap();
        let direct = ParameterSpace::single().with_constants(map(&[("solver", Value::from("direct"))])).unwrap();
        let space = ParameterSpace::union(vec![cg, direct])
            .unwrap()
            .with_constants(map(&[("steps", Value::Int(3000))]))
            .unwrap();
        assert_eq!(space.names(), ["tol", "solver", "steps"]);
        let all: Vec<Params> = space.iter().collect();
        assert_eq!(all.len(), 3);
        assert_eq!(
            all[1],
            map(&[("tol", Value::Float(1e-6)), ("solver", Value::from("cg")), ("steps", Value::Int(3000))])
        );
        assert_eq!(all[2], map(&[("solver", Value::from("direct")), ("steps", Value::Int(3000))]));
        // A constraint on the union applies to each block, which must know its names.
        let err = space.clone().constrain("tol > 0").unwrap_err().to_string();
        assert!(err.contains("`tol`, which is not a parameter"), "{err}");
        assert_eq!(space.clone().constrain("steps > 10").unwrap().count().unwrap(), 3);
        assert!(matches!(space.describe().get("sweep"), Some(Value::List(blocks)) if blocks.len() == 2));
    }

    #[test]
    fn samples_cross_with_ranges_and_constraints_reject_samples() {
        let samples = Samples::new("latin_hypercube", 10, 3, vec![("x".into(), "uniform(0, 1)".into())]).unwrap();
        let space = ParameterSpace::ranges([("k", ints(&[1, 2]))]).unwrap().with_samples(samples).unwrap();
        assert_eq!(space.count().unwrap(), 20);
        let constrained = space.clone().constrain("x < 0.5").unwrap();
        assert_eq!(constrained.count().unwrap(), 10, "one point in each tenth, crossed with 2 values of k");
        let first: Vec<Params> = space.iter().take(10).collect();
        let again: Vec<Params> = space.iter().take(10).collect();
        assert_eq!(first, again);
        let described = space.describe();
        assert!(described.contains_key("parameter_samples") && described.contains_key("parameter_ranges"));
        let settings = ParameterSpace::settings(vec![map(&[("a", Value::Int(1))])]).unwrap();
        let samples = Samples::new("random", 1, 0, vec![("x".into(), "uniform(0, 1)".into())]).unwrap();
        assert!(settings.with_samples(samples).is_err());
    }
}
