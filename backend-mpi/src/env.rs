//! MPI's process-wide state: MPI is initialized once per program (on the thread that then
//! talks MPI), finalized once, and a panic hook aborts the whole job instead of letting the
//! other ranks wait forever. Also the one wire primitive both sides use: send and receive
//! byte messages on one tag, polling with a sleeping backoff so no rank burns a core.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, OnceLock, PoisonError};
use std::thread::ThreadId;
use std::time::Duration;

use mpi::environment::Universe;
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::{Communicator, Rank, SimpleCommunicator};

use crate::transport::{Arrival, Transport};
use mpi::Threading;

use crate::Error;

/// The universe this crate initialized (`None` before, after `finalize`, or when the program
/// initialized MPI itself). Dropping it calls `MPI_Finalize`.
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);
/// The thread that initialized MPI: the only one that may talk MPI (`Funneled`).
static MPI_THREAD: OnceLock<ThreadId> = OnceLock::new();
static PANIC_HOOK: Once = Once::new();
/// Set when this rank must not finalize MPI at its end but abort the job: a master stopped
/// by a signal leaves workers that may be inside a long process and would never join
/// `MPI_Finalize`, so every rank would wait for ever.
static LEAVE_BY_ABORT: AtomicBool = AtomicBool::new(false);

/// Makes the end of this program (its `finalize`, explicit or at exit) abort the MPI job
/// with the stop's exit status (130 after SIGINT, 143 after SIGTERM; 1 without one), which
/// ends every rank at once, instead of finalizing MPI.
pub(crate) fn leave_by_abort() {
    LEAVE_BY_ABORT.store(true, Ordering::SeqCst);
}

/// The tag of every taskfarm message.
const TAG: mpi::Tag = 7;

/// Finalizes MPI when the thread that initialized it ends; for the main thread that is at
/// `exit` (after `main` returns or `std::process::exit`), where glibc runs thread-local
/// destructors. `finalize` does it explicitly.
struct FinalizeAtExit;

impl Drop for FinalizeAtExit {
    fn drop(&mut self) {
        finalize();
    }
}

thread_local! {
    static FINALIZE_AT_EXIT: FinalizeAtExit = const { FinalizeAtExit };
}

/// Finalizes MPI if this crate initialized it and it is still running; call it on the thread
/// that made the first [`MpiBackend`](crate::MpiBackend), after the last MPI operation of the
/// program. Every rank must call it (it is collective). It is optional: MPI is also finalized
/// when the main thread exits. A program that initialized MPI itself finalizes it itself;
/// then this does nothing. Calling it from another thread does nothing either.
pub fn finalize() {
    if MPI_THREAD.get().is_some_and(|id| *id != std::thread::current().id()) {
        return;
    }
    if LEAVE_BY_ABORT.load(Ordering::SeqCst) && mpi::environment::is_initialized() && !mpi::environment::is_finalized()
    {
        let _ = std::io::Write::flush(&mut std::io::stdout());
        SimpleCommunicator::world().abort(backend_core::stop_exit_status().map_or(1, i32::from));
    }
    let universe = UNIVERSE.lock().unwrap_or_else(PoisonError::into_inner).take();
    // Dropping the universe calls MPI_Finalize.
    drop(universe);
}

/// This rank's view of the world, made by [`start`].
pub(crate) struct Mpi {
    pub(crate) world: SimpleCommunicator,
    pub(crate) rank: Rank,
    pub(crate) size: Rank,
    pub(crate) host: String,
}

/// Initializes MPI (once per program, `Funneled` or higher), installs the panic hook, and
/// returns this rank's view of the world.
pub(crate) fn start() -> Result<Mpi, Error> {
    if mpi::environment::is_finalized() {
        return Err(Error::Finalized);
    }
    let here = std::thread::current().id();
    {
        let mut universe = UNIVERSE.lock().unwrap_or_else(PoisonError::into_inner);
        if !mpi::environment::is_initialized() {
            if let Some((initialized, provided)) = mpi::initialize_with_threading(Threading::Funneled) {
                *universe = Some(initialized);
                let _ = MPI_THREAD.set(here);
                FINALIZE_AT_EXIT.with(|_| {});
                if provided < Threading::Funneled {
                    return Err(Error::Threading { provided: format!("{provided:?}") });
                }
            }
        }
    }
    match MPI_THREAD.get() {
        Some(id) if *id != here => return Err(Error::WrongThread),
        Some(_) => {}
        // The program initialized MPI itself: it must give us at least Funneled.
        None => {
            let provided = mpi::environment::threading_support();
            if provided < Threading::Funneled {
                return Err(Error::Threading { provided: format!("{provided:?}") });
            }
        }
    }
    let world = SimpleCommunicator::world();
    let rank = world.rank();
    install_panic_hook(rank);
    let host = mpi::environment::processor_name()
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| backend_core::this_host().to_owned());
    Ok(Mpi { size: world.size(), rank, world, host })
}

