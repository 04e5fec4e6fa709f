//! The formats of the result directory across versions: a result directory written by each
//! released format (kept in `tests/data/`) is still read by `report` and finished by
//! `--resume`; one of a newer format, or a journal of a newer version, is refused with a
//! sentence naming the versions.

mod common;

use std::path::{Path, PathBuf};

use common::{text, worker_no_panic as run};

/// A copy of the result directory `tests/data/<name>` in `into` (a run may write into it).
fn copy_of(name: &str, into: &Path) -> PathBuf {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name);
    let to = into.join(name);
    std::fs::create_dir_all(&to).expect("the copy's directory");
    for file in ["operation.toml", "journal"] {
        std::fs::copy(from.join(file), to.join(file)).expect("the test data is there");
    }
    to
}

#[test]
fn every_released_format_is_read_and_resumed() {
    // 0.1 wrote operation.toml without a format line; format 1 has one. The run: x = 1..4,
    // x = 3 crashed.
    for format in ["format-0.1", "format-1"] {
        let tmp = tempfile::tempdir().expect("a temporary directory");
        let dir = copy_of(format, tmp.path());
        let out = run(&["report", &dir.to_string_lossy()], tmp.path());
        let said = text(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{format}: {said}{}", text(&out.stderr));
        assert!(said.contains("4 recorded, 3 finished, 1 crashed"), "{format}: {said}");
        let spec = dir.join("operation.toml");
        let out = run(
            &["run", &spec.to_string_lossy(), "--resume", &dir.to_string_lossy(), "--rerun-crashed", "--quiet"],
            tmp.path(),
        );
        assert_eq!(out.status.code(), Some(1), "{format}: x = 3 crashes again: {}", text(&out.stderr));
        let rows = backend_core::results::read_results_jsonl(&dir).expect("results.jsonl");
        assert_eq!(rows.len(), 4, "{format}");
    }
}

#[test]
fn a_newer_format_is_refused_with_the_versions() {
    let tmp = tempfile::tempdir().expect("a temporary directory");
    let dir = copy_of("format-1", tmp.path());
    let spec = dir.join("operation.toml");
    let text_now = std::fs::read_to_string(&spec).expect("operation.toml");
    std::fs::write(&spec, text_now.replacen("format 1", "format 7", 1)).expect("written");
    for args in [vec!["report", dir.to_str().unwrap_or_default()], {
        vec!["run", spec.to_str().unwrap_or_default(), "--resume", dir.to_str().unwrap_or_default()]
    }] {
        let out = run(&args, tmp.path());
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains("written by a newer taskfarm (result directory format 7; this one reads up to 1)"),
            "{stderr}"
        );
    }
    let dir = copy_of("format-0.1", tmp.path());
    let journal = dir.join("journal");
    let mut bytes = std::fs::read(&journal).expect("the journal");
    bytes[18] = b'2';
    std::fs::write(&journal, bytes).expect("written");
    let out = run(&["report", &dir.to_string_lossy()], tmp.path());
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("is a journal of a newer taskfarm (v2; this one reads v1)"), "{stderr}");
}
