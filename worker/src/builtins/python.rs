//! The built-in kind `python`: a Python function per process, called in a persistent
//! interpreter per worker slot (the [`jsonl`](crate::jsonl) kind's machinery, with a shim
//! that taskfarm ships inside the worker binary and runs as `python3 -c <shim>`: nothing to
//! install).
//!
//! ```toml
//! kind = "python"
//! file = "examples/python/sim.py"   # or module = "sim" (imported from the working directory, PYTHONPATH, `path`)
//! function = "run"                  # called with the parameters as keyword arguments
//! setup = "load"                    # optional: called once per interpreter; its result is `state=`
//! python = "python3"                # optional: the interpreter
//! path = ["lib"]                    # optional: directories put in front of sys.path
//! startup_timeout = "5m"            # optional: how long import and setup may take
//! [constants]                       # optional: keyword arguments of every call (and of setup)
//! scale = 2.0
//! ```
//!
//! `function` is called with the process's parameters and the constants it takes as keyword
//! arguments, and with `run`, `id`, `worker`, `scratch_dir` (created when taken) and `state`
//! (what `setup` returned) when its signature names them. It returns a dict (its items are
//! the output's fields), another value (the one field `output`) or None (no fields).
//! NaN and infinities, numpy scalars and arrays, tuples and sets become ordinary values. An
//! exception is a crash of that process with `Type: message` as its reason and the
//! traceback as its stderr tail; the interpreter goes on. `print` goes to stderr (stdout
//! carries the protocol).
//!
//! The module is imported once at validation (`taskfarm-worker validate` and `run`), so a
//! missing module or function is an error before anything runs; `setup` runs only in the
//! worker slots. Faults and timeouts are the `jsonl` kind's.

use taskfarm::{Params, ProcessContext, ProcessError, Value};

use crate::jsonl::{constants, duration_field, program_exists, Pool, ProgramSpec};
use crate::kind::{check_keys, Kind, KindError, KindSpec};

/// The shim, run as `python3 -c SHIM --function NAME ...`.
const SHIM: &str = include_str!("python_shim.py");

/// How long validation waits for the module to import.
const CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// The built-in `python` kind.
#[derive(Debug, Clone, Copy, Default)]
pub struct PythonKind;

const FIELDS: [&str; 8] = ["module", "file", "function", "setup", "python", "path", "startup_timeout", "constants"];

/// A string field, if given.
fn string<'a>(config: &'a Params, key: &str) -> Result<Option<&'a str>, KindError> {
    match config.get(key) {
        None => Ok(None),
        Some(Value::Str(s)) if !s.trim().is_empty() => Ok(Some(s)),
        Some(other) => Err(KindError::at(key, format!("`{key}` must be a non-empty string, not {other}"))),
    }
}

impl PythonKind {
    /// The interpreter's argv and the rest of the program's spec.
    fn spec(config: &Params) -> Result<ProgramSpec, KindError> {
        let python = string(config, "python")?.unwrap_or("python3");
        let function = string(config, "function")?.ok_or_else(|| {
            KindError::new("kind `python` needs a `function` field: the function called for each process, e.g. \"run\"")
        })?;
        let mut argv = vec![python.to_owned(), "-c".to_owned(), SHIM.to_owned()];
        let label =
            match (string(config, "module")?, string(config, "file")?) {
                (Some(module), None) => {
                    argv.extend(["--module".to_owned(), module.to_owned()]);
                    format!("`{python}` running {module}.{function}")
                }
                (None, Some(file)) => {
                    argv.extend(["--file".to_owned(), file.to_owned()]);
                    format!("`{python}` running {function} of {file}")
                }
                (Some(_), Some(_)) => return Err(KindError::at("file", "give `module` or `file`, not both")),
                (None, None) => return Err(KindError::new(
                    "kind `python` needs `module` (a module name, e.g. \"sim\") or `file` (a path, e.g. \"sim.py\")",
                )),
            };
        argv.extend(["--function".to_owned(), function.to_owned()]);
        if let Some(setup) = string(config, "setup")? {
            argv.extend(["--setup".to_owned(), setup.to_owned()]);
        }
        match config.get("path") {
            None => {}
            Some(Value::List(items)) if items.iter().all(|i| i.as_str().is_some()) => {
                let mut text = String::new();
                crate::json::write(&Value::List(items.clone()), &mut text);
                argv.extend(["--path".to_owned(), text]);
            }
            Some(other) => {
                return Err(KindError::at("path", format!("`path` must be a list of directories, not {other}")))
            }
        }
        let (_, constants_json) = constants(config)?;
        argv.extend(["--constants".to_owned(), constants_json.clone()]);
        Ok(ProgramSpec {
            argv,
            label,
            kind: "python",
            ready_line: true,
            startup_timeout: duration_field(config, "startup_timeout")?,
            constants_json,
        })
    }
}

impl Kind for PythonKind {
    fn takes_constants(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        "python"
    }

    fn help(&self) -> &str {
        "a Python function per process in a persistent interpreter per worker slot, e.g. file = \"sim.py\", \
         function = \"run\" (keyword arguments: the parameters), setup = \"load\" (once per interpreter, passed as \
         state=)"
    }

