//! The parameter part of a spec, read into a [`ParameterSpace`]: `parameter_ranges` (lists,
//! or input files: `{ glob = "data/*.csv" }`, `{ lines = "cases.txt" }`), `link` and
//! `[[parameter_groups]]` (parameters that vary together), `parameter_settings`,
//! `[parameter_samples]`, `[constants]`, `constraints` (Python's `and`, `or`, `not` read as
//! `&&`, `||`, `!`), and `[[sweep]]` blocks, whose processes follow each other.
//!
//! This module reads values; [`crate::spec`] reads the file and checks the kind.

mod inputs;

use std::path::Path;

use indexmap::IndexMap;
use taskfarm::Samples;
use taskfarm::{CoreError, ParameterSpace, Params, Value};

use inputs::range_values;

/// The keys of a spec (and of a `[[sweep]]` block) that describe its parameters.
pub const SPACE_KEYS: [&str; 7] = [
    "parameter_ranges",
    "parameter_settings",
    "link",
    "parameter_groups",
    "parameter_samples",
    "constants",
    "constraints",
];

/// Why the parameters of a spec cannot be read: the key it is about, and a sentence.
#[derive(Debug)]
pub(crate) enum Fault {
    /// A value of the spec is malformed.
    Spec(String, String),
    /// The core refused the space.
    Core(String, CoreError),
}

fn fault(key: &str, message: impl Into<String>) -> Fault {
    Fault::Spec(key.to_owned(), message.into())
}

fn core(key: &str) -> impl Fn(CoreError) -> Fault + '_ {
    move |e| Fault::Core(key.to_owned(), e)
}

/// What was read: the space, and the first combination of each part a kind must be checked
/// against separately (each `parameter_settings` entry with its own names, each `sweep`
/// block), with a label for errors.
pub(crate) struct Read {
    pub space: ParameterSpace,
    pub parts: Vec<(String, Params)>,
    /// Values the first combination does not show: every `parameter_settings` entry, and
    /// each value of each range (at most [`MAX_VARIANTS`]). A kind checks the first
    /// combination with each laid over it, so a value no process could be made of
    /// (`samples = 0`) is refused before the run.
    pub variants: Vec<Variant>,
}

/// A combination to check beside the first: the first with `drop` taken out and `values`
/// laid over it.
#[derive(Debug, Clone)]
pub(crate) struct Variant {
    /// What it is, for an error: e.g. "parameter setting 2", "`samples` = 0".
    pub label: String,
    /// Parameters of the first combination it does not have.
    pub drop: Vec<String>,
    /// Its own values.
    pub values: Params,
}

impl Variant {
    /// `first` with this variant's values.
    pub fn over(&self, first: &Params) -> Params {
        let mut combination = first.clone();
        combination.retain(|name, _| !self.drop.contains(name));
        combination.extend(self.values.iter().map(|(k, v)| (k.clone(), v.clone())));
        combination
    }
}

/// The most values [`Read::variants`] holds: a check of microseconds each, bounded.
pub(crate) const MAX_VARIANTS: usize = 4096;

/// Reads the space of a spec `document` whose top-level `constants` (besides its
/// `[constants]` table) are given; relative paths are relative to `dir`.
pub(crate) fn read(document: &Params, constants: Params, dir: &Path) -> Result<Read, Fault> {
    let Some(blocks) = document.get("sweep") else {
        let (space, parts, variants) = read_block(document, constants, dir, "")?;
        return Ok(Read { space, parts, variants });
    };
    if let Some(key) =
        SPACE_KEYS.iter().find(|k| **k != "constraints" && **k != "constants" && document.contains_key(**k))
    {
        return Err(fault(
            key,
            format!(
                "`{key}` cannot be given beside `sweep`: put the parameters in the [[sweep]] blocks (a \
                 [constants] table and `constraints` at the top level apply to every block)"
            ),
        ));
    }
    let Value::List(blocks) = blocks else {
        return Err(fault("sweep", "`sweep` must be a list of tables: write each block as [[sweep]]"));
    };
    let mut spaces = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let label = format!("sweep block {}", i + 1);
        let Value::Map(block) = block else {
            return Err(fault("sweep", format!("{label} must be a table, as [[sweep]] followed by its keys")));
        };
        let mut block_constants = Params::new();
        for (key, value) in block {
            if SPACE_KEYS.contains(&key.as_str()) {
                continue;
            }
            if !is_scalar(value) {
                return Err(fault(
                    key,
                    format!(
                        "`{key}` in {label} is not a key of a sweep block: a block takes {} and plain values \
                         (numbers, strings, booleans), which are constants of the block",
                        SPACE_KEYS.join(", ")
                    ),
                ));
            }
            block_constants.insert(key.clone(), value.clone());
        }
        // Each block's first combination is checked (`parts`); its other values are not, as
        // they would be laid over another block's first.
        let (space, _, _) = read_block(block, block_constants, dir, &format!(" of {label}"))?;
        spaces.push(space);
    }
    let mut space = ParameterSpace::union(spaces).map_err(core("sweep"))?;
    let mut top = table(document, "constants")?;
    top.extend(constants);
    if !top.is_empty() {
        space = space.with_constants(top).map_err(core("constants"))?;
    }
    for constraint in strings(document, "constraints")? {
        space = space.constrain(&pythonic(&constraint)).map_err(core("constraints"))?;
    }
    let parts = space.block_firsts().into_iter().map(|(i, first)| (format!("sweep block {}", i + 1), first)).collect();
    Ok(Read { space, parts, variants: Vec::new() })
}

