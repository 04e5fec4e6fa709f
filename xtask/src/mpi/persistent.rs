//! MPI cases of the persistent-program kinds (`python`, `jsonl`): the example sweep under
//! `mpirun -n 4` and with `--threads-per-rank 2` gives the serial rows, each fault of a
//! Python process costs that process on a worker rank (a retry runs on another rank), and
//! an interpreter that dies at start-up ends the job with one error, and a `jsonl` program's
//! malformed line costs its process.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::launch;
use super::suite::{expect_failure, expect_in, expect_success, oversubscribed, path_arg, run_with_timeout};
use crate::results::{compare_results, compare_rows, read_results};
use crate::runner::Outcome;
use crate::{root, Tally};

/// The module of the fault cases: x = 1 segfaults, 2 calls sys.exit(3), 3 sleeps past the
/// timeout, 4 raises, 5 fails on the first interpreter that runs it, 8 is killed with
/// SIGKILL; the others finish.
const FAULTS: &str = r#"
import os, signal, sys, time

def load():
    return os.getpid()

def run(x, state, scratch_dir):
    if x == 1:
        os.kill(os.getpid(), signal.SIGSEGV)
    if x == 2:
        sys.exit(3)
    if x == 3:
        time.sleep(60)
    if x == 4:
        raise ValueError("x is 4")
    if x == 8:
        # As the out-of-memory killer would.
        os.kill(os.getpid(), signal.SIGKILL)
    if x == 5:
        mark = os.path.join(scratch_dir, "failed-on")
        if not os.path.exists(mark):
            open(mark, "w").write(str(state))
            raise RuntimeError("first attempt")
        if open(mark).read() == str(state):
            raise RuntimeError("retried on the same interpreter")
    return {"pid": state}
"#;

/// Runs the cases with the release worker built with MPI (`worker`).
pub(super) fn cases(scratch: &Path, tally: &mut Tally, worker: &Path) {
    let dir = scratch.join("persistent");
    if let Err(e) = std::fs::create_dir_all(&dir) {
        tally.record("persistent kinds: a scratch directory", Err(e.into()));
        return;
    }
    let spec = root().join("examples").join("specs").join("python_sweep.toml");
    for (ranks, threads) in [(4, 1), (2, 2)] {
        let name = format!("python_sweep.toml: -n {ranks} × {threads} thread(s) gives the serial rows");
        tally.record(&name, example(&dir, worker, &spec, ranks, threads));
    }
    tally.record("python faults under -n 3: each costs its process, retries on another rank", faults(&dir));
    tally.record("python interpreter dying at start-up under -n 3: one error, no rows", startup(&dir));
    tally.record("jsonl program writing a malformed line under -n 3: a crash that quotes it", malformed(&dir));
}

fn example(dir: &Path, worker: &Path, spec: &Path, ranks: u32, threads: u32) -> Result<()> {
    let (mpi_dir, serial_dir) =
        (dir.join(format!("mpi-{ranks}-{threads}")), dir.join(format!("serial-{ranks}-{threads}")));
    let mut args = vec!["run".into(), path_arg(spec), "--backend".into(), "mpi".into()];
    args.extend(["--threads-per-rank".into(), threads.to_string(), "--quiet".into()]);
    args.extend(["--results".into(), path_arg(&mpi_dir)]);
    let mut mpi = launch(&oversubscribed(ranks, args))?;
    mpi.current_dir(root());
    let mpi = run_with_timeout(dir, mpi)?;
    let mut serial = Command::new(worker);
    serial.arg("run").arg(spec).args(["--backend", "serial", "--quiet", "--results"]).arg(&serial_dir);
    serial.current_dir(root());
    let serial = run_with_timeout(dir, serial)?;
    expect_success(&mpi)?;
    expect_success(&serial)?;
    if ranks > 2 {
        compare_results(&serial_dir, &mpi_dir)
    } else {
        compare_rows(&serial_dir, &mpi_dir).map(drop)
    }
}