    fn enforces_timeout(&self) -> bool {
        true
    }

    fn validate(&self, spec: &KindSpec<'_>) -> Result<(), KindError> {
        check_keys("python", spec.config, &FIELDS)?;
        let program = Self::spec(spec.config)?;
        let python = program.argv.first().map_or("python3", String::as_str);
        if !program_exists(python) {
            return Err(KindError::at(
                if spec.config.contains_key("python") { "python" } else { "function" },
                format!("the Python interpreter `{python}` is not found (set `python` to its path)"),
            ));
        }
        let key = if spec.config.contains_key("file") { "file" } else { "module" };
        // Imports the module and looks the functions up, without running setup.
        let mut command = std::process::Command::new(python);
        command.args(program.argv.get(1..).unwrap_or_default()).arg("--check");
        let deadline = std::time::Instant::now() + CHECK_TIMEOUT;
        let outcome = taskfarm::process_tools::run_with_deadline(command, None, Some(deadline), true)
            .map_err(|e| KindError::at(key, format!("the Python interpreter `{python}` could not be started: {e}")))?;
        match outcome.status {
            Some(status) if status.success() => Ok(()),
            Some(_) => {
                let stderr = String::from_utf8_lossy(&outcome.stderr);
                let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message").trim();
                Err(KindError::at(key, format!("{} cannot be loaded: {last}", program.label)))
            }
            None => Err(KindError::at(
                key,
                format!("importing the module of {} took more than {} s", program.label, CHECK_TIMEOUT.as_secs()),
            )),
        }
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
    use std::time::{Duration, Instant};
    use taskfarm::backend::Location;

    fn module(dir: &Path, source: &str) -> Params {
        let file = dir.join("m.py");
        std::fs::write(&file, source).unwrap();
        [
            ("file".to_owned(), Value::from(file.to_string_lossy().into_owned())),
            ("function".to_owned(), Value::from("run")),
            ("setup".to_owned(), Value::from("load")),
            ("constants".to_owned(), Value::Map([("scale".to_owned(), Value::Int(10))].into_iter().collect())),
        ]
        .into_iter()
        .collect()
    }

    fn run(config: &Params, id: u64, params: &Params) -> Result<Value, ProcessError> {
        let here = Location::here("test");
        let ctx = ProcessContext::new(id, 1, params, Path::new("/tmp"), &here)
            .with_deadline(Some(Instant::now() + Duration::from_secs(60)));
        PythonKind.run(config, &ctx)
    }

    fn x(v: f64) -> Params {
        [("x".to_owned(), Value::Float(v))].into_iter().collect()
    }

    #[test]
    fn calls_the_function_with_parameters_constants_and_state() {
        let dir = tempfile::tempdir().unwrap();
        let config = module(
            dir.path(),
            "import os, math\n\
             def load(scale):\n    return {'pid': os.getpid(), 'scale': scale}\n\
             def run(x, scale, state, run):\n    print('noise on stdout')\n    \
             if x < 0:\n        raise ValueError('negative')\n    \
             return {'y': x * scale, 'pid': state['pid'], 'run': run, 'nan': math.nan, 't': (1, 2)}\n",
        );
        let first = PythonKind.validate(&KindSpec { config: &config, parameter_names: &[], first: &Params::new() });
        assert!(first.is_ok(), "{first:?}");
        let Value::Map(a) = run(&config, 0, &x(1.5)).unwrap() else { panic!("a map") };
        assert_eq!(a["y"], Value::Float(15.0));
        assert_eq!(a["run"], Value::Int(1));
        assert!(matches!(a["nan"], Value::Float(f) if f.is_nan()));
        assert_eq!(a["t"], Value::List(vec![Value::Int(1), Value::Int(2)]));
        let Value::Map(b) = run(&config, 1, &x(2.0)).unwrap() else { panic!("a map") };
        assert_eq!(a["pid"], b["pid"], "setup ran once: one interpreter");
        let err = run(&config, 2, &x(-1.0)).unwrap_err();
        assert_eq!(err.reason, "ValueError: negative");
        let tail = err.stderr_tail.unwrap_or_default();
        assert!(tail.contains("Traceback") && tail.contains("noise on stdout"), "{tail}");
    }

    #[test]
    fn validation_imports_the_module() {
        let dir = tempfile::tempdir().unwrap();
        let check =
            |config: &Params| PythonKind.validate(&KindSpec { config, parameter_names: &[], first: &Params::new() });
        let broken = module(dir.path(), "import no_such_module_xyz\n");
        let err = check(&broken).unwrap_err();
        assert_eq!(err.key.as_deref(), Some("file"));
        assert!(err.message.contains("No module named 'no_such_module_xyz'"), "{err}");
        let no_function = module(dir.path(), "def load():\n    pass\n");
        assert!(check(&no_function).unwrap_err().message.contains("no function `run`"));
        let mut both = module(dir.path(), "");
        both.insert("module".into(), Value::from("m"));
        assert!(check(&both).unwrap_err().message.contains("not both"));
    }
}
