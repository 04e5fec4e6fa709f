//! `cargo xtask cluster-test`: taskfarm's MPI backend across three hosts that talk TCP, on
//! one machine. The hosts are network namespaces `tf-node1..3` (each with its own hostname in
//! a UTS namespace) cabled by veth pairs to a bridge in a fourth namespace `tf-switch`, on the
//! private subnet 10.251.0.0/24 that exists only inside them (`xtask/cluster/hosts.sh`).
//! Open MPI reaches them through an rsh agent (`xtask/cluster/rsh-agent.sh`, `ip netns exec`),
//! a hostfile, and the TCP transport only; `mpirun` itself runs on tf-node1.
//!
//! The tests: example sweeps across 3 hosts × 2 slots equal to `--backend serial` with ranks on
//! every host; a crash on a remote host recorded with that host; dispatch throughput across
//! hosts beside one host; a host unplugged mid-run (non-zero exit, journal intact, `--resume`
//! on the remaining hosts finishes every process exactly once).
//!
//! Needs root, iproute2 and Open MPI. Everything it creates is removed at the end, also when a
//! test fails; a watchdog (`hosts.sh watch`) removes it when the xtask is killed by a signal,
//! and a new run first removes what a crashed one left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::runner::tail;
use crate::{mpi, release_worker, root, Tally};

/// The hosts, in hostfile order; tf-node1 runs mpirun and rank 0 (the master).
const NODES: [&str; 3] = ["tf-node1", "tf-node2", "tf-node3"];
/// The cluster's private network (only inside the namespaces).
const SUBNET: &str = "10.251.0.0/24";
/// Where the harness keeps its hostfiles, specs, a copy of the worker and the results.
const STATE_DIR: &str = "/tmp/taskfarm-cluster-test";
/// The longest one mpirun may take before it counts as hung and is killed.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Arguments of `cargo xtask cluster-test [--keep | --down] [--processes N]`.
#[derive(Debug, clap::Args)]
pub struct ClusterArgs {
    /// Leave the hosts (and /tmp/taskfarm-cluster-test) up after the tests, to look around;
    /// remove them later with `--down`.
    #[arg(long)]
    keep: bool,
    /// Only remove what an earlier run left (namespaces, /etc/netns entries, files), then stop.
    #[arg(long, conflicts_with = "keep")]
    down: bool,
    /// How many no-op processes the dispatch throughput measurement runs (per layout).
    #[arg(long, default_value_t = 50_000)]
    processes: u32,
    /// Use target/release/taskfarm-worker as it is (built with `--features mpi`) instead of building it.
    #[arg(long)]
    no_build: bool,
}

/// Runs the cluster tests; fails if any fails.
pub fn cluster_test(args: ClusterArgs) -> Result<()> {
    let scripts = root().join("xtask").join("cluster");
    if args.down {
        hosts_sh(&scripts, &["down"])?;
        let _ = std::fs::remove_dir_all(STATE_DIR);
        eprintln!("xtask: cluster removed");
        return Ok(());
    }
    preflight()?;
    if !args.no_build {
        mpi::build_worker()?;
    }
    let scenarios = mpi::scenario_binary()?;
    let cluster = Cluster::up(&scripts, args.keep)?;
    let mut tally = Tally::new("cluster");
    tally.record(
        "the conformance suite across 3 hosts x 2 slots, against SerialBackend",
        conformance(&cluster, &scenarios),
    );
    for spec in ["pi.toml", "command_sweep.toml"] {
        let name =
            format!("examples/specs/{spec} across 3 hosts x 2 slots: same results.csv as serial, ranks on every host");
        tally.record(&name, sweep(&cluster, &root().join("examples").join("specs").join(spec)));
    }
    tally.record("a process crashing on a remote host is a crash record naming that host", remote_crash(&cluster));
    let throughput = throughput(&cluster, args.processes);
    let figures = throughput.as_ref().ok().cloned();
    tally.record("dispatch throughput across hosts and on one host", throughput.map(|_| ()));
    tally.record(
        "a host unplugged mid-run: non-zero exit, journal intact, --resume on the others finishes",
        link_loss(&cluster),
    );
    if let Some(figures) = figures {
        println!("{figures}");
    }
    if args.keep {
        eprintln!(
            "xtask: the hosts stay up (--keep): e.g. `{} tf-node2 hostname`; remove them with `cargo xtask cluster-test --down`",
            cluster.agent.display()
        );
    }
    drop(cluster);
    tally.finish()
}

