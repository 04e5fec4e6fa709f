//! Shell quoting for the `command` kind: where a placeholder stands in a script that a shell
//! parses, and how its value is written there so that the shell reads it back as exactly
//! that text, as one word, and never as code.
//!
//! A command's script is the argument after `-c` (or an option cluster holding `c`, such as
//! `-ec`) when the program is `sh`, `bash`, `dash`, `zsh` or `ksh` (by name or path), run
//! directly or behind wrappers that run the command after their own arguments (`env A=1`,
//! `nice -n 5`, `timeout 60`, `setsid`, ...). The
//! [`Lexer`] follows the script's literal text the way the shell reads it — unquoted words,
//! `"…"`, `'…'`, `$'…'`, `$(…)`, backticks, `$((…))`, `#` comments — so that a value is
//! quoted for the place it lands in: `'v'` between words, `"'v'"` (closing and reopening
//! the double quotes) inside double quotes, `v` with each `'` as `'\''` inside single quotes.
//! Here-documents are not followed: a placeholder in one is quoted as between words.

/// The programs whose `-c` argument is a shell script.
const SHELLS: [&str; 5] = ["sh", "bash", "dash", "zsh", "ksh"];

/// A program that runs the command given after its own options and operands (`env`,
/// `nice`, `timeout 5`, ...): the shell it starts parses its script all the same.
struct Wrapper {
    name: &'static str,
    /// Its options that take the next argument as their value.
    valued: &'static [&'static str],
    /// How many operands come before the command (`timeout`'s duration, `chrt`'s priority).
    operands: usize,
}

const WRAPPERS: [Wrapper; 12] = [
    Wrapper { name: "env", valued: &["-u", "-C", "--unset", "--chdir"], operands: 0 },
    Wrapper { name: "nice", valued: &["-n", "--adjustment"], operands: 0 },
    Wrapper { name: "timeout", valued: &["-s", "-k", "--signal", "--kill-after"], operands: 1 },
    Wrapper { name: "setsid", valued: &[], operands: 0 },
    Wrapper { name: "nohup", valued: &[], operands: 0 },
    Wrapper { name: "stdbuf", valued: &["-i", "-o", "-e", "--input", "--output", "--error"], operands: 0 },
    Wrapper { name: "ionice", valued: &["-c", "-n", "--class", "--classdata"], operands: 0 },
    Wrapper { name: "taskset", valued: &[], operands: 1 },
    Wrapper { name: "chrt", valued: &["-T", "-P", "-D"], operands: 1 },
    Wrapper { name: "time", valued: &["-f", "-o", "--format", "--output"], operands: 0 },
    Wrapper { name: "busybox", valued: &[], operands: 0 },
    Wrapper { name: "exec", valued: &["-a"], operands: 0 },
];

/// The index of the program that `argv` finally runs, past wrappers such as
/// `env A=1 nice -n 5 timeout 10 ...` (their options, `env`'s assignments and their
/// operands); `None` when the command line ends before one.
fn program_index(argv: &[String]) -> Option<usize> {
    let mut i = 0;
    loop {
        let name = base_name(argv.get(i)?);
        let Some(wrapper) = WRAPPERS.iter().find(|w| w.name == name) else { return Some(i) };
        i += 1;
        while let Some(arg) = argv.get(i) {
            if arg == "--" {
                i += 1;
                break;
            }
            let option = arg.starts_with('-') && arg.len() > 1;
            let assignment = name == "env" && arg.contains('=') && !arg.starts_with('-');
            if !option && !assignment {
                break;
            }
            i += if wrapper.valued.contains(&arg.as_str()) { 2 } else { 1 };
        }
        i += wrapper.operands;
    }
}

fn base_name(program: &str) -> &str {
    program.rsplit('/').next().unwrap_or(program)
}

/// The index of the argument that a shell parses as a script, if the command is a shell
/// run with `-c` (directly or through wrappers such as `env`, `nice` or `timeout`): the
/// first argument after the shell's options, when an option cluster holds `c`.
pub fn script_index(argv: &[String]) -> Option<usize> {
    let shell = program_index(argv)?;
    if !SHELLS.contains(&base_name(&argv[shell])) {
        return None;
    }
    let mut with_c = false;
    let mut i = shell + 1;
    while let Some(arg) = argv.get(i) {
        if arg == "--" || arg == "-" {
            i += 1;
            break;
        }
        let Some(flags) = arg.strip_prefix('-').or_else(|| arg.strip_prefix('+')) else { break };
        if flags.is_empty() {
            break;
        }
        i += 1;
        if flags.starts_with('-') {
            continue; // a long option such as `--norc`
        }
        with_c |= arg.starts_with('-') && flags.contains('c');
        // `-o pipefail` and `-O extglob` take the next argument.
        if flags.ends_with('o') || flags.ends_with('O') {
            i += 1;
        }
    }
    (with_c && i < argv.len()).then_some(i)
}

