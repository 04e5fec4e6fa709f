//! `Value` and `Params`: the plain data that parameters and outputs are made of.
//!
//! A `Value` is written naturally in human-readable formats (TOML, YAML, JSON:
//! `alpha = 0.5`) and as a tagged enum in compact binary formats such as postcard,
//! which cannot ask the data what type comes next. Both directions round-trip.
//!
//! **Exactly, in JSON too.** Whole numbers above `i64::MAX` are [`Value::UInt`], written as
//! the same digits. JSON has no NaN or infinity, so in the human-readable form (the journal,
//! which is JSON) a non-finite float is the one-entry table `{"$float": "NaN"}` (or
//! `"Infinity"`, `"-Infinity"`), read back as that float. So that no table is mistaken for
//! one, a one-entry table whose key is `$float` with one or more `$` in front is written with
//! one `$` more and read back with one fewer. The consolidated `results.jsonl` is for other
//! tools: there ([`serde_json::Value::from`]) a non-finite float is the string `"NaN"`,
//! `"Infinity"` or `"-Infinity"`, as Python's `json` module spells them.
//!
//! This module holds the types, their accessors and conversions; `encoding` is how a
//! `Value` is serialized and read back (natural or tagged), and `params` is [`ParamsExt`],
//! typed access to parameters by name.

mod encoding;
mod params;

use std::fmt;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

pub use params::ParamsExt;

/// The parameters one process was made from, in the order the spec names them.
pub type Params = IndexMap<String, Value>;

/// A parameter or output value.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// No value (an output field that is absent, or JSON `null`).
    #[default]
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A whole number.
    Int(i64),
    /// A whole number above `i64::MAX` (smaller ones are always `Int`).
    UInt(u64),
    /// A floating-point number.
    Float(f64),
    /// Text.
    Str(String),
    /// A list of values.
    List(Vec<Value>),
    /// Named values, in order.
    Map(IndexMap<String, Value>),
}

impl Value {
    /// Converts any serializable value (e.g. a process's output) into a `Value`. It passes
    /// through JSON and is read back by `Value`'s own `Deserialize`, so a `Value` (with its
    /// non-finite floats in their JSON form) comes back exactly.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Value, String> {
        serde_json::to_value(value).and_then(Value::deserialize).map_err(|e| e.to_string())
    }

    /// Converts this value into any deserializable type (e.g. a typed output).
    pub fn to_typed<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(serde_json::Value::from(self.clone())).map_err(|e| e.to_string())
    }

    /// The name of this value's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Int(_) | Value::UInt(_) => "integer",
            Value::Float(_) => "float",
            Value::Str(_) => "string",
            Value::List(_) => "list",
            Value::Map(_) => "table",
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::UInt(u) => Some(*u as f64),
            Value::Float(f) => Some(*f),
            _ => None,
        }
    }

    /// The value as an integer, if it is a whole number.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as an unsigned integer, if it is a whole number from 0 to `u64::MAX`.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Value::Int(i) => u64::try_from(*i).ok(),
            Value::UInt(u) => Some(*u),
            _ => None,
        }
    }

    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The first whole number above `i64::MAX` this value is or holds, at any depth: outputs
    /// may hold one, but a spec's values may not (TOML, the language of operation.toml,
    /// cannot write it).
    pub fn huge_int(&self) -> Option<u64> {
        match self {
            Value::UInt(n) => Some(*n),
            Value::List(items) => items.iter().find_map(Value::huge_int),
            Value::Map(map) => map.values().find_map(Value::huge_int),
            _ => None,
        }
    }

    /// Whether this value is null or holds a null in a list or table at any depth.
    pub fn holds_null(&self) -> bool {
        match self {
            Value::Null => true,
            Value::List(items) => items.iter().any(Value::holds_null),
            Value::Map(map) => map.values().any(Value::holds_null),
            _ => false,
        }
    }

    /// Flattens nested tables into dotted keys (`a.b`; an empty key is written `_`),
    /// appending to `out`. A value that is not a table, or an empty table, is stored under
    /// `prefix` itself. Names may repeat (`{"a.b": 1, "a": {"b": 2}}`): the caller decides.
    pub fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, Value)>) {
        match self {
            Value::Map(map) if !map.is_empty() => {
                for (key, value) in map {
                    let key = if key.is_empty() { "_" } else { key.as_str() };
                    let name = if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") };
                    value.flatten_into(&name, out);
                }
            }
            other => out.push((prefix.to_owned(), other.clone())),
        }
    }
}

