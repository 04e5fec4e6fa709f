//! The `command` kind's `output`: "files" and "log" keep every process's whole stdout and
//! stderr, from threads of the local pool and from subprocess-isolation children alike, and
//! `taskfarm-worker log DIR ID` prints any process's output back in either layout.

mod common;

use std::path::Path;

use common::{result_dir, text, worker, worker_no_panic};

/// A spec of 30 processes whose output names them, several lines on each stream.
fn spec(dir: &Path, mode: &str, isolation: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{mode}_{isolation}.toml"));
    std::fs::write(
        &path,
        format!(
            r#"name = "out"
kind = "command"
output = "{mode}"
isolation = "{isolation}"
command = ["sh", "-c", '''i=0; while [ $i -lt {{x}} ]; do echo "out {{id}} line $i"; echo "err {{id}} line $i" >&2; i=$((i+1)); done; echo "{{{{\"x\": {{x}}}}}}"''']

[parameter_ranges]
x = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29]
"#
        ),
    )
    .expect("the spec is written");
    path
}

fn check_every_output(mode: &str, isolation: &str) {
    let base = tempfile::tempdir().expect("a temporary directory");
    let spec = spec(base.path(), mode, isolation);
    let results = base.path().join("results");
    let out = worker_no_panic(
        &["run", &spec.to_string_lossy(), "--pool-size", "4", "--results", &results.to_string_lossy(), "--quiet"],
        base.path(),
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let dir = result_dir(&results, "out");
    for id in 0..30u64 {
        // `results/<name>` names the latest run.
        let shown = worker(&["log", &results.join("out").to_string_lossy(), &id.to_string()], base.path());
        assert_eq!(shown.status.code(), Some(0), "{}", text(&shown.stderr));
        let stdout: String =
            (0..id).map(|i| format!("out {id} line {i}\n")).collect::<String>() + &format!("{{\"x\": {id}}}\n");
        let stderr: String = (0..id).map(|i| format!("err {id} line {i}\n")).collect();
        assert_eq!(text(&shown.stdout), stdout, "process {id}'s stdout ({mode}, {isolation})");
        assert_eq!(text(&shown.stderr), stderr, "process {id}'s stderr ({mode}, {isolation})");
    }
    // The record is as with "tail": the JSON line is the output.
    let csv = std::fs::read_to_string(dir.join("results.csv")).expect("results.csv");
    assert!(csv.lines().next().unwrap_or_default().contains(",output.x,"), "{csv}");
    let missing = worker(&["log", &dir.to_string_lossy(), "30"], base.path());
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("no output of process 30"), "{}", text(&missing.stderr));
}

#[test]
fn the_log_layout_keeps_every_line_of_every_process_in_one_file() {
    check_every_output("log", "thread");
    check_every_output("log", "subprocess");
}

#[test]
fn the_files_layout_keeps_two_files_a_process() {
    check_every_output("files", "thread");
    check_every_output("files", "subprocess");
}

#[test]
fn an_unknown_output_mode_is_refused_before_anything_runs() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let spec = spec(base.path(), "everything", "thread");
    let out = worker(&["validate", &spec.to_string_lossy()], base.path());
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("`output` must be \"tail\"") && stderr.contains("everything"), "{stderr}");
}
