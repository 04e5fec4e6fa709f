//! Reading a run's result directory from the xtask (which links none of taskfarm's crates):
//! the one run directory, its journal's size, `results.csv` as rows, and two runs compared
//! row by row but for the columns of when and where.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The one `results.csv` under `base` (`base/<name>/<timestamp>/results.csv`).
pub(crate) fn find_results_csv(base: &Path) -> Result<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).with_context(|| format!("could not read {}", dir.display()))? {
            let path = entry?.path();
            if path.is_symlink() {
                // `latest` points at a run already walked.
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "results.csv") {
                found.push(path);
            }
        }
    }
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one results.csv under {}, found {}", base.display(), found.len()),
    }
}

/// A time as results files write it (RFC 3339 in UTC: `2026-12-02T13:04:05.123456Z`) in
/// seconds since the Unix epoch; `None` for anything else. The xtask links none of
/// taskfarm's crates, so this is a reader of its own, for that one form.
pub(crate) fn parse_utc(text: &str) -> Option<f64> {
    let (date, time) = text.strip_suffix('Z')?.split_once('T')?;
    let mut date = date.splitn(3, '-').map(|n| n.parse::<i64>().ok());
    let (year, month, day) = (date.next()??, date.next()??, date.next()??);
    let (clock, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut clock = clock.splitn(3, ':').map(|n| n.parse::<i64>().ok());
    let (hour, minute, second) = (clock.next()??, clock.next()??, clock.next()??);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let fraction: f64 = if fraction.is_empty() { 0.0 } else { format!("0.{fraction}").parse().ok()? };
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let (era, yoe) = (y.div_euclid(400), y.rem_euclid(400));
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some((days * 86_400 + hour * 3600 + minute * 60 + second) as f64 + fraction)
}

/// Columns that depend on when and where a process ran.
const RUN_DEPENDENT: [&str; 4] = ["duration_s", "started_at", "host", "worker"];

/// The one run directory under `base` (`base/<name>/<timestamp>/`).
pub(crate) fn run_dir(base: &Path) -> Result<PathBuf> {
    let mut dirs = Vec::new();
    for name in std::fs::read_dir(base).with_context(|| format!("no results under {}", base.display()))? {
        for run in std::fs::read_dir(name?.path())? {
            let run = run?.path();
            // `latest` points at one of the others.
            if !run.is_symlink() {
                dirs.push(run);
            }
        }
    }
    match dirs.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!("expected one run directory under {}, found {}", base.display(), dirs.len()),
    }
}

/// The size of the journal under `base`, 0 while there is none.
pub(crate) fn journal_len(base: &Path) -> u64 {
    run_dir(base).ok().and_then(|dir| std::fs::metadata(dir.join("journal")).ok()).map_or(0, |m| m.len())
}

/// The header and the rows of the one `results.csv` under `base`.
pub(crate) fn read_results(base: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let path = find_results_csv(base)?;
    let text = std::fs::read_to_string(&path).with_context(|| format!("could not read {}", path.display()))?;
    let mut rows = csv_rows(&text).into_iter();
    let header = rows.next().context("results.csv has no header")?;
    Ok((header, rows.collect()))
}

/// Checks that the `results.csv` under `serial` and under `mpi` have the same rows (but for
/// the columns of when and where) and that the MPI run used 2 ranks or more.
pub(crate) fn compare_results(serial: &Path, mpi: &Path) -> Result<()> {
    let got = compare_rows(serial, mpi)?;
    let (got_header, got) = got;
    let worker = got_header.iter().position(|h| h == "worker").context("results.csv has no worker column")?;
    let ranks: BTreeSet<&str> = got.iter().filter_map(|r| r.get(worker).map(String::as_str)).collect();
    if ranks.len() < 2 {
        bail!("the processes ran on {ranks:?}: expected at least 2 ranks");
    }
    Ok(())
}

/// Checks that the `results.csv` under `serial` and under `mpi` have the same rows (but for
/// the columns of when and where); returns the second's header and rows.
pub(crate) fn compare_rows(serial: &Path, mpi: &Path) -> Result<(Vec<String>, Vec<Vec<String>>)> {
    let ((want_header, want), (got_header, got)) = (read_results(serial)?, read_results(mpi)?);
    if want_header != got_header {
        bail!("results.csv headers differ: {want_header:?} vs {got_header:?}");
    }
    let keep: Vec<usize> = (0..want_header.len()).filter(|&i| !RUN_DEPENDENT.contains(&&*want_header[i])).collect();
    let strip = |rows: &[Vec<String>]| -> Vec<Vec<String>> {
        rows.iter().map(|r| keep.iter().map(|&i| r.get(i).cloned().unwrap_or_default()).collect()).collect()
    };
    if strip(&want) != strip(&got) {
        bail!("results.csv rows differ between serial and mpi ({} vs {} rows)", want.len(), got.len());
    }
    Ok((got_header, got))
}

/// A small CSV reader (RFC 4180 quoting), enough to compare two results.csv files.
pub(crate) fn csv_rows(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    let (mut row, mut field, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => row.push(std::mem::take(&mut field)),
            ('\r', false) => {}
            ('\n', false) => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (c, _) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::parse_utc;

    #[test]
    fn utc_times_read_as_seconds_since_the_epoch() {
        assert_eq!(parse_utc("1970-01-01T00:00:00.000000Z"), Some(0.0));
        assert_eq!(parse_utc("2000-02-29T00:00:00Z"), Some(951_782_400.0));
        assert_eq!(parse_utc("2100-03-01T00:00:00.000000Z"), Some(4_107_542_400.0));
        let t = parse_utc("2026-12-02T13:04:05.123456Z").unwrap();
        assert!((t - 1_796_216_645.123_456).abs() < 1e-6, "{t}");
        assert_eq!(parse_utc("1796216645.1"), None);
    }
}
