//! The MPI side of the xtask: `cargo xtask mpirun` (the release worker under mpirun, or in
//! a Slurm allocation; `--per-node`: one worker rank per host with a thread per core) and
//! the MPI tests that `cargo xtask test` runs under a real mpirun.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{cargo, release_worker, root, run_checked, target_dir, Tally};

mod persistent;

/// How to get MPI, said whenever mpirun is missing.
const INSTALL_HINT: &str =
    "install Open MPI (Debian/Ubuntu: `sudo apt-get install libopenmpi-dev openmpi-bin libclang-dev`); \
     on a cluster, load its MPI first (e.g. `module load openmpi`)";

/// Arguments of `cargo xtask mpirun -n N [--hostfile FILE] [--oversubscribe] [--dry-run] -- run SPEC [worker args]`.
#[derive(Debug, clap::Args)]
pub struct MpirunArgs {
    /// How many ranks (rank 0 is the master). Inside a Slurm allocation, default: the allocation.
    #[arg(short = 'n', long = "np")]
    pub ranks: Option<u32>,
    /// A hostfile for mpirun (the hosts and slots to run on).
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
    /// Allows more ranks than cores (Open MPI).
    #[arg(long)]
    pub oversubscribe: bool,
    /// One worker rank per host, each with a thread per core (`--threads-per-rank`), plus
    /// the master (rank 0), which shares the first host: see [`per_node_layout`].
    #[arg(long, conflicts_with = "ranks")]
    pub per_node: bool,
    /// Prints the command instead of running it.
    #[arg(long)]
    pub dry_run: bool,
    /// Arguments passed to the worker binary, e.g. `run SPEC --results DIR`.
    #[arg(last = true)]
    pub worker_args: Vec<String>,
}

/// Whether MPI is here to build and run with: `mpirun` and `mpicc` on PATH.
pub fn found() -> bool {
    on_path("mpirun").is_some() && on_path("mpicc").is_some()
}

/// Runs the release worker under mpirun; returns its exit code.
pub fn mpirun(args: MpirunArgs) -> Result<i32> {
    if args.worker_args.is_empty() {
        bail!("say what the worker runs after `--`, e.g. `cargo xtask mpirun -n 4 -- run examples/specs/sweep.toml`");
    }
    let mut command = launch(&args)?;
    if args.dry_run {
        println!("{}", describe(&command));
        return Ok(0);
    }
    build_worker()?;
    eprintln!("xtask: {}", describe(&command));
    let status = command.status().with_context(|| format!("could not start {}", describe(&command)))?;
    Ok(status.code().unwrap_or(1))
}

/// Builds the release worker with MPI; returns its path.
pub(crate) fn build_worker() -> Result<PathBuf> {
    run_checked(
        cargo().args(["build", "--release", "-p", "taskfarm-worker", "--features", "mpi"]),
        "build the release worker with MPI",
    )?;
    Ok(release_worker())
}

/// The launcher command for `args`: mpirun with the environment that suits this machine.
fn launch(args: &MpirunArgs) -> Result<Command> {
    let mpirun = match on_path("mpirun") {
        Some(path) => path,
        None if args.dry_run => PathBuf::from("mpirun"),
        None => bail!("mpirun was not found on PATH: {INSTALL_HINT}"),
    };
    let in_slurm = std::env::var_os("SLURM_JOB_ID").is_some();
    let mut command = Command::new(mpirun);
    if args.per_node {
        let layout = per_node_layout(args.hostfile.as_deref(), in_slurm)?;
        if let Some(hostfile) = &args.hostfile {
            command.arg("--hostfile").arg(hostfile);
        }
        command.arg("-n").arg(layout.ranks.to_string());
        // Round-robin over the hosts: rank 0 (the master) and rank 1 on the first, one rank
        // on each other; no binding, so a rank's threads may use every core of its host.
        command.args(["--map-by", "node", "--bind-to", "none"]);
        mpi_environment(&mut command, true);
        command.arg(release_worker());
        let mut worker = worker_args(&args.worker_args);
        let names_threads = worker.iter().any(|a| a == "--threads-per-rank" || a.starts_with("--threads-per-rank="));
        if worker.first().is_some_and(|a| a == "run") && !names_threads {
            worker.extend(["--threads-per-rank".into(), layout.threads.to_string()]);
        }
        command.args(worker);
        command.current_dir(std::env::current_dir().unwrap_or_else(|_| root()));
        eprintln!("xtask: --per-node: {}", layout.why);
        return Ok(command);
    }
    match (args.ranks, in_slurm) {
        (Some(0), _) => bail!("-n must be at least 1 (rank 0 is the master; with 1 rank it runs everything itself)"),
        (Some(n), _) => {
            command.arg("-n").arg(n.to_string());
        }
        // mpirun without -n starts one rank per slot of the Slurm allocation.
        (None, true) => {}
        (None, false) => bail!("say how many ranks with -n N (outside a Slurm allocation there is no default)"),
    }
    if let Some(hostfile) = &args.hostfile {
        if !hostfile.is_file() {
            bail!("the hostfile {} does not exist", hostfile.display());
        }
        command.arg("--hostfile").arg(hostfile);
    }
    mpi_environment(&mut command, args.oversubscribe);
    command.arg(release_worker());
    command.args(worker_args(&args.worker_args));
    command.current_dir(std::env::current_dir().unwrap_or_else(|_| root()));
    Ok(command)
}

