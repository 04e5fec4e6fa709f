//! `Value` and `Params`: the plain data that parameters and outputs are made of.
//!
//! A `Value` is written naturally in human-readable formats (TOML, YAML, JSON:
//! `alpha = 0.5`) and as a tagged enum in compact binary formats such as postcard,
//! which cannot ask the data what type comes next. Both directions round-trip.

use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

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
    /// Converts any serializable value (e.g. a process's output) into a `Value`.
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Value, String> {
        serde_json::to_value(value).map(Value::from).map_err(|e| e.to_string())
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
            Value::Int(_) => "integer",
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

    /// The value as text, if it is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
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

    /// Flattens nested tables into dotted keys (`a.b`), appending to `out`.
    /// A value that is not a table is stored under `prefix` itself.
    pub fn flatten_into(&self, prefix: &str, out: &mut Vec<(String, Value)>) {
        match self {
            Value::Map(map) if !map.is_empty() => {
                for (key, value) in map {
                    let name = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
                    value.flatten_into(&name, out);
                }
            }
            other => out.push((prefix.to_owned(), other.clone())),
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
from_scalar!(i64 => Int as i64, i32 => Int as i64, u32 => Int as i64, f64 => Float as f64, f32 => Float as f64);

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
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            },
            serde_json::Value::String(s) => Value::Str(s),
            serde_json::Value::Array(items) => Value::List(items.into_iter().map(Value::from).collect()),
            serde_json::Value::Object(map) => Value::Map(map.into_iter().map(|(k, v)| (k, Value::from(v))).collect()),
        }
    }
}

impl From<Value> for serde_json::Value {
    fn from(v: Value) -> serde_json::Value {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(b),
            Value::Int(i) => serde_json::Value::from(i),
            Value::Float(f) => {
                serde_json::Number::from_f64(f).map(serde_json::Value::Number).unwrap_or(serde_json::Value::Null)
            }
            Value::Str(s) => serde_json::Value::String(s),
            Value::List(items) => serde_json::Value::Array(items.into_iter().map(Into::into).collect()),
            Value::Map(map) => serde_json::Value::Object(map.into_iter().map(|(k, v)| (k, v.into())).collect()),
        }
    }
}

/// The compact form: a tagged enum whose variant order is the wire format.
#[derive(Serialize)]
enum WireRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    List(&'a [Value]),
    Map(&'a IndexMap<String, Value>),
}

#[derive(Deserialize)]
enum Wire {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(IndexMap<String, Value>),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            let wire = match self {
                Value::Null => WireRef::Null,
                Value::Bool(b) => WireRef::Bool(*b),
                Value::Int(i) => WireRef::Int(*i),
                Value::Float(f) => WireRef::Float(*f),
                Value::Str(s) => WireRef::Str(s),
                Value::List(items) => WireRef::List(items),
                Value::Map(map) => WireRef::Map(map),
            };
            return wire.serialize(serializer);
        }
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::Float(f) => serializer.serialize_f64(*f),
            Value::Str(s) => serializer.serialize_str(s),
            Value::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Value::Map(map) => {
                let mut out = serializer.serialize_map(Some(map.len()))?;
                for (k, v) in map {
                    out.serialize_entry(k, v)?;
                }
                out.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        if !deserializer.is_human_readable() {
            return Ok(match Wire::deserialize(deserializer)? {
                Wire::Null => Value::Null,
                Wire::Bool(b) => Value::Bool(b),
                Wire::Int(i) => Value::Int(i),
                Wire::Float(f) => Value::Float(f),
                Wire::Str(s) => Value::Str(s),
                Wire::List(items) => Value::List(items),
                Wire::Map(map) => Value::Map(map),
            });
        }
        deserializer.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a boolean, number, string, list or table")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        // A float would hold it only approximately: the value run would not be the one written.
        i64::try_from(v).map(Value::Int).map_err(|_| {
            E::custom(format!(
                "the whole number {v} is too large: whole numbers go from {} to {} (write it as a string, or as a \
                 float such as 1.8e19 if an approximation will do)",
                i64::MIN,
                i64::MAX
            ))
        })
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = IndexMap::new();
        while let Some(k) = access.next_key::<String>()? {
            // A format that admits a key twice (YAML, JSON) would keep only the last value.
            if map.contains_key(&k) {
                return Err(de::Error::custom(format!("duplicate key `{k}`: a key may appear once in a table")));
            }
            let v = access.next_value::<Value>()?;
            map.insert(k, v);
        }
        Ok(Value::Map(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn value_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (-1e12f64..1e12).prop_map(Value::Float),
            "[a-z0-9 ]{0,8}".prop_map(Value::Str),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::List),
                prop::collection::vec(("[a-z]{1,4}", inner), 0..4).prop_map(|kv| Value::Map(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn postcard_round_trips(v in value_strategy()) {
            let bytes = postcard::to_allocvec(&v).unwrap();
            let back: Value = postcard::from_bytes(&bytes).unwrap();
            prop_assert_eq!(back, v);
        }

        #[test]
        fn json_round_trips(v in value_strategy()) {
            let text = serde_json::to_string(&v).unwrap();
            let back: Value = serde_json::from_str(&text).unwrap();
            // JSON cannot tell 1.0 from 1: compare through JSON.
            prop_assert_eq!(serde_json::Value::from(back), serde_json::Value::from(v));
        }
    }

    #[test]
    fn toml_reads_naturally() {
        let v: Value = toml::from_str("a = 1\nb = 0.5\nc = 'x'\nd = [true, false]").unwrap();
        let Value::Map(map) = v else { panic!("not a map") };
        assert_eq!(map["a"], Value::Int(1));
        assert_eq!(map["b"], Value::Float(0.5));
        assert_eq!(map["c"], Value::Str("x".into()));
        assert_eq!(map["d"], Value::List(vec![Value::Bool(true), Value::Bool(false)]));
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let err = serde_json::from_str::<Value>(r#"{"a": {"k": 1, "k": 2}}"#).unwrap_err().to_string();
        assert!(err.starts_with("duplicate key `k`"), "{err}");
    }

    #[test]
    fn flattens_nested_tables() {
        let v = Value::from_serialize(&serde_json::json!({"a": 1, "b": {"c": 2}})).unwrap();
        let mut out = Vec::new();
        v.flatten_into("", &mut out);
        assert_eq!(out, vec![("a".into(), Value::Int(1)), ("b.c".into(), Value::Int(2))]);
    }
}