fn is_scalar(value: &Value) -> bool {
    matches!(value, Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Bool(_) | Value::Str(_))
}

/// A table under `key`, or an empty one.
fn table(doc: &Params, key: &str) -> Result<Params, Fault> {
    match doc.get(key) {
        None => Ok(Params::new()),
        Some(Value::Map(map)) => Ok(map.clone()),
        Some(other) => Err(fault(key, format!("`{key}` must be a table, not {}", other.type_name()))),
    }
}

/// A list of strings under `key`, or none.
fn strings(doc: &Params, key: &str) -> Result<Vec<String>, Fault> {
    match doc.get(key) {
        None => Ok(Vec::new()),
        Some(Value::List(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| fault(key, format!("`{key}` must be a list of strings")))
            })
            .collect(),
        Some(Value::Str(one)) => Ok(vec![one.clone()]),
        Some(_) => Err(fault(key, format!("`{key}` must be a list of strings"))),
    }
}

/// Reads one block (or the whole spec): its combinations, samples, constants, constraints.
/// A block's space, the first combination of each of its parts, and its variants (see [`Read`]).
type Block = (ParameterSpace, Vec<(String, Params)>, Vec<Variant>);

fn read_block(doc: &Params, mut constants: Params, dir: &Path, whose: &str) -> Result<Block, Fault> {
    let mut ranges: IndexMap<String, Vec<Value>> = IndexMap::new();
    if let Some(value) = doc.get("parameter_ranges") {
        let Value::Map(map) = value else {
            return Err(fault("parameter_ranges", format!("`parameter_ranges`{whose} must be a table of lists")));
        };
        for (name, values) in map {
            ranges.insert(name.clone(), range_values(name, values, dir)?);
        }
    }
    let mut links: Vec<Vec<String>> = Vec::new();
    if let Some(value) = doc.get("link") {
        let groups = match value {
            Value::List(groups) if groups.iter().all(|g| matches!(g, Value::List(_))) => groups.clone(),
            Value::List(names) => vec![Value::List(names.clone())],
            _ => Vec::new(),
        };
        for group in &groups {
            let names: Option<Vec<String>> = match group {
                Value::List(names) => names.iter().map(|n| n.as_str().map(str::to_owned)).collect(),
                _ => None,
            };
            let names = names.filter(|n| !n.is_empty()).ok_or_else(|| {
                fault("link", "`link` must be a list of lists of parameter names, as link = [[\"alpha\", \"beta\"]]")
            })?;
            links.push(names);
        }
    }
    if let Some(value) = doc.get("parameter_groups") {
        let Value::List(groups) = value else {
            return Err(fault(
                "parameter_groups",
                "`parameter_groups` must be a list of tables: write [[parameter_groups]]",
            ));
        };
        for group in groups {
            let Value::Map(group) = group else {
                return Err(fault("parameter_groups", "each [[parameter_groups]] entry must be a table of lists"));
            };
            for (name, values) in group {
                if ranges.contains_key(name) {
                    return Err(fault(
                        name,
                        format!("`{name}` is in `parameter_ranges` and in a parameter group: give it once"),
                    ));
                }
                ranges.insert(name.clone(), range_values(name, values, dir)?);
            }
            if group.len() > 1 {
                links.push(group.keys().cloned().collect());
            }
        }
    }
    let mut parts = Vec::new();
    let mut variants: Vec<Variant> = ranges
        .iter()
        .flat_map(|(name, values)| {
            values.iter().map(move |value| Variant {
                label: format!("`{name}` = {value}"),
                drop: Vec::new(),
                values: [(name.clone(), value.clone())].into_iter().collect(),
            })
        })
        .take(MAX_VARIANTS)
        .collect();
    let space = match doc.get("parameter_settings") {
        Some(_) if !ranges.is_empty() => {
            return Err(fault("parameter_settings", "give either `parameter_ranges` or `parameter_settings`, not both"))
        }
        Some(Value::List(items)) => {
            let mut settings = Vec::new();
            for item in items {
                match item {
                    Value::Map(setting) => settings.push(setting.clone()),
                    other => {
                        return Err(fault(
                            "parameter_settings",
                            format!("each entry of `parameter_settings` must be a table, not {}", other.type_name()),
                        ))
                    }
                }
            }
            parts = setting_shapes(&settings);
            let mut names: Vec<String> = settings.iter().flat_map(|s| s.keys().cloned()).collect();
            names.sort();
            names.dedup();
            variants.extend(settings.iter().take(MAX_VARIANTS).enumerate().map(|(i, setting)| Variant {
                label: format!("parameter setting {}", i + 1),
                drop: names.clone(),
                values: setting.clone(),
            }));
            ParameterSpace::settings(settings).map_err(core("parameter_settings"))?
        }
        Some(other) => {
            return Err(fault(
                "parameter_settings",
                format!("`parameter_settings` must be a list of tables, not {}", other.type_name()),
            ))
        }
        None if ranges.is_empty() => ParameterSpace::single(),
        None => {
            let key = if doc.contains_key("parameter_ranges") { "parameter_ranges" } else { "parameter_groups" };
            ParameterSpace::linked(ranges, &links).map_err(core(if links.is_empty() { key } else { "link" }))?
        }
    };
    let space = match doc.get("parameter_samples") {
        None => space,
        Some(value) => space.with_samples(samples(value)?).map_err(core("parameter_samples"))?,
    };
    let mut all_constants = table(doc, "constants")?;
    all_constants.append(&mut constants);
    let mut space = if all_constants.is_empty() {
        space
    } else {
        space.with_constants(all_constants).map_err(core("constants"))?
    };
    for constraint in strings(doc, "constraints")? {
        space = space.constrain(&pythonic(&constraint)).map_err(core("constraints"))?;
    }
    variants.truncate(MAX_VARIANTS);
    Ok((space, parts, variants))
}

