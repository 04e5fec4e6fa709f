//! The command line of `taskfarm-worker` (and of a user's own worker binary):
//! `run`, `validate` and `kinds`.
//!
//! Exit status: 0 when every process finished (and on an MPI worker rank, which prints
//! nothing); 1 when the operation ran but some processes crashed or timed out (their records
//! are in `crashed.jsonl`); 2 for bad input or usage (a clear `error: ...` line on stderr,
//! nothing run) and for an operation that could not run (e.g. an unwritable results
//! directory); 3 when reading or writing a file failed while running (e.g. the disk is
//! full: the command that finishes the run is printed when its directory holds a journal);
//! 75 when the run stopped starting processes at its deadline (`--deadline`, the end of
//! its Slurm allocation, or SIGUSR1) with processes left: resumable (`EX_TEMPFAIL`); 130
//! after Ctrl-C (SIGINT) and 143 after SIGTERM.
//!
//! **Ctrl-C / SIGTERM** ([`main_with`] installs the handlers): the first signal stops
//! dispatching (no new process starts), lets the running processes finish, journals and
//! consolidates what finished and prints the command that resumes the run; a second signal
//! stops now: running commands and subprocesses are killed, their records are dropped (they
//! run again on `--resume`), and the run is consolidated at once.
//!
//! **SIGUSR1** is a batch system's early warning before its wall-time limit (the batch
//! script asks Slurm for it): the run behaves as at its deadline — no new process starts,
//! the running ones finish, and it ends with status 75 (with `--continue`, after submitting
//! its follow-up).
//!
//! This module is for parsing arguments and reporting; loading specs is [`crate::spec`].
//! It holds the exit statuses, the arguments and the dispatch; `run` runs a spec and
//! reports, `inspect` is `validate` and `report`, and `signals` handles Ctrl-C and SIGTERM.

mod inspect;
mod run;
mod signals;

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicU8;
use std::time::Duration;

use clap::{Parser, Subcommand};

use self::inspect::{report_run, validate};
use self::run::run;
use self::signals::install_signal_handlers;
pub(crate) use self::signals::is_mpi_worker_rank;
use crate::{Registry, SpecProcess};

/// Every process finished.
pub const EXIT_OK: u8 = 0;
/// The operation ran, but some processes crashed (or have no record).
pub const EXIT_CRASHED: u8 = 1;
/// Bad input or usage: nothing ran (or the operation could not run).
pub const EXIT_BAD_INPUT: u8 = 2;
/// Reading or writing a file failed while running (e.g. the disk is full): what was
/// journaled is kept, and the command that finishes the run is printed.
pub const EXIT_IO: u8 = 3;
/// The run was interrupted by Ctrl-C (SIGINT): 128 + 2.
pub const EXIT_SIGINT: u8 = 130;
/// The run stopped at its deadline (or at SIGUSR1, the batch system's early warning) with
/// processes left: resumable (`EX_TEMPFAIL`).
pub const EXIT_UNFINISHED: u8 = 75;
/// The run was interrupted by SIGTERM: 128 + 15.
pub const EXIT_SIGTERM: u8 = 143;

/// The exit status of the signal that stopped the run (0: none yet).
static SIGNAL_EXIT: AtomicU8 = AtomicU8::new(0);

