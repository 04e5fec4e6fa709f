//! Limits on what the worker takes in, so that absurd input is a clear error at once
//! instead of gigabytes read, minutes of parsing or thousands of threads: the size of a
//! spec file, how deeply its lists and tables nest, and how many threads a pool may have.
//!
//! This module only measures; [`crate::spec`] and [`crate::cli`] say what is wrong.

use std::io::Read;
use std::path::Path;

/// The largest spec file read, in bytes (16 MiB): a spec of a million parameter values
/// takes a few MiB. A larger file (or `/dev/zero`) is refused after reading this much.
pub const MAX_SPEC_BYTES: u64 = 16 * 1024 * 1024;

/// How deeply lists and tables may nest in a spec: far beyond any real spec. The YAML
/// parser takes time that grows with the square of the depth, and TOML's stops at about
/// 80 levels, so the depth is checked before parsing.
pub const MAX_SPEC_DEPTH: usize = 64;

/// How many threads a pool may have per core of this machine unless `--force` is given:
/// more only help processes that mostly wait, and a mistyped `--pool-size` would start
/// thousands of threads.
pub const MAX_THREADS_PER_CORE: usize = 64;

/// Reads at most `MAX_SPEC_BYTES` of the file at `path`: `Ok(None)` when it holds more.
pub fn read_bounded(path: &Path) -> std::io::Result<Option<String>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?.take(MAX_SPEC_BYTES + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Ok(None);
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))
}

/// The first (1-based) line on which the nesting of a YAML or TOML text may pass `limit`
/// levels, or `None`. It over-estimates, never under-estimates for nesting it can see: the
/// depth on a line is its block nesting (one level per indentation step and per leading
/// `- ` or `? `) plus the open flow brackets `[` and `{` (outside quoted strings and
/// comments, carried across lines). Linear in the text's length.
pub fn line_too_deep(text: &str, limit: usize) -> Option<usize> {
    let mut indents: Vec<usize> = Vec::new();
    let mut flow = 0usize;
    for (number, line) in text.lines().enumerate() {
        let content = line.trim_start_matches([' ', '\t']);
        if content.is_empty() || content.starts_with('#') {
            continue;
        }
        let indent = line.len() - content.len();
        while indents.last().is_some_and(|&top| top > indent) {
            indents.pop();
        }
        if indents.last().is_none_or(|&top| top < indent) {
            indents.push(indent);
        }
        let mut markers = 0;
        let mut rest = content;
        while let Some(after) = rest.strip_prefix("- ").or_else(|| rest.strip_prefix("? ")) {
            markers += 1;
            rest = after.trim_start_matches([' ', '\t']);
        }
        let mut deepest_flow = flow;
        let mut quote: Option<char> = None;
        let mut previous = ' ';
        for c in rest.chars() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None => match c {
                    '#' if previous == ' ' || previous == '\t' => break,
                    '\'' | '"' if " \t[{,:".contains(previous) => quote = Some(c),
                    '[' | '{' => {
                        flow += 1;
                        deepest_flow = deepest_flow.max(flow);
                    }
                    ']' | '}' => flow = flow.saturating_sub(1),
                    _ => {}
                },
            }
            previous = c;
        }
        if indents.len() + markers + deepest_flow > limit {
            return Some(number + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_specs_are_shallow_and_deep_nesting_is_found_on_its_line() {
        let spec = "kind: command\ncommand: [\"sh\", \"-c\", \"echo {x} [ok]\"]\nparameter_settings:\n  - {x: 1}\n  \
                    - x: [1, [2, {a: 3}]]\n# [[[[[[[[\nname: 'it''s [[['\n";
        assert_eq!(line_too_deep(spec, 6), None);
        assert_eq!(line_too_deep(spec, 5), Some(5));
        assert_eq!(line_too_deep(spec, 3), Some(4));
        let flow = format!("kind: x\nx: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(line_too_deep(&flow, MAX_SPEC_DEPTH), Some(2));
        let dashes = format!("kind: x\nx:\n  {}1\n", "- ".repeat(100));
        assert_eq!(line_too_deep(&dashes, MAX_SPEC_DEPTH), Some(3));
        let blocks: String = (0..100).map(|i| format!("{}k{i}:\n", " ".repeat(i))).collect();
        assert_eq!(line_too_deep(&blocks, MAX_SPEC_DEPTH), Some(MAX_SPEC_DEPTH + 1));
    }
}
