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

use std::time::{Duration, Instant};

use evalexpr::{ContextWithMutableVariables, DefaultNumericTypes, EvalexprError, HashMapContext, Node, Operator};
use indexmap::IndexMap;

use crate::sample::Samples;
use crate::{Error, Params, Result, Value};

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

    /// Keeps only the combinations for which `expression` is true.
    ///
    /// The expression uses parameter names as variables (`alpha < beta && gamma != 0`);
    /// pySPACE's `__alpha__` spelling is accepted too. As in Python 3, `/` is true division
    /// (`1 / 2` is 0.5; dividing by zero is an error) and `&&`, `||` stop at their left side
    /// when it decides (`x != 0 && 1 / x > 0`). A syntax error, a name that is not a
    /// parameter, or an expression that is not boolean on the first combination is an error
    /// here; one that fails on another combination is an error of [`ParameterSpace::count`].
    pub fn constrain(mut self, expression: &str) -> Result<Self> {
        if let Source::Union(blocks) = self.source {
            // Each block checks the names against its own parameters.
            let blocks = blocks.into_iter().map(|b| b.constrain(expression)).collect::<Result<Vec<_>>>()?;
            self.source = Source::Union(blocks);
            return Ok(self);
        }
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
        if let Some(first) = self.first_unconstrained() {
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

    /// The first combination of each block of a union (of the space itself otherwise),
    /// whether or not the constraints admit it, with the block's position: each block may
    /// have parameters of its own, and a process kind is checked against each.
    pub fn block_firsts(&self) -> Vec<(usize, Params)> {
        match &self.source {
            Source::Union(blocks) => blocks
                .iter()
                .enumerate()
                .filter_map(|(i, b)| {
                    let mut first = b.first_unconstrained()?;
                    first.extend(self.constants.iter().map(|(k, v)| (k.clone(), v.clone())));
                    Some((i, first))
                })
                .collect(),
            _ => self.first_unconstrained().map(|first| (0, first)).into_iter().collect(),
        }
    }

    /// The parameter names, in spec order.
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The constraint expressions, as given (those of every block, for a union).
    pub fn constraints(&self) -> impl Iterator<Item = &str> {
        let mut all: Vec<&str> = self.constraints.iter().map(|c| c.text.as_str()).collect();
        if let Source::Union(blocks) = &self.source {
            all.extend(blocks.iter().flat_map(|b| b.constraints.iter().map(|c| c.text.as_str())));
        }
        all.into_iter()
    }

    /// Whether any constraint filters the combinations.
    fn is_constrained(&self) -> bool {
        !self.constraints.is_empty()
            || matches!(&self.source, Source::Union(blocks) if blocks.iter().any(|b| !b.constraints.is_empty()))
    }

    /// Enumerates the combinations that satisfy every constraint, lazily.
    ///
    /// A constraint that fails to evaluate on some combination (e.g. divides by zero)
    /// excludes that combination and logs an error that names it; [`ParameterSpace::count`]
    /// (which [`Operation::sweep`](crate::Operation::sweep) calls) refuses such a space
    /// before anything runs.
    pub fn iter(&self) -> impl Iterator<Item = Params> + Send + '_ {
        self.unconstrained().filter(move |(index, params)| self.admits(*index, params)).map(|(_, params)| params)
    }

    /// Whether every constraint holds for `params`, combination `index`; one that fails to
    /// evaluate is logged.
    fn admits(&self, index: u64, params: &Params) -> bool {
        match self.holds_at(index, params) {
            Ok(holds) => holds,
            Err(e) => {
                tracing::error!(target: "taskfarm", "{e}; the combination is left out");
                false
            }
        }
    }

    /// Whether the constraints that apply to combination `index` hold for its `params`.
    fn holds_at(&self, index: u64, params: &Params) -> Result<bool> {
        for constraint in &self.constraints {
            if !constraint.holds(params)? {
                return Ok(false);
            }
        }
        if let Source::Union(blocks) = &self.source {
            if let Some((block, local)) = block_of(blocks, index) {
                return block.holds_at(local, params);
            }
        }
        Ok(true)
    }

    /// Enumerates the combinations lazily, owning the space (for `'static` sources). A
    /// stop request (Ctrl-C) ends it, also while it looks through a long stretch of
    /// combinations that the constraints leave out.
    pub fn into_iter_owned(self) -> impl Iterator<Item = Params> + Send + 'static {
        let mut index = 0u64;
        std::iter::from_fn(move || loop {
            let params = self.nth_unconstrained(index)?;
            index += 1;
            if self.admits(index - 1, &params) {
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
        if !self.is_constrained() {
            return Ok(Count::Exact(of));
        }
        let started = Instant::now();
        let mut admitted = 0u64;
        for (examined, params) in self.unconstrained() {
            if examined.is_multiple_of(CHECK_EVERY)
                && examined > 0
                && (started.elapsed() >= budget || crate::stop_requested())
            {
                return Ok(Count::AtLeast { admitted, examined, of });
            }
            admitted += u64::from(self.holds_at(examined, &params)?);
        }
        Ok(Count::Exact(admitted))
    }

    /// How many combinations satisfy the constraints (evaluates them on every combination
    /// once, however long that takes: see [`ParameterSpace::count_within`]). A constraint
    /// that cannot be evaluated on some combination is an error that names it.
    pub fn count(&self) -> Result<u64> {
        if !self.is_constrained() {
            return Ok(self.unconstrained_len());
        }
        let mut count = 0u64;
        for (index, params) in self.unconstrained() {
            count += u64::from(self.holds_at(index, &params)?);
        }
        Ok(count)
    }

    /// How many combinations there are before the constraints.
    pub fn unconstrained_len(&self) -> u64 {
        match &self.source {
            // `ranges`, `from_axes` and `union` have checked that the product or sum fits.
            Source::Ranges(ranges) => ranges.values().map(|v| v.len() as u64).fold(1, u64::saturating_mul),
            Source::Settings(settings) => settings.len() as u64,
            Source::Axes(axes) => axes.iter().map(Axis::len).fold(1, u64::saturating_mul),
            Source::Union(blocks) => blocks.iter().map(ParameterSpace::unconstrained_len).fold(0, u64::saturating_add),
        }
    }

    fn unconstrained(&self) -> impl Iterator<Item = (u64, Params)> + Send + '_ {
        (0..self.unconstrained_len()).filter_map(move |i| self.nth_unconstrained(i).map(|p| (i, p)))
    }

    fn nth_unconstrained(&self, mut index: u64) -> Option<Params> {
        if index >= self.unconstrained_len() {
            return None;
        }
        let mut params = match &self.source {
            Source::Settings(settings) => settings.get(index as usize).cloned()?,
            Source::Ranges(ranges) => {
                // Mixed-radix digits, last parameter fastest.
                let mut picked = vec![0usize; ranges.len()];
                for (slot, values) in picked.iter_mut().zip(ranges.values()).rev() {
                    let len = values.len() as u64;
                    *slot = (index % len) as usize;
                    index /= len;
                }
                ranges.iter().zip(picked).map(|((name, values), i)| (name.clone(), values[i].clone())).collect()
            }
            Source::Axes(axes) => {
                let mut rows = vec![0u64; axes.len()];
                for (slot, axis) in rows.iter_mut().zip(axes).rev() {
                    let len = axis.len();
                    *slot = index % len;
                    index /= len;
                }
                let mut params = Params::new();
                for (axis, row) in axes.iter().zip(rows) {
                    axis.push_row(row, &mut params);
                }
                params
            }
            Source::Union(blocks) => {
                let (block, local) = block_of(blocks, index)?;
                block.nth_unconstrained(local)?
            }
        };
        params.extend(self.constants.iter().map(|(k, v)| (k.clone(), v.clone())));
        Some(params)
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

/// The block of a union that holds combination `index`, and the index within it.
fn block_of(blocks: &[ParameterSpace], mut index: u64) -> Option<(&ParameterSpace, u64)> {
    for block in blocks {
        let len = block.unconstrained_len();
        if index < len {
            return Some((block, index));
        }
        index -= len;
    }
    None
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

    fn map(pairs: &[(&str, Value)]) -> Params {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
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
