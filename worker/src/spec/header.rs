//! The spec's own keys as serde reads them (`Header`), `runs` (fixed or adaptive), and
//! tables in which a key may appear once (`UniqueMap`).

use indexmap::IndexMap;
use serde::Deserialize;
use taskfarm::Value;

/// The spec's own keys, read with serde (so a wrong type is reported with its line).
#[derive(Debug, Deserialize)]
pub(super) struct Header {
    pub(super) name: Option<String>,
    pub(super) kind: String,
    // Read by `sweep::read` from the document; declared so that a key given twice in them
    // is named with its line.
    #[serde(rename = "parameter_ranges")]
    pub(super) _ranges: Option<UniqueMap<Value>>,
    #[serde(rename = "parameter_settings")]
    pub(super) _settings: Option<Vec<UniqueMap<Value>>>,
    #[serde(default)]
    pub(super) runs: Runs,
    /// The numeric output fields the processes give, when the spec declares them (an
    /// adaptive `until` is then checked against them before anything runs).
    pub(super) outputs: Option<Vec<String>>,
    pub(super) backend: Option<String>,
    pub(super) timeout: Option<Value>,
    pub(super) retries: Option<Value>,
    pub(super) isolation: Option<Value>,
    pub(super) speculate: Option<Value>,
    pub(super) idempotent: Option<Value>,
    pub(super) threads: Option<Value>,
    pub(super) threads_per_rank: Option<Value>,
}

/// `runs`: a number of runs per point, or adaptive runs `{ min, max, until }`.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Runs {
    Fixed(u32),
    Adaptive { min: u32, max: u32, until: String },
}

impl Default for Runs {
    fn default() -> Self {
        Runs::Fixed(1)
    }
}

impl<'de> Deserialize<'de> for Runs {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Runs;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("u32, or a table { min = N, max = M, until = \"<condition>\" } for adaptive runs")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Runs, E> {
                u32::try_from(n)
                    .map(Runs::Fixed)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(n), &self))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Runs, E> {
                u64::try_from(n)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Signed(n), &self))
                    .and_then(|n| self.visit_u64(n))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Runs, A::Error> {
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Table {
                    min: u32,
                    max: u32,
                    until: String,
                }
                let Table { min, max, until } = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Runs::Adaptive { min, max, until })
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

/// A table read from a spec in which each key appears once: YAML admits a key twice and
/// would keep only its last value (`{x: [1, 2], x: [3]}` would sweep `x = 3` alone).
#[derive(Debug)]
pub(super) struct UniqueMap<V>(pub(super) IndexMap<String, V>);

impl<'de, V: Deserialize<'de>> Deserialize<'de> for UniqueMap<V> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit<V>(std::marker::PhantomData<V>);
        impl<'de, V: Deserialize<'de>> serde::de::Visitor<'de> for Visit<V> {
            type Value = UniqueMap<V>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a table")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut map = IndexMap::new();
                while let Some(key) = access.next_key::<String>()? {
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom(format!(
                            "duplicate key `{key}`: a key may appear once in a table"
                        )));
                    }
                    let value = access.next_value::<V>()?;
                    map.insert(key, value);
                }
                Ok(UniqueMap(map))
            }
        }
        deserializer.deserialize_map(Visit(std::marker::PhantomData))
    }
}
