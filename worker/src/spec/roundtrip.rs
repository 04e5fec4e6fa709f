//! A property test of the spec as run: every spec that validates is written to
//! `operation.toml` so that loading that file again gives the same processes.

use super::tests::{jobs_of, parse};
use super::{Format, Spec, RESERVED_PARAMETERS};
use crate::registry::Registry;
use taskfarm::{Params, Value};

/// Values as a spec may hold them: no null (refused at validation).
fn spec_value() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        proptest::num::f64::NORMAL.prop_map(Value::Float),
        Just(Value::Float(0.0)),
        Just(Value::Float(-0.0)),
        Just(Value::Float(f64::NAN)),
        Just(Value::Float(f64::INFINITY)),
        Just(Value::Float(f64::NEG_INFINITY)),
        (-1000i32..1000).prop_map(|i| Value::Float(f64::from(i))),
        "\\PC{0,8}".prop_map(Value::Str),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::List),
            proptest::collection::vec(("\\PC{0,4}", inner), 0..3).prop_map(|kv| Value::Map(kv.into_iter().collect())),
        ]
    })
}

fn parameter_name() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    "[a-z][a-z0-9_]{0,5}".prop_filter("not a reserved name", |n| !RESERVED_PARAMETERS.contains(&n.as_str()))
}

/// A spec document: `parameter_ranges` (linked or not), `parameter_settings`,
/// `parameter_samples` or `sweep` blocks, `runs`, and maybe constants.
fn spec_document() -> impl proptest::strategy::Strategy<Value = Params> {
    use proptest::prelude::*;
    let ranges = proptest::collection::vec((parameter_name(), proptest::collection::vec(spec_value(), 1..4)), 1..4)
        .prop_map(|ranges| {
            let table: Params = ranges.into_iter().map(|(k, v)| (k, Value::List(v))).collect();
            ("parameter_ranges", Value::Map(table))
        });
    let settings = proptest::collection::vec(proptest::collection::vec((parameter_name(), spec_value()), 0..3), 1..4)
        .prop_map(|settings| {
            let list = settings.into_iter().map(|s| Value::Map(s.into_iter().collect())).collect();
            ("parameter_settings", Value::List(list))
        });
    // Two linked parameters of equal length, crossed with a third.
    let linked =
        (proptest::collection::vec((spec_value(), spec_value()), 1..4), proptest::collection::vec(spec_value(), 1..3))
            .prop_map(|(pairs, other)| {
                let (a, b): (Vec<Value>, Vec<Value>) = pairs.into_iter().unzip();
                let table: Params = [
                    ("la".to_owned(), Value::List(a)),
                    ("o".to_owned(), Value::List(other)),
                    ("lb".to_owned(), Value::List(b)),
                ]
                .into_iter()
                .collect();
                ("parameter_ranges", Value::Map(table))
            });
    // Blocks of a union, each with a constant of its own.
    let union = proptest::collection::vec(
        (parameter_name(), proptest::collection::vec(spec_value(), 1..3), spec_value()),
        1..3,
    )
    .prop_map(|blocks| {
        let list = blocks
            .into_iter()
            .map(|(name, values, constant)| {
                let mut block = Params::new();
                block
                    .insert("parameter_ranges".into(), Value::Map([(name, Value::List(values))].into_iter().collect()));
                block.insert("constants".into(), Value::Map([("k_block".to_owned(), constant)].into_iter().collect()));
                Value::Map(block)
            })
            .collect();
        ("sweep", Value::List(list))
    });
    let samples = (1i64..5, 0i64..1000, proptest::bool::ANY).prop_map(|(n, seed, lhs)| {
        let table: Params = [
            ("method".to_owned(), Value::from(if lhs { "latin_hypercube" } else { "random" })),
            ("samples".to_owned(), Value::Int(n)),
            ("seed".to_owned(), Value::Int(seed)),
            ("x".to_owned(), Value::from("uniform(-1, 2.5)")),
            ("c".to_owned(), Value::from("choice([1, \"a\", 2.5])")),
        ]
        .into_iter()
        .collect();
        ("parameter_samples", Value::Map(table))
    });
    let constants = proptest::option::of(proptest::collection::vec(("k_[a-z]{1,3}", spec_value()), 1..3));
    (prop_oneof![ranges, settings, linked, union, samples], 1u32..3, constants).prop_map(
        |((key, space), runs, constants)| {
            let mut doc = Params::new();
            doc.insert("name".into(), Value::from("roundtrip"));
            doc.insert("kind".into(), Value::from("command"));
            doc.insert("command".into(), Value::List(vec![Value::from("true")]));
            doc.insert("runs".into(), Value::Int(i64::from(runs)));
            if key == "parameter_ranges" && matches!(&space, Value::Map(t) if t.contains_key("la")) {
                doc.insert("link".into(), Value::List(vec![Value::List(vec![Value::from("la"), Value::from("lb")])]));
            }
            doc.insert(key.into(), space);
            if let Some(constants) = constants {
                doc.insert("constants".into(), Value::Map(constants.into_iter().collect()));
            }
            doc
        },
    )
}

/// Equality of values as a run sees them: NaN equals NaN.
fn same_value(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
        (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b)),
        (Value::Map(x), Value::Map(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((ka, a), (kb, b))| ka == kb && same_value(a, b))
        }
        _ => a == b,
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(96))]
    /// Every spec that validates is recorded in operation.toml exactly: the run read back
    /// from it has the same processes under the same ids, from TOML and from YAML.
    #[test]
    fn operation_toml_regenerates_the_same_processes(doc in spec_document(), yaml in proptest::bool::ANY) {
        let (text, format) = if yaml {
            (serde_yaml_ng::to_string(&Value::Map(doc.clone())).unwrap(), Format::Yaml)
        } else {
            (toml::to_string(&Value::Map(doc.clone())).unwrap(), Format::Toml)
        };
        let spec = match parse(&text, format) {
            Ok(spec) => spec,
            // A space with a value that cannot be a parameter, e.g. a setting with no
            // key at all, is refused; refusal is not the concern here.
            Err(e) => return Err(proptest::test_runner::TestCaseError::reject(e.to_string())),
        };
        let dir = tempfile::tempdir().unwrap();
        let operation = spec.into_operation();
        taskfarm::results::write_operation_toml(dir.path(), operation.spec()).unwrap();
        let first: Vec<_> = operation.into_jobs().map(|job| (job.id, job.run, job.params)).collect();
        let again = Spec::load(&dir.path().join("operation.toml"), &Registry::with_builtins())
            .map_err(|e| proptest::test_runner::TestCaseError::fail(format!("{e}\n{text}")))?;
        let again = jobs_of(again);
        proptest::prop_assert_eq!(first.len(), again.len(), "{}", text);
        for (a, b) in first.iter().zip(&again) {
            proptest::prop_assert!(
                a.0 == b.0 && a.1 == b.1 && same_value(&Value::Map(a.2.clone()), &Value::Map(b.2.clone())),
                "{:?} became {:?}\nspec:\n{}", a, b, text
            );
        }
    }
}