/// Root, `ip`, `unshare`, `setsid` and mpirun are needed; say which is missing.
fn preflight() -> Result<()> {
    if !mpi::running_as_root() {
        bail!("the cluster test creates network namespaces: run it as root");
    }
    for (program, package) in [("ip", "iproute2"), ("unshare", "util-linux"), ("setsid", "util-linux")] {
        if mpi::on_path(program).is_none() {
            bail!("`{program}` was not found on PATH: install {package}");
        }
    }
    if !mpi::found() {
        bail!("mpirun/mpicc were not found: install Open MPI (Debian: libopenmpi-dev openmpi-bin libclang-dev)");
    }
    Ok(())
}

fn hosts_sh(scripts: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new("sh")
        .arg(scripts.join("hosts.sh"))
        .args(args)
        .stdin(Stdio::null())
        .status()
        .context("could not run xtask/cluster/hosts.sh")?;
    if !status.success() {
        bail!("hosts.sh {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The test cluster while it is up; dropping it removes everything (unless `keep`).
struct Cluster {
    scripts: PathBuf,
    agent: PathBuf,
    state: PathBuf,
    worker: PathBuf,
    keep: bool,
}

impl Cluster {
    fn up(scripts: &Path, keep: bool) -> Result<Cluster> {
        let state = PathBuf::from(STATE_DIR);
        let owner = state.join("owner");
        let me = std::process::id().to_string();
        if let Ok(pid) = std::fs::read_to_string(&owner) {
            let pid = pid.trim();
            if !pid.is_empty() && pid != me && Path::new("/proc").join(pid).exists() {
                bail!("another cluster-test (pid {pid}) is using the cluster; wait for it or kill it");
            }
        }
        eprintln!("xtask: removing leftovers of an earlier cluster-test, if any");
        hosts_sh(scripts, &["down"])?;
        let _ = std::fs::remove_dir_all(&state);
        std::fs::create_dir_all(&state).with_context(|| format!("could not create {}", state.display()))?;
        std::fs::write(&owner, &me)?;
        // From here on the guard removes what exists, whatever fails next.
        let cluster = Cluster {
            scripts: scripts.to_path_buf(),
            agent: scripts.join("rsh-agent.sh"),
            worker: state.join("taskfarm-worker"),
            state,
            keep,
        };
        if !keep {
            // Cleans up if this process dies by a signal (Ctrl-C, kill): Drop would not run.
            Command::new("setsid")
                .arg("sh")
                .arg(scripts.join("hosts.sh"))
                .args(["watch", &me])
                .arg(&cluster.state)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("could not start the cleanup watchdog")?;
        }
        // A copy, so a concurrent `cargo build` of the worker without MPI cannot swap it mid-test.
        let built = release_worker();
        std::fs::copy(&built, &cluster.worker).with_context(|| format!("could not copy {}", built.display()))?;
        eprintln!("xtask: creating hosts {} on {SUBNET}", NODES.join(", "));
        hosts_sh(scripts, &["up", &NODES.len().to_string()])?;
        Ok(cluster)
    }

    /// A hostfile with `slots` slots on each named host.
    fn hostfile(&self, name: &str, hosts: &[(&str, u32)]) -> Result<PathBuf> {
        let path = self.state.join(name);
        let text: String = hosts.iter().map(|(host, slots)| format!("{host} slots={slots}\n")).collect();
        std::fs::write(&path, text)?;
        Ok(path)
    }

    /// The hostfile `hosts-3x2`: 2 slots on each of the 3 hosts.
    fn hostfile_3x2(&self) -> Result<PathBuf> {
        self.hostfile("hosts-3x2", &[(NODES[0], 2), (NODES[1], 2), (NODES[2], 2)])
    }

    /// `mpirun -n ranks --hostfile hostfile WORKER args`, started on tf-node1 under its name.
    fn mpirun(&self, hostfile: &Path, ranks: u32, args: &[&str]) -> Command {
        self.mpirun_program(hostfile, ranks, &self.worker, args)
    }

    /// `mpirun -n ranks --hostfile hostfile PROGRAM args`, started on tf-node1 under its name.
    fn mpirun_program(&self, hostfile: &Path, ranks: u32, program: &Path, args: &[&str]) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", NODES[0], "unshare", "--uts", "sh", "-c", r#"hostname "$0" && exec "$@""#]);
        command.arg(NODES[0]).arg("mpirun").arg("-n").arg(ranks.to_string()).arg("--hostfile").arg(hostfile);
        command.args(["--bind-to", "none"]);
        let agent = self.agent.to_string_lossy().into_owned();
        for (name, value) in [
            ("plm_rsh_agent", agent.as_str()),
            ("plm_rsh_no_tree_spawn", "1"),
            // TCP only, on the cluster's subnet: even ranks of one host talk over its eth0.
            ("btl", "tcp,self"),
            ("btl_tcp_if_include", SUBNET),
            ("oob_tcp_if_include", SUBNET),
            // mpirun notices a silent daemon in seconds (default: 300 s + 9 x 20 s).
            ("oob_tcp_keepalive_time", "1"),
            ("oob_tcp_keepalive_intvl", "1"),
            ("oob_tcp_keepalive_probes", "3"),
            // Between SIGTERM and SIGKILL when a job is torn down: time for the master to
            // report what is unfinished and consolidate what finished.
            ("odls_base_sigkill_timeout", "5"),
        ] {
            command.args(["--mca", name, value]);
        }
        mpi::mpi_environment(&mut command, true);
        command.arg(program).args(args).current_dir(&self.state);
        command
    }

    /// `taskfarm-worker run spec --backend serial --results dir --quiet`, in the root namespace.
    fn serial(&self, spec: &Path, results: &Path) -> Command {
        let mut command = Command::new(&self.worker);
        command.arg("run").arg(spec).args(["--backend", "serial", "--quiet", "--results"]).arg(results);
        command.current_dir(&self.state);
        command
    }

    fn results(&self, name: &str) -> PathBuf {
        self.state.join("results").join(name)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        eprintln!("xtask: removing the cluster (namespaces tf-node1..3, tf-switch, /etc/netns entries, {STATE_DIR})");
        if let Err(e) = hosts_sh(&self.scripts, &["down"]) {
            eprintln!("xtask: warning: {e:#}; run `cargo xtask cluster-test --down`");
        }
        let _ = std::fs::remove_dir_all(&self.state);
    }
}

/// What one command came to.
type Run = crate::runner::Outcome;

impl Run {
    fn expect_code(&self, what: &str, code: i32) -> Result<()> {
        if self.timed_out {
            bail!("{what} hung (killed after {}s)\n{}", RUN_TIMEOUT.as_secs(), tail(&self.stderr));
        }
        if self.code != Some(code) {
            bail!("{what}: exit code {:?}, expected {code}\n{}\n{}", self.code, tail(&self.stdout), tail(&self.stderr));
        }
        Ok(())
    }
}

/// Runs `command` with output to files and `RUN_TIMEOUT`; `during` is called every 50 ms
/// with the time since the start (to act on the run from outside).
fn run(state: &Path, command: Command, during: impl FnMut(Duration) -> Result<()>) -> Result<Run> {
    crate::runner::run_to_files(state, "run", command, RUN_TIMEOUT, during)
}

/// Runs an mpirun `command` like [`run`], again (at most 3 times in all) when mpirun itself
/// crashed in `PMIx_Finalize` while ending the job: a fault of Debian's Open MPI 4.1.4 seen
/// now and then, after the job's results were written. `results` (if any) is removed before
/// a retry so the run starts afresh.
fn run_mpi(cluster: &Cluster, make: impl Fn() -> Command, results: Option<&Path>) -> Result<Run> {
    let mut attempt = 1;
    loop {
        let outcome = run(&cluster.state, make(), idle)?;
        let mpirun_crashed = outcome.code.is_none() && !outcome.timed_out && outcome.stderr.contains("PMIx_Finalize");
        if !mpirun_crashed || attempt == 3 {
            return Ok(outcome);
        }
        eprintln!("xtask:   warning: mpirun crashed in PMIx_Finalize at the end of the job (an Open MPI fault); running it again");
        if let Some(dir) = results {
            let _ = std::fs::remove_dir_all(dir);
        }
        attempt += 1;
    }
}

fn idle(_: Duration) -> Result<()> {
    Ok(())
}

/// A results.csv as its header and rows.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn read(base: &Path) -> Result<Table> {
        let (header, rows) = crate::results::read_results(base)?;
        Ok(Table { header, rows })
    }

    fn column(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).with_context(|| format!("results.csv has no column {name}"))
    }

    /// The values of column `name`, one per row.
    fn values(&self, name: &str) -> Result<Vec<&str>> {
        let i = self.column(name)?;
        self.rows.iter().map(|r| r.get(i).map(String::as_str).context("a short row in results.csv")).collect()
    }

    /// The numbers of column `name`.
    fn numbers(&self, name: &str) -> Result<Vec<f64>> {
        self.values(name)?
            .into_iter()
            .map(|v| v.parse::<f64>().with_context(|| format!("`{v}` in column {name} is not a number")))
            .collect()
    }

    /// Host → the workers (ranks) that ran something there.
    fn ranks_by_host(&self) -> Result<BTreeMap<String, BTreeSet<String>>> {
        let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (host, worker) in self.values("host")?.into_iter().zip(self.values("worker")?) {
            map.entry(host.to_owned()).or_default().insert(worker.to_owned());
        }
        Ok(map)
    }

    /// Processes per second from the first start to the last end.
    fn rate(&self) -> Result<f64> {
        let (starts, durations) = (self.numbers("started_at")?, self.numbers("duration_s")?);
        let first = starts.iter().copied().fold(f64::INFINITY, f64::min);
        let last = starts.iter().zip(&durations).map(|(s, d)| s + d).fold(f64::NEG_INFINITY, f64::max);
        let span = last - first;
        if self.rows.is_empty() || span.is_nan() || span <= 0.0 {
            bail!("no time span in results.csv");
        }
        Ok(self.rows.len() as f64 / span)
    }
}

