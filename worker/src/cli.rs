//! The command line of `taskfarm-worker` (and of a user's own worker binary):
//! `run`, `validate` and `kinds`.
//!
//! Exit status: 0 when every process finished (and on an MPI worker rank, which prints
//! nothing); 1 when the operation ran but some processes crashed or timed out (their records
//! are in `crashed.jsonl`); 2 for bad input or usage (a clear `error: ...` line on stderr,
//! nothing run) and for an operation that could not run (e.g. an unwritable results
//! directory); 3 when reading or writing a file failed while running (e.g. the disk is
//! full: the command that finishes the run is printed when its directory holds a journal);
//! 130 after Ctrl-C (SIGINT) and 143 after SIGTERM.
//!
//! **Ctrl-C / SIGTERM** ([`main_with`] installs the handlers): the first signal stops
//! dispatching (no new process starts), lets the running processes finish, journals and
//! consolidates what finished and prints the command that resumes the run; a second signal
//! stops now: running commands and subprocesses are killed, their records are dropped (they
//! run again on `--resume`), and the run is consolidated at once.
//!
//! This module is for parsing arguments and reporting; loading specs is [`crate::spec`].

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use clap::{Parser, Subcommand};
use taskfarm::{create_backend, BackendOptions, Count, ProgressMode, Summary};

use crate::spec::Spec;
use crate::{Registry, SpecProcess, WorkerError};

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
/// The run stopped at its deadline with processes left: resumable (`EX_TEMPFAIL`).
pub const EXIT_UNFINISHED: u8 = 75;
/// The run was interrupted by SIGTERM: 128 + 15.
pub const EXIT_SIGTERM: u8 = 143;

/// The exit status of the signal that stopped the run (0: none yet).
static SIGNAL_EXIT: AtomicU8 = AtomicU8::new(0);
/// How long "stop now" waits for processes that cannot be killed (thread isolation).
const STOP_NOW_GRACE: Duration = Duration::from_secs(5);

/// How many processes `validate` lists.
const SHOWN: usize = 5;

