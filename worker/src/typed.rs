//! The adapter that makes any [`Process`] type a [`Kind`]: its fields are filled, through
//! serde, from the process's parameters, the spec's fields and the run number.
//!
//! This module is for that adapter and the two small serde helpers it needs: one that
//! learns a struct's field names (so an unknown spec key is an error) and one that names
//! the field a deserialization error is about. It is not a general serde utility.

use std::cell::RefCell;
use std::marker::PhantomData;

use serde::de::value::{Error as DeError, StrDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, Error as _, IntoDeserializer, MapAccess, Visitor};
use serde::forward_to_deserialize_any;
use taskfarm::{Params, Process, ProcessContext, ProcessError, Value};

use crate::kind::{check_keys, Kind, KindError, KindSpec};

/// A [`Process`] type registered as a kind (see [`crate::Registry::register`]).
pub(crate) struct TypedKind<P> {
    name: String,
    help: String,
    /// The struct's field names, when serde tells them (not for `flatten` or non-structs).
    fields: Option<&'static [&'static str]>,
    process: PhantomData<fn() -> P>,
}

impl<P: Process> TypedKind<P> {
    pub(crate) fn new(name: &str, help: &str) -> Self {
        TypedKind { name: name.to_owned(), help: help.to_owned(), fields: struct_fields::<P>(), process: PhantomData }
    }

    /// Parameters over spec fields, plus `run` if `P` has such a field and neither sets it.
    fn merged(&self, config: &Params, params: &Params, run: u32) -> Params {
        let mut merged = config.clone();
        for (k, v) in params {
            merged.insert(k.clone(), v.clone());
        }
        if self.has_run_field() && !merged.contains_key("run") {
            merged.insert("run".into(), Value::Int(i64::from(run)));
        }
        merged
    }

    /// Whether `P` has a field `run`.
    fn has_run_field(&self) -> bool {
        self.fields.is_some_and(|fields| fields.contains(&"run"))
    }

    /// [`merged`](Self::merged) as the entries [`from_entries`] takes, in the same order
    /// (the spec fields, a parameter in the place of a spec field of its name, then the
    /// other parameters, then `run`), made without an intermediate table.
    fn merged_entries(&self, config: &Params, params: &Params, run: u32) -> Vec<(String, serde_json::Value)> {
        let mut entries = Vec::with_capacity(config.len() + params.len() + 1);
        for (k, v) in config {
            let v = params.get(k).unwrap_or(v);
            entries.push((k.clone(), serde_json::Value::from(v.clone())));
        }
        for (k, v) in params {
            if !config.contains_key(k) {
                entries.push((k.clone(), serde_json::Value::from(v.clone())));
            }
        }
        if self.has_run_field() && !config.contains_key("run") && !params.contains_key("run") {
            entries.push(("run".into(), serde_json::Value::from(Value::Int(i64::from(run)))));
        }
        entries
    }
}

impl<P: Process> Kind for TypedKind<P> {
    fn name(&self) -> &str {
        &self.name
    }

    fn help(&self) -> &str {
        &self.help
    }

    fn validate(&self, spec: &KindSpec<'_>) -> Result<(), KindError> {
        if let Some(fields) = self.fields {
            check_keys(&self.name, spec.config, fields)?;
        }
        self.check_values(spec.config, spec.first)
    }

    fn check_values(&self, config: &Params, params: &Params) -> Result<(), KindError> {
        let merged = self.merged(config, params, 0);
        match from_params::<P>(&merged) {
            Ok(_) => Ok(()),
            Err((Some(key), message)) => {
                let from = if config.contains_key(&key) { "" } else { " (a parameter)" };
                // Only spec keys have a line; a parameter's error names the parameter.
                let key_for_line = if config.contains_key(&key) { Some(key.clone()) } else { None };
                Err(KindError { key: key_for_line, message: format!("field `{key}`{from}: {message}") })
            }
            Err((None, message)) => Err(KindError::new(format!("kind `{}`: {message}", self.name))),
        }
    }

    fn run(&self, config: &Params, ctx: &ProcessContext<'_>) -> Result<Value, ProcessError> {
        let entries = self.merged_entries(config, ctx.params(), ctx.run());
        let process = from_entries::<P>(entries).map_err(|(key, message)| match key {
            Some(key) => ProcessError::msg(format!("field `{key}`: {message}")),
            None => ProcessError::msg(message),
        })?;
        let output = process.run(ctx)?;
        Value::from_serialize(&output).map_err(|e| ProcessError::msg(format!("the output could not be recorded: {e}")))
    }
}

/// Deserializes `P` from a table; on failure, the key the error is about (if known) and
/// serde's message.
pub(crate) fn from_params<P: de::DeserializeOwned>(params: &Params) -> Result<P, (Option<String>, String)> {
    from_entries(params.iter().map(|(k, v)| (k.clone(), serde_json::Value::from(v.clone()))).collect())
}

