//! Argument templates: parsing `{name}` placeholders (and `{{`, `}}`, `{name:raw}`,
//! pySPACE's `${__name__}`), checking the names, and filling them for a process, quoted
//! for their place in a shell script.

use taskfarm::{ProcessContext, ProcessError, Value};

use super::{BUILTIN_PLACEHOLDERS, PREVIEW};
use crate::kind::KindError;
use crate::shell;

/// One piece of a parsed argument template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text.
    Text(String),
    /// A `{name}` placeholder, or `{name:raw}` (`raw`: never shell-quoted).
    Placeholder {
        /// The parameter or built-in it stands for.
        name: String,
        /// Written `{name:raw}`: substituted as it is even inside a shell script.
        raw: bool,
    },
}

/// Parses one argument template: text with `{name}` placeholders and `{{`/`}}` escapes.
/// The error says what is wrong and where.
pub fn parse_template(template: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut chars = template.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                chars.next();
                text.push('{');
            }
            '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                chars.next();
                text.push('}');
            }
            '$' if template[at + 1..].starts_with("{__") && pyspace_placeholder(&template[at + 1..]).is_some() => {
                // pySPACE's `${__alpha__}`: the placeholder `__alpha__`, without the `$`.
                let name = pyspace_placeholder(&template[at + 1..]).unwrap_or_default();
                for _ in 0..name.chars().count() + 2 {
                    chars.next();
                }
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Placeholder { name, raw: false });
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for (_, c) in chars.by_ref() {
                    if c == '}' {
                        closed = true;
                        break;
                    }
                    name.push(c);
                }
                if !closed {
                    return Err(format!(
                        "the `{{` at character {} of `{template}` is never closed (write `{{{{` for a literal brace)",
                        at + 1
                    ));
                }
                if name.is_empty() || name.contains('{') {
                    return Err(format!(
                        "`{template}` has a placeholder without a name at character {} (write `{{{{` and `}}}}` \
                         for literal braces)",
                        at + 1
                    ));
                }
                let (name, raw) = match name.split_once(':') {
                    None => (name, false),
                    Some((name, "raw")) if !name.is_empty() => (name.to_owned(), true),
                    Some((_, modifier)) => {
                        return Err(format!(
                            "`{template}` has a placeholder with the modifier `{modifier}` at character {}: the only \
                             modifier is `raw`, as in `{{name:raw}}`",
                            at + 1
                        ))
                    }
                };
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Placeholder { name, raw });
            }
            '}' => {
                return Err(format!(
                    "the `}}` at character {} of `{template}` closes no placeholder (write `}}}}` for a literal brace)",
                    at + 1
                ))
            }
            c => text.push(c),
        }
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// The name of pySPACE's placeholder `{__NAME__}` at the start of `text`, if it is one.
fn pyspace_placeholder(text: &str) -> Option<String> {
    let end = text.find('}')?;
    let name = &text[1..end];
    let ok = name.len() > 4
        && name.starts_with("__")
        && name.ends_with("__")
        && name.chars().all(|c| c.is_alphanumeric() || c == '_');
    ok.then(|| name.to_owned())
}

/// Fills the argument templates for the process of `ctx`; in the script of a shell
/// (`sh -c SCRIPT`, see [`shell`]) values are quoted for the place they stand in.
pub(super) fn render_argv(templates: &[String], ctx: &ProcessContext<'_>) -> Result<Vec<String>, ProcessError> {
    let script = shell::script_index(templates);
    templates.iter().enumerate().map(|(i, template)| render(template, ctx, script == Some(i))).collect()
}

/// Fills one template for the process of `ctx`. In a shell script (`in_script`), a
/// placeholder's value is quoted so the shell reads it as that text, one word, and never as
/// code — except numbers and booleans, whose text holds no shell syntax (so `$(( {a} * 2 ))`
/// works), and `{name:raw}`.
pub(super) fn render(template: &str, ctx: &ProcessContext<'_>, in_script: bool) -> Result<String, ProcessError> {
    let pieces = parse_template(template).map_err(ProcessError::msg)?;
    let mut lexer = in_script.then(shell::Lexer::default);
    let mut out = String::new();
    for piece in pieces {
        let (name, raw) = match piece {
            Piece::Text(text) => {
                if let Some(lexer) = &mut lexer {
                    lexer.feed(&text);
                }
                out.push_str(&text);
                continue;
            }
            Piece::Placeholder { name, raw } => (name, raw),
        };
        let value = placeholder_value(&name, ctx)?;
        let text = value.to_string();
        match &mut lexer {
            Some(lexer) if !raw => {
                let context =
                    lexer.context().map_err(|why| ProcessError::msg(format!("the placeholder `{{{name}}}` {why}")))?;
                match value {
                    Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Bool(_) => out.push_str(&text),
                    _ => out.push_str(&lexer.quote(&text, context)),
                }
                lexer.placeholder();
            }
            _ => out.push_str(&text),
        }
    }
    Ok(out)
}

