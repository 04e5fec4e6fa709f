//! The master (rank 0) under MPI: starts the workers, runs the [`Scheduler`] over the
//! [`Wire`] (the dispatch loop and its policy live in `scheduler/` and `policy.rs`, apart
//! from MPI), and ends every worker cleanly — or, when it cannot go on, abandons them and,
//! if they do not stop in time, aborts the job.

use std::collections::BTreeSet;
use std::sync::Once;
use std::time::{Duration, Instant};

use backend_core::{Collector, Dispatch, Location, Process, Status};
use mpi::topology::{Communicator, Rank};

use crate::env::{Mpi, Wire};
use crate::message::Message;
use crate::output::Incoming;
use crate::policy::{Policy, MAX_BATCH};
use crate::scheduler::{Ended, Jobs, Retries, Scheduler, Speculation};
use crate::Error;

/// How long abandoned workers get to finish their current process before the job is aborted.
const ABANDON_GRACE: Duration = Duration::from_secs(10);

/// Runs the staged operation on the master: alone with a world of one rank, else with the
/// workers. Every worker is released (shut down or abandoned) before this returns.
pub(crate) fn run<P: Process>(
    mpi: &Mpi,
    prefetch: usize,
    threads_per_rank: usize,
    dispatch: Dispatch<P>,
    collector: &mut Collector,
) -> Result<(), Error> {
    if mpi.size <= 1 {
        return run_alone(mpi, dispatch, collector);
    }
    let Dispatch { jobs, dir, len, options, waits_for_records } = dispatch;
    let jobs = if waits_for_records { crate::scheduler::fed(jobs)? } else { Jobs::Source(jobs) };
    let mut wire = Wire::new(&mpi.world);
    let workers = usize::try_from(mpi.size - 1).unwrap_or(0);
    let policy = Policy::new(workers, prefetch, threads_per_rank, options.process_threads(), len, max_batch());
    collector.learner().set_slots(workers * threads_per_rank.max(1) / options.process_threads().max(1));
    let mut scheduler = Scheduler::new(policy, jobs, dir.clone());
    // With two workers or more, the master runs each retry on another rank (a crash may be
    // the node's fault): workers run every job once. With one, the worker retries itself.
    let mut worker_options = options;
    if options.retries > 0 && mpi.size > 2 {
        scheduler.retries = Some(Retries::new(options.retries));
        worker_options.retries = 0;
    }
    // With two workers or more, a straggler may run a copy on another rank.
    if options.speculate && mpi.size > 2 {
        scheduler.speculation = Some(Speculation::default());
    }
    let start = Message::<P>::Start { dir, options: worker_options, threads_per_rank };
    let outcome = start.encode().and_then(|start| {
        for worker in 1..mpi.size {
            wire.send(worker, &start);
        }
        scheduler.run(&mut wire, collector)
    });
    // Whatever the outcome, the workers hold nothing the status file should still list.
    backend_core::status::set_running_elsewhere(Vec::new());
    match outcome {
        Ok(Ended::Complete) => shut_down::<P>(&mut wire, mpi.size, &mut scheduler.outputs),
        // The job is being torn down, or rank 0 alone was stopped: no goodbyes (a lost rank
        // or one inside a long process would never answer); what finished is journaled and
        // the caller consolidates it, then the program's end aborts the job, which ends
        // every worker with it.
        Ok(Ended::Interrupted) => {
            crate::env::leave_by_abort();
            Ok(())
        }
        Err(error) => {
            abandon::<P>(mpi, &mut wire, &error, Some(collector));
            Err(error)
        }
    }
}

/// A world of one rank: rank 0 runs every process itself, one after another.
fn run_alone<P: Process>(mpi: &Mpi, dispatch: Dispatch<P>, collector: &mut Collector) -> Result<(), Error> {
    static SAID: Once = Once::new();
    SAID.call_once(|| eprintln!("the MPI world has one rank: running the operation on rank 0 itself"));
    let location = Location { host: mpi.host.clone(), worker: format!("rank-{}", mpi.rank) };
    Ok(backend_core::run_serially(dispatch, collector, &location)?)
}

