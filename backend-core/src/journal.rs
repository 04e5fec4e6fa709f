//! The journal: an append-only file with one record per process that ended; the source of
//! truth of a run (the consolidated files are made from it).
//!
//! Layout: a header line `taskfarm-journal v1\n`, then records, each a little-endian `u32`
//! payload length, a little-endian `u32` CRC-32 of the payload, and the payload (a
//! [`ProcessRecord`] as JSON). A torn or corrupt tail (power loss, `kill -9`) is detected
//! by its length or checksum, reported, and ignored: never fatal.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::{Error, ProcessRecord, Result, Status, Value};

/// The first bytes of every journal.
pub const JOURNAL_HEADER: &[u8] = b"taskfarm-journal v1\n";

/// Records larger than this are treated as corruption, not as a reason to allocate.
const MAX_RECORD_LEN: u32 = 64 * 1024 * 1024;

/// Appends the journal frame of `record` to `out`: its payload's length and CRC-32, then the
/// payload. Frames are made wherever the record is (an MPI worker frames its own, so the
/// master writes them without decoding and encoding each record again). Returns the status
/// the frame records: a record too large for the journal (its output, most likely) is
/// framed as a crash that says so, so that neither the run nor the journal after it is lost.
pub fn encode_frame(record: &ProcessRecord, out: &mut Vec<u8>) -> Result<Status> {
    let start = out.len();
    let len = write_frame(record, out, start)?;
    if len <= MAX_RECORD_LEN as usize {
        return Ok(record.status);
    }
    out.truncate(start);
    let stand_in = ProcessRecord {
        status: Status::Crashed,
        output: Value::Null,
        reason: Some(format!(
            "its record is {} MiB, more than the journal takes ({} MiB): write large outputs to files in \
             the result directory (`ProcessContext::result_dir`) and return their names",
            len / (1024 * 1024),
            MAX_RECORD_LEN / (1024 * 1024)
        )),
        stderr_tail: None,
        id: record.id,
        run: record.run,
        params: record.params.clone(),
        attempts: record.attempts,
        started_at: record.started_at,
        duration_s: record.duration_s,
        location: record.location.clone(),
    };
    if write_frame(&stand_in, out, start)? > MAX_RECORD_LEN as usize {
        out.truncate(start);
        return Err(Error::Internal(format!(
            "the record of process {} is larger than {} MiB even without its output",
            record.id,
            MAX_RECORD_LEN / (1024 * 1024)
        )));
    }
    Ok(stand_in.status)
}

/// Writes the frame of `record` at `start` (the end of `out`); returns its payload's length.
fn write_frame(record: &ProcessRecord, out: &mut Vec<u8>, start: usize) -> Result<usize> {
    out.extend_from_slice(&[0; 8]);
    write_record_json(record, out).map_err(|e| Error::Internal(format!("a record could not be encoded: {e}")))?;
    let payload = &out[start + 8..];
    let len = payload.len();
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(len)
}

/// Writes `record` as JSON, the very bytes `serde_json::to_writer` writes (a test checks
/// it), but with the record's own keys written as they are rather than escaped one by one:
/// every process's record passes here, and the keys were a third of the time.
fn write_record_json(record: &ProcessRecord, out: &mut Vec<u8>) -> serde_json::Result<()> {
    fn field<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, key: &[u8], value: &T) -> serde_json::Result<()> {
        out.extend_from_slice(key);
        serde_json::to_writer(&mut *out, value)
    }
    field(out, b"{\"id\":", &record.id)?;
    field(out, b",\"run\":", &record.run)?;
    field(out, b",\"params\":", &record.params)?;
    field(out, b",\"status\":", &record.status)?;
    field(out, b",\"output\":", &record.output)?;
    if let Some(reason) = &record.reason {
        field(out, b",\"reason\":", reason)?;
    }
    if let Some(tail) = &record.stderr_tail {
        field(out, b",\"stderr_tail\":", tail)?;
    }
    field(out, b",\"attempts\":", &record.attempts)?;
    field(out, b",\"started_at\":", &record.started_at)?;
    field(out, b",\"duration_s\":", &record.duration_s)?;
    field(out, b",\"location\":{\"host\":", &record.location.host)?;
    field(out, b",\"worker\":", &record.location.worker)?;
    out.extend_from_slice(b"}}");
    Ok(())
}

