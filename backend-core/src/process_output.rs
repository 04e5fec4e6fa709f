//! The whole stdout and stderr of a process, kept in the result directory when its kind is
//! asked to (the `command` kind's `output = "files"` or `"log"`), and the sink that takes it.
//!
//! A process's output is laid out where it ran ([`ProcessOutput::new`]: the two files'
//! contents, or the block of tagged lines of the log), then handed to the sink ([`keep`]):
//!
//! - on the program that owns the result directory (serial, local, an MPI world of one
//!   rank), it is written there at once ([`ProcessOutput::write`]);
//! - on an MPI worker rank ([`forward`]), it waits in a queue until the backend takes it
//!   ([`take_forwarded`]) and sends it to the master in chunks, which writes it into the
//!   same layout: no shared file system is needed, and the per-line work stays on the rank
//!   that ran the process;
//! - in a child of subprocess isolation, it goes to the parent on stdout (after a mark
//!   line, before the record), which keeps it as its own processes' output.
//!
//! Layouts, in the result directory:
//!
//! - `"files"`: `logs/<id>.out` and `logs/<id>.err`, in full (the last attempt's, with
//!   retries).
//! - `"log"`: one append-only `output.log` per run, every line tagged with its process's id
//!   and stream (`12 out: text`, `12 err: text`), a process's lines together in one block;
//!   and `output.idx`, one line `id offset length` per block, so one process's output is
//!   found by reading the small index, then only its block. The latest block of an id counts
//!   (a retry or a resumed run appends another).
//!
//! Blocks are appended with `O_APPEND` in one write each, and each writer notes where its
//! block landed from its own file offset, so the threads of a pool and the children of
//! subprocess isolation can share the files.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Seek, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use crate::results::files::{LOGS_DIR, OUTPUT_INDEX, OUTPUT_LOG};

/// What a process kind keeps of a process's stdout and stderr.
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
    /// The mode a spec's `output` value names (`"tail"`, `"files"` or `"log"`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "tail" => Some(OutputMode::Tail),
            "files" => Some(OutputMode::Files),
            "log" => Some(OutputMode::Log),
            _ => None,
        }
    }
}

/// How the bytes of a [`ProcessOutput`] go into the result directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OutputLayout {
    /// The first `stdout_len` bytes are `logs/<id>.out`, the rest `logs/<id>.err`.
    Files {
        /// How many of the bytes are stdout.
        stdout_len: u64,
    },
    /// The bytes are the process's block of `output.log`, its lines tagged already.
    Log,
}

/// One process's output, laid out as the result directory keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutput {
    /// The process's id.
    pub id: u64,
    /// Which files the bytes go to.
    pub layout: OutputLayout,
    /// The files' contents (see [`OutputLayout`]).
    pub bytes: Vec<u8>,
}

impl ProcessOutput {
    /// The output of process `id` laid out for `mode`; `None` for [`OutputMode::Tail`],
    /// which keeps nothing.
    pub fn new(mode: OutputMode, id: u64, stdout: &[u8], stderr: &[u8]) -> Option<Self> {
        match mode {
            OutputMode::Tail => None,
            OutputMode::Files => {
                let mut bytes = Vec::with_capacity(stdout.len() + stderr.len());
                bytes.extend_from_slice(stdout);
                bytes.extend_from_slice(stderr);
                Some(ProcessOutput { id, layout: OutputLayout::Files { stdout_len: stdout.len() as u64 }, bytes })
            }
            OutputMode::Log => {
                Some(ProcessOutput { id, layout: OutputLayout::Log, bytes: tagged_block(id, stdout, stderr) })
            }
        }
    }

    /// Writes the output into the result directory `dir`, which must exist: nothing is made
    /// at a path whose directory is missing.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        match self.layout {
            OutputLayout::Files { stdout_len } => {
                // The length may have come over the network: a wrong one is an error, not a panic.
                let split = usize::try_from(stdout_len).ok().filter(|&n| n <= self.bytes.len()).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "the output of process {} says its stdout is {stdout_len} bytes of {}",
                            self.id,
                            self.bytes.len()
                        ),
                    )
                })?;
                let (stdout, stderr) = self.bytes.split_at(split);
                write_files(dir, self.id, stdout, stderr)
            }
            OutputLayout::Log => append_to_log(dir, self.id, &self.bytes),
        }
    }
}

