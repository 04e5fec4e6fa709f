//! The reliability options of a spec (`timeout`, `retries`, `isolation`, `speculate`,
//! `idempotent`) and its thread counts, each checked with an error that names its key.

use taskfarm::backend::RunOptions;
use taskfarm::run_control::{parse_duration, seconds_to_duration, MAX_TIMEOUT_SECONDS};
use taskfarm::{Isolation, Value};

use super::{MAX_RETRIES, MAX_THREADS};

/// The reliability options of a spec; an error names its key and says what is wrong.
pub(super) fn run_options(
    timeout: &Option<Value>,
    retries: &Option<Value>,
    isolation: &Option<Value>,
) -> Result<RunOptions, (&'static str, String)> {
    let parsed_timeout = match timeout {
        None => None,
        Some(Value::Str(text)) => Some(parse_duration(text).map_err(|e| ("timeout", format!("`timeout`: {e}")))?),
        Some(Value::Int(n)) => seconds_in_range(*n as f64, &format!("{n}"))?,
        Some(Value::Float(x)) => seconds_in_range(*x, &format!("{x:?}"))?,
        Some(other) => {
            return Err((
                "timeout",
                format!("`timeout` must be a duration such as \"30s\" or a number of seconds, not {other}"),
            ))
        }
    };
    if timeout.is_some() && parsed_timeout.is_none() {
        return Err(("timeout", "`timeout` must be more than 0 seconds (leave it out for no limit)".into()));
    }
    let retries = match retries {
        None => 0,
        Some(Value::Int(n)) if (0..=MAX_RETRIES).contains(n) => *n as u32,
        Some(other) => {
            return Err(("retries", format!("`retries` must be a whole number from 0 to {MAX_RETRIES}, not {other}")))
        }
    };
    let isolation = match isolation {
        None => Isolation::Thread,
        Some(Value::Str(text)) => Isolation::parse(text).map_err(|e| ("isolation", e))?,
        Some(other) => {
            return Err(("isolation", format!("`isolation` must be \"thread\" or \"subprocess\", not {other}")))
        }
    };
    Ok(RunOptions { timeout: parsed_timeout, retries, isolation, threads: 1, speculate: true })
}

/// `speculate` and `idempotent`: whether a straggler may run a second copy. A process with
/// side effects (`idempotent = false`) never does; asking for both is an error.
pub(super) fn speculation(
    speculate: &Option<Value>,
    idempotent: &Option<Value>,
) -> Result<bool, (&'static str, String)> {
    let flag = |key: &'static str, value: &Option<Value>| match value {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err((key, format!("`{key}` must be true or false, not {other}"))),
    };
    match (flag("speculate", speculate)?, flag("idempotent", idempotent)?) {
        (Some(true), Some(false)) => Err((
            "speculate",
            "`speculate = true` runs a straggler twice, which `idempotent = false` forbids: leave one out".into(),
        )),
        (speculate, idempotent) => Ok(speculate.unwrap_or(true) && idempotent.unwrap_or(true)),
    }
}

/// A `timeout` given as a number of seconds: more than 0 and below
/// [`MAX_TIMEOUT_SECONDS`]; the error says which bound `shown` is past.
fn seconds_in_range(seconds: f64, shown: &str) -> Result<Option<std::time::Duration>, (&'static str, String)> {
    if seconds.is_nan() || seconds >= MAX_TIMEOUT_SECONDS {
        return Err((
            "timeout",
            format!(
                "`timeout` must be a number of seconds below {MAX_TIMEOUT_SECONDS:e} (about 31,700 years), not \
                 {shown}: leave it out for no limit"
            ),
        ));
    }
    Ok(seconds_to_duration(seconds))
}

/// A count of threads (`threads`, `threads_per_rank`): a whole number from 1 to
/// [`MAX_THREADS`]; the error is a sentence naming the key.
pub(super) fn thread_count(key: &str, value: &Option<Value>) -> Result<Option<usize>, String> {
    match value {
        None => Ok(None),
        Some(Value::Int(n)) if (1..=MAX_THREADS).contains(n) => Ok(Some(*n as usize)),
        Some(other) => Err(format!("`{key}` must be a whole number from 1 to {MAX_THREADS}, not {other}")),
    }
}

/// The sentence for processes that ask for more threads than a worker has.
pub(super) fn too_many_threads(asked: usize, limit: usize, what: &str) -> String {
    format!(
        "each process asks for {asked} threads (`threads`) but {what} {limit}: ask for at most {limit}, \
         or give each worker more threads (`threads_per_rank` / --threads-per-rank for mpi, --pool-size for local)"
    )
}
