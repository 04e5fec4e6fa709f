//! `taskfarm-worker run --resume DIR`: an interrupted run (its journal cut mid-record) is
//! finished with every process exactly once; another spec is refused with exit status 2.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::{result_dir, specs_dir, text, worker_no_panic};

fn spec(name: &str) -> PathBuf {
    specs_dir().join(name)
}

fn worker(args: &[&str]) -> Output {
    worker_no_panic(args, Path::new("."))
}

#[test]
fn resume_finishes_an_interrupted_run() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let (full, cut) = (base.path().join("full"), base.path().join("cut"));
    let sweep = spec("command_sweep.toml");
    let sweep = sweep.to_string_lossy();
    for results in [&full, &cut] {
        let out = worker(&["run", &sweep, "--backend", "local", "--quiet", "--results", &results.to_string_lossy()]);
        assert_eq!(out.status.code(), Some(0));
    }
    let reference = result_dir(&full, "command_sweep");
    let dir = result_dir(&cut, "command_sweep");
    // Keep 40% of the journal (a torn last record) and drop the consolidated files.
    let journal = dir.join("journal");
    let bytes = std::fs::read(&journal).expect("the journal");
    std::fs::write(&journal, &bytes[..bytes.len() * 2 / 5]).expect("cut the journal");
    std::fs::remove_file(dir.join("results.csv")).expect("results.csv existed");

    let as_run = dir.join("operation.toml");
    let dir_arg = dir.to_string_lossy();
    // `report` sees what is missing and says how to finish it.
    let out = worker(&["report", &dir_arg]);
    assert_eq!(out.status.code(), Some(0));
    let report = text(&out.stdout);
    assert!(report.contains("missing: ") && report.contains("--resume"), "{report}");
    assert!(report.contains("utilisation: ") && report.contains("slowest processes:"), "{report}");
    let out = worker(&["run", &as_run.to_string_lossy(), "--resume", &dir_arg, "--quiet"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    backend_core::testing::assert_same_results(&reference, &dir);
    let out = worker(&["report", &dir_arg]);
    assert!(text(&out.stdout).contains("complete: every process has a record"));

    // The original spec file resumes it too (nothing left to run).
    let out = worker(&["run", &sweep, "--resume", &dir_arg, "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Another spec is refused, and so is a directory that is not a run.
    let out = worker(&["run", &spec("pi.toml").to_string_lossy(), "--resume", &dir_arg]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("was run with another spec"), "{stderr}");
    let out = worker(&["run", &sweep, "--resume", &base.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a taskfarm run directory"));
}