/// What `--per-node` chose: how many ranks, threads per worker rank, and why.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PerNode {
    /// Ranks to start: one worker per host, plus the master.
    pub(crate) ranks: usize,
    /// Threads of each worker rank: the cores of a host.
    pub(crate) threads: usize,
    /// A sentence saying where the numbers come from.
    pub(crate) why: String,
}

/// The per-node layout: one worker rank per host and the master (rank 0), which mostly
/// sleeps between messages and so shares the first host with that host's worker rank.
///
/// - Hostfile: its hosts (one per non-comment line); threads = the smallest `slots=N`
///   among them (a hostfile's slots are its cores), or this machine's cores when no line
///   says.
/// - Slurm allocation: `SLURM_JOB_NUM_NODES` hosts; threads = `SLURM_CPUS_ON_NODE`, or
///   this machine's cores.
/// - Neither: this machine: `-n 2` (the master and one worker rank with every core).
pub(crate) fn per_node_layout(hostfile: Option<&Path>, in_slurm: bool) -> Result<PerNode> {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if let Some(hostfile) = hostfile {
        let text = std::fs::read_to_string(hostfile)
            .with_context(|| format!("could not read the hostfile {}", hostfile.display()))?;
        let (hosts, slots) = hostfile_hosts(&text);
        if hosts == 0 {
            bail!("the hostfile {} names no host", hostfile.display());
        }
        let (threads, source) = match slots {
            Some(n) => (n, "the smallest `slots=` of the hostfile".to_owned()),
            None => (cores, format!("this machine's {cores} cores (no `slots=` in the hostfile)")),
        };
        let why =
            format!("{hosts} host(s) of the hostfile: {} ranks, {threads} threads per rank from {source}", hosts + 1);
        return Ok(PerNode { ranks: hosts + 1, threads, why });
    }
    if in_slurm {
        let number = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<usize>().ok());
        let hosts = number("SLURM_JOB_NUM_NODES").or(number("SLURM_NNODES")).unwrap_or(1).max(1);
        let (threads, source) = match number("SLURM_CPUS_ON_NODE") {
            Some(n) => (n.max(1), "SLURM_CPUS_ON_NODE"),
            None => (cores, "this machine's cores"),
        };
        let why = format!(
            "{hosts} node(s) of the Slurm allocation: {} ranks, {threads} threads per rank from {source}",
            hosts + 1
        );
        return Ok(PerNode { ranks: hosts + 1, threads, why });
    }
    let why =
        format!("no hostfile or Slurm allocation: this machine, the master and one worker rank with its {cores} cores");
    Ok(PerNode { ranks: 2, threads: cores, why })
}

/// The hosts of an Open MPI hostfile (one per line, `#` comments) and the smallest
/// `slots=N` among them, if any line has one.
fn hostfile_hosts(text: &str) -> (usize, Option<usize>) {
    let mut hosts = BTreeSet::new();
    let mut slots: Option<usize> = None;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        let mut words = line.split_whitespace();
        let Some(host) = words.next() else { continue };
        hosts.insert(host.to_owned());
        for word in words {
            if let Some(n) = word.strip_prefix("slots=").and_then(|n| n.parse::<usize>().ok()) {
                slots = Some(slots.map_or(n, |s| s.min(n)).max(1));
            }
        }
    }
    (hosts.len(), slots)
}

/// `run SPEC ...` gets `--backend mpi` unless it names a backend.
fn worker_args(args: &[String]) -> Vec<String> {
    let mut args = args.to_vec();
    let names_backend = args.iter().any(|a| a == "--backend" || a.starts_with("--backend="));
    if args.first().is_some_and(|a| a == "run") && !names_backend {
        args.extend(["--backend".into(), "mpi".into()]);
    }
    args
}

