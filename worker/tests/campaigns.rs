//! Campaigns: statistics over runs (`summary.csv`), chains of operations, and runs added
//! until a result converges, through the real `taskfarm-worker` binary.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{result_dir, text, worker_no_panic};

/// A sweep of two points × 6 runs; run 3 of x = 2 crashes. `v` is a fixed function of x and
/// the run, `label` is text (no statistics), `flag` a boolean (none either).
const REPEATED: &str = r#"name = "repeated"
kind = "command"
runs = 6
command = ["sh", "-c", '''if [ {x} = 2 ] && [ {run} = 3 ]; then exit 1; fi; echo "{{\"v\": $(( {x} * {run} * {run} + 7 )).25, \"w\": {{\"deep\": {run}}}, \"label\": \"a\", \"flag\": true}}"''']

[parameter_ranges]
x = [1, 2]
"#;

/// Rows of a CSV file as maps from column to cell.
fn csv_maps(path: &Path) -> Vec<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split(',').collect();
    lines.map(|l| header.iter().map(|h| h.to_string()).zip(l.split(',').map(str::to_owned)).collect()).collect()
}

fn cell(row: &BTreeMap<String, String>, column: &str) -> f64 {
    row.get(column).and_then(|c| c.parse().ok()).unwrap_or_else(|| panic!("no number in `{column}`: {row:?}"))
}

#[test]
fn summary_csv_holds_the_statistics_of_each_point_over_its_runs() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let spec = base.path().join("repeated.toml");
    std::fs::write(&spec, REPEATED).expect("the spec is written");
    for backend in ["serial", "local"] {
        let results = base.path().join(backend);
        let out = worker_no_panic(
            &["run", &spec.to_string_lossy(), "--backend", backend, "--results", &results.to_string_lossy(), "-q"],
            Path::new("."),
        );
        assert_eq!(out.status.code(), Some(1), "one run crashed: {}", text(&out.stderr));
        let dir = result_dir(&results, "repeated");
        let summary = csv_maps(&dir.join("summary.csv"));
        assert_eq!(summary.len(), 2, "{summary:?}");
        // The statistics recomputed from results.csv, the textbook way.
        let rows = csv_maps(&dir.join("results.csv"));
        for point in &summary {
            let x = &point["x"];
            let values: Vec<f64> =
                rows.iter().filter(|r| &r["x"] == x && r["status"] == "finished").map(|r| cell(r, "v")).collect();
            let n = values.len() as f64;
            let mean = values.iter().sum::<f64>() / n;
            let std = (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
            let sem = std / n.sqrt();
            // scipy.stats.t.ppf(0.975, 5) and (…, 4)
            let t = if values.len() == 6 { 2.570581836 } else { 2.776445105 };
            let close = |column: &str, expected: f64| {
                let got = cell(point, column);
                assert!((got - expected).abs() <= 1e-9 * expected.abs().max(1.0), "{column}: {got} vs {expected}");
            };
            close("v.count", n);
            close("v.mean", mean);
            close("v.std", std);
            close("v.sem", sem);
            close("v.ci95", t * sem);
            close("v.ci95_low", mean - t * sem);
            close("v.ci95_high", mean + t * sem);
            close("w.deep.mean", if x == "1" { 2.5 } else { 12.0 / 5.0 });
            close("runs", 6.0);
            close("crashed", if x == "1" { 0.0 } else { 1.0 });
            close("finished", if x == "1" { 6.0 } else { 5.0 });
            assert!(!point.contains_key("label.mean") && !point.contains_key("flag.mean"), "{point:?}");
        }
        // report shows the first rows of the summary.
        let out = worker_no_panic(&["report", &dir.to_string_lossy()], Path::new("."));
        let stdout = text(&out.stdout);
        assert!(stdout.contains("summary over runs (summary.csv, 2 points)"), "{stdout}");
        assert!(stdout.contains("v.mean"), "{stdout}");
    }
}

#[test]
fn a_single_run_sweep_has_no_summary() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let spec = base.path().join("once.toml");
    std::fs::write(&spec, REPEATED.replace("runs = 6", "runs = 1").replace("repeated", "once")).expect("written");
    let results = base.path().join("r");
    let out = worker_no_panic(
        &["run", &spec.to_string_lossy(), "--backend", "serial", "--results", &results.to_string_lossy(), "-q"],
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!result_dir(&results, "once").join("summary.csv").exists());
}
