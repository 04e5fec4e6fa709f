//! Tests of the real `taskfarm-worker` binary: the example specs run on the serial and local
//! backends with the same rows, crashed commands are records and exit 1, and every kind of
//! bad input is one clear sentence on stderr with exit status 2 and no panic.

mod common;

use std::path::Path;
use std::process::Output;

use common::{result_dir, specs_dir, text, worker, worker_no_panic};

/// The data rows of `results.csv` (no cell of these tests spans lines).
fn csv_rows(dir: &Path) -> Vec<String> {
    let csv = std::fs::read_to_string(dir.join("results.csv")).expect("results.csv is readable");
    csv.lines().skip(1).map(str::to_owned).collect()
}

/// The process count `validate` reports.
fn validated_count(spec: &Path) -> usize {
    let out = worker(&["validate", &spec.to_string_lossy()], Path::new("."));
    assert_eq!(out.status.code(), Some(0), "validate: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("processes: ")).expect("a processes line");
    line["processes: ".len()..].split(' ').next().and_then(|n| n.parse().ok()).expect("a count")
}

fn run_spec(spec: &Path, backend: &str, base: &Path) -> Output {
    worker_no_panic(
        // -vv: operation.log takes the processes' DEBUG lines too.
        &["run", &spec.to_string_lossy(), "--backend", backend, "--results", &base.to_string_lossy(), "--quiet", "-vv"],
        Path::new("."),
    )
}

#[test]
fn command_sweep_gives_the_same_rows_on_local_and_serial() {
    let spec = specs_dir().join("command_sweep.toml");
    let expected = validated_count(&spec);
    assert!(expected > 1);
    let base = tempfile::tempdir().expect("a temporary directory");
    let serial_base = base.path().join("serial");
    let local_base = base.path().join("local");
    let serial = run_spec(&spec, "serial", &serial_base);
    assert_eq!(serial.status.code(), Some(0), "{}", text(&serial.stderr));
    let local = run_spec(&spec, "local", &local_base);
    assert_eq!(local.status.code(), Some(0), "{}", text(&local.stderr));
    let stdout = text(&local.stdout);
    assert!(stdout.contains(&format!("{expected} finished, 0 crashed of {expected}")), "{stdout}");
    assert!(stdout.contains("results.csv"), "{stdout}");

    let serial_dir = result_dir(&serial_base, "command_sweep");
    let local_dir = result_dir(&local_base, "command_sweep");
    assert_eq!(csv_rows(&local_dir).len(), expected, "one row per process");
    assert_eq!(csv_rows(&serial_dir).len(), expected, "one row per process");
    backend_core::testing::assert_same_results(&serial_dir, &local_dir);
    // The command's JSON line became output columns.
    let header = std::fs::read_to_string(local_dir.join("results.csv")).expect("results.csv");
    assert!(header.lines().next().unwrap_or_default().contains(",product,seed,"), "{header}");
    // operation.log holds the master's records and one record per process, naming it.
    let log = std::fs::read_to_string(local_dir.join("operation.log")).expect("operation.log");
    assert!(log.contains("master process=- taskfarm: operation `command_sweep` staged"), "{log}");
    assert!(log.contains("consolidated: "), "{log}");
    for id in 0..expected {
        assert!(log.contains(&format!(" process={id} taskfarm_worker::command: `sh` exited with status 0")), "{log}");
    }
}

#[test]
fn in_process_specs_run_on_both_backends() {
    let base = tempfile::tempdir().expect("a temporary directory");
    for (file, name) in [("pi.toml", "pi"), ("pi.yaml", "pi_yaml")] {
        let spec = specs_dir().join(file);
        let expected = validated_count(&spec);
        for backend in ["serial", "local"] {
            let results = base.path().join(backend);
            let out = run_spec(&spec, backend, &results);
            assert_eq!(out.status.code(), Some(0), "{file} on {backend}: {}", text(&out.stderr));
            let rows = csv_rows(&result_dir(&results, name));
            assert_eq!(rows.len(), expected, "{file} on {backend}");
            assert!(rows.iter().all(|r| r.contains(",finished,")), "{rows:?}");
        }
        backend_core::testing::assert_same_results(
            &result_dir(&base.path().join("serial"), name),
            &result_dir(&base.path().join("local"), name),
        );
    }
}

#[test]
fn a_failing_command_is_one_crashed_row_and_exit_1() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("fail.toml"),
        r#"kind = "command"
command = ["sh", "-c", "if [ {x} -eq 3 ]; then echo 'x is three' >&2; exit 3; fi; echo x={x}"]
parameter_ranges = { x = [1, 2, 3, 4] }
"#,
    )
    .expect("the spec is written");
    let out = worker(&["run", "fail.toml", "--quiet"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("3 finished, 1 crashed of 4"), "{}", text(&out.stdout));
    let result = result_dir(&dir.path().join("results"), "fail");
    let rows = csv_rows(&result);
    assert_eq!(rows.len(), 4);
    assert!(rows[2].contains(",crashed,") && rows[2].contains("exited with status 3"), "{rows:?}");
    assert!(rows[0].contains(",finished,") && rows[0].contains("x=1"), "{rows:?}");
    let crashed = std::fs::read_to_string(result.join("crashed.jsonl")).expect("crashed.jsonl");
    assert_eq!(crashed.lines().count(), 1);
    assert!(crashed.contains("x is three"), "the stderr tail is kept: {crashed}");
}

#[test]
fn the_spec_as_run_runs_again() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let spec = specs_dir().join("pi.yaml");
    assert_eq!(run_spec(&spec, "serial", &base.path().join("first")).status.code(), Some(0));
    let as_run = result_dir(&base.path().join("first"), "pi_yaml").join("operation.toml");
    let again = base.path().join("again");
    // No --backend: operation.toml says `backend = "serial"`.
    let out =
        worker(&["run", &as_run.to_string_lossy(), "--results", &again.to_string_lossy(), "--quiet"], Path::new("."));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("on the serial backend"), "{}", text(&out.stdout));
    backend_core::testing::assert_same_results(
        &result_dir(&base.path().join("first"), "pi_yaml"),
        &result_dir(&again, "pi_yaml"),
    );
}

#[test]
fn kinds_and_validate_report_without_running() {
    let out = worker(&["kinds"], Path::new("."));
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(stdout.lines().any(|l| l.starts_with("command ")), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("monte_carlo_pi ")), "{stdout}");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let spec = specs_dir().join("command_sweep.toml");
    let out = worker(&["validate", &spec.to_string_lossy()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("#0 run 0: alpha=1 beta=5"), "{stdout}");
    assert!(stdout.contains("nothing was run"), "{stdout}");
    assert!(!dir.path().join("results").exists(), "validate writes nothing");

    let out = worker(&["--help"], Path::new("."));
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("validate"));
}

