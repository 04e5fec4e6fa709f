//! `taskfarm-worker run --resume DIR`: an interrupted run (its journal cut mid-record) is
//! finished with every process exactly once; another spec is refused with exit status 2.

mod common;

use common::{result_dir, spec, text, worker_here as worker};

#[test]
fn resume_finishes_an_interrupted_run() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let (full, cut) = (base.path().join("full"), base.path().join("cut"));
    let sweep = spec("command_sweep.toml");
    let sweep = sweep.to_string_lossy();
    for results in [&full, &cut] {
        let out = worker(&["run", &sweep, "--backend", "local", "--quiet", "--results", &results.to_string_lossy()]);
        assert_eq!(out.status.code(), Some(0));
    }
    let reference = result_dir(&full, "command_sweep");
    let dir = result_dir(&cut, "command_sweep");
    // Keep 40% of the journal (a torn last record) and drop the consolidated files.
    let journal = dir.join("journal");
    let bytes = std::fs::read(&journal).expect("the journal");
    std::fs::write(&journal, &bytes[..bytes.len() * 2 / 5]).expect("cut the journal");
    std::fs::remove_file(dir.join("results.csv")).expect("results.csv existed");

    let as_run = dir.join("operation.toml");
    let dir_arg = dir.to_string_lossy();
    // `report` sees what is missing and says how to finish it.
    let out = worker(&["report", &dir_arg]);
    assert_eq!(out.status.code(), Some(0));
    let report = text(&out.stdout);
    assert!(report.contains("missing: ") && report.contains("--resume"), "{report}");
    assert!(report.contains("utilisation: ") && report.contains("slowest processes:"), "{report}");
    let out = worker(&["run", &as_run.to_string_lossy(), "--resume", &dir_arg, "--quiet"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    backend_core::testing::assert_same_results(&reference, &dir);
    let out = worker(&["report", &dir_arg]);
    assert!(text(&out.stdout).contains("complete: every process has a record"));

    // The original spec file resumes it too (nothing left to run).
    let out = worker(&["run", &sweep, "--resume", &dir_arg, "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // Another spec is refused, and so is a directory that is not a run.
    let out = worker(&["run", &spec("pi.toml").to_string_lossy(), "--resume", &dir_arg]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("was run with another spec"), "{stderr}");
    let out = worker(&["run", &sweep, "--resume", &base.path().to_string_lossy()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("is not a taskfarm run directory"));
}

#[test]
fn nan_and_infinite_parameters_round_trip_and_resume() {
    let base = tempfile::tempdir().expect("a temporary directory");
    let spec = base.path().join("floats.toml");
    std::fs::write(
        &spec,
        "kind = \"command\"\ncommand = [\"echo\", \"{f}\"]\nparameter_ranges = { f = [1, nan, inf, -inf] }\n",
    )
    .expect("the spec is written");
    let results = base.path().join("results");
    let out = worker(&[
        "run",
        &spec.to_string_lossy(),
        "--backend",
        "serial",
        "--quiet",
        "--results",
        &results.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dir = result_dir(&results, "floats");
    let as_run = dir.join("operation.toml");
    let recorded = std::fs::read_to_string(&as_run).expect("operation.toml");
    assert!(recorded.contains("f = [1, nan, inf, -inf]"), "{recorded}");
    // The parameter cells tell NaN and the infinities apart, in CSV and in JSON lines.
    let csv = std::fs::read_to_string(dir.join("results.csv")).expect("results.csv");
    let header: Vec<&str> = csv.lines().next().unwrap_or_default().split(',').collect();
    let f = header.iter().position(|h| *h == "f").expect("an f column");
    let cells: Vec<String> = csv.lines().skip(1).map(|l| l.split(',').nth(f).unwrap_or_default().to_owned()).collect();
    assert_eq!(cells, ["1", "NaN", "inf", "-inf"], "{csv}");
    let jsonl = std::fs::read_to_string(dir.join("results.jsonl")).expect("results.jsonl");
    for (line, written) in jsonl.lines().zip(["\"f\":1", "\"f\":\"NaN\"", "\"f\":\"Infinity\"", "\"f\":\"-Infinity\""])
    {
        assert!(line.contains(written), "{written} in {line}");
    }

    // The spec as run makes the same processes ...
    let out = worker(&["validate", &as_run.to_string_lossy()]);
    let listed = text(&out.stdout);
    for line in ["#0 run 0: f=1", "#1 run 0: f=NaN", "#2 run 0: f=inf", "#3 run 0: f=-inf"] {
        assert!(listed.contains(line), "{line} in {listed}");
    }
    // ... and resumes the run (NaN is the same NaN there and now), from either spec.
    let dir_arg = dir.to_string_lossy();
    for spec in [&as_run, &spec] {
        let out = worker(&["run", &spec.to_string_lossy(), "--resume", &dir_arg, "--quiet"]);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }
    // A different NaN-free value is still another spec.
    std::fs::write(
        &spec,
        "kind = \"command\"\ncommand = [\"echo\", \"{f}\"]\nparameter_ranges = { f = [1, nan, inf, 5] }\n",
    )
    .expect("the spec is written");
    let out = worker(&["run", &spec.to_string_lossy(), "--resume", &dir_arg, "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("was run with another spec"), "{}", text(&out.stderr));
}

#[test]
fn reordered_parameter_ranges_are_another_spec() {
    // The order of `parameter_ranges` numbers the processes: resuming with it changed would
    // run other combinations under the recorded ids.
    let base = tempfile::tempdir().expect("a temporary directory");
    let spec = base.path().join("order.toml");
    let write = |ranges: &str| {
        std::fs::write(&spec, format!("kind = \"command\"\ncommand = [\"true\"]\n[parameter_ranges]\n{ranges}"))
            .expect("the spec is written")
    };
    write("a = [1, 2]\nb = [{ x = 1 }, { x = 2 }]\n");
    let results = base.path().join("results");
    let out = worker(&[
        "run",
        &spec.to_string_lossy(),
        "--backend",
        "serial",
        "--quiet",
        "--results",
        &results.to_string_lossy(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let dir = result_dir(&results, "order");
    let dir_arg = dir.to_string_lossy();
    let out = worker(&["run", &dir.join("operation.toml").to_string_lossy(), "--resume", &dir_arg, "--quiet"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    write("b = [{ x = 1 }, { x = 2 }]\na = [1, 2]\n");
    let out = worker(&["run", &spec.to_string_lossy(), "--resume", &dir_arg, "--quiet"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("`parameter_ranges` differs"), "{}", text(&out.stderr));
}
