//! `run SPEC`: a spec (or a chain) run on its backend, with its deadline and its history,
//! and the summary printed when it ends.

use std::io::Write;
use std::sync::atomic::Ordering;

use taskfarm::{create_backend, BackendOptions, ProgressMode, Summary};

use super::signals::is_mpi_worker_rank;
use super::{resume_command, RunArgs, EXIT_CRASHED, EXIT_OK, EXIT_SIGINT, EXIT_UNFINISHED, SIGNAL_EXIT};
use crate::{Registry, WorkerError};

pub(super) fn run(registry: &Registry, args: RunArgs, quiet: bool) -> Result<u8, WorkerError> {
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
        let cores = taskfarm::run_control::default_pool_size();
        let limit = cores.saturating_mul(crate::limits::MAX_THREADS_PER_CORE);
        for (option, asked) in [("--pool-size", args.pool_size), ("--threads-per-rank", args.threads_per_rank)] {
            if let Some(asked) = asked.filter(|&n| n > limit) {
                return Err(WorkerError::TooManyThreads { option, asked, cores, limit });
            }
        }
    }
    options = options.threads_per_rank(threads_per_rank);
    let kind: taskfarm::BackendKind =
        backend_name.parse().map_err(|e: taskfarm::UnknownBackend| WorkerError::Usage(e.to_string()))?;
    match kind {
        taskfarm::BackendKind::Mpi => spec.check_threads(threads_per_rank, "each MPI worker rank has")?,
        taskfarm::BackendKind::Local => {
            let pool = args.pool_size.unwrap_or_else(taskfarm::run_control::default_pool_size);
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
    let dir = taskfarm::run_control::lock::held_dir();
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
