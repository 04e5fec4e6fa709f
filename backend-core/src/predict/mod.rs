//! Predicted durations, and the look-ahead window that hands out the longest predicted
//! process first.
//!
//! **The model** ([`DurationModel`]) predicts a process's duration from its parameters. It
//! works in log space (durations are positive and spread over orders of magnitude, and a
//! parameter usually *multiplies* the time: twice the mesh, twice the work): the prediction
//! is the mean log-duration of everything seen, plus, for each parameter, how far the mean
//! log-duration of the processes with the same value of that parameter lies from it. Each
//! such effect is shrunk towards 0 by `n / (n + 2)` (a value seen once says little), and a
//! numeric value not seen yet takes the effect interpolated between its nearest seen
//! neighbours. So learning and predicting cost one hash lookup per parameter, memory is
//! bounded (at most [`MAX_VALUES`] values tracked per parameter), and with nothing known of
//! a parameter the prediction falls back to the overall (geometric) mean.
//!
//! The model is **trusted** for ordering once it has seen [`MIN_TRUST`] processes and its
//! recent predictions — each made *before* the process's duration was learnt — err
//! clearly less (in mean squared log error) than the overall mean would have: parameters
//! that do not explain durations never reorder a run. Predictions in seconds include the
//! log-normal correction `exp(σ²/2)` of the model's own recent error, so sums of predictions
//! (the ETA) are sums of means, not of medians.
//!
//! **The window** ([`Lookahead`]) pulls up to a bound of jobs ahead from the lazy source
//! (never the whole operation), and hands out the one predicted longest while the model is
//! trusted, in id order before (and always with a bound of 1). The [`Learner`] is what the
//! window, the collector and the status thread share: the model, the jobs handed out and not
//! yet recorded (with their features and predictions, so that an MPI master learns from a
//! record's id and duration alone, without decoding it), and what the ETA needs.
//!
//! This module holds the [`Learner`]; `model` is the duration model and `lookahead` the
//! window.

mod lookahead;
mod model;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use self::model::U64Map;
use crate::{Error, Params, Result, Status};

pub use lookahead::Lookahead;
pub use model::{DurationModel, Features, FEW_VALUES};

/// How many jobs the look-ahead window holds by default.
pub const DEFAULT_LOOKAHEAD: usize = 4096;
/// How many durations the model must have learnt before its predictions order the window
/// or give the ETA.
pub const MIN_TRUST: u64 = 32;
/// The most distinct values of one parameter the model keeps statistics for (a parameter
/// with more, such as a seed, stops adding values: memory stays bounded).
pub const MAX_VALUES: usize = 4096;

/// A process runs a copy of itself once it ran this many times its expected duration ...
pub const STRAGGLER_FACTOR: f64 = 3.0;
/// ... and at least this long: a copy costs a start and a thread, and a process of a few
/// milliseconds is better waited for.
pub const STRAGGLER_MIN_S: f64 = 1.0;

/// A job in flight running far past its prediction (see [`Learner::straggler`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Straggler {
    /// The job's id.
    pub id: u64,
    /// How long it has run so far, in seconds.
    pub ran_s: f64,
    /// How long it was expected to run, in seconds.
    pub expected_s: f64,
}

/// A job handed out and not yet recorded.
#[derive(Debug)]
struct InFlight {
    features: Features,
    /// Its predicted median duration when it left the window.
    predicted_s: Option<f64>,
    since: Instant,
}

#[derive(Debug, Default)]
struct LearnerState {
    model: DurationModel,
    in_flight: U64Map<InFlight>,
    /// Jobs in the look-ahead window, and the sum of their predicted medians.
    window_len: usize,
    window_s: f64,
    /// How many processes run at once.
    slots: usize,
}

/// The model with what the window, the collector and the status thread share about the
/// run (see the [module docs](self)); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Learner(Arc<Mutex<LearnerState>>);

impl Learner {
    fn state(&self) -> std::sync::MutexGuard<'_, LearnerState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Learns that a process with `params` ran `duration_s` seconds (seeding).
    pub fn learn(&self, params: &Params, duration_s: f64) {
        self.state().model.learn(&Features::of(params), duration_s);
    }

    /// A copy of the model as it is now.
    pub fn model(&self) -> DurationModel {
        self.state().model.clone()
    }

    /// Says how many processes run at once (the ETA divides the work left by it).
    pub fn set_slots(&self, slots: usize) {
        self.state().slots = slots.max(1);
    }

    /// How many processes run at once, once the backend has said (see [`set_slots`](Self::set_slots)).
    pub fn slots(&self) -> Option<usize> {
        Some(self.state().slots).filter(|&n| n > 0)
    }