fn describe_hosts(map: &BTreeMap<String, BTreeSet<String>>) -> String {
    map.iter()
        .map(|(host, ranks)| format!("{host}: {}", ranks.iter().cloned().collect::<Vec<_>>().join(" ")))
        .collect::<Vec<_>>()
        .join("; ")
}

/// A sweep on 3 hosts × 2 slots equals the serial run; every host ran some of it.
fn sweep(cluster: &Cluster, spec: &Path) -> Result<()> {
    let stem = spec.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let (serial_dir, cluster_dir) =
        (cluster.results(&format!("{stem}-serial")), cluster.results(&format!("{stem}-cluster")));
    let hostfile = cluster.hostfile_3x2()?;
    let spec_arg = spec.to_string_lossy();
    let results_arg = cluster_dir.to_string_lossy();
    let args = ["run", &spec_arg, "--backend", "mpi", "--results", &results_arg, "--quiet"];
    run_mpi(cluster, || cluster.mpirun(&hostfile, 6, &args), Some(&cluster_dir))?.expect_code("the cluster run", 0)?;
    run(&cluster.state, cluster.serial(spec, &serial_dir), idle)?.expect_code("the serial run", 0)?;
    crate::results::compare_results(&serial_dir, &cluster_dir)?;
    let hosts = Table::read(&cluster_dir)?.ranks_by_host()?;
    eprintln!("xtask:   ranks that ran processes, by host: {}", describe_hosts(&hosts));
    let missing: Vec<&str> = NODES.iter().copied().filter(|n| !hosts.contains_key(*n)).collect();
    if !missing.is_empty() || hosts.len() != NODES.len() {
        bail!("expected processes on every host {NODES:?}, got {}", describe_hosts(&hosts));
    }
    Ok(())
}

