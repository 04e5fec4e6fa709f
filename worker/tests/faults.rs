//! Fault injection on the real `taskfarm-worker` binary: short processes finish while long
//! ones run, and the run is killed — SIGINT, SIGTERM, SIGTERM then SIGKILL, SIGKILL — at
//! seeded random moments, then resumed. What must hold every time:
//! - every process whose end was logged well before the kill has its record in the journal
//!   (a record reaches the file within milliseconds, whatever runs after it);
//! - the resumed run ends with every process exactly once, with the right output;
//! - no process the run started is left running;
//! - one writer per result directory: a second run on a live directory is refused, and
//!   goes ahead once the holder is dead.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use backend_core::journal::read_journal;
use common::{text, worker_no_panic as run, WORKER};

/// Only to avoid hanging forever: nothing is asserted about speed.
const PATIENCE: Duration = Duration::from_secs(120);

/// How long after a process's end is logged its record must be in the journal file. The
/// journal promises a few milliseconds; the margin is for a loaded machine.
const JOURNALED_WITHIN: Duration = Duration::from_millis(500);

/// A sweep of `n` commands in `dir`: every fourth (x = 2, 6, 10, ...) is long — it waits
/// until the file `go` exists in `dir` (40 s at most) — the others take a few milliseconds.
/// Every command appends its shell's pid to `pids`; its output is x.
fn write_spec(dir: &Path, n: usize) -> PathBuf {
    let d = dir.display();
    let xs: Vec<String> = (0..n).map(|x| x.to_string()).collect();
    let spec = format!(
        r#"kind = "command"
command = ["sh", "-c", '''echo $$ >> {d}/pids; i=0; if [ $(( {{x}} % 4 )) = 2 ]; then while [ ! -e {d}/go ] && [ $i -lt 400 ]; do sleep 0.1; i=$((i + 1)); done; else sleep 0.0{{x}}; fi; echo {{x}}''']
parameter_ranges = {{ x = [{}] }}
"#,
        xs.join(", ")
    );
    let path = dir.join("faults.toml");
    std::fs::write(&path, spec).expect("the spec is written");
    path
}

fn start(dir: &Path, args: &[&str]) -> Child {
    Command::new(WORKER)
        // -vv: operation.log takes the commands' DEBUG lines, which say which ended.
        .args(["run", "faults.toml", "--quiet", "-vv"])
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the worker starts")
}