/// Environment for Open MPI (ignored by other MPIs); a variable the user set is kept.
pub(crate) fn mpi_environment(command: &mut Command, oversubscribe: bool) {
    let mut set = |name: &str, value: &str| {
        if std::env::var_os(name).is_none() {
            command.env(name, value);
        }
    };
    // Ranks waiting in a blocking call yield the core (the backend itself polls with sleeps).
    set("OMPI_MCA_mpi_yield_when_idle", "1");
    if running_as_root() {
        set("OMPI_ALLOW_RUN_AS_ROOT", "1");
        set("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    }
    if oversubscribe {
        set("OMPI_MCA_rmaps_base_oversubscribe", "1");
    }
    // On a signal (or a lost rank) mpirun sends the ranks SIGTERM and, this many seconds
    // later, SIGKILL (Open MPI's default is 1): the master takes in results for a second
    // after the signal, then reports and consolidates, which takes more than 1 s in all.
    set("OMPI_MCA_odls_base_sigkill_timeout", "5");
    if in_container() {
        set("OMPI_MCA_btl_vader_single_copy_mechanism", "none");
    }
}

/// Whether the effective user is root (from `/proc/self/status`).
pub(crate) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?.to_owned();
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

fn in_container() -> bool {
    Path::new("/.dockerenv").exists()
        || Path::new("/run/.containerenv").exists()
        || std::fs::read_to_string("/proc/1/cgroup")
            .map(|c| ["docker", "kubepods", "lxc", "containerd"].iter().any(|k| c.contains(k)))
            .unwrap_or(false)
}

pub(crate) fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

/// The command as a shell line, environment first.
fn describe(command: &Command) -> String {
    let mut words: Vec<String> = command
        .get_envs()
        .filter_map(|(name, value)| Some(format!("{}={}", name.to_string_lossy(), value?.to_string_lossy())))
        .collect();
    words.push(command.get_program().to_string_lossy().into_owned());
    words.extend(command.get_args().map(|a| {
        let a = a.to_string_lossy();
        if a.contains(' ') {
            format!("'{a}'")
        } else {
            a.into_owned()
        }
    }));
    words.join(" ")
}

/// Builds and runs the MPI tests under mpirun when it is found (a failure under CI when not).
pub fn test(ci: bool) -> Result<()> {
    if !found() {
        if ci {
            bail!("the MPI tests must run under CI but mpirun/mpicc were not found: {INSTALL_HINT}");
        }
        eprintln!("xtask: skipping MPI tests: mpirun not found ({INSTALL_HINT})");
        return Ok(());
    }
    let scenarios = scenario_binary()?;
    let scratch = std::env::temp_dir().join(format!("taskfarm-xtask-mpi-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("could not create {}", scratch.display()))?;
    let mut tally = Tally::new("mpi");
    for ranks in [1, 2, 3, 5] {
        let outcome = run_case(&scratch, ranks, &scenarios, &["conformance"]);
        tally.check(&format!("conformance against serial, {ranks} rank(s)"), outcome, |o| {
            expect_success(o)?;
            expect_in(&o.stdout, "same as serial")
        });
    }
    for (ranks, threads) in [(2, "2"), (3, "2"), (2, "4"), (3, "4")] {
        let outcome = run_case(&scratch, ranks, &scenarios, &["conformance", threads]);
        tally.check(&format!("conformance against serial, {ranks} ranks × {threads} threads"), outcome, |o| {
            expect_success(o)?;
            expect_in(&o.stdout, "same as serial")
        });
    }
    for (ranks, threads) in [(2, "4"), (3, "2")] {
        let outcome = run_case(&scratch, ranks, &scenarios, &["hybrid", threads]);
        let name = format!(
            "2-thread processes, crash, timeout, retry: same as serial, {ranks} ranks × {threads} threads{}",
            if ranks > 2 { ", each retry on another rank" } else { "" }
        );
        tally.check(&name, outcome, |o| {
            expect_success(o)?;
            expect_in(&o.stdout, "same as serial")?;
            if ranks > 2 {
                expect_in(&o.stdout, "retries ran on another rank")?;
            }
            Ok(())
        });
    }
    let outcome = run_case(&scratch, 2, &scenarios, &["too-many-threads", "2"]);
    tally.check("processes asking for more threads than a rank has: every rank ends with an error", outcome, |o| {
        expect_failure(o)?;
        expect_in(&o.stderr, "each MPI worker rank has 2")
    });
    let outcome = run_case(&scratch, 4, &scenarios, &["exactly-once"]);
    tally.check("1198 tiny processes, each exactly once, 4 ranks", outcome, expect_success);
    let outcome = run_case(&scratch, 3, &scenarios, &["unwritable"]);
    tally.check("a master that cannot write its results ends every rank, non-zero exit", outcome, |o| {
        expect_failure(o)?;
        expect_in(&o.stderr, "is a file, not a directory")
    });
    let outcome = run_case(&scratch, 3, &scenarios, &["stray-panic"]);
    tally.check("a panic outside any process aborts the job", outcome, |o| {
        expect_failure(o)?;
        expect_in(&o.stderr, "aborting the MPI job")
    });
    spmd_example(&scratch, &mut tally);
    match build_worker() {
        Ok(worker) => {
            worker_end_to_end(&scratch, &mut tally, ci, &worker);
            persistent::cases(&scratch, &mut tally, &worker);
            ranks_against_threads(&scratch, &mut tally);
            scheduling(&scratch, &mut tally);
            worker_rank_killed(&scratch, &mut tally);
            signals_mid_run(&scratch, &mut tally);
        }
        Err(e) => tally.record("build the release worker with MPI for the worker tests", Err(e)),
    }
    let _ = std::fs::remove_dir_all(&scratch);
    tally.finish()
}

/// Builds backend-mpi's MPI test program and returns its path.
pub(crate) fn scenario_binary() -> Result<PathBuf> {
    eprintln!("xtask: build the MPI tests (cargo test -p taskfarm-backend-mpi --no-run)");
    let output = cargo()
        .args(["test", "-p", "taskfarm-backend-mpi", "--test", "mpi_scenarios", "--no-run", "--message-format=json"])
        .stderr(Stdio::inherit())
        .output()
        .context("could not start cargo")?;
    if !output.status.success() {
        bail!("building the MPI tests failed ({})", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .filter(|line| line.contains("\"name\":\"mpi_scenarios\""))
        .find_map(|line| json_string_after(line, "\"executable\":\""))
        .map(PathBuf::from)
        .context("cargo did not name the mpi_scenarios test program")
}

/// The JSON string value that starts right after `key` in `line` (escapes `\\` and `\"` only).
fn json_string_after(line: &str, key: &str) -> Option<String> {
    let rest = &line[line.find(key)? + key.len()..];
    let mut value = String::new();
    let mut chars = rest.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(value),
            '\\' => value.push(chars.next()?),
            c => value.push(c),
        }
    }
    None
}

/// What one run of a command (under mpirun, or on the test cluster) came to.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The exit code; `None` when a signal ended the command.
    pub(crate) code: Option<i32>,
    /// What it printed on stdout.
    pub(crate) stdout: String,
    /// What it printed on stderr.
    pub(crate) stderr: String,
    /// From its start to its end.
    pub(crate) elapsed: Duration,
    /// Whether it ran past its timeout and was killed.
    pub(crate) timed_out: bool,
}

/// The longest any MPI test may take: beyond, it hangs, which is a failure.
const CASE_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs `program args` under `mpirun -n ranks` (oversubscribed), output to files, with a timeout.
fn run_case(scratch: &Path, ranks: u32, program: &Path, args: &[&str]) -> Result<Outcome> {
    let mpirun = on_path("mpirun").context(format!("mpirun was not found on PATH: {INSTALL_HINT}"))?;
    let mut command = Command::new(mpirun);
    command.arg("-n").arg(ranks.to_string());
    mpi_environment(&mut command, true);
    command.arg(program).args(args).current_dir(scratch);
    run_with_timeout(scratch, command)
}

fn run_with_timeout(scratch: &Path, command: Command) -> Result<Outcome> {
    let line = describe(&command);
    eprintln!("xtask: {line}");
    let outcome = run_to_files(scratch, "case", command, CASE_TIMEOUT, |_| Ok(()))?;
    if outcome.timed_out {
        bail!("`{line}` hung: no end after {}s\n{}", CASE_TIMEOUT.as_secs(), tail(&outcome.stderr));
    }
    Ok(outcome)
}

/// Runs `command` with stdin closed and its output to `<name>.stdout` and `<name>.stderr` in
/// `dir`, for at most `timeout`: past it the command gets SIGTERM (mpirun takes its ranks
/// down on it; SIGKILL would leave them), and SIGKILL 5 s later if it is still there.
/// `during` is called every 50 ms with the time since the start (to act on the run from
/// outside); its error ends the command (SIGTERM) and is returned.
pub(crate) fn run_to_files(
    dir: &Path,
    name: &str,
    mut command: Command,
    timeout: Duration,
    mut during: impl FnMut(Duration) -> Result<()>,
) -> Result<Outcome> {
    let line = describe(&command);
    let (out_path, err_path) = (dir.join(format!("{name}.stdout")), dir.join(format!("{name}.stderr")));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("could not start {line}"))?;
    let start = Instant::now();
    let (status, timed_out) = loop {
        if let Some(status) = child.try_wait()? {
            break (Some(status), false);
        }
        if start.elapsed() >= timeout {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let grace = Instant::now();
            while grace.elapsed() < Duration::from_secs(5) && child.try_wait()?.is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            break (child.wait().ok(), true);
        }
        if let Err(e) = during(start.elapsed()) {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
            let _ = child.wait();
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Outcome {
        code: status.and_then(|s| s.code()),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed: start.elapsed(),
        timed_out,
    })
}

/// The end of a program's output, after the message of any panic (which a backtrace would
/// otherwise push out of view).
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut shown: Vec<&str> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.contains("panicked at") {
            shown.extend(lines[i..(i + 3).min(lines.len())].iter());
        }
    }
    shown.extend(lines[lines.len().saturating_sub(15)..].iter());
    shown.join("\n")
}

fn expect_success(outcome: &Outcome) -> Result<()> {
    if outcome.code != Some(0) {
        bail!("exit code {:?}, expected 0\n{}", outcome.code, tail(&outcome.stderr));
    }
    Ok(())
}

fn expect_failure(outcome: &Outcome) -> Result<()> {
    if outcome.code == Some(0) {
        bail!("exit code 0, expected a failure\n{}", tail(&outcome.stderr));
    }
    Ok(())
}

fn expect_in(text: &str, needle: &str) -> Result<()> {
    if !text.contains(needle) {
        bail!("expected `{needle}` in the output\n{}", tail(text));
    }
    Ok(())
}

impl Tally {
    /// Records an MPI case: its run, then `verdict` on what it printed.
    fn check(&mut self, name: &str, outcome: Result<Outcome>, verdict: impl FnOnce(&Outcome) -> Result<()>) {
        self.record(name, outcome.and_then(|o| verdict(&o)));
    }
}

/// The library user's example: one `main` for every rank.
fn spmd_example(scratch: &Path, tally: &mut Tally) {
    let name = "the spmd example under mpirun, 3 ranks";
    let built = run_checked(
        cargo().args(["build", "-p", "examples", "--example", "spmd", "--features", "mpi"]),
        "build the spmd example with MPI",
    );
    let outcome = built.and_then(|()| {
        let spmd = target_dir().join("debug").join("examples").join("spmd");
        run_case(scratch, 3, &spmd, &[&path_arg(scratch)])
    });
    tally.check(name, outcome, |o| {
        expect_success(o)?;
        expect_in(&o.stdout, "processes finished")?;
        // The workers' log records travelled to the master's operation.log.
        let log = std::fs::read_dir(scratch.join("oscillator"))?
            .flatten()
            .map(|run| run.path().join("operation.log"))
            .find(|log| log.is_file())
            .context("the spmd run has an operation.log")?;
        let text = std::fs::read_to_string(&log)?;
        for rank in ["rank-1", "rank-2"] {
            if !text.contains(&format!(" {rank} process=")) {
                bail!("{} has no record of {rank}:\n{text}", log.display());
            }
        }
        Ok(())
    });
}

/// The worker binary through `cargo xtask mpirun`, against `--backend serial` on the same spec.
fn worker_end_to_end(scratch: &Path, tally: &mut Tally, ci: bool, worker: &Path) {
    let name = "taskfarm-worker through cargo xtask mpirun -n 4, same results.csv as serial";
    let Some(spec) = sweep_spec() else {
        if ci {
            tally.record(name, Err(anyhow::anyhow!("no spec in examples/specs/ to run")));
        } else {
            eprintln!("xtask: skipping the worker end-to-end MPI test: no spec in examples/specs/");
        }
        return;
    };
    let outcome = (|| -> Result<(Outcome, Outcome)> {
        let (mpi_dir, serial_dir) = (scratch.join("mpi-results"), scratch.join("serial-results"));
        let args = oversubscribed(
            4,
            vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&mpi_dir), "--quiet".into()],
        );
        let mpi = run_with_timeout(scratch, launch(&args)?)?;
        let mut serial = Command::new(worker);
        serial.arg("run").arg(&spec).args(["--backend", "serial", "--quiet", "--results"]).arg(&serial_dir);
        let serial = run_with_timeout(scratch, serial)?;
        expect_success(&mpi)?;
        expect_success(&serial)?;
        compare_results(&serial_dir, &mpi_dir)?;
        Ok((mpi, serial))
    })();
    tally.record(name, outcome.map(drop));
}

