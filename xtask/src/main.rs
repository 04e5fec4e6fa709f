//! Project automation, run as `cargo xtask <command>`: `run` a spec with the release worker,
//! `mpirun` it under MPI, `test` (the README's test command, MPI tests included when
//! `mpirun` is found), `ci` (format check, clippy, tests) as `.ci/run` does, and the suites
//! that need root: `cluster-test` (MPI across network namespaces) and `slurm-test`.
//!
//! Not for anything a user's program needs: the xtask only drives cargo and mpirun.

mod bench;
mod bench_python;
mod cluster;
mod mpi;
mod release;
mod results;
mod runner;
mod slurm;

use std::path::PathBuf;
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "taskfarm's project automation")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Debug, Subcommand)]
enum Task {
    /// Builds the release worker and runs a spec with it: `cargo xtask run SPEC [worker args]`.
    Run {
        /// The spec file.
        spec: PathBuf,
        /// More arguments for `taskfarm-worker run` (e.g. --backend serial).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Builds the release worker with MPI and runs it under mpirun.
    Mpirun(mpi::MpirunArgs),
    /// Runs the tests: the workspace's, and the MPI tests under a real mpirun when it is found.
    Test {
        /// Only the MPI suite under mpirun (backend-mpi's unit tests and scenarios).
        #[arg(long)]
        mpi_only: bool,
    },
    /// Measures taskfarm against baselines run side by side; prints a table, writes target/bench/*.json.
    Bench(bench::BenchArgs),
    /// Runs taskfarm across 3 hosts made of network namespaces (needs root): see xtask/src/cluster.rs.
    ClusterTest(cluster::ClusterArgs),
    /// Runs taskfarm through a one-node Slurm cluster made here (needs root, slurm-wlm, munge):
    /// see xtask/src/slurm.rs.
    SlurmTest,
    /// Checks a release without publishing: package, dry-run publish, install, docs, a crate
    /// that depends on taskfarm by version: see xtask/src/release.rs.
    ReleaseCheck,
    /// What CI runs: format check, clippy with warnings as errors, the tests.
    Ci,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Run { spec, args } => run(spec, args),
        Task::Mpirun(args) => mpi::mpirun(args),
        Task::Test { mpi_only } => test(mpi_only).map(|()| 0),
        Task::Ci => ci().map(|()| 0),
        Task::ClusterTest(args) => cluster::cluster_test(args).map(|()| 0),
        Task::SlurmTest => slurm::slurm_test(ci_mode()).map(|()| 0),
        Task::ReleaseCheck => release::release_check(ci_mode()).map(|()| 0),
        Task::Bench(args) => bench::bench(args).map(|()| 0),
    };
    match result {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the xtask lives one level below it).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The target directory cargo builds into.
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root().join("target"))
}

/// A `cargo` command run from the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root());
    cmd
}

/// Counts the cases of a test suite run by the xtask (MPI cases, cluster cases) and ends it
/// with the plain closing line `<suite>: N passed, N failed`.
#[derive(Debug)]
pub struct Tally {
    suite: &'static str,
    passed: usize,
    failed: Vec<String>,
}

impl Tally {
    /// A tally for the suite called `suite` (`mpi`, `cluster`).
    pub fn new(suite: &'static str) -> Self {
        Tally { suite, passed: 0, failed: Vec::new() }
    }

    /// Records one case and says how it went.
    pub fn record(&mut self, name: &str, outcome: Result<()>) {
        match outcome {
            Ok(()) => {
                eprintln!("xtask: {} test passed: {name}", self.suite);
                self.passed += 1;
            }
            Err(e) => {
                eprintln!("xtask: {} test FAILED: {name}: {e:#}", self.suite);
                self.failed.push(name.to_owned());
            }
        }
    }

    /// Prints the closing line; an error naming the failed cases if there are any.
    pub fn finish(self) -> Result<()> {
        println!("{}: {} passed, {} failed", self.suite, self.passed, self.failed.len());
        if !self.failed.is_empty() {
            bail!("{} tests failed: {}", self.suite, self.failed.join("; "));
        }
        Ok(())
    }
}

/// Runs a command, failing with its description when it does not succeed.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<()> {
    eprintln!("xtask: {what}");
    let status = cmd.status().with_context(|| format!("could not start: {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// The release build of the worker binary (`cargo build --release -p taskfarm-worker`).
fn release_worker() -> PathBuf {
    target_dir().join("release").join("taskfarm-worker")
}

fn run(spec: PathBuf, args: Vec<String>) -> Result<i32> {
    run_checked(cargo().args(["build", "--release", "-p", "taskfarm-worker"]), "build the release worker")?;
    let worker = release_worker();
    let status = Command::new(&worker)
        .arg("run")
        .arg(&spec)
        .args(&args)
        .status()
        .with_context(|| format!("could not start {}", worker.display()))?;
    Ok(status.code().unwrap_or(1))
}

fn ci_mode() -> bool {
    std::env::var("CI").map(|v| v == "true" || v == "1").unwrap_or(false)
}

fn test(mpi_only: bool) -> Result<()> {
    if !mpi_only {
        run_checked(
            cargo().args(["test", "--workspace", "--exclude", "taskfarm-backend-mpi"]),
            "cargo test (all crates but backend-mpi)",
        )?;
    }
    if mpi::found() || ci_mode() {
        // backend-mpi's unit tests need libmpi to link, not mpirun to run; its scenario
        // test (`--test mpi_scenarios`) runs under mpirun in `mpi::test`.
        run_checked(
            cargo().args(["test", "-p", "taskfarm-backend-mpi", "--lib"]),
            "cargo test -p taskfarm-backend-mpi --lib",
        )?;
    } else {
        // Without MPI: the scheduler, its policy and the messages, which know nothing of it.
        run_checked(
            cargo().args(["test", "-p", "taskfarm-backend-mpi", "--no-default-features", "--lib"]),
            "cargo test -p taskfarm-backend-mpi --no-default-features --lib",
        )?;
    }
    mpi::test(ci_mode())
}

fn ci() -> Result<()> {
    run_checked(cargo().args(["fmt", "--all", "--check"]), "cargo fmt --check")?;
    if mpi::found() || ci_mode() {
        run_checked(
            cargo().args(["clippy", "--workspace", "--all-targets", "--all-features", "--", "-D", "warnings"]),
            "cargo clippy (all crates, MPI included) -D warnings",
        )?;
    } else {
        eprintln!("xtask: mpicc/mpirun not found: clippy skips backend-mpi");
        run_checked(
            cargo().args([
                "clippy",
                "--workspace",
                "--exclude",
                "taskfarm-backend-mpi",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
            "cargo clippy -D warnings",
        )?;
    }
    test(false)
}
