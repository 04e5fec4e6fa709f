//! Campaigns: statistics over runs (`summary.csv`), chains of operations, and runs added
//! until a result converges, through the real `taskfarm-worker` binary.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{first_run_dir, journaled_ids, result_dir, spawn_worker_silent, text, worker_no_panic};

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

/// A three-stage chain: `simulate` (2 points × 2 runs; run 1 of x = 2 crashes), `double`
/// (one process per finished row), `count` (one process over every finished row).
const THREE_STAGES: &str = r#"kind = "chain"
name = "three"

[[stages]]
name = "simulate"
kind = "command"
runs = 2
outputs = ["energy"]
command = ["sh", "-c", '''if [ {x} = 2 ] && [ {run} = 1 ]; then exit 1; fi; echo "{{\"energy\": $(( {x} * 10 + {run} ))}}"''']
parameter_ranges = { x = [1, 2] }

[[stages]]
name = "double"
from = "simulate"
kind = "command"
command = ["sh", "-c", '''echo "{{\"twice\": $(( {energy} * 2 )), \"of\": {from_id}}}"''']

[[stages]]
name = "count"
from = "simulate"
all = true
kind = "command"
command = ["sh", "-c", '''echo "{{\"n\": {rows}, \"lines\": $(grep -c energy {input})}}"''']
"#;

fn run_chain(chain: &Path, backend: &str, results: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["run", chain.to_str().unwrap_or_default(), "--backend", backend, "-q"];
    args.extend(["--results", results.to_str().unwrap_or_default()]);
    args.extend(extra);
    worker_no_panic(&args, Path::new("."))
}

/// The rows of `results.jsonl` without what differs from run to run (times, places, paths).
fn stable_rows(dir: &Path) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(dir.join("results.jsonl")).expect("results.jsonl");
    text.lines()
        .map(|l| {
            let mut row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).expect("a JSON row");
            for column in ["duration_s", "started_at", "host", "worker", "input"] {
                row.remove(column);
            }
            row
        })
        .collect()
}

#[test]
fn a_chain_feeds_rows_groups_and_everything_to_later_stages_alike_on_every_backend() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let chain = base.path().join("three.toml");
    std::fs::write(&chain, THREE_STAGES).expect("the chain is written");
    let mut dirs = Vec::new();
    for backend in ["serial", "local"] {
        let results = base.path().join(backend);
        let out = run_chain(&chain, backend, &results, &[]);
        let stdout = text(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "a process of simulate crashed: {stdout}{}", text(&out.stderr));
        assert!(stdout.contains("stage `double`: 1 crashed rows of stage `simulate` skipped (ids 3)"), "{stdout}");
        assert!(stdout.contains("stage `double`: 3 finished, 0 crashed of 3"), "{stdout}");
        let dir = result_dir(&results, "three");
        assert!(dir.join("chain.toml").is_file());
        let double = stable_rows(&dir.join("double"));
        let twice: Vec<i64> = double.iter().map(|r| r["twice"].as_i64().unwrap_or(-1)).collect();
        assert_eq!(twice, vec![20, 22, 40]);
        assert_eq!(double[2]["from_id"], 2);
        assert_eq!(double[2]["x"], 2);
        let count = stable_rows(&dir.join("count"));
        assert_eq!(
            (count.len(), &count[0]["n"], &count[0]["lines"]),
            (1, &serde_json::json!(3), &serde_json::json!(3))
        );
        let out = worker_no_panic(&["report", dir.to_str().unwrap_or_default()], Path::new("."));
        let report = text(&out.stdout);
        assert!(report.contains("stage `simulate`: 4 recorded, 3 finished, 1 crashed"), "{report}");
        assert!(report.contains("stage `count`: 1 recorded, 1 finished, 0 crashed"), "{report}");
        dirs.push(dir);
    }
    for stage in ["simulate", "double", "count"] {
        assert_eq!(stable_rows(&dirs[0].join(stage)), stable_rows(&dirs[1].join(stage)), "stage {stage}");
    }
}

