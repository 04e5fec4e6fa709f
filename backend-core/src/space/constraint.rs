//! Constraints: boolean expressions over parameter names that filter a space's
//! combinations, evaluated by evalexpr except where Python 3 differs (true division,
//! short-circuit `&&` and `||`, integers equal to floats).

use evalexpr::{ContextWithMutableVariables, DefaultNumericTypes, EvalexprError, HashMapContext, Node, Operator};

use super::{ParameterSpace, Source};
use crate::{Error, Params, Result, Value};

#[derive(Debug, Clone)]
pub(super) struct Constraint {
    pub(super) text: String,
    tree: Node<DefaultNumericTypes>,
    /// Whether the tree has no `/`, `&&` or `||`, which evalexpr alone evaluates as Python would.
    plain: bool,
}

type Evaluated = evalexpr::Value<DefaultNumericTypes>;

impl ParameterSpace {
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
    pub(super) fn holds(&self, params: &Params) -> Result<bool> {
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

#[cfg(test)]
mod tests {
    use super::super::tests::ints;
    use super::*;

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
}