impl Value {
    /// The value as a cell of `results.csv`: as [`Display`](fmt::Display) writes it, but a
    /// whole float keeps its point (`2.0`, not `2`), so a column's type does not depend on
    /// the values that happen to be in it.
    pub fn csv_cell(&self) -> String {
        match self {
            Value::Float(x) if x.is_finite() => format!("{x:?}"),
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Value {
    /// Formats the value as it is substituted into a command line or a CSV cell.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::UInt(u) => write!(f, "{u}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
            Value::List(_) | Value::Map(_) => {
                let json = serde_json::Value::from(self.clone());
                write!(f, "{json}")
            }
        }
    }
}

macro_rules! from_scalar {
    ($($t:ty => $variant:ident as $as:ty),* $(,)?) => {
        $(impl From<$t> for Value {
            fn from(v: $t) -> Value { Value::$variant(v as $as) }
        })*
    };
}
from_scalar!(
    i64 => Int as i64, i32 => Int as i64, i16 => Int as i64, i8 => Int as i64,
    u32 => Int as i64, u16 => Int as i64, u8 => Int as i64,
    f64 => Float as f64, f32 => Float as f64,
);

impl From<usize> for Value {
    fn from(v: usize) -> Value {
        Value::from(v as u64)
    }
}

impl From<isize> for Value {
    fn from(v: isize) -> Value {
        Value::Int(v as i64)
    }
}

/// A list, e.g. `Value::from(vec![0.1, 0.2])`.
impl<T: Into<Value>> From<Vec<T>> for Value {
    fn from(v: Vec<T>) -> Value {
        Value::List(v.into_iter().map(Into::into).collect())
    }
}

impl From<u64> for Value {
    fn from(v: u64) -> Value {
        i64::try_from(v).map(Value::Int).unwrap_or(Value::UInt(v))
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Value {
        Value::Bool(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Value {
        Value::Str(v)
    }
}

impl From<serde_json::Value> for Value {
    fn from(v: serde_json::Value) -> Value {
        match v {
            serde_json::Value::Null => Value::Null,
            serde_json::Value::Bool(b) => Value::Bool(b),
            serde_json::Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                (Some(i), _) => Value::Int(i),
                (None, Some(u)) => Value::UInt(u),
                (None, None) => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(s),
            serde_json::Value::Array(items) => Value::List(items.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(map) => Value::Map(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn csv_cells_keep_a_float_a_float() {
        let cells: Vec<String> =
            [Value::Float(2.0), Value::Float(0.1), Value::Float(1e300), Value::Float(f64::NAN), Value::Int(2)]
                .iter()
                .map(Value::csv_cell)
                .collect();
        assert_eq!(cells, ["2.0", "0.1", "1e300", "NaN", "2"]);
    }

    /// Values of every kind, with keys that look like the tag of a non-finite float.
    pub(super) fn value_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::Float),
            prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY)].prop_map(Value::Float),
            "[a-z0-9 ]{0,8}".prop_map(Value::Str),
            prop_oneof![Just("NaN"), Just("Infinity"), Just("$float")].prop_map(Value::from),
        ];
        // Keys that look like the tag of a non-finite float, and plain ones.
        let key = prop_oneof!["[a-z]{1,4}", "[$]{0,3}float", Just(String::new())];
        leaf.prop_recursive(3, 16, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
                prop::collection::vec((key.clone(), inner), 0..4).prop_map(|kv| Value::Map(kv.into_iter().collect())),
            ]
        })
    }

    /// Equality that holds a NaN equal to a NaN and tells 0.0 from -0.0: the same value.
    pub(super) fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
            (Value::Map(x), Value::Map(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|((ka, a), (kb, b))| ka == kb && same(a, b))
            }
            _ => a == b,
        }
    }

    #[test]
    fn flattens_nested_tables() {
        let v = Value::from_serialize(&serde_json::json!({"a": 1, "b": {"c": 2}})).unwrap();
        let mut out = Vec::new();
        v.flatten_into("", &mut out);
        assert_eq!(out, vec![("a".into(), Value::Int(1)), ("b.c".into(), Value::Int(2))]);
    }

    proptest! {
        #[test]
        fn from_serialize_keeps_a_value(v in value_strategy()) {
            let back = Value::from_serialize(&v).unwrap();
            prop_assert!(same(&back, &v), "{:?} came back as {:?}", v, back);
        }
    }
}
