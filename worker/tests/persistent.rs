//! The persistent-program kinds `python` and `jsonl` through the real `taskfarm-worker`
//! binary on the local backend: the example sweep gives the same rows as on the serial
//! backend, and each fault costs what it should — a dying interpreter one process, a timeout
//! one process, a malformed line one process (on serial and local), a retry runs on another
//! interpreter, start-up time is kept out of durations, numpy-like values become plain ones, and an
//! interpreter that dies at start-up is one error, not a crashed row per process.

#![cfg(unix)]

mod common;

use common::{result_dir, rows, spec, specs_dir, text, worker_no_panic as run};

#[test]
fn the_python_example_gives_the_same_rows_on_serial_and_local() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = specs_dir().join("../..");
    let spec = spec("python_sweep.toml");
    let spec = spec.to_str().expect("a UTF-8 path");
    for backend in ["serial", "local"] {
        let results = dir.path().join(backend);
        let results = results.to_str().expect("a UTF-8 path");
        let out = run(&["run", spec, "--backend", backend, "--pool-size", "2", "--results", results, "--quiet"], &root);
        assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    }
    let serial = result_dir(&dir.path().join("serial"), "python_sweep");
    let local = result_dir(&dir.path().join("local"), "python_sweep");
    backend_core::testing::assert_same_results(&serial, &local);
    assert_eq!(rows(&local).len(), 28);
}

const FAULTS: &str = r#"
import os, signal, sys, time

def load():
    time.sleep(0.5)
    return os.getpid()

def run(x, state, scratch_dir):
    if x == 1:
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == 2:
        print("giving up on x = 2", file=sys.stderr, flush=True)
        sys.exit(3)
    if x == 8:
        # As the out-of-memory killer would.
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 3:
        time.sleep(60)
    if x == 4:
        raise ValueError("x is 4")
    if x == 5:
        # Fails on the first interpreter that runs it: finishes only if the retry runs on another.
        mark = os.path.join(scratch_dir, "failed-on")
        if not os.path.exists(mark):
            open(mark, "w").write(str(state))
            raise RuntimeError("first attempt")
        if open(mark).read() == str(state):
            raise RuntimeError("retried on the same interpreter")
    return {"pid": state}
"#;

