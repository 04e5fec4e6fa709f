//! What the master's scheduler needs of the wire between ranks, as a trait: [`Wire`]
//! implements it over MPI, and the scheduler's tests implement it in memory (a simulated
//! cluster), so the scheduling is tested by plain `cargo test` without `mpirun`. This module,
//! the scheduler, the policy and the messages import nothing of the `mpi` crate.
//!
//! [`Wire`]: crate::env::Wire

use std::time::Instant;

/// A process's rank in the MPI world (0 is the master); the same type as the `mpi` crate's.
pub(crate) type Rank = i32;

/// A message as it arrived: who sent it and its bytes.
pub(crate) type Arrival = (Rank, Vec<u8>);

/// Byte messages between ranks, on one tag, each delivered whole and, between two ranks,
/// in the order sent.
pub(crate) trait Transport {
    /// A message that has arrived, if any, without waiting.
    fn try_receive(&mut self) -> Option<Arrival>;

    /// The next message, or `None` once `deadline` has passed.
    fn receive_until(&mut self, deadline: Instant) -> Option<Arrival>;

    /// Sends `bytes` to `to`. It may return before `to` takes the message, never after
    /// `to` took it; it never waits for a message of `to` to be taken.
    fn send(&mut self, to: Rank, bytes: &[u8]);

    /// Takes every message that has arrived into an inbox without waiting, so that a peer's
    /// large send does not wait for this rank to finish what it is doing.
    fn collect(&mut self);
}