/// A frame's header: its payload's length and the payload's CRC-32.
fn frame_head(head: &[u8; 8]) -> (u32, u32) {
    (u32::from_le_bytes([head[0], head[1], head[2], head[3]]), u32::from_le_bytes([head[4], head[5], head[6], head[7]]))
}

/// Decodes one frame made by [`encode_frame`], checking its length and checksum.
pub fn decode_frame(frame: &[u8]) -> Result<ProcessRecord> {
    let corrupt = |why: &str| Error::Internal(format!("a journal frame of {} bytes {why}", frame.len()));
    let (head, payload) = frame.split_first_chunk::<8>().ok_or_else(|| corrupt("is shorter than its header"))?;
    let (len, crc) = frame_head(head);
    if payload.len() != len as usize {
        return Err(corrupt("does not have the length it claims"));
    }
    if crc32fast::hash(payload) != crc {
        return Err(corrupt("does not match its checksum"));
    }
    serde_json::from_slice(payload).map_err(|e| corrupt(&format!("does not decode: {e}")))
}

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
    /// The first write error of the thread, reported by the next call of the writer.
    failed: Option<std::io::Error>,
    closing: bool,
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

    /// Flushes and waits until the records are on disk.
    pub fn sync(&mut self) -> Result<()> {
        let mut pending = self.lock();
        pending.write_out().map_err(|e| Error::io("write the journal", &self.path, e))?;
        pending.file.sync_all().map_err(|e| Error::io("sync the journal", &self.path, e))?;
        pending.unsynced = false;
        Ok(())
    }
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
            if let Ok(file) = file {
                let _ = file.sync_data();
            }
            last_sync = Instant::now();
            pending = shared.pending.lock().unwrap_or_else(PoisonError::into_inner);
            continue;
        }
        if pending.buf.is_empty() && !pending.closing {
            // Nothing to write: sleep until an append, or until the sync is due.
            let wait = if pending.unsynced { sync_due } else { Duration::from_secs(3600) };
            pending = shared.wake.wait_timeout(pending, wait).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

/// Where reading stopped before the end of the file: a torn or corrupt end.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TornTail {
    /// The byte offset of the first record that could not be read.
    pub offset: u64,
    /// What was wrong with it.
    pub why: String,
}

/// A corrupt stretch in the middle of a journal, skipped up to the next intact record: it
/// costs the records that were there, and no other.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// The byte offset where the damage starts.
    pub offset: u64,
    /// How many bytes were skipped.
    pub len: u64,
    /// What was wrong at `offset`.
    pub why: String,
}

/// What a read found wrong with a journal, besides its intact records.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    /// Corrupt stretches followed by intact records, in file order.
    pub skipped: Vec<Skipped>,
    /// Set when the file ends with a torn or corrupt record, which was ignored.
    pub torn_tail: Option<TornTail>,
}

impl Damage {
    /// Whether the journal was read whole.
    pub fn is_none(&self) -> bool {
        self.skipped.is_empty() && self.torn_tail.is_none()
    }
}

impl std::fmt::Display for Damage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts: Vec<String> = self
            .skipped
            .iter()
            .map(|s| format!("{} corrupt bytes at offset {} skipped ({})", s.len, s.offset, s.why))
            .collect();
        if let Some(torn) = &self.torn_tail {
            parts.push(format!("a torn end at offset {} ignored ({})", torn.offset, torn.why));
        }
        f.write_str(&parts.join("; "))
    }
}

/// Everything a journal holds.
#[derive(Debug, Default)]
pub struct JournalContents {
    /// The intact records, in the order they were written.
    pub records: Vec<ProcessRecord>,
    /// What was skipped or ignored.
    pub damage: Damage,
}

/// Reads every intact record of a journal, calling `each` in order. A corrupt record in the
/// middle is skipped up to the next intact one, a torn or corrupt end is ignored, and both
/// are reported; a file that is not a journal at all is an error.
pub fn read_journal_with(path: &Path, mut each: impl FnMut(ProcessRecord)) -> Result<Damage> {
    read_journal_indexed(path, |_, record| each(record))
}