/// x = 3 fails; the master is alone on tf-node1, so the crash is on tf-node2 or tf-node3.
fn remote_crash(cluster: &Cluster) -> Result<()> {
    let spec = cluster.scripts.join("remote_crash.toml");
    let dir = cluster.results("remote_crash");
    let hostfile = cluster.hostfile("hosts-master-apart", &[(NODES[0], 1), (NODES[1], 2), (NODES[2], 2)])?;
    let (spec_arg, results_arg) = (spec.to_string_lossy(), dir.to_string_lossy());
    let args = ["run", &spec_arg, "--backend", "mpi", "--results", &results_arg, "--quiet"];
    // Exit code 1: some processes crashed.
    run_mpi(cluster, || cluster.mpirun(&hostfile, 5, &args), Some(&dir))?.expect_code("the cluster run", 1)?;
    let table = Table::read(&dir)?;
    let (xs, statuses, hosts) = (table.values("x")?, table.values("status")?, table.values("host")?);
    let crashed: Vec<usize> = (0..statuses.len()).filter(|&i| statuses[i] != "finished").collect();
    let [i] = crashed.as_slice() else {
        bail!("expected exactly one crashed process (x = 3), got {}", crashed.len());
    };
    let (x, host) = (xs[*i], hosts[*i]);
    if x != "3" || statuses[*i] != "crashed" {
        bail!("process x = {x} has status {}, expected only x = 3 crashed", statuses[*i]);
    }
    if !NODES[1..].contains(&host) {
        bail!("the crash record names host `{host}`, expected a remote host (tf-node2 or tf-node3)");
    }
    let crashed_jsonl =
        std::fs::read_to_string(crate::results::find_results_csv(&dir)?.with_file_name("crashed.jsonl"))
            .context("could not read crashed.jsonl")?;
    let said = format!("x=3 fails on {host}");
    if !crashed_jsonl.contains(host) || !crashed_jsonl.contains(&said) {
        bail!("crashed.jsonl should name {host} and keep the stderr line `{said}`: {crashed_jsonl}");
    }
    let reason = table.values("reason")?[*i];
    eprintln!("xtask:   x = 3 crashed on {host}: {reason}");
    Ok(())
}

