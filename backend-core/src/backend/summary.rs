//! What an operation's run came to (`Summary`), and which part a program played in it.

use std::path::PathBuf;
use std::time::Duration;

use crate::journal::Damage;
use crate::results::files;

/// What an operation's run came to: returned by `consolidate` and `run`.
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The operation's name.
    pub name: String,
    /// The backend that ran it.
    pub backend: &'static str,
    /// The result directory.
    pub dir: PathBuf,
    /// How many processes the operation has, when known.
    pub total: Option<u64>,
    /// How many finished.
    pub finished: u64,
    /// How many crashed (timed-out ones included).
    pub crashed: u64,
    /// Of the crashed, how many ran past their timeout (0 in an MPI worker rank's summary).
    pub timed_out: u64,
    /// Wall time from `execute` to the end.
    pub wall: Duration,
    /// What was skipped or ignored of the journal: corrupt records (those processes have
    /// no record and run on `--resume`) and a torn end.
    pub damage: Damage,
    /// Whether the operation's deadline stopped it from starting processes: the processes
    /// without a record run on `--resume`.
    pub deadline_reached: bool,
    /// Whether this summary is the operation's report or a worker's note that it served.
    pub role: Role,
    /// Whether the run was stopped early by a stop request (Ctrl-C): processes without a
    /// record run on `--resume`.
    pub interrupted: bool,
}

/// Which part a program played in a run. Under MPI every rank runs the same `main`: the
/// master (rank 0) gets the report, the other ranks learn that they served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// This program ran the operation and wrote the result directory: the summary is the report.
    #[default]
    Master,
    /// This program served as worker `worker` (an MPI rank) and ran `processes` processes;
    /// the counts in the summary are its own.
    Worker {
        /// The worker's number (its MPI rank).
        worker: u32,
        /// How many processes it ran. Under MPI with `retries` and two workers or more, the
        /// master runs each retry on another rank: then this counts attempts, and a process
        /// that failed here may have finished elsewhere.
        processes: u64,
    },
}

impl Summary {
    /// Whether this is the master's report (and not a worker's note).
    pub fn is_report(&self) -> bool {
        self.role == Role::Master
    }

    /// The path of `results.csv`.
    pub fn results_csv(&self) -> PathBuf {
        self.dir.join(files::RESULTS_CSV)
    }

    /// Processes without a record (0 when the operation ran to its end).
    pub fn missing(&self) -> u64 {
        self.total.map(|t| t.saturating_sub(self.finished + self.crashed)).unwrap_or(0)
    }
}
