//! Reliability of the real `taskfarm-worker` binary: processes that segfault, abort the
//! subprocess, exit with a status or hang past their timeout are one row each with the right
//! status while the others finish; Ctrl-C drains, exits 130 and `--resume` finishes the run;
//! kill -9 of the worker mid-run loses nothing that `--resume` cannot finish.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backend_core::journal::read_journal;
use common::{
    first_run_dir, journaled_ids, result_dir, rows, spawn_worker, spawn_worker_silent, text, worker_no_panic as run,
};

/// Only to avoid hanging forever: nothing is asserted about time.
const PATIENCE: Duration = Duration::from_secs(120);

#[test]
fn every_failure_is_one_row_with_its_status_and_the_others_finish() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // 1 segfaults (the command), 2 hangs past its timeout, 3 kills its subprocess with SIGABRT,
    // 4 exits with status 3, 6 kills its subprocess with SIGKILL (as the out-of-memory killer
    // does); the others finish. (A SIGSEGV sent with kill(1) to a Rust program is swallowed by
    // its stack-overflow handler, so the real segfault here is the command's own.)
    std::fs::write(
        dir.path().join("faults.toml"),
        r#"kind = "command"
command = "case {x} in 1) kill -SEGV $$;; 2) sleep 60;; 3) kill -ABRT $PPID;; 4) exit 3;; 6) kill -KILL $PPID;; *) echo ok;; esac"
timeout = "2s"
retries = 1
isolation = "subprocess"
parameter_ranges = { x = [0, 1, 2, 3, 4, 5, 6, 7] }
"#,
    )
    .expect("the spec is written");
    // -vv: operation.log takes the commands' DEBUG lines too.
    let out = run(&["run", "faults.toml", "--quiet", "-vv"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}{}", text(&out.stdout), text(&out.stderr));
    let rows = rows(&result_dir(&dir.path().join("results"), "faults"));
    assert_eq!(rows.len(), 8);
    let expect = |id: u64, status: &str, reason: &str| {
        let (s, r) = &rows[&id];
        assert_eq!(s, status, "process {id}: {r}");
        assert!(r.contains(reason), "process {id}: {r}");
    };
    for id in [0, 5, 7] {
        expect(id, "finished", "");
    }
    expect(1, "crashed", "killed by signal 11 (SIGSEGV)");
    expect(2, "timed_out", "attempt 2: timed out after 2s");
    expect(3, "crashed", "attempt 2: its subprocess was killed by signal 6 (SIGABRT)");
    expect(4, "crashed", "attempt 1: the command `sh` exited with status 3; attempt 2:");
    expect(6, "crashed", "its subprocess was killed by signal 9 (SIGKILL)");
    let crashed = std::fs::read_to_string(result_dir(&dir.path().join("results"), "faults").join("crashed.jsonl"))
        .expect("crashed.jsonl");
    assert_eq!(crashed.lines().count(), 5, "every failed process has a crash record: {crashed}");
    // The children's log records reached the parent's operation.log, naming their process.
    let log = std::fs::read_to_string(result_dir(&dir.path().join("results"), "faults").join("operation.log"))
        .expect("operation.log");
    for id in [0, 5, 7] {
        assert!(log.contains(&format!(" process={id} taskfarm_worker::command: `sh` exited with status 0")), "{log}");
    }
}

#[test]
fn a_command_times_out_in_thread_isolation() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(
        dir.path().join("hang.toml"),
        "kind = \"command\"\ncommand = \"if [ {x} = 1 ]; then sleep 60; else echo ok; fi\"\ntimeout = 1.5\n\
         parameter_ranges = { x = [0, 1, 2] }\n",
    )
    .expect("the spec is written");
    let out = run(&["run", "hang.toml", "--quiet", "--backend", "serial"], dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let rows = rows(&result_dir(&dir.path().join("results"), "hang"));
    assert_eq!(rows[&1].0, "timed_out", "{:?}", rows[&1]);
    assert!(rows[&1].1.contains("ran past its timeout and was killed with its process group"), "{:?}", rows[&1]);
    assert_eq!((rows[&0].0.as_str(), rows[&2].0.as_str()), ("finished", "finished"));
}