/// One bad-input case: arguments, files to write first, and what stderr must say.
struct Case {
    what: &'static str,
    args: &'static [&'static str],
    files: &'static [(&'static str, &'static str)],
    expected: &'static [&'static str],
}

const PI: &str = "kind = \"monte_carlo_pi\"\nsamples = 10\n";

/// A spec whose name has 306 characters.
const LONG_NAME: &str = concat!(
    "name = \"",
    "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123",
    "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123",
    "abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz0123",
    "\"\nkind = \"monte_carlo_pi\"\nsamples = 10\n"
);

/// 16 parameters of 16 values each: 2^64 combinations, one more than a u64 holds.
const SIXTEEN_BY_SIXTEEN: &str = "kind = \"command\"\ncommand = [\"true\"]\n[parameter_ranges]\n\
    a = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nb = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n\
    c = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nd = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n\
    e = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nf = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n\
    g = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nh = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n\
    i = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nj = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n\
    k = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nl = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n\
    m = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nn = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n\
    o = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\np = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n";

/// 16^10 = 2^40 combinations × 2^24 runs = 2^64 processes.
const SIXTEEN_TO_THE_TEN_TIMES_2_24_RUNS: &str = "kind = \"command\"\nruns = 16777216\ncommand = [\"true\"]\n\
    [parameter_ranges]\n\
    a = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nb = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n\
    c = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nd = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n\
    e = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nf = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n\
    g = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nh = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n\
    i = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\nj = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]\n";

/// A chain whose two stages read each other.
const CYCLIC_CHAIN: &str = "kind = \"chain\"\n[[stages]]\nname = \"a\"\nfrom = \"b\"\nkind = \"command\"\n\
    command = [\"true\"]\n[[stages]]\nname = \"b\"\nfrom = \"a\"\nkind = \"command\"\ncommand = [\"true\"]\n";

/// A chain whose second stage reads a stage it does not have.
const UNKNOWN_FROM_CHAIN: &str = "kind = \"chain\"\n[[stages]]\nname = \"a\"\nkind = \"command\"\n\
    command = [\"true\"]\n[[stages]]\nname = \"b\"\nfrom = \"simulate\"\nkind = \"command\"\ncommand = [\"true\"]\n";

/// A chain whose second stage names `{enrgy}`; the first produces `x` and `energy`.
const UNKNOWN_FIELD_CHAIN: &str = "kind = \"chain\"\n[[stages]]\nname = \"a\"\nkind = \"command\"\n\
    outputs = [\"energy\"]\ncommand = [\"echo\", \"{x}\"]\nparameter_ranges = { x = [1, 2] }\n\
    [[stages]]\nname = \"b\"\nfrom = \"a\"\nkind = \"command\"\ncommand = [\"echo\", \"{enrgy}\"]\n";

/// A chain whose second stage groups by `alpha`; the first produces `x` and `energy`.
const UNKNOWN_GROUP_CHAIN: &str = "kind = \"chain\"\n[[stages]]\nname = \"a\"\nkind = \"command\"\n\
    outputs = [\"energy\"]\ncommand = [\"echo\", \"{x}\"]\nparameter_ranges = { x = [1, 2] }\n\
    [[stages]]\nname = \"b\"\nfrom = \"a\"\ngroup_by = [\"alpha\"]\nkind = \"command\"\ncommand = [\"cat\", \"{input}\"]\n";

/// Runs `args` in a fresh directory holding `files`; returns a description of what is wrong.
fn check(case: &Case) -> Option<String> {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (name, content) in case.files {
        std::fs::write(dir.path().join(name), content).expect("a test file is written");
    }
    let out = worker(case.args, dir.path());
    let stderr = text(&out.stderr);
    let mut wrong = Vec::new();
    if out.status.code() != Some(2) {
        wrong.push(format!("exit status {:?}, not 2", out.status.code()));
    }
    if !stderr.starts_with("error: ") {
        wrong.push("stderr does not start with `error: `".to_owned());
    }
    if stderr.contains("panicked") || stderr.contains("RUST_BACKTRACE") {
        wrong.push("it panicked".to_owned());
    }
    for fragment in case.expected {
        if !stderr.contains(fragment) {
            wrong.push(format!("stderr lacks `{fragment}`"));
        }
    }
    if dir.path().join("results").is_dir() {
        wrong.push("a results directory was created".to_owned());
    }
    (!wrong.is_empty()).then(|| format!("{}: {}\n  stderr: {stderr}", case.what, wrong.join("; ")))
}

/// A string that lives for the rest of the test program (for generated cases).
fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