#[test]
fn require_all_fails_the_chain_on_a_crashed_row() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let chain = base.path().join("three.toml");
    std::fs::write(
        &chain,
        THREE_STAGES.replace("from = \"simulate\"\nkind", "from = \"simulate\"\nrequire = \"all\"\nkind"),
    )
    .expect("the chain is written");
    let out = run_chain(&chain, "serial", &base.path().join("r"), &[]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(
            "stage `double`: it requires every row of stage `simulate` to have finished, but 1 crashed (ids 3)"
        ),
        "{stderr}"
    );
}

/// Simulate: 4 quick processes; slow: one process of 0.4 s per row.
const SLOW_SECOND_STAGE: &str = r#"kind = "chain"
name = "slow"

[[stages]]
name = "simulate"
kind = "command"
command = ["sh", "-c", '''echo "{{\"energy\": {x}}}"''']
parameter_ranges = { x = [1, 2, 3, 4, 5, 6, 7, 8] }

[[stages]]
name = "slow"
from = "simulate"
kind = "command"
command = ["sh", "-c", '''sleep 0.4; echo "{{\"e\": {energy}}}"''']

[[stages]]
name = "last"
from = "slow"
all = true
kind = "command"
command = ["sh", "-c", '''echo "{{\"n\": {rows}}}"''']
"#;

#[test]
fn a_chain_killed_in_its_second_stage_resumes_with_every_process_once() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let chain = base.path().join("slow.toml");
    std::fs::write(&chain, SLOW_SECOND_STAGE).expect("the chain is written");
    let results = base.path().join("r");
    let (chain, out) = (chain.to_str().unwrap_or_default(), results.to_str().unwrap_or_default());
    let args = ["run", chain, "--backend", "local", "--pool-size", "2", "-q", "--results", out];
    let mut child = spawn_worker_silent(&args, Path::new("."));
    // Wait until the second stage has recorded some processes but not all.
    let waited = std::time::Instant::now();
    let dir = loop {
        assert!(waited.elapsed() < std::time::Duration::from_secs(60), "the second stage never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
        if let Some(dir) = first_run_dir(&results, "slow") {
            let n = journaled_ids(&dir.join("slow")).len();
            if (2..8).contains(&n) {
                break dir;
            }
        }
    };
    child.kill().expect("kill -9");
    let _ = child.wait();
    assert!(journaled_ids(&dir.join("slow")).len() < 8, "killed in the middle of the second stage");
    assert!(!dir.join("last").exists(), "the third stage had not started");

    let out = run_chain(&dir.join("chain.toml"), "local", &results, &["--resume", dir.to_str().unwrap_or_default()]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("stage `simulate`: 8 finished, 0 crashed of 8"), "{stdout}");
    for (stage, n) in [("simulate", 8), ("slow", 8), ("last", 1)] {
        let mut ids = journaled_ids(&dir.join(stage));
        ids.sort_unstable();
        assert_eq!(ids, (0..n).collect::<Vec<u64>>(), "stage {stage}: every process recorded exactly once");
    }
    let last = stable_rows(&dir.join("last"));
    assert_eq!(last[0]["n"], 8);

    // A changed earlier stage is refused, naming it.
    let changed = base.path().join("changed.toml");
    std::fs::write(&changed, SLOW_SECOND_STAGE.replace("sleep 0.4", "sleep 0.1")).expect("written");
    let out = run_chain(&changed, "local", &results, &["--resume", dir.to_str().unwrap_or_default()]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("stage `slow` differs from the one this chain ran"), "{stderr}");
}

/// The rows of `summary.csv`, as text.
fn summary_rows(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("summary.csv")).expect("summary.csv").lines().map(str::to_owned).collect()
}