/// Outputs written into a result directory piece by piece as they arrive, never held whole
/// (the MPI master, whose worker ranks send them in chunks): each piece is written at once,
/// so taking in a large output costs the writer a bounded time per piece. The pieces of
/// several outputs may interleave. With the log layout, the writer must be the only one
/// appending to `output.log` while it lives: it reserves each output's block at the end of
/// the file when the output begins and writes the pieces into it; the index line comes when
/// the block is complete, so an output cut short is never found.
#[derive(Debug)]
pub struct OutputWriter {
    dir: PathBuf,
    /// `output.log` (written at offsets), `output.idx` and where the next block starts.
    log: Option<(File, File, u64)>,
}

/// One output being written by an [`OutputWriter`].
#[derive(Debug)]
pub struct StreamedOutput {
    id: u64,
    layout: OutputLayout,
    total: u64,
    written: u64,
    target: Target,
}

#[derive(Debug)]
enum Target {
    Files {
        out: File,
        err: File,
    },
    /// Where its block starts, and whether its index line is written.
    Log {
        start: u64,
        indexed: bool,
    },
}

impl StreamedOutput {
    /// Whether all of its bytes were written.
    pub fn is_complete(&self) -> bool {
        self.written == self.total
    }
}

impl OutputWriter {
    /// A writer into the result directory `dir`, which must exist.
    pub fn new(dir: PathBuf) -> Self {
        OutputWriter { dir, log: None }
    }

    /// Begins the output of process `id`, `total` bytes laid out as `layout`: makes its
    /// files (`logs/<id>.out` and `.err`, emptied) or reserves its block of `output.log`.
    pub fn begin(&mut self, id: u64, layout: OutputLayout, total: u64) -> std::io::Result<StreamedOutput> {
        let target = match layout {
            OutputLayout::Files { stdout_len } => {
                if stdout_len > total {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the output of process {id} says its stdout is {stdout_len} bytes of {total}"),
                    ));
                }
                let logs = self.dir.join(LOGS_DIR);
                if let Err(e) = fs::create_dir(&logs) {
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(e);
                    }
                }
                Target::Files {
                    out: File::create(logs.join(format!("{id}.out")))?,
                    err: File::create(logs.join(format!("{id}.err")))?,
                }
            }
            OutputLayout::Log => {
                let (_, _, end) = match &mut self.log {
                    Some(log) => log,
                    None => {
                        let log = OpenOptions::new()
                            .write(true)
                            .create(true)
                            .truncate(false)
                            .open(self.dir.join(OUTPUT_LOG))?;
                        let index = OpenOptions::new().append(true).create(true).open(self.dir.join(OUTPUT_INDEX))?;
                        let end = log.metadata()?.len();
                        self.log.insert((log, index, end))
                    }
                };
                let start = *end;
                // The total may have come over the network: one past any file is an error.
                *end = start.checked_add(total).ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("the output of process {id} says it is {total} bytes, past any file's end"),
                    )
                })?;
                Target::Log { start, indexed: false }
            }
        };
        Ok(StreamedOutput { id, layout, total, written: 0, target })
    }

    /// Writes the next `bytes` of `output` (an error past its total); once it is complete,
    /// a log block gets its index line (an empty output: at its first, empty, write).
    pub fn write(&mut self, output: &mut StreamedOutput, bytes: &[u8]) -> std::io::Result<()> {
        let at = output.written;
        let end = at.checked_add(bytes.len() as u64).filter(|&end| end <= output.total).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("more than the {} bytes of process {}'s output came", output.total, output.id),
            )
        })?;
        match (&mut output.target, output.layout) {
            (Target::Files { out, err }, OutputLayout::Files { stdout_len }) => {
                // The bytes before `stdout_len` are stdout's, the rest stderr's.
                let to_out = usize::try_from(stdout_len.saturating_sub(at)).unwrap_or(usize::MAX).min(bytes.len());
                out.write_all(&bytes[..to_out])?;
                err.write_all(&bytes[to_out..])?;
            }
            (Target::Log { start, .. }, _) => {
                let Some((log, _, _)) = &mut self.log else {
                    return Err(std::io::Error::other("output.log is not open"));
                };
                log.seek(std::io::SeekFrom::Start(*start + at))?;
                log.write_all(bytes)?;
            }
            (Target::Files { .. }, OutputLayout::Log) => {
                return Err(std::io::Error::other("an output's layout changed while it was written"));
            }
        }
        output.written = end;
        if let (true, Target::Log { start, indexed: indexed @ false }, Some((_, index, _))) =
            (output.is_complete(), &mut output.target, &mut self.log)
        {
            index.write_all(format!("{} {start} {}\n", output.id, output.total).as_bytes())?;
            *indexed = true;
        }
        Ok(())
    }
}

