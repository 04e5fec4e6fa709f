//! A library user's own process type on the MPI backend: one `main` for every rank, run
//! under `mpirun`. Rank 0 (the master) gets the report and prints it; every other rank
//! serves as a worker, learns so from its summary and returns quietly.
//!
//! ```text
//! cargo build -p examples --example spmd --features mpi
//! mpirun -n 4 target/debug/examples/spmd [RESULTS_BASE]
//! ```

#[cfg(feature = "mpi")]
mod spmd {
    use serde::{Deserialize, Serialize};
    use taskfarm::{
        Backend, MpiBackend, MpiOptions, Operation, ParameterSpace, ParamsExt, Process, ProcessContext, ProcessError,
        Role, Value,
    };

    /// The user's process: a damped oscillator sampled at one time, for one damping.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Oscillator {
        damping: f64,
        t: f64,
    }

    /// What it computes; the fields become columns of results.csv.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Sample {
        displacement: f64,
        rank_label: String,
    }

    impl Process for Oscillator {
        type Output = Sample;
        fn run(&self, ctx: &ProcessContext) -> Result<Sample, ProcessError> {
            if self.damping < 0.0 {
                return Err(ProcessError::msg("a negative damping makes no physical sense"));
            }
            let displacement = (-self.damping * self.t).exp() * (6.0 * self.t).cos();
            // Worker ranks' records travel to the master and land in operation.log.
            tracing::info!("damping {} at t = {}: displacement {displacement:.4}", self.damping, self.t);
            Ok(Sample { displacement, rank_label: ctx.location().worker.clone() })
        }
    }

    pub fn main() -> Result<(), Box<dyn std::error::Error>> {
        // Warnings on the console, every record of every rank in operation.log.
        taskfarm::oplog::install(Some(tracing::Level::WARN), tracing::Level::INFO);
        let base = std::env::args().nth(1).unwrap_or_else(|| "results".into());
        let space = ParameterSpace::ranges([
            ("damping", vec![Value::from(0.1), Value::from(0.5), Value::from(1.0)]),
            ("t", (0..20).map(|i| Value::from(f64::from(i) * 0.25)).collect()),
        ])?;
        let operation = Operation::try_sweep("oscillator", space, 1, |p, _run| {
            Ok(Oscillator { damping: p.f64("damping")?, t: p.f64("t")? })
        })?
        .with_results_base(base);

        // Every rank makes the same calls; what they do depends on the rank.
        let mut backend = MpiBackend::new(MpiOptions::default())?;
        let summary = backend.run(operation)?;
        match summary.role {
            Role::Master => {
                println!(
                    "{} processes finished, {} crashed, on {} ranks: {}",
                    summary.finished,
                    summary.crashed,
                    backend.size(),
                    summary.results_csv().display()
                );
            }
            // A worker rank served and returns quietly; MPI finalizes when main returns.
            Role::Worker { .. } => {}
        }
        Ok(())
    }
}

#[cfg(feature = "mpi")]
fn main() -> Result<(), Box<dyn std::error::Error>> {
    spmd::main()
}

#[cfg(not(feature = "mpi"))]
fn main() {
    eprintln!("this example needs the MPI backend: cargo build -p examples --example spmd --features mpi");
    std::process::exit(2);
}