/// The same sweep through the worker binary with `-n 5` × 1 thread and `-n 2` × 4 threads
/// gives the same rows.
fn ranks_against_threads(scratch: &Path, tally: &mut Tally) {
    let name = "taskfarm-worker: -n 5 × 1 thread and -n 2 × 4 threads give the same results.csv";
    let Some(spec) = sweep_spec() else {
        eprintln!("xtask: skipping {name}: no spec in examples/specs/");
        return;
    };
    let outcome = (|| -> Result<Outcome> {
        let run = |ranks: u32, threads: &str, dir: &Path| -> Result<Outcome> {
            let args = oversubscribed(
                ranks,
                vec![
                    "run".into(),
                    path_arg(&spec),
                    "--results".into(),
                    path_arg(dir),
                    "--threads-per-rank".into(),
                    threads.into(),
                    "--quiet".into(),
                ],
            );
            let outcome = run_with_timeout(scratch, launch(&args)?)?;
            expect_success(&outcome)?;
            Ok(outcome)
        };
        let (ranks_dir, threads_dir) = (scratch.join("ranks-results"), scratch.join("threads-results"));
        run(5, "1", &ranks_dir)?;
        let outcome = run(2, "4", &threads_dir)?;
        compare_results(&ranks_dir, &threads_dir)?;
        let text = std::fs::read_to_string(find_results_csv(&threads_dir)?)?;
        if !text.contains("rank-1/thread-") {
            bail!("with 4 threads per rank the worker column should name the threads");
        }
        Ok(outcome)
    })();
    tally.record(name, outcome.map(drop));
}

