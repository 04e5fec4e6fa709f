//! Adaptive runs: a job source that gives each parameter point more runs while the
//! condition `until` does not hold for its statistics, up to `max`.
//!
//! Every point starts with `min` runs. Once every run scheduled for a point has a record,
//! the point's statistics over those runs decide: done (the condition holds, or `max` is
//! reached) or `min` more runs (fewer near `max`). A decision reads only the records of that
//! point's runs `0..scheduled`, so with processes that depend on their parameters and run
//! number alone, every backend, in any order, gives each point the same number of runs.
//! Run `r` of the point enumerated `p`-th has id `p × max + r`: run numbers are dense per
//! point and ids stable, so `--resume` skips what was recorded (the records found are fed to
//! the source first, so it decides as the first run did).
//!
//! The source learns of records through the observer the [`Collector`](crate::Collector)
//! calls for each record it journals. While every run handed out waits for its record, the
//! source's `next` waits (it returns when a record opens more runs, when every point is
//! done, or when a stop is requested), so a backend must not pull jobs on the thread that
//! collects records: the serial backend pulls only after recording, the local backend's
//! threads pull while its collector thread records.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::operation::SourceFailure;
use crate::summary::{numeric_fields, AdaptiveRuns, PointStats};
use crate::{Error, Job, Params, ProcessRecord, Result, Status};

/// What the collector calls with each record it journals (see [`Operation::observer`](crate::Operation::observer)).
pub type RecordObserver = Arc<dyn Fn(&ProcessRecord) + Send + Sync>;

/// How long a waiting `next` sleeps before it looks at the stop flag again.
const WAKE: Duration = Duration::from_millis(50);

/// The outcome of one run, as the statistics need it.
#[derive(Debug, Clone)]
struct Outcome {
    status: Status,
    fields: Vec<(String, f64)>,
}

#[derive(Debug)]
struct Point {
    params: Params,
    /// Runs handed out (or to be): `0..scheduled`.
    scheduled: u32,
    done: bool,
}

#[derive(Debug, Default)]
struct State {
    points: Vec<Point>,
    /// The latest outcome of each id.
    outcomes: HashMap<u64, Outcome>,
    /// Runs to hand out: (point, run).
    ready: VecDeque<(usize, u32)>,
    /// Points not yet done.
    open: usize,
    /// Whether the parameter space has been enumerated to its end.
    exhausted: bool,
    /// Whether the source stopped on an error.
    failed: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    runs: AdaptiveRuns,
    failure: SourceFailure,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn id(&self, point: usize, run: u32) -> u64 {
        point as u64 * u64::from(self.runs.max) + u64::from(run)
    }

    /// Takes in a record (journaled now, or found by a resumed run).
    fn observe(&self, record: &ProcessRecord) {
        let mut state = self.lock();
        let outcome = Outcome { status: record.status, fields: numeric_fields(&record.output) };
        state.outcomes.insert(record.id, outcome);
        let point = (record.id / u64::from(self.runs.max)) as usize;
        if point < state.points.len() {
            self.advance(&mut state, point);
        }
        self.wake.notify_all();
    }

    /// Decides for `point` as long as every run scheduled for it has a record: done, or
    /// more runs.
    fn advance(&self, state: &mut State, point: usize) {
        loop {
            let Point { scheduled, done, .. } = state.points[point];
            if done {
                return;
            }
            let mut stats = PointStats::default();
            for run in 0..scheduled {
                let Some(outcome) = state.outcomes.get(&self.id(point, run)) else { return };
                stats.runs += 1;
                if outcome.status == Status::Finished {
                    stats.finished += 1;
                    for (name, value) in &outcome.fields {
                        stats.fields.entry(name.clone()).or_default().add(*value);
                    }
                } else {
                    stats.crashed += 1;
                }
            }
            if stats.finished > 0 {
                if let Some(missing) = self.runs.until.fields().into_iter().find(|f| !stats.fields.contains_key(*f)) {
                    let known: Vec<&str> = stats.fields.keys().map(String::as_str).collect();
                    self.failure.set(Error::BadUntil {
                        until: self.runs.until.text().to_owned(),
                        reason: format!(
                            "it names the field `{missing}`, which the processes' outputs do not have (their numeric \
                             fields are: {})",
                            if known.is_empty() { "none".to_owned() } else { known.join(", ") }
                        ),
                    });
                    state.failed = true;
                    return;
                }
            }
            if self.runs.done(&stats) {
                state.points[point].done = true;
                state.open -= 1;
                return;
            }
            let next = scheduled.saturating_add(self.runs.min).min(self.runs.max);
            state.ready.extend((scheduled..next).map(|run| (point, run)));
            state.points[point].scheduled = next;
        }
    }
}

/// The adaptive job source of a sweep over `points`, and the observer that feeds it.
pub(crate) fn adaptive_source<P: Send + 'static>(
    points: impl Iterator<Item = Params> + Send + 'static,
    runs: AdaptiveRuns,
    make: impl Fn(&Params, u32) -> Result<P> + Send + 'static,
    failure: SourceFailure,
) -> (Box<dyn Iterator<Item = Job<P>> + Send>, RecordObserver) {
    let shared = Arc::new(Shared { state: Mutex::new(State::default()), wake: Condvar::new(), runs, failure });
    let observer_shared = Arc::clone(&shared);
    let observer: RecordObserver = Arc::new(move |record: &ProcessRecord| observer_shared.observe(record));
    let mut points = points;
    let source = std::iter::from_fn(move || {
        let mut state = shared.lock();
        loop {
            if state.failed {
                return None;
            }
            if let Some((point, run)) = state.ready.pop_front() {
                let params = state.points[point].params.clone();
                let id = shared.id(point, run);
                drop(state);
                return match make(&params, run) {
                    Ok(process) => Some(Job { id, run, params, process }),
                    Err(error) => {
                        shared.failure.set(Error::MakingProcess { id, reason: error.to_string() });
                        shared.lock().failed = true;
                        None
                    }
                };
            }
            if !state.exhausted {
                match points.next() {
                    Some(params) => {
                        let point = state.points.len();
                        if (point as u64).checked_mul(u64::from(shared.runs.max)).is_none() {
                            shared.failure.set(Error::TooManyProcesses {
                                what: format!("{point} parameter points × up to {} runs", shared.runs.max),
                            });
                            state.failed = true;
                            return None;
                        }
                        state.points.push(Point { params, scheduled: shared.runs.min, done: false });
                        state.open += 1;
                        state.ready.extend((0..shared.runs.min).map(|run| (point, run)));
                        // A resumed run may have the records of these runs already.
                        shared.advance(&mut state, point);
                    }
                    None => state.exhausted = true,
                }
                continue;
            }
            if state.open == 0 || crate::stop_requested() {
                return None;
            }
            state = shared.wake.wait_timeout(state, WAKE).unwrap_or_else(PoisonError::into_inner).0;
        }
    });
    (Box::new(source), observer)
}

/// The collector's observer, if any (a closure has no `Debug` of its own).
#[derive(Clone, Default)]
pub(crate) struct Observed(pub(crate) Option<RecordObserver>);

impl std::fmt::Debug for Observed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Observed(Some(..))" } else { "Observed(None)" })
    }
}
