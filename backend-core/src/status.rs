//! A running operation that can be watched and stopped from outside: the coordinator keeps
//! `status.json` in the result directory up to date (atomically, twice a second) and looks
//! for a `cancel` file there, which asks it to stop as Ctrl-C would. Both go through the
//! directory, so another terminal, or the login node while the job runs on compute nodes,
//! needs no pid and no access to the host that runs it.
//!
//! Not for the results themselves: those are the journal's. A status file says what was
//! true a moment ago; whether its writer still lives is the result directory's lock's to
//! say ([`RunLock::holder`](crate::lock::RunLock::holder)).

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::StatusBoard;
use crate::{Error, Result};

/// The status file in a result directory.
pub const STATUS_FILE: &str = "status.json";
/// The file that asks the run of a result directory to stop: `graceful` (as a first Ctrl-C)
/// or `now` (as a second).
pub const CANCEL_FILE: &str = "cancel";
/// How often the status file is rewritten and the cancel file looked for.
pub const STATUS_EVERY: Duration = Duration::from_millis(500);
/// How many of the running processes the status file lists (the longest-running first).
const LISTED_RUNNING: usize = 20;
/// How old a running run's status file may be and still be taken for a live run where the
/// lock cannot tell (its writer on another host: `flock` on a network file system is often
/// local to each host): a few write intervals, so a writer that is late a little, or a clock
/// a little off, is not called dead.
pub const STALE_AFTER: Duration = Duration::from_secs(3);

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Processes run.
    Running,
    /// Every process has a record.
    Finished,
    /// Stopped early (a signal or `cancel`); `--resume` runs the rest.
    Interrupted,
}

/// A process running now, as the status file lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunningProcess {
    /// Its id.
    pub id: u64,
    /// The worker running it (`host/worker`).
    pub worker: String,
    /// Seconds it has run.
    pub running_s: f64,
}

/// The content of `status.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunStatus {
    /// Where the run stands.
    pub state: RunState,
    /// The operation's name.
    pub name: String,
    /// The backend running it.
    pub backend: String,
    /// The coordinating program's pid.
    pub pid: u32,
    /// Its host.
    pub host: String,
    /// When the run started, in seconds since the Unix epoch.
    pub started_at: f64,
    /// When this status was written, in seconds since the Unix epoch.
    pub updated_at: f64,
    /// Processes with a finished record.
    pub finished: u64,
    /// Processes with a crashed or timed-out record.
    pub crashed: u64,
    /// Processes running now (under MPI: handed to a worker and not yet answered, which
    /// includes units queued on a worker).
    pub running: u64,
    /// How many processes can run at once (threads of the pool, or of every worker rank,
    /// divided by the threads each process takes), once the backend has said.
    #[serde(default)]
    pub slots: Option<u64>,
    /// How many of the slots run a process now (`running`, at most `slots`): the others idle.
    #[serde(default)]
    pub busy: u64,
    /// All processes, when known.
    pub total: Option<u64>,
    /// Processes ended per second since the start (this run's, not a resumed run's earlier).
    pub rate: f64,
    /// Seconds until the end, when the total is known: from the predicted durations of what
    /// is left once enough processes were measured (see [`crate::predict`]), else at `rate`.
    pub eta_s: Option<f64>,
    /// The longest-running processes, longest first: those of this program's threads, and
    /// those its workers elsewhere hold as their coordinator knows them (an MPI master: see
    /// [`set_running_elsewhere`]).
    pub longest_running: Vec<RunningProcess>,
}

impl RunStatus {
    /// Reads the status file of `dir`, `None` when there is none.
    pub fn read(dir: &Path) -> Result<Option<RunStatus>> {
        let path = dir.join(STATUS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("read", &path, e)),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| Error::io("read", &path, std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string())))
    }

    /// The program that wrote it, as the result directory's lock names it (`pid N on host H`).
    pub fn writer(&self) -> String {
        format!("pid {} on host {}", self.pid, self.host)
    }

    /// Whether it was written on this host, where the lock says for sure whether its writer lives.
    pub fn written_here(&self) -> bool {
        self.host == crate::record::this_host()
    }

    /// Whether it was written within [`STALE_AFTER`] of `now_s` (seconds since the Unix epoch).
    pub fn is_fresh(&self, now_s: f64) -> bool {
        now_s - self.updated_at <= STALE_AFTER.as_secs_f64()
    }

    fn write(&self, dir: &Path) -> Result<()> {
        let (path, tmp) = (dir.join(STATUS_FILE), dir.join(format!(".{STATUS_FILE}.tmp")));
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Internal(format!("status: {e}")))?;
        std::fs::write(&tmp, json).map_err(|e| Error::io("write", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("move into place", &tmp, e))
    }
}

