//! Helpers shared by the worker's integration tests: the `taskfarm-worker` binary, running
//! it, its output as text, the example specs, the result directory of a run and what its
//! journal and results hold.

// Each test file uses only some of these.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// The `taskfarm-worker` binary under test.
pub const WORKER: &str = env!("CARGO_BIN_EXE_taskfarm-worker");

/// The example specs of the workspace.
pub fn specs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/specs")
}

/// The example spec `name`.
pub fn spec(name: &str) -> PathBuf {
    specs_dir().join(name)
}

/// Runs the worker binary with `args` in `cwd`.
pub fn worker(args: &[&str], cwd: &Path) -> Output {
    Command::new(WORKER).args(args).current_dir(cwd).output().expect("the worker binary starts")
}

/// Runs the worker binary with `args` in `cwd` and checks that it did not panic.
pub fn worker_no_panic(args: &[&str], cwd: &Path) -> Output {
    let out = worker(args, cwd);
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
    out
}

/// Runs the worker binary with `args` in the current directory and checks that it did not
/// panic.
pub fn worker_here(args: &[&str]) -> Output {
    worker_no_panic(args, Path::new("."))
}

/// Starts the worker binary with `args` in `cwd`, its stdout and stderr piped (for
/// `wait_with_output`).
pub fn spawn_worker(args: &[&str], cwd: &Path) -> Child {
    spawn(args, cwd, Stdio::piped)
}

/// Starts the worker binary with `args` in `cwd`, its stdout and stderr discarded.
pub fn spawn_worker_silent(args: &[&str], cwd: &Path) -> Child {
    spawn(args, cwd, Stdio::null)
}

fn spawn(args: &[&str], cwd: &Path, output: fn() -> Stdio) -> Child {
    Command::new(WORKER)
        .args(args)
        .current_dir(cwd)
        .stdout(output())
        .stderr(output())
        .spawn()
        .expect("the worker starts")
}

/// Output bytes as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The single result directory `<base>/<name>/<timestamp>/`.
pub fn result_dir(base: &Path, name: &str) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(base.join(name))
        .expect("the operation's directory exists")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.is_dir() && !p.is_symlink())
        .collect();
    assert_eq!(dirs.len(), 1, "one result directory in {}", base.join(name).display());
    dirs.into_iter().next().unwrap_or_default()
}

/// The first result directory under `<base>/<name>/` (not the `latest` link), once there is
/// one: for tests that watch a run while it runs.
pub fn first_run_dir(base: &Path, name: &str) -> Option<PathBuf> {
    let entries = std::fs::read_dir(base.join(name)).ok()?;
    entries.filter_map(Result::ok).map(|e| e.path()).find(|p| !p.is_symlink())
}

/// The ids of the records in the journal of the run in `dir`, in journal order, each as
/// often as it was recorded; none while there is no readable journal.
pub fn journaled_ids(dir: &Path) -> Vec<u64> {
    backend_core::journal::read_journal(&dir.join("journal"))
        .map(|j| j.records.iter().map(|r| r.id).collect())
        .unwrap_or_default()
}

/// `id -> (status, reason)` from the `results.jsonl` of the run in `dir`, checking that
/// each id has one row.
pub fn rows(dir: &Path) -> BTreeMap<u64, (String, String)> {
    let mut rows = BTreeMap::new();
    for row in backend_core::results::read_results_jsonl(dir).expect("results.jsonl") {
        let id = row["id"].as_u64().expect("an id");
        let status = row["status"].as_str().unwrap_or_default().to_owned();
        let reason = row["reason"].as_str().unwrap_or_default().to_owned();
        assert!(rows.insert(id, (status, reason)).is_none(), "id {id} has one row");
    }
    rows
}