#[test]
fn bad_input_is_one_sentence_and_exit_2() {
    let deep_yaml =
        leak(format!("kind: monte_carlo_pi\nsamples: 10\nx: {}{}\n", "[".repeat(100_000), "]".repeat(100_000)));
    let deep_block_yaml = leak(format!("kind: monte_carlo_pi\nsamples: 10\nx:\n  {}1\n", "- ".repeat(100_000)));
    let deep_toml =
        leak(format!("kind = \"monte_carlo_pi\"\nsamples = 10\nx = {}{}\n", "[".repeat(100_000), "]".repeat(100_000)));
    let deep_yaml_files: &'static [(&str, &str)] = Box::leak(Box::new([("deep.yaml", deep_yaml)]));
    let deep_block_files: &'static [(&str, &str)] = Box::leak(Box::new([("deep.yaml", deep_block_yaml)]));
    let deep_toml_files: &'static [(&str, &str)] = Box::leak(Box::new([("deep.toml", deep_toml)]));
    let cases = [
        Case {
            what: "a pool of 10^8 threads",
            args: &["run", "pi.toml", "--pool-size", "100000000"],
            files: &[("pi.toml", PI)],
            expected: &["--pool-size 100000000 is more than 64 threads per core of this machine", "add --force"],
        },
        Case {
            what: "MPI worker ranks of 10^8 threads",
            args: &["run", "pi.toml", "--backend", "mpi", "--threads-per-rank", "100000000"],
            files: &[("pi.toml", PI)],
            expected: &["--threads-per-rank 100000000 is more than 64 threads per core"],
        },
        Case {
            what: "YAML lists 100,000 deep",
            args: &["validate", "deep.yaml"],
            files: deep_yaml_files,
            expected: &["deep.yaml, line 3: lists and tables nest more than 64 levels deep"],
        },
        Case {
            what: "YAML block lists 100,000 deep",
            args: &["run", "deep.yaml"],
            files: deep_block_files,
            expected: &["deep.yaml, line 4: lists and tables nest more than 64 levels deep"],
        },
        Case {
            what: "TOML arrays 100,000 deep",
            args: &["run", "deep.toml"],
            files: deep_toml_files,
            expected: &["deep.toml, line 3: lists and tables nest more than 64 levels deep"],
        },
        Case {
            what: "malformed TOML",
            args: &["validate", "bad.toml"],
            files: &[("bad.toml", "name = \"x\"\nkind = = \"command\"\nsamples = 1\n")],
            expected: &["bad.toml, line 2:"],
        },
        Case {
            what: "malformed YAML",
            args: &["run", "bad.yaml"],
            files: &[("bad.yaml", "kind: monte_carlo_pi\nsamples: [1, 2\nruns: 2\n")],
            expected: &["bad.yaml, line 3:", "flow sequence"],
        },
        Case {
            what: "wrong type in TOML",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 10\nruns = \"three\"\n")],
            expected: &["spec.toml, line 3: `runs`: invalid type: string \"three\", expected u32"],
        },
        Case {
            what: "wrong type in YAML",
            args: &["run", "spec.yml"],
            files: &[("spec.yml", "kind: monte_carlo_pi\nsamples: 10\nruns: three\n")],
            expected: &["spec.yml, line 3: runs: invalid type"],
        },
        Case {
            what: "wrong type of a kind's field",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = \"many\"\n")],
            expected: &["spec.toml, line 2: field `samples`", "expected u64"],
        },
        Case {
            what: "unknown kind",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "name = \"x\"\nkind = \"nosuch\"\n")],
            expected: &["line 2: there is no process kind `nosuch`", "known kinds are command, monte_carlo_pi"],
        },
        Case {
            what: "missing kind",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "name = \"x\"\n")],
            expected: &["spec.toml: missing field `kind`"],
        },
        Case {
            what: "empty range",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 10\n[parameter_ranges]\nseed = []\n")],
            expected: &["line 3: the parameter space is empty", "`seed` has no values"],
        },
        Case {
            what: "empty settings",
            args: &["run", "spec.yaml"],
            files: &[("spec.yaml", "kind: monte_carlo_pi\nsamples: 10\nparameter_settings: []\n")],
            expected: &["the parameter space is empty", "empty list"],
        },
        Case {
            what: "ranges and settings",
            args: &["run", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"monte_carlo_pi\"\nsamples = 1\nparameter_ranges = { seed = [1] }\n\
                 parameter_settings = [{ seed = 1 }]\n",
            )],
            expected: &["line 4: give either `parameter_ranges` or `parameter_settings`, not both"],
        },
        Case {
            what: "constraints exclude everything",
            args: &["run", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"monte_carlo_pi\"\nsamples = 1\nconstraints = [\"seed > 5\"]\n\
                 parameter_ranges = { seed = [1, 2] }\n",
            )],
            expected: &["line 3: the constraints exclude every parameter combination"],
        },
        Case {
            what: "constraint syntax",
            args: &["run", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"monte_carlo_pi\"\nsamples = 1\nconstraints = [\"seed +\"]\nparameter_ranges = { seed = [1] }\n",
            )],
            expected: &["line 3: the constraint `seed +` does not parse"],
        },
        Case {
            what: "constraint names an unknown parameter",
            args: &["run", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"monte_carlo_pi\"\nsamples = 1\nconstraints = [\"gamma < 2\"]\nparameter_ranges = { seed = [1] }\n",
            )],
            expected: &["names `gamma`, which is not a parameter", "parameters are: seed"],
        },
        Case {
            what: "unknown placeholder",
            args: &["run", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"command\"\ncommand = [\"echo\", \"{alpha}\", \"{gamma}\"]\nparameter_ranges = { alpha = [1] }\n",
            )],
            expected: &["line 2: the placeholder `{gamma}`", "the parameters are alpha", "run, id"],
        },
        Case {
            what: "unclosed placeholder",
            args: &["validate", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = \"echo {alpha\"\n")],
            expected: &["line 2: the `{` at character 6 of `echo {alpha` is never closed"],
        },
        Case {
            what: "command of the wrong type",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = 5\n")],
            expected: &["line 2: `command` must be a non-empty list of strings"],
        },
        Case {
            what: "unknown key",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 10\ncolour = \"red\"\n")],
            expected: &["line 3: `colour` is not a spec key", "takes samples, seed, run"],
        },
        Case {
            what: "unknown key of command",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = [\"true\"]\ntime_limit = 5\n")],
            expected: &["line 3: `time_limit` is not a spec key", "timeout, retries, isolation", "takes command, stdout_lines"],
        },
        Case {
            what: "timeout in thread isolation for a kind that cannot honour it",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 10\ntimeout = \"30s\"\n")],
            expected: &[
                "spec.toml, line 3: a `timeout` cannot be enforced for kind `monte_carlo_pi` in thread isolation",
                "isolation = \"subprocess\"",
            ],
        },
        Case {
            what: "timeout that is not a duration",
            args: &["validate", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = \"true\"\ntimeout = \"soon\"\n")],
            expected: &["spec.toml, line 3: `timeout`: `soon` is not a duration", "\"30s\""],
        },
        Case {
            what: "negative timeout",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = \"true\"\ntimeout = -2\n")],
            expected: &["spec.toml, line 3: `timeout` must be more than 0 seconds"],
        },
        Case {
            what: "negative retries",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = \"true\"\nretries = -1\n")],
            expected: &["spec.toml, line 3: `retries` must be a whole number from 0 to 100, not -1"],
        },
        Case {
            what: "retries of the wrong type in YAML",
            args: &["run", "spec.yaml"],
            files: &[("spec.yaml", "kind: command\ncommand: \"true\"\nretries: often\n")],
            expected: &["spec.yaml, line 3: `retries` must be a whole number from 0 to 100"],
        },
        Case {
            what: "unknown isolation",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = \"true\"\nisolation = \"container\"\n")],
            expected: &["spec.toml, line 3: `isolation` must be \"thread\" or \"subprocess\", not \"container\""],
        },
        Case {
            what: "resume of a directory that is not a run",
            args: &["run", "pi.toml", "--resume", "."],
            files: &[("pi.toml", PI)],
            expected: &["is not a taskfarm run directory", "results/<name>/<timestamp>"],
        },
        Case {
            what: "resume of a directory that does not exist",
            args: &["run", "pi.toml", "--resume", "nosuch"],
            files: &[("pi.toml", PI)],
            expected: &["nosuch is not a taskfarm run directory"],
        },
        Case {
            what: "--rerun-crashed without --resume",
            args: &["run", "pi.toml", "--rerun-crashed"],
            files: &[("pi.toml", PI)],
            expected: &["--resume"],
        },
        Case {
            what: "reserved parameter name",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = [\"true\"]\nparameter_ranges = { id = [1] }\n")],
            expected: &["`id` cannot be a parameter name"],
        },
        Case {
            what: "zero runs",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 10\nruns = 0\n")],
            expected: &["spec.toml, line 3: `runs` must be at least 1"],
        },
        Case {
            what: "operation name that cannot be a directory",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "name = \"../up\"\nkind = \"monte_carlo_pi\"\nsamples = 10\n")],
            expected: &["line 1: the operation name `../up` cannot name a directory"],
        },
        Case {
            what: "--pool-size 0",
            args: &["run", "pi.toml", "--pool-size", "0"],
            files: &[("pi.toml", PI)],
            expected: &["--pool-size", "must be at least 1"],
        },
        Case {
            what: "results path is a file",
            args: &["run", "pi.toml", "--results", "taken"],
            files: &[("pi.toml", PI), ("taken", "a file")],
            expected: &["the results path taken is a file, not a directory"],
        },
        Case {
            what: "results path not writable",
            args: &["run", "pi.toml", "--results", "/proc/taskfarm-results"],
            files: &[("pi.toml", PI)],
            expected: &["the results directory /proc/taskfarm-results is not writable"],
        },
        Case {
            what: "missing spec file",
            args: &["run", "nosuch.toml"],
            files: &[],
            expected: &["could not read the spec file nosuch.toml"],
        },
        Case {
            what: "unknown extension",
            args: &["validate", "spec.json"],
            files: &[("spec.json", "{}")],
            expected: &["the spec file spec.json must end in .toml, .yaml or .yml"],
        },
        Case {
            what: "unknown backend",
            args: &["run", "pi.toml", "--backend", "nosuch"],
            files: &[("pi.toml", PI)],
            expected: &["there is no backend called `nosuch`: choose one of serial, local, mpi"],
        },
        Case {
            what: "unknown backend in the spec",
            args: &["run", "pi.toml"],
            files: &[("pi.toml", "kind = \"monte_carlo_pi\"\nsamples = 10\nbackend = \"cluster\"\n")],
            expected: &["there is no backend called `cluster`"],
        },
        Case {
            what: "missing SPEC argument",
            args: &["run"],
            files: &[],
            expected: &["required arguments were not provided", "<SPEC>"],
        },
        Case {
            what: "null parameter value in YAML (operation.toml cannot record it)",
            args: &["validate", "spec.yaml"],
            files: &[("spec.yaml", "kind: command\ncommand: [echo, '{x}']\nparameter_ranges:\n  x: [~, a, b, c]\n")],
            expected: &["spec.yaml, line 3: the parameter `x` has a null value", "write \"\" for an empty value"],
        },
        Case {
            what: "a bad value in a later parameter setting",
            args: &["validate", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nparameter_settings = [{samples = 10}, {samples = 0}]\n")],
            expected: &["parameter setting 2: field `samples` (a parameter): must be a whole number from 1"],
        },
        Case {
            what: "a bad value later in a range",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nparameter_ranges = { seed = [1, 2], samples = [10, 0] }\n")],
            expected: &["`samples` = 0: field `samples` (a parameter): must be a whole number from 1"],
        },
        Case {
            what: "a bad value in a setting of another shape",
            args: &["validate", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"monte_carlo_pi\"\nparameter_settings = [{samples = 10}, {samples = 5, seed = 2}, {samples = -1}]\n",
            )],
            expected: &["parameter setting 3: field `samples` (a parameter)"],
        },
        Case {
            what: "null in a kind's field in YAML",
            args: &["run", "spec.yaml"],
            files: &[("spec.yaml", "kind: command\ncommand: [echo, null]\n")],
            expected: &["spec.yaml, line 2: `command` is null or holds a null", "leave the key out"],
        },
        Case {
            what: "more parameter combinations than 64-bit ids (16 ranges of 16 values: 2^64)",
            args: &["validate", "spec.toml"],
            files: &[("spec.toml", SIXTEEN_BY_SIXTEEN)],
            expected: &["line 3: the operation has more processes than taskfarm can number", "16 × 16 × 16"],
        },
        Case {
            what: "more processes than 64-bit ids (16^10 combinations × 2^24 runs)",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", SIXTEEN_TO_THE_TEN_TIMES_2_24_RUNS)],
            expected: &[
                "line 2: the operation has more processes than taskfarm can number",
                "(1099511627776 parameter combinations × 16777216 runs",
            ],
        },
        Case {
            what: "duplicate parameter in YAML ranges",
            args: &["validate", "spec.yaml"],
            files: &[("spec.yaml", "kind: command\ncommand: ['true']\nparameter_ranges: {x: [1, 2], x: [3]}\n")],
            expected: &["spec.yaml, line 3", "duplicate key `x`"],
        },
        Case {
            what: "duplicate parameter in a YAML setting",
            args: &["run", "spec.yaml"],
            files: &[("spec.yaml", "kind: command\ncommand: ['true']\nparameter_settings:\n  - a: 1\n    a: 2\n")],
            expected: &["spec.yaml, line 5", "duplicate key `a`"],
        },
        Case {
            what: "duplicate key inside a YAML parameter value",
            args: &["run", "spec.yaml"],
            files: &[("spec.yaml", "kind: command\ncommand: ['true']\nparameter_ranges:\n  t:\n    - {k: 1, k: 2}\n")],
            expected: &["spec.yaml, line 5", "duplicate key `k`"],
        },
        Case {
            what: "duplicate kind field in YAML",
            args: &["run", "spec.yaml"],
            files: &[("spec.yaml", "kind: monte_carlo_pi\nsamples: 10\nsamples: 20\n")],
            expected: &["spec.yaml, line 3", "duplicate key `samples`"],
        },
        Case {
            what: "duplicate parameter in TOML ranges",
            args: &["validate", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = [\"true\"]\nparameter_ranges = { x = [1, 2], x = [3] }\n")],
            expected: &["spec.toml, line 3", "duplicate key"],
        },
        Case {
            what: "constraint that cannot be evaluated for a later combination",
            args: &["validate", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"command\"\ncommand = [\"true\"]\nconstraints = [\"1 / x > 0\"]\nparameter_ranges = { x = [1, 0, 2] }\n",
            )],
            expected: &["spec.toml, line 3: the constraint `1 / x > 0` cannot be evaluated for x = 0", "division by zero"],
        },
        Case {
            what: "a placeholder that some parameter setting has no value for",
            args: &["validate", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"command\"\ncommand = [\"echo\", \"{a}\", \"{b}\"]\nparameter_settings = [{ a = 1 }, { b = 2 }]\n",
            )],
            expected: &["spec.toml, line 2: parameter setting 1 (of `a`): the placeholder `{b}`"],
        },
        Case {
            what: "a field of a typed kind that some parameter setting lacks",
            args: &["run", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"monte_carlo_pi\"\nparameter_settings = [{ samples = 1 }, { seed = 2 }]\n",
            )],
            expected: &["parameter setting 2 (of `seed`): kind `monte_carlo_pi`: missing field `samples`"],
        },
        Case {
            what: "samples = 0",
            args: &["validate", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 0\n")],
            expected: &["spec.toml, line 2: field `samples`: must be a whole number from 1 to 9223372036854775807, not 0"],
        },
        Case {
            what: "a whole number beyond 64-bit integers",
            args: &["validate", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 18446744073709551615\n")],
            expected: &["spec.toml, line 2: the whole number 18446744073709551615 is too large", "to 9223372036854775807"],
        },
        Case {
            what: "a timeout too long to be a timeout",
            args: &["validate", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = \"true\"\ntimeout = 1e300\n")],
            expected: &["spec.toml, line 3: `timeout` must be a number of seconds below 1e12", "not 1e300"],
        },
        Case {
            what: "an infinite timeout",
            args: &["validate", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = \"true\"\ntimeout = inf\n")],
            expected: &["spec.toml, line 3: `timeout` must be a number of seconds below 1e12", "not inf", "leave it out"],
        },
        Case {
            what: "an operation name too long for a directory",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", LONG_NAME)],
            expected: &["spec.toml, line 1: the operation name is 306 characters long", "at most 255"],
        },
        Case {
            what: "linked lists of unequal length",
            args: &["validate", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"command\"\ncommand = [\"true\"]\nlink = [[\"a\", \"b\"]]\n[parameter_ranges]\na = [1, 2, 3]\nb = [1, 2]\n",
            )],
            expected: &["spec.toml, line 3: the linked parameters must have lists of the same length", "`a` has 3 values, `b` has 2 values"],
        },
        Case {
            what: "a sweep block with an unknown field",
            args: &["run", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"command\"\ncommand = [\"true\"]\n[[sweep]]\nsolver = \"cg\"\nparameter_range = { tol = [1] }\n",
            )],
            expected: &["spec.toml, line 5: `parameter_range` in sweep block 1 is not a key of a sweep block"],
        },
        Case {
            what: "a sampled distribution with lo >= hi",
            args: &["run", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"command\"\ncommand = [\"echo\", \"{x}\"]\n[parameter_samples]\nsamples = 4\nx = \"uniform(2, 1)\"\n",
            )],
            expected: &["spec.toml, line 3: the sampled parameter `x` = \"uniform(2, 1)\": lo (2) must be below hi (1)"],
        },
        Case {
            what: "a glob that matches nothing",
            args: &["validate", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"command\"\ncommand = [\"cat\", \"{input}\"]\n[parameter_ranges]\ninput = { glob = \"data/*.csv\" }\n",
            )],
            expected: &["spec.toml, line 4: the glob `data/*.csv` of `input` matches no file"],
        },
        Case {
            what: "an env value that is not a string",
            args: &["validate", "spec.toml"],
            files: &[("spec.toml", "kind = \"command\"\ncommand = [\"true\"]\nenv = { OMP_NUM_THREADS = 4 }\n")],
            expected: &["spec.toml, line 3: `env.OMP_NUM_THREADS` must be a string template", "write numbers in quotes"],
        },
        Case {
            what: "a command file outside the scratch directory",
            args: &["run", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"command\"\ncommand = [\"true\"]\n[[command_files]]\npath = \"../x.yaml\"\ntemplate = \"a\"\n",
            )],
            expected: &["spec.toml, line 3: the file `../x.yaml` of `command_files` has a `..` component"],
        },
        Case {
            what: "a command file template with an unknown placeholder",
            args: &["run", "spec.toml"],
            files: &[(
                "spec.toml",
                "kind = \"command\"\ncommand = [\"true\"]\n[[command_files]]\npath = \"in.yaml\"\ntemplate = \"a: ${__beta__}\"\n\
                 [parameter_ranges]\nalpha = [1]\n",
            )],
            expected: &["spec.toml, line 3: the placeholder `{__beta__}` in `command_files` is not a parameter: the parameters are alpha"],
        },
        Case {
            what: "--param without =",
            args: &["run", "--command", "echo {x}", "--param", "x"],
            files: &[],
            expected: &["`--param x`: a parameter is NAME=VALUES", "`=` is missing"],
        },
        Case {
            what: "--command with an unknown placeholder",
            args: &["run", "--command", "echo {y}", "--param", "x=1..3"],
            files: &[],
            expected: &["the command line: the placeholder `{y}` in `command` is not a parameter"],
        },
        Case { what: "unknown subcommand", args: &["frobnicate"], files: &[], expected: &["unrecognized subcommand"] },
        Case {
            what: "adaptive runs whose min is above max",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 10\nruns = { min = 9, max = 3, until = \"estimate.ci95 < 0.1\" }\n")],
            expected: &["spec.toml, line 3: adaptive runs need 1 <= min <= max, but min is 9 and max is 3"],
        },
        Case {
            what: "an until condition that does not parse",
            args: &["validate", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 10\nruns = { min = 2, max = 3, until = \"estimate.ci95 <\" }\n")],
            expected: &["spec.toml, line 3: the condition `until = \"estimate.ci95 <\"` cannot be used: it is not a condition"],
        },
        Case {
            what: "an until condition naming an unknown statistic",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 10\nruns = { min = 2, max = 3, until = \"estimate.width < 1\" }\n")],
            expected: &["`estimate.width` is not `<field>.<statistic>` with a statistic among count, mean, std, sem, ci95"],
        },
        Case {
            what: "an until condition naming a field the spec's outputs do not have",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 10\noutputs = [\"estimate\", \"error\"]\nruns = { min = 2, max = 3, until = \"energy.ci95 < 1\" }\n")],
            expected: &["names the field `energy`, which is not among the `outputs` the spec declares: estimate, error"],
        },
        Case {
            what: "adaptive runs with an unknown key",
            args: &["run", "spec.toml"],
            files: &[("spec.toml", "kind = \"monte_carlo_pi\"\nsamples = 10\nruns = { min = 2, max = 3, unitl = \"x.mean > 1\" }\n")],
            expected: &["spec.toml, line 3", "unknown field `unitl`"],
        },
        Case {
            what: "a chain whose stages read each other",
            args: &["run", "chain.toml"],
            files: &[("chain.toml", CYCLIC_CHAIN)],
            expected: &["the stages form a cycle (a reads b reads a)"],
        },
        Case {
            what: "a chain stage reading a stage that does not exist",
            args: &["validate", "chain.toml"],
            files: &[("chain.toml", UNKNOWN_FROM_CHAIN)],
            expected: &["stage `b` reads `from = \"simulate\"`, but there is no such stage: the stages are a, b"],
        },
        Case {
            what: "a chain stage naming a field its source does not produce",
            args: &["run", "chain.toml"],
            files: &[("chain.toml", UNKNOWN_FIELD_CHAIN)],
            expected: &["stage `b`: the placeholder `{enrgy}`", "stage `a` produces the fields x, energy"],
        },
        Case {
            what: "a chain stage grouping by a column its source does not produce",
            args: &["run", "chain.toml"],
            files: &[("chain.toml", UNKNOWN_GROUP_CHAIN)],
            expected: &["`group_by` names `alpha`, which stage `a` does not produce: it produces x, energy"],
        },
    ];
    let mut failures: Vec<String> = cases.iter().filter_map(check).collect();
    if !cfg!(feature = "mpi") {
        let mpi = Case {
            what: "--backend mpi without the mpi feature",
            args: &["run", "pi.toml", "--backend", "mpi"],
            files: &[("pi.toml", PI)],
            expected: &["the mpi backend is not in this build", "the `mpi` feature"],
        };
        failures.extend(check(&mpi));
    }
    assert!(cases.len() >= 20);
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn a_spec_that_never_ends_is_refused_after_16_mib() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.toml")).expect("a symlink");
    let out = worker(&["run", "zero.toml"], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.starts_with("error: the spec file zero.toml is larger than 16 MiB"), "{stderr}");
    assert!(!dir.path().join("results").exists());
}

