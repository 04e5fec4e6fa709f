//! A worker binary of your own: your process kinds beside the built-in ones, with the same
//! command line as `taskfarm-worker` (`run`, `validate`, `kinds`).
//!
//! ```text
//! cargo run -p examples --example custom_worker -- kinds
//! cargo run -p examples --example custom_worker -- run examples/specs/rosenbrock.toml
//! ```
//!
//! Under MPI, launch this same binary on every rank: the kinds a rank can run are the ones
//! its own `main` registers. This example is for showing the registry; the process itself
//! (the Rosenbrock function) is deliberately trivial.

use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use taskfarm::{Process, ProcessContext, ProcessError};
use taskfarm_worker::Registry;

/// Evaluates the Rosenbrock function `(a - x)^2 + b (y - x^2)^2` at one point.
///
/// Its fields are filled from the spec: `x` and `y` are swept as parameters, `a` and `b`
/// may be set once as spec fields (or swept too), and `run` gets the run number.
#[derive(Debug, Serialize, Deserialize)]
struct Rosenbrock {
    x: f64,
    y: f64,
    #[serde(default = "default_a")]
    a: f64,
    #[serde(default = "default_b")]
    b: f64,
    /// The run number, filled in by the registry (the spec may leave it out).
    #[serde(default)]
    run: u32,
}

fn default_a() -> f64 {
    1.0
}

fn default_b() -> f64 {
    100.0
}

/// The output: each field becomes a column of `results.csv`.
#[derive(Debug, Serialize, Deserialize)]
struct Evaluation {
    value: f64,
    /// Distance from the minimum at (a, a²).
    distance: f64,
}

impl Process for Rosenbrock {
    type Output = Evaluation;

    fn run(&self, _ctx: &ProcessContext<'_>) -> Result<Evaluation, ProcessError> {
        if !(self.x.is_finite() && self.y.is_finite()) {
            return Err(ProcessError::msg(format!("({}, {}) is not a finite point", self.x, self.y)));
        }
        let value = (self.a - self.x).powi(2) + self.b * (self.y - self.x * self.x).powi(2);
        let distance = ((self.x - self.a).powi(2) + (self.y - self.a * self.a).powi(2)).sqrt();
        Ok(Evaluation { value, distance })
    }
}

fn main() -> ExitCode {
    let registry = Registry::with_builtins()
        .register::<Rosenbrock>("rosenbrock", "the Rosenbrock function at (x, y), with a = 1 and b = 100 by default");
    taskfarm_worker::main_with(registry)
}