/// [`from_params`] from a table's entries, already as JSON values.
fn from_entries<P: de::DeserializeOwned>(
    entries: Vec<(String, serde_json::Value)>,
) -> Result<P, (Option<String>, String)> {
    let failed = RefCell::new(None);
    let access = KeyedMap { entries: entries.into_iter(), pending: None, failed: &failed };
    P::deserialize(KeyedDeserializer(access)).map_err(|e| (failed.into_inner(), e.to_string()))
}

/// A map deserializer that remembers which key's value failed.
struct KeyedMap<'a> {
    entries: std::vec::IntoIter<(String, serde_json::Value)>,
    pending: Option<(String, serde_json::Value)>,
    failed: &'a RefCell<Option<String>>,
}

impl<'de> MapAccess<'de> for KeyedMap<'_> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, DeError> {
        let Some((key, value)) = self.entries.next() else { return Ok(None) };
        let de: StrDeserializer<'_, DeError> = key.as_str().into_deserializer();
        match seed.deserialize(de) {
            Ok(k) => {
                self.pending = Some((key, value));
                Ok(Some(k))
            }
            Err(e) => {
                *self.failed.borrow_mut() = Some(key);
                Err(e)
            }
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((key, value)) = self.pending.take() else {
            return Err(DeError::custom("a value was asked for before its key"));
        };
        seed.deserialize(value).map_err(|e| {
            *self.failed.borrow_mut() = Some(key);
            DeError::custom(e)
        })
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

struct KeyedDeserializer<'a>(KeyedMap<'a>);

impl<'de> Deserializer<'de> for KeyedDeserializer<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_map(self.0)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

/// The field names of `P` if it is a struct that serde deserializes as one.
fn struct_fields<P: de::DeserializeOwned>() -> Option<&'static [&'static str]> {
    let fields = RefCell::new(None);
    let _ = P::deserialize(FieldNames(&fields));
    fields.into_inner()
}

/// A deserializer that only learns the field names a struct asks for, then stops.
struct FieldNames<'a>(&'a RefCell<Option<&'static [&'static str]>>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, DeError> {
        Err(DeError::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, DeError> {
        *self.0.borrow_mut() = Some(fields);
        Err(DeError::custom("field names learnt"))
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf option
        unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Sim {
        alpha: f64,
        samples: u64,
        #[serde(default)]
        run: u32,
    }

    impl Process for Sim {
        type Output = f64;
        fn run(&self, _ctx: &ProcessContext<'_>) -> Result<f64, ProcessError> {
            Ok(self.alpha * self.samples as f64 + f64::from(self.run))
        }
    }

    fn params(pairs: &[(&str, Value)]) -> Params {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    #[test]
    fn learns_field_names() {
        assert_eq!(struct_fields::<Sim>(), Some(&["alpha", "samples", "run"][..]));
        assert_eq!(struct_fields::<f64>(), None);
    }

    #[test]
    fn names_the_field_of_a_type_error() {
        let (key, message) =
            from_params::<Sim>(&params(&[("alpha", Value::Float(0.5)), ("samples", Value::from("many"))])).unwrap_err();
        assert_eq!(key.as_deref(), Some("samples"));
        assert!(message.contains("expected u64"), "{message}");
        let (key, message) = from_params::<Sim>(&params(&[("alpha", Value::Float(0.5))])).unwrap_err();
        assert_eq!(key, None);
        assert!(message.contains("missing field `samples`"), "{message}");
    }

    #[test]
    fn parameters_override_fields_and_run_is_filled() {
        let kind = TypedKind::<Sim>::new("sim", "help");
        let config = params(&[("alpha", Value::Float(1.0)), ("samples", Value::Int(10))]);
        let merged = kind.merged(&config, &params(&[("alpha", Value::Float(2.0))]), 3);
        let sim: Sim = from_params(&merged).unwrap();
        assert_eq!(sim, Sim { alpha: 2.0, samples: 10, run: 3 });
    }

    #[test]
    fn validation_rejects_unknown_keys_and_wrong_types() {
        let kind = TypedKind::<Sim>::new("sim", "help");
        let names = vec!["alpha".to_owned()];
        let first = params(&[("alpha", Value::Float(1.0))]);
        let config = params(&[("samples", Value::Int(1)), ("colour", Value::Int(1))]);
        let err = kind.validate(&KindSpec { config: &config, parameter_names: &names, first: &first }).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("colour"));
        let config = params(&[("samples", Value::from("x"))]);
        let err = kind.validate(&KindSpec { config: &config, parameter_names: &names, first: &first }).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("samples"));
        assert!(err.message.contains("field `samples`"), "{err}");
        let config = params(&[("samples", Value::Int(1))]);
        assert!(kind.validate(&KindSpec { config: &config, parameter_names: &names, first: &first }).is_ok());
    }
}