#[test]
fn validate_bounds_the_time_it_counts_a_constrained_space() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let values: Vec<String> = (0..10).map(|v| v.to_string()).collect();
    let ranges: String = (0..8).map(|p| format!("p{p} = [{}]\n", values.join(", "))).collect();
    std::fs::write(
        dir.path().join("big.toml"),
        format!("kind = \"command\"\ncommand = [\"true\"]\nconstraints = [\"p0 < 5\"]\n[parameter_ranges]\n{ranges}"),
    )
    .expect("the spec is written");
    // 10^8 combinations: counting them all takes minutes.
    let out = worker(&["validate", "big.toml"], dir.path());
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(stdout.contains("processes: at least "), "{stdout}");
    assert!(
        stdout.contains("(counting stopped after 2 s: ")
            && stdout.contains(" of 100000000 parameter combinations examined)"),
        "{stdout}"
    );
    assert!(stdout.contains("#0 run 0: p0=0 p1=0") && stdout.contains("... and more"), "{stdout}");
}

/// Values that a shell would read as code if they were pasted into a script as they are.
const HOSTILE: [&str; 11] = [
    "a; echo INJECTED > INJECTED",
    "$(touch SUBSTITUTED)",
    "`touch BACKTICKED`",
    "it's",
    "say \"hi\" \\\" '",
    "two\nlines",
    "*",
    "-n",
    "back\\slash $HOME ${HOME}",
    "",
    "a' ; touch QUOTED ; '",
];