/// [`MAX_BATCH`], or `TASKFARM_MPI_MAX_BATCH` from the environment (1 switches batching
/// off; `cargo xtask bench` measures dispatch both ways).
fn max_batch() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| {
        std::env::var("TASKFARM_MPI_MAX_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(MAX_BATCH).max(1)
    })
}

/// Tells every worker that the work is done and waits for each one's `Bye`, writing the
/// kept output that was still on its way (a worker sends all of it before its `Bye`).
fn shut_down<P: Process>(wire: &mut Wire<'_>, size: Rank, outputs: &mut Incoming) -> Result<(), Error> {
    let bytes = Message::<P>::Shutdown.encode()?;
    for worker in 1..size {
        wire.send(worker, &bytes);
    }
    let mut waiting: BTreeSet<Rank> = (1..size).collect();
    let mut failure = None;
    while !waiting.is_empty() {
        let (from, bytes) = wire.receive();
        match Message::<P>::decode(from, &bytes) {
            Ok(Message::Bye { .. }) => {
                waiting.remove(&from);
            }
            Ok(Message::Log(lines)) => backend_core::oplog::append_forwarded(&lines),
            Ok(Message::Output(chunks)) => match outputs.take(from, chunks) {
                Ok(Some(bytes)) => match (Message::<P>::OutputTaken { bytes }).encode() {
                    Ok(taken) => wire.send(from, &taken),
                    Err(error) => failure = Some(error),
                },
                Ok(None) => {}
                Err(error) => failure = Some(error),
            },
            Ok(Message::Failed { reason }) => failure = Some(Error::WorkerFailed { rank: from, reason }),
            Ok(other) => failure = Some(Error::Unexpected { from, what: other.kind() }),
            Err(error) => failure = Some(error),
        }
    }
    failure.map_or(Ok(()), Err)
}

/// Tells every worker to stop (it drops its queue) and waits for each one's `Bye`; workers
/// still busy after a grace period are stopped by aborting the job, after saying why.
/// Finished records that were on their way when the workers were told to stop still reach
/// the `collector`, when there is one: a finished process is not run again on `--resume`.
pub(crate) fn abandon<P: Process>(
    mpi: &Mpi,
    wire: &mut Wire<'_>,
    error: &Error,
    mut collector: Option<&mut Collector>,
) {
    if let Ok(bytes) = Message::<P>::Abandon.encode() {
        for worker in 1..mpi.size {
            wire.send(worker, &bytes);
        }
    }
    let deadline = Instant::now() + ABANDON_GRACE;
    let mut waiting: BTreeSet<Rank> = (1..mpi.size).collect();
    while !waiting.is_empty() {
        match wire.receive_until(deadline) {
            Some((from, bytes)) => match Message::<P>::decode(from, &bytes) {
                Ok(Message::Bye { .. }) => {
                    waiting.remove(&from);
                }
                Ok(Message::Results(framed)) => {
                    let (Some(collector), Ok(records)) = (collector.as_deref_mut(), framed.records(from)) else {
                        continue;
                    };
                    for (head, frame) in records.into_iter().filter(|(head, _)| head.status == Status::Finished) {
                        // The run has failed already: a record that cannot be journaled now
                        // runs again on `--resume`.
                        let _ = collector.record_frame(head.status, head.duration_s, frame);
                    }
                }
                _ => {}
            },
            None => {
                let busy: Vec<String> = waiting.iter().map(|r| format!("rank-{r}")).collect();
                eprintln!(
                    "taskfarm: {error}; {} still running a process after {}s: aborting the MPI job",
                    busy.join(", "),
                    ABANDON_GRACE.as_secs()
                );
                mpi.world.abort(1);
            }
        }
    }
}
