//! Where in a spec's text a key is set, and the TOML and YAML parsers' errors as one
//! sentence naming the file, the line and the key.

use std::path::Path;

use crate::WorkerError;

/// The 1-based line of `text` where the top-level key `key` is set (`key = ...`,
/// `key: ...` or `[key]`), if any.
pub(super) fn line_of_key(text: &str, key: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let trimmed = line.trim_end();
            if trimmed == format!("[{key}]") || trimmed == format!("[[{key}]]") {
                return true;
            }
            let rest = [key.to_owned(), format!("\"{key}\""), format!("'{key}'")]
                .iter()
                .find_map(|k| line.strip_prefix(k.as_str()).map(str::trim_start));
            matches!(rest, Some(r) if r.starts_with('=') || r.starts_with(':'))
        })
        .map(|i| i + 1)
}

/// The key set on 1-based line `line` of `text`, if that line is `key = ...` or `key: ...`.
fn key_at_line(text: &str, line: usize) -> Option<String> {
    let content = text.lines().nth(line.checked_sub(1)?)?.trim_start().trim_start_matches("- ");
    let end = content.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))?;
    let (key, rest) = content.split_at(end);
    let rest = rest.trim_start();
    (!key.is_empty() && (rest.starts_with('=') || rest.starts_with(':'))).then(|| key.to_owned())
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end].iter().filter(|&&b| b == b'\n').count() + 1
}

/// One line: the message with newlines turned into `; ` (and no internal type names).
fn one_line(message: &str) -> String {
    let message = message.replace("struct Header", "a table of spec keys (name, kind, parameter_ranges, ...)");
    message.trim().lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ")
}

/// Prefixes a type error with the key on `line` when the message does not name it already
/// (syntax errors are about the line, not about a key).
fn with_key(text: &str, line: Option<usize>, message: String) -> String {
    let about_a_value = ["invalid type", "invalid value", "invalid length", "unknown variant"]
        .iter()
        .any(|start| message.starts_with(start));
    if !about_a_value {
        return message;
    }
    match line.and_then(|l| key_at_line(text, l)) {
        Some(key) if !message.contains(&format!("`{key}`")) && !message.starts_with(&key) => {
            format!("`{key}`: {message}")
        }
        _ => message,
    }
}

pub(super) fn toml_error(text: &str, path: &Path, error: &toml::de::Error) -> WorkerError {
    let message = one_line(error.message());
    // A missing key has no line of its own (toml points at the whole document).
    let line = if message.starts_with("missing field") {
        None
    } else {
        error.span().map(|span| line_of_offset(text, span.start))
    };
    WorkerError::Spec { path: path.to_owned(), line, message: with_key(text, line, message) }
}

pub(super) fn yaml_error(text: &str, path: &Path, error: &serde_yaml_ng::Error) -> WorkerError {
    let location = error.location();
    let mut message = error.to_string();
    if let Some(l) = &location {
        message = message.replace(&format!(" at line {} column {}", l.line(), l.column()), "");
    }
    let message = one_line(&message);
    // serde_yaml_ng names the key of a type error itself (`runs: invalid type ...`); a
    // missing key has no line of its own.
    let mut line = if message.starts_with("missing field") { None } else { location.map(|l| l.line()) };
    // A duplicate key is reported where its table starts: point at the second occurrence.
    if let (Some(start), Some(key)) = (line, duplicated_key(&message)) {
        line = second_occurrence(text, start, key).or(line);
    }
    WorkerError::Spec { path: path.to_owned(), line, message }
}

/// The key of a "duplicate key `k`" message.
fn duplicated_key(message: &str) -> Option<&str> {
    let rest = &message[message.find("duplicate key `")? + "duplicate key `".len()..];
    Some(&rest[..rest.find('`')?])
}

