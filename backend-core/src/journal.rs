//! The journal: an append-only file with one record per process that ended; the source of
//! truth of a run (the consolidated files are made from it).
//!
//! Layout: a header line `taskfarm-journal v1\n`, then records, each a little-endian `u32`
//! payload length, a little-endian `u32` CRC-32 of the payload, and the payload (a
//! [`ProcessRecord`] as JSON). A torn or corrupt tail (power loss, `kill -9`) is detected
//! by its length or checksum, reported, and ignored: never fatal.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Error, ProcessRecord, Result, Status, Value};

/// The first bytes of every journal.
pub const JOURNAL_HEADER: &[u8] = b"taskfarm-journal v1\n";

/// Records larger than this are treated as corruption, not as a reason to allocate.
const MAX_RECORD_LEN: u32 = 64 * 1024 * 1024;

/// Flush to the OS after this many records or this much time, whichever comes first.
const FLUSH_EVERY_RECORDS: usize = 256;
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Flushed records are also synced to disk this often while a run goes on, from a thread of
/// the journal's own: a power loss loses at most about this much of a run, and the sync at
/// the end has little left to write.
const SYNC_EVERY: Duration = Duration::from_millis(200);

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

/// Appends records to a journal, flushing in batches.
#[derive(Debug)]
pub struct JournalWriter {
    path: PathBuf,
    out: BufWriter<File>,
    unflushed: usize,
    last_flush: Instant,
    /// Syncs what was flushed every `SYNC_EVERY` while the writer lives.
    _syncer: Syncer,
    /// The payload being encoded, reused so that appending allocates nothing per record.
    scratch: Vec<u8>,
}

impl JournalWriter {
    /// Creates a new journal (fails if one exists).
    pub fn create(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| Error::io("create the journal", path, e))?;
        let mut writer = Self::wrap(path, file);
        writer.out.write_all(JOURNAL_HEADER).map_err(|e| Error::io("write the journal", path, e))?;
        writer.flush()?;
        Ok(writer)
    }

    /// Opens an existing journal to append to it (for a resumed run).
    pub fn append_to(path: &Path) -> Result<Self> {
        let file = OpenOptions::new().append(true).open(path).map_err(|e| Error::io("open the journal", path, e))?;
        Ok(Self::wrap(path, file))
    }

    fn wrap(path: &Path, file: File) -> Self {
        let syncer = Syncer::start(&file);
        JournalWriter {
            path: path.to_owned(),
            out: BufWriter::with_capacity(256 * 1024, file),
            unflushed: 0,
            last_flush: Instant::now(),
            _syncer: syncer,
            scratch: Vec::with_capacity(1024),
        }
    }

    /// Appends one record; flushes when the batch is full or old enough. Returns the status
    /// journaled (see [`encode_frame`] for a record too large).
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
        self.out.write_all(frame).map_err(|e| Error::io("write the journal", &self.path, e))?;
        self.unflushed += 1;
        if self.unflushed >= FLUSH_EVERY_RECORDS || self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush()?;
        }
        Ok(())
    }

    /// Hands buffered records to the OS.
    pub fn flush(&mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io("write the journal", &self.path, e))?;
        self.unflushed = 0;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Flushes and waits until the records are on disk.
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.out.get_ref().sync_all().map_err(|e| Error::io("sync the journal", &self.path, e))
    }
}

/// The thread that syncs a journal every `SYNC_EVERY`, so the writer (the local collector,
/// the MPI master's loop) never waits for the disk but at its final sync. A failed periodic
/// sync is not reported: the final one fails the same way and is.
#[derive(Debug)]
struct Syncer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Syncer {
    /// Starts syncing `file`; without a second handle on it or a thread, only the final
    /// sync is made.
    fn start(file: &File) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = file.try_clone().ok().and_then(|file| {
            std::thread::Builder::new()
                .name("taskfarm-journal-sync".into())
                .spawn(move || {
                    while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(SYNC_EVERY) {
                        let _ = file.sync_data();
                    }
                })
                .ok()
        });
        Syncer { stop: Some(stop), thread }
    }
}

impl Drop for Syncer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Why reading stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The byte offset of the first record that could not be read.
    pub offset: u64,
    /// What was wrong with it.
    pub why: String,
}