/// The run directory under `dir/results/faults/`, once it has an operation.log.
fn wait_for_run_dir(dir: &Path) -> PathBuf {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < PATIENCE, "no run directory");
        if let Ok(mut entries) = std::fs::read_dir(dir.join("results/faults")) {
            if let Some(Ok(entry)) = entries.next() {
                if entry.path().join("operation.log").is_file() {
                    return entry.path();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The ids whose command's end `operation.log` holds now.
fn logged_ends(run_dir: &Path) -> BTreeSet<u64> {
    let log = std::fs::read_to_string(run_dir.join("operation.log")).unwrap_or_default();
    log.lines()
        .filter(|l| l.contains("exited with status 0"))
        .filter_map(|l| l.split(" process=").nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

fn journaled(run_dir: &Path) -> BTreeSet<u64> {
    read_journal(&run_dir.join("journal")).expect("the journal is readable").records.iter().map(|r| r.id).collect()
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status();
    assert!(status.expect("kill runs").success(), "kill -{name}");
}

/// Waits for `child` up to `limit`; `None` when it still runs.
fn wait_up_to(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("the worker can be waited for") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Asserts that every pid in `dir/pids` is gone (within a few seconds: a process killed
/// with its group may take a moment to be reaped by init).
fn assert_no_survivors(dir: &Path) {
    let pids = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
    let start = Instant::now();
    for pid in pids.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        loop {
            let alive = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| !stat.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'));
            if !alive {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "process {pid} the run started is still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Resumes the run in `run_dir` (long processes end at once now) and checks that every one
/// of `n` processes has exactly one row, finished, with its output.
fn resume_and_check(dir: &Path, run_dir: &Path, n: usize, backend: &str) -> Output {
    std::fs::write(dir.join("go"), "").expect("the go file is written");
    let spec = run_dir.join("operation.toml");
    let out = run(
        &["run", &spec.to_string_lossy(), "--resume", &run_dir.to_string_lossy(), "--quiet", "--backend", backend],
        dir,
    );
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let mut rows: BTreeMap<u64, String> = BTreeMap::new();
    for row in backend_core::results::read_results_jsonl(run_dir).expect("results.jsonl") {
        let id = row["id"].as_u64().expect("an id");
        assert_eq!(row.get("status").and_then(|s| s.as_str()), Some("finished"), "{row:?}");
        let stdout = row.get("stdout").and_then(|s| s.as_str()).map(str::to_owned);
        let stdout = stdout.unwrap_or_else(|| panic!("an output in {row:?}"));
        assert!(rows.insert(id, stdout).is_none(), "id {id} has one row");
    }
    let want: BTreeMap<u64, String> = (0..n as u64).map(|x| (x, x.to_string())).collect();
    assert_eq!(rows, want, "every process once, with its output");
    out
}

#[test]
fn finished_records_reach_the_journal_while_long_processes_run() {
    for backend in [["--backend", "serial"], ["--backend", "local"]] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        write_spec(dir.path(), 4);
        let mut child = start(dir.path(), &[backend[0], backend[1], "--pool-size", "2"]);
        let run_dir = wait_for_run_dir(dir.path());
        let start = Instant::now();
        // Processes 0 and 1 end at once; 2 waits for `go` (and on the serial backend 3 after it).
        let short = if backend[1] == "serial" { 2 } else { 3 };
        while logged_ends(&run_dir).len() < short {
            assert!(start.elapsed() < PATIENCE, "the short processes never ended");
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(JOURNALED_WITHIN);
        assert_eq!(journaled(&run_dir), logged_ends(&run_dir), "{}: records of ended processes", backend[1]);
        child.kill().expect("SIGKILL");
        let _ = child.wait();
        let out = run(&["report", &run_dir.to_string_lossy()], dir.path());
        assert!(text(&out.stdout).contains(&format!("{short} recorded")), "{}", text(&out.stdout));
        resume_and_check(dir.path(), &run_dir, 4, backend[1]);
        assert_no_survivors(dir.path());
    }
}

/// How a run is stopped.
#[derive(Debug, Clone, Copy)]
enum Stop {
    /// SIGINT twice: drain, then stop now.
    IntTwice,
    /// SIGTERM, then SIGKILL 2 s later (what Slurm does at a time limit).
    TermThenKill,
    /// SIGKILL.
    Kill,
    /// SIGINT once, then the long processes are let go: the run drains and ends.
    IntDrained,
}

#[test]
fn killed_at_random_moments_then_resumed_every_process_once_and_nothing_lost() {
    let mut seed: u64 = 0x5eed_cafe;
    let mut next = move || {
        // xorshift: seeded, so a failure repeats.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let stops = [Stop::IntTwice, Stop::TermThenKill, Stop::Kill, Stop::IntDrained];
    for round in 0..8 {
        let stop = stops[round % stops.len()];
        let backend = if next() % 2 == 0 { "local" } else { "serial" };
        let n = 12;
        let dir = tempfile::tempdir().expect("a temporary directory");
        write_spec(dir.path(), n);
        let mut child = start(dir.path(), &["--backend", backend, "--pool-size", "2"]);
        let run_dir = wait_for_run_dir(dir.path());
        std::thread::sleep(Duration::from_millis(50 + next() % 700));
        // Whatever was logged as ended now must be journaled by the time of the kill.
        let ended = logged_ends(&run_dir);
        std::thread::sleep(JOURNALED_WITHIN);
        let context = format!("round {round}: {stop:?} on {backend}");
        match stop {
            Stop::IntTwice => {
                signal(&child, "INT");
                std::thread::sleep(Duration::from_millis(100));
                signal(&child, "INT");
            }
            Stop::TermThenKill => {
                signal(&child, "TERM");
                std::thread::sleep(Duration::from_secs(2));
                let _ = child.kill();
            }
            Stop::Kill => child.kill().expect("SIGKILL"),
            Stop::IntDrained => {
                signal(&child, "INT");
                std::thread::sleep(Duration::from_millis(100));
                std::fs::write(dir.path().join("go"), "").expect("the go file is written");
            }
        }
        let status = wait_up_to(&mut child, Duration::from_secs(30)).unwrap_or_else(|| panic!("{context}: hangs"));
        if matches!(stop, Stop::IntTwice | Stop::IntDrained) {
            assert_eq!(status.code(), Some(130), "{context}");
        }
        let kept = journaled(&run_dir);
        assert!(ended.is_subset(&kept), "{context}: ended {ended:?} but journaled {kept:?}");
        resume_and_check(dir.path(), &run_dir, n, backend);
        assert_no_survivors(dir.path());
    }
}

#[test]
fn one_writer_per_result_directory() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_spec(dir.path(), 4);
    let mut holder = start(dir.path(), &["--backend", "local", "--pool-size", "2"]);
    let run_dir = wait_for_run_dir(dir.path());
    let spec = run_dir.join("operation.toml");
    let resume = ["run", &spec.to_string_lossy(), "--resume", &run_dir.to_string_lossy(), "--quiet"].map(String::from);
    let resume: Vec<&str> = resume.iter().map(String::as_str).collect();
    // A second writer is refused, naming the holder; `report` says the run is going.
    let second = run(&resume, dir.path());
    let stderr = text(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("pid {}", holder.id())) && stderr.contains("still going"), "{stderr}");
    let report = text(&run(&["report", &run_dir.to_string_lossy()], dir.path()).stdout);
    assert!(report.contains("the run is still going") && !report.contains("--resume"), "{report}");
    // Once the holder is dead, the directory is free.
    holder.kill().expect("SIGKILL");
    let _ = holder.wait();
    resume_and_check(dir.path(), &run_dir, 4, "local");
    assert_no_survivors(dir.path());
}

/// 20 processes of 0.4 s each.
const TWENTY_NAPS: &str = "kind = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 0.4; echo {x}\"]\n\
     parameter_ranges = { x = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19] }\n";

#[test]
fn a_deadline_stops_starting_processes_in_time_and_the_run_resumes() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("timed.toml"), TWENTY_NAPS).expect("the spec is written");
    let started = Instant::now();
    let out = run(
        &["run", "timed.toml", "--quiet", "--backend", "serial", "--deadline", "3s", "--deadline-margin", "1s"],
        dir.path(),
    );
    let took = started.elapsed();
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(75), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("stopped at the deadline") && stdout.contains("--resume"), "{stdout}");
    let run_dir = common::result_dir(&dir.path().join("results"), "timed");
    let rows = backend_core::results::read_results_jsonl(&run_dir).expect("results.jsonl");
    assert!(!rows.is_empty() && rows.len() < 20, "{} rows", rows.len());
    assert!(rows.iter().all(|r| r.get("status").and_then(|s| s.as_str()) == Some("finished")), "none cut short");
    // Nothing started after the deadline's margin: the run ended before the deadline.
    assert!(took < Duration::from_secs(30), "the run ended ({took:?})");
    let journal = read_journal(&run_dir.join("journal")).expect("the journal");
    let last_end = journal.records.iter().map(|r| r.started_at + r.duration_s).fold(0.0, f64::max);
    let first_start = journal.records.iter().map(|r| r.started_at).fold(f64::INFINITY, f64::min);
    assert!(
        last_end - first_start < 3.0,
        "the last process ended {:.2} s after the first started",
        last_end - first_start
    );
    // The resume finishes it.
    let spec = run_dir.join("operation.toml");
    let out = run(&["run", &spec.to_string_lossy(), "--resume", &run_dir.to_string_lossy(), "--quiet"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(backend_core::results::read_results_jsonl(&run_dir).expect("results.jsonl").len(), 20);
}

/// After a stop no retry starts: a process that fails with retries left gets no record, and
/// `--resume` runs it again with all its retries (on serial and local alike).
#[test]
fn a_failure_with_retries_left_after_a_stop_runs_again_on_resume() {
    for backend in ["serial", "local"] {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let d = dir.path().display();
        let spec = format!(
            r#"kind = "command"
retries = 2
command = ["sh", "-c", '''if [ {{x}} = 1 ]; then echo a >> {d}/attempts; sleep 1; [ -e {d}/go ] || exit 1; fi; echo {{x}}''']
parameter_ranges = {{ x = [0, 1] }}
"#
        );
        std::fs::write(dir.path().join("faults.toml"), spec).expect("the spec is written");
        let mut child = start(dir.path(), &["--backend", backend]);
        let run_dir = wait_for_run_dir(dir.path());
        let started = Instant::now();
        while !dir.path().join("attempts").exists() {
            assert!(started.elapsed() < PATIENCE, "{backend}: the failing process never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        signal(&child, "INT");
        let status = wait_up_to(&mut child, PATIENCE).expect("the run ends after its processes");
        assert_eq!(status.code(), Some(130), "{backend}");
        let attempts = std::fs::read_to_string(dir.path().join("attempts")).unwrap_or_default();
        assert_eq!(attempts.lines().count(), 1, "{backend}: no retry starts after the stop");
        assert!(!journaled(&run_dir).contains(&1), "{backend}: the failure with retries left has no record");
        std::fs::write(dir.path().join("go"), "").expect("the go file is written");
        let out = run(
            &[
                "run",
                &run_dir.join("operation.toml").to_string_lossy(),
                "--resume",
                &run_dir.to_string_lossy(),
                "--quiet",
                "--backend",
                backend,
            ],
            dir.path(),
        );
        assert_eq!(out.status.code(), Some(0), "{backend}: {}", text(&out.stderr));
        let rows = backend_core::results::read_results_jsonl(&run_dir).expect("results.jsonl");
        let one = rows.iter().find(|r| r["id"].as_u64() == Some(1)).expect("a row of process 1");
        assert_eq!(one.get("status").and_then(|s| s.as_str()), Some("finished"), "{backend}: {one:?}");
        assert_eq!(rows.len(), 2, "{backend}: one row each");
    }
}

/// SIGUSR1, the early warning a batch system sends before its wall-time limit (the batch
/// script asks Slurm for it), mid-run: no new process starts, the running ones finish and
/// are recorded, the run ends resumable (75), and `--resume` runs the rest: every process
/// starts exactly once in all.
#[test]
fn an_early_warning_ends_the_run_resumable_and_the_resume_finishes_it() {
    use std::io::Read;
    let n = 40;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path().display();
    let xs: Vec<String> = (0..n).map(|x| x.to_string()).collect();
    let spec = format!(
        r#"kind = "command"
command = ["sh", "-c", '''echo {{x}} >> {d}/starts; sleep 0.2; echo {{x}}''']
parameter_ranges = {{ x = [{}] }}
"#,
        xs.join(", ")
    );
    std::fs::write(dir.path().join("faults.toml"), spec).expect("the spec is written");
    let starts = || -> Vec<u64> {
        let text = std::fs::read_to_string(dir.path().join("starts")).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    };
    let mut child = start(dir.path(), &["--backend", "local", "--pool-size", "2"]);
    let run_dir = wait_for_run_dir(dir.path());
    let waiting = Instant::now();
    while starts().len() < 4 {
        assert!(waiting.elapsed() < PATIENCE, "no process started");
        std::thread::sleep(Duration::from_millis(10));
    }
    signal(&child, "USR1");
    let status = wait_up_to(&mut child, PATIENCE).expect("the run ends after its running processes");
    let mut stdout = String::new();
    let _ = child.stdout.take().expect("stdout is piped").read_to_string(&mut stdout);
    assert_eq!(status.code(), Some(75), "{stdout}");
    assert!(stdout.contains("stopped at the deadline") && stdout.contains("--resume"), "{stdout}");
    let before = starts();
    assert!(before.len() < n, "the warning stopped the run early: {} of {n} started", before.len());
    let rows = backend_core::results::read_results_jsonl(&run_dir).expect("results.jsonl");
    assert!(rows.iter().all(|r| r.get("status").and_then(|s| s.as_str()) == Some("finished")), "none cut short");
    let recorded: BTreeSet<u64> = rows.iter().filter_map(|r| r["id"].as_u64()).collect();
    let started: BTreeSet<u64> = before.iter().copied().collect();
    assert_eq!(started.len(), before.len(), "no process started twice: {before:?}");
    assert_eq!(recorded, started, "every process that started finished and was recorded");
    resume_and_check(dir.path(), &run_dir, n, "local");
    let mut all = starts();
    all.sort_unstable();
    assert_eq!(all, (0..n as u64).collect::<Vec<_>>(), "every process started exactly once in all");
}

/// `--continue N` in a Slurm job whose run already went through N allocations submits no
/// follow-up: the cap is checked before `sbatch` is called (so no Slurm is needed here: the
/// job's variables are set by hand), the allocation is noted, and the run ends 75.
#[test]
fn continue_at_its_cap_submits_no_follow_up() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("capped.toml"), TWENTY_NAPS).expect("the spec is written");
    let out = Command::new(WORKER)
        .args(["run", "capped.toml", "--quiet", "--backend", "serial", "--deadline", "2s", "--deadline-margin", "1s"])
        .args(["--continue", "1"])
        .env("SLURM_JOB_ID", "4242")
        .env("TASKFARM_BATCH_SCRIPT", dir.path().join("no-such-script"))
        .current_dir(dir.path())
        .output()
        .expect("the worker runs");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(75), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains("not continued: the run went through 1 allocations, the cap (--continue 1)"),
        "{stdout}{}",
        text(&out.stderr)
    );
    let run_dir = common::result_dir(&dir.path().join("results"), "capped");
    let allocations = std::fs::read_to_string(run_dir.join("allocations.jsonl")).expect("allocations.jsonl");
    assert_eq!(allocations.lines().count(), 1, "{allocations}");
    assert!(
        allocations.contains("\"job\":\"4242\"") && allocations.contains("\"deadline_reached\":true"),
        "{allocations}"
    );
    let report = text(&run(&["report", &run_dir.to_string_lossy()], dir.path()).stdout);
    assert!(report.contains("allocations: job 4242 ("), "{report}");
}

/// Before any process has ended, a deadline judges a process by its `timeout`: a process
/// that may run 10 s does not start 3 s before a deadline (before, nothing was known and
/// it started); the run ends resumable with nothing started, and `--resume` runs it all.
#[test]
fn a_timeout_that_would_pass_the_deadline_keeps_the_process_from_starting() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("long.toml"),
        format!(
            "kind = \"command\"\ntimeout = \"10s\"\ncommand = [\"sh\", \"-c\", \"echo {{x}} >> {d}/starts; echo {{x}}\"]\n\
             parameter_ranges = {{ x = [0, 1, 2] }}\n"
        ),
    )
    .expect("the spec is written");
    let out = run(
        &["run", "long.toml", "--quiet", "--backend", "serial", "--deadline", "3s", "--deadline-margin", "1s"],
        dir.path(),
    );
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(75), "{stdout}{}", text(&out.stderr));
    assert!(!dir.path().join("starts").exists(), "no process started");
    let run_dir = common::result_dir(&dir.path().join("results"), "long");
    let log = std::fs::read_to_string(run_dir.join("operation.log")).unwrap_or_default();
    assert!(log.contains("would not end in time (its timeout: 10.0 s)"), "{log}");
    let spec = run_dir.join("operation.toml");
    let out = run(&["run", &spec.to_string_lossy(), "--resume", &run_dir.to_string_lossy(), "--quiet"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let starts = std::fs::read_to_string(dir.path().join("starts")).unwrap_or_default();
    assert_eq!(starts.lines().count(), 3, "{starts}");
}
