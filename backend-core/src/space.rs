//! Parameter spaces, as in pySPACE: a cross product of `parameter_ranges` or an explicit
//! list of `parameter_settings`, filtered by `constraints`.
//!
//! A space is enumerated lazily: a sweep of a million combinations never holds a
//! million parameter tables at once.

use evalexpr::{ContextWithMutableVariables, DefaultNumericTypes, HashMapContext, Node};
use indexmap::IndexMap;

use crate::{Error, Params, Result, Value};

/// The combinations of parameters an operation is made of.
#[derive(Debug, Clone)]
pub struct ParameterSpace {
    source: Source,
    names: Vec<String>,
    constraints: Vec<Constraint>,
}

#[derive(Debug, Clone)]
enum Source {
    Ranges(IndexMap<String, Vec<Value>>),
    Settings(Vec<Params>),
}

#[derive(Debug, Clone)]
struct Constraint {
    text: String,
    tree: Node<DefaultNumericTypes>,
}

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
    /// assert_eq!(space.count(), 6);
    /// ```
    pub fn ranges<K: Into<String>>(ranges: impl IntoIterator<Item = (K, Vec<Value>)>) -> Result<Self> {
        let ranges: IndexMap<String, Vec<Value>> = ranges.into_iter().map(|(k, v)| (k.into(), v)).collect();
        if ranges.is_empty() {
            return Err(Error::EmptyParameterSpace { why: "`parameter_ranges` names no parameter".into() });
        }
        if let Some((name, _)) = ranges.iter().find(|(_, values)| values.is_empty()) {
            return Err(Error::EmptyParameterSpace { why: format!("the range of parameter `{name}` has no values") });
        }
        if let Some((name, _)) = ranges.iter().find(|(_, values)| values.iter().any(Value::holds_null)) {
            return Err(Error::NullParameter { name: name.clone() });
        }
        let lengths = ranges.values().map(|values| values.len() as u64);
        if lengths.clone().try_fold(1u64, u64::checked_mul).is_none() {
            let product = lengths.map(|n| n.to_string()).collect::<Vec<_>>().join(" × ");
            return Err(Error::TooManyProcesses { what: format!("the ranges have {product} combinations") });
        }
        let names = ranges.keys().cloned().collect();
        Ok(ParameterSpace { source: Source::Ranges(ranges), names, constraints: Vec::new() })
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
            for key in setting.keys() {
                if !names.contains(key) {
                    names.push(key.clone());
                }
            }
        }
        Ok(ParameterSpace { source: Source::Settings(settings), names, constraints: Vec::new() })
    }

    /// A space of exactly one empty setting: for operations that only repeat `runs` times.
    pub fn single() -> Self {
        ParameterSpace { source: Source::Settings(vec![Params::new()]), names: Vec::new(), constraints: Vec::new() }
    }

    /// Keeps only the combinations for which `expression` is true.
    ///
    /// The expression uses parameter names as variables (`alpha < beta && gamma != 0`);
    /// pySPACE's `__alpha__` spelling is accepted too. A syntax error, a name that is not a
    /// parameter, or an expression that is not boolean is an error here, before anything runs.
    pub fn constrain(mut self, expression: &str) -> Result<Self> {
        let text = self.strip_pyspace_underscores(expression);
        let tree = evalexpr::build_operator_tree::<DefaultNumericTypes>(&text)
            .map_err(|e| Error::ConstraintSyntax { constraint: expression.to_owned(), reason: e.to_string() })?;
        for name in tree.iter_variable_identifiers() {
            if !self.names.iter().any(|n| n == name) {
                return Err(Error::ConstraintUnknownParameter {
                    constraint: expression.to_owned(),
                    name: name.to_owned(),
                    known: self.names.join(", "),
                });
            }
        }
        let constraint = Constraint { text: expression.to_owned(), tree };
        // Evaluate once on the first combination so a type error shows up now.
        if let Some(first) = self.unconstrained().next() {
            constraint.holds(&first)?;
        }
        self.constraints.push(constraint);
        Ok(self)
    }

    /// The parameter names, in spec order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The constraint expressions, as given.
    pub fn constraints(&self) -> impl Iterator<Item = &str> {
        self.constraints.iter().map(|c| c.text.as_str())
    }

    /// Enumerates the combinations that satisfy every constraint, lazily.
    ///
    /// A constraint that fails to evaluate on some combination (e.g. compares a string with
    /// a number) excludes that combination; [`ParameterSpace::constrain`] has already checked
    /// the first one.
    pub fn iter(&self) -> impl Iterator<Item = Params> + Send + '_ {
        self.unconstrained().filter(move |params| self.constraints.iter().all(|c| c.holds(params).unwrap_or(false)))
    }

    /// Enumerates the combinations lazily, owning the space (for `'static` sources).
    pub fn into_iter_owned(self) -> impl Iterator<Item = Params> + Send + 'static {
        let mut index = 0u64;
        std::iter::from_fn(move || loop {
            let params = self.nth_unconstrained(index)?;
            index += 1;
            if self.constraints.iter().all(|c| c.holds(&params).unwrap_or(false)) {
                return Some(params);
            }
        })
    }

    /// How many combinations satisfy the constraints (enumerates them once).
    pub fn count(&self) -> u64 {
        if self.constraints.is_empty() {
            return self.unconstrained_len();
        }
        self.iter().count() as u64
    }

    fn unconstrained_len(&self) -> u64 {
        match &self.source {
            // `ranges` has checked that the product fits.
            Source::Ranges(ranges) => ranges.values().map(|v| v.len() as u64).fold(1, u64::saturating_mul),
            Source::Settings(settings) => settings.len() as u64,
        }
    }

    fn unconstrained(&self) -> impl Iterator<Item = Params> + Send + '_ {
        (0..self.unconstrained_len()).filter_map(move |i| self.nth_unconstrained(i))
    }

    fn nth_unconstrained(&self, mut index: u64) -> Option<Params> {
        if index >= self.unconstrained_len() {
            return None;
        }
        match &self.source {
            Source::Settings(settings) => settings.get(index as usize).cloned(),
            Source::Ranges(ranges) => {
                // Mixed-radix digits, last parameter fastest.
                let mut picked = vec![0usize; ranges.len()];
                for (slot, values) in picked.iter_mut().zip(ranges.values()).rev() {
                    let len = values.len() as u64;
                    *slot = (index % len) as usize;
                    index /= len;
                }
                Some(ranges.iter().zip(picked).map(|((name, values), i)| (name.clone(), values[i].clone())).collect())
            }
        }
    }

    fn strip_pyspace_underscores(&self, expression: &str) -> String {
        let mut text = expression.to_owned();
        for name in &self.names {
            text = text.replace(&format!("__{name}__"), name);
        }
        text
    }
}