    /// Learns from the finished records of the journal of the result directory `dir`, a run
    /// of the operation `name`: `dir` is a run (it holds a journal and `operation.toml`) or
    /// holds runs (`results/<name>`, every run in it). Returns how many durations it learnt.
    pub(crate) fn seed_from_dir(&self, dir: &Path, name: &str) -> Result<u64> {
        let runs: Vec<std::path::PathBuf> = if dir.join(crate::results::files::JOURNAL).is_file() {
            vec![dir.to_owned()]
        } else {
            let entries = std::fs::read_dir(dir).map_err(|e| Error::io("read the history directory", dir, e))?;
            let mut runs: Vec<_> = entries
                // Not through `latest`, a link to one of them.
                .filter_map(|e| e.ok().filter(|e| e.file_type().is_ok_and(|t| t.is_dir())).map(|e| e.path()))
                .filter(|p| p.join(crate::results::files::JOURNAL).is_file())
                .collect();
            runs.sort();
            runs
        };
        if runs.is_empty() {
            return Err(Error::NotARun { path: dir.to_owned(), missing: "journal (for --history)" });
        }
        let mut learnt = 0;
        for run in runs {
            let was = operation_name(&run)?;
            if was != name {
                return Err(Error::InvalidOption(format!(
                    "--history {}: it is a run of the operation `{was}`, not of `{name}`",
                    run.display()
                )));
            }
            let mut state = self.state();
            crate::journal::read_journal_with(&run.join(crate::results::files::JOURNAL), |record| {
                if record.status == Status::Finished {
                    state.model.learn(&Features::of(&record.params), record.duration_s);
                    learnt += 1;
                }
            })?;
        }
        Ok(learnt)
    }

    /// The record of the job `id` came back with `status` after `duration_s` seconds: a
    /// finished one is learnt (a failure says nothing of how long the process takes).
    pub fn recorded(&self, id: u64, status: Status, duration_s: f64) {
        let mut state = self.state();
        if let Some(job) = state.in_flight.remove(&id) {
            if status == Status::Finished {
                state.model.learn(&job.features, duration_s);
            }
        }
    }

    /// Seconds until every one of `left` processes (those without a record, in flight or
    /// not) has ended, from the predictions: the work left (what the processes in flight
    /// still have to run, the window's predictions, the mean for those not yet pulled) over
    /// the processes running at once, and at least what the longest in flight still needs.
    /// `None` until the model has learnt [`MIN_TRUST`] durations.
    pub fn eta_s(&self, left: u64) -> Option<f64> {
        let state = self.state();
        let model = &state.model;
        let mean = model.mean_s().filter(|_| model.seen() >= MIN_TRUST)?;
        // Kept predictions are medians: today's correction for the model's error turns them
        // into expected durations (early ones, made with a large error, would run long).
        let correction = model.correction();
        let mut work = 0.0;
        let mut longest: f64 = 0.0;
        for job in state.in_flight.values() {
            let predicted = job.predicted_s.map_or(mean, |median| median * correction);
            let rest = (predicted - job.since.elapsed().as_secs_f64()).max(0.0);
            work += rest;
            longest = longest.max(rest);
        }
        let pulled = state.in_flight.len() as u64 + state.window_len as u64;
        work += state.window_s.max(0.0) * correction + left.saturating_sub(pulled) as f64 * mean;
        let eta = (work / state.slots.max(1) as f64).max(longest);
        eta.is_finite().then_some(eta)
    }

    /// Whether the job `id`, handed out and not yet recorded, was measured shorter than
    /// `limit_s` ([`DurationModel::measured_shorter_than`]): only such a job may wait in a
    /// worker's queue or share a unit with others. A job the window did not hand out is of
    /// unknown duration.
    pub fn measured_shorter_than(&self, id: u64, limit_s: f64) -> bool {
        self.leading_measured_shorter_than(&[id], limit_s) == 1
    }

    /// How many of the jobs `ids` (handed out, not yet recorded), from the first, were
    /// measured shorter than `limit_s` ([`measured_shorter_than`](Self::measured_shorter_than)
    /// of each, under one lock).
    pub fn leading_measured_shorter_than(&self, ids: &[u64], limit_s: f64) -> usize {
        let state = self.state();
        ids.iter()
            .take_while(|id| {
                state.in_flight.get(id).is_some_and(|job| state.model.measured_shorter_than(&job.features, limit_s))
            })
            .count()
    }