#[test]
fn placeholders_in_a_shell_script_arrive_as_data() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let values: Vec<String> = HOSTILE.iter().map(|v| format!("{v:?}")).collect();
    // The value as a word, inside double quotes, inside single quotes, inside a command
    // substitution, and whole numbers in arithmetic; each written to a file named by id.
    let script = r#"printf '%s' {x} > "{result_dir}/plain-{id}"; printf '%s' "<{x}>" > {result_dir}/double-{id}; printf '%s' '<{x}>' > {result_dir}/single-{id}; printf '%s' "$(printf '%s' {x})" > {result_dir}/subst-{id}; echo "{{\"twice\": $(( {n} * 2 )), \"shown\": \"{flag}\"}}""#;
    std::fs::write(
        dir.path().join("hostile.toml"),
        format!(
            "kind = \"command\"\ncommand = ['sh', '-c', '''{script}''']\n\
             [parameter_ranges]\nx = [{}]\nn = [-3]\nflag = [true]\n",
            values.join(", ")
        ),
    )
    .expect("the spec is written");
    let out = worker(&["run", "hostile.toml", "--quiet", "--backend", "serial"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result = result_dir(&dir.path().join("results"), "hostile");
    for (id, value) in HOSTILE.iter().enumerate() {
        let read = |name: &str| std::fs::read_to_string(result.join(format!("{name}-{id}"))).expect("written");
        assert_eq!(read("plain"), *value, "as a word");
        assert_eq!(read("double"), format!("<{value}>"), "inside double quotes");
        assert_eq!(read("single"), format!("<{value}>"), "inside single quotes");
        assert_eq!(read("subst"), value.trim_end_matches('\n'), "inside $( )");
    }
    for name in ["INJECTED", "SUBSTITUTED", "BACKTICKED", "QUOTED"] {
        assert!(!dir.path().join(name).exists(), "{name} was made: a value ran as code");
    }
    let rows = backend_core::results::read_results_jsonl(&result).expect("results.jsonl");
    assert!(rows.iter().all(|r| r["twice"] == -6 && r["shown"] == "true"), "{rows:?}");
}

#[test]
fn placeholders_in_a_shell_script_behind_wrappers_arrive_as_data() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let values: Vec<String> = HOSTILE.iter().map(|v| format!("{v:?}")).collect();
    // `env`, `nice`, `timeout` and `setsid` run the shell that parses the script.
    let script = r#"printf '%s' {x} > "{result_dir}/wrapped-{id}""#;
    std::fs::write(
        dir.path().join("wrapped.toml"),
        format!(
            "kind = \"command\"\ncommand = ['/usr/bin/env', 'A=1', 'nice', '-n', '1', 'timeout', '-s', 'KILL', '60', \
             'setsid', 'bash', '-c', '''{script}''']\n[parameter_ranges]\nx = [{}]\n",
            values.join(", ")
        ),
    )
    .expect("the spec is written");
    let out = worker(&["run", "wrapped.toml", "--quiet", "--backend", "serial"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result = result_dir(&dir.path().join("results"), "wrapped");
    for (id, value) in HOSTILE.iter().enumerate() {
        let written = std::fs::read_to_string(result.join(format!("wrapped-{id}"))).expect("written");
        assert_eq!(written, *value, "as a word behind wrappers");
    }
    for name in ["INJECTED", "SUBSTITUTED", "BACKTICKED", "QUOTED"] {
        assert!(!dir.path().join(name).exists(), "{name} was made: a value ran as code");
    }
}

#[test]
fn every_output_value_reaches_the_results_exactly() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("outputs.toml"),
        r#"kind = "command"
command = ["printf", '{{"a.b": 1, "a": {{"b": 2}}, "v": 3, "": 4, "nan": NaN, "inf": -Infinity, "big": 18446744073709551615}}']
parameter_ranges = { v = [0] }
"#,
    )
    .expect("the spec is written");
    let out = worker(&["run", "outputs.toml", "--quiet"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result = result_dir(&dir.path().join("results"), "outputs");
    let csv = std::fs::read_to_string(result.join("results.csv")).expect("results.csv");
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or_default();
    assert!(header.ends_with(",a.b,a.b~2,output.v,_,nan,inf,big,reason"), "{header}");
    assert!(lines.next().unwrap_or_default().ends_with(",1,2,3,4,NaN,-inf,18446744073709551615,"), "{csv}");
    let rows = backend_core::results::read_results_jsonl(&result).expect("results.jsonl");
    let row = &rows[0];
    assert_eq!((&row["a.b"], &row["a.b~2"], &row["output.v"], &row["_"]), (&1.into(), &2.into(), &3.into(), &4.into()));
    assert_eq!((&row["nan"], &row["inf"]), (&"NaN".into(), &"-Infinity".into()));
    assert_eq!(row["big"].as_u64(), Some(u64::MAX));
}

#[test]
fn a_backend_but_mpi_under_an_mpi_launcher_of_several_ranks_is_refused() {
    // As `mpirun -n 4 taskfarm-worker run pi.toml` (or srun) starts it: without this, each
    // rank would run the whole sweep into a result directory of its own.
    let launches: [&[(&str, &str)]; 5] = [
        &[("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_RANK", "0")],
        &[("PMI_SIZE", "4"), ("PMI_RANK", "1")],
        &[("PMIX_RANK", "2")],
        &[("SLURM_STEP_ID", "0"), ("SLURM_STEP_NUM_TASKS", "4"), ("SLURM_PROCID", "0")],
        &[("SLURM_STEP_ID", "0"), ("SLURM_NTASKS", "4")],
    ];
    for (env, backend) in launches.iter().zip(["", "local", "serial", "", "local"]) {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("pi.toml"), PI).expect("the spec is written");
        let mut args = vec!["run", "pi.toml", "--quiet"];
        if !backend.is_empty() {
            args.extend(["--backend", backend]);
        }
        let out = std::process::Command::new(common::WORKER)
            .args(&args)
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
            .expect("the worker binary starts");
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {stderr}");
        assert!(!dir.path().join("results").exists(), "{env:?}: nothing runs");
        // Every rank refuses; rank 0 says why, for them all.
        let rank = env.iter().find(|(k, _)| ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"].contains(k));
        if rank.is_some_and(|(_, r)| *r != "0") {
            assert_eq!(stderr, "", "{env:?}: a rank other than 0 is silent");
            continue;
        }
        let backend = if backend.is_empty() { "local" } else { backend };
        assert!(stderr.starts_with("error: this program is one of "), "{env:?}: {stderr}");
        assert!(stderr.contains(&format!("the {backend} backend would run the whole operation once in every rank")));
        assert!(stderr.contains("`--backend mpi`"), "{stderr}");
        assert!(!dir.path().join("results").exists(), "{env:?}: nothing runs");
    }
    // One rank, or a Slurm batch script (which runs once), runs as usual.
    let single: [&[(&str, &str)]; 2] =
        [&[("OMPI_COMM_WORLD_SIZE", "1")], &[("SLURM_NTASKS", "16"), ("SLURM_JOB_ID", "9")]];
    for env in single {
        let dir = tempfile::tempdir().expect("a temporary directory");
        std::fs::write(dir.path().join("pi.toml"), PI).expect("the spec is written");
        let out = std::process::Command::new(common::WORKER)
            .args(["run", "pi.toml", "--quiet", "--backend", "serial"])
            .envs(env.iter().copied())
            .current_dir(dir.path())
            .output()
            .expect("the worker binary starts");
        assert_eq!(out.status.code(), Some(0), "{env:?}: {}", text(&out.stderr));
    }
}

#[test]
fn under_mpirun_only_rank_0_reports_bad_input() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("bad.toml"), "kind = \"no_such_kind\"\n").expect("the spec is written");
    for (rank, speaks) in [("0", true), ("1", false), ("3", false)] {
        let out = std::process::Command::new(common::WORKER)
            .args(["validate", "bad.toml"])
            .env("OMPI_COMM_WORLD_SIZE", "4")
            .env("OMPI_COMM_WORLD_RANK", rank)
            .current_dir(dir.path())
            .output()
            .expect("the worker binary starts");
        assert_eq!(out.status.code(), Some(2), "rank {rank}");
        let stderr = text(&out.stderr);
        assert_eq!(stderr.contains("no_such_kind"), speaks, "rank {rank}: {stderr}");
    }
}