/// Everything a journal holds.
#[derive(Debug, Default)]
pub struct JournalContents {
    /// The intact records, in the order they were written.
    pub records: Vec<ProcessRecord>,
    /// Set when the file ends with a torn or corrupt record, which was ignored.
    pub torn_tail: Option<TornTail>,
}

/// Reads every intact record of a journal, calling `each` in order; stops quietly at a torn
/// or corrupt tail and reports it. A file that is not a journal at all is an error.
pub fn read_journal_with(path: &Path, mut each: impl FnMut(ProcessRecord)) -> Result<Option<TornTail>> {
    read_journal_indexed(path, |_, record| each(record))
}

/// Like [`read_journal_with`], and gives each record's byte offset in the file, for
/// [`read_record_at`] (consolidation keeps offsets, not records, so its memory stays flat).
pub fn read_journal_indexed(path: &Path, each: impl FnMut(u64, ProcessRecord)) -> Result<Option<TornTail>> {
    let file = File::open(path).map_err(|e| Error::io("open the journal", path, e))?;
    read_journal_from(BufReader::with_capacity(256 * 1024, file), path, each)
}

/// Reads journal records from any reader (`path` only names it in errors): what
/// [`read_journal_indexed`] does on a file, and what the fuzz target feeds arbitrary bytes.
pub fn read_journal_from(
    mut input: impl Read,
    path: &Path,
    mut each: impl FnMut(u64, ProcessRecord),
) -> Result<Option<TornTail>> {
    let mut header = vec![0u8; JOURNAL_HEADER.len()];
    let got = read_full(&mut input, &mut header).map_err(|e| Error::io("read the journal", path, e))?;
    if header[..got] != JOURNAL_HEADER[..got] {
        return Err(Error::NotAJournal { path: path.to_owned() });
    }
    if got < JOURNAL_HEADER.len() {
        return Ok(Some(TornTail { offset: 0, why: "the file ends inside the journal header".into() }));
    }
    let mut offset = JOURNAL_HEADER.len() as u64;
    let mut frame = [0u8; 8];
    let mut payload = Vec::new();
    loop {
        match read_full(&mut input, &mut frame) {
            Ok(0) => return Ok(None),
            Ok(8) => {}
            Ok(n) => {
                return Ok(Some(TornTail { offset, why: format!("the file ends {n} bytes into a record header") }))
            }
            Err(e) => return Err(Error::io("read the journal", path, e)),
        }
        let (len, crc) = frame_head(&frame);
        if len > MAX_RECORD_LEN {
            return Ok(Some(TornTail { offset, why: format!("a record claims an implausible length of {len} bytes") }));
        }
        // Grows with the bytes that are there, so a corrupt length allocates nothing big.
        payload.clear();
        match (&mut input).take(u64::from(len)).read_to_end(&mut payload) {
            Ok(n) if n == len as usize => {}
            Ok(n) => {
                return Ok(Some(TornTail { offset, why: format!("the file ends {n} of {len} bytes into a record") }))
            }
            Err(e) => return Err(Error::io("read the journal", path, e)),
        }
        if crc32fast::hash(&payload) != crc {
            return Ok(Some(TornTail { offset, why: "a record's checksum does not match".into() }));
        }
        match serde_json::from_slice::<ProcessRecord>(&payload) {
            Ok(record) => each(offset, record),
            Err(e) => return Ok(Some(TornTail { offset, why: format!("a record does not decode: {e}") })),
        }
        offset += 8 + u64::from(len);
    }
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
    let torn_tail = read_journal_with(path, |r| records.push(r))?;
    Ok(JournalContents { records, torn_tail })
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
        assert_eq!(contents.torn_tail, None);
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
            assert_eq!(contents.torn_tail.is_some(), !boundaries.contains(&cut), "cut at {cut}");
            if cut < JOURNAL_HEADER.len() {
                assert_eq!(contents.torn_tail.as_ref().map(|t| t.offset), Some(0));
            }
        }
    }

    #[test]
    fn a_flipped_byte_stops_reading_without_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        write_journal(&path, 3);
        let full = std::fs::read(&path).unwrap();
        for i in JOURNAL_HEADER.len()..full.len() {
            let mut bytes = full.clone();
            bytes[i] ^= 0x5a;
            std::fs::write(&path, &bytes).unwrap();
            let contents = read_journal(&path).unwrap();
            assert!(contents.records.len() < 3, "flip at {i} went unnoticed");
            assert!(contents.torn_tail.is_some());
        }
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