/// Where laid-out outputs go.
enum Sink {
    /// Written into the result directory at once.
    Write,
    /// An MPI worker rank: outputs wait here until the backend sends them to the master.
    Forward(VecDeque<ProcessOutput>),
    /// A child of subprocess isolation: each output goes to stdout at once, marked.
    Parent,
}

/// The mark before an output on a child's stdout; after it a line `id layout stdout_len
/// len` (layout `files` or `log`; `stdout_len` 0 for `log`), then `len` bytes.
const CHILD_OUTPUT_MARK: &[u8] = b"\n@taskfarm-output@ ";

static SINK: Mutex<Sink> = Mutex::new(Sink::Write);

fn with_sink<T>(f: impl FnOnce(&mut Sink) -> T) -> T {
    let mut sink = SINK.lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut sink)
}

/// Keeps the output of process `id` as `mode` says: written into the result directory
/// `dir`, or queued for the master on an MPI worker rank (see the [module
/// documentation](self)). An error only when it was written here and could not be.
pub fn keep(mode: OutputMode, dir: &Path, id: u64, stdout: &[u8], stderr: &[u8]) -> std::io::Result<()> {
    ProcessOutput::new(mode, id, stdout, stderr).map_or(Ok(()), |output| keep_laid_out(output, dir))
}

/// Hands a laid-out output to the sink.
fn keep_laid_out(output: ProcessOutput, dir: &Path) -> std::io::Result<()> {
    let output = with_sink(|sink| match sink {
        Sink::Forward(queue) => {
            queue.push_back(output);
            Ok(None)
        }
        Sink::Parent => {
            let (layout, stdout_len) = match output.layout {
                OutputLayout::Files { stdout_len } => ("files", stdout_len),
                OutputLayout::Log => ("log", 0),
            };
            let mut out = std::io::stdout().lock();
            out.write_all(CHILD_OUTPUT_MARK)?;
            writeln!(out, "{} {layout} {stdout_len} {}", output.id, output.bytes.len())?;
            out.write_all(&output.bytes)?;
            out.flush().map(|()| None)
        }
        Sink::Write => Ok(Some(output)),
    })?;
    // Written outside the sink's lock: a large output does not hold up the other threads.
    output.map_or(Ok(()), |output| output.write(dir))
}

/// In a child of subprocess isolation: kept outputs go to the parent on stdout.
pub(crate) fn to_parent() {
    with_sink(|sink| *sink = Sink::Parent);
}

/// Takes the outputs a child wrote on its stdout (see [`to_parent`]) out of `stdout` and
/// keeps each as this program keeps its own (for the result directory `dir`); an output
/// cut short (the child was killed while writing it) is dropped. What is left of `stdout`
/// is the child's other lines and its record.
pub(crate) fn take_from_child(stdout: &mut Vec<u8>, dir: &Path) {
    let mut rest = Vec::with_capacity(stdout.len());
    let mut at = 0;
    while let Some(found) = find(&stdout[at..], CHILD_OUTPUT_MARK) {
        let start = at + found;
        rest.extend_from_slice(&stdout[at..start]);
        let header_at = start + CHILD_OUTPUT_MARK.len();
        match child_output(&stdout[header_at..]) {
            Some((output, used)) => {
                if let Err(e) = keep_laid_out(output, dir) {
                    tracing::warn!(target: "taskfarm", "a process's output could not be kept in {}: {e}", dir.display());
                }
                at = header_at + used;
            }
            None => {
                // Not an output after all (or one cut short): kept as the child's text.
                rest.extend_from_slice(CHILD_OUTPUT_MARK);
                at = header_at;
            }
        }
    }
    rest.extend_from_slice(&stdout[at..]);
    *stdout = rest;
}