#[derive(Debug, Parser)]
#[command(
    name = "taskfarm-worker",
    version,
    about = "Runs an operation spec (TOML or YAML) on the serial, local or mpi backend.",
    after_help = "Exit status: 0 all processes finished, 1 some crashed, 2 bad input or usage, 3 an I/O failure, 75 stopped at --deadline (resumable), 130/143 stopped by SIGINT/SIGTERM (resumable)."
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
        /// The run's result directory, or results/<name> for the latest run.
        dir: PathBuf,
        /// Redraw every second until the run ends.
        #[arg(long)]
        watch: bool,
    },
    /// Submits the operation as a Slurm batch job: checks the spec, writes the batch script
    /// next to its results and calls sbatch with this worker's path (see examples/slurm/).
    Submit(crate::submit::SubmitArgs),
    /// Stops a running run from outside, as Ctrl-C would (no new process starts; what runs
    /// finishes; everything is journaled and consolidated). Works from any host that sees
    /// the result directory, under mpirun too.
    Cancel {
        /// The run's result directory, or results/<name> for the latest run.
        dir: PathBuf,
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
    /// given. The run then ends resumable, with exit status 75.
    #[arg(long, value_name = "TIME")]
    deadline: Option<String>,
    /// Time kept free before the deadline, to journal and consolidate (default: 10 % of the
    /// time left, between 10 s and 60 s).
    #[arg(long, value_name = "DURATION", value_parser = taskfarm::parse_duration)]
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
    if backend_core::in_child() {
        registry.install();
        backend_core::run_child_if_requested::<SpecProcess>();
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

/// On SIGINT or SIGTERM: the first stops dispatching, the second stops now (kills running
/// commands and subprocesses; exits after a grace period if processes in threads go on).
fn install_signal_handlers() {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) else {
        eprintln!("taskfarm: warning: Ctrl-C handling could not be installed; Ctrl-C stops the run at once");
        return;
    };
    let spawned = std::thread::Builder::new().name("taskfarm-signals".into()).spawn(move || {
        for signal in signals.forever() {
            let (code, name) = if signal == SIGTERM { (EXIT_SIGTERM, "SIGTERM") } else { (EXIT_SIGINT, "Ctrl-C") };
            let _ = SIGNAL_EXIT.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
            taskfarm::set_stop_exit_status(code);
            if is_mpi_worker_rank() {
                // A worker rank's records are the master's once sent: a signal to a worker
                // rank (mpirun tearing the job down, or one rank stopped on its own) ends it
                // now; the master journals what arrived, consolidates and reports what was
                // unfinished. The processes it runs die with it (the guardian kills their
                // groups once it is gone): killed before it, they would be reported to the
                // master as crashed. Leaving from this thread skips MPI's finalization,
                // which the master would never join.
                std::process::exit(i32::from(code));
            }
            if taskfarm::lock::held_dir().is_none() {
                // No run is staged (the spec is still being read or counted): nothing runs
                // and nothing is to be saved, so stop now.
                eprintln!("\ntaskfarm: {name}: stopped before any process started");
                std::process::exit(i32::from(code));
            }
            if backend_core::request_stop() == 1 {
                eprintln!(
                    "\ntaskfarm: {name}: no new process starts; waiting for the running ones to finish \
                     (send it again to stop now)"
                );
                checkpoint_now();
                continue;
            }
            eprintln!(
                "\ntaskfarm: {name} again: stopping now; running processes are cut short and run again on --resume"
            );
            backend_core::kill_running_children();
            std::thread::spawn(move || {
                std::thread::sleep(STOP_NOW_GRACE);
                eprintln!("taskfarm: processes still running after {}s: exiting", STOP_NOW_GRACE.as_secs());
                std::process::exit(i32::from(code));
            });
        }
    });
    if spawned.is_err() {
        eprintln!("taskfarm: warning: Ctrl-C handling could not be installed; Ctrl-C stops the run at once");
    }
}

/// Whether this program is an MPI worker rank (a rank other than 0 of a launcher's job).
fn is_mpi_worker_rank() -> bool {
    ["OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK"]
        .iter()
        .find_map(|name| std::env::var(name).ok())
        .is_some_and(|rank| rank.trim() != "0")
}

/// After a first signal, on the program coordinating a run: says how to resume it and
/// consolidates what finished so far, at once. A launcher or a batch system that follows
/// its signal with SIGKILL (mpirun after a second, Slurm after its KillWait) may not leave
/// the run time to end by itself; what finished is then in results.csv all the same.
fn checkpoint_now() {
    let Some(dir) = taskfarm::lock::held_dir() else { return };
    eprintln!("taskfarm: to finish the run later: {}", resume_command(&dir, false));
    let spawned = std::thread::Builder::new().name("taskfarm-checkpoint".into()).spawn(move || {
        if let Err(e) = taskfarm::results::consolidate_dir(&dir) {
            eprintln!("taskfarm: what finished could not be consolidated yet: {e}");
        }
    });
    if let Err(e) = spawned {
        eprintln!("taskfarm: what finished could not be consolidated yet: {e}");
    }
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
        Command::Status { dir, watch } => crate::observe::status(&dir, watch, |d| resume_command(d, false)),
        Command::Submit(args) => crate::submit::submit(&registry, args),
        Command::Cancel { dir, now } => crate::observe::cancel(&dir, now, |d| resume_command(d, false)),
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

fn run(registry: &Registry, args: RunArgs, quiet: bool) -> Result<u8, WorkerError> {
    if let Some(chain) = args.spec.as_deref().filter(|path| crate::chain::is_chain_file(path)) {
        let (backend, pool_size, results, resume) = (args.backend, args.pool_size, args.results, args.resume);
        return crate::chain::run(
            registry,
            chain,
            crate::chain::ChainArgs { backend, pool_size, results, resume, quiet },
        );
    }
    let spec = crate::quick::load(args.spec.as_deref(), &args.quick, registry)?;
    let backend_name = args.backend.as_deref().or(spec.backend()).unwrap_or("local").to_owned();
    let mut options = BackendOptions::default();
    if let Some(n) = args.pool_size {
        options = options.pool_size(n);
    }
    if let Some(n) = args.prefetch {
        options = options.prefetch(n);
    }
    let threads_per_rank = args.threads_per_rank.or(spec.threads_per_rank()).unwrap_or(1);
    if !args.force {
        let cores = taskfarm::default_pool_size();
        let limit = cores.saturating_mul(crate::limits::MAX_THREADS_PER_CORE);
        for (option, asked) in [("--pool-size", args.pool_size), ("--threads-per-rank", args.threads_per_rank)] {
            if let Some(asked) = asked.filter(|&n| n > limit) {
                return Err(WorkerError::TooManyThreads { option, asked, cores, limit });
            }
        }
    }
    options = options.threads_per_rank(threads_per_rank);
    if backend_name == "mpi" && spec.adaptive().is_some() {
        return Err(WorkerError::Usage(
            "adaptive runs (`runs = { min, max, until }`) run on the serial and local backends: use --backend local"
                .into(),
        ));
    }
    let kind: taskfarm::BackendKind =
        backend_name.parse().map_err(|e: taskfarm::UnknownBackend| WorkerError::Usage(e.to_string()))?;
    match kind {
        taskfarm::BackendKind::Mpi => spec.check_threads(threads_per_rank, "each MPI worker rank has")?,
        taskfarm::BackendKind::Local => {
            let pool = args.pool_size.unwrap_or_else(taskfarm::default_pool_size);
            spec.check_threads(pool, "the local pool has")?;
        }
        taskfarm::BackendKind::Serial => {}
    }
    let mut backend = create_backend(&backend_name, &options)?;
    let progress = if quiet { ProgressMode::Quiet } else { ProgressMode::Auto };
    let mut operation =
        spec.into_operation().with_results_base(&args.results).with_progress(progress).with_history(args.history);
    if let Some(dir) = &args.resume {
        operation = operation.resume_from(dir, args.rerun_crashed);
    }
    // Only the coordinator dispatches (under mpirun every rank reads the arguments).
    if !is_mpi_worker_rank() {
        if let Some(deadline) = crate::allocation::deadline(args.deadline.as_deref(), args.deadline_margin)? {
            operation = operation.with_deadline(deadline);
        }
    }
    // Backend::run's steps, so that a failure after staging can name the run's directory.
    backend.stage_in(operation)?;
    let dir = taskfarm::lock::held_dir();
    let ran = backend.execute().and_then(|()| backend.retrieve(None));
    let consolidated = backend.consolidate();
    let cleaned = backend.cleanup();
    let summary = ran.and(consolidated).and_then(|summary| cleaned.map(|()| summary)).map_err(|e| match dir {
        Some(dir) => WorkerError::RunFailed { dir, source: Box::new(e) },
        None => WorkerError::from(e),
    })?;
    if !summary.is_report() {
        return Ok(EXIT_OK);
    }
    report(&summary);
    crate::allocation::note(&summary);
    if summary.deadline_reached && summary.missing() > 0 {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "stopped at the deadline: no process that could not end before it started; to finish the run:"
        );
        let _ = writeln!(out, "  {}", resume_command(&summary.dir, false));
        if let Some(cap) = args.continue_up_to {
            let cap = u32::try_from(cap).unwrap_or(u32::MAX);
            match crate::allocation::continue_run(&summary, cap) {
                Ok(Some(said)) => {
                    let _ = writeln!(out, "{said}");
                }
                Ok(None) => {}
                Err(e) => eprintln!("error: {e}"),
            }
        }
        return Ok(EXIT_UNFINISHED);
    }
    if summary.interrupted {
        let code = match SIGNAL_EXIT.load(Ordering::SeqCst) {
            0 => EXIT_SIGINT,
            code => code,
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "interrupted: what finished is in the result directory; to finish the run:");
        let _ = writeln!(out, "  {}", resume_command(&summary.dir, false));
        return Ok(code);
    }
    Ok(if summary.crashed == 0 && summary.missing() == 0 { EXIT_OK } else { EXIT_CRASHED })
}

fn report(summary: &Summary) {
    let total = summary.total.map(|t| format!(" of {t}")).unwrap_or_default();
    // A timed-out process is counted as timed out, not as crashed.
    let timed_out = match summary.timed_out {
        0 => String::new(),
        n => format!(", {n} timed out"),
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}: {} finished, {} crashed{timed_out}{total} in {:.2} s on the {} backend",
        summary.name,
        summary.finished,
        summary.crashed.saturating_sub(summary.timed_out),
        summary.wall.as_secs_f64(),
        summary.backend
    );
    if summary.missing() > 0 {
        let _ = writeln!(out, "{} processes have no record; to run them:", summary.missing());
        let _ = writeln!(out, "  {}", resume_command(&summary.dir, false));
    }
    if summary.crashed > 0 {
        let crashed = summary.dir.join(taskfarm::results::files::CRASHED_JSONL);
        let _ = writeln!(out, "crash records: {}", crashed.display());
        let _ = writeln!(out, "to run the crashed processes again: {}", resume_command(&summary.dir, true));
    }
    if !summary.damage.is_none() {
        let _ = writeln!(out, "note: the journal was damaged: {}", summary.damage);
    }
    let _ = writeln!(out, "result directory: {}", summary.dir.display());
    let _ = writeln!(out, "results: {}", summary.results_csv().display());
}

