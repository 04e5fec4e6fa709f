//! Reading the JSON object a command prints as its output, as Python's `json` module writes
//! it: standard JSON plus the bare words `NaN`, `Infinity` and `-Infinity`. Every value is
//! kept exactly: keys in their order, integers up to `u64::MAX` as integers, non-finite
//! floats as floats. Strings and numbers are decoded by `serde_json`; this module only finds
//! where each one starts and ends.

use indexmap::IndexMap;
use taskfarm::Value;

/// How deep arrays and objects may nest (as `serde_json` allows), so that hostile output
/// cannot exhaust the stack.
const MAX_DEPTH: usize = 128;

/// Parses `text`, one JSON value with nothing but whitespace around it.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut parser = Parser { text, at: 0 };
    let value = parser.value(0)?;
    parser.skip_whitespace();
    if parser.at < text.len() {
        return Err(format!("unexpected text at byte {}", parser.at + 1));
    }
    Ok(value)
}

/// Writes `value` as one line of JSON as Python's `json` module reads it: standard JSON,
/// with non-finite floats as the bare words `NaN`, `Infinity` and `-Infinity` (standard
/// JSON has no such numbers; `json.loads` reads these back as floats).
pub fn write(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::UInt(n) => out.push_str(&n.to_string()),
        Value::Float(f) if f.is_nan() => out.push_str("NaN"),
        Value::Float(f) if f.is_infinite() => out.push_str(if *f > 0.0 { "Infinity" } else { "-Infinity" }),
        Value::Float(f) => {
            out.push_str(&serde_json::Number::from_f64(*f).map_or_else(|| "null".into(), |n| n.to_string()))
        }
        Value::Str(s) => write_str(s, out),
        Value::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(item, out);
            }
            out.push(']');
        }
        Value::Map(map) => {
            out.push('{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_str(key, out);
                out.push(':');
                write(item, out);
            }
            out.push('}');
        }
    }
}

/// A JSON string literal (serde_json's escaping: no newline is ever written raw).
pub fn write_str(text: &str, out: &mut String) {
    out.push_str(&serde_json::to_string(text).unwrap_or_else(|_| "\"\"".into()));
}