/// One row of a scheduling case: the process's `s` parameter (how long it sleeps), the rank
/// that ran it (`rank-2` of `rank-2/thread-1`) and when it started.
struct Ran {
    s: f64,
    rank: String,
    started_at: f64,
}

/// Runs `sh -c "sleep {s}; echo {s}"` for each of `sleeps` through the worker under
/// `mpirun -n ranks` with `extra` arguments (and `threads` per process), and returns its rows.
fn run_sleeps(
    scratch: &Path,
    name: &str,
    ranks: u32,
    sleeps: &[f64],
    threads: u32,
    extra: &[&str],
) -> Result<Vec<Ran>> {
    let spec = scratch.join(format!("{name}.toml"));
    let settings: Vec<String> = sleeps.iter().map(|s| format!("{{s = {s:?}}}")).collect();
    std::fs::write(
        &spec,
        format!(
            "name = \"{name}\"\nkind = \"command\"\nthreads = {threads}\n\
             command = [\"sh\", \"-c\", \"sleep {{s}}; echo {{s}}\"]\nparameter_settings = [{}]\n",
            settings.join(", ")
        ),
    )?;
    let results = scratch.join(format!("{name}-results"));
    let mut args = vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&results), "--quiet".into()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let outcome = run_with_timeout(scratch, launch(&oversubscribed(ranks, args))?)?;
    expect_success(&outcome)?;
    let (header, rows) = read_results(&results)?;
    let column = |name: &str| header.iter().position(|h| h == name).with_context(|| format!("no {name} column"));
    let (s, worker, started) = (column("s")?, column("worker")?, column("started_at")?);
    let field = |row: &Vec<String>, i: usize| row.get(i).cloned().unwrap_or_default();
    let ran: Vec<Ran> = rows
        .iter()
        .map(|row| -> Result<Ran> {
            Ok(Ran {
                s: field(row, s).parse().context("s is not a number")?,
                rank: field(row, worker).split('/').next().unwrap_or_default().to_owned(),
                started_at: field(row, started).parse().context("started_at is not a number")?,
            })
        })
        .collect::<Result<_>>()?;
    if ran.len() != sleeps.len() {
        bail!("{} rows for {} processes", ran.len(), sleeps.len());
    }
    Ok(ran)
}

