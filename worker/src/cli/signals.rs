//! Ctrl-C and SIGTERM: the first signal stops dispatching and checkpoints the run, the
//! second stops now; SIGUSR1, a batch system's early warning before its wall-time limit,
//! brings the run's deadline to now; and whether this program is an MPI worker rank.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{resume_command, EXIT_SIGINT, EXIT_SIGTERM, SIGNAL_EXIT};

/// How long "stop now" waits for processes that cannot be killed (thread isolation).
const STOP_NOW_GRACE: Duration = Duration::from_secs(5);

/// On SIGINT or SIGTERM: the first stops dispatching, the second stops now (kills running
/// commands and subprocesses; exits after a grace period if processes in threads go on).
///
/// On SIGUSR1 (the batch script passes Slurm's `--signal=B:USR1@<seconds>` on): the run
/// behaves as at its deadline — no new process starts, the running ones finish, and it ends
/// resumable with exit status 75 (so `--continue` submits its follow-up). A worker rank
/// ignores it: mpirun passes SIGUSR1 on to every rank, and only the master dispatches.
pub(super) fn install_signal_handlers() {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1]) else {
        eprintln!("taskfarm: warning: Ctrl-C handling could not be installed; Ctrl-C stops the run at once");
        return;
    };
    let spawned = std::thread::Builder::new().name("taskfarm-signals".into()).spawn(move || {
        for signal in signals.forever() {
            if signal == SIGUSR1 {
                if !is_mpi_worker_rank() && !taskfarm::run_control::deadline_now() {
                    taskfarm::run_control::reach_deadline_now();
                    eprintln!(
                        "\ntaskfarm: SIGUSR1: the allocation ends soon: no new process starts; the running ones \
                         finish, then the run ends resumable (exit status 75)"
                    );
                }
                continue;
            }
            let (code, name) = if signal == SIGTERM { (EXIT_SIGTERM, "SIGTERM") } else { (EXIT_SIGINT, "Ctrl-C") };
            let _ = SIGNAL_EXIT.compare_exchange(0, code, Ordering::SeqCst, Ordering::SeqCst);
            taskfarm::run_control::set_stop_exit_status(code);
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
            if taskfarm::run_control::lock::held_dir().is_none() {
                // No run is staged (the spec is still being read or counted): nothing runs
                // and nothing is to be saved, so stop now.
                eprintln!("\ntaskfarm: {name}: stopped before any process started");
                std::process::exit(i32::from(code));
            }
            if taskfarm::run_control::request_stop() == 1 {
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
            taskfarm::run_control::kill_running_children();
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
pub(crate) fn is_mpi_worker_rank() -> bool {
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
    let Some(dir) = taskfarm::run_control::lock::held_dir() else { return };
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
