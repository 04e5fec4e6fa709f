//! The journal's reader: every intact record in order; a corrupt record in the middle is
//! skipped up to the next intact one, a torn end is ignored, and both are reported.

use std::fs::File;
use std::io::{ErrorKind, Read};
use std::path::Path;

use super::frame::frame_head;
use super::{JOURNAL_HEADER, MAX_RECORD_LEN};
use crate::{Error, ProcessRecord, Result};

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