/// Asks the run that writes `dir` — the program `holder` names (`pid N on host H`, as the
/// directory's lock says) — to stop: gracefully (running processes finish, as a first
/// Ctrl-C) or `now` (as a second). That program sees it within [`STATUS_EVERY`]; any other
/// (a later run of the directory) ignores it.
pub fn request_cancel(dir: &Path, holder: &str, now: bool) -> Result<()> {
    let path = dir.join(CANCEL_FILE);
    let how = if now { "now" } else { "graceful" };
    std::fs::write(&path, format!("{how}\n{holder}\n")).map_err(|e| Error::io("write", &path, e))
}

/// Which program writes the run in `dir` now (`pid N on host H`), or `None` when none does,
/// given its status file as read just before. The directory's lock says it for sure on the
/// host of the status's writer. From another host a lock held there may not show (`flock` on
/// a network file system) or cannot be asked: a running status file is then taken for a live
/// run while it is fresh ([`STALE_AFTER`]), for a stopped one once it is not.
pub fn live_holder(dir: &Path, status: Option<&RunStatus>) -> Result<Option<String>> {
    let lock = crate::lock::RunLock::holder(dir);
    let Some(status) = status.filter(|s| !s.written_here()) else { return lock };
    match lock {
        Ok(Some(holder)) => Ok(Some(holder)),
        Ok(None) | Err(_) => {
            Ok((status.state == RunState::Running && status.is_fresh(crate::record::now_s())).then(|| status.writer()))
        }
    }
}

/// What one thread of this program is running now, if anything: each thread that runs
/// processes has a slot of its own, so marking a process as running takes no lock that
/// another thread wants (the status thread reads the slots twice a second).
#[derive(Debug, Default)]
struct Slot {
    now: Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// The process running on this thread: its id and since when.
    running: Option<(u64, Instant)>,
    /// The host and worker of the process last run here, and them as listed (`host/worker`):
    /// a thread keeps its location, so the listed name is made once, not per process.
    host: String,
    worker: String,
    listed: String,
}

/// The slot of every thread that has run a process (those of ended threads go when next
/// listed).
static SLOTS: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());

thread_local! {
    static SLOT: Arc<Slot> = {
        let slot = Arc::new(Slot::default());
        SLOTS.lock().unwrap_or_else(PoisonError::into_inner).push(Arc::downgrade(&slot));
        slot
    };
}

/// Marks a process as running in this program while the value lives (on the thread that
/// made it: the value cannot move to another).
pub(crate) struct Running {
    /// What the thread ran before (a process run inside another), put back at the end.
    before: Option<(u64, Instant)>,
    _here: PhantomData<*const ()>,
}

impl Running {
    pub(crate) fn new(id: u64, location: &crate::Location) -> Running {
        let before = SLOT
            .try_with(|slot| {
                let mut state = slot.now.lock().unwrap_or_else(PoisonError::into_inner);
                if state.host != location.host || state.worker != location.worker || state.listed.is_empty() {
                    state.host.clone_from(&location.host);
                    state.worker.clone_from(&location.worker);
                    state.listed = format!("{}/{}", location.host, location.worker);
                }
                state.running.replace((id, Instant::now()))
            })
            .ok()
            .flatten();
        Running { before, _here: PhantomData }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let before = self.before.take();
        let _ = SLOT.try_with(|slot| slot.now.lock().unwrap_or_else(PoisonError::into_inner).running = before);
    }
}

/// A process that runs in another program, as the program coordinating the run knows it (an
/// MPI master, of the units it sent its worker ranks).
#[derive(Debug, Clone, PartialEq)]
pub struct RunningElsewhere {
    /// Its id.
    pub id: u64,
    /// Where it runs (`host/rank-N`, or `rank-N` while its host is not known).
    pub worker: String,
    /// Since when it runs, as far as the coordinator can tell.
    pub since: Instant,
}

/// The processes of [`RunningElsewhere`], as last said.
static ELSEWHERE: Mutex<Vec<RunningElsewhere>> = Mutex::new(Vec::new());

/// Says which processes run in other programs now (replacing what was said before; an
/// empty list once none do): the status file lists them beside this program's own. A
/// coordinator says it when what its workers hold changes, a few times a second at most.
pub fn set_running_elsewhere(running: Vec<RunningElsewhere>) {
    *ELSEWHERE.lock().unwrap_or_else(PoisonError::into_inner) = running;
}