/// Where a placeholder stands in a script.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    /// Between words, in the script or inside `$(…)` or backticks.
    Words,
    /// Inside `"…"`.
    Double,
    /// Inside `'…'`.
    Single,
    /// Inside `$'…'`.
    AnsiC,
    /// Inside `$((…))`.
    Arithmetic,
    /// Inside a `#` comment.
    Comment,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WordsEnd {
    Script,
    Paren,
    Backtick,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Words { end: WordsEnd, parens: u32 },
    Double,
    Single,
    AnsiC,
    Arithmetic { parens: u32 },
    Comment,
}

/// What the text before a placeholder ended with, when that changes how the shell reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Nothing,
    /// A backslash that would escape the value's first character.
    Backslash,
    /// A `$` that the shell would read together with the value (`$'…'`, `$name`).
    Dollar,
}

/// Follows a script's literal text as a shell reads it, to tell each placeholder's [`Context`].
#[derive(Debug, Clone)]
pub struct Lexer {
    stack: Vec<Frame>,
    word_start: bool,
    pending: Pending,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer {
            stack: vec![Frame::Words { end: WordsEnd::Script, parens: 0 }],
            word_start: true,
            pending: Pending::Nothing,
        }
    }
}

impl Lexer {
    fn top(&mut self) -> &mut Frame {
        if self.stack.is_empty() {
            // More closers than openers: the shell will say so; keep reading as words.
            self.stack.push(Frame::Words { end: WordsEnd::Script, parens: 0 });
        }
        let last = self.stack.len() - 1;
        &mut self.stack[last]
    }

    /// Reads literal text of the script (the text between placeholders).
    pub fn feed(&mut self, text: &str) {
        let chars: Vec<char> = text.chars().collect();
        self.pending = Pending::Nothing;
        let mut i = 0;
        while let Some(&c) = chars.get(i) {
            let next = chars.get(i + 1).copied();
            let mut step = 1;
            let mut word_start = false;
            match *self.top() {
                Frame::Comment => {
                    if c == '\n' {
                        self.stack.pop();
                        word_start = true;
                    }
                }
                Frame::Single => {
                    if c == '\'' {
                        self.stack.pop();
                    }
                }
                Frame::AnsiC => match c {
                    '\\' => step = 2,
                    '\'' => {
                        self.stack.pop();
                    }
                    _ => {}
                },
                Frame::Double => match c {
                    '\\' => step = 2,
                    '"' => {
                        self.stack.pop();
                    }
                    '`' => self.stack.push(Frame::Words { end: WordsEnd::Backtick, parens: 0 }),
                    '$' => step = self.dollar(&chars[i..], false),
                    _ => {}
                },
                Frame::Arithmetic { parens } => match c {
                    '\\' => step = 2,
                    '(' => *self.top() = Frame::Arithmetic { parens: parens + 1 },
                    ')' if parens > 0 => *self.top() = Frame::Arithmetic { parens: parens - 1 },
                    ')' if next == Some(')') => {
                        self.stack.pop();
                        step = 2;
                    }
                    '$' => step = self.dollar(&chars[i..], false),
                    _ => {}
                },
                Frame::Words { end, parens } => match c {
                    '\\' => step = 2,
                    '\'' => self.stack.push(Frame::Single),
                    '"' => self.stack.push(Frame::Double),
                    '`' if end == WordsEnd::Backtick => {
                        self.stack.pop();
                    }
                    '`' => self.stack.push(Frame::Words { end: WordsEnd::Backtick, parens: 0 }),
                    '$' => step = self.dollar(&chars[i..], true),
                    '#' if self.word_start => self.stack.push(Frame::Comment),
                    '(' => {
                        *self.top() = Frame::Words { end, parens: parens + 1 };
                        word_start = true;
                    }
                    ')' if parens > 0 => {
                        *self.top() = Frame::Words { end, parens: parens - 1 };
                        word_start = true;
                    }
                    ')' if end == WordsEnd::Paren => {
                        self.stack.pop();
                    }
                    c => word_start = c.is_whitespace() || ";&|<>".contains(c),
                },
            }
            if c == '\\' && step == 2 && next.is_none() {
                self.pending = Pending::Backslash;
            }
            self.word_start = word_start;
            i += step;
        }
    }

