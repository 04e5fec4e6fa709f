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

mod cases;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::runner::tail;
use crate::{mpi, release_worker, root, Tally};
use cases::{conformance, link_loss, remote_crash, sweep, throughput};

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

    /// The column `name` of RFC 3339 UTC times, in seconds since the Unix epoch.
    fn times(&self, name: &str) -> Result<Vec<f64>> {
        self.values(name)?
            .into_iter()
            .map(|v| {
                crate::results::parse_utc(v)
                    .with_context(|| format!("`{v}` in column {name} is not an RFC 3339 UTC time"))
            })
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
        let (starts, durations) = (self.times("started_at")?, self.numbers("duration_s")?);
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