/// The 1-based line, from line `start` on, where block-style YAML sets `key` for the second
/// time at the column where it was first set (the column tells one table from another).
fn second_occurrence(text: &str, start: usize, key: &str) -> Option<usize> {
    let mut column = None;
    for (i, line) in text.lines().enumerate().skip(start.checked_sub(1)?) {
        let indent = line.len() - line.trim_start().len();
        let content = line.trim_start();
        let (offset, content) = match content.strip_prefix("- ") {
            Some(after) => (indent + 2 + (after.len() - after.trim_start().len()), after.trim_start()),
            None => (indent, content),
        };
        let sets_key = [key.to_owned(), format!("\"{key}\""), format!("'{key}'")]
            .iter()
            .any(|k| content.strip_prefix(k.as_str()).is_some_and(|rest| rest.trim_start().starts_with(':')));
        if !sets_key {
            continue;
        }
        match column {
            None => column = Some(offset),
            Some(c) if c == offset => return Some(i + 1),
            Some(_) => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::tests::error;
    use super::super::Format;
    use super::*;

    #[test]
    fn errors_name_the_line_and_key() {
        let err = error("kind = 'monte_carlo_pi'\nsamples = 10\nruns = 'three'\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line 3: `runs`: invalid type"), "{err}");
        let err = error("kind = 'monte_carlo_pi'\nsamples = [\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line"), "{err}");
        let err = error("kind: monte_carlo_pi\nsamples: 10\nruns: three\n", Format::Yaml);
        assert!(err.starts_with("spec.yaml, line 3: runs: invalid type"), "{err}");
        let err = error("kind: [\n", Format::Yaml);
        assert!(err.starts_with("spec.yaml, line"), "{err}");
        let err = error("kind = 'monte_carlo_pi'\nsamples = 'many'\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line 2: field `samples`"), "{err}");
        let err = error("kind = 'monte_carlo_pi'\nsamples = 1\ncolour = 'red'\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line 3: `colour` is not a spec key"), "{err}");
        let err = error("- a\n- b\n", Format::Yaml);
        assert!(err.contains("expected a table of spec keys"), "{err}");
        let err = error("name = 'x'\n", Format::Toml);
        assert_eq!(err, "spec.toml: missing field `kind`");
    }

    #[test]
    fn finds_keys_and_lines() {
        let text = "a = 1\n[parameter_ranges]\nb: 2\n\"c\" = 3\n  - d: 4\n";
        assert_eq!(line_of_key(text, "a"), Some(1));
        assert_eq!(line_of_key(text, "parameter_ranges"), Some(2));
        assert_eq!(line_of_key(text, "b"), Some(3));
        assert_eq!(line_of_key(text, "c"), Some(4));
        assert_eq!(line_of_key(text, "z"), None);
        assert_eq!(key_at_line(text, 1).as_deref(), Some("a"));
        assert_eq!(key_at_line(text, 2), None);
        assert_eq!(key_at_line(text, 5).as_deref(), Some("d"));
        assert_eq!(key_at_line(text, 99), None);
        assert_eq!(line_of_offset("a\nb\nc", 2), 2);
    }

    #[test]
    fn duplicate_keys_are_refused_at_any_level() {
        let err = error("kind: command\ncommand: ['true']\nkind: command\n", Format::Yaml);
        assert!(err.contains("duplicate") && err.contains("kind"), "{err}");
        let err =
            error("kind: command\ncommand: ['true']\nparameter_ranges:\n  x: [1]\n  y: [2]\n  x: [3]\n", Format::Yaml);
        assert!(err.starts_with("spec.yaml, line 6: parameter_ranges: duplicate key `x`"), "{err}");
        let err = error(
            "kind: command\ncommand: ['true']\nparameter_settings:\n  - x: 1\n    t: {a: 1, a: 2}\n",
            Format::Yaml,
        );
        assert!(err.contains("line 5") && err.contains("duplicate key `a`"), "{err}");
        let err = error("kind = 'command'\ncommand = ['true']\n[parameter_ranges]\nx = [1]\nx = [2]\n", Format::Toml);
        assert!(err.starts_with("spec.toml, line 5") && err.contains("duplicate key"), "{err}");
    }

    #[test]
    fn finds_the_second_occurrence_of_a_key() {
        let text = "a: 1\nlist:\n  - a: 2\n    b: 3\n  - b: 4\n    b: 5\na: 6\n";
        assert_eq!(second_occurrence(text, 1, "a"), Some(7));
        assert_eq!(second_occurrence(text, 5, "b"), Some(6));
        assert_eq!(second_occurrence(text, 1, "zz"), None);
        assert_eq!(duplicated_key("p[0]: duplicate key `k`: a key may appear once"), Some("k"));
    }
}