/// Processes/s of `processes` no-op processes (monte_carlo_pi with 1 sample), 6 ranks on
/// 3 hosts and 6 ranks on one host, both over TCP; returns the figures as a line.
fn throughput(cluster: &Cluster, processes: u32) -> Result<String> {
    let spec = cluster.state.join("noop.toml");
    std::fs::write(
        &spec,
        format!(
            "name = \"noop\"\nkind = \"monte_carlo_pi\"\nruns = {processes}\n\n[parameter_ranges]\nsamples = [1]\n"
        ),
    )?;
    let spec_arg = spec.to_string_lossy();
    let layouts = [
        ("3 hosts x 2 ranks", cluster.hostfile_3x2()?),
        ("1 host x 6 ranks", cluster.hostfile("hosts-1x6", &[(NODES[0], 6)])?),
    ];
    let mut figures = Vec::new();
    for (label, hostfile) in layouts {
        let dir = cluster.results(&format!("noop-{}", label.replace(' ', "")));
        let results_arg = dir.to_string_lossy();
        let args = ["run", &spec_arg, "--backend", "mpi", "--results", &results_arg, "--quiet"];
        let outcome = run_mpi(cluster, || cluster.mpirun(&hostfile, 6, &args), Some(&dir))?;
        outcome.expect_code(label, 0)?;
        let table = Table::read(&dir)?;
        if table.rows.len() != processes as usize {
            bail!("{label}: {} rows in results.csv, expected {processes}", table.rows.len());
        }
        let rate = table.rate()?;
        let wall = f64::from(processes) / outcome.elapsed.as_secs_f64();
        eprintln!(
            "xtask:   {label}: {rate:.0} processes/s (first start to last end), {wall:.0}/s with mpirun's start-up"
        );
        figures.push(format!("{label}: {rate:.0}/s ({wall:.0}/s incl. start-up)"));
    }
    Ok(format!("dispatch throughput, {processes} no-op processes, 5 workers over TCP: {}", figures.join("; ")))
}