/// Like [`read_journal_with`], and gives each record's byte offset in the file, for
/// [`read_record_at`] (consolidation keeps offsets, not records, so its memory stays flat).
pub fn read_journal_indexed(path: &Path, each: impl FnMut(u64, ProcessRecord)) -> Result<Damage> {
    let file = File::open(path).map_err(|e| Error::io("open the journal", path, e))?;
    read_journal_from(file, path, each)
}

/// How every record's JSON begins ([`write_record_json`] writes it so): a reader that lost
/// its place looks for it, 8 bytes into a frame, and trusts a frame only when its checksum
/// matches. Inside a JSON string a `"` is escaped, so a string cannot fake it; a nested
/// object can, and its checksum then fails.
const RECORD_START: &[u8] = b"{\"id\":";

/// Reads journal records from any reader (`path` only names it in errors): what
/// [`read_journal_indexed`] does on a file, and what the fuzz target feeds arbitrary bytes.
pub fn read_journal_from(input: impl Read, path: &Path, mut each: impl FnMut(u64, ProcessRecord)) -> Result<Damage> {
    let io = |e| Error::io("read the journal", path, e);
    let mut window = Window { input, buf: Vec::new(), start: 0, base: 0, eof: false };
    let got = window.fill(JOURNAL_HEADER.len()).map_err(io)?;
    let header = &window.available()[..got.min(JOURNAL_HEADER.len())];
    if header != &JOURNAL_HEADER[..header.len()] {
        // `taskfarm-journal v1\n`: another version says so in the same place.
        let prefix = &JOURNAL_HEADER[..JOURNAL_HEADER.len() - 3];
        if header.starts_with(prefix) {
            let found = String::from_utf8_lossy(&header[prefix.len()..]).trim().to_owned();
            return Err(Error::JournalTooNew { path: path.to_owned(), found });
        }
        return Err(Error::NotAJournal { path: path.to_owned() });
    }
    let mut damage = Damage::default();
    if got < JOURNAL_HEADER.len() {
        damage.torn_tail = Some(TornTail { offset: 0, why: "the file ends inside the journal header".into() });
        return Ok(damage);
    }
    window.consume(JOURNAL_HEADER.len());
    loop {
        let why = match window.frame_at(0).map_err(io)? {
            Found::End => return Ok(damage),
            Found::Record { record, len } => {
                each(window.offset(), *record);
                window.consume(len);
                continue;
            }
            Found::Damaged(why) => why,
        };
        let offset = window.offset();
        match window.resync().map_err(io)? {
            Some(len) => damage.skipped.push(Skipped { offset, len, why }),
            None => {
                damage.torn_tail = Some(TornTail { offset, why });
                return Ok(damage);
            }
        }
    }
}

/// What is at a place of a journal.
enum Found {
    /// An intact record, `len` bytes with its frame header.
    Record { record: Box<ProcessRecord>, len: usize },
    /// The file ends exactly here.
    End,
    /// Not an intact record, for this reason.
    Damaged(String),
}

/// A sliding window over a journal being read: records are parsed in place, and a reader
/// that lost its place can look ahead without reading anything twice.
struct Window<R> {
    input: R,
    buf: Vec<u8>,
    /// Where the unread part of `buf` starts.
    start: usize,
    /// The file offset of `buf[0]`.
    base: u64,
    eof: bool,
}

impl<R: Read> Window<R> {
    fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    fn available(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    fn consume(&mut self, n: usize) {
        self.start += n;
    }

    /// Reads until `n` bytes are available or the input ends; returns how many are. Grows
    /// with the bytes that are there, so a corrupt length allocates nothing big.
    fn fill(&mut self, n: usize) -> std::io::Result<usize> {
        while self.available().len() < n && !self.eof {
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.base += self.start as u64;
                self.start = 0;
            }
            let old = self.buf.len();
            let step = (n - old).clamp(64 * 1024, 1024 * 1024);
            self.buf.resize(old + step, 0);
            let got = read_full(&mut self.input, &mut self.buf[old..]);
            let got = got.inspect_err(|_| self.buf.truncate(old))?;
            self.buf.truncate(old + got);
            self.eof = got < step;
        }
        Ok(self.available().len())
    }

