//! `operation.log`: every log record of a run — the master's and every worker's — in the
//! result directory, one line each with time, level, host, worker, process id and message.
//!
//! Records are made with plain `tracing` macros (`tracing::info!(...)`), by taskfarm and by
//! processes alike. [`OperationLogLayer`] is a `tracing-subscriber` layer that formats each
//! record and hands it to the run's sink: the open `operation.log` on the program that owns
//! the result directory, or — on an MPI worker rank, which has no result directory of its
//! own — a queue the backend drains into messages to the master, which appends them
//! ([`append_forwarded`]). Records are written as they come, so a crash loses none already
//! made.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use crate::results::files;
use crate::{this_host, Error, Result};

/// Where formatted records go.
enum Sink {
    /// No run is open: records are dropped (the console layer still shows them).
    Closed,
    /// The run's `operation.log`.
    File(File),
    /// An MPI worker rank: records wait here until the backend sends them to the master.
    Forward(Vec<String>),
    /// A child of subprocess isolation: each record goes to stdout at once, marked, so the
    /// parent keeps it even if the child then dies.
    Parent,
}

/// The mark before a record on a child's stdout.
pub(crate) const CHILD_LOG_MARK: &str = "@taskfarm-log@ ";

static SINK: Mutex<Sink> = Mutex::new(Sink::Closed);

thread_local! {
    /// The worker and the process running on this thread; the worker's name is kept while
    /// no process runs (`None`), so marking the next process allocates nothing.
    static CURRENT: RefCell<(String, Option<u64>)> = const { RefCell::new((String::new(), None)) };
}

fn with_sink<T>(f: impl FnOnce(&mut Sink) -> T) -> T {
    let mut sink = SINK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(&mut sink)
}

/// Opens (or, for a resumed run, appends to) `<dir>/operation.log`; records go there until
/// [`close`].
pub fn open(dir: &Path) -> Result<()> {
    let path = dir.join(files::OPERATION_LOG);
    let file = OpenOptions::new().create(true).append(true).open(&path).map_err(|e| Error::io("open", &path, e))?;
    with_sink(|sink| *sink = Sink::File(file));
    Ok(())
}

/// Makes records wait in a queue for [`take_forwarded`] (an MPI worker rank).
pub fn forward() {
    with_sink(|sink| {
        if !matches!(sink, Sink::Forward(_)) {
            *sink = Sink::Forward(Vec::new());
        }
    });
}

/// Takes the records queued since the last call (an MPI worker rank sends them on).
pub fn take_forwarded() -> Vec<String> {
    with_sink(|sink| match sink {
        Sink::Forward(queue) => std::mem::take(queue),
        _ => Vec::new(),
    })
}

/// Takes in records that came from elsewhere (a worker rank, a child process): appended to
/// the open `operation.log`, or queued on with this program's own records.
pub fn append_forwarded(lines: &[String]) {
    with_sink(|sink| match sink {
        Sink::File(file) => {
            for line in lines {
                let _ = file.write_all(line.as_bytes());
            }
        }
        Sink::Forward(queue) => queue.extend(lines.iter().cloned()),
        Sink::Parent => {
            let mut out = std::io::stdout().lock();
            for line in lines {
                let _ = write!(out, "{CHILD_LOG_MARK}{line}");
            }
            let _ = out.flush();
        }
        Sink::Closed => {}
    });
}

/// In a child of subprocess isolation: sends every record to the parent on stdout, as it is
/// made, and installs a subscriber for the process's records (`debug` and above).
pub(crate) fn to_parent() {
    with_sink(|sink| *sink = Sink::Parent);
    install(None, Level::DEBUG);
}

/// The records a child wrote on its stdout (see [`to_parent`]).
pub(crate) fn child_records(stdout: &str) -> Vec<String> {
    stdout.lines().filter_map(|line| line.strip_prefix(CHILD_LOG_MARK)).map(|line| format!("{line}\n")).collect()
}

