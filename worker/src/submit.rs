//! `taskfarm-worker submit SPEC`: runs an operation as a Slurm batch job. It checks the spec
//! first (bad input fails here, not in the queue), writes the batch script
//! (`worker/slurm/sweep.sbatch`, linked from `examples/slurm/`, built into the binary) next
//! to the operation's results, and calls `sbatch` with the allocation's shape and the path
//! of this worker binary, so the compute nodes need neither cargo nor a checkout.
//!
//! Not a scheduler of its own: one allocation per call, no server.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::WorkerError;
use crate::registry::Registry;
use crate::spec::Spec;

/// The batch script, as shipped in `worker/slurm/` (and linked from `examples/slurm/`).
pub const BATCH_SCRIPT: &str = include_str!("../slurm/sweep.sbatch");

/// What `submit` was asked for.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// The spec file (.toml, .yaml or .yml), or a run's operation.toml with `-- --resume DIR`.
    pub spec: PathBuf,
    /// Nodes of the allocation (one worker rank each, a thread per core).
    #[arg(long, value_name = "N")]
    pub nodes: Option<u32>,
    /// Wall-time limit, as sbatch takes it (`30`, `02:00:00`, `1-00:00:00`).
    #[arg(long, value_name = "TIME")]
    pub time: Option<String>,
    /// The partition (queue).
    #[arg(long, value_name = "NAME")]
    pub partition: Option<String>,
    /// The worker binary the job runs (default: this one). A user's own worker built with
    /// `taskfarm_worker::main_with` and the `mpi` feature works the same way.
    #[arg(long, value_name = "PATH")]
    pub worker: Option<PathBuf>,
    /// Where result directories go: `<DIR>/<name>/<UTC timestamp>/`.
    #[arg(long, value_name = "DIR", default_value = "results")]
    pub results: PathBuf,
    /// How many seconds before the wall-time limit Slurm warns the run (SIGUSR1 to the batch
    /// script, passed on): no process starts after the warning, the running ones finish and
    /// the run ends resumable (default: the script's 120). Slurm may warn up to 60 s early.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u16).range(1..))]
    pub warning: Option<u16>,
    /// Wait until the job ends (`sbatch --wait`) and exit with its status.
    #[arg(long)]
    pub wait: bool,
    /// Print the sbatch command and write the script, but submit nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Options passed on to `taskfarm-worker run` in the job (after `--`).
    #[arg(last = true, value_name = "RUN OPTIONS")]
    pub run_args: Vec<OsString>,
}

/// `submit`: returns the exit status.
pub fn submit(registry: &Registry, args: SubmitArgs) -> Result<u8, WorkerError> {
    let spec = Spec::load(&args.spec, registry)?;
    let absolute = |path: &Path| std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    let worker = match &args.worker {
        Some(path) => absolute(path),
        None => std::env::current_exe().map_err(|e| WorkerError::Submit(format!("this program's path: {e}")))?,
    };
    if !worker.is_file() {
        return Err(WorkerError::Submit(format!("the worker binary {} does not exist", worker.display())));
    }
    refuse_worker_without_mpi(&worker)?;
    let results = absolute(&args.results);
    let folder = results.join(spec.name());
    std::fs::create_dir_all(&folder)
        .map_err(|e| WorkerError::Submit(format!("could not create {}: {e}", folder.display())))?;
    let script = folder.join("sweep.sbatch");
    std::fs::write(&script, BATCH_SCRIPT)
        .map_err(|e| WorkerError::Submit(format!("could not write {}: {e}", script.display())))?;

    let mut sbatch = Command::new("sbatch");
    sbatch.arg("--parsable").arg(format!("--job-name=taskfarm-{}", spec.name()));
    sbatch.arg(format!("--output={}/taskfarm-%j.out", folder.display()));
    if let Some(nodes) = args.nodes {
        sbatch.arg(format!("--nodes={nodes}"));
    }
    if let Some(time) = &args.time {
        sbatch.arg(format!("--time={time}"));
    }
    if let Some(partition) = &args.partition {
        sbatch.arg(format!("--partition={partition}"));
    }
    let mut env = vec![("TASKFARM_WORKER", worker.as_os_str().to_owned())];
    if let Some(seconds) = args.warning {
        sbatch.arg(format!("--signal=B:USR1@{seconds}"));
        env.push((crate::allocation::SIGNAL_BEFORE, seconds.to_string().into()));
    }
    if args.wait {
        sbatch.arg("--wait");
    }
    sbatch.envs(env.iter().map(|(name, value)| (name, value)));
    sbatch.arg(&script).arg(absolute(&args.spec)).arg("--results").arg(&results).args(&args.run_args);
    let shown = format!(
        "{} {}",
        env.iter().map(|(name, value)| format!("{name}={}", value.to_string_lossy())).collect::<Vec<_>>().join(" "),
        std::iter::once(sbatch.get_program())
            .chain(sbatch.get_args())
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    if args.dry_run {
        println!("{shown}");
        return Ok(crate::EXIT_OK);
    }
    let out = sbatch
        .output()
        .map_err(|e| WorkerError::Submit(format!("sbatch could not be started ({e}): is this a Slurm login node?")))?;
    let job = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !args.wait && !out.status.success() {
        return Err(WorkerError::Submit(format!(
            "sbatch refused the job: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    println!("submitted job {job}: {shown}");
    println!("follow it with: taskfarm-worker status {}", folder.display());
    if args.wait {
        let code = out.status.code().unwrap_or(1);
        println!("job {job} ended with status {code}; its output: {}/taskfarm-{job}.out", folder.display());
        return Ok(u8::try_from(code).unwrap_or(1));
    }
    Ok(crate::EXIT_OK)
}

/// The line of a worker's `--version` that lists the backends it was built with.
const BACKENDS_LINE: &str = "backends: ";

/// Refuses a worker binary that says it was built without the MPI backend: the batch script
/// runs it under mpirun with `--backend mpi`, where it would fail only once the job starts.
/// This program knows its own build; another binary is asked (`--version`), and one that
/// does not say (not a taskfarm worker, or one that does not answer) is not refused.
fn refuse_worker_without_mpi(worker: &Path) -> Result<(), WorkerError> {
    let this = std::env::current_exe().and_then(std::fs::canonicalize).ok();
    let has_mpi = if this.is_some() && std::fs::canonicalize(worker).ok() == this {
        Some(taskfarm::has_backend("mpi"))
    } else {
        crate::allocation::stdout_within(Command::new(worker).arg("--version"), Duration::from_secs(10))
            .and_then(|out| out.lines().find_map(|line| line.strip_prefix(BACKENDS_LINE).map(str::to_owned)))
            .map(|list| list.split(',').any(|backend| backend.trim() == "mpi"))
    };
    match has_mpi {
        Some(false) => Err(WorkerError::WorkerWithoutMpi { worker: worker.to_owned() }),
        _ => Ok(()),
    }
}