/// The ranks that ran the processes sleeping `s` seconds.
fn ranks_of(ran: &[Ran], s: f64) -> Vec<&str> {
    ran.iter().filter(|r| r.s == s).map(|r| r.rank.as_str()).collect()
}

/// The master's scheduling, checked by where processes ran (never by how long the run took):
/// breadth-first dealing, long processes side by side, windows counted in threads.
fn scheduling(scratch: &Path, tally: &mut Tally) {
    let distinct = |ranks: &[&str]| ranks.iter().collect::<std::collections::BTreeSet<_>>().len();
    for prefetch in ["1", "2"] {
        let name = format!("two 2 s processes among tiny ones ran on different ranks, -n 3 --prefetch {prefetch}");
        let outcome = run_sleeps(
            scratch,
            &format!("long-among-tiny-{prefetch}"),
            3,
            &[0.0, 0.0, 2.0, 2.0, 0.0, 0.0],
            1,
            &["--prefetch", prefetch],
        )
        .and_then(|ran| match ranks_of(&ran, 2.0).as_slice() {
            [a, b] if a != b => Ok(()),
            ranks => bail!("the 2 s processes ran on {ranks:?}"),
        });
        tally.record(&name, outcome);
    }
    let name = "3 × sleep 1 on 3 worker ranks: one on each, -n 4";
    let outcome = run_sleeps(scratch, "breadth-first", 4, &[1.0, 1.0, 1.0], 1, &[]).and_then(|ran| {
        let ranks = ranks_of(&ran, 1.0);
        if distinct(&ranks) != 3 {
            bail!("the three ran on {ranks:?}");
        }
        Ok(())
    });
    tally.record(name, outcome);
    let name = "4 × sleep 1 on 2 worker ranks with --prefetch 4: two on each";
    let outcome =
        run_sleeps(scratch, "breadth-first-prefetch", 3, &[1.0; 4], 1, &["--prefetch", "4"]).and_then(|ran| {
            let ranks = ranks_of(&ran, 1.0);
            if ranks.first().is_none_or(|first| ranks.iter().filter(|r| *r == first).count() != 2) {
                bail!("the four ran on {ranks:?}");
            }
            Ok(())
        });
    tally.record(name, outcome);
    let name = "2-thread processes on 2-thread ranks: none waits on the rank of a 3 s process, -n 3";
    let outcome =
        run_sleeps(scratch, "thread-window", 3, &[0.1, 3.0, 0.5, 0.5, 0.5, 0.5], 2, &["--threads-per-rank", "2"])
            .and_then(|ran| {
                let long = ran.iter().find(|r| r.s == 3.0).context("no 3 s process")?;
                let behind: Vec<f64> =
                    ran.iter().filter(|r| r.rank == long.rank && r.started_at > long.started_at).map(|r| r.s).collect();
                if !behind.is_empty() {
                    bail!("processes of {behind:?} s ran on {} after its 3 s process", long.rank);
                }
                Ok(())
            });
    tally.record(name, outcome);
}

/// kill -9 of one worker rank mid-run: the job ends non-zero (as MPI jobs do), the journal
/// keeps what finished, and `--resume` on fewer ranks runs every process exactly once.
fn worker_rank_killed(scratch: &Path, tally: &mut Tally) {
    let name = "kill -9 of a worker rank mid-run, then --resume: every process exactly once";
    let total = 120;
    let outcome = (|| -> Result<Outcome> {
        let spec = scratch.join("killed_rank.toml");
        std::fs::write(
            &spec,
            format!(
                "name = \"killed_rank\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 0.05; echo {{x}}\"]\n\
                 [parameter_ranges]\nx = [{}]\n",
                (0..total).map(|x| x.to_string()).collect::<Vec<_>>().join(", ")
            ),
        )?;
        let results = scratch.join("killed-results");
        let run_args = vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&results), "--quiet".into()];
        let command = launch(&oversubscribed(4, run_args))?;
        eprintln!("xtask: {}", describe(&command));
        // Once some records are journaled, kill -9 the worker rank 2.
        let mut victim = None;
        let killed = run_to_files(scratch, "killed", command, Duration::from_secs(120), |_| {
            if victim.is_none() && journal_len(&results) > 4_000 {
                let pid = rank_pid(2, &path_arg(&spec)).context("no process of MPI rank 2 was found")?;
                eprintln!("xtask:   kill -9 of rank 2 (pid {pid})");
                Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
                victim = Some(pid);
            }
            Ok(())
        })?;
        if victim.is_none() {
            bail!("the run ended or stalled before 4 kB of records were journaled");
        }
        if killed.timed_out {
            bail!("the job did not end after one of its ranks was killed");
        }
        if killed.code == Some(0) {
            bail!("the job exited 0 after one of its ranks was killed");
        }
        let dir = run_dir(&results)?;
        let resume = vec![
            "run".into(),
            path_arg(&dir.join("operation.toml")),
            "--resume".into(),
            path_arg(&dir),
            "--quiet".into(),
        ];
        let outcome = run_with_timeout(scratch, launch(&oversubscribed(3, resume))?)?;
        expect_success(&outcome)?;
        let (_, rows) = read_results(&dir)?;
        let ids: std::collections::BTreeSet<&str> = rows.iter().filter_map(|r| r.first().map(String::as_str)).collect();
        if rows.len() != total || ids.len() != total {
            bail!("after --resume: {} rows and {} distinct ids, expected {total}", rows.len(), ids.len());
        }
        Ok(outcome)
    })();
    tally.record(name, outcome.map(drop));
}