    /// The job in flight that ran furthest past its expected duration, of those `eligible`
    /// says may run a copy, once it ran [`STRAGGLER_FACTOR`] times that and at least
    /// [`STRAGGLER_MIN_S`]; `None` until the model has learnt [`MIN_TRUST`] durations. A
    /// job's time counts from when the window handed it out.
    pub fn straggler(&self, eligible: impl Fn(u64) -> bool) -> Option<Straggler> {
        let state = self.state();
        let model = &state.model;
        if model.seen() < MIN_TRUST {
            return None;
        }
        let correction = model.correction();
        state
            .in_flight
            .iter()
            .filter(|(id, _)| eligible(**id))
            .filter_map(|(&id, job)| {
                let expected_s =
                    job.predicted_s.map(|median| median * correction).or_else(|| model.predict(&job.features))?;
                let ran_s = job.since.elapsed().as_secs_f64();
                let late = ran_s >= STRAGGLER_MIN_S && ran_s >= STRAGGLER_FACTOR * expected_s;
                late.then_some(Straggler { id, ran_s, expected_s })
            })
            .max_by(|a, b| (a.ran_s / a.expected_s).total_cmp(&(b.ran_s / b.expected_s)))
    }

    /// The expected duration in seconds of the job `id`, handed out and not yet recorded,
    /// while the model is trusted (see [`DurationModel::trusted`]); `None` otherwise.
    pub(crate) fn trusted_prediction_s(&self, id: u64) -> Option<f64> {
        let state = self.state();
        let job = state.in_flight.get(&id).filter(|_| state.model.trusted())?;
        state.model.predict(&job.features)
    }

    /// Forgets the job `id`, handed out but never to run (the deadline held it back): it is
    /// no longer counted as in flight.
    pub(crate) fn held_back(&self, id: u64) {
        self.state().in_flight.remove(&id);
    }

    /// How many jobs are handed out and not yet recorded.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight.len()
    }
}

