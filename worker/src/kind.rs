//! What a process kind is: the [`Kind`] trait a kind implements, what it is given to check
//! a spec ([`KindSpec`]), its errors ([`KindError`]) and the check of its fields
//! ([`check_keys`]). A leaf of the crate: the registry and the built-in kinds both use it,
//! and it uses neither.

use taskfarm::{Params, ProcessContext, ProcessError, Value};

/// A kind of process a spec can name: how to check a spec's fields, and how to run one
/// process from them.
///
/// Most users do not implement this trait: [`Registry::register`](crate::Registry::register) turns any [`Process`](taskfarm::Process)
/// type into a kind. Implement it for kinds that read their fields by hand, like the
/// built-in `command`.
pub trait Kind: Send + Sync + 'static {
    /// The name a spec uses in `kind = "..."`.
    fn name(&self) -> &str;

    /// Whether the kind takes the spec's `[constants]` table among its fields too (a
    /// persistent program gets them at start-up, before any process), besides every
    /// process seeing them with its parameters.
    fn takes_constants(&self) -> bool {
        false
    }

    /// One line of help, shown by `taskfarm-worker kinds`.
    fn help(&self) -> &str;

    /// Checks a spec before anything runs: its fields (every top-level key that is not one of
    /// [`crate::spec::SPEC_KEYS`]) and its parameters. A key the kind does not take must be an error.
    fn validate(&self, spec: &KindSpec<'_>) -> Result<(), KindError>;

    /// Checks that a process could be made of the parameters `params` (another combination
    /// than [`KindSpec::first`], e.g. each value of a range), after [`validate`](Self::validate)
    /// passed: cheap, as it runs for up to thousands of values. The default accepts them.
    fn check_values(&self, config: &Params, params: &Params) -> Result<(), KindError> {
        let _ = (config, params);
        Ok(())
    }

    /// The placeholders the kind's templates in `config` name, when it has templates: a
    /// plain top-level value of a spec (a number, string or boolean) that is not one of the
    /// kind's fields and that a template names (`steps = 3000` with `{steps}`) is then a
    /// constant, a parameter every process has. `None` (the default): every top-level key
    /// is the kind's.
    fn placeholders(&self, _config: &Params) -> Option<Vec<String>> {
        None
    }

    /// What one process will run, for `validate --show`: lines such as the argv of a
    /// command, with the placeholders filled in (the result directory is not known yet).
    /// The default shows nothing beyond the parameters.
    fn preview(&self, _config: &Params, _id: u64, _run: u32, _params: &Params) -> Vec<String> {
        Vec::new()
    }

    /// Whether the kind stops its processes at their deadline by itself, so a `timeout`
    /// works in thread isolation (the `command` kind kills its child process group). Kinds
    /// that say `false` (the default) need `isolation = "subprocess"` for a timeout.
    fn enforces_timeout(&self) -> bool {
        false
    }

    /// Runs one process: `config` is the spec's fields, `ctx` has the process's parameters,
    /// id and run number. The output's fields become columns of `results.csv`.
    fn run(&self, config: &Params, ctx: &ProcessContext<'_>) -> Result<Value, ProcessError>;
}

/// What [`Kind::validate`] is shown of a spec.
#[derive(Debug, Clone, Copy)]
pub struct KindSpec<'a> {
    /// The kind's own fields, as written in the spec.
    pub config: &'a Params,
    /// The names of the parameters the processes will get, in spec order.
    pub parameter_names: &'a [String],
    /// The parameters of the first process (so a kind can try a real combination).
    pub first: &'a Params,
}

/// Why a spec does not suit a kind: a sentence, and the spec key it is about (so the
/// message can name the line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KindError {
    /// The top-level key of the spec the error is about, if any.
    pub key: Option<String>,
    /// What is wrong, as a sentence.
    pub message: String,
}

impl KindError {
    /// An error about the spec as a whole.
    pub fn new(message: impl Into<String>) -> Self {
        KindError { key: None, message: message.into() }
    }

    /// An error about the spec key `key`.
    pub fn at(key: impl Into<String>, message: impl Into<String>) -> Self {
        KindError { key: Some(key.into()), message: message.into() }
    }
}

impl std::fmt::Display for KindError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Checks that every key of `config` is one of `allowed`: for kinds that read their fields
/// by hand. The error names the first unknown key and the ones the kind takes.
pub fn check_keys(kind: &str, config: &Params, allowed: &[&str]) -> Result<(), KindError> {
    match config.keys().find(|k| !allowed.contains(&k.as_str())) {
        None => Ok(()),
        Some(key) => Err(KindError::at(key, unknown_key_message(kind, key, allowed.iter().copied()))),
    }
}

fn unknown_key_message<'a>(kind: &str, key: &str, allowed: impl Iterator<Item = &'a str>) -> String {
    let allowed: Vec<&str> = allowed.collect();
    let takes = if allowed.is_empty() { "no fields of its own".to_owned() } else { allowed.join(", ") };
    let spec_keys = crate::spec::SPEC_KEYS.join(", ");
    format!("`{key}` is not a spec key: the spec keys are {spec_keys}, and kind `{kind}` takes {takes}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_keys_names_the_unknown_key() {
        let config: Params = [("colour".to_owned(), Value::Int(1))].into_iter().collect();
        let err = check_keys("command", &config, &["command"]).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("colour"));
        assert!(err.message.contains("`colour`") && err.message.contains("takes command"), "{err}");
    }
}
