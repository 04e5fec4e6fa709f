//! The journal: an append-only file with one record per process that ended; the source of
//! truth of a run (the consolidated files are made from it).
//!
//! Layout: a header line `taskfarm-journal v1\n`, then records, each a little-endian `u32`
//! payload length, a little-endian `u32` CRC-32 of the payload, and the payload (a
//! [`ProcessRecord`](crate::ProcessRecord) as JSON). A torn or corrupt tail (power loss, `kill -9`) is detected
//! by its length or checksum, reported, and ignored: never fatal.
//!
//! The module holds one concept per file: [`frame`](self#frames) (a record's bytes:
//! `encode_frame`, `decode_frame`), the writer (`JournalWriter`, with the thread that writes
//! and syncs), and the reader (`read_journal*`, which skips a corrupt record up to the next
//! intact one).

mod frame;
mod read;
mod write;

pub use frame::{decode_frame, encode_frame};
pub use read::{
    read_journal, read_journal_from, read_journal_indexed, read_journal_with, read_record_at, Damage, JournalContents,
    Skipped, TornTail,
};
pub(crate) use write::cut_at;
pub use write::{JournalWriter, SYNC_WITHIN, WRITE_WITHIN};

/// The first bytes of every journal.
pub const JOURNAL_HEADER: &[u8] = b"taskfarm-journal v1\n";

/// Records larger than this are treated as corruption, not as a reason to allocate.
const MAX_RECORD_LEN: u32 = 64 * 1024 * 1024;

#[cfg(test)]
mod tests;