#[test]
fn adaptive_runs_give_each_point_the_same_runs_on_every_backend() {
    let spec = common::spec("pi_adaptive.toml");
    let base = tempfile::tempdir().expect("a temporary directory");
    let mut dirs = Vec::new();
    for backend in ["serial", "local"] {
        let results = base.path().join(backend);
        let out = worker_no_panic(
            &[
                "run",
                spec.to_str().unwrap_or_default(),
                "--backend",
                backend,
                "-q",
                "--results",
                results.to_str().unwrap_or_default(),
            ],
            Path::new("."),
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        dirs.push(result_dir(&results, "pi_adaptive"));
    }
    assert_eq!(summary_rows(&dirs[0]), summary_rows(&dirs[1]), "the same runs and statistics per point");
    assert_eq!(stable_rows(&dirs[0]), stable_rows(&dirs[1]), "the same rows");
    let summary = csv_maps(&dirs[0].join("summary.csv"));
    let rows = csv_maps(&dirs[0].join("results.csv"));
    let mut stopped = Vec::new();
    for point in &summary {
        // Run numbers are dense per point: 0..runs.
        let runs = cell(point, "runs") as usize;
        let mut numbers: Vec<usize> =
            rows.iter().filter(|r| r["samples"] == point["samples"]).map(|r| cell(r, "run") as usize).collect();
        numbers.sort_unstable();
        assert_eq!(numbers, (0..runs).collect::<Vec<_>>(), "runs of {}", point["samples"]);
        assert!((4..=200).contains(&runs) && runs.is_multiple_of(4), "{runs}");
        match point["stopped"].as_str() {
            "converged" => assert!(cell(point, "estimate.ci95") < 0.01, "{point:?}"),
            "max" => assert_eq!(runs, 200, "{point:?}"),
            other => panic!("stopped: {other}"),
        }
        stopped.push(point["stopped"].clone());
    }
    assert!(stopped.contains(&"converged".to_owned()) && stopped.contains(&"max".to_owned()), "{stopped:?}");
}

/// Adaptive runs of a slow command: v is a fixed function of x and the run.
const SLOW_ADAPTIVE: &str = r#"name = "slow_adaptive"
kind = "command"
runs = { min = 3, max = 24, until = "v.ci95 < 0.35 * abs(v.mean)" }
command = ["sh", "-c", '''sleep 0.05; echo "{{\"v\": $(( {x} * 10 + ({run} * 7) % 10 ))}}"''']
parameter_ranges = { x = [1, 2, 3] }
"#;

#[test]
fn adaptive_runs_killed_and_resumed_decide_as_an_uninterrupted_run() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let spec = base.path().join("slow_adaptive.toml");
    std::fs::write(&spec, SLOW_ADAPTIVE).expect("the spec is written");
    let reference = base.path().join("reference");
    let out = worker_no_panic(
        &[
            "run",
            spec.to_str().unwrap_or_default(),
            "--backend",
            "serial",
            "-q",
            "--results",
            reference.to_str().unwrap_or_default(),
        ],
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reference = result_dir(&reference, "slow_adaptive");
    let total = stable_rows(&reference).len();
    assert!(total > 9, "some point needed more than its first runs ({total} processes)");

    let results = base.path().join("killed");
    let (spec, out) = (spec.to_str().unwrap_or_default(), results.to_str().unwrap_or_default());
    let args = ["run", spec, "--backend", "local", "--pool-size", "2", "-q", "--results", out];
    let mut child = spawn_worker_silent(&args, Path::new("."));
    let waited = std::time::Instant::now();
    let dir = loop {
        assert!(waited.elapsed() < std::time::Duration::from_secs(60), "the run never got going");
        std::thread::sleep(std::time::Duration::from_millis(10));
        if let Some(dir) = first_run_dir(&results, "slow_adaptive") {
            if (4..total - 2).contains(&journaled_ids(&dir).len()) {
                break dir;
            }
        }
    };
    child.kill().expect("kill -9");
    let _ = child.wait();
    let report =
        |dir: &Path| text(&worker_no_panic(&["report", dir.to_str().unwrap_or_default()], Path::new(".")).stdout);
    let before = report(&dir);
    assert!(before.contains("parameter points need more runs; to run them:"), "{before}");
    let out = worker_no_panic(
        &["run", dir.join("operation.toml").to_str().unwrap_or_default(), "--backend", "local", "-q"]
            .into_iter()
            .chain(["--resume", dir.to_str().unwrap_or_default()])
            .collect::<Vec<_>>(),
        Path::new("."),
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let mut ids = journaled_ids(&dir);
    ids.sort_unstable();
    let unique: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "every process recorded once");
    assert_eq!(summary_rows(&dir), summary_rows(&reference));
    assert_eq!(stable_rows(&dir), stable_rows(&reference));
    let after = report(&dir);
    assert!(after.contains("complete: every process has a record"), "{after}");
}

#[test]
fn a_yaml_chain_validates_and_counts_its_stages() {
    let base = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        base.path().join("sim.yaml"),
        "kind: monte_carlo_pi\nruns: 2\nparameter_ranges:\n  samples: [10, 20, 30]\n",
    )
    .expect("written");
    let chain = base.path().join("chain.yaml");
    std::fs::write(
        &chain,
        "kind: chain\nstages:\n  - name: sim\n    spec: sim.yaml\n  - name: per_row\n    from: sim\n    kind: command\n    \
         command: [echo, '{samples}', '{estimate}']\n",
    )
    .expect("written");
    let out = worker_no_panic(&["validate", chain.to_str().unwrap_or_default()], Path::new("."));
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("stage `sim` (kind `monte_carlo_pi`): 6 processes (2 run(s) each)"), "{stdout}");
    assert!(stdout.contains("stage `per_row` (kind `command`): one process per finished row of `sim`"), "{stdout}");
    let results = base.path().join("r");
    let out = run_chain(&chain, "local", &results, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows = stable_rows(&result_dir(&results, "chain").join("per_row"));
    assert_eq!(rows.len(), 6);
    assert!(
        rows.iter().all(|r| r["stdout"].as_str().is_some_and(|s| s.starts_with(&r["samples"].to_string()))),
        "{rows:?}"
    );
}

