//! What the `command` kind keeps of each process's stdout and stderr (its `output` field),
//! and `taskfarm-worker log DIR ID`, which prints it back.
//!
//! - `"tail"` (the default): nothing beyond the record (the last stdout line or lines as the
//!   output, the end of stderr on a crash).
//! - `"files"`: `logs/<id>.out` and `logs/<id>.err` in the result directory, in full (the
//!   last attempt's, with retries).
//! - `"log"`: one append-only `output.log` per run, every line tagged with its process's id
//!   and stream (`12 out: text`, `12 err: text`), a process's lines together in one block
//!   appended when it ends; and `output.idx`, one line `id offset length` per block, so one
//!   process's output is found by reading the small index, then only its block. A million
//!   processes make these two files, not two million. The latest block of an id counts (a
//!   retry or a resumed run appends another).
//!
//! Blocks are appended with `O_APPEND` in one write each, and each writer notes where its
//! block landed from its own file offset, so the threads of a pool, the children of
//! subprocess isolation and the ranks of one host can share the files.
//!
//! The files are written where the process ran, at the result directory's path, and only
//! when that directory exists there. Under MPI across hosts without a shared file system the
//! output does not travel to the master: processes on other hosts keep none, and a warning
//! for each says so in `operation.log`.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::WorkerError;

/// The folder of `output = "files"`.
pub const LOGS_DIR: &str = "logs";
/// The log of `output = "log"`.
pub const OUTPUT_LOG: &str = "output.log";
/// The index of [`OUTPUT_LOG`].
pub const OUTPUT_INDEX: &str = "output.idx";

/// What a command keeps of its stdout and stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputMode {
    /// Only what the record holds.
    #[default]
    Tail,
    /// `logs/<id>.out` and `logs/<id>.err`.
    Files,
    /// One `output.log` per run, with its index.
    Log,
}

impl OutputMode {
    /// The mode a spec's `output` value names.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "tail" => Some(OutputMode::Tail),
            "files" => Some(OutputMode::Files),
            "log" => Some(OutputMode::Log),
            _ => None,
        }
    }
}

/// Keeps the output of process `id` in the result directory `dir` as `mode` says.
pub fn keep(mode: OutputMode, dir: &Path, id: u64, stdout: &[u8], stderr: &[u8]) -> std::io::Result<()> {
    match mode {
        OutputMode::Tail => Ok(()),
        OutputMode::Files => write_files(dir, id, stdout, stderr),
        OutputMode::Log => append_to_log(dir, id, stdout, stderr),
    }
}

fn write_files(dir: &Path, id: u64, stdout: &[u8], stderr: &[u8]) -> std::io::Result<()> {
    let logs = dir.join(LOGS_DIR);
    // Only inside an existing result directory: on a host that does not have it, nothing is
    // made at its path.
    if let Err(e) = fs::create_dir(&logs) {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    fs::write(logs.join(format!("{id}.out")), stdout)?;
    fs::write(logs.join(format!("{id}.err")), stderr)
}

/// The open log and index of one result directory, shared by the threads of this program.
struct OpenLog {
    dir: PathBuf,
    log: File,
    index: File,
}

static OPEN_LOG: Mutex<Option<OpenLog>> = Mutex::new(None);

fn append_to_log(dir: &Path, id: u64, stdout: &[u8], stderr: &[u8]) -> std::io::Result<()> {
    let block = tagged_block(id, stdout, stderr);
    let mut open = OPEN_LOG.lock().unwrap_or_else(PoisonError::into_inner);
    let files = match open.take() {
        Some(files) if files.dir == dir => open.insert(files),
        _ => {
            let append = |name: &str| OpenOptions::new().append(true).create(true).open(dir.join(name));
            open.insert(OpenLog { dir: dir.to_owned(), log: append(OUTPUT_LOG)?, index: append(OUTPUT_INDEX)? })
        }
    };
    files.log.write_all(&block)?;
    // With O_APPEND the write lands at the end of the file, wherever other writers left it,
    // and this descriptor's offset is then the end of this block.
    let end = files.log.stream_position()?;
    let offset = end.saturating_sub(block.len() as u64);
    files.index.write_all(format!("{id} {offset} {}\n", block.len()).as_bytes())
}

/// A process's output as lines of the log: `<id> out: <line>` for each line of stdout, then
/// `<id> err: <line>` for each of stderr (a last line without a newline gets one).
fn tagged_block(id: u64, stdout: &[u8], stderr: &[u8]) -> Vec<u8> {
    let mut block = Vec::with_capacity(stdout.len() + stderr.len() + 64);
    for (tag, bytes) in [("out", stdout), ("err", stderr)] {
        if bytes.is_empty() {
            continue;
        }
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        for line in bytes.split(|&b| b == b'\n') {
            block.extend_from_slice(format!("{id} {tag}: ").as_bytes());
            block.extend_from_slice(line);
            block.push(b'\n');
        }
    }
    block
}

/// The output kept of one process: its stdout and its stderr.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct KeptOutput {
    /// Everything it wrote on stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote on stderr.
    pub stderr: Vec<u8>,
}

