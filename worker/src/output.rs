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
//! The output is laid out where the process ran and written by the program that owns the
//! result directory: under MPI a worker rank sends it to the master in chunks, so no shared
//! file system is needed (see `taskfarm::process_tools::output`).

use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::Path;

pub use taskfarm::process_tools::output::{keep, OutputMode};
pub use taskfarm::results::files::{LOGS_DIR, OUTPUT_INDEX, OUTPUT_LOG};

use crate::WorkerError;

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
    use std::fs::OpenOptions;

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
