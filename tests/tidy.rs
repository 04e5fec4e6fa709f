//! Conventions checked on every build: each Rust file opens with a `//!` line saying what it
//! is for, no `dbg!` or `todo!` is left behind, and every test of the repository runs in
//! `cargo xtask test`.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_file_says_what_it_is_for_and_leaves_no_debugging() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(root, &mut files);
    assert!(files.len() > 10, "the walk found the sources");
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        let rel = file.strip_prefix(root).unwrap_or(&file).display().to_string();
        if !text.trim_start().starts_with("//!") {
            problems.push(format!("{rel}: does not open with a `//!` line"));
        }
        for (bad, what) in [("dbg!(", "dbg!"), ("todo!(", "todo!")] {
            if rel != "tests/tidy.rs" && text.contains(bad) {
                problems.push(format!("{rel}: contains {what}"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// `cargo xtask test` runs `cargo test --workspace --exclude ...`: every crate it leaves out
/// must have its unit tests (`-p NAME --lib`) and each of its test programs (`--test NAME`)
/// run by the xtask in another way, or its tests would never run in CI.
#[test]
fn every_crate_s_tests_run_in_xtask_test() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut sources = Vec::new();
    rust_files(&root.join("xtask/src"), &mut sources);
    let xtask: String = sources.iter().map(|f| std::fs::read_to_string(f).unwrap_or_default()).collect();
    let excluded: Vec<&str> =
        xtask.split("\"--exclude\", \"").skip(1).filter_map(|rest| rest.split('"').next()).collect();
    assert!(!excluded.is_empty(), "the xtask's workspace test command was found");
    let mut problems = Vec::new();
    for krate in excluded {
        let Some(dir) = package_dir(root, krate) else {
            problems.push(format!("{krate}: no workspace member has this package name"));
            continue;
        };
        let mut sources = Vec::new();
        rust_files(&dir.join("src"), &mut sources);
        let has_unit_tests = sources.iter().any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains("#[test]")));
        if has_unit_tests && !xtask.contains(&format!("\"-p\", \"{krate}\", \"--lib\"")) {
            problems.push(format!("{krate}: its unit tests are not run (`cargo test -p {krate} --lib`)"));
        }
        for test in std::fs::read_dir(dir.join("tests")).into_iter().flatten().flatten() {
            let name = test.path().file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            if test.path().extension().is_some_and(|e| e == "rs") && !xtask.contains(&format!("\"--test\", \"{name}\""))
            {
                problems.push(format!("{krate}: its test program `{name}` is not run"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The directory of the workspace member whose package is named `name`.
fn package_dir(root: &Path, name: &str) -> Option<PathBuf> {
    let wanted = format!("name = \"{name}\"");
    std::fs::read_dir(root).ok()?.flatten().map(|e| e.path()).find(|dir| {
        std::fs::read_to_string(dir.join("Cargo.toml")).is_ok_and(|toml| toml.lines().any(|l| l.trim() == wanted))
    })
}
