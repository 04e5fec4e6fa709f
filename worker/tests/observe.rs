//! Watching and stopping a run from outside, with the real `taskfarm-worker` binary:
//! `status` on a live, a stopped, an interrupted and a finished run, `cancel` (graceful and
//! `--now`), and `results/<name>` naming the latest run.

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