/// The pid of the process of MPI rank `rank` (from `OMPI_COMM_WORLD_RANK` in its
/// environment) whose command line names `marker` (so no other job's rank is taken).
fn rank_pid(rank: u32, marker: &str) -> Option<u32> {
    let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.contains("taskfarm-worker") || !cmdline.contains(marker) {
            return None;
        }
        let environ = std::fs::read(entry.path().join("environ")).ok()?;
        environ.split(|&b| b == 0).any(|var| var == wanted.as_bytes()).then_some(pid)
    })
}

/// `cargo xtask mpirun -n ranks --oversubscribe -- worker_args`, as the worker tests launch it.
fn oversubscribed(ranks: u32, worker_args: Vec<String>) -> MpirunArgs {
    MpirunArgs { ranks: Some(ranks), hostfile: None, oversubscribe: true, per_node: false, dry_run: false, worker_args }
}

fn path_arg(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

/// A spec of examples/specs/ to run end to end: pi.toml (a kind the stock worker knows), else a sweep, else the first.
fn sweep_spec() -> Option<PathBuf> {
    let mut specs: Vec<PathBuf> = std::fs::read_dir(root().join("examples").join("specs"))
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    specs.sort();
    ["pi.toml", "sweep"]
        .iter()
        .find_map(|name| specs.iter().find(|p| p.to_string_lossy().contains(name)))
        .or(specs.first())
        .cloned()
}

/// The one `results.csv` under `base` (base/<name>/<timestamp>/results.csv).
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

/// Columns that depend on when and where a process ran.
const RUN_DEPENDENT: [&str; 4] = ["duration_s", "started_at", "host", "worker"];

/// The one run directory under `base` (base/<name>/<timestamp>/).
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

/// How a run under mpirun is stopped in [`signals_mid_run`].
#[derive(Debug, Clone, Copy)]
enum MpiStop {
    /// `kill -INT` of mpirun, with Open MPI's own 1 s between its SIGTERM and SIGKILL to
    /// the ranks (what a plain `mpirun` does).
    IntToMpirun,
    /// `kill -INT` of rank 0 alone.
    IntToMaster,
    /// `kill -9` of worker rank 1.
    KillWorker,
    /// `taskfarm-worker cancel DIR` from outside the job.
    Cancel,
}

/// Stopped mid-run while long processes run and short ones have finished: the job ends
/// (no rank is left waiting), every finished process is in results.csv and the journal,
/// the resume command is printed, no command the run started survives, and `--resume`
/// then runs every process exactly once.
fn signals_mid_run(scratch: &Path, tally: &mut Tally) {
    for stop in [MpiStop::IntToMpirun, MpiStop::IntToMaster, MpiStop::KillWorker, MpiStop::Cancel] {
        let name =
            format!("{stop:?} while long processes run: finished ones consolidated, no survivors, then --resume");
        let outcome = signal_case(scratch, stop);
        tally.record(&name, outcome);
    }
}

fn signal_case(scratch: &Path, stop: MpiStop) -> Result<()> {
    let case = scratch.join(format!("signal-{stop:?}"));
    std::fs::create_dir_all(&case)?;
    let d = case.display();
    // x = 4 and 5 wait for the file `go` (40 s at most); 0 to 3 end at once. The short ones
    // come first: the master queues nothing behind a process of unknown duration, so a short
    // one after a long one would wait for a worker.
    let spec = case.join("slow.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"slow\"\nkind = \"command\"\ncommand = [\"sh\", \"-c\", '''echo $$ >> {d}/pids; i=0; \
             if [ {{x}} = 4 ] || [ {{x}} = 5 ]; then while [ ! -e {d}/go ] && [ $i -lt 400 ]; do sleep 0.1; \
             i=$((i + 1)); done; fi; echo {{x}}''']\n[parameter_ranges]\nx = [0, 1, 2, 3, 4, 5]\n"
        ),
    )?;
    let results = case.join("results");
    let args = vec!["run".into(), path_arg(&spec), "--results".into(), path_arg(&results), "--quiet".into()];
    let mut command = launch(&oversubscribed(3, args))?;
    if let MpiStop::IntToMpirun = stop {
        command.env("OMPI_MCA_odls_base_sigkill_timeout", "1");
    }
    eprintln!("xtask: {}", describe(&command));
    let mut signalled = false;
    let outcome = run_to_files(&case, "run", command, Duration::from_secs(120), |_| {
        // Once the four short processes are journaled (and only the long ones run).
        if signalled || finished_in_log(&results) < 4 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(300));
        let marker = path_arg(&spec);
        if let MpiStop::Cancel = stop {
            let dir = run_dir(&results)?;
            eprintln!("xtask:   taskfarm-worker cancel {}", dir.display());
            let cancel = Command::new(release_worker()).arg("cancel").arg(&dir).output()?;
            if !cancel.status.success() {
                bail!("cancel failed: {}", String::from_utf8_lossy(&cancel.stderr));
            }
            signalled = true;
            return Ok(());
        }
        let (signal, pid) = match stop {
            MpiStop::IntToMpirun => ("-INT", pid_of("mpirun", &marker, None)),
            MpiStop::IntToMaster => ("-INT", pid_of("taskfarm-worker", &marker, Some(0))),
            MpiStop::KillWorker => ("-KILL", pid_of("taskfarm-worker", &marker, Some(1))),
            MpiStop::Cancel => return Ok(()),
        };
        let pid = pid.context("the process to signal was not found")?;
        eprintln!("xtask:   kill {signal} {pid}");
        Command::new("kill").args([signal, &pid.to_string()]).status()?;
        signalled = true;
        Ok(())
    })?;
    if !signalled {
        bail!("the run ended before the short processes were journaled:\n{}", tail(&outcome.stderr));
    }
    if outcome.timed_out {
        bail!("the job did not end after the signal:\n{}", tail(&outcome.stderr));
    }
    match stop {
        MpiStop::IntToMaster | MpiStop::Cancel if outcome.code != Some(130) => {
            bail!("exit {:?}, expected 130:\n{}", outcome.code, tail(&outcome.stderr))
        }
        _ if outcome.code == Some(0) => bail!("exit 0 after a signal"),
        _ => {}
    }
    let said = format!("{}{}", outcome.stdout, outcome.stderr);
    expect_in(&said, "--resume")?;
    let (_, rows) = read_results(&results)?;
    let ids: BTreeSet<&str> = rows.iter().filter_map(|r| r.first().map(String::as_str)).collect();
    for id in ["0", "1", "2", "3"] {
        if !ids.contains(id) {
            bail!("process {id} finished before the signal but is not in results.csv: {ids:?}");
        }
    }
    expect_no_survivors(&case.join("pids"))?;
    // The resume runs the rest at once (the long ones no longer wait) and only the rest.
    std::fs::write(case.join("go"), "")?;
    let dir = run_dir(&results)?;
    let resume =
        vec!["run".into(), path_arg(&dir.join("operation.toml")), "--resume".into(), path_arg(&dir), "--quiet".into()];
    let resumed = run_with_timeout(&case, launch(&oversubscribed(3, resume))?)?;
    expect_success(&resumed)?;
    let (_, rows) = read_results(&results)?;
    let ids: BTreeSet<&str> = rows.iter().filter_map(|r| r.first().map(String::as_str)).collect();
    if rows.len() != 6 || ids.len() != 6 {
        bail!("after --resume: {} rows and {} distinct ids, expected 6", rows.len(), ids.len());
    }
    expect_no_survivors(&case.join("pids"))
}

