//! Watching and stopping a run from outside, with the real `taskfarm-worker` binary:
//! `status` on a live, a stopped, an interrupted and a finished run, `cancel` (graceful and
//! `--now`), `results/<name>` and a spec file naming the latest run, `status --watch` into
//! a pipe, crashes by reason, a run of another host judged by its status file, and
//! `report --json`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{text, worker_no_panic as run, WORKER};

/// Only to avoid hanging forever: nothing is asserted about speed.
const PATIENCE: Duration = Duration::from_secs(60);

/// Six processes; x = 2 waits for the file `go` in `dir` (40 s at most), the others end at once.
fn start(dir: &Path, extra: &[&str]) -> Child {
    let d = dir.display();
    std::fs::write(
        dir.join("watched.toml"),
        format!(
            "kind = \"command\"\ncommand = [\"sh\", \"-c\", '''i=0; if [ {{x}} = 2 ]; then while [ ! -e {d}/go ] && \
             [ $i -lt 400 ]; do sleep 0.1; i=$((i + 1)); done; fi; echo {{x}}''']\n\
             parameter_ranges = {{ x = [0, 1, 2, 3, 4, 5] }}\n"
        ),
    )
    .expect("the spec is written");
    Command::new(WORKER)
        .args(["run", "watched.toml", "--quiet", "--pool-size", "2"])
        .args(extra)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the worker starts")
}

