//! Watching and stopping a run from outside it: `taskfarm-worker status DIR` (counts, rate,
//! ETA, slots busy and idle, the longest-running processes, crashes so far; `--watch`
//! redraws) and `taskfarm-worker cancel DIR` (a graceful stop, as Ctrl-C; `--now` as a
//! second one). Both take a run directory, `RESULTS/NAME` (its latest run) or a spec file
//! (the latest run of its operation), and work through the result directory only — its
//! `status.json`, its lock and a `cancel` file — so they work from another terminal or
//! another host that sees the directory (where the lock cannot tell whether a writer on
//! another host lives, a status file that stopped being rewritten says it is gone).
//!
//! Not for what happened in a finished run in detail: that is `report`'s.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use taskfarm::results::files;
use taskfarm::run_control::status::{live_holder, RunState, RunStatus};

use crate::error::WorkerError;
use crate::Registry;

/// How often `status --watch` redraws.
const WATCH_EVERY: Duration = Duration::from_secs(1);
/// How many crash reasons `status` shows.
const SHOWN_REASONS: usize = 5;

/// The run directory that `path` names: a result directory itself, or `RESULTS/NAME`, whose
/// `latest` link points at the newest run of that operation.
pub fn run_dir(path: &Path) -> Result<PathBuf, WorkerError> {
    if path.join(files::OPERATION).is_file() {
        return Ok(path.to_owned());
    }
    let latest = path.join(files::LATEST);
    if latest.join(files::OPERATION).is_file() {
        return Ok(std::fs::canonicalize(&latest).unwrap_or(latest));
    }
    Err(taskfarm::CoreError::NotARun { path: path.to_owned(), missing: "operation.toml (nor a `latest` run)" }.into())
}

/// The run directory that `path` names for `status` and `cancel`: as [`run_dir`], or, for
/// a spec file, the latest run of its operation under `results` (`RESULTS/NAME/latest`,
/// where `run SPEC --results RESULTS` puts its runs).
pub fn observed_dir(path: &Path, results: &Path, registry: &Registry) -> Result<PathBuf, WorkerError> {
    if !path.is_file() {
        return run_dir(path);
    }
    let spec = crate::Spec::load(path, registry)?;
    let runs = results.join(spec.name());
    run_dir(&runs).map_err(|_| WorkerError::NoRunOfSpec {
        spec: path.to_owned(),
        name: spec.name().to_owned(),
        results: results.to_owned(),
    })
}

/// `status DIR [--watch]`.
pub fn status(path: &Path, watch: bool, resume: impl Fn(&Path) -> String) -> Result<u8, WorkerError> {
    let dir = run_dir(path)?;
    let terminal = std::io::stdout().is_terminal();
    let mut drawn = false;
    loop {
        let (text, live) = describe(&dir, &resume)?;
        let mut out = std::io::stdout().lock();
        if watch && terminal {
            // Clear the screen and go home, then draw.
            let _ = write!(out, "\x1b[2J\x1b[H");
        } else if drawn {
            // Into a pipe or a file: one drawing after another, a blank line between.
            let _ = writeln!(out);
        }
        let _ = write!(out, "{text}");
        let _ = out.flush();
        drawn = true;
        if !watch || !live || taskfarm::run_control::stop_requested() {
            return Ok(crate::EXIT_OK);
        }
        std::thread::sleep(WATCH_EVERY);
    }
}

/// What `status` says of the run in `dir`, and whether it is live.
fn describe(dir: &Path, resume: &impl Fn(&Path) -> String) -> Result<(String, bool), WorkerError> {
    let status = RunStatus::read(dir)?;
    let holder = live_holder(dir, status.as_ref())?;
    let mut text = format!("run: {}\n", dir.display());
    let Some(status) = status else {
        let state = match &holder {
            Some(holder) => format!("starting ({holder})"),
            None => "no status: the run never started executing, or an older taskfarm made it".into(),
        };
        text.push_str(&format!("state: {state}\nsee also: taskfarm-worker report {}\n", dir.display()));
        return Ok((text, holder.is_some()));
    };
    let recorded = status.finished + status.crashed;
    let of = status.total.map(|t| format!(" of {t}")).unwrap_or_default();
    let share = status.total.filter(|&t| t > 0).map(|t| format!(" ({:.0}%)", 100.0 * recorded as f64 / t as f64));
    let live = holder.is_some() && status.state == RunState::Running;
    let state = match (status.state, &holder) {
        (RunState::Running, Some(holder)) => format!("running on the {} backend ({holder})", status.backend),
        (RunState::Running, None) => format!(
            "stopped without finishing: its program (pid {} on {}) is gone; to finish the run:\n  {}",
            status.pid,
            status.host,
            resume(dir)
        ),
        (RunState::Finished, _) => "finished: every process has a record".into(),
        (RunState::Interrupted, _) => format!("interrupted; to finish the run:\n  {}", resume(dir)),
    };
    text.push_str(&format!("operation: {}\nstate: {state}\n", status.name));
    text.push_str(&format!(
        "processes: {} finished, {} crashed{of}{}",
        status.finished,
        status.crashed,
        share.unwrap_or_default()
    ));
    if live {
        text.push_str(&format!(", {} running\n", status.running));
        let eta = status.eta_s.map(|s| format!(", ETA {}", seconds(s))).unwrap_or_default();
        text.push_str(&format!("rate: {:.2}/s{eta}\n", status.rate));
        if let Some(slots) = status.slots {
            let idle = slots.saturating_sub(status.busy);
            text.push_str(&format!("slots: {} of {slots} busy, {idle} idle\n", status.busy));
        }
        if !status.longest_running.is_empty() {
            text.push_str("longest running:\n");
            for p in &status.longest_running {
                text.push_str(&format!("  #{:<8} {:>10}  {}\n", p.id, seconds(p.running_s), p.worker));
            }
        }
    } else {
        text.push('\n');
    }
    if status.crashed > 0 {
        let report = taskfarm::results::report::RunReport::from_dir(dir)?;
        text.push_str("crashes by reason:\n");
        for group in report.crash_groups.iter().take(SHOWN_REASONS) {
            text.push_str(&group.to_string());
        }
    }
    Ok((text, live))
}

/// `12.3 s`, `4 min 05 s`, `2 h 03 min`.
fn seconds(s: f64) -> String {
    let whole = s.max(0.0) as u64;
    match whole {
        0..=59 => format!("{s:.1} s"),
        60..=3599 => format!("{} min {:02} s", whole / 60, whole % 60),
        _ => format!("{} h {:02} min", whole / 3600, whole % 3600 / 60),
    }
}

/// `cancel DIR [--now]`.
pub fn cancel(path: &Path, now: bool, resume: impl Fn(&Path) -> String) -> Result<u8, WorkerError> {
    let dir = run_dir(path)?;
    let status = RunStatus::read(&dir)?;
    let Some(holder) = live_holder(&dir, status.as_ref())? else {
        return Err(WorkerError::NotRunning { dir: dir.clone(), resume: resume(&dir) });
    };
    taskfarm::run_control::status::request_cancel(&dir, &holder, now)?;
    let how = if now {
        "it stops now; running processes are cut short and run again on --resume"
    } else {
        "no new process starts; it ends when the running ones have finished"
    };
    println!("asked the run in {} ({holder}) to stop: {how}", dir.display());
    Ok(crate::EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_at_a_glance() {
        assert_eq!(seconds(12.34), "12.3 s");
        assert_eq!(seconds(245.0), "4 min 05 s");
        assert_eq!(seconds(7380.0), "2 h 03 min");
    }
}