/// The output of process `id` kept in the result directory `dir`, in either layout.
pub fn read(dir: &Path, id: u64) -> Result<KeptOutput, WorkerError> {
    let logs = dir.join(LOGS_DIR);
    let (out, err) = (logs.join(format!("{id}.out")), logs.join(format!("{id}.err")));
    if out.is_file() || err.is_file() {
        let read = |path: &Path| match fs::read(path) {
            Ok(bytes) => Ok(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(no_output(dir, id, format!("{} could not be read: {e}", path.display()))),
        };
        return Ok(KeptOutput { stdout: read(&out)?, stderr: read(&err)? });
    }
    let index = dir.join(OUTPUT_INDEX);
    if !index.is_file() {
        return Err(no_output(
            dir,
            id,
            "the run kept no output of its processes (its `output` is \"tail\"; output = \"files\" or \"log\" in the \
             spec keeps it)"
                .to_owned(),
        ));
    }
    let (offset, len) = find_block(&index, id)
        .map_err(|e| no_output(dir, id, format!("{} could not be read: {e}", index.display())))?
        .ok_or_else(|| {
            no_output(dir, id, format!("{} has no entry for it (it has not run, or ran elsewhere)", index.display()))
        })?;
    let log_path = dir.join(OUTPUT_LOG);
    let block = read_block(&log_path, offset, len)
        .map_err(|e| no_output(dir, id, format!("{} could not be read: {e}", log_path.display())))?;
    Ok(untag(id, &block))
}

fn no_output(dir: &Path, id: u64, why: String) -> WorkerError {
    WorkerError::NoOutput { dir: dir.to_owned(), id, why }
}

/// The (offset, length) of the latest block of `id` in the index at `path`.
fn find_block(path: &Path, id: u64) -> std::io::Result<Option<(u64, u64)>> {
    let mut found = None;
    let prefix = format!("{id} ");
    for line in BufReader::new(File::open(path)?).split(b'\n') {
        let line = line?;
        // A torn last line (the program died while writing it) does not parse: skipped.
        let Some(rest) = line.strip_prefix(prefix.as_bytes()) else { continue };
        let mut numbers = std::str::from_utf8(rest).unwrap_or("").split(' ').map(str::parse::<u64>);
        if let (Some(Ok(offset)), Some(Ok(len)), None) = (numbers.next(), numbers.next(), numbers.next()) {
            found = Some((offset, len));
        }
    }
    Ok(found)
}

fn read_block(path: &Path, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    file.seek(SeekFrom::Start(offset))?;
    let mut block = Vec::new();
    file.take(len).read_to_end(&mut block)?;
    Ok(block)
}

/// The stdout and stderr of a block of `id`'s lines.
fn untag(id: u64, block: &[u8]) -> KeptOutput {
    let (out, err) = (format!("{id} out: "), format!("{id} err: "));
    let mut kept = KeptOutput::default();
    let block = block.strip_suffix(b"\n").unwrap_or(block);
    if block.is_empty() {
        return kept;
    }
    for line in block.split(|&b| b == b'\n') {
        let (stream, text) = if let Some(text) = line.strip_prefix(out.as_bytes()) {
            (&mut kept.stdout, text)
        } else if let Some(text) = line.strip_prefix(err.as_bytes()) {
            (&mut kept.stderr, text)
        } else {
            continue;
        };
        stream.extend_from_slice(text);
        stream.push(b'\n');
    }
    kept
}

/// `log DIR ID`: writes the process's stdout to `out` and its stderr to `err`.
pub fn print(dir: &Path, id: u64, out: &mut impl Write, err: &mut impl Write) -> Result<(), WorkerError> {
    let kept = read(dir, id)?;
    let _ = out.write_all(&kept.stdout);
    let _ = out.flush();
    let _ = err.write_all(&kept.stderr);
    let _ = err.flush();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_finds_each_process_latest_output_through_its_index() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        keep(OutputMode::Log, dir.path(), 1, b"one\ntwo\n", b"warn").expect("appends");
        keep(OutputMode::Log, dir.path(), 11, b"eleven", b"").expect("appends");
        keep(OutputMode::Log, dir.path(), 2, b"", b"").expect("appends");
        keep(OutputMode::Log, dir.path(), 1, b"again\n", b"").expect("appends");
        let log = fs::read_to_string(dir.path().join(OUTPUT_LOG)).expect("output.log");
        assert_eq!(log, "1 out: one\n1 out: two\n1 err: warn\n11 out: eleven\n1 out: again\n");
        assert_eq!(read(dir.path(), 11).expect("found"), KeptOutput { stdout: b"eleven\n".to_vec(), stderr: vec![] });
        assert_eq!(read(dir.path(), 1).expect("found").stdout, b"again\n", "the latest block counts");
        assert_eq!(read(dir.path(), 2).expect("found"), KeptOutput::default(), "ran, wrote nothing");
        let missing = read(dir.path(), 3).expect_err("never ran");
        assert!(missing.to_string().contains("no entry"), "{missing}");
        // A torn index line is skipped.
        let mut index = OpenOptions::new().append(true).open(dir.path().join(OUTPUT_INDEX)).expect("opens");
        index.write_all(b"11 9").expect("writes");
        assert_eq!(read(dir.path(), 11).expect("found").stdout, b"eleven\n");
    }

    #[test]
    fn files_hold_the_whole_output() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let big: Vec<u8> = (0..100_000u32).flat_map(|i| format!("{i}\n").into_bytes()).collect();
        keep(OutputMode::Files, dir.path(), 4, &big, b"e\n").expect("writes");
        let kept = read(dir.path(), 4).expect("found");
        assert_eq!((kept.stdout, kept.stderr), (big, b"e\n".to_vec()));
        let none = read(dir.path(), 5).expect_err("no output");
        assert!(none.to_string().contains("\"tail\""), "{none}");
    }

    #[test]
    fn nothing_is_made_where_the_result_directory_is_missing() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let gone = dir.path().join("elsewhere");
        assert!(keep(OutputMode::Files, &gone, 1, b"x", b"").is_err());
        assert!(keep(OutputMode::Log, &gone, 1, b"x", b"").is_err());
        assert!(!gone.exists());
    }
}