/// Waits until `status` of the latest run says `what`; returns its run directory and text.
fn wait_for_status(dir: &Path, what: &str) -> (PathBuf, String) {
    let start = Instant::now();
    loop {
        let out = run(&["status", "results/watched"], dir);
        let said = text(&out.stdout);
        if said.contains(what) {
            let run_dir = said.lines().next().and_then(|l| l.strip_prefix("run: ")).map(PathBuf::from);
            return (run_dir.expect("status names the run"), said);
        }
        assert!(start.elapsed() < PATIENCE, "status never said `{what}`: {said}{}", text(&out.stderr));
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn status_follows_a_run_and_cancel_stops_it_gracefully() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let child = start(dir.path(), &["--backend", "local"]);
    // The five short processes end; x = 2 runs.
    let (run_dir, said) = wait_for_status(dir.path(), "5 finished");
    assert!(said.contains("state: running on the local backend (pid"), "{said}");
    assert!(said.contains("of 6") && said.contains("1 running"), "{said}");
    assert!(said.contains("longest running:\n  #2 "), "{said}");
    assert!(said.contains("slots: 1 of 2 busy, 1 idle"), "{said}");
    // The spec names the same run (the latest of its operation under ./results).
    let by_spec = text(&run(&["status", "watched.toml"], dir.path()).stdout);
    assert!(by_spec.starts_with(&format!("run: {}\n", run_dir.display())), "{by_spec}");
    // cancel: nothing new starts; the running process finishes; exit 130 with the resume command.
    let out = run(&["cancel", &run_dir.to_string_lossy()], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("asked the run"), "{}", text(&out.stdout));
    std::thread::sleep(Duration::from_secs(1));
    std::fs::write(dir.path().join("go"), "").expect("go");
    let out = child.wait_with_output().expect("the worker ends");
    assert_eq!(out.status.code(), Some(130), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("--resume"), "{}", text(&out.stdout));
    let said = text(&run(&["status", &run_dir.to_string_lossy()], dir.path()).stdout);
    assert!(said.contains("state: finished") || said.contains("state: interrupted"), "{said}");
    // A cancel of a run that nothing writes is an error that says how to finish it.
    let out = run(&["cancel", "results/watched"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("no run is writing"), "{}", text(&out.stderr));
}

#[test]
fn status_of_a_killed_run_says_so_and_cancel_now_cuts_processes_short() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = start(dir.path(), &["--backend", "serial"]);
    let (run_dir, _) = wait_for_status(dir.path(), "2 finished");
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    let said = text(&run(&["status", &run_dir.to_string_lossy()], dir.path()).stdout);
    assert!(said.contains("stopped without finishing") && said.contains("--resume"), "{said}");
    // Resumed, then cancelled with --now while x = 2 waits: it is cut short, not waited for.
    let spec = run_dir.join("operation.toml");
    let child = Command::new(WORKER)
        .args(["run", &spec.to_string_lossy(), "--resume", &run_dir.to_string_lossy(), "--quiet"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the worker starts");
    wait_for_status(dir.path(), "1 running");
    let out = run(&["cancel", "--now", "results/watched"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = child.wait_with_output().expect("the worker ends");
    assert_eq!(out.status.code(), Some(130), "{}{}", text(&out.stdout), text(&out.stderr));
    let said = text(&run(&["status", &run_dir.to_string_lossy()], dir.path()).stdout);
    assert!(said.contains("state: interrupted"), "{said}");
}

#[test]
fn status_of_a_spec_without_a_run_says_where_it_looked() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let spec = dir.path().join("never.toml");
    std::fs::write(&spec, "name = \"never\"\nkind = \"command\"\ncommand = [\"true\"]\n").expect("the spec");
    for command in ["status", "cancel"] {
        let out = run(&[command, "never.toml", "--results", "elsewhere"], dir.path());
        assert_eq!(out.status.code(), Some(2), "{command}: {}", text(&out.stderr));
        let said = text(&out.stderr);
        assert!(said.contains("`never`") && said.contains("elsewhere") && said.contains("--results"), "{said}");
    }
}

#[test]
fn status_watch_into_a_pipe_draws_again_until_the_run_ends() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let child = start(dir.path(), &["--backend", "local"]);
    wait_for_status(dir.path(), "5 finished");
    let watch = Command::new(WORKER)
        .args(["status", "--watch", "results/watched"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("status --watch starts");
    // At least two drawings of the live run (one a second), then the run ends.
    std::thread::sleep(Duration::from_millis(2500));
    std::fs::write(dir.path().join("go"), "").expect("go");
    let run_out = child.wait_with_output().expect("the worker ends");
    assert_eq!(run_out.status.code(), Some(0), "{}", text(&run_out.stderr));
    let out = wait_with_patience(watch);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let drawings: Vec<&str> = said.split("\n\nrun: ").collect();
    assert!(drawings.len() >= 3, "two live drawings and the last: {said}");
    assert!(!said.contains('\x1b'), "no terminal codes into a pipe: {said:?}");
    assert!(drawings[0].contains("state: running") && drawings[0].contains("1 running"), "{said}");
    let last = drawings.last().expect("a drawing");
    assert!(last.contains("state: finished") && last.contains("6 finished"), "{said}");
}

/// Waits for `child` to end, killing it past [`PATIENCE`].
fn wait_with_patience(mut child: Child) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().expect("waits").is_none() {
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            panic!("process {} never ended", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("its output")
}

/// A finished run of `crashy.toml` in `dir`: x = 1 and 3 fail (`boom x` on stderr, status 3).
fn crashy_run(dir: &Path) -> PathBuf {
    std::fs::write(
        dir.join("crashy.toml"),
        "kind = \"command\"\ncommand = [\"sh\", \"-c\", '''if [ $(({x} % 2)) = 1 ]; then echo boom {x} >&2; exit 3; \
         fi; echo {x}''']\nparameter_ranges = { x = [0, 1, 2, 3] }\n",
    )
    .expect("the spec is written");
    let out = run(&["run", "crashy.toml", "--quiet", "--backend", "serial"], dir);
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    let said = text(&run(&["status", "crashy.toml"], dir).stdout);
    said.lines().next().and_then(|l| l.strip_prefix("run: ")).map(PathBuf::from).expect("status names the run")
}

#[test]
fn status_groups_crashes_by_reason_with_their_stderr() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run_dir = crashy_run(dir.path());
    let said = text(&run(&["status", &run_dir.to_string_lossy()], dir.path()).stdout);
    assert!(said.contains("state: finished") && said.contains("2 finished, 2 crashed of 4"), "{said}");
    assert!(said.contains("crashes by reason:\n        2 × the command `sh` exited with status 3"), "{said}");
    assert!(said.contains("stderr: boom 1") && said.contains("processes #1, #3"), "{said}");
}

#[test]
fn report_json_holds_counts_workers_and_crash_groups() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run_dir = crashy_run(dir.path());
    let out = run(&["report", "--json", "results/crashy"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let object: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).expect("one JSON object");
    assert_eq!(object["operation"], "crashy");
    assert_eq!(object["kind"], "command");
    assert_eq!(object["run"].as_str().map(PathBuf::from), Some(run_dir));
    assert_eq!((object["total"].as_u64(), object["missing_at_least"].as_u64()), (Some(4), Some(0)));
    assert!(object["running"].is_null(), "nothing writes it: {object}");
    let report = &object["report"];
    let counts = ["recorded", "finished", "crashed", "timed_out"].map(|k| report[k].as_u64());
    assert_eq!(counts, [Some(4), Some(2), Some(2), Some(0)], "{report}");
    assert!(report["wall_s"].as_f64().is_some_and(|s| s >= 0.0), "{report}");
    assert_eq!(report["workers"].as_array().map(Vec::len), Some(1), "one serial worker: {report}");
    let groups = report["crash_groups"].as_array().expect("crash groups");
    assert_eq!(groups.len(), 1, "{report}");
    assert_eq!(groups[0]["count"], 2);
    assert_eq!(groups[0]["ids"], serde_json::json!([1, 3]));
    assert_eq!(groups[0]["stderr_line"], "boom 1");
    assert!(groups[0]["reason"].as_str().is_some_and(|r| r.contains("status 3")), "{report}");
}

#[test]
fn a_run_of_another_host_is_live_while_its_status_file_is_rewritten() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run_dir = crashy_run(dir.path());
    // As a program on another host would leave it: running, and no lock seen from here.
    let status_of = |age_s: f64| {
        let path = run_dir.join("status.json");
        let mut status: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("status.json")).expect("JSON");
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("a clock").as_secs_f64();
        status["state"] = "running".into();
        status["host"] = "elsewhere.invalid".into();
        status["updated_at"] = (now - age_s).into();
        std::fs::write(&path, status.to_string()).expect("status.json");
        text(&run(&["status", &run_dir.to_string_lossy()], dir.path()).stdout)
    };
    let said = status_of(0.0);
    assert!(said.contains("state: running on the serial backend (pid") && said.contains("elsewhere.invalid"), "{said}");
    let said = status_of(60.0);
    assert!(said.contains("stopped without finishing") && said.contains("--resume"), "{said}");
}
