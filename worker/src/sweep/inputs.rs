//! The values of a range of `parameter_ranges`: a list, or read from input files (the paths
//! a glob matches, a file's lines), relative to the spec's directory.

use std::path::Path;

use taskfarm::Value;

use super::{fault, Fault};

/// The values of the range `name`: a list, or the paths a glob matches, or a file's lines.
pub(super) fn range_values(name: &str, value: &Value, dir: &Path) -> Result<Vec<Value>, Fault> {
    let usage = format!(
        "`{name}` in `parameter_ranges` must be a list of values, or {{ glob = \"data/*.csv\" }}, or \
         {{ lines = \"cases.txt\" }}"
    );
    match value {
        Value::List(values) => Ok(values.clone()),
        Value::Map(map) if map.len() == 1 => match map.iter().next() {
            Some((kind, Value::Str(pattern))) if kind == "glob" => glob_values(name, pattern, dir),
            Some((kind, Value::Str(file))) if kind == "lines" => line_values(name, file, dir),
            _ => Err(fault(name, usage)),
        },
        _ => Err(fault(name, usage)),
    }
}

/// The directory relative paths are read from, made absolute so the values mean the same
/// file from any working directory (and in a resumed run).
fn base_dir(dir: &Path) -> std::path::PathBuf {
    let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
    std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_owned())
}

fn glob_values(name: &str, pattern: &str, dir: &Path) -> Result<Vec<Value>, Fault> {
    let full = base_dir(dir).join(pattern);
    let full_text = full.to_string_lossy().into_owned();
    let paths = glob::glob(&full_text)
        .map_err(|e| fault(name, format!("the glob `{pattern}` of `{name}` does not parse: {e}")))?;
    let mut found: Vec<String> = paths.filter_map(Result::ok).map(|p| p.to_string_lossy().into_owned()).collect();
    found.sort();
    if found.is_empty() {
        return Err(fault(
            name,
            format!("the glob `{pattern}` of `{name}` matches no file (it is read relative to the spec's directory, as {full_text})"),
        ));
    }
    Ok(found.into_iter().map(Value::Str).collect())
}

fn line_values(name: &str, file: &str, dir: &Path) -> Result<Vec<Value>, Fault> {
    let path = base_dir(dir).join(file);
    let text = crate::limits::read_bounded(&path)
        .map_err(|e| fault(name, format!("the file `{file}` of `{name}` cannot be read ({}): {e}", path.display())))?
        .ok_or_else(|| fault(name, format!("the file `{file}` of `{name}` is larger than a spec may be")))?;
    let lines: Vec<Value> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| Value::Str(l.to_owned()))
        .collect();
    if lines.is_empty() {
        return Err(fault(
            name,
            format!("the file `{file}` of `{name}` has no lines (blank lines and # comments are skipped)"),
        ));
    }
    Ok(lines)
}