/// The output after a mark on a child's stdout, and how many bytes it took.
fn child_output(bytes: &[u8]) -> Option<(ProcessOutput, usize)> {
    let end = bytes.iter().position(|&b| b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..end]).ok()?;
    let number = |field: &str| u64::from_str(field).ok();
    let [id, layout, stdout_len, len] = header.split(' ').collect::<Vec<_>>()[..] else { return None };
    let (id, stdout_len, len) = (number(id)?, number(stdout_len)?, usize::try_from(number(len)?).ok()?);
    let layout = match layout {
        "files" => OutputLayout::Files { stdout_len },
        "log" => OutputLayout::Log,
        _ => return None,
    };
    let body = bytes.get(end + 1..)?.get(..len)?;
    Some((ProcessOutput { id, layout, bytes: body.to_vec() }, end + 1 + len))
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

/// Makes kept outputs wait in a queue for [`take_forwarded`] (an MPI worker rank, whose
/// master writes them).
pub fn forward() {
    with_sink(|sink| {
        if !matches!(sink, Sink::Forward(_)) {
            *sink = Sink::Forward(VecDeque::new());
        }
    });
}

/// The oldest output queued for the master, if any (see [`forward`]).
pub fn take_forwarded() -> Option<ProcessOutput> {
    with_sink(|sink| match sink {
        Sink::Forward(queue) => queue.pop_front(),
        Sink::Write | Sink::Parent => None,
    })
}