fn faults(dir: &Path) -> Result<()> {
    std::fs::write(dir.join("faults.py"), FAULTS)?;
    std::fs::write(
        dir.join("faults.toml"),
        "name = \"faults\"\nkind = \"python\"\nfile = \"faults.py\"\nfunction = \"run\"\nsetup = \"load\"\n\
         timeout = \"2s\"\nretries = 1\nparameter_ranges = { x = [0, 1, 2, 3, 4, 5, 6, 7, 8] }\n",
    )?;
    let rows = failing_run(dir, "faults")?;
    let expected = [
        (0, "finished", ""),
        (1, "crashed", "signal 11 (SIGSEGV) while it ran this process"),
        (2, "crashed", "exited with status 3 while it ran this process"),
        (3, "timed_out", "ran past its timeout"),
        (4, "crashed", "ValueError: x is 4"),
        (5, "finished", ""),
        (6, "finished", ""),
        (7, "finished", ""),
        (8, "crashed", "killed by signal 9 (SIGKILL), as the out-of-memory killer does"),
    ];
    if rows.len() != expected.len() {
        bail!("expected {} rows, found {}", expected.len(), rows.len());
    }
    for ((id, status, reason), (want_id, want_status, want_reason)) in rows.iter().zip(expected) {
        if *id != want_id.to_string() || status != want_status || !reason.contains(want_reason) {
            bail!("process {want_id}: expected {want_status} `{want_reason}`, found {id} {status} `{reason}`");
        }
    }
    Ok(())
}

/// Runs `{name}.toml` in `dir` under `mpirun -n 3`, which must fail (some processes crash),
/// and returns the id, status and reason of each row of its results.csv.
fn failing_run(dir: &Path, name: &str) -> Result<Vec<(String, String, String)>> {
    let (outcome, results) = run_spec(dir, name, true)?;
    expect_failure(&outcome)?;
    let (header, rows) = read_results(&results)?;
    let column = |name: &str| header.iter().position(|h| h == name).with_context(|| format!("no {name} column"));
    let (id, status, reason) = (column("id")?, column("status")?, column("reason")?);
    Ok(rows
        .iter()
        .map(|row| {
            let cell = |i: usize| row.get(i).cloned().unwrap_or_default();
            (cell(id), cell(status), cell(reason))
        })
        .collect())
}

/// Runs `{name}.toml` in `dir` under `mpirun -n 3` (with `--quiet` when `quiet`) into
/// `{name}-results`; its outcome and the results directory.
fn run_spec(dir: &Path, name: &str, quiet: bool) -> Result<(Outcome, std::path::PathBuf)> {
    let results = dir.join(format!("{name}-results"));
    let mut args = vec!["run".into(), format!("{name}.toml"), "--backend".into(), "mpi".into()];
    if quiet {
        args.push("--quiet".into());
    }
    args.extend(["--results".into(), path_arg(&results)]);
    let mut command = launch(&oversubscribed(3, args))?;
    command.current_dir(dir);
    Ok((run_with_timeout(dir, command)?, results))
}

fn startup(dir: &Path) -> Result<()> {
    std::fs::write(
        dir.join("broken.py"),
        "def load():\n    raise RuntimeError('no data here')\n\ndef run():\n    pass\n",
    )?;
    std::fs::write(
        dir.join("broken.toml"),
        "name = \"broken\"\nkind = \"python\"\nfile = \"broken.py\"\nfunction = \"run\"\nsetup = \"load\"\n\
         parameter_ranges = { x = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9] }\n",
    )?;
    let (outcome, results) = run_spec(dir, "broken", false)?;
    expect_failure(&outcome)?;
    expect_in(&outcome.stderr, "before it was ready: RuntimeError: no data here")?;
    let errors = outcome.stderr.matches("error:").count();
    if errors != 1 {
        bail!("expected one error, found {errors}:\n{}", outcome.stderr);
    }
    // Nothing is recorded: `--resume` runs it all once the module is mended.
    if let Ok((_, rows)) = read_results(&results) {
        if !rows.is_empty() {
            bail!("expected no rows, found {}: {rows:?}", rows.len());
        }
    }
    Ok(())
}

/// A `jsonl` program that answers x = 1 with a line that is not JSON, on 2 worker ranks.
fn malformed(dir: &Path) -> Result<()> {
    std::fs::write(
        dir.join("lines.toml"),
        r#"name = "lines"
kind = "jsonl"
program = ["sh", "-c", '''while read -r line; do
  id=${line#*\"id\":}; id=${id%%,*}
  case "$line" in *'"x":1'*) echo 'this is not json';; *) echo "{\"id\": $id, \"output\": {\"pid\": $$}}";; esac
done''']
parameter_ranges = { x = [0, 1, 2, 3, 4, 5] }
"#,
    )?;
    let rows = failing_run(dir, "lines")?;
    if rows.len() != 6 {
        bail!("expected 6 rows, found {}", rows.len());
    }
    for (id, status, reason) in &rows {
        let ok = match id.as_str() {
            "1" => status == "crashed" && reason.contains("not JSON") && reason.contains("`this is not json`"),
            _ => status == "finished",
        };
        if !ok {
            bail!("unexpected row: {id} {status} `{reason}`");
        }
    }
    Ok(())
}