#[derive(Debug, Parser)]
#[command(
    name = "taskfarm-worker",
    version,
    long_version = long_version(),
    about = "Runs an operation spec (TOML or YAML) on the serial, local or mpi backend.",
    after_help = "Exit status: 0 all processes finished, 1 some crashed, 2 bad input or usage, 3 an I/O failure, 75 stopped at its deadline or SIGUSR1 (resumable), 130/143 stopped by SIGINT/SIGTERM (resumable)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// More log records on the console (-v: info, -vv: debug); operation.log gets info and
    /// up, and debug with -vv.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// No progress display and only errors on the console (the final summary is still printed).
    #[arg(short, long, global = true)]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs every process of a spec and writes the result directory.
    Run(RunArgs),
    /// Parses and checks a spec, counts its processes and shows the first few; runs nothing.
    Validate {
        /// The spec file (.toml, .yaml or .yml), or `-` for a spec on standard input.
        spec: PathBuf,
        /// How many processes to show as they will run (for the command kind: the argv,
        /// env, cwd and files; for other kinds: the fields).
        #[arg(long, value_name = "N")]
        show: Option<usize>,
    },
    /// Lists the process kinds this worker knows, with a line of help each.
    Kinds,
    /// Shows what happened in a run: counts, wall time, worker utilisation, the slowest
    /// processes, crash reasons, and the command that finishes it if anything is missing.
    Report {
        /// The run's result directory (results/<name>/<timestamp>, or results/<name> for
        /// the latest run).
        dir: PathBuf,
        /// Print the report as one JSON object, for scripts.
        #[arg(long)]
        json: bool,
        /// (Re)write the run's report.html (the page consolidation writes) and print its path.
        #[arg(long, conflicts_with = "json")]
        html: bool,
    },
    /// Prints what a process wrote: its stdout on stdout, its stderr on stderr (kept by a
    /// `command` spec with output = "files" or "log").
    Log {
        /// The run's result directory, or results/<name> for the latest run.
        dir: PathBuf,
        /// The process id (the `id` column of results.csv).
        id: u64,
    },
    /// Shows where a run stands, live or not: counts, rate, ETA, the longest-running
    /// processes, crashes so far by reason; for a stopped run, the command that finishes it.
    Status {
        /// The run's result directory, results/<name> for the latest run, or a spec file for
        /// the latest run of its operation (under --results).
        dir: PathBuf,
        /// Redraw every second until the run ends.
        #[arg(long)]
        watch: bool,
        /// Where the runs of a spec given instead of a directory are (as `run --results`).
        #[arg(long, value_name = "DIR", default_value = "results")]
        results: PathBuf,
    },
    /// Submits the operation as a Slurm batch job: checks the spec, writes the batch script
    /// next to its results and calls sbatch with this worker's path (see examples/slurm/).
    Submit(crate::submit::SubmitArgs),
    /// Stops a running run from outside, as Ctrl-C would (no new process starts; what runs
    /// finishes; everything is journaled and consolidated). Works from any host that sees
    /// the result directory, under mpirun too.
    Cancel {
        /// The run's result directory, results/<name> for the latest run, or a spec file for
        /// the latest run of its operation (under --results).
        dir: PathBuf,
        /// Where the runs of a spec given instead of a directory are (as `run --results`).
        #[arg(long, value_name = "DIR", default_value = "results")]
        results: PathBuf,
        /// Stop now, as a second Ctrl-C: running processes are cut short.
        #[arg(long)]
        now: bool,
    },
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The spec file (.toml, .yaml or .yml), or `-` for a spec on standard input.
    #[arg(required_unless_present = "command")]
    spec: Option<PathBuf>,
    #[command(flatten)]
    quick: crate::quick::QuickArgs,
    /// serial, local or mpi (default: the spec's `backend`, else local).
    #[arg(long, value_name = "NAME")]
    backend: Option<String>,
    /// Threads of the local backend (default: one per core).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    pool_size: Option<usize>,
    /// Units each MPI worker keeps in flight (default 2).
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    prefetch: Option<usize>,
    /// Processes each MPI worker rank runs at once, on its own thread pool (default: the
    /// spec's `threads_per_rank`, else 1). With one rank per node, its number of cores.
    #[arg(long, value_name = "N", value_parser = at_least_one)]
    threads_per_rank: Option<usize>,
    /// Where result directories go: <DIR>/<name>/<UTC timestamp>/.
    #[arg(long, value_name = "DIR", default_value = "results")]
    results: PathBuf,
    /// Finish an earlier run of the same spec: run only the processes without a record in
    /// DIR (a result directory such as results/<name>/<timestamp>), append to its journal
    /// and rewrite its consolidated files.
    #[arg(long, value_name = "DIR")]
    resume: Option<PathBuf>,
    /// With --resume: run the processes that crashed again too.
    #[arg(long, requires = "resume")]
    rerun_crashed: bool,
    /// Start no process that would not end before this time: a duration from now (`90m`,
    /// `2h`) or a time (`2026-12-02T18:00:00Z`). Inside a Slurm allocation: its end, unless
    /// given. The run then ends resumable, with exit status 75 (as it does at SIGUSR1, a
    /// batch system's early warning).
    #[arg(long, value_name = "TIME")]
    deadline: Option<String>,
    /// Time kept free before the deadline, to journal and consolidate (default: 10 % of the
    /// time left, between 10 s and 60 s).
    #[arg(long, value_name = "DURATION", value_parser = taskfarm::run_control::parse_duration)]
    deadline_margin: Option<Duration>,
    /// In a Slurm job started by the batch script: when the deadline leaves processes
    /// without a record, submit a job that resumes the run after this one, up to N
    /// allocations in all.
    #[arg(long = "continue", value_name = "N", value_parser = at_least_one)]
    continue_up_to: Option<usize>,
    /// Learn how long processes take from earlier runs of this operation (a result
    /// directory, or results/<name> for all its runs), to start the longest first and
    /// predict the ETA; repeatable.
    #[arg(long, value_name = "DIR")]
    history: Vec<PathBuf>,
    /// Accept a --pool-size or --threads-per-rank above 64 threads per core of this machine.
    #[arg(long)]
    force: bool,
}

/// What `--version` prints after the program's name: the version, then the backends this
/// build has (a line that `submit` reads to refuse a worker without MPI).
fn long_version() -> &'static str {
    match (taskfarm::has_backend("local"), taskfarm::has_backend("mpi")) {
        (true, true) => concat!(env!("CARGO_PKG_VERSION"), "\nbackends: serial, local, mpi"),
        (true, false) => concat!(env!("CARGO_PKG_VERSION"), "\nbackends: serial, local"),
        (false, true) => concat!(env!("CARGO_PKG_VERSION"), "\nbackends: serial, mpi"),
        (false, false) => concat!(env!("CARGO_PKG_VERSION"), "\nbackends: serial"),
    }
}

fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("`{text}` is not a whole number")),
    }
}