fn longest_running() -> Vec<RunningProcess> {
    let slots: Vec<Arc<Slot>> = {
        let mut slots = SLOTS.lock().unwrap_or_else(PoisonError::into_inner);
        slots.retain(|slot| slot.strong_count() > 0);
        slots.iter().filter_map(Weak::upgrade).collect()
    };
    let mut listed: Vec<RunningProcess> = slots
        .iter()
        .filter_map(|slot| {
            let state = slot.now.lock().unwrap_or_else(PoisonError::into_inner);
            let (id, since) = state.running?;
            Some(RunningProcess { id, worker: state.listed.clone(), running_s: since.elapsed().as_secs_f64() })
        })
        .collect();
    listed.extend(ELSEWHERE.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|p| RunningProcess {
        id: p.id,
        worker: p.worker.clone(),
        running_s: p.since.elapsed().as_secs_f64(),
    }));
    listed.sort_by(|a, b| b.running_s.total_cmp(&a.running_s).then(a.id.cmp(&b.id)));
    listed.truncate(LISTED_RUNNING);
    listed
}

/// What the status thread needs to know of its run.
pub(crate) struct StatusSource {
    pub(crate) dir: PathBuf,
    pub(crate) name: String,
    pub(crate) backend: String,
    pub(crate) board: StatusBoard,
    /// The predictions behind the ETA.
    pub(crate) learner: crate::predict::Learner,
}

/// The thread that keeps `status.json` and answers `cancel`, from `execute` to the end.
pub(crate) struct StatusWriter {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    source: std::sync::Arc<StatusSource>,
    started_at: f64,
}

impl StatusWriter {
    /// Starts keeping the status of the run described by `source`.
    pub(crate) fn start(source: StatusSource) -> StatusWriter {
        let source = std::sync::Arc::new(source);
        let started_at = crate::record::now_s();
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = {
            let source = std::sync::Arc::clone(&source);
            let clock = Instant::now();
            let preset = source.board.snapshot();
            std::thread::Builder::new()
                .name("taskfarm-status".into())
                .spawn(move || loop {
                    look_for_cancel(&source.dir);
                    let status = snapshot(&source, RunState::Running, started_at, clock, &preset);
                    if let Err(e) = status.write(&source.dir) {
                        tracing::debug!(target: "taskfarm", "the status file could not be written: {e}");
                    }
                    match stopped.recv_timeout(STATUS_EVERY) {
                        Err(RecvTimeoutError::Timeout) => {}
                        _ => return,
                    }
                })
                .ok()
        };
        StatusWriter { stop: Some(stop), thread, source, started_at }
    }

    /// Stops the thread and writes the final status.
    pub(crate) fn finish(mut self, state: RunState, wall: Duration) {
        self.stop_thread();
        let clock = Instant::now().checked_sub(wall).unwrap_or_else(Instant::now);
        let mut status = snapshot(&self.source, state, self.started_at, clock, &Default::default());
        status.running = 0;
        status.busy = 0;
        status.longest_running.clear();
        status.eta_s = None;
        if let Err(e) = status.write(&self.source.dir) {
            tracing::debug!(target: "taskfarm", "the status file could not be written: {e}");
        }
    }