/// A sweep of 24 short sleeping commands on 2 threads, started in `dir`.
fn start_sleepy_sweep(dir: &Path) -> Child {
    std::fs::write(
        dir.join("sleepy.toml"),
        "kind = \"command\"\ncommand = \"sleep 0.2; echo {x}\"\nparameter_ranges = { x = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, \
         10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23] }\n",
    )
    .expect("the spec is written");
    spawn_worker(&["run", "sleepy.toml", "--quiet", "--backend", "local", "--pool-size", "2"], dir)
}

/// Waits until the run's journal holds at least `n` records.
fn wait_for_records(base: &Path, n: usize) -> PathBuf {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < PATIENCE, "no {n} records in the journal");
        if let Some(run_dir) = first_run_dir(base, "sleepy") {
            if journaled_ids(&run_dir).len() >= n {
                return run_dir;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Resumes the run in `run_dir` and checks that every process is in results.csv exactly once.
fn resume_and_check(cwd: &Path, run_dir: &Path) {
    let as_run = run_dir.join("operation.toml");
    let out = run(&["run", &as_run.to_string_lossy(), "--resume", &run_dir.to_string_lossy(), "--quiet"], cwd);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let rows = rows(run_dir);
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), (0..24).collect::<Vec<_>>(), "every process once");
    assert!(rows.values().all(|(status, _)| status == "finished"), "{rows:?}");
    let csv = std::fs::read_to_string(run_dir.join("results.csv")).expect("results.csv");
    assert_eq!(csv.lines().count(), 25, "a header and one row per process");
}

#[test]
fn ctrl_c_drains_exits_130_and_resume_finishes_the_run() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let child = start_sleepy_sweep(dir.path());
    let run_dir = wait_for_records(&dir.path().join("results"), 2);
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
    assert!(kill.success());
    let out = child.wait_with_output().expect("the worker ends");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("interrupted") && stdout.contains("--resume"), "{stdout}");
    let journaled = read_journal(&run_dir.join("journal")).expect("the journal").records.len();
    assert!(journaled < 24, "the run stopped early ({journaled} records)");
    let consolidated = rows(&run_dir);
    assert_eq!(consolidated.len(), journaled, "every journaled record is in the consolidated files");
    resume_and_check(dir.path(), &run_dir);
}

#[test]
fn kill_9_mid_run_then_resume_runs_every_process_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut child = start_sleepy_sweep(dir.path());
    let run_dir = wait_for_records(&dir.path().join("results"), 3);
    child.kill().expect("SIGKILL");
    let _ = child.wait();
    resume_and_check(dir.path(), &run_dir);
}

