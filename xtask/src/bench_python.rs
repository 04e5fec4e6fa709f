//! The bench rows of the `python` kind (`cargo xtask bench --only python`), each a ratio of
//! wall times measured side by side in the same run:
//!
//! - 10,000 tiny Python processes (add two numbers) with `kind = "python"` (local backend,
//!   4 interpreters) against the `command` kind running `python3 -c` per process (measured
//!   on fewer processes and scaled: a per-process interpreter costs the same each time)
//!   and against mpi4py.futures with 4 workers, chunksize 1 (when mpi4py is installed);
//! - 8 processes that need a 200 MB array built at start-up, with `setup` (once per
//!   interpreter, 2 interpreters) against building it in every process.
//!
//! Every wall time is the whole command: start-up, the processes, and (for taskfarm) the
//! journal and the consolidated files.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::bench::{Row, Target};
use crate::mpi::{mpi_environment, on_path};
use crate::{cargo, release_worker, run_checked};

/// Tiny processes of the `python` kind and of mpi4py.futures.
const TINY: usize = 10_000;
/// Processes of the `command` baseline (`python3 -c` each); its time is scaled to [`TINY`].
const COMMAND_RUNS: usize = 400;
/// Interpreters (and mpi4py workers) of the tiny rows.
const WORKERS: usize = 4;

const ADD: &str = "def add(a, b):\n    return {\"sum\": a + b}\n";

const MPI4PY: &str = r#"import sys, time
from mpi4py.futures import MPIPoolExecutor

def add(a, b):
    return {"sum": a + b}

if __name__ == "__main__":
    n = int(sys.argv[1])
    with MPIPoolExecutor() as pool:
        results = list(pool.map(add, range(n), range(n), chunksize=1))
    assert len(results) == n
"#;

/// 200 MB of doubles, built in Python (no file, no numpy needed).
const BIG: &str = r#"import array

def load():
    return array.array("d", range(25_000_000))

def run(i, state=None):
    table = state if state is not None else load()
    return {"value": table[i * 1000]}
"#;

/// The rows; `mpi`: mpirun is here (for the mpi4py baseline); `build`: the release worker
/// is to be built first (with MPI when mpirun is here: the build the MPI tests use).
pub(crate) fn rows(scratch: &Path, mpi: bool, build: bool) -> Result<Vec<Row>> {
    if build {
        let mut command = cargo();
        command.args(["build", "--release", "-p", "taskfarm-worker"]);
        if mpi {
            command.args(["--features", "mpi"]);
        }
        run_checked(&mut command, "build the release worker")?;
    }
    let worker = release_worker();
    let python = on_path("python3").context("python3 is not on PATH: the python rows need it")?;
    std::fs::write(scratch.join("add.py"), ADD)?;
    std::fs::write(scratch.join("big.py"), BIG)?;
    let mut rows = Vec::new();

    let spec = scratch.join("tiny.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"tiny\"\nkind = \"python\"\nfile = \"add.py\"\nfunction = \"add\"\nparameter_ranges = {{ a = \
             [{}], b = [1] }}\n",
            list(TINY)
        ),
    )?;
    let pool = WORKERS.to_string();
    let kind = time(scratch, "taskfarm python kind, 10,000 tiny processes, 4 interpreters", || {
        let mut c = Command::new(&worker);
        c.args(["run", "tiny.toml", "--backend", "local", "--pool-size", &pool, "--quiet", "--results", "results"]);
        c
    })?;
    let spec = scratch.join("command.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"per_process\"\nkind = \"command\"\ncommand = [\"{}\", \"-c\", \"import json; print(json.dumps({{{{'sum': {{a}} + {{b}}}}}}))\"]\nparameter_ranges = {{ a = [{}], b = [1] }}\n",
            python.display(),
            list(COMMAND_RUNS)
        ),
    )?;
    let command = time(scratch, "taskfarm command kind, python3 -c per process", || {
        let mut c = Command::new(&worker);
        c.args(["run", "command.toml", "--backend", "local", "--pool-size", &pool, "--quiet", "--results", "results"]);
        c
    })?;
    let command_scaled = command * TINY as f64 / COMMAND_RUNS as f64;
    rows.push(Row::new(
        "Python kind, 10,000 x add: speed-up over the command kind (python3 -c per process)",
        format!("{kind:.2}s"),
        format!("{command_scaled:.1}s (from {COMMAND_RUNS} runs: {command:.2}s)"),
        command_scaled / kind,
        Target::AtLeast(50.0),
    ));
    let has_mpi4py = Command::new(&python)
        .args(["-c", "import mpi4py.futures"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    match (mpi, has_mpi4py, on_path("mpirun")) {
        (true, true, Some(mpirun)) => {
            std::fs::write(scratch.join("futures_add.py"), MPI4PY)?;
            let futures = time(scratch, "mpi4py.futures, 4 workers, chunksize 1", || {
                let mut c = Command::new(&mpirun);
                c.args(["-n", &(WORKERS + 1).to_string()]);
                mpi_environment(&mut c, true);
                c.arg(&python).args(["-m", "mpi4py.futures", "futures_add.py", &TINY.to_string()]);
                c
            })?;
            rows.push(Row::new(
                "Python kind, 10,000 x add: speed vs mpi4py.futures (4 workers, chunksize 1)",
                format!("{kind:.2}s"),
                format!("{futures:.2}s mpi4py.futures"),
                futures / kind,
                Target::AtLeast(1.0),
            ));
        }
        _ => eprintln!("xtask: bench: mpi4py (or mpirun) is not installed: the mpi4py.futures row is skipped"),
    }

    let big = |name: &str, setup: bool| -> Result<f64> {
        let spec = format!("{name}.toml");
        let setup = if setup { "setup = \"load\"\n" } else { "" };
        std::fs::write(
            scratch.join(&spec),
            format!(
                "name = \"{name}\"\nkind = \"python\"\nfile = \"big.py\"\nfunction = \"run\"\n{setup}parameter_ranges \
                 = {{ i = [{}] }}\n",
                list(8)
            ),
        )?;
        time(scratch, &format!("taskfarm python kind, 8 processes of a 200 MB array: {name}"), || {
            let mut c = Command::new(&worker);
            c.args(["run", &spec, "--backend", "local", "--pool-size", "2", "--quiet", "--results", "results"]);
            c
        })
    };
    let once = big("setup_once", true)?;
    let each = big("setup_each", false)?;
    rows.push(Row::new(
        "Python kind, 8 processes of a 200 MB array: setup per interpreter vs per process",
        format!("{once:.2}s"),
        format!("{each:.2}s per process"),
        each / once,
        Target::None,
    ));
    Ok(rows)
}

/// `0, 1, ..., n - 1` for a TOML list.
fn list(n: usize) -> String {
    (0..n).map(|i| i.to_string()).collect::<Vec<_>>().join(", ")
}

/// The best of two wall times of the command `make` builds, run in `dir`.
fn time(dir: &Path, what: &str, make: impl Fn() -> Command) -> Result<f64> {
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        eprintln!("xtask: bench: {what}");
        let _ = std::fs::remove_dir_all(dir.join("results"));
        let mut command = make();
        command.current_dir(dir).stdin(Stdio::null()).stdout(Stdio::null());
        let started = Instant::now();
        let status = command.status().with_context(|| format!("could not start {what}"))?;
        if !status.success() {
            bail!("{what} failed ({status})");
        }
        best = best.min(started.elapsed().as_secs_f64());
    }
    Ok(best)
}
