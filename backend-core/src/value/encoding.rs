//! How a [`Value`] is serialized and read back: naturally in human-readable formats (with
//! non-finite floats as a tagged one-entry table in JSON), as a tagged enum in compact ones,
//! and as plain JSON for other tools.

use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};

use super::Value;

/// The JSON name of a non-finite float, as Python's `json` module writes it.
fn non_finite_name(f: f64) -> &'static str {
    if f.is_nan() {
        "NaN"
    } else if f > 0.0 {
        "Infinity"
    } else {
        "-Infinity"
    }
}

/// The float a [`non_finite_name`] stands for.
fn non_finite_from_name(name: &str) -> Option<f64> {
    match name {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

/// The key of the one-entry table that stands for a non-finite float in human-readable forms.
const FLOAT_TAG: &str = "$float";

/// Whether `key` is [`FLOAT_TAG`] with one or more `$` in front: the key a one-entry table
/// gets one `$` more for when written (and one fewer when read back).
fn is_escaped_tag(key: &str) -> bool {
    key.strip_suffix(FLOAT_TAG).is_some_and(|dollars| !dollars.is_empty() && dollars.bytes().all(|b| b == b'$'))
}

/// Converts to plain JSON for other tools (`results.jsonl`): a non-finite float becomes the
/// string `"NaN"`, `"Infinity"` or `"-Infinity"`.
impl From<Value> for serde_json::Value {
    fn from(v: Value) -> serde_json::Value {
        match v {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(b),
            Value::Int(i) => serde_json::Value::from(i),
            Value::UInt(u) => serde_json::Value::from(u),
            Value::Float(f) => match serde_json::Number::from_f64(f) {
                Some(n) => serde_json::Value::Number(n),
                None => serde_json::Value::String(non_finite_name(f).to_owned()),
            },
            Value::Str(s) => serde_json::Value::String(s),
            Value::List(items) => serde_json::Value::Array(items.into_iter().map(Into::into).collect()),
            Value::Map(map) => serde_json::Value::Object(map.into_iter().map(|(k, v)| (k, v.into())).collect()),
        }
    }
}

/// The compact form: a tagged enum whose variant order is the wire format.
#[derive(Serialize)]
enum TaggedRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    List(&'a [Value]),
    Map(&'a IndexMap<String, Value>),
    UInt(u64),
}

#[derive(Deserialize)]
enum Tagged {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(IndexMap<String, Value>),
    UInt(u64),
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if !serializer.is_human_readable() {
            let wire = match self {
                Value::Null => TaggedRef::Null,
                Value::Bool(b) => TaggedRef::Bool(*b),
                Value::Int(i) => TaggedRef::Int(*i),
                Value::UInt(u) => TaggedRef::UInt(*u),
                Value::Float(f) => TaggedRef::Float(*f),
                Value::Str(s) => TaggedRef::Str(s),
                Value::List(items) => TaggedRef::List(items),
                Value::Map(map) => TaggedRef::Map(map),
            };
            return wire.serialize(serializer);
        }
        match self {
            Value::Null => serializer.serialize_unit(),
            Value::Bool(b) => serializer.serialize_bool(*b),
            Value::Int(i) => serializer.serialize_i64(*i),
            Value::UInt(u) => serializer.serialize_u64(*u),
            Value::Float(f) if f.is_finite() => serializer.serialize_f64(*f),
            Value::Float(f) => {
                let mut out = serializer.serialize_map(Some(1))?;
                out.serialize_entry(FLOAT_TAG, non_finite_name(*f))?;
                out.end()
            }
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
                match map.first() {
                    Some((k, v)) if map.len() == 1 && (k == FLOAT_TAG || is_escaped_tag(k)) => {
                        out.serialize_entry(&format!("${k}"), v)?;
                    }
                    _ => {
                        for (k, v) in map {
                            out.serialize_entry(k, v)?;
                        }
                    }
                }
                out.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Value, D::Error> {
        if !deserializer.is_human_readable() {
            return Ok(match Tagged::deserialize(deserializer)? {
                Tagged::Null => Value::Null,
                Tagged::Bool(b) => Value::Bool(b),
                Tagged::Int(i) => Value::Int(i),
                Tagged::UInt(u) => Value::from(u),
                Tagged::Float(f) => Value::Float(f),
                Tagged::Str(s) => Value::Str(s),
                Tagged::List(items) => Value::List(items),
                Tagged::Map(map) => Value::Map(map),
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
        Ok(Value::from(v))
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
        if map.len() == 1 {
            if let Some((k, v)) = map.pop() {
                if let (true, Some(f)) = (k == FLOAT_TAG, v.as_str().and_then(non_finite_from_name)) {
                    return Ok(Value::Float(f));
                }
                let k = if is_escaped_tag(&k) { k[1..].to_owned() } else { k };
                map.insert(k, v);
            }
        }
        Ok(Value::Map(map))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{same, value_strategy};
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn postcard_round_trips(v in value_strategy()) {
            let bytes = postcard::to_allocvec(&v).unwrap();
            let back: Value = postcard::from_bytes(&bytes).unwrap();
            prop_assert!(same(&back, &v), "{:?} came back as {:?}", v, back);
        }

        /// Every value — NaN, infinities, integers above i64::MAX, tables that look like the
        /// tag of a float — comes back from JSON as it was.
        #[test]
        fn json_round_trips_exactly(v in value_strategy()) {
            let text = serde_json::to_string(&v).unwrap();
            let back: Value = serde_json::from_str(&text).unwrap();
            prop_assert!(same(&back, &v), "{:?} came back from {} as {:?}", v, text, back);
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
    fn non_finite_floats_and_large_integers_in_json() {
        let v = Value::List(vec![Value::Float(f64::NAN), Value::Float(f64::NEG_INFINITY), Value::from(u64::MAX)]);
        let text = serde_json::to_string(&v).unwrap();
        assert_eq!(text, r#"[{"$float":"NaN"},{"$float":"-Infinity"},18446744073709551615]"#);
        assert_eq!(serde_json::Value::from(v).to_string(), r#"["NaN","-Infinity",18446744073709551615]"#);
        let tag_like = Value::Map([("$float".to_owned(), Value::from("NaN"))].into_iter().collect());
        assert_eq!(serde_json::to_string(&tag_like).unwrap(), r#"{"$$float":"NaN"}"#);
        assert_eq!(Value::from(7u64), Value::Int(7));
        assert_eq!(Value::from(u64::MAX).to_string(), "18446744073709551615");
        assert_eq!(Value::from(serde_json::json!(18446744073709551615u64)), Value::UInt(u64::MAX));
    }
}