/// backend-mpi's conformance scenario (the same operations on MPI and on `SerialBackend`,
/// every process exactly once, the workers' counts adding up), with its 6 ranks spread over
/// the 3 hosts.
fn conformance(cluster: &Cluster, scenarios: &Path) -> Result<()> {
    // A copy, so a build running meanwhile cannot swap the program under the ranks.
    let program = cluster.state.join("mpi_scenarios");
    std::fs::copy(scenarios, &program)
        .with_context(|| format!("could not copy {} into the cluster", scenarios.display()))?;
    let hostfile = cluster.hostfile_3x2()?;
    let outcome = run_mpi(cluster, || cluster.mpirun_program(&hostfile, 6, &program, &["conformance"]), None)?;
    outcome.expect_code("the conformance scenario across hosts", 0)?;
    if !outcome.stdout.contains("same as serial") {
        bail!("the conformance scenario did not report its comparison\n{}", tail(&outcome.stdout));
    }
    Ok(())
}

/// The host unplugged mid-run: tf-node3.
const LOST: &str = "tf-node3";

/// Unplugs tf-node3 mid-run; the job must end by itself with a non-zero exit, the journal
/// must be readable, and `--resume` on tf-node1 and tf-node2 must finish every process once.
fn link_loss(cluster: &Cluster) -> Result<()> {
    let spec = cluster.scripts.join("link_loss.toml");
    let total = 400;
    let base = cluster.results("link_loss");
    let hostfile = cluster.hostfile_3x2()?;
    let (spec_arg, results_arg) = (spec.to_string_lossy(), base.to_string_lossy());
    let args = ["run", &spec_arg, "--backend", "mpi", "--results", &results_arg, "--quiet"];
    let mut unplugged: Option<Duration> = None;
    let outcome = run(&cluster.state, cluster.mpirun(&hostfile, 6, &args), |elapsed| {
        // Unplug once the run is well under way: 1.5 s in and a journal with records.
        if unplugged.is_none() && elapsed >= Duration::from_millis(1500) && crate::results::journal_len(&base) > 0 {
            eprintln!("xtask:   unplugging {LOST} at {:.1} s", elapsed.as_secs_f64());
            hosts_sh(&cluster.scripts, &["link", LOST, "down"])?;
            unplugged = Some(elapsed);
        }
        Ok(())
    })?;
    let Some(at) = unplugged else {
        bail!("the run ended ({:?}) before {LOST} could be unplugged\n{}", outcome.code, tail(&outcome.stderr));
    };
    if outcome.timed_out {
        bail!(
            "the job did not end by itself within {}s of losing {LOST}\n{}",
            RUN_TIMEOUT.as_secs(),
            tail(&outcome.stderr)
        );
    }
    if outcome.code == Some(0) {
        bail!("the job exited 0 after losing {LOST}\n{}", tail(&outcome.stderr));
    }
    eprintln!(
        "xtask:   the job ended {:.1} s after the unplug, exit code {:?}; Open MPI said:\n{}",
        (outcome.elapsed - at).as_secs_f64(),
        outcome.code,
        indent(&outcome.stderr)
    );
    if !outcome.stderr.contains(LOST) {
        bail!("Open MPI's message does not name the lost host {LOST}");
    }
    // The master's own report: the lost host's ranks, silent longest, come first.
    let report = outcome
        .stderr
        .split("taskfarm: stopped by a signal")
        .nth(1)
        .with_context(|| format!("the master did not report what was unfinished\n{}", tail(&outcome.stderr)))?;
    let first_host = report.split(" on ").nth(1).and_then(|rest| rest.split_whitespace().next()).unwrap_or("");
    if first_host != LOST {
        bail!(
            "the master's report names {first_host:?} first, not the lost host {LOST}: {}",
            report.lines().next().unwrap_or("")
        );
    }
    eprintln!("xtask:   the master said: stopped by a signal{}", report.lines().next().unwrap_or(""));
    let dir = crate::results::run_dir(&base)?;
    let journal = std::fs::read(dir.join("journal")).context("the journal of the interrupted run is missing")?;
    // The journal is readable: `report` reads it and counts its records.
    let report = run(&cluster.state, worker_command(cluster, &["report", &dir.to_string_lossy()]), idle)?;
    let journaled = report
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("processes: ")?.split_whitespace().next()?.parse::<usize>().ok())
        .with_context(|| format!("`taskfarm-worker report` did not count the journal\n{}", tail(&report.stderr)))?;
    eprintln!("xtask:   the journal holds {journaled} of {total} records");
    if journaled == 0 || journaled >= total {
        bail!("expected an interrupted run, the journal holds {journaled} of {total} records");
    }
    // --resume on the remaining hosts.
    let resume_start = unix_now();
    let remaining = cluster.hostfile("hosts-remaining", &[(NODES[0], 2), (NODES[1], 2)])?;
    let dir_arg = dir.to_string_lossy();
    let args = ["run", &spec_arg, "--backend", "mpi", "--resume", &dir_arg, "--quiet"];
    run_mpi(cluster, || cluster.mpirun(&remaining, 4, &args), None)?
        .expect_code("--resume on tf-node1 and tf-node2", 0)?;
    let resumed = std::fs::read(dir.join("journal"))?;
    if !resumed.starts_with(&journal) {
        bail!("--resume changed the records journaled before the failure (the journal must only grow)");
    }
    let table = Table::read(&base)?;
    let ids: BTreeSet<&str> = table.values("id")?.into_iter().collect();
    let all_finished = table.values("status")?.iter().all(|s| *s == "finished");
    if table.rows.len() != total || ids.len() != total || !all_finished {
        bail!(
            "after --resume: {} rows, {} distinct ids, all finished: {all_finished}; expected {total}",
            table.rows.len(),
            ids.len()
        );
    }
    let starts = table.numbers("started_at")?;
    let rerun = starts.iter().filter(|s| **s >= resume_start).count();
    if journaled + rerun != total {
        bail!("{journaled} journaled + {rerun} run by --resume != {total}: some process ran twice or not at all");
    }
    let hosts = table.ranks_by_host()?;
    if !hosts.contains_key(LOST) {
        bail!("no record of {LOST} survived: {}", describe_hosts(&hosts));
    }
    let products = table.values("x")?.into_iter().zip(table.values("y")?).zip(table.values("stdout")?);
    for ((x, y), out) in products {
        let (x, y): (u32, u32) = (x.parse()?, y.parse()?);
        if out != (x * y).to_string() {
            bail!("process x={x} y={y} has output {out}, expected {}", x * y);
        }
    }
    eprintln!(
        "xtask:   --resume ran the {rerun} missing processes; every one of {total} exactly once ({})",
        describe_hosts(&hosts)
    );
    Ok(())
}

fn worker_command(cluster: &Cluster, args: &[&str]) -> Command {
    let mut command = Command::new(&cluster.worker);
    command.args(args).current_dir(&cluster.state);
    command
}

fn unix_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
}

fn indent(text: &str) -> String {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| format!("xtask:     | {l}")).collect::<Vec<_>>().join("\n")
}
