//! The MPI case of kept output: with `output = "files"` and `output = "log"` (the latter in
//! subprocess isolation, so the output also passes from a child to its worker rank), every
//! process's stdout and stderr ends up in the master's result directory, though the worker
//! ranks cannot see that directory, and `taskfarm-worker log DIR ID` prints it, a process
//! with more than 1 MiB of output included.
//!
//! The master and the workers start in different working directories (an MPMD `mpirun`, one
//! `-wdir` per app context) and the results path is relative: on the workers it names a
//! directory that does not exist, as on hosts without a shared file system.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use super::suite::{expect_success, path_arg, run_with_timeout};
use super::{mpi_environment, on_path, INSTALL_HINT};
use crate::results::{read_results, run_dir};
use crate::Tally;

/// How many processes each run has; process 0 writes more than 1 MiB on stdout.
const PROCESSES: u32 = 24;
/// The lines `seq` writes for process 0: 1,288,895 bytes.
const BIG_LINES: u32 = 200_000;

/// Runs the case for both layouts with the release worker built with MPI (`worker`).
pub(super) fn cases(scratch: &Path, tally: &mut Tally, worker: &Path) {
    for (mode, isolation) in [("files", "thread"), ("log", "subprocess")] {
        let name = format!(
            "output = \"{mode}\" ({isolation} isolation) under -n 4, workers without the master's directory: \
             every process's output (one > 1 MiB) is in the master's directory"
        );
        tally.record(&name, kept_on_the_master(scratch, worker, mode, isolation));
    }
}

fn kept_on_the_master(scratch: &Path, worker: &Path, mode: &str, isolation: &str) -> Result<()> {
    let base = scratch.join(format!("output-{mode}"));
    let (master_cwd, workers_cwd) = (base.join("master"), base.join("workers"));
    std::fs::create_dir_all(&master_cwd)?;
    std::fs::create_dir_all(&workers_cwd)?;
    let spec = base.join("kept_output.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"kept_output\"\nkind = \"command\"\noutput = \"{mode}\"\nisolation = \"{isolation}\"\n\
             command = [\"sh\", \"-c\", \"if [ {{x}} -eq 0 ]; then seq 1 {BIG_LINES}; fi; echo out-{{x}}; \
             echo err-{{x}} >&2\"]\n[parameter_ranges]\nx = [{}]\n",
            (0..PROCESSES).map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
        ),
    )?;
    let mpirun = on_path("mpirun").context(format!("mpirun was not found on PATH: {INSTALL_HINT}"))?;
    let mut command = Command::new(mpirun);
    mpi_environment(&mut command, true);
    let run = ["run", &path_arg(&spec), "--backend", "mpi", "--results", "results", "--quiet"];
    command.arg("-n").arg("1").arg("-wdir").arg(&master_cwd).arg(worker).args(run);
    command.arg(":").arg("-n").arg("3").arg("-wdir").arg(&workers_cwd).arg(worker).args(run);
    let started = std::time::Instant::now();
    let outcome = run_with_timeout(&base, command)?;
    expect_success(&outcome)?;
    eprintln!("xtask:   ran in {:.2} s", started.elapsed().as_secs_f64());
    if workers_cwd.join("results").exists() {
        bail!("the worker ranks made {}: output must reach the master only", workers_cwd.join("results").display());
    }
    let dir = run_dir(&master_cwd.join("results"))?;
    let (header, rows) = read_results(&dir)?;
    let worker_column = header.iter().position(|h| h == "worker").context("results.csv has no worker column")?;
    if rows.len() != PROCESSES as usize || rows.iter().any(|row| row.get(worker_column).is_some_and(|w| w == "master"))
    {
        bail!("expected {PROCESSES} rows, all run on worker ranks; found {rows:?}");
    }
    let log = std::fs::read_to_string(dir.join("operation.log")).unwrap_or_default();
    if log.contains("could not be") {
        bail!("operation.log says output was lost:\n{log}");
    }
    let big: String = (1..=BIG_LINES).map(|i| format!("{i}\n")).collect();
    for x in 0..PROCESSES {
        let printed = Command::new(worker).arg("log").arg(&dir).arg(x.to_string()).output()?;
        if !printed.status.success() {
            bail!("`log {} {x}` failed: {}", dir.display(), String::from_utf8_lossy(&printed.stderr));
        }
        let want = if x == 0 { format!("{big}out-0\n") } else { format!("out-{x}\n") };
        if printed.stdout != want.as_bytes() {
            bail!(
                "`log {} {x}` printed {} bytes on stdout, expected {} (starting {:?})",
                dir.display(),
                printed.stdout.len(),
                want.len(),
                String::from_utf8_lossy(&printed.stdout[..printed.stdout.len().min(80)])
            );
        }
        if printed.stderr != format!("err-{x}\n").as_bytes() {
            bail!("`log {} {x}` printed {:?} on stderr", dir.display(), String::from_utf8_lossy(&printed.stderr));
        }
    }
    Ok(())
}
