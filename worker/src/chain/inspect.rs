//! `validate CHAIN` and `report CHAIN_DIR`, and the first rows of a run's `summary.csv`
//! that `report` shows.

use std::io::Write;
use std::path::{Path, PathBuf};

use taskfarm::Value;

use super::load::read_document;
use super::run::resume_command;
use super::{Chain, Source, CHAIN_TOML};
use crate::{Registry, Spec, WorkerError};

/// How many rows of `summary.csv` `report` shows.
const SUMMARY_ROWS: usize = 5;

/// `validate CHAIN`: checks the chain and says, per stage, how many processes it will have
/// (or where they come from); runs nothing.
pub fn validate(registry: &Registry, path: &Path) -> Result<(), WorkerError> {
    let chain = Chain::load(path, registry)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}: chain `{}` of {} stages", path.display(), chain.name, chain.stages.len());
    for stage in &chain.stages {
        let kind = stage.doc.get("kind").and_then(Value::as_str).unwrap_or("?");
        let what = match &stage.source {
            Source::Sweep => {
                let spec = chain.sweep_spec(stage, registry)?;
                let count = spec.count_within(std::time::Duration::from_secs(2))?;
                match count.exact() {
                    Some(n) => format!("{n} processes ({} run(s) each)", spec.runs()),
                    None => format!("at least {} processes", count.at_least()),
                }
            }
            Source::Rows(from) => format!("one process per finished row of `{from}`"),
            Source::Groups(from, by) => {
                format!("one process per group of `{}` of the finished rows of `{from}`", by.join("`, `"))
            }
            Source::All(from) => format!("one process over every finished row of `{from}`"),
        };
        let _ = writeln!(out, "  stage `{}` (kind `{kind}`): {what}", stage.name);
    }
    let _ = writeln!(out, "ok: the chain is valid (nothing was run)");
    Ok(())
}

/// The chain directory `path` names (it, or its `latest`), if it is one.
pub fn chain_dir(path: &Path) -> Option<PathBuf> {
    if path.join(CHAIN_TOML).is_file() {
        return Some(path.to_owned());
    }
    let latest = path.join(taskfarm::results::files::LATEST);
    latest.join(CHAIN_TOML).is_file().then(|| std::fs::canonicalize(&latest).unwrap_or(latest))
}

/// `report CHAIN_DIR`: per stage, its counts and wall time, and what is left to run.
pub fn report(dir: &Path) -> Result<u8, WorkerError> {
    let doc = read_document(&dir.join(CHAIN_TOML))?;
    let chain = Chain::from_document(&dir.join(CHAIN_TOML), &doc)?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "chain: {} (`{}`, {} stages)", dir.display(), chain.name, chain.stages.len());
    let mut unfinished = false;
    for stage in &chain.stages {
        let stage_dir = dir.join(&stage.name);
        if !stage_dir.join(taskfarm::results::files::JOURNAL).is_file() {
            unfinished = true;
            let _ = writeln!(out, "  stage `{}`: not started", stage.name);
            continue;
        }
        let report = taskfarm::results::report::RunReport::from_dir(&stage_dir)?;
        let _ = writeln!(
            out,
            "  stage `{}`: {} recorded, {} finished, {} crashed, wall time {:.3} s",
            stage.name, report.recorded, report.finished, report.crashed, report.wall_s
        );
    }
    if unfinished {
        let _ = writeln!(out, "unfinished: to finish the chain:\n  {}", resume_command(dir));
    }
    Ok(crate::EXIT_OK)
}

/// For a run with adaptive runs: how many of its `points` parameter points still need runs
/// (none recorded, or `unfinished` in `summary.csv`); `None` for other runs.
pub fn adaptive_points_left(spec: &Spec, dir: &Path) -> Option<u64> {
    spec.adaptive()?;
    let points = spec.count_within(std::time::Duration::from_secs(2)).ok()?.at_least() / u64::from(spec.runs().max(1));
    let Ok(Some((header, rows))) = taskfarm::results::summary::read_summary(dir) else { return Some(points) };
    let stopped = header.iter().position(|h| h == "stopped")?;
    let unfinished = rows.iter().filter(|r| r.get(stopped).map(String::as_str) == Some("unfinished")).count() as u64;
    Some(points.saturating_sub(rows.len() as u64) + unfinished)
}

/// Writes the first rows of the run's `summary.csv` (statistics over runs), if it has one:
/// the parameters, the counts and, per numeric field, its mean and the 95 % half width.
pub fn print_summary(dir: &Path, out: &mut impl Write) {
    let Ok(Some((header, rows))) = taskfarm::results::summary::read_summary(dir) else { return };
    let _ = writeln!(out, "summary over runs (summary.csv, {} points):", rows.len());
    // Columns shown: everything up to the statistics, then `<field>.mean` and `<field>.ci95`.
    let shown: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, name)| {
            let statistic = name.rsplit_once('.').map(|(_, s)| s);
            !statistic.is_some_and(|s| taskfarm::results::summary::STATISTICS.contains(&s))
                || name.ends_with(".mean")
                || name.ends_with(".ci95")
        })
        .map(|(i, _)| i)
        .collect();
    let _ = writeln!(out, "  {}", shown.iter().map(|&i| header[i].as_str()).collect::<Vec<_>>().join("  "));
    for row in rows.iter().take(SUMMARY_ROWS) {
        let cells: Vec<&str> = shown.iter().map(|&i| row.get(i).map(String::as_str).unwrap_or("")).collect();
        let _ = writeln!(out, "  {}", cells.join("  "));
    }
    if rows.len() > SUMMARY_ROWS {
        let _ = writeln!(out, "  ... and {} more points", rows.len() - SUMMARY_ROWS);
    }
}