/// Runs an example spec on serial and local, checks the rows agree, and runs the
/// `operation.toml` it wrote again: the same processes under the same ids.
fn example_runs_alike(file: &str, name: &str) -> Vec<String> {
    let spec = specs_dir().join(file);
    let expected = validated_count(&spec);
    let base = tempfile::tempdir().expect("a temporary directory");
    for backend in ["serial", "local"] {
        let out = run_spec(&spec, backend, &base.path().join(backend));
        assert_eq!(out.status.code(), Some(0), "{file} on {backend}: {}", text(&out.stderr));
    }
    let serial = result_dir(&base.path().join("serial"), name);
    backend_core::testing::assert_same_results(&serial, &result_dir(&base.path().join("local"), name));
    let again = base.path().join("again");
    let out = run_spec(&serial.join("operation.toml"), "serial", &again);
    assert_eq!(out.status.code(), Some(0), "{file} from operation.toml: {}", text(&out.stderr));
    backend_core::testing::assert_same_results(&serial, &result_dir(&again, name));
    let rows = csv_rows(&serial);
    assert_eq!(rows.len(), expected, "{file}");
    let header = std::fs::read_to_string(serial.join("results.csv")).expect("results.csv");
    std::iter::once(header.lines().next().unwrap_or_default().to_owned()).chain(rows).collect()
}

