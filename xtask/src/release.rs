//! `cargo xtask release-check`: everything a release needs, without publishing anything:
//! the library crates package (`cargo package`, each built from its package alone) and a
//! dry-run publish goes through in dependency order; `cargo install` of the worker works
//! with and without MPI, and the installed binary runs an example spec outside the checkout;
//! the docs build with warnings denied; and a crate that depends on the facade by version
//! (the registry replaced by the local packages through `[patch]`) builds and runs the
//! README's example.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, mpi, root, run_checked, target_dir};

/// The crates a release publishes, in dependency order.
const PUBLISHED: [&str; 5] =
    ["taskfarm-backend-core", "taskfarm-backend-local", "taskfarm-backend-mpi", "taskfarm", "taskfarm-worker"];

pub fn release_check(ci: bool) -> Result<()> {
    let with_mpi = mpi::found() || ci;
    let mut packaged: Vec<&str> = PUBLISHED.to_vec();
    if !with_mpi {
        eprintln!("xtask: mpirun/mpicc not found: taskfarm-backend-mpi is left out of the package checks");
        packaged.retain(|c| *c != "taskfarm-backend-mpi");
    }
    let selection: Vec<String> = packaged.iter().flat_map(|c| ["-p".to_owned(), (*c).to_owned()]).collect();
    forget_unpacked_packages()?;
    let verify_dir = target_dir().join("release-check");
    forget_builds_of_packages(&verify_dir)?;
    run_checked(
        cargo().arg("package").arg("--target-dir").arg(&verify_dir).args(&selection),
        "cargo package (each crate built from its package)",
    )?;
    // The packages were built above: the dry run checks the order and the registry's rules.
    run_checked(
        cargo().args(["publish", "--dry-run", "--no-verify"]).args(&selection),
        "cargo publish --dry-run (in dependency order)",
    )?;

    let scratch = std::env::temp_dir().join(format!("taskfarm-release-check-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)?;
    let outcome = (|| -> Result<()> {
        let mut features: Vec<Option<&str>> = vec![None];
        if with_mpi {
            features.push(Some("mpi"));
        }
        for feature in features {
            let install = scratch.join(format!("install-{}", feature.unwrap_or("default")));
            let mut command = cargo();
            command.args(["install", "--locked", "--path", "worker", "--root"]).arg(&install);
            // The workspace's own target directory: what the tests built is reused.
            command.arg("--target-dir").arg(target_dir());
            if let Some(feature) = feature {
                command.args(["--features", feature]);
            }
            run_checked(&mut command, &format!("cargo install --path worker{}", feature_note(feature)))?;
            runs_outside_the_checkout(&install.join("bin/taskfarm-worker"), &scratch)?;
        }
        let mut docs = cargo();
        docs.env("RUSTDOCFLAGS", "-D warnings").args(["doc", "--no-deps"]).args(&selection);
        run_checked(&mut docs, "cargo doc --no-deps with warnings denied")?;
        // What docs.rs builds (no MPI there): the MPI crate without its `mpi` feature.
        let mut docs = cargo();
        docs.env("RUSTDOCFLAGS", "-D warnings").args([
            "doc",
            "--no-deps",
            "-p",
            "taskfarm-backend-mpi",
            "--no-default-features",
        ]);
        run_checked(&mut docs, "cargo doc of taskfarm-backend-mpi as docs.rs builds it (no MPI)")?;
        a_crate_depending_by_version(&scratch)
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    outcome?;
    eprintln!("xtask: release check passed");
    Ok(())
}

/// Cargo verifies a package against its siblings through a temporary local registry, whose
/// crates it unpacks into `$CARGO_HOME/registry/src/-<hash>/` and never unpacks again for the
/// same name and version: a second check would build against the first one's sources. So
/// the unpacked copies of this workspace's crates go first.
fn forget_unpacked_packages() -> Result<()> {
    let home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let Ok(sources) = std::fs::read_dir(home.join("registry/src")) else { return Ok(()) };
    for source in sources.flatten().filter(|s| s.file_name().to_string_lossy().starts_with('-')) {
        for krate in std::fs::read_dir(source.path())?.flatten() {
            let name = krate.file_name().to_string_lossy().into_owned();
            if PUBLISHED.iter().any(|p| name.starts_with(&format!("{p}-"))) {
                std::fs::remove_dir_all(krate.path())
                    .with_context(|| format!("could not remove {}", krate.path().display()))?;
            }
        }
    }
    Ok(())
}

/// The packages' files carry a fixed modification time, so cargo would take an earlier
/// check's build of a package for this one's: the builds of this workspace's packages in the
/// check's own target directory go first (their dependencies' builds are kept).
fn forget_builds_of_packages(verify_dir: &Path) -> Result<()> {
    let Ok(entries) = std::fs::read_dir(verify_dir.join("debug/.fingerprint")) else { return Ok(()) };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if PUBLISHED.iter().any(|p| name.starts_with(&format!("{p}-"))) {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("could not remove {}", entry.path().display()))?;
        }
    }
    Ok(())
}

fn feature_note(feature: Option<&str>) -> String {
    feature.map(|f| format!(" --features {f}")).unwrap_or_default()
}

/// The installed worker runs an example spec in a directory that holds only that spec.
fn runs_outside_the_checkout(worker: &Path, scratch: &Path) -> Result<()> {
    let dir = scratch.join("outside");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    std::fs::copy(root().join("examples/specs/pi.toml"), dir.join("pi.toml"))?;
    let out = Command::new(worker)
        .args(["run", "pi.toml", "--backend", "local", "--quiet"])
        .current_dir(&dir)
        .output()
        .with_context(|| format!("could not start {}", worker.display()))?;
    if !out.status.success() {
        bail!("the installed worker failed outside the checkout: {}", String::from_utf8_lossy(&out.stderr));
    }
    eprintln!("xtask: the installed {} ran examples/specs/pi.toml outside the checkout", worker.display());
    Ok(())
}

/// A new crate with `taskfarm = "0.1"` (the registry replaced by the workspace's packages
/// through `[patch.crates-io]`) builds and runs the README's library example.
fn a_crate_depending_by_version(scratch: &Path) -> Result<()> {
    let dir = scratch.join("uses-taskfarm");
    std::fs::create_dir_all(dir.join("src"))?;
    let root = root();
    let root = root.display();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"uses-taskfarm\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dependencies]\ntaskfarm = \"0.1\"\nserde = {{ version = \"1\", features = [\"derive\"] }}\n\n\
             [patch.crates-io]\ntaskfarm = {{ path = \"{root}\" }}\n\
             taskfarm-backend-core = {{ path = \"{root}/backend-core\" }}\n\
             taskfarm-backend-local = {{ path = \"{root}/backend-local\" }}\n\n[workspace]\n"
        ),
    )?;
    std::fs::write(dir.join("src/main.rs"), readme_example()?)?;
    let mut run = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    run.arg("run").arg("--quiet").current_dir(&dir).env("CARGO_TARGET_DIR", target_dir().join("uses-taskfarm"));
    run_checked(&mut run, "a crate depending on taskfarm = \"0.1\" builds and runs the README example")?;
    Ok(())
}

/// The README's library example (the first `rust` block under "Using it as a library"),
/// as a program: its items (`use`, types, impls) as they are, its statements in a `main`
/// that returns errors, and a check that every process finished. The README is what is
/// built, so the two cannot drift apart.
fn readme_example() -> Result<String> {
    let path = root().join("README.md");
    let readme = std::fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
    let section = readme.split_once("## Using it as a library").context("README.md has no library section")?.1;
    let block = section.split_once("```rust\n").context("the library section has no rust block")?.1;
    let block = block.split_once("```").context("the library section's rust block is not closed")?.0;
    let lines: Vec<&str> = block.lines().collect();
    let body = lines.iter().position(|l| l.starts_with("let ")).context("the README example has no statements")?;
    let (items, statements) = lines.split_at(body);
    Ok(format!(
        "//! The README's library example, built against `taskfarm = \"0.1\"`.\n{}\n\n\
         fn main() -> Result<(), Box<dyn std::error::Error>> {{\n{}\n\
         assert_eq!((summary.finished, summary.crashed), (6, 0), \"every process of the example finishes\");\n\
         Ok(())\n}}\n",
        items.join("\n"),
        statements.join("\n")
    ))
}
