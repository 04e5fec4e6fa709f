//! A user's own process kind run through the worker's command line in-process
//! ([`run_with_args`]), as a custom worker binary would: a kind that panics for one
//! parameter value gives one crashed row with its reason, the others finish, exit 1.

mod common;

use std::path::Path;

use common::result_dir;
use serde::{Deserialize, Serialize};
use taskfarm::{Process, ProcessContext, ProcessError};
use taskfarm_worker::{run_with_args, Registry, EXIT_BAD_INPUT, EXIT_CRASHED, EXIT_OK};

/// Panics when `x` is 3; otherwise doubles it.
#[derive(Debug, Serialize, Deserialize)]
struct Fragile {
    x: i64,
    #[serde(default)]
    offset: i64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Doubled {
    doubled: i64,
}

impl Process for Fragile {
    type Output = Doubled;

    fn run(&self, _ctx: &ProcessContext<'_>) -> Result<Doubled, ProcessError> {
        if self.x == 3 {
            panic!("fragile breaks at x = 3");
        }
        Ok(Doubled { doubled: 2 * self.x + self.offset })
    }
}

fn registry() -> Registry {
    Registry::with_builtins().register::<Fragile>("fragile", "doubles x, panics at 3")
}

#[test]
fn a_panicking_process_is_one_crashed_row() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let spec = dir.path().join("fragile.toml");
    std::fs::write(&spec, "kind = \"fragile\"\noffset = 1\n[parameter_ranges]\nx = [1, 2, 3, 4, 5]\n")
        .expect("the spec is written");
    let results = dir.path().join("results");
    for backend in ["serial", "local"] {
        let base = results.join(backend);
        let args = ["my-worker", "run", &*spec.to_string_lossy(), "--backend", backend, "--quiet", "--results"];
        let code = run_with_args(registry(), args.iter().map(|s| s.to_string()).chain([base.display().to_string()]));
        assert_eq!(code, EXIT_CRASHED, "{backend}: some processes crashed");
        let result = result_dir(&base, "fragile");
        let rows = backend_core::results::read_results_jsonl(&result).expect("results.jsonl");
        assert_eq!(rows.len(), 5, "one row per process");
        let crashed: Vec<_> = rows.iter().filter(|r| r["status"] == "crashed").collect();
        assert_eq!(crashed.len(), 1, "{rows:?}");
        assert_eq!(crashed[0]["x"], 3);
        let reason = crashed[0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains("panicked: fragile breaks at x = 3"), "{reason}");
        let finished: Vec<i64> = rows.iter().filter_map(|r| r.get("doubled")?.as_i64()).collect();
        assert_eq!(finished, vec![3, 5, 9, 11], "the spec field `offset` reached the process");
    }
}

#[test]
fn a_custom_kind_validates_like_a_builtin() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let good = dir.path().join("good.yaml");
    std::fs::write(&good, "kind: fragile\nparameter_settings:\n  - {x: 1}\n  - {x: 2}\n").expect("written");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "kind: fragile\nparameter_settings:\n  - {y: 1}\n").expect("written");
    let args = |spec: &Path| ["my-worker".to_owned(), "validate".to_owned(), spec.display().to_string()];
    assert_eq!(run_with_args(registry(), args(&good)), EXIT_OK);
    assert_eq!(run_with_args(registry(), args(&bad)), EXIT_BAD_INPUT, "missing field `x`");
    // The built-in binary does not know the kind.
    assert_eq!(run_with_args(Registry::with_builtins(), args(&good)), EXIT_BAD_INPUT);
}
