//! The journal's writer: appends records to a buffer that a thread of the journal's own
//! writes to the file within milliseconds and syncs to disk on a timer.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::{encode_frame, JOURNAL_HEADER};
use crate::{Error, ProcessRecord, Result, Status};

/// Appends records to a journal. A record reaches the file within [`WRITE_WITHIN`] of
/// its append and the disk within [`SYNC_WITHIN`], whatever the caller does next: the
/// appends go to a buffer that the journal's own thread writes out as soon as a short
/// gathering pause has passed (so that flowing records are written in batches) and syncs
/// on a timer. A caller that blocks for an hour behind a long process leaves nothing
/// finished in memory.
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    shared: Arc<Shared>,
    /// Writes and syncs the buffer while the writer lives.
    flusher: Option<std::thread::JoinHandle<()>>,
    /// The payload being encoded, reused so that appending allocates nothing per record.
    scratch: Vec<u8>,
}

/// A record appended is written to the file within this time (the gathering pause).
pub const WRITE_WITHIN: Duration = Duration::from_millis(5);
/// A record written is synced to disk within this time.
pub const SYNC_WITHIN: Duration = Duration::from_millis(200);
/// Appends write the buffer themselves past this size (a burst of records).
const BUFFER_LIMIT: usize = 256 * 1024;

/// What the writer and its thread share.
#[derive(Debug)]
struct Shared {
    pending: Mutex<Pending>,
    /// Signalled when the buffer goes from empty to not empty, and at the end.
    wake: Condvar,
}

#[derive(Debug)]
struct Pending {
    file: File,
    /// Frames appended and not yet written to the file.
    buf: Vec<u8>,
    /// Bytes written to the file and not yet synced.
    unsynced: bool,
    /// The first write or sync error of the thread, reported by the next call of the writer.
    failed: Option<std::io::Error>,
    closing: bool,
    /// How many times the thread synced what was written (the promise that a record is on
    /// disk within [`SYNC_WITHIN`], whatever comes after it, is tested by it).
    syncs: u64,
}

impl Pending {
    fn write_out(&mut self) -> std::io::Result<()> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if !self.buf.is_empty() {
            let written = self.file.write_all(&self.buf);
            self.buf.clear();
            self.unsynced = true;
            written?;
        }
        Ok(())
    }
}

impl JournalWriter {
    /// Creates a new journal (fails if one exists).
    pub fn create(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io("create the journal", path, e))?;
        let mut writer = Self::wrap(path, file)?;
        writer.lock().buf.extend_from_slice(JOURNAL_HEADER);
        writer.flush()?;
        Ok(writer)
    }

    /// Opens an existing journal to append to it (for a resumed run).
    pub fn append_to(path: &Path) -> Result<Self> {
        let file = OpenOptions::new().append(true).open(path).map_err(|e| Error::io("open the journal", path, e))?;
        Self::wrap(path, file)
    }

    fn wrap(path: &Path, file: File) -> Result<Self> {
        let shared = Arc::new(Shared {
            pending: Mutex::new(Pending {
                file,
                buf: Vec::with_capacity(64 * 1024),
                unsynced: false,
                failed: None,
                closing: false,
                syncs: 0,
            }),
            wake: Condvar::new(),
        });
        let flusher = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("taskfarm-journal".into())
                .spawn(move || flush_and_sync(&shared))
                .map_err(|e| Error::io("start the journal's writer thread for", path, e))?
        };
        Ok(JournalWriter { path: path.to_owned(), shared, flusher: Some(flusher), scratch: Vec::with_capacity(1024) })
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.shared.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends one record. Returns the status journaled (see [`encode_frame`] for a record
    /// too large).
    pub fn append(&mut self, record: &ProcessRecord) -> Result<Status> {
        let mut frame = std::mem::take(&mut self.scratch);
        frame.clear();
        let appended = encode_frame(record, &mut frame).and_then(|status| self.append_frame(&frame).map(|()| status));
        if frame.capacity() <= 64 * 1024 {
            // One huge record should not pin its buffer for the rest of the run.
            self.scratch = frame;
        }
        appended
    }

    /// Appends one record framed by [`encode_frame`] (e.g. on an MPI worker), as it is.
    pub fn append_frame(&mut self, frame: &[u8]) -> Result<()> {
        let mut pending = self.lock();
        if let Some(e) = pending.failed.take() {
            return Err(Error::io("write the journal", &self.path, e));
        }
        let was_empty = pending.buf.is_empty();
        pending.buf.extend_from_slice(frame);
        if pending.buf.len() >= BUFFER_LIMIT {
            return pending.write_out().map_err(|e| Error::io("write the journal", &self.path, e));
        }
        drop(pending);
        if was_empty {
            self.shared.wake.notify_one();
        }
        Ok(())
    }

    /// Hands appended records to the OS now.
    pub fn flush(&mut self) -> Result<()> {
        self.lock().write_out().map_err(|e| Error::io("write the journal", &self.path, e))
    }

    /// How many times its thread synced the journal on its own (every [`SYNC_WITHIN`] while
    /// there is something written and not synced).
    pub fn background_syncs(&self) -> u64 {
        self.lock().syncs
    }

    /// Flushes and waits until the records are on disk.
    pub fn sync(&mut self) -> Result<()> {
        let mut pending = self.lock();
        pending.write_out().map_err(|e| Error::io("write the journal", &self.path, e))?;
        pending.file.sync_all().map_err(|e| Error::io("sync the journal", &self.path, e))?;
        pending.unsynced = false;
        Ok(())
    }
}