#[test]
fn constants_linked_parameters_and_unions_run_alike_everywhere() {
    let rows = example_runs_alike("constants.toml", "constants");
    assert!(rows[0].starts_with("id,run,alpha,model,steps,"), "{rows:?}");
    assert!(rows[3].contains("3,lj,3000,finished") && rows[3].contains(",9000,lj"), "{rows:?}");

    let rows = example_runs_alike("linked.toml", "linked");
    assert_eq!(rows.len(), 7);
    assert!(rows[6].starts_with("5,0,3,30,1,finished"), "{rows:?}");
    assert!(rows[6].contains("alpha=3 beta=30 gamma=1"), "{rows:?}");

    let rows = example_runs_alike("union.toml", "union");
    assert!(rows[0].starts_with("id,run,tol,solver,size,"), "{rows:?}");
    assert!(rows[3].starts_with("2,0,1e-6,cg,100,finished"), "{rows:?}");
    assert!(rows[5].starts_with("4,0,,direct,100,finished"), "the missing column is empty: {rows:?}");
    assert!(rows[6].starts_with("5,1,,direct,100,finished"), "{rows:?}");
}

#[test]
fn env_cwd_and_command_files_reach_the_command() {
    let rows = example_runs_alike("env_cwd.toml", "env_cwd");
    assert!(rows[4].starts_with("3,1,2,finished") && rows[4].contains("threads=2 seed=1 dir=3"), "{rows:?}");
    let rows = example_runs_alike("command_files.toml", "command_files");
    assert!(rows[4].contains("alpha: 1.5 solver: gmres seed: 0"), "the file has the values: {rows:?}");
    // The file is in the process's scratch directory, one per process.
    let base = tempfile::tempdir().expect("a temporary directory");
    let out = run_spec(&specs_dir().join("command_files.toml"), "local", base.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dir = result_dir(base.path(), "command_files");
    for id in 0..4 {
        let file = std::fs::read_to_string(dir.join(format!("scratch/{id}/input.yaml"))).expect("input.yaml");
        assert!(file.starts_with(&format!("alpha: {}\n", if id < 2 { "0.5" } else { "1.5" })), "{file}");
    }
}

#[test]
fn input_files_and_samples_run_alike_everywhere() {
    let rows = example_runs_alike("inputs.toml", "inputs");
    assert_eq!(rows.len(), 5);
    assert!(
        rows[1].contains("/examples/specs/data/a.csv,small,finished") && rows[1].contains("a.csv small 2"),
        "{rows:?}"
    );
    assert!(rows[4].contains("b.csv large 3"), "sorted, and the lines in file order: {rows:?}");
    let rows = example_runs_alike("samples.toml", "samples");
    let kept = rows.len() - 1;
    assert!(kept > 2 && kept < 16, "the constraint rejects some of the 16 samples: {rows:?}");
    for row in &rows[1..] {
        let cells: Vec<&str> = row.split(',').collect();
        let (lr, width): (f64, i64) = (cells[3].parse().expect("lr"), cells[4].parse().expect("width"));
        assert!((1e-4..1e-1).contains(&lr) && (16..257).contains(&width), "{row}");
        assert!(lr < 0.01 || width > 128, "{row}");
    }
    let rows = example_runs_alike("sobol.toml", "sobol");
    assert_eq!(rows.len(), 17, "{rows:?}");
    let mut cells = [0u32; 16];
    for row in &rows[1..] {
        let x: f64 = row.split(',').nth(2).and_then(|x| x.parse().ok()).expect("x");
        cells[(x * 16.0) as usize] += 1;
    }
    assert_eq!(cells, [1; 16], "one point in each sixteenth of x: {rows:?}");
}

#[test]
fn a_sweep_without_a_spec_file_runs_and_resumes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let out =
        worker(&["run", "--command", "echo {x}-{run}", "--param", "x=1..5", "--runs", "2", "--quiet"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let result = result_dir(&dir.path().join("results"), "command");
    let rows = csv_rows(&result);
    assert_eq!(rows.len(), 10);
    assert!(rows[9].starts_with("9,1,5,finished") && rows[9].contains(",5-1,"), "{rows:?}");
    // A resume of its directory, from its operation.toml or from the same arguments.
    let spec = result.join("operation.toml");
    let (spec, result) = (spec.to_string_lossy().into_owned(), result.to_string_lossy().into_owned());
    let out = worker(&["run", &spec, "--resume", &result, "--quiet"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let args =
        ["run", "--command", "echo {x}-{run}", "--param", "x=1..5", "--runs", "2", "--resume", &result, "--quiet"];
    let out = worker(&args, dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // A spec on standard input.
    let mut child = std::process::Command::new(common::WORKER)
        .args(["validate", "-", "--show", "1"])
        .current_dir(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the worker starts");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"kind = 'command'\ncommand = 'sim {a}'\nenv = { A = '{a}' }\nparameter_ranges = { a = [7, 8] }\n")
        .expect("written");
    let out = child.wait_with_output().expect("it ends");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("processes: 2") && stdout.contains("argv: [\"sh\", \"-c\", \"sim 7\"]"), "{stdout}");
    assert!(stdout.contains("env: A=7") && !stdout.contains("sim 8"), "{stdout}");
}

#[test]
fn durations_as_people_write_them() {
    let rows = example_runs_alike("durations.toml", "durations");
    assert_eq!(rows.len(), 3);
    let as_run = {
        let base = tempfile::tempdir().expect("a temporary directory");
        let out = run_spec(&specs_dir().join("durations.toml"), "serial", base.path());
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        std::fs::read_to_string(result_dir(base.path(), "durations").join("operation.toml")).expect("operation.toml")
    };
    assert!(as_run.contains("timeout = \"5400s\""), "{as_run}");
}

#[test]
fn pyspace_specs_run_as_written() {
    let rows = example_runs_alike("pyspace.yaml", "pyspace");
    assert_eq!(rows.len(), 7, "pySPACE's count: 3 combinations x 2 runs: {rows:?}");
    assert!(rows[0].starts_with("id,run,__LOWER_CUTOFF__,__UPPER_CUTOFF__,"), "{rows:?}");
    assert!(rows[4].contains("lower: 0.1 upper: 0.5 run: 1"), "{rows:?}");
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("op.yaml"), "type: node_chain\nparameter_ranges:\n  __A__: [1]\n").expect("written");
    let out = worker(&["validate", "op.yaml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("error: op.yaml, line 1: `type` is a pySPACE key that taskfarm does not implement"),
        "{stderr}"
    );
    std::fs::write(dir.path().join("op.yaml"), "kind: command\ncommand: 'true'\ninput_path: data\n").expect("written");
    let stderr = text(&worker(&["validate", "op.yaml"], dir.path()).stderr);
    assert!(stderr.contains("line 3: `input_path` is a pySPACE key") && stderr.contains("glob"), "{stderr}");
}

/// `submit` refuses, before anything is written or submitted, a worker built without MPI:
/// the batch job would fail only once it starts. This test binary has no MPI (the `mpi`
/// feature is off), and a worker whose `--version` lists the mpi backend is accepted, with
/// the early warning asked of Slurm and handed on to `--continue`'s follow-ups.
#[test]
fn submit_refuses_a_worker_without_mpi_and_asks_for_the_early_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let spec = dir.path().join("echo.toml");
    std::fs::write(&spec, "kind = \"command\"\ncommand = [\"echo\", \"{x}\"]\nparameter_ranges = { x = [1, 2] }\n")
        .expect("the spec is written");
    let version = text(&worker(&["--version"], dir.path()).stdout);
    assert!(version.contains("backends: serial, local") && !version.contains("mpi"), "{version}");

    let out = worker_no_panic(&["submit", "echo.toml", "--dry-run"], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("was built without MPI") && stderr.contains("--features mpi"), "{stderr}");
    assert!(!dir.path().join("results").exists(), "nothing is written for a refused worker");

    // A worker that says it has MPI (a stand-in that prints what `--version` prints).
    let with_mpi = dir.path().join("with-mpi");
    std::fs::write(&with_mpi, "#!/bin/sh\necho 'my-worker 0.1.0'\necho 'backends: serial, local, mpi'\n")
        .expect("the stand-in is written");
    std::fs::set_permissions(&with_mpi, std::fs::Permissions::from_mode(0o755)).expect("it is made executable");
    let out = worker_no_panic(
        &["submit", "echo.toml", "--dry-run", "--worker", "with-mpi", "--time", "30", "--warning", "45"],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("TASKFARM_SIGNAL_BEFORE=45 ") && stdout.contains(" --signal=B:USR1@45 "), "{stdout}");
    assert!(dir.path().join("results/echo/sweep.sbatch").is_file(), "the script is written next to the results");

    let out =
        worker_no_panic(&["submit", "echo.toml", "--dry-run", "--worker", "with-mpi", "--warning", "0"], dir.path());
    assert_eq!(out.status.code(), Some(2), "a warning of 0 s is refused: {}", text(&out.stderr));
}