    /// What is `at` bytes past the window's start.
    fn frame_at(&mut self, at: usize) -> std::io::Result<Found> {
        let have = self.fill(at + 8)?;
        if have == at {
            return Ok(Found::End);
        }
        if have < at + 8 {
            return Ok(Found::Damaged(format!("the file ends {} bytes into a record header", have - at)));
        }
        let head: [u8; 8] = self.available()[at..at + 8].try_into().unwrap_or_default();
        let (len, crc) = frame_head(&head);
        if len > MAX_RECORD_LEN {
            return Ok(Found::Damaged(format!("a record claims an implausible length of {len} bytes")));
        }
        let end = at + 8 + len as usize;
        let have = self.fill(end)?;
        if have < end {
            return Ok(Found::Damaged(format!("the file ends {} of {len} bytes into a record", have - at - 8)));
        }
        let payload = &self.available()[at + 8..end];
        if crc32fast::hash(payload) != crc {
            return Ok(Found::Damaged("a record's checksum does not match".into()));
        }
        Ok(match serde_json::from_slice::<ProcessRecord>(payload) {
            Ok(record) => Found::Record { record: Box::new(record), len: 8 + len as usize },
            Err(e) => Found::Damaged(format!("a record does not decode: {e}")),
        })
    }

    /// Moves past a damaged frame at the window's start to the next intact record; returns
    /// how many bytes were skipped, or `None` (the window at the end) when no intact record
    /// follows.
    fn resync(&mut self) -> std::io::Result<Option<u64>> {
        let mut skipped = 1u64;
        self.consume(1);
        loop {
            // A frame starting at the window's start or later has its payload 8 bytes in.
            let found = self.available().get(8..).and_then(|after| find(after, RECORD_START));
            match found {
                Some(at) => {
                    self.consume(at);
                    skipped += at as u64;
                    if let Found::Record { .. } = self.frame_at(0)? {
                        return Ok(Some(skipped));
                    }
                    self.consume(1);
                    skipped += 1;
                }
                None => {
                    // Keep only what may still hold the start of a frame, then read on.
                    let keep = 8 + RECORD_START.len() - 1;
                    let drop = self.available().len().saturating_sub(keep);
                    self.consume(drop);
                    skipped += drop as u64;
                    let have = self.available().len();
                    if self.fill(have + 1)? == have {
                        self.consume(have);
                        return Ok(None);
                    }
                }
            }
        }
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads the record at `offset` of a journal (an offset [`read_journal_indexed`] gave).
pub fn read_record_at(file: &File, path: &Path, offset: u64, payload: &mut Vec<u8>) -> Result<ProcessRecord> {
    use std::os::unix::fs::FileExt;
    let mut frame = [0u8; 8];
    file.read_exact_at(&mut frame, offset).map_err(|e| Error::io("read the journal", path, e))?;
    let (len, crc) = frame_head(&frame);
    let changed = || Error::Internal(format!("the journal {} changed while it was read", path.display()));
    if len > MAX_RECORD_LEN {
        return Err(changed());
    }
    payload.resize(len as usize, 0);
    file.read_exact_at(payload, offset + 8).map_err(|e| Error::io("read the journal", path, e))?;
    if crc32fast::hash(payload) != crc {
        return Err(changed());
    }
    serde_json::from_slice(payload).map_err(|_| changed())
}

/// Reads a whole journal into memory.
pub fn read_journal(path: &Path) -> Result<JournalContents> {
    let mut records = Vec::new();
    let damage = read_journal_with(path, |r| records.push(r))?;
    Ok(JournalContents { records, damage })
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Location, Params, Status, Value};

    fn record(id: u64) -> ProcessRecord {
        ProcessRecord {
            id,
            run: 0,
            params: Params::from_iter([("x".to_owned(), Value::Int(id as i64))]),
            status: Status::Finished,
            output: Value::Float(id as f64 / 2.0),
            reason: None,
            stderr_tail: None,
            attempts: 1,
            started_at: 1.0,
            duration_s: 0.5,
            location: Location::here("test"),
        }
    }

    fn write_journal(path: &Path, n: u64) {
        let mut w = JournalWriter::create(path).unwrap();
        for id in 0..n {
            w.append(&record(id)).unwrap();
        }
        w.sync().unwrap();
    }

    #[test]
    fn round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        write_journal(&path, 5);
        let contents = read_journal(&path).unwrap();
        assert_eq!(contents.records, (0..5).map(record).collect::<Vec<_>>());
        assert!(contents.damage.is_none());
    }