/// Cuts a journal at `offset`, dropping a torn tail before a resumed run appends to it (a
/// journal torn inside its header starts afresh).
pub(crate) fn cut_at(path: &Path, offset: u64) -> Result<()> {
    if offset == 0 {
        std::fs::remove_file(path).map_err(|e| Error::io("remove the torn journal", path, e))?;
        return JournalWriter::create(path).map(drop);
    }
    let file = OpenOptions::new().write(true).open(path).map_err(|e| Error::io("open the journal", path, e))?;
    file.set_len(offset).map_err(|e| Error::io("truncate the torn tail of the journal", path, e))
}

impl Drop for JournalWriter {
    fn drop(&mut self) {
        self.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
        // What is left reaches the file; a failure here was or will be reported by `sync`.
        let _ = self.lock().write_out();
    }
}

/// The journal's thread: writes what was appended once [`WRITE_WITHIN`] has passed since
/// the buffer stopped being empty, and syncs what was written every [`SYNC_WITHIN`]. It
/// sleeps while there is nothing to do. A failed write is kept for the writer to report.
fn flush_and_sync(shared: &Shared) {
    let mut last_sync = Instant::now();
    let mut pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        if pending.closing {
            return;
        }
        if !pending.buf.is_empty() {
            // Let records that flow in together be written together.
            drop(pending);
            std::thread::sleep(WRITE_WITHIN);
            pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
            if let Err(e) = pending.write_out() {
                pending.failed.get_or_insert(e);
            }
        }
        let sync_due = SYNC_WITHIN.saturating_sub(last_sync.elapsed());
        if pending.unsynced && sync_due.is_zero() {
            // Synced through a second handle, so appends go on while the disk works.
            let file = pending.file.try_clone();
            pending.unsynced = false;
            drop(pending);
            let synced = file.and_then(|file| file.sync_data());
            last_sync = Instant::now();
            pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
            match synced {
                Ok(()) => pending.syncs += 1,
                // Reported by the writer's next call, as a failed write is.
                Err(e) => {
                    pending.failed.get_or_insert(e);
                }
            }
            continue;
        }
        if pending.buf.is_empty() && !pending.closing {
            // Nothing to write: sleep until an append, or until the sync is due.
            let wait = if pending.unsynced { sync_due } else { Duration::from_secs(3600) };
            pending = shared.wake.wait_timeout(pending, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}
