//! The ETA row of the benchmark: how far the ETA that `status.json` shows is from the time
//! the run then really took, at a quarter, half and three quarters of the way.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::{Row, Target};

/// What `status.json` said at one moment.
struct Sample {
    /// Seconds since the Unix epoch when it was written.
    at: f64,
    done: f64,
    eta_s: f64,
}

/// Runs 320 sleeps whose duration grows with a parameter (0.05 to 0.2 s, about 8 s on 4
/// threads) through the worker on the local backend, reads `status.json` as it runs, and
/// compares its ETA at 25 %, 50 % and 75 % with the time that was in fact left.
pub(super) fn eta_rows(worker: &Path, scratch: &Path) -> Result<Vec<Row>> {
    let spec = scratch.join("eta.toml");
    let reps: Vec<String> = (0..80).map(|i| i.to_string()).collect();
    std::fs::write(
        &spec,
        format!(
            "name = \"eta\"\nkind = \"command\"\ncommand = [\"sleep\", \"{{size}}\"]\n\n\
             [parameter_ranges]\nrep = [{}]\nsize = [0.2, 0.05, 0.15, 0.1]\n",
            reps.join(", ")
        ),
    )?;
    let results = scratch.join("eta-results");
    eprintln!("xtask: bench: taskfarm-worker run (320 sleeps, local backend, 4 threads), reading its ETA");
    let mut child = Command::new(worker)
        .arg("run")
        .arg(&spec)
        .args(["--backend", "local", "--pool-size", "4", "--quiet", "--results"])
        .arg(&results)
        .stdout(Stdio::null())
        .spawn()
        .context("could not start taskfarm-worker")?;
    let status_file = results.join("eta").join("latest").join("status.json");
    let mut samples: Vec<Sample> = Vec::new();
    let ended = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if let Some(sample) = std::fs::read_to_string(&status_file).ok().and_then(|text| read_sample(&text)) {
            if samples.last().is_none_or(|last| last.at != sample.at) {
                samples.push(sample);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let end = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    if !ended.success() {
        bail!("taskfarm-worker run of the ETA workload failed ({ended})");
    }
    let _ = std::fs::remove_dir_all(&results);
    let mut rows = Vec::new();
    for quarter in [0.25, 0.5, 0.75] {
        let Some(sample) = samples.iter().find(|s| s.done >= quarter) else {
            bail!("status.json was never read at {:.0} % of the run", quarter * 100.0);
        };
        let left = (end - sample.at).max(1e-3);
        rows.push(Row::new(
            format!("ETA at {:.0} % of 320 sleeps growing with a parameter (local, 4 threads): |ETA − time left| / time left", quarter * 100.0),
            format!("ETA {:.2}s", sample.eta_s),
            format!("{left:.2}s left in fact"),
            (sample.eta_s - left).abs() / left,
            Target::None,
        ));
    }
    Ok(rows)
}

/// The moment, progress and ETA of a `status.json`, when it has them.
fn read_sample(text: &str) -> Option<Sample> {
    let status: serde_json::Value = serde_json::from_str(text).ok()?;
    let total = status.get("total")?.as_f64()?;
    let ended = status.get("finished")?.as_f64()? + status.get("crashed")?.as_f64()?;
    Some(Sample {
        at: status.get("updated_at")?.as_f64()?,
        done: ended / total.max(1.0),
        eta_s: status.get("eta_s")?.as_f64()?,
    })
}
