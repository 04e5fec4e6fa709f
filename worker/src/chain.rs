//! Campaigns on the command line: the first rows of `summary.csv` in `report`.

use std::io::Write;
use std::path::Path;

/// How many rows of `summary.csv` `report` shows.
const SUMMARY_ROWS: usize = 5;

/// Writes the first rows of the run's `summary.csv` (statistics over runs), if it has one:
/// the parameters, the counts and, per numeric field, its mean ± the 95 % half width.
pub fn print_summary(dir: &Path, out: &mut impl Write) {
    let Ok(Some((header, rows))) = backend_core::summary::read_summary(dir) else { return };
    let _ = writeln!(out, "summary over runs (summary.csv, {} points):", rows.len());
    // Columns shown: everything up to the statistics, then `<field>.mean` and `<field>.ci95`.
    let shown: Vec<usize> = header
        .iter()
        .enumerate()
        .filter(|(_, name)| {
            let statistic = name.rsplit_once('.').map(|(_, s)| s);
            !statistic.is_some_and(|s| backend_core::summary::STATISTICS.contains(&s))
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