#[test]
fn a_chain_built_in_code_runs_as_a_chain_file_does() {
    use taskfarm::{Params, Value};
    use taskfarm_worker::chain::{ChainArgs, ChainBuilder, Source};
    let table = |pairs: Vec<(&str, Value)>| -> Params { pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect() };
    let simulate = table(vec![
        ("kind", Value::Str("monte_carlo_pi".into())),
        ("runs", Value::Int(3)),
        (
            "parameter_ranges",
            Value::Map(table(vec![("samples", Value::List(vec![Value::Int(100), Value::Int(1000)]))])),
        ),
    ]);
    let analyse = table(vec![
        ("kind", Value::Str("command".into())),
        (
            "command",
            Value::List(["sh", "-c", "echo \"{{\\\"rows\\\": {rows}}}\""].map(|s| Value::Str(s.into())).to_vec()),
        ),
    ]);
    let registry = taskfarm_worker::Registry::with_builtins();
    let refused = ChainBuilder::new("built")
        .stage("analyse", Source::Groups("simulate".into(), vec!["samples".into()]), analyse.clone())
        .build(&registry);
    assert!(refused.unwrap_err().to_string().contains("there is no such stage"));
    let chain = ChainBuilder::new("built")
        .stage("simulate", Source::Sweep, simulate)
        .outputs(&["estimate", "error"])
        .stage("analyse", Source::Groups("simulate".into(), vec!["samples".into()]), analyse)
        .require_all()
        .build(&registry)
        .expect("a valid chain");
    let base = tempfile::tempdir().expect("a temporary directory");
    let args = ChainArgs {
        backend: Some("serial".into()),
        pool_size: None,
        results: base.path().to_owned(),
        resume: None,
        quiet: true,
    };
    let status = taskfarm_worker::chain::run_chain(&registry, &chain, args).expect("the chain runs");
    assert_eq!(status, 0);
    let dir = result_dir(base.path(), "built");
    let rows = stable_rows(&dir.join("analyse"));
    assert_eq!(rows.iter().map(|r| r["rows"].as_i64().unwrap_or(0)).collect::<Vec<_>>(), vec![3, 3]);
    assert_eq!(summary_rows(&dir.join("simulate")).len(), 3, "a header and a row per sample size");
}