fn report_run(registry: &Registry, dir: &std::path::Path, json: bool, html: bool) -> Result<u8, WorkerError> {
    let spec_path = dir.join(taskfarm::results::files::OPERATION);
    if !spec_path.is_file() || !dir.join(taskfarm::results::files::JOURNAL).is_file() {
        return Err(taskfarm::CoreError::NotARun { path: dir.to_owned(), missing: "operation.toml or journal" }.into());
    }
    taskfarm::results::check_format(dir)?;
    if html {
        let page = taskfarm::results::write_report_page(dir)?;
        let _ = writeln!(std::io::stdout().lock(), "{}", page.display());
        return Ok(EXIT_OK);
    }
    let spec = Spec::load(&spec_path, registry)?;
    let report = taskfarm::report::RunReport::from_dir(dir)?;
    let mut out = std::io::stdout().lock();
    if json {
        let holder = taskfarm::lock::RunLock::holder(dir)?;
        let count = spec.count_within(COUNT_BUDGET)?;
        let object = serde_json::json!({
            "run": dir,
            "operation": spec.name(),
            "kind": spec.kind(),
            "total": count.exact(),
            "total_at_least": count.at_least(),
            "missing_at_least": count.at_least().saturating_sub(report.recorded),
            "running": holder,
            "allocations": crate::allocation::allocations(dir),
            "report": report,
        });
        let _ = writeln!(out, "{object}");
        return Ok(EXIT_OK);
    }
    let _ = writeln!(out, "run: {} (operation `{}`, kind `{}`)", dir.display(), spec.name(), spec.kind());
    let _ = write!(out, "{report}");
    crate::chain::print_summary(dir, &mut out);
    if let Some(allocations) = crate::allocation::describe(dir) {
        let _ = writeln!(out, "{allocations}");
    }
    let count = spec.count_within(COUNT_BUDGET)?;
    let missing = count.at_least().saturating_sub(report.recorded);
    let resume = resume_command(dir, false);
    let total = describe_count(count);
    let adaptive_left = crate::chain::adaptive_points_left(&spec, dir).filter(|&n| n > 0);
    if let Some(holder) = taskfarm::lock::RunLock::holder(dir)? {
        let _ = writeln!(
            out,
            "running: the run is still going ({holder}); {missing} of {total} processes have no record yet"
        );
    } else if let Some(left) = adaptive_left {
        let _ = writeln!(out, "missing: {left} parameter points need more runs; to run them:\n  {resume}");
    } else if missing > 0 {
        let _ = writeln!(out, "missing: {missing} of {total} processes have no record; to run them:\n  {resume}");
    } else if count.exact().is_none() {
        let _ = writeln!(
            out,
            "{} processes recorded of {total}: whether any is missing is not known; to run those that are:\n  {resume}",
            report.recorded
        );
    } else if report.crashed > 0 {
        let _ = writeln!(out, "to run the crashed processes again:\n  {}", resume_command(dir, true));
    } else {
        let _ = writeln!(out, "complete: every process has a record");
    }
    Ok(EXIT_OK)
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

fn validate(registry: &Registry, path: PathBuf, show: Option<usize>) -> Result<(), WorkerError> {
    let spec = crate::quick::load(Some(&path), &Default::default(), registry)?;
    let mut out = std::io::stdout().lock();
    let parameters =
        if spec.parameter_names().is_empty() { "none".to_owned() } else { spec.parameter_names().join(", ") };
    let _ = writeln!(out, "{}: operation `{}` of kind `{}`", path.display(), spec.name(), spec.kind());
    let _ = writeln!(out, "parameters: {parameters}");
    let count = spec.count_within(COUNT_BUDGET)?;
    let _ = writeln!(out, "processes: {} ({}){}", describe_count(count), spec.describe_runs(), removed(&spec, count));
    // Only processes counting met: finding more could take as long as counting did.
    let shown = count.at_least().min(show.unwrap_or(SHOWN) as u64);
    let kind = registry.get(spec.kind());
    for job in spec.into_operation().into_jobs().take(shown as usize) {
        let params: Vec<String> = job.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(out, "  #{} run {}: {}", job.id, job.run, params.join(" "));
        if show.is_some() {
            for line in
                kind.as_ref().map(|k| k.preview(&job.process.config, job.id, job.run, &job.params)).unwrap_or_default()
            {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    match count {
        Count::Exact(total) if total > shown => {
            let _ = writeln!(out, "  ... and {} more", total - shown);
        }
        Count::AtLeast { .. } => {
            let _ = writeln!(out, "  ... and more");
        }
        Count::Exact(_) => {}
    }
    let _ = writeln!(out, "ok: the spec is valid (nothing was run)");
    Ok(())
}

/// `; 20 combinations, 5 removed by the constraints` when constraints removed any.
fn removed(spec: &Spec, count: Count) -> String {
    match count {
        Count::Exact(n) => {
            let all = spec.unconstrained_len();
            let kept = n / u64::from(spec.runs().max(1));
            if all > kept {
                format!("; {all} combinations, {} removed by the constraints", all - kept)
            } else {
                String::new()
            }
        }
        Count::AtLeast { .. } => String::new(),
    }
}

/// How long `validate` and `report` count the processes of a constrained space.
const COUNT_BUDGET: Duration = Duration::from_secs(2);

/// `12`, or `at least 12 (counting stopped after 2 s: 10000 of 10^20 combinations examined)`.
fn describe_count(count: Count) -> String {
    match count {
        Count::Exact(n) => n.to_string(),
        Count::AtLeast { admitted, examined, of } => format!(
            "at least {admitted} (counting stopped after {} s: {examined} of {of} parameter combinations examined)",
            COUNT_BUDGET.as_secs()
        ),
    }
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