/// Runs the command line with the program's arguments and the kinds of `registry`
/// (installed for the whole program): the `main` of a worker binary.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     taskfarm_worker::main_with(taskfarm_worker::Registry::with_builtins())
/// }
/// ```
///
/// It first serves as a subprocess-isolation child when started as one (`TASKFARM_CHILD=1`:
/// runs one process and exits), then installs the Ctrl-C / SIGTERM handlers (see the
/// [module docs](self)).
pub fn main_with(registry: Registry) -> ExitCode {
    if taskfarm::process_tools::in_child() {
        registry.install();
        taskfarm::run_child_if_requested::<SpecProcess>();
    }
    install_signal_handlers();
    let code = run_with_args(registry, std::env::args_os());
    if code == EXIT_SIGINT || code == EXIT_SIGTERM {
        // Interrupted: what finished is journaled and consolidated. Under mpirun the job is
        // being torn down and a lost rank would never join MPI's finalization, so leave now.
        std::process::exit(i32::from(code));
    }
    ExitCode::from(code)
}

/// Like [`main_with`] with explicit arguments (the first is the program name); returns the
/// exit status (see the [module docs](self)).
pub fn run_with_args<I, T>(registry: Registry, args: I) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { EXIT_BAD_INPUT } else { EXIT_OK };
        }
    };
    registry.install();
    install_logging(cli.verbose, cli.quiet);
    let quiet = cli.quiet;
    let result = match cli.command {
        Command::Run(args) => run(&registry, args, quiet),
        Command::Validate { spec, .. } if crate::chain::is_chain_file(&spec) => {
            crate::chain::validate(&registry, &spec).map(|()| EXIT_OK)
        }
        Command::Validate { spec, show } => validate(&registry, spec, show).map(|()| EXIT_OK),
        Command::Kinds => {
            kinds(&registry);
            Ok(EXIT_OK)
        }
        Command::Report { dir, .. } if crate::chain::chain_dir(&dir).is_some() => {
            crate::chain::report(&crate::chain::chain_dir(&dir).unwrap_or(dir))
        }
        Command::Report { dir, json, html } => {
            crate::observe::run_dir(&dir).and_then(|dir| report_run(&registry, &dir, json, html))
        }
        Command::Log { dir, id } => crate::observe::run_dir(&dir).and_then(|dir| {
            crate::output::print(&dir, id, &mut std::io::stdout().lock(), &mut std::io::stderr().lock())
                .map(|()| EXIT_OK)
        }),
        Command::Status { dir, watch, results } => crate::observe::observed_dir(&dir, &results, &registry)
            .and_then(|dir| crate::observe::status(&dir, watch, |d| resume_command(d, false))),
        Command::Submit(args) => crate::submit::submit(&registry, args),
        Command::Cancel { dir, now, results } => crate::observe::observed_dir(&dir, &results, &registry)
            .and_then(|dir| crate::observe::cancel(&dir, now, |d| resume_command(d, false))),
    };
    result.unwrap_or_else(|e| {
        // Under mpirun every rank reads the same spec and meets the same error: rank 0 says it.
        if is_mpi_worker_rank() {
            return if e.is_io() { EXIT_IO } else { EXIT_BAD_INPUT };
        }
        eprintln!("error: {e}");
        if let Some(dir) = e.resumable_dir() {
            eprintln!("taskfarm: what finished is in the journal; to finish the run: {}", resume_command(dir, false));
        }
        if e.is_io() {
            EXIT_IO
        } else {
            EXIT_BAD_INPUT
        }
    })
}

/// Log records go to the console (warnings and errors by default; `-v` info, `-vv` debug,
/// `-q` errors only) and to the run's `operation.log` (debug and above: every process's
/// records).
fn install_logging(verbose: u8, quiet: bool) {
    use tracing::Level;
    let console = match (quiet, verbose) {
        (true, _) => Level::ERROR,
        (false, 0) => Level::WARN,
        (false, 1) => Level::INFO,
        (false, _) => Level::DEBUG,
    };
    // Processes may log a DEBUG line each (a million lines for a million processes): the
    // file takes them with -vv only, like the console.
    let file = if verbose >= 2 { Level::DEBUG } else { Level::INFO };
    taskfarm::oplog::install(Some(console), file);
}

/// The command that finishes (or re-runs the crashed processes of) the run in `dir`.
fn resume_command(dir: &std::path::Path, rerun_crashed: bool) -> String {
    let program = std::env::args().next().unwrap_or_else(|| "taskfarm-worker".into());
    let spec = dir.join(taskfarm::results::files::OPERATION);
    let flag = if rerun_crashed { " --rerun-crashed" } else { "" };
    format!("{program} run {} --resume {}{flag}", spec.display(), dir.display())
}

fn kinds(registry: &Registry) {
    let width = registry.names().iter().map(|n| n.len()).max().unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for kind in registry.kinds() {
        let _ = writeln!(out, "{:width$}  {}", kind.name(), kind.help());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn pool_size_must_be_positive() {
        assert_eq!(at_least_one("3"), Ok(3));
        assert!(at_least_one("0").unwrap_err().contains("at least 1"));
        assert!(at_least_one("x").is_err());
    }
}