fn write_files(dir: &Path, id: u64, stdout: &[u8], stderr: &[u8]) -> std::io::Result<()> {
    let logs = dir.join(LOGS_DIR);
    // `create_dir`, not `create_dir_all`: only inside an existing result directory.
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

fn append_to_log(dir: &Path, id: u64, block: &[u8]) -> std::io::Result<()> {
    let mut open = OPEN_LOG.lock().unwrap_or_else(PoisonError::into_inner);
    let files = match open.take() {
        Some(files) if files.dir == dir => open.insert(files),
        _ => {
            let append = |name: &str| OpenOptions::new().append(true).create(true).open(dir.join(name));
            open.insert(OpenLog { dir: dir.to_owned(), log: append(OUTPUT_LOG)?, index: append(OUTPUT_INDEX)? })
        }
    };
    files.log.write_all(block)?;
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
        let prefix = format!("{id} {tag}: ");
        for line in bytes.split(|&b| b == b'\n') {
            block.extend_from_slice(prefix.as_bytes());
            block.extend_from_slice(line);
            block.push(b'\n');
        }
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_are_laid_out_for_their_mode() {
        assert_eq!(ProcessOutput::new(OutputMode::Tail, 1, b"x", b"y"), None);
        let files = ProcessOutput::new(OutputMode::Files, 3, b"out\n", b"err").expect("laid out");
        assert_eq!((files.layout, files.bytes.as_slice()), (OutputLayout::Files { stdout_len: 4 }, &b"out\nerr"[..]));
        let log = ProcessOutput::new(OutputMode::Log, 3, b"a\nb", b"c\n").expect("laid out");
        assert_eq!(log.bytes, b"3 out: a\n3 out: b\n3 err: c\n");
    }

    #[test]
    fn outputs_on_a_child_stdout_are_taken_out_and_kept() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let files =
            ProcessOutput::new(OutputMode::Files, 4, b"\xffbinary\n@taskfarm-record@ x\n", b"e").expect("laid out");
        let mut stdout = b"before".to_vec();
        for output in [&files, &ProcessOutput::new(OutputMode::Log, 5, b"line", b"").expect("laid out")] {
            let (layout, stdout_len) = match output.layout {
                OutputLayout::Files { stdout_len } => ("files", stdout_len),
                OutputLayout::Log => ("log", 0),
            };
            stdout.extend_from_slice(CHILD_OUTPUT_MARK);
            stdout
                .extend_from_slice(format!("{} {layout} {stdout_len} {}\n", output.id, output.bytes.len()).as_bytes());
            stdout.extend_from_slice(&output.bytes);
        }
        stdout.extend_from_slice(b"\n@taskfarm-record@ {}\n");
        // One cut short, as by a kill while it was written: dropped, kept as text.
        stdout.extend_from_slice(CHILD_OUTPUT_MARK);
        stdout.extend_from_slice(b"6 log 0 100\nabc");
        take_from_child(&mut stdout, dir.path());
        let mut want = b"before\n@taskfarm-record@ {}\n".to_vec();
        want.extend_from_slice(CHILD_OUTPUT_MARK);
        want.extend_from_slice(b"6 log 0 100\nabc");
        assert_eq!(stdout, want);
        assert_eq!(fs::read(dir.path().join("logs/4.out")).expect("kept"), b"\xffbinary\n@taskfarm-record@ x\n");
        assert_eq!(fs::read(dir.path().join("output.log")).expect("kept"), b"5 out: line\n");
    }

    #[test]
    fn streamed_outputs_land_in_the_same_layout_piece_by_piece() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        // Written whole first, as a program that runs processes does.
        keep(OutputMode::Log, dir.path(), 9, b"first", b"").expect("kept");
        let mut writer = OutputWriter::new(dir.path().to_owned());
        let files = ProcessOutput::new(OutputMode::Files, 1, b"out 1\nout 2\n", b"err\n").expect("laid out");
        let (a, b) = (
            ProcessOutput::new(OutputMode::Log, 2, b"two", b"e2").expect("laid out"),
            ProcessOutput::new(OutputMode::Log, 3, b"three\n", b"").expect("laid out"),
        );
        let mut streams: Vec<(StreamedOutput, &ProcessOutput)> = [&files, &a, &b]
            .into_iter()
            .map(|o| (writer.begin(o.id, o.layout, o.bytes.len() as u64).expect("begins"), o))
            .collect();
        // Pieces of 5 bytes, the outputs interleaved.
        for at in (0..40).step_by(5) {
            for (stream, output) in &mut streams {
                let piece = output.bytes.get(at..).unwrap_or_default();
                writer.write(stream, &piece[..piece.len().min(5)]).expect("writes");
            }
        }
        assert!(streams.iter().all(|(s, _)| s.is_complete()));
        assert!(writer.write(&mut streams[0].0, b"x").is_err(), "past the total");
        assert_eq!(fs::read(dir.path().join("logs/1.out")).expect("written"), b"out 1\nout 2\n");
        assert_eq!(fs::read(dir.path().join("logs/1.err")).expect("written"), b"err\n");
        let log = fs::read(dir.path().join(OUTPUT_LOG)).expect("written");
        let index = fs::read_to_string(dir.path().join(OUTPUT_INDEX)).expect("written");
        assert_eq!(index.lines().count(), 3, "one line a block: {index}");
        assert!(index.starts_with("9 0 13\n"), "{index}");
        for output in [&a, &b] {
            let line = index.lines().find(|l| l.starts_with(&format!("{} ", output.id))).expect("an index line");
            let n: Vec<usize> = line.split(' ').map(|f| f.parse().expect("a number")).collect();
            assert_eq!(&log[n[1]..n[1] + n[2]], output.bytes.as_slice(), "{index}");
        }
        let wrong = writer.begin(4, OutputLayout::Files { stdout_len: 5 }, 4);
        assert!(wrong.expect_err("stdout longer than the whole").to_string().contains("process 4"));
        assert!(writer.begin(5, OutputLayout::Log, u64::MAX).is_err(), "a total past any file's end");
    }

    #[test]
    fn written_outputs_land_in_the_layout_and_a_wrong_split_is_an_error() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        ProcessOutput::new(OutputMode::Files, 5, b"one\n", b"two\n")
            .expect("laid out")
            .write(dir.path())
            .expect("writes");
        assert_eq!(fs::read(dir.path().join("logs/5.out")).expect("written"), b"one\n");
        assert_eq!(fs::read(dir.path().join("logs/5.err")).expect("written"), b"two\n");
        let wrong = ProcessOutput { id: 6, layout: OutputLayout::Files { stdout_len: 9 }, bytes: b"short".to_vec() };
        let error = wrong.write(dir.path()).expect_err("the split lies past the bytes");
        assert!(error.to_string().contains("process 6"), "{error}");
        let gone = dir.path().join("elsewhere");
        assert!(keep(OutputMode::Files, &gone, 1, b"x", b"").is_err());
        assert!(!gone.exists(), "nothing is made where the result directory is missing");
    }
}
