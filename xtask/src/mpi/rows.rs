//! MPI cases that compare rows: a spec under `mpirun` gives the rows it gives on the serial
//! backend (sweeps of every shape, adaptive runs, chains), and ranks against threads.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use super::launch;
use super::suite::{expect_failure, expect_in, expect_success, oversubscribed, path_arg, run_with_timeout, sweep_spec};
use crate::results::{compare_results, find_results_csv, read_results, run_dir};
use crate::runner::Outcome;
use crate::Tally;

/// The worker binary through `cargo xtask mpirun`, against `--backend serial` on the same spec.
pub(super) fn worker_end_to_end(scratch: &Path, tally: &mut Tally, ci: bool, worker: &Path) {
    let name = "taskfarm-worker through cargo xtask mpirun -n 4, same results.csv as serial";
    let Some(spec) = sweep_spec() else {
        if ci {
            tally.record(name, Err(anyhow::anyhow!("no spec in examples/specs/ to run")));
        } else {
            eprintln!("xtask: skipping the worker end-to-end MPI test: no spec in examples/specs/");
        }
        return;
    };
    let outcome = mpi_and_serial(scratch, worker, &spec, 4, "end-to-end")
        .and_then(|both| compare_results(&both.serial_dir, &both.mpi_dir));
    tally.record(name, outcome);
}

/// A spec run under `mpirun -n ranks` and with `--backend serial`, both successful.
struct Both {
    mpi: Outcome,
    mpi_dir: PathBuf,
    serial_dir: PathBuf,
}

/// Runs `spec` under `mpirun -n ranks` into `scratch/<label>-mpi` and on the serial backend
/// into `scratch/<label>-serial`; an error unless both succeed.
fn mpi_and_serial(scratch: &Path, worker: &Path, spec: &Path, ranks: u32, label: &str) -> Result<Both> {
    let (mpi_dir, serial_dir) = (scratch.join(format!("{label}-mpi")), scratch.join(format!("{label}-serial")));
    let args = oversubscribed(
        ranks,
        vec!["run".into(), path_arg(spec), "--results".into(), path_arg(&mpi_dir), "--quiet".into()],
    );
    let mpi = run_with_timeout(scratch, launch(&args)?)?;
    let mut serial = Command::new(worker);
    serial.arg("run").arg(spec).args(["--backend", "serial", "--quiet", "--results"]).arg(&serial_dir);
    let serial = run_with_timeout(scratch, serial)?;
    expect_success(&mpi)?;
    expect_success(&serial)?;
    Ok(Both { mpi, mpi_dir, serial_dir })
}

