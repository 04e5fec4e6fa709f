//! The built-in kind `jsonl`: a long-lived program per worker slot that runs many
//! processes, one JSON line in and one JSON line out each (the protocol is in
//! `PROTOCOL.md` at the repository's root).
//!
//! ```toml
//! kind = "jsonl"
//! program = ["python3", "sim.py"]     # or one string, run with sh -c
//! ready = true                        # optional: the program prints {"ready": true} once started
//! startup_timeout = "5m"              # optional: how long the start-up may take
//! [constants]                         # optional: sent with every process
//! data = "big.npy"
//! ```
//!
//! **One program per worker slot.** Each thread that runs processes (a thread of the local
//! pool, an MPI worker rank, a thread of a rank with `threads_per_rank > 1`) starts the
//! program at its first process and keeps it for the next ones: `Pool` holds it in a
//! thread-local slot. A slot keeps one program; a process of another spec (other argv)
//! replaces it. The program runs as a command does: in a process group of its own,
//! registered with the guardian, so it dies with the worker, and it is closed (stdin
//! closed, then killed 200 ms later) when its thread ends.
//!
//! **Start-up.** With `ready = true` the first process waits for the program's ready line
//! (bounded by `startup_timeout`) before it is sent, and that wait is left out of the
//! process's duration ([`ProcessContext::exclude_setup`]) and logged in `operation.log`.
//! With `ready = false` (the default) the program is taken as ready when it starts.
//!
//! **Faults.** A program that exits while it runs a process costs that process (crashed,
//! with the exit status or signal and the end of its stderr) and is started again for the
//! next one. A program that exits before it is ready (with `ready = false`: before its
//! first answer), when no program of this spec was ever ready in this worker, stops the
//! run with one error ([`ProcessError::cannot_run`]). Past the process's `timeout` the
//! program is killed with its group and started again for the next process. A line that
//! is not a reply (not JSON, not an object, another id) is a crash that names the line,
//! and the program is started again (it is out of step). A process that is run again
//! (`retries`) after it failed in this slot runs on a fresh instance of the program.

mod protocol;

use std::time::Duration;

use taskfarm::{Params, ProcessContext, ProcessError, Value};

use crate::json;
use crate::kind::{check_keys, Kind, KindError, KindSpec};

pub(crate) use protocol::{Pool, ProgramSpec};

/// Reads the `constants` table of a spec as a JSON object.
pub(crate) fn constants(config: &Params) -> Result<(Params, String), KindError> {
    let table = match config.get("constants") {
        None => Params::new(),
        Some(Value::Map(map)) => map.clone(),
        Some(other) => {
            return Err(KindError::at(
                "constants",
                format!("`constants` must be a table, such as [constants] followed by data = \"x.npy\", not {other}"),
            ))
        }
    };
    let mut json_text = String::new();
    json::write(&Value::Map(table.clone()), &mut json_text);
    Ok((table, json_text))
}

/// Reads an optional duration field such as `startup_timeout = "5m"`.
pub(crate) fn duration_field(config: &Params, key: &str) -> Result<Option<Duration>, KindError> {
    let wrong = |why: String| KindError::at(key, format!("`{key}`: {why}"));
    match config.get(key) {
        None => Ok(None),
        Some(Value::Str(text)) => taskfarm::run_control::parse_duration(text).map(Some).map_err(wrong),
        Some(value) => match value.as_f64().and_then(taskfarm::run_control::seconds_to_duration) {
            Some(d) => Ok(Some(d)),
            None => Err(wrong(format!("{value} is not a positive number of seconds"))),
        },
    }
}

/// The built-in `jsonl` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonlKind;

const FIELDS: [&str; 4] = ["program", "ready", "startup_timeout", "constants"];

impl JsonlKind {
    fn spec(config: &Params) -> Result<ProgramSpec, KindError> {
        let wrong = || {
            KindError::at(
                "program",
                "`program` must be a non-empty list of strings, such as [\"python3\", \"sim.py\"], or one string to \
                 run with sh -c",
            )
        };
        let argv: Vec<String> = match config.get("program") {
            None => {
                return Err(KindError::new(
                    "kind `jsonl` needs a `program` field, such as program = [\"python3\", \"sim.py\"]",
                ))
            }
            Some(Value::Str(line)) if !line.trim().is_empty() => vec!["sh".into(), "-c".into(), line.clone()],
            Some(Value::List(items)) if !items.is_empty() => {
                items.iter().map(|item| item.as_str().map(str::to_owned).ok_or_else(wrong)).collect::<Result<_, _>>()?
            }
            Some(_) => return Err(wrong()),
        };
        let ready_line = match config.get("ready") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => return Err(KindError::at("ready", format!("`ready` must be true or false, not {other}"))),
        };
        let (_, constants_json) = constants(config)?;
        Ok(ProgramSpec {
            label: format!("`{}`", argv.join(" ")),
            argv,
            kind: "jsonl",
            ready_line,
            startup_timeout: duration_field(config, "startup_timeout")?,
            constants_json,
        })
    }
}

