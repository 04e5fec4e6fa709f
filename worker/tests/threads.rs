//! Threads in specs and on the command line: `threads` per process and `threads_per_rank`
//! are read and checked, a process asking for more threads than a worker has is exit 2 with
//! a sentence naming the limit, and a spec with `threads` runs on the local backend with the
//! same rows as serial.

mod common;

use std::path::Path;

use common::{text, worker};

fn write_spec(dir: &Path, extra: &str) -> std::path::PathBuf {
    let spec = dir.join("threads.toml");
    let text = format!(
        "kind = \"command\"\ncommand = [\"sh\", \"-c\", \"echo {{x}}\"]\n{extra}\n[parameter_ranges]\nx = [1, 2, 3, 4]\n"
    );
    std::fs::write(&spec, text).expect("the spec is written");
    spec
}

#[test]
fn more_threads_than_a_local_pool_has_is_exit_2_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "threads = 3");
    let out = worker(&["run", spec.to_str().unwrap(), "--backend", "local", "--pool-size", "2"], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("threads.toml, line 3") && stderr.contains("the local pool has 2"), "{stderr}");
    assert!(!dir.path().join("results").exists(), "nothing ran");
}

#[test]
fn more_threads_than_the_spec_gives_a_rank_is_a_spec_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "threads = 4\nthreads_per_rank = 2");
    let out = worker(&["validate", spec.to_str().unwrap()], dir.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("each MPI worker rank has 2"), "{stderr}");
    for bad in ["threads = 0", "threads = \"many\"", "threads_per_rank = -1"] {
        let spec = write_spec(dir.path(), bad);
        let out = worker(&["validate", spec.to_str().unwrap()], dir.path());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("must be a whole number from 1 to"), "{bad}: {stderr}");
    }
}

#[test]
fn a_spec_with_threads_runs_locally_like_serial_and_records_them() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_spec(dir.path(), "threads = 2");
    let mut rows = Vec::new();
    for backend in ["serial", "local"] {
        let results = dir.path().join(backend);
        let out = worker(
            &["run", spec.to_str().unwrap(), "--backend", backend, "--pool-size", "4", "--quiet", "--results"]
                .into_iter()
                .chain([results.to_str().unwrap()])
                .collect::<Vec<_>>(),
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(0), "{backend}: {}", text(&out.stderr));
        let run = std::fs::read_dir(results.join("threads")).unwrap().next().unwrap().unwrap().path();
        let toml = std::fs::read_to_string(run.join("operation.toml")).unwrap();
        assert!(toml.contains("threads = 2"), "operation.toml records the threads: {toml}");
        let jsonl = std::fs::read_to_string(run.join("results.jsonl")).unwrap();
        let mut stripped: Vec<serde_json::Value> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        for row in &mut stripped {
            let map = row.as_object_mut().unwrap();
            for column in ["duration_s", "started_at", "host", "worker"] {
                map.remove(column);
            }
        }
        rows.push(stripped);
    }
    assert_eq!(rows[0], rows[1], "the same rows on serial and local");
}