/// Why a path relative to the scratch directory would leave it, if it would: an absolute
/// path, or a `..` component.
pub(super) fn escapes_scratch(path: &str) -> Option<&'static str> {
    let path = std::path::Path::new(path);
    if path.is_absolute() {
        return Some("is an absolute path, outside the scratch directory");
    }
    if path.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
        return Some("has a `..` component, which could leave the scratch directory");
    }
    if path.as_os_str().is_empty() {
        return Some("is empty");
    }
    None
}

/// The name a placeholder stands for among `parameters` (and the built-ins): itself, or,
/// in pySPACE's spelling `{__alpha__}`, `alpha`.
pub(super) fn resolve(name: &str, parameters: &[String]) -> Option<String> {
    let known = |n: &str| parameters.iter().any(|p| p == n) || BUILTIN_PLACEHOLDERS.contains(&n);
    if known(name) {
        return Some(name.to_owned());
    }
    let inner = name.strip_prefix("__")?.strip_suffix("__")?;
    known(inner).then(|| inner.to_owned())
}

pub(super) fn unknown_placeholder(key: &str, name: &str, parameters: &[String]) -> KindError {
    let listed = if parameters.is_empty() {
        "there are no parameters".to_owned()
    } else {
        format!("the parameters are {}", parameters.join(", "))
    };
    KindError::at(
        key,
        format!(
            "the placeholder `{{{name}}}` in `{key}` is not a parameter: {listed}, and {} are always known (write \
             `{{{{` and `}}}}` for literal braces)",
            BUILTIN_PLACEHOLDERS.join(", ")
        ),
    )
}

/// The value of the placeholder `{name}` for the process of `ctx`.
fn placeholder_value(name: &str, ctx: &ProcessContext<'_>) -> Result<Value, ProcessError> {
    if let Some(value) = ctx.params().get(name) {
        return Ok(value.clone());
    }
    if let Some(value) = name.strip_prefix("__").and_then(|n| n.strip_suffix("__")).and_then(|n| ctx.params().get(n)) {
        return Ok(value.clone());
    }
    if let Some(inner) = name.strip_prefix("__").and_then(|n| n.strip_suffix("__")) {
        if BUILTIN_PLACEHOLDERS.contains(&inner) {
            return placeholder_value(inner, ctx);
        }
    }
    Ok(match name {
        "run" => Value::from(ctx.run()),
        "id" => Value::Int(i64::try_from(ctx.id()).unwrap_or(i64::MAX)),
        "result_dir" => Value::Str(ctx.result_dir().to_string_lossy().into_owned()),
        // A preview names the scratch directory without making it.
        "scratch_dir" if PREVIEW.with(std::cell::Cell::get) => {
            Value::Str(ctx.result_dir().join("scratch").join(ctx.id().to_string()).to_string_lossy().into_owned())
        }
        "scratch_dir" => {
            let dir = ctx
                .scratch_dir()
                .map_err(|e| ProcessError::msg(format!("the scratch directory could not be made: {e}")))?;
            Value::Str(dir.to_string_lossy().into_owned())
        }
        _ => return Err(ProcessError::msg(format!("the placeholder `{{{name}}}` has no value"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str) -> Piece {
        Piece::Placeholder { name: name.into(), raw: false }
    }
    fn t(text: &str) -> Piece {
        Piece::Text(text.into())
    }

    #[test]
    fn parses_placeholders_and_escapes() {
        assert_eq!(parse_template("plain").unwrap(), vec![t("plain")]);
        assert_eq!(parse_template("").unwrap(), vec![]);
        assert_eq!(parse_template("--alpha={alpha}").unwrap(), vec![t("--alpha="), p("alpha")]);
        assert_eq!(parse_template("{a}{b}").unwrap(), vec![p("a"), p("b")]);
        assert_eq!(parse_template("{{x}} {y}").unwrap(), vec![t("{x} "), p("y")]);
        assert_eq!(parse_template("awk '{{print $1}}'").unwrap(), vec![t("awk '{print $1}'")]);
        assert_eq!(parse_template("é{ü}é").unwrap(), vec![t("é"), p("ü"), t("é")]);
    }

    #[test]
    fn template_errors_say_where() {
        let err = parse_template("x {alpha").unwrap_err();
        assert!(err.contains("character 3") && err.contains("never closed"), "{err}");
        let err = parse_template("a } b").unwrap_err();
        assert!(err.contains("character 3") && err.contains("closes no placeholder"), "{err}");
        assert!(parse_template("{}").unwrap_err().contains("without a name"));
        assert!(parse_template("{a{b}").unwrap_err().contains("without a name"));
        let err = parse_template("x {a:quoted}").unwrap_err();
        assert!(err.contains("character 3") && err.contains("`raw`"), "{err}");
        assert!(parse_template("{:raw}").is_err());
    }

    #[test]
    fn raw_placeholders_parse() {
        let raw = Piece::Placeholder { name: "cmd".into(), raw: true };
        assert_eq!(parse_template("{cmd:raw} {x}").unwrap(), vec![raw, t(" "), p("x")]);
    }
}