/// The name of the operation of the run in `dir`, from its `operation.toml`.
fn operation_name(dir: &Path) -> Result<String> {
    let path = dir.join(crate::results::files::OPERATION);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    let table: toml::Table = toml::from_str(&text)
        .map_err(|_| Error::NotARun { path: dir.to_owned(), missing: "readable operation.toml" })?;
    Ok(table.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Job, JobSource, Value};

    /// A table of these pairs.
    pub(super) fn params(pairs: &[(&str, Value)]) -> Params {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
    }

    pub(super) fn jobs(durations: Vec<f64>) -> JobSource<f64> {
        Box::new(durations.into_iter().enumerate().map(|(id, d)| Job {
            id: id as u64,
            run: 0,
            params: params(&[("d", Value::Float(d))]),
            process: d,
        }))
    }

    #[test]
    fn recorded_jobs_leave_the_in_flight_set_and_the_eta_counts_what_is_left() {
        let learner = Learner::default();
        learner.set_slots(2);
        assert_eq!(learner.eta_s(10), None, "nothing learnt");
        for _ in 0..MIN_TRUST {
            learner.learn(&params(&[("d", Value::Float(1.0))]), 1.0);
        }
        let mut window = Lookahead::new(jobs(vec![1.0; 10]), 4, learner.clone());
        let job = window.next().unwrap();
        assert_eq!(learner.in_flight(), 1);
        // 10 left of 1 s each on 2 slots: about 5 s.
        let eta = learner.eta_s(10).unwrap();
        assert!((4.0..=5.5).contains(&eta), "{eta}");
        learner.recorded(job.id, Status::Crashed, 0.0);
        assert_eq!(learner.in_flight(), 0);
        assert_eq!(learner.model().seen(), MIN_TRUST, "a crash is not learnt");
    }

    #[test]
    fn a_straggler_is_a_job_far_past_its_prediction() {
        let learner = Learner::default();
        let mut window = Lookahead::new(jobs(vec![0.01; 4]), 4, learner.clone());
        let (a, b) = (window.next().unwrap(), window.next().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert_eq!(learner.straggler(|_| true), None, "nothing learnt yet");
        for _ in 0..MIN_TRUST {
            learner.learn(&params(&[("d", Value::Float(0.01))]), 0.01);
        }
        // 30 ms is 3× the 10 ms expected, but below the minimum worth a copy.
        assert_eq!(learner.straggler(|_| true), None);
        // Past the minimum: the one that is furthest past its prediction, of those eligible.
        let mut state = learner.state();
        for (id, back) in [(a.id, 2.0), (b.id, 5.0)] {
            if let Some(job) = state.in_flight.get_mut(&id) {
                job.since = Instant::now() - std::time::Duration::from_secs_f64(back);
            }
        }
        drop(state);
        assert_eq!(learner.straggler(|_| true).map(|s| s.id), Some(b.id));
        assert_eq!(learner.straggler(|id| id != b.id).map(|s| s.id), Some(a.id));
        let straggler = learner.straggler(|_| true).unwrap();
        assert!(straggler.ran_s >= 5.0 && straggler.expected_s < 0.1, "{straggler:?}");
        learner.recorded(b.id, Status::Finished, 5.0);
        assert_eq!(learner.straggler(|_| true).map(|s| s.id), Some(a.id), "a recorded job is no straggler");
    }

    #[test]
    fn a_job_handed_out_has_a_prediction_only_while_the_model_is_trusted() {
        let learner = Learner::default();
        let durations: Vec<f64> = (0..100).map(|i| f64::from(i % 10 + 1)).collect();
        let mut window = Lookahead::new(jobs(durations.clone()), 1, learner.clone());
        let untrusted = window.next().unwrap();
        assert_eq!(learner.trusted_prediction_s(untrusted.id), None, "nothing learnt");
        for d in &durations {
            learner.learn(&params(&[("d", Value::Float(*d))]), *d);
        }
        assert!(learner.model().trusted());
        let job = window.next().unwrap();
        let predicted = learner.trusted_prediction_s(job.id).expect("a prediction");
        assert!((predicted / job.process - 1.0).abs() < 0.5, "{predicted} s for a process of {} s", job.process);
        assert_eq!(learner.trusted_prediction_s(1_000), None, "a job not handed out");
        // A job the deadline held back is no longer in flight (nor in the ETA).
        let in_flight = learner.in_flight();
        learner.held_back(job.id);
        assert_eq!(learner.in_flight(), in_flight - 1);
        assert_eq!(learner.trusted_prediction_s(job.id), None);
    }

    #[test]
    fn seeding_refuses_another_operations_runs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("operation.toml"), "name = \"other\"\n").unwrap();
        crate::journal::JournalWriter::create(&dir.path().join("journal")).unwrap();
        let err = Learner::default().seed_from_dir(dir.path(), "mine").unwrap_err().to_string();
        assert!(err.contains("`other`") && err.contains("`mine`"), "{err}");
        assert_eq!(Learner::default().seed_from_dir(dir.path(), "other").unwrap(), 0);
        let empty = tempfile::tempdir().unwrap();
        assert!(Learner::default().seed_from_dir(empty.path(), "mine").is_err());
    }

    /// Sleeps `ms` milliseconds.
    #[derive(Debug, serde::Serialize, serde::Deserialize)]
    struct Nap {
        ms: u64,
    }

    impl crate::Process for Nap {
        type Output = u64;
        fn run(&self, _: &crate::ProcessContext<'_>) -> std::result::Result<u64, crate::ProcessError> {
            std::thread::sleep(std::time::Duration::from_millis(self.ms));
            Ok(self.ms)
        }
    }

    fn naps(base: &Path) -> crate::Operation<Nap> {
        crate::Operation::from_processes("naps", [1, 12, 2, 10, 1, 14, 3, 9].map(|ms| Nap { ms }))
            .unwrap()
            .with_results_base(base)
    }

    #[test]
    fn a_resumed_run_and_a_run_with_history_predict_from_earlier_journals() {
        use crate::Backend;
        let base = tempfile::tempdir().unwrap();
        let summary = crate::SerialBackend::default().run(naps(base.path())).unwrap();
        assert_eq!(summary.finished, 8);
        let nap = |ms: u64| Features::of(&params(&[("ms", Value::Int(ms as i64))]));
        let check = |lifecycle: &crate::Lifecycle<Nap>| {
            let model = lifecycle.learner().model();
            assert_eq!(model.seen(), 8);
            assert!(model.predict(&nap(14)).unwrap() > model.predict(&nap(1)).unwrap(), "{model:?}");
        };
        // Resumed: its own journal (nothing is left to run).
        let mut lifecycle = crate::Lifecycle::new(crate::BackendKind::Serial);
        lifecycle.stage_in(naps(base.path()).resume_from(&summary.dir, false)).unwrap();
        check(&lifecycle);
        lifecycle.cleanup().unwrap();
        // `latest` points at the complete run: learnt once, not twice through the link.
        assert_eq!(Learner::default().seed_from_dir(&base.path().join("naps"), "naps").unwrap(), 8);
        // A new run with --history: the run's directory, or the operation's directory of runs.
        for history in [summary.dir.clone(), base.path().join("naps")] {
            let mut lifecycle = crate::Lifecycle::new(crate::BackendKind::Serial);
            lifecycle.stage_in(naps(base.path()).with_history([history])).unwrap();
            check(&lifecycle);
            lifecycle.cleanup().unwrap();
        }
    }
}