/// The pids that the commands of a run wrote to `<id>.pid` files in `dir`, once `n` are there.
fn pids_written(dir: &Path, n: usize) -> Vec<u32> {
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < PATIENCE, "no {n} pid files in {}", dir.display());
        let pids: Vec<u32> = std::fs::read_dir(dir)
            .expect("the pid directory")
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok()?.trim().parse().ok())
            .collect();
        if pids.len() >= n {
            return pids;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` runs (a zombie does not count: it has ended).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Polls until none of `pids` runs; the ones still running after `within`.
fn still_running_after(pids: &[u32], within: Duration) -> Vec<u32> {
    let start = Instant::now();
    loop {
        let running: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if running.is_empty() || start.elapsed() > within {
            return running;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// kill -9 of the worker while its commands run: the commands (`sh` and the `sleep` it
/// started) and, with subprocess isolation, the worker's children die with it.
fn kill_9_leaves_no_process_behind(isolation: &str) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let pids = dir.path().join("pids");
    std::fs::create_dir(&pids).expect("the pid directory");
    // Each command writes the pids of its shell, of the shell's parent (the subprocess of
    // subprocess isolation, or the worker) and of its `sleep`, then waits.
    std::fs::write(
        dir.path().join("orphans.toml"),
        format!(
            "kind = \"command\"\ncommand = \"sleep 40 & echo $! > {pids}/{{x}}-sleep.pid; echo $$ > {pids}/{{x}}-sh.pid; \
             echo $PPID > {pids}/{{x}}-parent.pid; wait\"\nisolation = \"{isolation}\"\n\
             parameter_ranges = {{ x = [0, 1, 2, 3] }}\n",
            pids = pids.display()
        ),
    )
    .expect("the spec is written");
    let mut worker =
        spawn_worker_silent(&["run", "orphans.toml", "--quiet", "--backend", "local", "--pool-size", "2"], dir.path());
    // Two processes run at once, each with three pids.
    let mut started = pids_written(&pids, 6);
    worker.kill().expect("SIGKILL");
    let _ = worker.wait();
    started.retain(|&pid| pid != worker.id());
    let left = still_running_after(&started, Duration::from_secs(5));
    assert!(left.is_empty(), "still running after kill -9 of the worker: {left:?} of {started:?}");
}

#[test]
fn kill_9_of_the_worker_kills_its_commands() {
    kill_9_leaves_no_process_behind("thread");
}

#[test]
fn kill_9_of_the_worker_kills_its_subprocesses_and_their_commands() {
    kill_9_leaves_no_process_behind("subprocess");
}

#[test]
fn a_command_ends_when_its_shell_exits_although_a_background_process_holds_its_output() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // The timeout is far beyond what a shell that exits at once needs: a command that waited
    // for the background process would be recorded as timed out.
    std::fs::write(
        dir.path().join("background.toml"),
        "kind = \"command\"\ncommand = [\"sh\", \"-c\", \"case {x} in 0) sleep 30 & echo {x};; 1) setsid sleep 25 & \
         echo {x};; *) echo {x};; esac\"]\ntimeout = \"20s\"\nparameter_ranges = { x = [0, 1, 2] }\n",
    )
    .expect("the spec is written");
    let out = run(&["run", "background.toml", "--quiet", "--backend", "serial"], dir.path());
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    let run_dir = result_dir(&dir.path().join("results"), "background");
    let rows = rows(&run_dir);
    assert!(rows.values().all(|(status, _)| status == "finished"), "{rows:?}");
    for row in backend_core::results::read_results_jsonl(&run_dir).expect("results.jsonl") {
        let x = row["x"].as_i64().expect("x").to_string();
        assert_eq!(row["stdout"].as_str(), Some(x.as_str()), "the command's output: {row:?}");
    }
}

/// Set (to a results directory) for the program of the test below and its children.
const FORGETFUL_RESULTS: &str = "TASKFARM_TEST_FORGETFUL_RESULTS";

#[derive(serde::Serialize, serde::Deserialize)]
struct Echo(i64);

impl taskfarm::Process for Echo {
    type Output = i64;
    fn run(&self, _ctx: &taskfarm::ProcessContext<'_>) -> Result<i64, taskfarm::ProcessError> {
        Ok(self.0)
    }
}

/// A program that runs an operation with subprocess isolation but forgot to call
/// `run_child_if_requested` first: this test binary, run with only this test. Its children
/// (the same binary with the same arguments, see `CHILD_ARGS`) run this test again.
#[test]
fn __taskfarm_child() {
    use taskfarm::{Backend, Isolation, Operation, ParameterSpace, Value};
    let Some(base) = std::env::var_os(FORGETFUL_RESULTS) else { return };
    let space = ParameterSpace::ranges([("x", (0..200).map(Value::from).collect())]).expect("a space");
    let operation = Operation::sweep("forgetful", space, 1, |p, _| Echo(p["x"].as_i64().unwrap_or_default()))
        .expect("an operation")
        .with_results_base(PathBuf::from(base))
        .with_isolation(Isolation::Subprocess);
    let mut backend = taskfarm::LocalBackend::<Echo>::new(Some(2)).expect("a backend");
    match backend.run(operation) {
        Ok(summary) => println!("ran: {} finished, {} crashed", summary.finished, summary.crashed),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(2);
        }
    }
}

#[test]
fn a_program_that_forgets_run_child_if_requested_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let program = std::env::current_exe().expect("this test binary");
    let mut parent = Command::new(program)
        .args(backend_core::CHILD_ARGS)
        .env(FORGETFUL_RESULTS, dir.path())
        .env_remove(backend_core::CHILD_ENV)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    let start = Instant::now();
    while parent.try_wait().expect("the program runs").is_none() {
        if start.elapsed() > PATIENCE {
            let _ = parent.kill();
            panic!("the program did not end");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = parent.wait_with_output().expect("the program ends");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{}{stderr}", text(&out.stdout));
    assert!(stderr.contains("error: the subprocesses of this program do not run their process"), "{stderr}");
    assert!(stderr.contains("call `run_child_if_requested::<YourProcess>()` first in `main`"), "{stderr}");
    // No process is recorded as crashed for it.
    let run_dir = result_dir(dir.path(), "forgetful");
    assert!(read_journal(&run_dir.join("journal")).expect("the journal").records.is_empty());
    // Only the program wrote a result directory: no child got as far as starting an operation.
    let runs = std::fs::read_dir(dir.path().join("forgetful")).expect("the directory");
    assert_eq!(runs.flatten().filter(|e| !e.path().is_symlink()).count(), 1);
    // And no copy of the program is left.
    let marker = format!("{FORGETFUL_RESULTS}={}", dir.path().display());
    let copies = || -> Vec<u32> {
        std::fs::read_dir("/proc")
            .expect("/proc")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/environ"))
                    .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == marker.as_bytes()))
            })
            .filter(|&pid| alive(pid))
            .collect()
    };
    let start = Instant::now();
    while !copies().is_empty() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(copies(), Vec::<u32>::new(), "copies of the program still run");
}

/// Sleeps `self.0` milliseconds, ignoring any deadline.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sleepy(u64);

impl taskfarm::Process for Sleepy {
    type Output = u64;
    fn run(&self, _ctx: &taskfarm::ProcessContext<'_>) -> Result<u64, taskfarm::ProcessError> {
        std::thread::sleep(Duration::from_millis(self.0));
        Ok(self.0)
    }
}

/// Sleeps `self.0` milliseconds or until its deadline, which it reports as a timeout.
#[derive(serde::Serialize, serde::Deserialize)]
struct Watchful(u64);

impl taskfarm::Process for Watchful {
    type Output = u64;
    const ENFORCES_TIMEOUT: bool = true;
    fn run(&self, ctx: &taskfarm::ProcessContext<'_>) -> Result<u64, taskfarm::ProcessError> {
        let end = Instant::now() + Duration::from_millis(self.0);
        while Instant::now() < end {
            if ctx.deadline().is_some_and(|d| Instant::now() >= d) {
                return Err(taskfarm::ProcessError::timed_out("stopped at its deadline"));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(self.0)
    }
}

#[test]
fn a_library_timeout_that_nothing_enforces_is_refused_at_stage_in() {
    use taskfarm::{Backend, Operation, SerialBackend};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let operation = Operation::from_processes("sleepy", [Sleepy(0), Sleepy(300)])
        .expect("an operation")
        .with_results_base(dir.path())
        .with_timeout(Duration::from_millis(50));
    let error = SerialBackend::default().stage_in(operation).expect_err("the timeout cannot be enforced");
    let message = error.to_string();
    assert!(message.contains("a `timeout` cannot be enforced for process type `reliability::Sleepy` in thread isolation (a process running in a thread of the worker cannot be stopped)"), "{message}");
    assert!(message.contains("Isolation::Subprocess") && message.contains("ENFORCES_TIMEOUT"), "{message}");
    assert!(!dir.path().join("sleepy").exists(), "nothing was staged");

    // A process type that stops at its deadline itself may have a timeout in thread isolation.
    let operation = Operation::from_processes("watchful", [Watchful(0), Watchful(60_000)])
        .expect("an operation")
        .with_results_base(dir.path())
        .with_timeout(Duration::from_millis(50));
    let summary = SerialBackend::default().run(operation).expect("the run");
    assert_eq!((summary.finished, summary.crashed), (1, 1), "{summary:?}");
    let rows = rows(&summary.dir);
    assert_eq!(rows[&1].0, "timed_out", "{:?}", rows[&1]);
}

#[test]
fn parameters_read_by_a_wrong_name_or_type_are_errors_that_name_them() {
    use taskfarm::{Backend, Operation, ParameterSpace, ParamsExt, SerialBackend, Value};
    let dir = tempfile::tempdir().expect("a temporary directory");
    let space = || ParameterSpace::ranges([("x", vec![1, 2, 3])]).expect("a space");

    let misspelt = Operation::try_sweep("typed", space(), 1, |p, _| Ok(Echo(p.i64("xx")?)));
    let message = misspelt.expect_err("no parameter `xx`").to_string();
    assert_eq!(message, "there is no parameter `xx` (the parameters are: `x`): check its spelling");

    let wrong_type = Operation::try_sweep("typed", space(), 1, |p, _| Ok(Echo(p.str("x")?.len() as i64)));
    let message = wrong_type.expect_err("`x` is not a string").to_string();
    assert_eq!(message, "the parameter `x` is the integer 1, not a string");

    let negative = ParameterSpace::ranges([("seed", vec![-1])]).expect("a space");
    let out_of_range = Operation::try_sweep("typed", negative, 1, |p, _| Ok(Echo(i64::from(p.u32("seed")?))));
    let message = out_of_range.expect_err("-1 is not a u32").to_string();
    assert_eq!(message, "the parameter `seed` is the integer -1, not a whole number from 0 to 4294967295 (u32)");

    // A range of mixed types: the first processes run, then the run fails naming the one
    // that could not be made, with the records of the others kept.
    let mixed =
        ParameterSpace::ranges([("x", vec![Value::from(1), Value::from(2), Value::from("three")])]).expect("a space");
    let operation = Operation::try_sweep("typed", mixed, 1, |p, _| Ok(Echo(p.i64("x")?)))
        .expect("the first process is made")
        .with_results_base(dir.path());
    let message = SerialBackend::default().run(operation).expect_err("process 2 cannot be made").to_string();
    assert_eq!(
        message,
        "making process 2 of the operation failed, so no further process was started: the parameter `x` is the \
         string \"three\", not a whole number from -9223372036854775808 to 9223372036854775807 (i64)"
    );
    let run_dir = result_dir(dir.path(), "typed");
    assert_eq!(read_journal(&run_dir.join("journal")).expect("the journal").records.len(), 2);

    // Plain vectors of numbers are ranges, and integers of every width are values.
    let space = ParameterSpace::ranges([("alpha", vec![0.5_f64, 1.5])]).expect("a space of floats");
    assert_eq!(space.count().expect("a count"), 2);
    let widths = [Value::from(7_u8), Value::from(7_u16), Value::from(7_i16), Value::from(7_usize)];
    assert!(widths.iter().all(|v| *v == Value::Int(7)), "{widths:?}");
    assert_eq!(Value::from(u64::MAX), Value::UInt(u64::MAX));
}

/// A small tmpfs mounted at a directory while this lives (root only).
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// Mounts a tmpfs of `size` at `dir`, or says why it cannot.
    fn mount(dir: &Path, size: &str) -> Result<SmallDisk, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(text(&out.stderr));
        }
        Ok(SmallDisk(dir.to_owned()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_exits_3_with_the_resume_command_and_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // 100 processes with outputs of 4 KB each: a journal of about 420 KB, and as much again
    // for results.csv and results.jsonl.
    let xs: Vec<String> = (0..100).map(|x| x.to_string()).collect();
    std::fs::write(
        dir.path().join("full.toml"),
        format!(
            "kind = \"command\"\ncommand = [\"sh\", \"-c\", \"printf '{{{{\\\"pad\\\": \\\"%04000d\\\"}}}}\\\\n' {{x}}\"]\n\
             parameter_ranges = {{ x = [{}] }}\n",
            xs.join(", ")
        ),
    )
    .expect("the spec is written");
    // 200 KiB fills while the journal is written; 600 KiB while consolidating.
    for (size, failing) in [("200k", "journal"), ("600k", ".results.")] {
        let mount_point = dir.path().join(format!("disk-{size}"));
        let _disk = match SmallDisk::mount(&mount_point, size) {
            Ok(disk) => disk,
            Err(why) => {
                eprintln!("note: a full disk is not tested here: no tmpfs could be mounted ({why})");
                return;
            }
        };
        let out = run(
            &["run", "full.toml", "--quiet", "--backend", "serial", "--results", &mount_point.to_string_lossy()],
            dir.path(),
        );
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{size}: {stderr}");
        assert!(stderr.starts_with("error: could not write "), "{size}: {stderr}");
        assert!(stderr.contains(failing) && stderr.contains("No space left on device"), "{size}: {stderr}");
        let run_dir = result_dir(&mount_point, "full");
        let resume = format!("run {}/operation.toml --resume {}", run_dir.display(), run_dir.display());
        assert!(stderr.contains("to finish the run: ") && stderr.contains(&resume), "{size}: {stderr}");
        let left: Vec<String> = std::fs::read_dir(&run_dir)
            .expect("the run directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|name| name.ends_with(".tmp"))
            .collect();
        assert_eq!(left, Vec::<String>::new(), "{size}: temporary files are left");
        assert!(!read_journal(&run_dir.join("journal")).expect("the journal").records.is_empty(), "{size}");
    }
}

/// `parameters` ranges of `values` values each (0, 1, ...), constrained by `constraint`.
fn constrained_spec(parameters: usize, values: usize, constraint: &str, command: &str) -> String {
    let range: Vec<String> = (0..values).map(|v| v.to_string()).collect();
    let ranges: String = (0..parameters).map(|p| format!("p{p} = [{}]\n", range.join(", "))).collect();
    format!("kind = \"command\"\ncommand = {command:?}\nconstraints = [{constraint:?}]\n[parameter_ranges]\n{ranges}")
}

/// Waits for `child` to end, killing it past `limit` (a guard against hangs only).
fn wait_or_kill(mut child: Child, limit: Duration) -> std::process::Output {
    let start = Instant::now();
    while child.try_wait().expect("the worker runs").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("the worker ends");
            panic!("the worker did not end within {limit:?}: {}", text(&out.stderr));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the worker ends")
}

#[test]
fn a_constrained_space_of_10_to_the_18_starts_at_once_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("huge.toml"), constrained_spec(9, 100, "p8 < 5", "sleep 0.05; echo {p8}"))
        .expect("the spec is written");
    let child = spawn_worker(&["run", "huge.toml", "--backend", "local", "--pool-size", "1"], dir.path());
    // Records arrive although the processes were never counted (10^18 combinations).
    let start = Instant::now();
    let run_dir = loop {
        if start.elapsed() > Duration::from_secs(60) {
            let out = wait_or_kill(child, Duration::ZERO);
            panic!("no process ran within 60 s: {}", text(&out.stderr));
        }
        if let Some(run_dir) = first_run_dir(&dir.path().join("results"), "huge") {
            if journaled_ids(&run_dir).len() >= 3 {
                break run_dir;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs").success());
    let out = wait_or_kill(child, Duration::from_secs(60));
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(143), "{stdout}{stderr}");
    assert!(stdout.contains("interrupted") && stdout.contains("--resume"), "{stdout}");
    // The progress lines said what was known: at least the processes started so far.
    assert!(stderr.contains("/at least "), "{stderr}");
    let rows = rows(&run_dir);
    assert!(rows.len() >= 3 && rows.values().all(|(status, _)| status == "finished"), "{rows:?}");
}

#[test]
fn sigterm_while_counting_ends_the_program_at_once() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    std::fs::write(dir.path().join("count.toml"), constrained_spec(8, 10, "p0 < 5", "true")).expect("the spec");
    let child = spawn_worker(&["validate", "count.toml"], dir.path());
    std::thread::sleep(Duration::from_millis(500));
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs").success());
    let out = wait_or_kill(child, Duration::from_secs(60));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("taskfarm: SIGTERM: stopped before any process started"), "{stderr}");
    assert!(!stderr.contains("waiting for the running ones"), "{stderr}");
}
