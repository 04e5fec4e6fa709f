//! Parameter spaces, as in pySPACE: a cross product of `parameter_ranges` or an explicit
//! list of `parameter_settings`, filtered by `constraints`.
//!
//! A space is enumerated lazily: a sweep of a million combinations never holds a
//! million parameter tables at once.

use std::time::{Duration, Instant};

use evalexpr::{ContextWithMutableVariables, DefaultNumericTypes, EvalexprError, HashMapContext, Node, Operator};
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
    /// Whether the tree has no `/`, `&&` or `||`, which evalexpr alone evaluates as Python would.
    plain: bool,
}

type Evaluated = evalexpr::Value<DefaultNumericTypes>;

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
        Ok(ParameterSpace { source: Source::Settings(settings), names, constraints: Vec::new() })
    }

    /// A space of exactly one empty setting: for operations that only repeat `runs` times.
    pub fn single() -> Self {
        ParameterSpace { source: Source::Settings(vec![Params::new()]), names: Vec::new(), constraints: Vec::new() }
    }

    /// Keeps only the combinations for which `expression` is true.
    ///
    /// The expression uses parameter names as variables (`alpha < beta && gamma != 0`);
    /// pySPACE's `__alpha__` spelling is accepted too. As in Python 3, `/` is true division
    /// (`1 / 2` is 0.5; dividing by zero is an error) and `&&`, `||` stop at their left side
    /// when it decides (`x != 0 && 1 / x > 0`). A syntax error, a name that is not a
    /// parameter, or an expression that is not boolean on the first combination is an error
    /// here; one that fails on another combination is an error of [`ParameterSpace::count`].
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
        let plain = !needs_own_evaluation(&tree);
        let constraint = Constraint { text: expression.to_owned(), tree, plain };
        // Evaluate once on the first combination so a type error shows up now.
        if let Some(first) = self.unconstrained().next() {
            constraint.holds(&first)?;
        }
        self.constraints.push(constraint);
        Ok(self)
    }

    /// The first combination, whether or not the constraints admit it: what every
    /// combination of a cross product looks like, found at once.
    pub fn first_unconstrained(&self) -> Option<Params> {
        self.nth_unconstrained(0)
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
    /// A constraint that fails to evaluate on some combination (e.g. divides by zero)
    /// excludes that combination and logs an error that names it; [`ParameterSpace::count`]
    /// (which [`Operation::sweep`](crate::Operation::sweep) calls) refuses such a space
    /// before anything runs.
    pub fn iter(&self) -> impl Iterator<Item = Params> + Send + '_ {
        self.unconstrained().filter(move |params| self.admits(params))
    }

    /// Whether every constraint holds for `params`; one that fails to evaluate is logged.
    fn admits(&self, params: &Params) -> bool {
        self.constraints.iter().all(|c| match c.holds(params) {
            Ok(holds) => holds,
            Err(e) => {
                tracing::error!(target: "taskfarm", "{e}; the combination is left out");
                false
            }
        })
    }

    /// Enumerates the combinations lazily, owning the space (for `'static` sources). A
    /// stop request (Ctrl-C) ends it, also while it looks through a long stretch of
    /// combinations that the constraints leave out.
    pub fn into_iter_owned(self) -> impl Iterator<Item = Params> + Send + 'static {
        let mut index = 0u64;
        std::iter::from_fn(move || loop {
            let params = self.nth_unconstrained(index)?;
            index += 1;
            if self.admits(&params) {
                return Some(params);
            }
            if index.is_multiple_of(CHECK_EVERY) && crate::stop_requested() {
                return None;
            }
        })
    }

    /// How many combinations satisfy the constraints, counted for at most `budget` (and
    /// until a stop is requested): the constraints are evaluated on the combinations in
    /// order, so a space of 10^20 combinations gives a lower bound at once instead of a
    /// count never. A constraint that cannot be evaluated on a combination examined is an
    /// error that names it.
    pub fn count_within(&self, budget: Duration) -> Result<Count> {
        let of = self.unconstrained_len();
        if self.constraints.is_empty() {
            return Ok(Count::Exact(of));
        }
        let started = Instant::now();
        let mut admitted = 0u64;
        for (examined, params) in (0u64..).zip(self.unconstrained()) {
            if examined.is_multiple_of(CHECK_EVERY)
                && examined > 0
                && (started.elapsed() >= budget || crate::stop_requested())
            {
                return Ok(Count::AtLeast { admitted, examined, of });
            }
            let mut holds = true;
            for constraint in &self.constraints {
                if !constraint.holds(&params)? {
                    holds = false;
                    break;
                }
            }
            admitted += u64::from(holds);
        }
        Ok(Count::Exact(admitted))
    }

    /// How many combinations satisfy the constraints (evaluates them on every combination
    /// once, however long that takes: see [`ParameterSpace::count_within`]). A constraint
    /// that cannot be evaluated on some combination is an error that names it.
    pub fn count(&self) -> Result<u64> {
        if self.constraints.is_empty() {
            return Ok(self.unconstrained_len());
        }
        let mut count = 0u64;
        for params in self.unconstrained() {
            let mut admitted = true;
            for constraint in &self.constraints {
                if !constraint.holds(&params)? {
                    admitted = false;
                    break;
                }
            }
            count += u64::from(admitted);
        }
        Ok(count)
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

/// Whether `node` holds a `/`, `&&`, `||`, `==` or `!=`, which [`evaluate`] evaluates itself.
fn needs_own_evaluation(node: &Node<DefaultNumericTypes>) -> bool {
    matches!(node.operator(), Operator::Div | Operator::And | Operator::Or | Operator::Eq | Operator::Neq)
        || node.children().iter().any(needs_own_evaluation)
}

/// Evaluates `node` as evalexpr does, except that, as in Python 3, `/` is true division (an
/// error for a zero divisor), `&&` and `||` do not evaluate their right side when the left
/// decides, and `==`, `!=` compare an integer with a float by value. evalexpr divides
/// integers as integers (`1 / 2` is 0), evaluates both sides of `&&` (so
/// `x != 0 && 1 / x > 0` would fail on `x = 0`), and finds `2.0 == 2` false.
fn evaluate(
    node: &Node<DefaultNumericTypes>,
    context: &HashMapContext<DefaultNumericTypes>,
) -> evalexpr::EvalexprResult<Evaluated> {
    let children = node.children();
    match node.operator() {
        Operator::And | Operator::Or if children.len() == 2 => {
            let stop_at = matches!(node.operator(), Operator::Or);
            let left = evaluate(&children[0], context)?.as_boolean()?;
            if left == stop_at {
                return Ok(Evaluated::Boolean(left));
            }
            Ok(Evaluated::Boolean(evaluate(&children[1], context)?.as_boolean()?))
        }
        Operator::Div if children.len() == 2 => {
            let dividend = evaluate(&children[0], context)?.as_number()?;
            let divisor = evaluate(&children[1], context)?.as_number()?;
            if divisor == 0.0 {
                return Err(EvalexprError::CustomMessage(format!("division by zero ({dividend} / {divisor})")));
            }
            Ok(Evaluated::Float(dividend / divisor))
        }
        Operator::Eq | Operator::Neq if children.len() == 2 => {
            let left = evaluate(&children[0], context)?;
            let right = evaluate(&children[1], context)?;
            let equal = match (&left, &right) {
                (Evaluated::Int(_), Evaluated::Float(_)) | (Evaluated::Float(_), Evaluated::Int(_)) => {
                    left.as_number()? == right.as_number()?
                }
                _ => left == right,
            };
            Ok(Evaluated::Boolean(equal == matches!(node.operator(), Operator::Eq)))
        }
        _ if !needs_own_evaluation(node) => node.eval_with_context(context),
        _ => {
            // Evaluate the children here, then apply this node's operator to their values
            // through evalexpr (as constants in place of the children).
            let mut shallow = node.clone();
            for (slot, child) in shallow.children_mut().iter_mut().zip(children) {
                let value = evaluate(child, context)?;
                *slot.operator_mut() = Operator::Const { value };
                slot.children_mut().clear();
            }
            shallow.eval_with_context(context)
        }
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
        let value = if self.plain { self.tree.eval_with_context(&context) } else { evaluate(&self.tree, &context) };
        value.and_then(|v| v.as_boolean()).map_err(|e| match e {
            EvalexprError::WrongOperatorArgumentAmount { .. } => {
                Error::ConstraintSyntax { constraint: self.text.clone(), reason: e.to_string() }
            }
            EvalexprError::ExpectedBoolean { .. } => {
                Error::ConstraintNotBoolean { constraint: self.text.clone(), reason: e.to_string() }
            }
            _ => Error::ConstraintFailed {
                constraint: self.text.clone(),
                combination: params.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", "),
                reason: e.to_string(),
            },
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
    fn counting_within_a_budget_gives_a_lower_bound_or_the_count() {
        let big = ParameterSpace::ranges((0..8).map(|p| (format!("p{p}"), (0..10).collect::<Vec<i64>>())))
            .and_then(|s| s.constrain("p7 < 5"))
            .expect("a space");
        match big.count_within(Duration::ZERO).expect("a count") {
            Count::AtLeast { admitted, examined, of } => {
                assert_eq!((examined, of), (CHECK_EVERY, 100_000_000));
                assert_eq!(admitted, 130, "p7 < 5 for 5 of every 10, and for the first 5 of the last 6");
            }
            exact => panic!("10^8 combinations were not counted at once: {exact:?}"),
        }
        let small =
            ParameterSpace::ranges([("x", ints(&[1, 2, 3]))]).and_then(|s| s.constrain("x > 1")).expect("a space");
        assert_eq!(small.count_within(Duration::from_secs(60)).expect("a count"), Count::Exact(2));
        // An evaluation error on a combination examined is still an error.
        let failing =
            ParameterSpace::ranges([("x", ints(&[1, 0, 2]))]).and_then(|s| s.constrain("1 / x > 0")).expect("a space");
        assert!(matches!(failing.count_within(Duration::from_secs(60)), Err(Error::ConstraintFailed { .. })));
        // A sweep of the big space starts without its length.
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Noop;
        impl crate::Process for Noop {
            type Output = ();
            fn run(&self, _: &crate::ProcessContext<'_>) -> std::result::Result<(), crate::ProcessError> {
                Ok(())
            }
        }
        let op = crate::Operation::sweep("big", big, 1, |_, _| Noop).expect("an operation");
        assert_eq!(op.len(), None);
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
        assert_eq!(space.count().unwrap(), 2);
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
        assert_eq!(ParameterSpace::ranges(ranges).unwrap().count().unwrap(), 1 << 60);
    }

    #[test]
    fn division_is_true_division_and_failures_name_the_combination() {
        let space = |values: &[i64]| ParameterSpace::ranges([("x", ints(values))]).unwrap();
        // Integer division would make 1 / 2 zero and exclude x = 2.
        let kept: Vec<_> = space(&[1, 2, 4]).constrain("1 / x > 0.3").unwrap().iter().map(|p| p["x"].clone()).collect();
        assert_eq!(kept, ints(&[1, 2]));
        assert_eq!(space(&[1, 2, 3]).constrain("x / 2 == 1.5").unwrap().count().unwrap(), 1);
        // A division by zero on a later combination is an error naming it, not an exclusion.
        let zero = space(&[1, 0, 2]).constrain("1 / x > 0").unwrap();
        let err = zero.count().unwrap_err();
        assert!(matches!(err, Error::ConstraintFailed { .. }), "{err}");
        let err = err.to_string();
        assert!(err.starts_with("the constraint `1 / x > 0` cannot be evaluated for x = 0: "), "{err}");
        assert!(err.contains("division by zero"), "{err}");
        // ... and on the first combination already at `constrain`.
        assert!(space(&[0, 1]).constrain("1 / x > 0").is_err());
        // `&&` and `||` stop when their left side decides, as in Python.
        let guarded = space(&[1, 0, 2]).constrain("x != 0 && 1 / x > 0").unwrap();
        assert_eq!(guarded.count().unwrap(), 2);
        let guarded = space(&[1, 0, 2]).constrain("x == 0 || 4 / x == 2").unwrap();
        assert_eq!(guarded.iter().map(|p| p["x"].clone()).collect::<Vec<_>>(), ints(&[0, 2]));
        // An integer equals the float of the same value.
        assert_eq!(space(&[2]).constrain("x == 2.0 && 2.0 == x && !(x != 2.0)").unwrap().count().unwrap(), 1);
        // Division inside other operators and functions.
        let nested = space(&[1, 2, 3]).constrain("min(x / 2, 1) < 1 && !(x / 3 > 0.9)").unwrap();
        assert_eq!(nested.count().unwrap(), 1);
    }

    #[test]
    fn empty_spaces_are_errors() {
        assert!(ParameterSpace::ranges([("a", Vec::<Value>::new())]).is_err());
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
            proptest::prop_assert_eq!(space.count().unwrap(), (a * b * c) as u64);
            let borrowed: Vec<_> = space.iter().collect();
            let owned: Vec<_> = space.clone().into_iter_owned().collect();
            proptest::prop_assert_eq!(borrowed, owned);
        }
    }
}