impl Constraint {
    fn holds(&self, params: &Params) -> Result<bool> {
        let mut context = HashMapContext::<DefaultNumericTypes>::new();
        for (name, value) in params {
            let v = match value {
                Value::Int(i) => evalexpr::Value::Int(*i),
                Value::Float(f) => evalexpr::Value::Float(*f),
                Value::Bool(b) => evalexpr::Value::Boolean(*b),
                Value::Str(s) => evalexpr::Value::String(s.clone()),
                other => evalexpr::Value::String(other.to_string()),
            };
            // Setting a fresh variable cannot fail.
            let _ = context.set_value(name.clone(), v);
        }
        self.tree.eval_boolean_with_context(&context).map_err(|e| match e {
            evalexpr::EvalexprError::WrongOperatorArgumentAmount { .. } => {
                Error::ConstraintSyntax { constraint: self.text.clone(), reason: e.to_string() }
            }
            _ => Error::ConstraintNotBoolean { constraint: self.text.clone(), reason: e.to_string() },
        })
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
    use super::*;

    fn ints(v: &[i64]) -> Vec<Value> {
        v.iter().map(|&i| Value::Int(i)).collect()
    }

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
    fn constraints_filter() {
        let space = ParameterSpace::ranges([("alpha", ints(&[1, 2, 3])), ("beta", ints(&[1, 2, 3]))])
            .unwrap()
            .constrain("alpha < beta")
            .unwrap()
            .constrain("__beta__ != 2")
            .unwrap();
        assert_eq!(space.count(), 2);
        assert_eq!(space.clone().into_iter_owned().count(), 2);
    }

    #[test]
    fn constraint_errors_are_clear() {
        let space = ParameterSpace::ranges([("alpha", ints(&[1]))]).unwrap();
        let err = space.clone().constrain("alpha <").unwrap_err().to_string();
        assert!(err.contains("does not parse"), "{err}");
        let err = space.clone().constrain("alpha < gamma").unwrap_err().to_string();
        assert!(err.contains("`gamma`") && err.contains("alpha"), "{err}");
        let err = space.constrain("alpha + 1").unwrap_err().to_string();
        assert!(err.contains("true or false"), "{err}");
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
        assert_eq!(ParameterSpace::ranges(ranges).unwrap().count(), 1 << 60);
    }

    #[test]
    fn empty_spaces_are_errors() {
        assert!(ParameterSpace::ranges([("a", vec![])]).is_err());
        assert!(ParameterSpace::settings(vec![]).is_err());
        let none: [(&str, Vec<Value>); 0] = [];
        assert!(ParameterSpace::ranges(none).is_err());
    }

    proptest::proptest! {
        #[test]
        fn count_is_product_and_owned_agrees(a in 1usize..5, b in 1usize..5, c in 1usize..4) {
            let space = ParameterSpace::ranges([
                ("a", ints(&(0..a as i64).collect::<Vec<_>>())),
                ("b", ints(&(0..b as i64).collect::<Vec<_>>())),
                ("c", ints(&(0..c as i64).collect::<Vec<_>>())),
            ]).unwrap();
            proptest::prop_assert_eq!(space.count(), (a * b * c) as u64);
            let borrowed: Vec<_> = space.iter().collect();
            let owned: Vec<_> = space.clone().into_iter_owned().collect();
            proptest::prop_assert_eq!(borrowed, owned);
        }
    }
}
