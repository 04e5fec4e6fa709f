//! Helpers shared by the worker's integration tests: the `taskfarm-worker` binary, running
//! it, its output as text, the example specs and the result directory of a run.

// Each test file uses only some of these.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `taskfarm-worker` binary under test.
pub const WORKER: &str = env!("CARGO_BIN_EXE_taskfarm-worker");

/// The example specs of the workspace.
pub fn specs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/specs")
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