/// Flushes and closes `operation.log`.
pub fn close() {
    with_sink(|sink| {
        if let Sink::File(file) = sink {
            let _ = file.sync_data();
            *sink = Sink::Closed;
        }
    });
}

/// Marks the calling thread as running process `id` on `worker` (or as running none), so
/// its records say which process made them. `run_job` does this.
pub fn set_current(current: Option<(&str, u64)>) {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        match current {
            Some((worker, id)) => {
                if c.0 != worker {
                    c.0.clear();
                    c.0.push_str(worker);
                }
                c.1 = Some(id);
            }
            None => c.1 = None,
        }
    });
}

/// Names the worker of the calling thread when no process runs on it (e.g. `master`).
fn thread_worker() -> String {
    match std::thread::current().name() {
        None | Some("main") => "master".to_owned(),
        Some(name) => name.to_owned(),
    }
}

/// The `tracing-subscriber` layer that writes records to `operation.log` (or forwards them).
///
/// ```
/// use tracing_subscriber::layer::SubscriberExt;
/// let subscriber = tracing_subscriber::registry().with(backend_core::oplog::OperationLogLayer::default());
/// let _ = tracing::subscriber::set_global_default(subscriber);
/// ```
#[derive(Debug, Clone)]
pub struct OperationLogLayer {
    level: Level,
}

impl Default for OperationLogLayer {
    /// Records at `INFO` and above.
    fn default() -> Self {
        OperationLogLayer { level: Level::INFO }
    }
}

impl OperationLogLayer {
    /// Records at `level` and above.
    pub fn with_level(level: Level) -> Self {
        OperationLogLayer { level }
    }
}

impl<S: Subscriber> Layer<S> for OperationLogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > self.level || with_sink(|sink| matches!(sink, Sink::Closed)) {
            return;
        }
        let mut message = MessageVisitor::default();
        event.record(&mut message);
        let (worker, process) = CURRENT.with(|c| match &*c.borrow() {
            (worker, Some(id)) => (worker.clone(), id.to_string()),
            (_, None) => (thread_worker(), "-".to_owned()),
        });
        let time = time::OffsetDateTime::now_utc()
            .format(time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            ))
            .unwrap_or_default();
        let line = format!(
            "{time} {level:<5} {} {worker} process={process} {}: {}\n",
            this_host(),
            event.metadata().target(),
            message.text
        );
        with_sink(|sink| match sink {
            Sink::File(file) => {
                let _ = file.write_all(line.as_bytes());
            }
            Sink::Forward(queue) => queue.push(line),
            Sink::Parent => {
                let mut out = std::io::stdout().lock();
                let _ = write!(out, "{CHILD_LOG_MARK}{line}");
                let _ = out.flush();
            }
            Sink::Closed => {}
        });
    }
}

/// Installs a global `tracing` subscriber that shows records at `console` and above on
/// stderr (none when `None`) and writes records at `file` and above to the run's
/// `operation.log`. A program (or a test) that installed its own subscriber keeps it; add
/// [`OperationLogLayer`] to it instead.
///
/// ```
/// backend_core::oplog::install(Some(tracing::Level::WARN), tracing::Level::DEBUG);
/// ```
pub fn install(console: Option<Level>, file: Level) {
    use tracing_subscriber::filter::LevelFilter;
    use tracing_subscriber::layer::SubscriberExt;

    let console = console.map(LevelFilter::from_level).unwrap_or(LevelFilter::OFF);
    let subscriber = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
                .with_target(false)
                .with_filter(console),
        )
        .with(OperationLogLayer::with_level(file));
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// Collects an event's message and fields into one line.
#[derive(Default)]
struct MessageVisitor {
    text: String,
}

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.text, "{value:?}");
        } else {
            let _ = write!(self.text, " {}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.text.push_str(value);
        } else {
            let _ = write!(self.text, " {}={value}", field.name());
        }
    }
}