struct Parser<'a> {
    text: &'a str,
    at: usize,
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.at..]
    }

    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    fn error(&self, what: &str) -> String {
        format!("{what} at byte {}", self.at + 1)
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        self.skip_whitespace();
        if self.peek() != Some(byte) {
            return Err(self.error(&format!("expected `{}`", byte as char)));
        }
        self.at += 1;
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<Value, String> {
        self.skip_whitespace();
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        for (word, value) in [
            ("true", Value::Bool(true)),
            ("false", Value::Bool(false)),
            ("null", Value::Null),
            ("NaN", Value::Float(f64::NAN)),
            ("Infinity", Value::Float(f64::INFINITY)),
            ("-Infinity", Value::Float(f64::NEG_INFINITY)),
        ] {
            if self.rest().starts_with(word) {
                self.at += word.len();
                return Ok(value);
            }
        }
        match self.peek() {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Value::Str),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("expected a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Value, String> {
        self.at += 1;
        let mut map = IndexMap::new();
        self.skip_whitespace();
        if self.peek() == Some(b'}') {
            self.at += 1;
            return Ok(Value::Map(map));
        }
        loop {
            self.skip_whitespace();
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key"));
            }
            let key = self.string()?;
            self.expect(b':')?;
            let value = self.value(depth + 1)?;
            // A repeated key keeps its first place and its last value, as serde_json does.
            map.insert(key, value);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b'}') => {
                    self.at += 1;
                    return Ok(Value::Map(map));
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Value, String> {
        self.at += 1;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.peek() == Some(b']') {
            self.at += 1;
            return Ok(Value::List(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            self.skip_whitespace();
            match self.peek() {
                Some(b',') => self.at += 1,
                Some(b']') => {
                    self.at += 1;
                    return Ok(Value::List(items));
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// A string literal starting at the current `"`, decoded by serde_json.
    fn string(&mut self) -> Result<String, String> {
        let start = self.at;
        let bytes = self.text.as_bytes();
        let mut i = start + 1;
        loop {
            match bytes.get(i) {
                None => return Err(self.error("a string is never closed")),
                Some(b'\\') => i += 2,
                Some(b'"') => break,
                Some(_) => i += 1,
            }
        }
        let literal = self.text.get(start..=i).ok_or_else(|| self.error("a string is never closed"))?;
        self.at = i + 1;
        serde_json::from_str(literal).map_err(|e| format!("{e} in the string at byte {}", start + 1))
    }

    /// A number, decoded by serde_json: whole numbers up to `u64::MAX` exactly, others as
    /// the nearest float.
    fn number(&mut self) -> Result<Value, String> {
        let start = self.at;
        while matches!(self.peek(), Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')) {
            self.at += 1;
        }
        let literal = &self.text[start..self.at];
        let number: serde_json::Number =
            serde_json::from_str(literal).map_err(|e| format!("{e} in the number at byte {}", start + 1))?;
        Ok(Value::from(serde_json::Value::Number(number)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same_as_serde(text: &str) {
        let ours = parse(text).expect("parses");
        let theirs = Value::from(serde_json::from_str::<serde_json::Value>(text).expect("serde parses"));
        assert_eq!(ours, theirs, "{text}");
    }

    #[test]
    fn reads_standard_json_as_serde_json_does() {
        for text in [
            r#"{"a": 1, "b": [true, false, null], "c": {"d": "e\"\\\u00e9\n"}, "f": -0.5e3, "g": 1e-7}"#,
            r#"  {"z": 1, "a": 2, "z": 3}  "#,
            "[]",
            "{}",
            r#""text""#,
            "18446744073709551615",
            "-9223372036854775808",
        ] {
            same_as_serde(text);
        }
        assert_eq!(parse("18446744073709551615").unwrap(), Value::UInt(u64::MAX));
    }

    #[test]
    fn reads_python_non_finite_floats() {
        let Value::Map(map) = parse(r#"{"a": NaN, "b": Infinity, "c": [-Infinity], "d": "NaN"}"#).unwrap() else {
            panic!("a map")
        };
        assert!(matches!(map["a"], Value::Float(f) if f.is_nan()));
        assert_eq!(map["b"], Value::Float(f64::INFINITY));
        assert_eq!(map["c"], Value::List(vec![Value::Float(f64::NEG_INFINITY)]));
        assert_eq!(map["d"], Value::from("NaN"), "a string stays a string");
        // Keys are data: a key that looks like the journal's tag of a float stays a key.
        assert_eq!(
            parse(r#"{"$float": "NaN"}"#).unwrap(),
            Value::Map([("$float".to_owned(), Value::from("NaN"))].into_iter().collect())
        );
    }

    #[test]
    fn writes_what_it_reads() {
        let text = r#"{"a":1,"b":[true,null,-0.5,NaN,Infinity,-Infinity],"c":{"d":"e\"\n"},"u":18446744073709551615}"#;
        let value = parse(text).unwrap();
        let mut out = String::new();
        write(&value, &mut out);
        assert_eq!(out, text);
        let mut out = String::new();
        write(&Value::Float(0.1), &mut out);
        assert_eq!(out, "0.1");
    }

    #[test]
    fn rejects_what_is_not_json() {
        for text in
            ["{", "{\"a\"}", "{\"a\": }", "[1,]", "{'a': 1}", "nan", "01", "1.", "\"abc", "{} x", "[1 2]", "Infinit"]
        {
            assert!(parse(text).is_err(), "{text}");
        }
        assert!(parse(&"[".repeat(10_000)).unwrap_err().contains("nested too deeply"));
    }
}