    /// Reads a `$` at the start of `rest`: opens `$'…'` (where `ansi_c`), `$((…))` or
    /// `$(…)`; returns how many characters it took.
    fn dollar(&mut self, rest: &[char], ansi_c: bool) -> usize {
        match (rest.get(1), rest.get(2)) {
            (None, _) => {
                self.pending = Pending::Dollar;
                1
            }
            (Some('\''), _) if ansi_c => {
                self.stack.push(Frame::AnsiC);
                2
            }
            (Some('('), Some('(')) => {
                self.stack.push(Frame::Arithmetic { parens: 0 });
                3
            }
            (Some('('), _) => {
                self.stack.push(Frame::Words { end: WordsEnd::Paren, parens: 0 });
                2
            }
            _ => 1,
        }
    }

    /// Where a placeholder read now stands, or why a value cannot be placed there safely.
    pub fn context(&self) -> Result<Context, &'static str> {
        match self.pending {
            Pending::Backslash => {
                return Err("follows a backslash, which would escape the value's first character (remove the \
                            backslash, or write `{name:raw}`)")
            }
            Pending::Dollar => {
                return Err("follows a `$`, which the shell would read together with the value (write `${{name}}` \
                            for a shell variable, or `{name:raw}`)")
            }
            Pending::Nothing => {}
        }
        Ok(match self.stack.last() {
            None | Some(Frame::Words { .. }) => Context::Words,
            Some(Frame::Double) => Context::Double,
            Some(Frame::Single) => Context::Single,
            Some(Frame::AnsiC) => Context::AnsiC,
            Some(Frame::Arithmetic { .. }) => Context::Arithmetic,
            Some(Frame::Comment) => Context::Comment,
        })
    }

    /// Notes that a placeholder's value was written: the text after it continues a word.
    pub fn placeholder(&mut self) {
        self.word_start = false;
        self.pending = Pending::Nothing;
    }

    /// How many backtick substitutions the script is inside: each level takes one more
    /// round of backslashes away before its text is parsed.
    fn backticks(&self) -> usize {
        self.stack.iter().filter(|f| matches!(f, Frame::Words { end: WordsEnd::Backtick, .. })).count()
    }

    /// `value` written so that the shell, at the current place, reads back exactly `value`.
    pub fn quote(&self, value: &str, context: Context) -> String {
        let single = || format!("'{}'", value.replace('\'', r"'\''"));
        let mut quoted = match context {
            Context::Words | Context::Arithmetic => single(),
            Context::Double => format!("\"{}\"", single()),
            Context::Single => value.replace('\'', r"'\''"),
            Context::AnsiC => format!("'{}$'", single()),
            // Nothing reads a comment; only a line break would end it.
            Context::Comment => value.replace(['\n', '\r'], " "),
        };
        for _ in 0..self.backticks() {
            quoted = quoted.replace('\\', r"\\").replace('`', r"\`").replace('$', r"\$");
        }
        quoted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn finds_the_script_of_a_shell() {
        assert_eq!(script_index(&argv(&["sh", "-c", "echo"])), Some(2));
        assert_eq!(script_index(&argv(&["/bin/bash", "-e", "-o", "pipefail", "-c", "echo", "x"])), Some(5));
        assert_eq!(script_index(&argv(&["bash", "--norc", "-ec", "echo"])), Some(3));
        assert_eq!(script_index(&argv(&["zsh", "-c", "--", "echo"])), Some(3));
        assert_eq!(script_index(&argv(&["sh", "script.sh", "-c"])), None);
        assert_eq!(script_index(&argv(&["sh", "-c"])), None);
        assert_eq!(script_index(&argv(&["python3", "-c", "print(1)"])), None);
        assert_eq!(script_index(&argv(&["ssh", "-c", "x"])), None);
        // Through wrappers: the shell they finally run parses the script all the same.
        assert_eq!(script_index(&argv(&["env", "sh", "-c", "echo"])), Some(3));
        assert_eq!(script_index(&argv(&["/usr/bin/env", "-i", "A=1", "-u", "B", "bash", "-c", "echo"])), Some(7));
        assert_eq!(script_index(&argv(&["nice", "-n", "5", "bash", "-c", "echo"])), Some(5));
        assert_eq!(script_index(&argv(&["timeout", "-s", "KILL", "5", "sh", "-c", "echo"])), Some(6));
        assert_eq!(script_index(&argv(&["setsid", "-w", "nohup", "stdbuf", "-oL", "sh", "-c", "x"])), Some(7));
        assert_eq!(script_index(&argv(&["taskset", "-c", "0,1", "chrt", "-f", "10", "dash", "-ec", "x"])), Some(8));
        assert_eq!(script_index(&argv(&["timeout", "5", "python3", "-c", "x"])), None);
        assert_eq!(script_index(&argv(&["env", "A=1"])), None);
        assert_eq!(script_index(&argv(&["timeout"])), None);
    }

    /// The context of a placeholder after `before`.
    fn at(before: &str) -> Result<Context, &'static str> {
        let mut lexer = Lexer::default();
        lexer.feed(before);
        lexer.context()
    }

    #[test]
    fn tells_where_a_placeholder_stands() {
        assert_eq!(at("echo "), Ok(Context::Words));
        assert_eq!(at("echo \"a "), Ok(Context::Double));
        assert_eq!(at("echo \"a\" "), Ok(Context::Words));
        assert_eq!(at("echo 'a \" "), Ok(Context::Single));
        assert_eq!(at("echo \\' "), Ok(Context::Words));
        assert_eq!(at("echo \"it\\\"s "), Ok(Context::Double));
        assert_eq!(at("echo \"$(cat "), Ok(Context::Words));
        assert_eq!(at("echo \"$(cat a) "), Ok(Context::Double));
        assert_eq!(at("echo $(( (1 + 2) * "), Ok(Context::Arithmetic));
        assert_eq!(at("echo $(( 1 )) "), Ok(Context::Words));
        assert_eq!(at("echo $'a\\' "), Ok(Context::AnsiC));
        assert_eq!(at("echo \"$'a "), Ok(Context::Double));
        assert_eq!(at("echo `cat "), Ok(Context::Words));
        assert_eq!(at("# it's "), Ok(Context::Comment));
        assert_eq!(at("# it's\necho "), Ok(Context::Words));
        assert_eq!(at("echo a#b "), Ok(Context::Words));
        assert_eq!(at("case x in x) echo "), Ok(Context::Words));
        assert!(at("echo \\").unwrap_err().contains("backslash"));
        assert!(at("echo $").unwrap_err().contains("`$`"));
        assert!(at("echo '$").is_ok(), "a `$` inside single quotes is a character");
    }

    #[test]
    fn quotes_for_the_context() {
        let lexer = Lexer::default();
        assert_eq!(lexer.quote("it's", Context::Words), r"'it'\''s'");
        assert_eq!(lexer.quote("it's", Context::Double), r#""'it'\''s'""#);
        assert_eq!(lexer.quote("it's", Context::Single), r"it'\''s");
        assert_eq!(lexer.quote("a\nb", Context::Comment), "a b");
        let mut lexer = Lexer::default();
        lexer.feed("echo `echo ");
        assert_eq!(lexer.quote("$x`\\", Context::Words), r"'\$x\`\\'");
    }

    /// Runs `sh -c` on `before` + the quoted value + `after`, and returns its stdout.
    fn sh(before: &str, value: &str, after: &str) -> String {
        shell("sh", before, value, after)
    }

    /// Runs `program -c` on `before` + the quoted value + `after`, and returns its stdout.
    fn shell(program: &str, before: &str, value: &str, after: &str) -> String {
        let mut lexer = Lexer::default();
        lexer.feed(before);
        let context = lexer.context().expect("a place for a value");
        let script = format!("{before}{}{after}", lexer.quote(value, context));
        let out = std::process::Command::new(program).arg("-c").arg(&script).output().expect("sh runs");
        assert!(out.status.success(), "{script}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    #[test]
    fn the_shell_reads_back_every_value_exactly() {
        let hostile = [
            "plain",
            "",
            "a; echo INJECTED",
            "$(echo INJECTED)",
            "`echo INJECTED`",
            "it's",
            "\"quoted\" \\\"",
            "two\nlines",
            "*",
            "-n",
            "\\ \\\\ $HOME ${HOME} $'x' $((1+1))",
            "'; echo INJECTED; '",
            "\"; echo INJECTED; \"",
            "#",
            "é ü \t tab",
        ];
        for value in hostile {
            assert_eq!(sh("printf '%s' ", value, ""), value, "as a word");
            assert_eq!(sh("printf '%s' \"<", value, ">\""), format!("<{value}>"), "in double quotes");
            assert_eq!(sh("printf '%s' '<", value, ">'"), format!("<{value}>"), "in single quotes");
            if Path::new("/bin/bash").exists() {
                assert_eq!(shell("bash", "printf '%s' $'<", value, ">'"), format!("<{value}>"), "in $'...'");
            }
            assert_eq!(sh("printf '%s' \"$(printf '%s' ", value, "; printf .)\""), format!("{value}."), "in $(...)");
            assert_eq!(sh("printf '%s' \"`printf '%s' ", value, "; printf .`\""), format!("{value}."), "in backticks");
            assert_eq!(sh("x=1 # ", value, "\nprintf ok"), "ok", "in a comment");
        }
    }
}