/// Every rank aborts the whole MPI job on a panic that no process caught: otherwise the
/// other ranks would wait for this one forever.
fn install_panic_hook(rank: Rank) {
    PANIC_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            if backend_core::inside_process() {
                // A process panicked on this thread: `run_job` catches it and records a
                // crash. (Asked of the panicking thread only: a panic on the MPI thread
                // while a pool thread runs a process still aborts.)
                return;
            }
            if !mpi::environment::is_initialized() || mpi::environment::is_finalized() {
                return;
            }
            eprintln!("taskfarm: rank {rank} panicked: aborting the MPI job so that no rank waits forever");
            SimpleCommunicator::world().abort(101);
        }));
    });
}

/// Waiting without burning a core: for the first 100 µs it only yields the core (a reply
/// that comes quickly is taken at once, and a rank sharing the core runs meanwhile), then
/// sleeps 50 µs, twice as long each time, up to 1 ms; `reset` when a message arrived.
#[derive(Debug)]
pub(crate) struct Backoff {
    pause: Duration,
    waiting_since: Option<std::time::Instant>,
}

const YIELD_FOR: Duration = Duration::from_micros(100);
const FIRST_PAUSE: Duration = Duration::from_micros(50);
const LONGEST_PAUSE: Duration = Duration::from_millis(1);

impl Backoff {
    pub(crate) fn new() -> Self {
        Backoff { pause: FIRST_PAUSE, waiting_since: None }
    }

    pub(crate) fn reset(&mut self) {
        self.pause = FIRST_PAUSE;
        self.waiting_since = None;
    }

    pub(crate) fn wait(&mut self) {
        let since = *self.waiting_since.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() < YIELD_FOR {
            std::thread::yield_now();
            return;
        }
        std::thread::sleep(self.pause);
        self.pause = (self.pause * 2).min(LONGEST_PAUSE);
    }
}

/// The wire: byte messages on one tag, with messages that arrive while a send is pending
/// kept in an inbox (so two ranks sending large messages to each other never deadlock).
pub(crate) struct Wire<'a> {
    world: &'a SimpleCommunicator,
    inbox: VecDeque<Arrival>,
    backoff: Backoff,
}

impl<'a> Wire<'a> {
    pub(crate) fn new(world: &'a SimpleCommunicator) -> Self {
        Wire { world, inbox: VecDeque::new(), backoff: Backoff::new() }
    }

    /// A message that has arrived, if any, without waiting.
    pub(crate) fn try_receive(&mut self) -> Option<Arrival> {
        if let Some(arrival) = self.inbox.pop_front() {
            return Some(arrival);
        }
        self.probe()
    }

    /// Takes every message that has arrived into the inbox without waiting; a busy rank
    /// calls this now and then, so that a peer's large send (which MPI completes only when
    /// the receiver takes it) does not wait for the busy rank to finish.
    pub(crate) fn collect(&mut self) {
        while let Some(arrival) = self.probe() {
            self.inbox.push_back(arrival);
        }
    }

    fn probe(&self) -> Option<Arrival> {
        let probed = self.world.any_process().immediate_matched_probe_with_tag(TAG)?;
        let (bytes, status) = probed.matched_receive_vec::<u8>();
        Some((status.source_rank(), bytes))
    }

    /// The next message, waiting for it with the sleeping backoff.
    pub(crate) fn receive(&mut self) -> Arrival {
        loop {
            if let Some(arrival) = self.try_receive() {
                self.backoff.reset();
                return arrival;
            }
            self.backoff.wait();
        }
    }

    /// The next message, or `None` once `deadline` has passed.
    pub(crate) fn receive_until(&mut self, deadline: std::time::Instant) -> Option<Arrival> {
        loop {
            if let Some(arrival) = self.try_receive() {
                self.backoff.reset();
                return Some(arrival);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            self.backoff.wait();
        }
    }

    /// Sends `bytes` to `to` and waits until the send completes (for a large message, until
    /// `to` takes it); while it is pending, messages that arrive are received into the inbox,
    /// so two ranks sending to each other never deadlock.
    pub(crate) fn send(&mut self, to: Rank, bytes: &[u8]) {
        let world = self.world;
        let mut backoff = Backoff::new();
        mpi::request::scope(|scope| {
            let mut request = world.process_at_rank(to).immediate_send_with_tag(scope, bytes, TAG);
            loop {
                match request.test() {
                    Ok(_) => break,
                    Err(pending) => {
                        request = pending;
                        if let Some(arrival) = self.probe() {
                            self.inbox.push_back(arrival);
                            backoff.reset();
                        } else {
                            backoff.wait();
                        }
                    }
                }
            }
        });
    }
}

impl Transport for Wire<'_> {
    fn try_receive(&mut self) -> Option<Arrival> {
        Wire::try_receive(self)
    }

    fn receive_until(&mut self, deadline: std::time::Instant) -> Option<Arrival> {
        Wire::receive_until(self, deadline)
    }

    fn send(&mut self, to: Rank, bytes: &[u8]) {
        Wire::send(self, to, bytes)
    }

    fn collect(&mut self) {
        Wire::collect(self)
    }
}