#[test]
fn each_fault_of_a_python_process_costs_that_process_only() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("faults.py"), FAULTS).expect("the module is written");
    std::fs::write(
        dir.path().join("faults.toml"),
        r#"name = "faults"
kind = "python"
file = "faults.py"
function = "run"
setup = "load"
timeout = "2s"
retries = 1
parameter_ranges = { x = [0, 1, 2, 3, 4, 5, 6, 7, 8] }
"#,
    )
    .expect("the spec is written");
    let out = run(&["run", "faults.toml", "--pool-size", "2", "--quiet"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    let rows = rows(&result_dir(&dir.path().join("results"), "faults"));
    let expect = |id: u64, status: &str, reason: &str| {
        let (s, r) = &rows[&id];
        assert_eq!(s, status, "process {id}: {r}");
        assert!(r.contains(reason), "process {id}: {r}");
    };
    for id in [0, 5, 6, 7] {
        expect(id, "finished", "");
    }
    expect(1, "crashed", "was killed by signal 11 (SIGSEGV) while it ran this process");
    expect(2, "crashed", "exited with status 3 while it ran this process");
    expect(3, "timed_out", "ran past its timeout");
    expect(4, "crashed", "attempt 2: ValueError: x is 4");
    expect(8, "crashed", "killed by signal 9 (SIGKILL), as the out-of-memory killer does");
    let run_dir = result_dir(&dir.path().join("results"), "faults");
    let records = backend_core::journal::read_journal(&run_dir.join("journal")).expect("the journal is readable");
    let record = |id: u64| records.records.iter().find(|r| r.id == id).expect("a record");
    // What the program said on stderr before it died is kept with its process.
    assert!(record(2).stderr_tail.as_deref().is_some_and(|t| t.contains("giving up on x = 2")), "{:?}", record(2));
    // The interpreter's start-up (0.5 s in `load`) is reported apart, not in a duration.
    for id in [0, 6, 7] {
        assert!(record(id).duration_s < 0.5, "process {id} ran {} s", record(id).duration_s);
    }
    let log = std::fs::read_to_string(run_dir.join("operation.log")).expect("operation.log");
    assert!(log.matches(": ready in ").count() >= 2, "one start-up per thread, and more after crashes: {log}");
    let out = run(&["report", "results/faults"], dir.path());
    assert!(text(&out.stdout).contains("ValueError: x is 4"), "{}", text(&out.stdout));
}

/// Objects that quack like numpy's scalars and arrays (what the shim looks for), so the
/// conversion is tested where numpy is not installed.
const NUMPY_LIKE: &str = r#"
import math

class Scalar:
    def __init__(self, v): self.v = v
    def item(self): return self.v

class Array:
    def __init__(self, v): self.v = v
    def tolist(self): return self.v

def run(x):
    return {"scalar": Scalar(x * 2), "array": Array([[x, 1.5], [float("nan"), math.inf]]), "tuple": (x, "a"), "set": {3, 1}}
"#;

#[test]
fn numpy_like_values_and_tuples_become_ordinary_values() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("npl.py"), NUMPY_LIKE).expect("the module is written");
    std::fs::write(
        dir.path().join("npl.toml"),
        "name = \"npl\"\nkind = \"python\"\nfile = \"npl.py\"\nfunction = \"run\"\nparameter_ranges = { x = [1, 2] }\n",
    )
    .expect("the spec is written");
    let out = run(&["run", "npl.toml", "--backend", "serial", "--quiet"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let journal = backend_core::journal::read_journal(&result_dir(&dir.path().join("results"), "npl").join("journal"))
        .expect("the journal is readable");
    let record = journal.records.iter().find(|r| r.id == 1).expect("process 1's record");
    let backend_core::Value::Map(output) = &record.output else { panic!("a map: {:?}", record.output) };
    use backend_core::Value::{Float, Int, List, Str};
    assert_eq!(output["scalar"], Int(4));
    assert_eq!(output["tuple"], List(vec![Int(2), Str("a".into())]));
    assert_eq!(output["set"], List(vec![Int(1), Int(3)]));
    let List(rows) = &output["array"] else { panic!("a list: {:?}", output["array"]) };
    assert_eq!(rows[0], List(vec![Int(2), Float(1.5)]));
    let List(special) = &rows[1] else { panic!("a list") };
    assert!(matches!(special[0], Float(f) if f.is_nan()) && special[1] == Float(f64::INFINITY), "{special:?}");
}

#[test]
fn an_interpreter_that_dies_at_start_up_is_one_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("broken.py"),
        "def load():\n    raise RuntimeError('no data here')\n\ndef run():\n    pass\n",
    )
    .expect("the module is written");
    std::fs::write(
        dir.path().join("broken.toml"),
        r#"name = "broken"
kind = "python"
file = "broken.py"
function = "run"
setup = "load"
retries = 2
parameter_ranges = { x = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] }
"#,
    )
    .expect("the spec is written");
    let out = run(&["run", "broken.toml", "--pool-size", "2", "--quiet"], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}{stderr}", text(&out.stdout));
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
    assert!(stderr.contains("exited with status 1 before it was ready: RuntimeError: no data here"), "{stderr}");
    assert!(!stderr.contains("[no process can run]"), "the mark is not shown: {stderr}");
    let journal =
        backend_core::journal::read_journal(&result_dir(&dir.path().join("results"), "broken").join("journal"))
            .expect("the journal is readable");
    assert!(journal.records.is_empty(), "no crashed records: {:?}", journal.records.len());
    // A missing module is found at validation, before anything runs.
    std::fs::write(dir.path().join("broken.py"), "import no_such_module_xyz\n").expect("the module is written");
    let out = run(&["validate", "broken.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("No module named 'no_such_module_xyz'"), "{}", text(&out.stderr));
}

#[test]
fn a_malformed_line_is_a_crash_that_names_it() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("lines.toml"),
        r#"name = "lines"
kind = "jsonl"
program = ["sh", "-c", '''while read -r line; do
  id=${line#*\"id\":}; id=${id%%,*}
  case "$line" in *'"x":1'*) echo 'this is not json';; *) echo "{\"id\": $id, \"output\": {\"pid\": $$}}";; esac
done''']
parameter_ranges = { x = [0, 1, 2, 3] }
"#,
    )
    .expect("the spec is written");
    for backend in ["serial", "local"] {
        let results = format!("results-{backend}");
        let out = run(
            &["run", "lines.toml", "--backend", backend, "--pool-size", "2", "--results", &results, "--quiet"],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{backend}: {}{}", text(&out.stdout), text(&out.stderr));
        let rows = rows(&result_dir(&dir.path().join(&results), "lines"));
        assert_eq!(rows[&1].0, "crashed", "{backend}");
        assert!(rows[&1].1.contains("wrote a line that is not JSON") && rows[&1].1.contains("`this is not json`"));
        for id in [0, 2, 3] {
            assert_eq!(rows[&id].0, "finished", "{backend} {id}: {}", rows[&id].1);
        }
    }
}
