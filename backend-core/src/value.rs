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

/// Typed access to a process's parameters, by name: each getter says which parameter is
/// missing (and which there are) or what type it holds instead, so a misspelt name or a
/// wrong type is an error instead of a panic (`p["xx"]`) or a silent 0
/// (`as_f64().unwrap_or_default()`). The error is the core's [`Error`](crate::Error), so
/// `?` works in [`Operation::try_sweep`](crate::Operation::try_sweep)'s closure and, through
/// [`ProcessError`](crate::ProcessError), in [`Process::run`](crate::Process::run).
///
/// ```
/// use backend_core::{Params, ParamsExt, Value};
/// let p: Params = [("alpha".to_owned(), Value::from(0.5)), ("seed".to_owned(), Value::from(3))].into_iter().collect();
/// assert_eq!(p.f64("alpha").unwrap(), 0.5);
/// assert_eq!(p.u32("seed").unwrap(), 3);
/// assert_eq!(p.f64("seed").unwrap(), 3.0); // a whole number is a number too
/// assert!(p.f64("alhpa").unwrap_err().to_string().contains("there is no parameter `alhpa`"));
/// assert!(p.str("alpha").unwrap_err().to_string().contains("is the float 0.5, not a string"));
/// ```
pub trait ParamsExt {
    /// The value of the parameter `name`.
    fn value(&self, name: &str) -> crate::Result<&Value>;

    /// A number (an integer is read as a float).
    fn f64(&self, name: &str) -> crate::Result<f64> {
        let value = self.value(name)?;
        value.as_f64().ok_or_else(|| wrong_type(name, value, "a number"))
    }

    /// A whole number from `i64::MIN` to `i64::MAX`.
    fn i64(&self, name: &str) -> crate::Result<i64> {
        whole(name, self.value(name)?)
    }

    /// A whole number from 0 to `u64::MAX`.
    fn u64(&self, name: &str) -> crate::Result<u64> {
        whole(name, self.value(name)?)
    }

    /// A whole number that fits an `i32`.
    fn i32(&self, name: &str) -> crate::Result<i32> {
        whole(name, self.value(name)?)
    }

    /// A whole number that fits a `u32`.
    fn u32(&self, name: &str) -> crate::Result<u32> {
        whole(name, self.value(name)?)
    }

    /// A whole number that fits a `usize`.
    fn usize(&self, name: &str) -> crate::Result<usize> {
        whole(name, self.value(name)?)
    }

    /// A string.
    fn str(&self, name: &str) -> crate::Result<&str> {
        let value = self.value(name)?;
        value.as_str().ok_or_else(|| wrong_type(name, value, "a string"))
    }

    /// `true` or `false`.
    fn bool(&self, name: &str) -> crate::Result<bool> {
        match self.value(name)? {
            Value::Bool(b) => Ok(*b),
            other => Err(wrong_type(name, other, "true or false")),
        }
    }

    /// Any type serde can read from the value (a list, a table, a struct of your own).
    fn typed<T: serde::de::DeserializeOwned>(&self, name: &str) -> crate::Result<T> {
        let value = self.value(name)?;
        value.to_typed().map_err(|reason| crate::Error::ParameterType {
            name: name.to_owned(),
            found: describe(value),
            expected: format!("what `{}` reads ({reason})", std::any::type_name::<T>()),
        })
    }
}

impl ParamsExt for Params {
    fn value(&self, name: &str) -> crate::Result<&Value> {
        self.get(name).ok_or_else(|| crate::Error::ParameterMissing {
            name: name.to_owned(),
            known: if self.is_empty() {
                "none".to_owned()
            } else {
                self.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            },
        })
    }
}

/// `the integer 3`, `the string "a"`: a value as an error message names it (long ones cut).
fn describe(value: &Value) -> String {
    let text = match value {
        Value::Str(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    let text =
        if text.chars().count() > 40 { format!("{}…", text.chars().take(40).collect::<String>()) } else { text };
    format!("the {} {text}", value.type_name())
}

fn wrong_type(name: &str, value: &Value, expected: &str) -> crate::Error {
    crate::Error::ParameterType { name: name.to_owned(), found: describe(value), expected: expected.to_owned() }
}

/// A whole number of type `T`, or an error that names `T`'s range.
fn whole<T>(name: &str, value: &Value) -> crate::Result<T>
where
    T: TryFrom<i64> + TryFrom<u64> + num_bounds::Bounds,
{
    let fits = match value {
        Value::Int(i) => T::try_from(*i).ok(),
        Value::UInt(u) => T::try_from(*u).ok(),
        _ => None,
    };
    fits.ok_or_else(|| {
        let (min, max) = T::range_text();
        wrong_type(name, value, &format!("a whole number from {min} to {max} ({})", std::any::type_name::<T>()))
    })
}

mod num_bounds {
    /// The range of an integer type, as text for messages.
    pub trait Bounds {
        fn range_text() -> (String, String);
    }
    macro_rules! bounds {
        ($($t:ty),*) => {$(
            impl Bounds for $t {
                fn range_text() -> (String, String) {
                    (<$t>::MIN.to_string(), <$t>::MAX.to_string())
                }
            }
        )*};
    }
    bounds!(i32, i64, u32, u64, usize);
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
enum WireRef<'a> {
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
enum Wire {
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
                Value::Null => WireRef::Null,
                Value::Bool(b) => WireRef::Bool(*b),
                Value::Int(i) => WireRef::Int(*i),
                Value::UInt(u) => WireRef::UInt(*u),
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
            return Ok(match Wire::deserialize(deserializer)? {
                Wire::Null => Value::Null,
                Wire::Bool(b) => Value::Bool(b),
                Wire::Int(i) => Value::Int(i),
                Wire::UInt(u) => Value::from(u),
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

    fn value_strategy() -> impl Strategy<Value = Value> {
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
    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            (Value::List(x), Value::List(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
            (Value::Map(x), Value::Map(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|((ka, a), (kb, b))| ka == kb && same(a, b))
            }
            _ => a == b,
        }
    }

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
