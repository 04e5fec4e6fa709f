//! Duplicated stragglers on the local backend, through the real `taskfarm-worker`: once
//! nothing is left to start, a process running far past its prediction runs a copy on an
//! idle thread; the first copy to finish is the one recorded (once), the other is killed
//! with its command; `speculate = false` and `idempotent = false` keep every process to
//! one copy.

#![cfg(unix)]

mod common;

use std::path::Path;

use common::{journaled_ids, result_dir, text, worker_no_panic as run};

/// 40 processes of 50 ms; the first copy of x = 39 to start (the one that makes the
/// directory `started`) takes `long` seconds, any later copy 50 ms. Each says which it was.
fn spec(dir: &Path, long: u32, extra: &str) {
    std::fs::write(
        dir.join("straggle.toml"),
        format!(
            r#"name = "straggle"
kind = "command"
command = ["sh", "-c", '''if [ {{x}} = 39 ] && mkdir "{{result_dir}}/started" 2>/dev/null; then echo $$ > "{{result_dir}}/first-pid"; sleep {long}; echo '{{{{"who": "first"}}}}'; else sleep 0.05; echo '{{{{"who": "later"}}}}'; fi''']
parameter_ranges = {{ x = [{}] }}
{extra}
"#,
            (0..40).map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
        ),
    )
    .expect("the spec is written");
}

fn sorted(mut ids: Vec<u64>) -> Vec<u64> {
    ids.sort_unstable();
    ids
}

/// The `who` of process 39's row in results.jsonl.
fn who_ran_39(run_dir: &Path) -> String {
    let rows = backend_core::results::read_results_jsonl(run_dir).expect("results.jsonl");
    let row = rows.iter().find(|r| r["id"] == 39).expect("a row of process 39");
    row["who"].as_str().unwrap_or_default().to_owned()
}

/// Whether the process `pid` is gone (or a zombie) within 10 s.
fn gone(pid: u32) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(10) {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
        if stat.is_err() || stat.is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z'))) {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    false
}

#[test]
fn a_straggler_runs_a_copy_and_the_first_to_finish_is_recorded_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    spec(dir.path(), 120, "");
    let out = run(&["run", "straggle.toml", "--pool-size", "2", "--quiet", "-v"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let run_dir = result_dir(&dir.path().join("results"), "straggle");
    // One record per process, the copy's for 39: the first copy would have taken 120 s.
    assert_eq!(sorted(journaled_ids(&run_dir)), (0..40).collect::<Vec<u64>>());
    assert_eq!(who_ran_39(&run_dir), "later");
    let log = std::fs::read_to_string(run_dir.join("operation.log")).expect("operation.log");
    assert!(log.contains("process 39 has run") && log.contains("a copy starts"), "{log}");
    assert!(log.contains("process 39 ran twice") && log.contains("the other was killed"), "{log}");
    // The losing copy's command is gone with its process group.
    let pid: u32 =
        std::fs::read_to_string(run_dir.join("first-pid")).expect("first-pid").trim().parse().expect("a pid");
    assert!(gone(pid), "the first copy's shell {pid} still runs");
}

#[test]
fn speculate_false_and_idempotent_false_run_every_process_once() {
    for extra in ["speculate = false", "idempotent = false"] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        spec(dir.path(), 3, extra);
        let out = run(&["run", "straggle.toml", "--pool-size", "2", "--quiet", "-v"], dir.path());
        assert_eq!(out.status.code(), Some(0), "{extra}: {}{}", text(&out.stdout), text(&out.stderr));
        let run_dir = result_dir(&dir.path().join("results"), "straggle");
        assert_eq!(sorted(journaled_ids(&run_dir)), (0..40).collect::<Vec<u64>>());
        assert_eq!(who_ran_39(&run_dir), "first", "{extra}: process 39 ran once, to its end");
        let log = std::fs::read_to_string(run_dir.join("operation.log")).expect("operation.log");
        assert!(!log.contains("a copy starts"), "{extra}: {log}");
        // Recorded in operation.toml, so a resume keeps it.
        let as_run = std::fs::read_to_string(run_dir.join("operation.toml")).expect("operation.toml");
        assert!(as_run.contains("speculate = false"), "{extra}: {as_run}");
    }
    // Asking for both is a contradiction, refused before the run.
    let dir = tempfile::tempdir().expect("a temporary directory");
    spec(dir.path(), 1, "speculate = true\nidempotent = false");
    let out = run(&["validate", "straggle.toml"], dir.path());
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("`idempotent = false` forbids"), "{}", text(&out.stderr));
}
