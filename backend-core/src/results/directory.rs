//! Creating a result directory (and its `latest` link), and `operation.toml`: the spec as
//! run, with the format version of the directory on its first line.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::files;
use crate::{Error, Params, Result, Value};

/// Creates a fresh result directory `<base>/<name>/<UTC timestamp>/` (with a `.N` suffix
/// when two runs start in the same second).
pub fn create_result_dir(base: &Path, name: &str) -> Result<PathBuf> {
    for ancestor in base.ancestors() {
        if ancestor.as_os_str().is_empty() {
            continue;
        }
        match fs::metadata(ancestor) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => return Err(Error::ResultsNotADirectory { path: ancestor.to_owned() }),
            Err(_) => continue,
        }
    }
    let parent = base.join(name);
    fs::create_dir_all(&parent).map_err(|source| Error::ResultsNotWritable { path: base.to_owned(), source })?;
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!("[year]-[month]-[day]T[hour]-[minute]-[second]Z"))
        .map_err(|e| Error::Internal(format!("the timestamp could not be formatted: {e}")))?;
    for n in 0u32.. {
        let name = if n == 0 { stamp.clone() } else { format!("{stamp}.{n}") };
        let dir = parent.join(&name);
        match fs::create_dir(&dir) {
            Ok(()) => {
                point_latest_at(&parent, &name);
                return Ok(dir);
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(Error::ResultsNotWritable { path: base.to_owned(), source }),
        }
    }
    unreachable!("u32 range exhausted while naming a result directory")
}

/// Points `<parent>/latest` at the run directory `name` (a relative link, replaced in one
/// rename). Best effort: a file system without links still runs; `latest` is a convenience.
fn point_latest_at(parent: &Path, name: &str) {
    #[cfg(unix)]
    {
        let tmp = parent.join(format!(".{}.{}", files::LATEST, std::process::id()));
        let _ = fs::remove_file(&tmp);
        if std::os::unix::fs::symlink(name, &tmp).is_ok() && fs::rename(&tmp, parent.join(files::LATEST)).is_err() {
            let _ = fs::remove_file(&tmp);
        }
    }
}

/// The version of the result directory's formats (`operation.toml` and the journal's
/// records) that this taskfarm writes, and the newest it reads; it reads every older one.
/// It changes only when an older taskfarm could no longer read what this one writes.
pub const FORMAT_VERSION: u32 = 1;
/// How `operation.toml` says its format version: its first line, a TOML comment (so that
/// the file stays a spec that runs as it is). A file without it is of version 1 (taskfarm
/// 0.1 wrote none).
const FORMAT_LINE: &str = "# taskfarm result directory format ";

/// Refuses a result directory written by a newer taskfarm, with a sentence naming the
/// versions; reads the format line of its `operation.toml` (a missing file passes: the
/// caller says what it needs).
pub fn check_format(dir: &Path) -> Result<()> {
    let path = dir.join(files::OPERATION);
    let Ok(text) = fs::read_to_string(&path) else { return Ok(()) };
    let Some(version) = text.lines().next().and_then(|line| line.strip_prefix(FORMAT_LINE)) else {
        return Ok(());
    };
    match version.trim().parse::<u32>() {
        Ok(found) if found <= FORMAT_VERSION => Ok(()),
        _ => Err(Error::FormatTooNew {
            path: dir.to_owned(),
            found: version.trim().to_owned(),
            supported: FORMAT_VERSION,
        }),
    }
}

/// Writes `operation.toml`, the spec as run.
pub fn write_operation_toml(dir: &Path, spec: &Params) -> Result<()> {
    let text = format!("{FORMAT_LINE}{FORMAT_VERSION}\n{}", operation_toml_text(spec)?);
    let path = dir.join(files::OPERATION);
    fs::write(&path, text).map_err(|e| Error::io("write", &path, e))
}

/// The spec as TOML text in which every value is written inline (`a = [{ x = 1 }]`, never
/// a `[[a]]` section): a TOML writer moves keys holding tables after the others, which
/// would reorder `parameter_ranges` and so renumber the processes of a resumed run. The
/// top-level tables become `[key]` sections after the other keys; their keys keep their
/// order.
fn operation_toml_text(spec: &Params) -> Result<String> {
    let inline = |value: &toml::Value| {
        let mut out = String::new();
        serde::Serialize::serialize(value, toml::ser::ValueSerializer::new(&mut out))
            .map_err(|e| Error::Internal(format!("the spec could not be written as TOML: {e}")))?;
        Ok::<_, Error>(out)
    };
    let mut text = String::new();
    let mut sections = String::new();
    for (key, value) in &to_toml_table(spec) {
        match value {
            toml::Value::Table(table) => {
                sections.push_str(&format!("\n[{}]\n", toml_key(key)));
                for (k, v) in table {
                    sections.push_str(&format!("{} = {}\n", toml_key(k), inline(v)?));
                }
            }
            other => text.push_str(&format!("{} = {}\n", toml_key(key), inline(other)?)),
        }
    }
    Ok(text + &sections)
}

/// A key as TOML writes it: bare when it can be, else quoted.
fn toml_key(key: &str) -> String {
    let bare = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare {
        key.to_owned()
    } else {
        toml::Value::String(key.to_owned()).to_string()
    }
}

/// The spec as the TOML table `operation.toml` holds.
pub(crate) fn to_toml_table(map: &Params) -> toml::Table {
    map.iter().filter_map(|(k, v)| to_toml(v).map(|v| (k.clone(), v))).collect()
}

fn to_toml(value: &Value) -> Option<toml::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Int(i) => toml::Value::Integer(*i),
        // TOML's integers end at i64::MAX: a larger one is written as the nearest float.
        Value::UInt(u) => toml::Value::Float(*u as f64),
        Value::Float(f) => toml::Value::Float(*f),
        Value::Str(s) => toml::Value::String(s.clone()),
        Value::List(items) => toml::Value::Array(items.iter().filter_map(to_toml).collect()),
        Value::Map(map) => toml::Value::Table(to_toml_table(map)),
    })
}