/// How many commands `operation.log` under `base` says ended with status 0.
fn finished_in_log(base: &Path) -> usize {
    let log = run_dir(base).ok().and_then(|dir| std::fs::read_to_string(dir.join("operation.log")).ok());
    log.map_or(0, |log| log.lines().filter(|l| l.contains("exited with status 0")).count())
}

/// The pid of a process whose command line starts with a program named `program`, names
/// `marker`, and (when `rank` is given) whose environment makes it that MPI rank; the
/// lowest such pid (a rank's forked helpers come after it).
fn pid_of(program: &str, marker: &str, rank: Option<u32>) -> Option<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let mut args = cmdline.split(|&b| b == 0).map(String::from_utf8_lossy);
            let first = args.next()?;
            if Path::new(first.as_ref()).file_name().is_none_or(|n| n != program) {
                return None;
            }
            if !String::from_utf8_lossy(&cmdline).contains(marker) {
                return None;
            }
            if let Some(rank) = rank {
                let wanted = format!("OMPI_COMM_WORLD_RANK={rank}");
                let environ = std::fs::read(entry.path().join("environ")).ok()?;
                if !environ.split(|&b| b == 0).any(|var| var == wanted.as_bytes()) {
                    return None;
                }
            }
            Some(pid)
        })
        .collect();
    pids.sort_unstable();
    pids.first().copied()
}

/// Fails when a pid listed in `pids` (one per line) still runs 10 s from now.
fn expect_no_survivors(pids: &Path) -> Result<()> {
    let text = std::fs::read_to_string(pids).unwrap_or_default();
    let start = Instant::now();
    for pid in text.lines().filter_map(|l| l.trim().parse::<u32>().ok()) {
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
            let alive = stat.is_ok_and(|s| !s.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z'));
            if !alive {
                break;
            }
            if start.elapsed() > Duration::from_secs(10) {
                bail!("command {pid} started by the run still runs after the job ended");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}
