//! Quickstart: a parameter sweep of a Rust function on the local backend (every core).
//!
//! Run it with `cargo run --release --example quickstart`. It simulates a damped, driven
//! oscillator for every combination of damping and driving frequency, three noisy runs
//! each, prints the mean amplitude per combination and the path of `results.csv`.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use taskfarm::{
    create_backend, BackendOptions, Operation, ParameterSpace, ParamsExt, Process, ProcessContext, ProcessError,
    ProgressMode,
};

/// One simulation: the parameters of the sweep and the run number as noise seed.
#[derive(Debug, Serialize, Deserialize)]
struct Oscillator {
    damping: f64,
    frequency: f64,
    seed: u32,
}

/// What one simulation measured; each field becomes a column of `results.csv`.
#[derive(Debug, Serialize, Deserialize)]
struct Response {
    amplitude: f64,
    energy: f64,
}

impl Process for Oscillator {
    type Output = Response;

    fn run(&self, _ctx: &ProcessContext<'_>) -> Result<Response, ProcessError> {
        if self.damping <= 0.0 {
            return Err(ProcessError::msg("damping must be positive"));
        }
        // Semi-implicit Euler integration of x'' + 2ζx' + x = cos(ωt) + noise.
        let (dt, steps) = (1e-3, 200_000);
        let (mut x, mut v, mut amplitude, mut energy) = (0.0f64, 0.0f64, 0.0f64, 0.0f64);
        let mut noise_state = u64::from(self.seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for step in 0..steps {
            noise_state ^= noise_state << 13;
            noise_state ^= noise_state >> 7;
            noise_state ^= noise_state << 17;
            let noise = (noise_state % 2001) as f64 / 1000.0 - 1.0;
            let t = step as f64 * dt;
            let force = (self.frequency * t).cos() + 0.05 * noise;
            v += dt * (force - 2.0 * self.damping * v - x);
            x += dt * v;
            if step > steps / 2 {
                amplitude = amplitude.max(x.abs());
                energy += dt * (v * v + x * x) / 2.0;
            }
        }
        // Records of processes land in operation.log, naming the process and its thread.
        tracing::debug!(
            "damping {}, frequency {}, seed {}: amplitude {amplitude:.3}",
            self.damping,
            self.frequency,
            self.seed
        );
        Ok(Response { amplitude, energy })
    }
}

fn main() -> Result<()> {
    // Warnings on the console; every record, the processes' too, in operation.log.
    taskfarm::oplog::install(Some(tracing::Level::WARN), tracing::Level::DEBUG);
    let space =
        ParameterSpace::ranges([("damping", vec![0.05, 0.1, 0.2, 0.4]), ("frequency", vec![0.5, 0.9, 1.0, 1.1, 2.0])])?;
    // `p.f64(name)?`: a misspelt name or a value that is not a number is an error naming it.
    let operation = Operation::try_sweep("quickstart", space, 3, |params, run| {
        Ok(Oscillator { damping: params.f64("damping")?, frequency: params.f64("frequency")?, seed: run })
    })?
    .with_progress(ProgressMode::Auto);

    let mut backend = create_backend("local", &BackendOptions::default())?;
    let summary = backend.run(operation)?;

    // Mean amplitude per (damping, frequency), from the consolidated results.
    let rows = taskfarm::results::read_results_jsonl(&summary.dir)?;
    let mut table: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for row in &rows {
        let key = (row["damping"].to_string(), row["frequency"].to_string());
        let amplitude = row.get("amplitude").and_then(|a| a.as_f64()).context("a finished row has an amplitude")?;
        table.entry(key).or_default().push(amplitude);
    }
    println!("{:>8} {:>10} {:>15}", "damping", "frequency", "mean amplitude");
    for ((damping, frequency), amplitudes) in &table {
        let mean = amplitudes.iter().sum::<f64>() / amplitudes.len() as f64;
        println!("{damping:>8} {frequency:>10} {mean:>15.3}");
    }
    println!(
        "\n{} processes finished, {} crashed in {:.2} s on the {} backend",
        summary.finished,
        summary.crashed,
        summary.wall.as_secs_f64(),
        summary.backend
    );
    println!("results: {}", summary.results_csv().display());
    println!("log:     {}", summary.dir.join(taskfarm::results::files::OPERATION_LOG).display());
    println!("picture: {}", summary.dir.join(taskfarm::results::files::TIMELINE_SVG).display());
    Ok(())
}