/// Whether `program` names a program that exists: a path to a file, or a name on `PATH`.
pub(crate) fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return std::path::Path::new(program).is_file();
    }
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}

impl Kind for JsonlKind {
    fn takes_constants(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        "jsonl"
    }

    fn help(&self) -> &str {
        "a long-lived program per worker slot, one JSON line in and out per process (see PROTOCOL.md), e.g. \
         program = [\"python3\", \"sim.py\"]"
    }

    fn enforces_timeout(&self) -> bool {
        true
    }

    fn validate(&self, spec: &KindSpec<'_>) -> Result<(), KindError> {
        check_keys("jsonl", spec.config, &FIELDS)?;
        let program = Self::spec(spec.config)?;
        if let Some(name) = program.argv.first().filter(|p| !program_exists(p)) {
            return Err(KindError::at("program", format!("the program `{name}` of `program` is not found")));
        }
        Ok(())
    }

    fn run(&self, config: &Params, ctx: &ProcessContext<'_>) -> Result<Value, ProcessError> {
        let spec = Self::spec(config).map_err(|e| ProcessError::msg(e.message))?;
        Pool::run(&spec, ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Instant;
    use taskfarm::backend::Location;

    fn config(program: &str, ready: bool) -> Params {
        [("program".to_owned(), Value::from(program)), ("ready".to_owned(), Value::Bool(ready))].into_iter().collect()
    }

    fn run(config: &Params, id: u64, params: &Params, timeout: Option<Duration>) -> Result<Value, ProcessError> {
        let here = Location::here("test");
        let ctx = ProcessContext::new(id, 0, params, Path::new("/tmp"), &here)
            .with_deadline(timeout.map(|t| Instant::now() + t));
        JsonlKind.run(config, &ctx)
    }

    /// A shell program that answers every request with its pid, or as the parameter `do` says.
    const ECHO: &str = r#"echo '{"ready": true}'; while read -r line; do
        id=${line#*\"id\":}; id=${id%%,*}
        case "$line" in
          *'"do":"exit"'*) echo dying >&2; exit 7 ;;
          *'"do":"junk"'*) echo 'not json' ;;
          *'"do":"fail"'*) echo oops >&2; echo "{\"id\": $id, \"error\": \"failed on purpose\"}" ;;
          *'"do":"sleep"'*) sleep 30 ;;
          *) echo "{\"id\": $id, \"output\": {\"pid\": $$}}" ;;
        esac
    done"#;

    fn with(what: &str) -> Params {
        [("do".to_owned(), Value::from(what))].into_iter().collect()
    }

    fn pid_of(value: Value) -> i64 {
        let Value::Map(map) = value else { panic!("a map: {value:?}") };
        map["pid"].as_i64().expect("a pid")
    }

    #[test]
    fn one_program_serves_many_processes_and_faults_cost_one_process() {
        // Distinct argv per test: the start states are per argv in this test program.
        let config = config(&format!("{ECHO} # faults"), true);
        let first = pid_of(run(&config, 1, &Params::new(), None).unwrap());
        assert_eq!(pid_of(run(&config, 2, &Params::new(), None).unwrap()), first, "the same program");
        // An error reply: crashed, with its stderr; a retry of it runs on a fresh program.
        let err = run(&config, 3, &with("fail"), None).unwrap_err();
        assert_eq!(err.reason, "failed on purpose");
        assert_eq!(err.stderr_tail.as_deref(), Some("oops"));
        let again = pid_of(run(&config, 3, &Params::new(), None).unwrap());
        assert_ne!(again, first, "a retry runs on a fresh instance");
        // The program exits: that process crashes with the status, the next one runs.
        let err = run(&config, 4, &with("exit"), None).unwrap_err();
        assert!(err.reason.contains("exited with status 7") && !err.reason.contains(CANNOT), "{err}");
        assert_eq!(err.stderr_tail.as_deref(), Some("dying"));
        let after_exit = pid_of(run(&config, 5, &Params::new(), None).unwrap());
        assert_ne!(after_exit, again);
        // A malformed line names it, and the program is replaced.
        let err = run(&config, 6, &with("junk"), None).unwrap_err();
        assert!(err.reason.contains("`not json`"), "{err}");
        assert_ne!(pid_of(run(&config, 7, &Params::new(), None).unwrap()), after_exit);
        // A timeout kills the program, and the next process gets a new one.
        let err = run(&config, 8, &with("sleep"), Some(Duration::from_millis(300))).unwrap_err();
        assert!(err.timed_out && err.reason.contains("ran past its timeout"), "{err}");
        pid_of(run(&config, 9, &Params::new(), None).unwrap());
    }

    const CANNOT: &str = taskfarm::process_tools::CANNOT_RUN_MARK;

    #[test]
    fn a_program_that_exits_at_start_up_is_one_error() {
        let config = config("echo 'no such module' >&2; exit 1 # start-up", true);
        let err = run(&config, 0, &Params::new(), None).unwrap_err();
        assert!(err.reason.starts_with(CANNOT), "{err}");
        assert!(err.reason.contains("exited with status 1 before it was ready: no such module"), "{err}");
        // Every later process fails at once with the same reason, without a new start.
        let again = run(&config, 1, &Params::new(), None).unwrap_err();
        assert_eq!(again.reason, err.reason);
        let missing: Params = [("program".to_owned(), Value::List(vec![Value::from("/nonexistent/taskfarm-prog")]))]
            .into_iter()
            .collect();
        let err = run(&missing, 0, &Params::new(), None).unwrap_err();
        assert!(err.reason.starts_with(CANNOT) && err.reason.contains("could not be started"), "{err}");
    }

    #[test]
    fn a_program_without_a_ready_line_that_exits_before_its_first_reply_is_one_error() {
        let dies = config("echo 'cannot load model' >&2; exit 4 # no ready line", false);
        let err = run(&dies, 0, &Params::new(), None).unwrap_err();
        assert!(err.reason.starts_with(CANNOT), "{err}");
        assert!(err.reason.contains("exited with status 4 before its first reply: cannot load model"), "{err}");
        let again = run(&dies, 1, &Params::new(), None).unwrap_err();
        assert_eq!(again.reason, err.reason, "later processes fail at once with the same reason");
        // Once a program of the spec has replied, a program that dies costs only its process.
        let once = config(
            r#"read -r line; id=${line#*\"id\":}; id=${id%%,*}; echo "{\"id\": $id}"; read -r line; echo bye >&2; exit 5 # replies once"#,
            false,
        );
        run(&once, 0, &Params::new(), None).unwrap();
        let err = run(&once, 1, &Params::new(), None).unwrap_err();
        assert!(
            err.reason.contains("exited with status 5 while it ran this process") && !err.reason.contains(CANNOT),
            "{err}"
        );
    }

    #[test]
    fn requests_carry_everything_and_outputs_keep_their_values() {
        let config = config(
            r#"while read -r line; do id=${line#*\"id\":}; id=${id%%,*}; printf '{"id": %s, "output": {"x": NaN, "echo": %s}}\n' "$id" "$line"; done"#,
            false,
        );
        let params: Params = [("a".to_owned(), Value::Float(f64::INFINITY)), ("s".to_owned(), Value::from("x\"y\n"))]
            .into_iter()
            .collect();
        let Value::Map(out) = run(&config, 5, &params, None).unwrap() else { panic!("a map") };
        assert!(matches!(out["x"], Value::Float(f) if f.is_nan()));
        let Value::Map(echo) = &out["echo"] else { panic!("the request") };
        assert_eq!(echo["id"], Value::Int(5));
        assert_eq!(echo["params"], Value::Map(params));
        assert_eq!(echo["constants"], Value::Map(Params::new()));
        assert_eq!(echo["scratch_dir"], Value::from("/tmp/scratch/5"));
    }

    #[test]
    fn validation_checks_the_fields() {
        let check = |config: Params| {
            let first = Params::new();
            JsonlKind.validate(&KindSpec { config: &config, parameter_names: &[], first: &first })
        };
        assert!(check(config("cat", false)).is_ok());
        let missing: Params =
            [("program".to_owned(), Value::List(vec![Value::from("no-such-program-xyz")]))].into_iter().collect();
        assert!(check(missing).unwrap_err().message.contains("not found"));
        let mut bad = config("cat", false);
        bad.insert("startup_timeout".into(), Value::from("soon"));
        assert_eq!(check(bad).unwrap_err().key.as_deref(), Some("startup_timeout"));
        let mut bad = config("cat", false);
        bad.insert("colour".into(), Value::Int(1));
        assert_eq!(check(bad).unwrap_err().key.as_deref(), Some("colour"));
    }
}
