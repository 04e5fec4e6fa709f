//! The built-in kind `monte_carlo_pi`: estimates π by throwing `samples` random points at
//! the unit square and counting those inside the quarter circle.
//!
//! It is a useful in-process kind to try a backend with (its cost grows with `samples`),
//! and the model of a user's own kind: a plain [`Process`] type registered with
//! [`crate::Registry::register`]. It is not a good way to compute π.
//!
//! Fields (each a spec field or a parameter): `samples` (at least 1), `seed` (default 0).
//! The generator (splitmix64) is seeded from `seed` and the run number, so every run of a
//! spec with `runs > 1` differs and every process is reproducible.
//! Output: `estimate` and `error` (`|estimate - π|`).

use serde::{Deserialize, Serialize};
use taskfarm::{Process, ProcessContext, ProcessError};

/// One Monte Carlo estimate of π.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MonteCarloPi {
    /// How many random points to throw (at least 1).
    #[serde(deserialize_with = "at_least_one")]
    pub samples: u64,
    /// The seed (mixed with the run number).
    #[serde(default)]
    pub seed: u64,
    /// The run number (filled in by the registry when the spec does not set it).
    #[serde(default)]
    pub run: u32,
}

/// A count of at least 1, so a spec with `samples = 0` is refused at validation.
fn at_least_one<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let n = u64::deserialize(deserializer)?;
    if n == 0 {
        return Err(serde::de::Error::custom(format!("must be a whole number from 1 to {}, not 0", i64::MAX)));
    }
    Ok(n)
}

/// What [`MonteCarloPi`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PiEstimate {
    /// The estimate of π.
    pub estimate: f64,
    /// `|estimate - π|`.
    pub error: f64,
}

impl Process for MonteCarloPi {
    type Output = PiEstimate;

    fn run(&self, _ctx: &ProcessContext<'_>) -> Result<PiEstimate, ProcessError> {
        if self.samples == 0 {
            return Err(ProcessError::msg("`samples` must be at least 1"));
        }
        // The start is a hash of seed and run: the generator steps its state by a constant, so
        // starts a few steps apart (seed ^ run × step) would give overlapping streams, and runs
        // that are nearly copies of each other.
        let start =
            SplitMix64(self.seed).next() ^ SplitMix64(u64::from(self.run).wrapping_add(0x5EED)).next().rotate_left(17);
        let mut rng = SplitMix64(start);
        let mut inside = 0u64;
        for _ in 0..self.samples {
            let (x, y) = (rng.unit(), rng.unit());
            if x * x + y * y <= 1.0 {
                inside += 1;
            }
        }
        let estimate = 4.0 * inside as f64 / self.samples as f64;
        tracing::debug!(target: "taskfarm_worker::pi", "{inside} of {} samples inside the quarter circle: pi ~ {estimate}", self.samples);
        Ok(PiEstimate { estimate, error: (estimate - std::f64::consts::PI).abs() })
    }
}

/// splitmix64: tiny, fast, and good enough for this.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform float in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskfarm::backend::Location;
    use taskfarm::Params;

    fn estimate(samples: u64, seed: u64, run: u32) -> Result<PiEstimate, ProcessError> {
        let params = Params::new();
        let here = Location::here("test");
        let ctx = ProcessContext::new(0, run, &params, std::path::Path::new("/"), &here);
        MonteCarloPi { samples, seed, run }.run(&ctx)
    }

    #[test]
    fn estimates_pi_reproducibly() {
        let a = estimate(200_000, 1, 0).unwrap();
        assert!(a.error < 0.02, "{a:?}");
        assert_eq!(estimate(200_000, 1, 0).unwrap(), a);
        assert_ne!(estimate(200_000, 1, 1).unwrap(), a);
        assert!(estimate(0, 0, 0).unwrap_err().reason.contains("at least 1"));
    }
}