    #[test]
    fn every_truncation_is_detected_and_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        write_journal(&path, 3);
        let full = std::fs::read(&path).unwrap();
        // Offsets where records end (and the next begins).
        let mut boundaries = vec![JOURNAL_HEADER.len()];
        while *boundaries.last().unwrap() < full.len() {
            let at = *boundaries.last().unwrap();
            let len = u32::from_le_bytes(full[at..at + 4].try_into().unwrap()) as usize;
            boundaries.push(at + 8 + len);
        }
        let cut_path = dir.path().join("cut");
        for cut in 0..=full.len() {
            std::fs::write(&cut_path, &full[..cut]).unwrap();
            let contents = read_journal(&cut_path).unwrap();
            let complete = boundaries.iter().filter(|&&b| b <= cut).count().saturating_sub(1);
            assert_eq!(contents.records, (0..complete as u64).map(record).collect::<Vec<_>>(), "cut at {cut}");
            assert_eq!(contents.damage.torn_tail.is_some(), !boundaries.contains(&cut), "cut at {cut}");
            assert!(contents.damage.skipped.is_empty(), "cut at {cut}");
            if cut < JOURNAL_HEADER.len() {
                assert_eq!(contents.damage.torn_tail.as_ref().map(|t| t.offset), Some(0));
            }
        }
    }

    /// The byte ranges of a journal's records, header included, in order.
    fn frame_ranges(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
        let mut ranges = Vec::new();
        let mut at = JOURNAL_HEADER.len();
        while at < bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            ranges.push(at..at + 8 + len);
            at += 8 + len;
        }
        ranges
    }

    #[test]
    fn a_flipped_byte_costs_only_its_own_record() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        write_journal(&path, 4);
        let full = std::fs::read(&path).unwrap();
        let ranges = frame_ranges(&full);
        for i in JOURNAL_HEADER.len()..full.len() {
            for flip in [0x01, 0x5a, 0xff] {
                let mut bytes = full.clone();
                bytes[i] ^= flip;
                std::fs::write(&path, &bytes).unwrap();
                let contents = read_journal(&path).unwrap();
                let hit = ranges.iter().position(|r| r.contains(&i)).unwrap() as u64;
                let intact: Vec<ProcessRecord> = (0..4).filter(|&id| id != hit).map(record).collect();
                assert_eq!(contents.records, intact, "flip {flip:#x} at {i}");
                assert!(!contents.damage.is_none(), "flip at {i} went unreported");
                if hit == 3 {
                    assert_eq!(contents.damage.torn_tail.as_ref().map(|t| t.offset), Some(ranges[3].start as u64));
                } else {
                    let skipped = &contents.damage.skipped;
                    assert_eq!(skipped.len(), 1, "flip at {i}: {skipped:?}");
                    assert_eq!(skipped[0].offset, ranges[hit as usize].start as u64, "flip at {i}");
                    assert_eq!(skipped[0].len, ranges[hit as usize].len() as u64, "flip at {i}");
                    assert_eq!(contents.damage.torn_tail, None);
                }
            }
        }
    }

    #[test]
    fn random_damage_in_a_large_journal_costs_only_the_records_it_touches() {
        use proptest::strategy::{Strategy, ValueTree};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        write_journal(&path, 2000);
        let full = std::fs::read(&path).unwrap();
        let ranges = frame_ranges(&full);
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let damage = proptest::collection::vec((JOURNAL_HEADER.len()..full.len(), 1usize..40, 1u8..=255), 1..12);
        for _ in 0..40 {
            let hits = damage.new_tree(&mut runner).unwrap().current();
            let mut bytes = full.clone();
            let mut touched = std::collections::BTreeSet::new();
            for &(at, len, xor) in &hits {
                for b in at..(at + len).min(bytes.len()) {
                    bytes[b] ^= xor;
                    touched.insert(ranges.iter().position(|r| r.contains(&b)).unwrap() as u64);
                }
            }
            std::fs::write(&path, &bytes).unwrap();
            let contents = read_journal(&path).unwrap();
            let intact: Vec<ProcessRecord> = (0..2000).filter(|id| !touched.contains(id)).map(record).collect();
            assert_eq!(contents.records, intact, "damage {hits:?}");
        }
    }

    #[test]
    fn records_reach_the_file_without_a_later_append_or_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut w = JournalWriter::create(&path).unwrap();
        w.append(&record(0)).unwrap();
        // The writer is neither flushed nor dropped: its thread writes the record out.
        let start = Instant::now();
        while read_journal(&path).unwrap().records.is_empty() {
            assert!(start.elapsed() < Duration::from_secs(30), "the record never reached the file");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(read_journal(&path).unwrap().records, vec![record(0)]);
        drop(w);
    }

    #[test]
    fn frames_made_elsewhere_are_appended_as_they_are() {
        let dir = tempfile::tempdir().unwrap();
        let (by_record, by_frame) = (dir.path().join("a"), dir.path().join("b"));
        write_journal(&by_record, 4);
        let mut w = JournalWriter::create(&by_frame).unwrap();
        for id in 0..4 {
            let mut frame = Vec::new();
            encode_frame(&record(id), &mut frame).unwrap();
            assert_eq!(decode_frame(&frame).unwrap(), record(id));
            w.append_frame(&frame).unwrap();
        }
        w.sync().unwrap();
        assert_eq!(std::fs::read(&by_record).unwrap(), std::fs::read(&by_frame).unwrap());
    }

    #[test]
    fn a_damaged_frame_does_not_decode() {
        let mut frame = Vec::new();
        encode_frame(&record(9), &mut frame).unwrap();
        for cut in 0..frame.len() {
            assert!(decode_frame(&frame[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..frame.len() {
            let mut bytes = frame.clone();
            bytes[at] ^= 0x5a;
            assert!(decode_frame(&bytes).is_err(), "flip at {at}");
        }
    }

    #[test]
    fn a_file_that_is_not_a_journal_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        std::fs::write(&path, b"hello").unwrap();
        assert!(matches!(read_journal(&path), Err(Error::NotAJournal { .. })));
    }

    fn text() -> impl proptest::strategy::Strategy<Value = String> {
        // Plain text, and the characters JSON escapes.
        proptest::string::string_regex("[a-z0-9 é\"\\\\\n\t\u{1}\u{7f}]{0,12}").expect("a valid regex")
    }

    fn any_record() -> impl proptest::strategy::Strategy<Value = ProcessRecord> {
        use proptest::prelude::*;
        let value = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            text().prop_map(Value::Str),
            proptest::collection::vec(any::<i64>().prop_map(Value::Int), 0..3).prop_map(Value::List),
        ];
        let params = proptest::collection::vec((text(), value.clone()), 0..4).prop_map(|kv| kv.into_iter().collect());
        let status = prop_oneof![Just(Status::Finished), Just(Status::Crashed), Just(Status::TimedOut)];
        (
            (any::<u64>(), any::<u32>(), params, status, value),
            (proptest::option::of(text()), proptest::option::of(text()), any::<u32>()),
            (any::<f64>(), any::<f64>(), text(), text()),
        )
            .prop_map(
                |(
                    (id, run, params, status, output),
                    (reason, stderr_tail, attempts),
                    (started_at, duration_s, host, worker),
                )| {
                    ProcessRecord {
                        id,
                        run,
                        params,
                        status,
                        output,
                        reason,
                        stderr_tail,
                        attempts,
                        started_at,
                        duration_s,
                        location: Location { host, worker },
                    }
                },
            )
    }

    proptest::proptest! {
        #[test]
        fn records_are_written_as_serde_writes_them(record in any_record()) {
            let mut ours = Vec::new();
            write_record_json(&record, &mut ours).unwrap();
            proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&record).unwrap());
        }

        #[test]
        fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("journal");
            let mut bytes = JOURNAL_HEADER.to_vec();
            bytes.extend_from_slice(&tail);
            std::fs::write(&path, &bytes).unwrap();
            let _ = read_journal(&path).unwrap();
        }
    }
}
