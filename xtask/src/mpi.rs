//! The MPI side of the xtask: `cargo xtask mpirun` (the release worker under mpirun, or in
//! a Slurm allocation; `--per-node`: one worker rank per host with a thread per core) and
//! the environment every mpirun of the xtask gets. The MPI tests that `cargo xtask test`
//! runs under a real mpirun are in `suite` (the cases), `signals` (runs stopped mid-way),
//! `persistent` (the persistent kinds) and `output` (kept output reaching the master).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, release_worker, root, run_checked};

mod output;
mod persistent;
mod rows;
mod scheduling;
mod signals;
mod speculation;
mod suite;

pub(crate) use suite::scenario_binary;
pub use suite::test;

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
pub(crate) fn launch(args: &MpirunArgs) -> Result<Command> {
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
pub(crate) fn describe(command: &Command) -> String {
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