    fn stop_thread(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for StatusWriter {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

fn snapshot(
    source: &StatusSource,
    state: RunState,
    started_at: f64,
    clock: Instant,
    preset: &crate::StatusCounts,
) -> RunStatus {
    let counts = source.board.snapshot();
    let ended_here = (counts.finished + counts.crashed).saturating_sub(preset.finished + preset.crashed);
    let elapsed = clock.elapsed().as_secs_f64();
    let rate = if elapsed > 0.0 { ended_here as f64 / elapsed } else { 0.0 };
    let left = counts.total.map(|t| t.saturating_sub(counts.finished + counts.crashed));
    let slots = source.learner.slots().map(|n| n as u64);
    RunStatus {
        state,
        name: source.name.clone(),
        backend: source.backend.clone(),
        pid: std::process::id(),
        host: crate::record::this_host().to_owned(),
        started_at,
        updated_at: crate::record::now_s(),
        finished: counts.finished,
        crashed: counts.crashed,
        running: counts.running,
        slots,
        busy: slots.map_or(counts.running, |slots| counts.running.min(slots)),
        total: counts.total,
        rate,
        // From the predictions once the model has learnt enough, else from the rate.
        eta_s: left
            .and_then(|left| source.learner.eta_s(left))
            .or_else(|| left.filter(|_| rate > 0.0).map(|left| left as f64 / rate)),
        longest_running: longest_running(),
    }
}

/// Acts on a `cancel` file in `dir` meant for this program: `graceful` stops dispatching
/// and waits for every running process, on every backend (see
/// [`request_drain`](crate::request_drain); a stop already requested stays as it is), `now`
/// also cuts running processes short (as a second Ctrl-C). One meant for
/// a program that is gone (it died before it saw it) is removed and ignored.
fn look_for_cancel(dir: &Path) {
    let path = dir.join(CANCEL_FILE);
    let Ok(text) = std::fs::read_to_string(&path) else { return };
    let mut lines = text.lines();
    let (how, target) = (lines.next().unwrap_or_default(), lines.next().unwrap_or_default());
    // This program holds the directory's lock, so a cancel for another is stale either way.
    let _ = std::fs::remove_file(&path);
    if target.trim() != crate::lock::this_program() {
        return;
    }
    crate::set_stop_exit_status(130);
    if how.trim() == "now" {
        // A second request whatever came before: running processes are cut short.
        if crate::request_stop() == 1 {
            crate::request_stop();
        }
        crate::kill_running_children();
        tracing::warn!(target: "taskfarm", "cancelled now: running processes are cut short and run again on --resume");
    } else if crate::request_drain() {
        tracing::warn!(target: "taskfarm", "cancelled: no new process starts; waiting for the running ones to finish");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_file_says_what_runs_and_ends_marked() {
        let dir = tempfile::tempdir().unwrap();
        let board = StatusBoard::new(Some(10));
        board.started(2);
        let learner = crate::predict::Learner::default();
        learner.set_slots(4);
        let source =
            StatusSource { dir: dir.path().to_owned(), name: "op".into(), backend: "local".into(), board, learner };
        let running = Running::new(7, &crate::Location { host: "host".into(), worker: "thread-1".into() });
        let writer = StatusWriter::start(source);
        let start = Instant::now();
        let status = loop {
            if let Some(status) = RunStatus::read(dir.path()).unwrap() {
                break status;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "no status file");
            std::thread::sleep(Duration::from_millis(5));
        };
        assert_eq!((status.state, status.running, status.total), (RunState::Running, 2, Some(10)));
        assert_eq!((status.slots, status.busy), (Some(4), 2), "2 of 4 slots busy");
        assert_eq!(status.pid, std::process::id());
        assert!(status.longest_running.iter().any(|p| p.id == 7 && p.worker == "host/thread-1"), "{status:?}");
        drop(running);
        writer.finish(RunState::Finished, Duration::from_secs(1));
        let status = RunStatus::read(dir.path()).unwrap().unwrap();
        assert_eq!((status.state, status.running, status.busy), (RunState::Finished, 0, 0));
        assert!(status.longest_running.is_empty());
    }

    #[test]
    fn a_run_of_another_host_lives_while_its_status_is_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let now = crate::record::now_s();
        let status = |host: &str, age_s: f64, state: RunState| RunStatus {
            state,
            name: "op".into(),
            backend: "mpi".into(),
            pid: 42,
            host: host.into(),
            started_at: now - 100.0,
            updated_at: now - age_s,
            finished: 0,
            crashed: 0,
            running: 1,
            slots: Some(3),
            busy: 1,
            total: None,
            rate: 0.0,
            eta_s: None,
            longest_running: Vec::new(),
        };
        // No lock is seen here: another host's writer lives while it writes.
        let fresh = status("elsewhere.invalid", 0.5, RunState::Running);
        assert_eq!(live_holder(dir.path(), Some(&fresh)).unwrap().as_deref(), Some("pid 42 on host elsewhere.invalid"));
        let stale = status("elsewhere.invalid", 3.0 * STALE_AFTER.as_secs_f64(), RunState::Running);
        assert_eq!(live_holder(dir.path(), Some(&stale)).unwrap(), None);
        let ended = status("elsewhere.invalid", 0.5, RunState::Finished);
        assert_eq!(live_holder(dir.path(), Some(&ended)).unwrap(), None);
        // On its own host the lock decides, however fresh the file.
        let here = status(crate::record::this_host(), 0.0, RunState::Running);
        assert_eq!(live_holder(dir.path(), Some(&here)).unwrap(), None);
        let _held = crate::lock::RunLock::acquire(dir.path()).unwrap();
        assert!(live_holder(dir.path(), Some(&here)).unwrap().is_some());
    }
}