/// The example chain under `mpirun -n 3` (every rank runs the chain, rank 0 leads) gives
/// the serial rows in both stages.
pub(super) fn chain_stages(scratch: &Path, tally: &mut Tally, worker: &Path) {
    let spec = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/specs/chain_simulate_analyse.toml");
    let outcome = (|| -> Result<()> {
        let both = mpi_and_serial(scratch, worker, &spec, 3, "chain")?;
        expect_in(&both.mpi.stdout, "stage `analyse`: 3 finished")?;
        let (mpi_chain, serial_chain) = (run_dir(&both.mpi_dir)?, run_dir(&both.serial_dir)?);
        compare_results(&serial_chain.join("simulate"), &mpi_chain.join("simulate"))?;
        // The analyse stage's `input` names a file in each chain's own directory.
        let without_input = |dir: &Path| -> Result<Vec<Vec<String>>> {
            let (header, rows) = read_results(dir)?;
            let keep: Vec<usize> = (0..header.len())
                .filter(|&i| !["input", "duration_s", "started_at", "host", "worker"].contains(&header[i].as_str()))
                .collect();
            Ok(rows.iter().map(|r| keep.iter().map(|&i| r.get(i).cloned().unwrap_or_default()).collect()).collect())
        };
        let (want, got) = (without_input(&serial_chain.join("analyse"))?, without_input(&mpi_chain.join("analyse"))?);
        if want != got {
            bail!("the analyse stage's rows differ: {want:?} vs {got:?}");
        }
        Ok(())
    })();
    tally.record("chain_simulate_analyse.toml: -n 3 gives the serial rows in both stages", outcome);
    // Rank 0 fails between two stages (a crashed row that the next stage requires): it
    // releases the worker ranks, which wait for the next stage, and every rank ends.
    let spec = scratch.join("chain-require.toml");
    let outcome = std::fs::write(
        &spec,
        "kind = \"chain\"\nname = \"require\"\n\n[[stages]]\nname = \"simulate\"\nkind = \"command\"\n\
         command = [\"sh\", \"-c\", \"if [ {x} = 2 ]; then exit 1; fi; echo {x}\"]\n\
         parameter_ranges = { x = [1, 2, 3] }\n\n[[stages]]\nname = \"analyse\"\nfrom = \"simulate\"\n\
         require = \"all\"\nkind = \"command\"\ncommand = [\"echo\", \"{stdout}\"]\n",
    )
    .map_err(anyhow::Error::from)
    .and_then(|()| {
        let results = scratch.join("chain-require-results");
        let args = oversubscribed(
            3,
            vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&results), "--quiet".into()],
        );
        run_with_timeout(scratch, launch(&args)?)
    });
    tally.check("a chain failing between stages under -n 3: every rank ends, the error says why", outcome, |o| {
        expect_failure(o)?;
        expect_in(&o.stderr, "it requires every row of stage `simulate` to have finished")
    });
}

/// The example specs of linked, unioned and sampled parameters, and of adaptive runs, under
/// `mpirun -n 3` give the serial rows (the adaptive one the same runs per point).
pub(super) fn sweep_shapes(scratch: &Path, tally: &mut Tally, worker: &Path) {
    let specs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/specs");
    for shape in ["linked", "union", "samples", "sobol", "pi_adaptive"] {
        let spec = specs.join(format!("{shape}.toml"));
        let outcome = mpi_and_serial(scratch, worker, &spec, 3, shape)
            .and_then(|both| compare_results(&both.serial_dir, &both.mpi_dir));
        tally.record(&format!("{shape}.toml: -n 3 gives the serial rows"), outcome);
    }
}

/// The same sweep through the worker binary with `-n 5` × 1 thread and `-n 2` × 4 threads
/// gives the same rows.
pub(super) fn ranks_against_threads(scratch: &Path, tally: &mut Tally) {
    let name = "taskfarm-worker: -n 5 × 1 thread and -n 2 × 4 threads give the same results.csv";
    let Some(spec) = sweep_spec() else {
        eprintln!("xtask: skipping {name}: no spec in examples/specs/");
        return;
    };
    let outcome = (|| -> Result<Outcome> {
        let run = |ranks: u32, threads: &str, dir: &Path| -> Result<Outcome> {
            let args = oversubscribed(
                ranks,
                vec![
                    "run".into(),
                    path_arg(&spec),
                    "--results".into(),
                    path_arg(dir),
                    "--threads-per-rank".into(),
                    threads.into(),
                    "--quiet".into(),
                ],
            );
            let outcome = run_with_timeout(scratch, launch(&args)?)?;
            expect_success(&outcome)?;
            Ok(outcome)
        };
        let (ranks_dir, threads_dir) = (scratch.join("ranks-results"), scratch.join("threads-results"));
        run(5, "1", &ranks_dir)?;
        let outcome = run(2, "4", &threads_dir)?;
        compare_results(&ranks_dir, &threads_dir)?;
        let text = std::fs::read_to_string(find_results_csv(&threads_dir)?)?;
        if !text.contains("rank-1/thread-") {
            bail!("with 4 threads per rank the worker column should name the threads");
        }
        Ok(outcome)
    })();
    tally.record(name, outcome.map(drop));
}