/// `[parameter_samples]`: `method`, `samples`, `seed` and one distribution per parameter.
fn samples(value: &Value) -> Result<Samples, Fault> {
    let key = "parameter_samples";
    let Value::Map(map) = value else {
        return Err(fault(key, "`parameter_samples` must be a table such as { samples = 100, x = \"uniform(0, 1)\" }"));
    };
    let mut method = "random".to_owned();
    let mut count = None;
    let mut seed = 0u64;
    let mut parameters = Vec::new();
    for (name, value) in map {
        match (name.as_str(), value) {
            ("method", Value::Str(m)) => method = m.clone(),
            ("samples", Value::Int(n)) if *n > 0 => count = Some(*n as u64),
            ("seed", Value::Int(n)) if *n >= 0 => seed = *n as u64,
            ("method" | "samples" | "seed", other) => {
                return Err(fault(
                    name,
                    format!(
                        "`{name}` of `parameter_samples` must be {}, not {other}",
                        if name == "method" {
                            "\"random\", \"latin_hypercube\" or \"sobol\""
                        } else {
                            "a whole number of 1 or more (seed: 0 or more)"
                        }
                    ),
                ))
            }
            (_, Value::Str(text)) => parameters.push((name.clone(), text.clone())),
            (_, other) => {
                return Err(fault(
                    name,
                    format!(
                        "the sampled parameter `{name}` must be a distribution such as \"uniform(0, 1)\", not {other}"
                    ),
                ))
            }
        }
    }
    let count = count.ok_or_else(|| fault(key, "`parameter_samples` needs `samples`, the number of points to draw"))?;
    Samples::new(&method, count, seed, parameters).map_err(core(key))
}

/// The first setting of each distinct set of parameter names, labelled with its position.
fn setting_shapes(settings: &[Params]) -> Vec<(String, Params)> {
    let mut seen = std::collections::HashSet::new();
    let shapes: Vec<(String, Params)> = settings
        .iter()
        .enumerate()
        .filter(|(_, setting)| seen.insert(setting.keys().cloned().collect::<Vec<_>>()))
        .map(|(index, setting)| {
            let names = setting.keys().map(|k| format!("`{k}`")).collect::<Vec<_>>();
            let names = if names.is_empty() { "no parameters".to_owned() } else { names.join(", ") };
            (format!("parameter setting {} (of {names})", index + 1), setting.clone())
        })
        .collect();
    if shapes.len() > 1 {
        shapes
    } else {
        Vec::new()
    }
}

/// A constraint written as in Python (pySPACE's specs): `and`, `or`, `not`, `True`, `False`
/// outside quotes become `&&`, `||`, `!`, `true`, `false`, and `'...'` strings become
/// `"..."`. Anything else is left as it is.
pub(crate) fn pythonic(expression: &str) -> String {
    let mut out = String::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let flush = |word: &mut String, out: &mut String| {
        out.push_str(match word.as_str() {
            "and" => "&&",
            "or" => "||",
            "not" => "!",
            "True" => "true",
            "False" => "false",
            w => w,
        });
        word.clear();
    };
    for c in expression.chars() {
        match quote {
            Some(q) if c == q => {
                out.push('"');
                quote = None;
            }
            Some(_) => out.push(c),
            None if c == '\'' || c == '"' => {
                flush(&mut word, &mut out);
                out.push('"');
                quote = Some(c);
            }
            None if c.is_alphanumeric() || c == '_' => word.push(c),
            None => {
                flush(&mut word, &mut out);
                out.push(c);
            }
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_constraints_read_as_evalexpr() {
        assert_eq!(pythonic("a < b and not c or d == 'x'"), "a < b && ! c || d == \"x\"");
        assert_eq!(pythonic("__LOW__ < __HIGH__"), "__LOW__ < __HIGH__");
        assert_eq!(pythonic("android == True"), "android == true");
    }
}
