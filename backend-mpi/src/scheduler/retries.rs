//! Retries under MPI: the master runs each retry of a failed process on another rank than
//! the ones that ran it, while there is one, and closes the last attempt's record with the
//! reasons of every attempt, as `execute_job` does elsewhere.

use std::collections::{BTreeSet, HashMap, VecDeque};

use backend_core::{attempt_reason, close_attempts, Job, Process, ProcessRecord, Status};

use crate::message::{work_from_encoded, RecordHead};
use crate::transport::Rank;
use crate::Error;

/// The retries the master hands to other ranks: every job in flight, kept encoded until its
/// last attempt, and the failed ones waiting for a rank that has not run them yet.
pub(crate) struct Retries {
    /// Retries each process may have.
    allowed: u32,
    /// Each job in flight, by id.
    in_flight: HashMap<u64, Attempts>,
    /// Ids of failed jobs waiting to run again, oldest first.
    pub(super) waiting: VecDeque<u64>,
}

/// One job in flight under master-side retries.
struct Attempts {
    /// The job, encoded as it was first sent.
    job: Vec<u8>,
    /// The reasons of its failed attempts, oldest first.
    reasons: Vec<String>,
    /// The ranks it ran on (or runs on), oldest first.
    tried: Vec<Rank>,
}

impl Retries {
    pub(crate) fn new(allowed: u32) -> Self {
        Retries { allowed, in_flight: HashMap::new(), waiting: VecDeque::new() }
    }

    /// Encodes the jobs of a unit for `worker` one by one, keeps each until its last
    /// attempt, and returns the unit's `Work` message built from them.
    pub(super) fn send<P: Process>(&mut self, unit: &[Job<P>], worker: Rank) -> Result<Vec<u8>, Error> {
        let mut encoded = Vec::with_capacity(unit.len());
        for job in unit {
            let bytes = postcard::to_stdvec(job).map_err(|e| Error::Encode { what: "work", reason: e.to_string() })?;
            encoded.push((job.id, bytes));
        }
        let message = work_from_encoded::<P>(encoded.iter().map(|(_, bytes)| bytes.as_slice()))?;
        for (id, job) in encoded {
            self.in_flight.insert(id, Attempts { job, reasons: Vec::new(), tried: vec![worker] });
        }
        Ok(message)
    }

    /// Settles the record of an attempt that `from` ran, given as its head and journal
    /// frame: a success at the first attempt is journaled as it is; a failure waits to run
    /// again elsewhere or, at the last attempt, is closed with the reasons of every attempt.
    /// A finished process whose record was too large for the journal is not a failure: its
    /// stand-in is the last attempt (its reason as `execute_job` would leave it, with every
    /// attempt counted).
    pub(super) fn settle(&mut self, head: RecordHead, frame: &[u8], from: Rank) -> Result<Settled, Error> {
        let failed_before = self.in_flight.get(&head.id).is_some_and(|attempts| !attempts.reasons.is_empty());
        if head.status == Status::Finished && !failed_before {
            self.in_flight.remove(&head.id);
            return Ok(Settled::AsFramed);
        }
        if head.too_large {
            // Not a failure of the process (its record is a stand-in that says it was too
            // large for the journal): its last attempt, as on every other backend.
            let Some(attempts) = self.in_flight.remove(&head.id).filter(|a| !a.reasons.is_empty()) else {
                return Ok(Settled::AsFramed);
            };
            let mut record = backend_core::journal::decode_frame(frame)?;
            record.attempts = u32::try_from(attempts.reasons.len() + 1).unwrap_or(u32::MAX);
            return Ok(Settled::Closed(Box::new(record)));
        }
        let record = backend_core::journal::decode_frame(frame)?;
        Ok(self.settle_record(record, from).map_or(Settled::Again, |record| Settled::Closed(Box::new(record))))
    }

    /// Settles the decoded record of an attempt that `from` ran: the process's last attempt,
    /// closed and ready for the journal, or `None` when the process waits to run again elsewhere.
    fn settle_record(&mut self, mut record: ProcessRecord, from: Rank) -> Option<ProcessRecord> {
        let Some(mut attempts) = self.in_flight.remove(&record.id) else {
            // Not a job the master kept (cannot happen with a well-behaved worker): take it as it is.
            return Some(record);
        };
        let failed = record.status != Status::Finished;
        // After a stop it waits too (no retry is sent any more): it gets no record, so that
        // `--resume` runs it again, as on every backend.
        if failed && attempts.reasons.len() < self.allowed as usize {
            let reason = attempt_reason(&mut record);
            tracing::info!(
                target: "taskfarm",
                "process {} {} on rank-{from} (attempt {} of {}): {reason}; it runs again on another rank",
                record.id,
                record.status.as_str().replace('_', " "),
                attempts.reasons.len() + 1,
                self.allowed + 1,
            );
            attempts.reasons.push(reason);
            self.in_flight.insert(record.id, attempts);
            self.waiting.push_back(record.id);
            return None;
        }
        close_attempts(&mut record, attempts.reasons);
        Some(record)
    }

    /// Takes the oldest waiting job that `worker` may run (one it has not run yet, or, when
    /// every one of `workers` has run it, any but the last that did): its id and its `Work`
    /// message, alone in its unit.
    pub(super) fn take_for<P: Process>(
        &mut self,
        worker: Rank,
        workers: usize,
    ) -> Result<Option<(u64, Vec<u8>)>, Error> {
        let position = self
            .waiting
            .iter()
            .position(|id| self.in_flight.get(id).is_some_and(|a| may_retry_on(&a.tried, worker, workers)));
        let Some(id) = position.and_then(|i| self.waiting.remove(i)) else { return Ok(None) };
        let Some(attempts) = self.in_flight.get_mut(&id) else { return Ok(None) };
        attempts.tried.push(worker);
        Ok(Some((id, work_from_encoded::<P>([attempts.job.as_slice()])?)))
    }
}

/// What became of an attempt's record under master-side retries.
pub(super) enum Settled {
    /// Journal the worker's frame as it is.
    AsFramed,
    /// Journal this record, the process's last attempt closed with every attempt's reason.
    Closed(Box<ProcessRecord>),
    /// The process runs again on another rank.
    Again,
}

/// Whether a job that ran on the ranks `tried` may run again on `worker`: if it has not run
/// there yet, or if it ran on every one of the `workers` and `worker` was not the last.
fn may_retry_on(tried: &[Rank], worker: Rank, workers: usize) -> bool {
    if !tried.contains(&worker) {
        return true;
    }
    let distinct: BTreeSet<Rank> = tried.iter().copied().collect();
    distinct.len() >= workers && tried.last() != Some(&worker)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Message;
    use backend_core::{Location, Params, ProcessContext, ProcessError, Value};
    use serde::{Deserialize, Serialize};

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Noop(u32);

    impl Process for Noop {
        type Output = ();
        fn run(&self, _: &ProcessContext<'_>) -> Result<(), ProcessError> {
            Ok(())
        }
    }

    fn record(id: u64, status: Status, reason: Option<&str>) -> ProcessRecord {
        ProcessRecord {
            id,
            run: 0,
            params: Params::new(),
            status,
            output: if status == Status::Finished { Value::Int(1) } else { Value::Null },
            reason: reason.map(str::to_owned),
            stderr_tail: None,
            attempts: 1,
            started_at: 0.0,
            duration_s: 0.001,
            location: Location { host: "h".into(), worker: "rank-1".into() },
        }
    }

    #[test]
    fn a_retry_goes_to_a_rank_that_has_not_run_it_while_there_is_one() {
        assert!(may_retry_on(&[1], 2, 3));
        assert!(!may_retry_on(&[1], 1, 3));
        assert!(!may_retry_on(&[1, 2], 2, 3));
        assert!(may_retry_on(&[1, 2], 3, 3));
        // Every worker ran it: any but the last.
        assert!(may_retry_on(&[1, 2], 1, 2));
        assert!(!may_retry_on(&[1, 2], 2, 2));
    }

    #[test]
    fn failed_attempts_wait_for_another_rank_and_the_last_lists_every_reason() {
        let mut retries = Retries::new(2);
        let job = Job { id: 7, run: 0, params: Params::new(), process: Noop(7) };
        let first = retries.send(std::slice::from_ref(&job), 1).expect("encodes");
        assert_eq!(first, Message::Work(vec![job.clone()]).encode().expect("encodes"));
        assert!(retries.settle_record(record(7, Status::Crashed, Some("boom")), 1).is_none());
        assert!(retries.take_for::<Noop>(1, 3).expect("builds").is_none(), "not on the rank that failed");
        let again = retries.take_for::<Noop>(2, 3).expect("builds").expect("rank 2 may run it");
        assert_eq!(again, (7, first), "the same job, alone in its unit");
        assert!(retries.settle_record(record(7, Status::TimedOut, Some("timed out after 1s")), 2).is_none());
        assert!(retries.take_for::<Noop>(2, 3).expect("builds").is_none());
        assert!(retries.take_for::<Noop>(1, 3).expect("builds").is_none());
        assert!(retries.take_for::<Noop>(3, 3).expect("builds").is_some());
        let Some(last) = retries.settle_record(record(7, Status::Crashed, Some("bang")), 3) else {
            panic!("the third attempt is the last with retries = 2");
        };
        assert_eq!(last.attempts, 3);
        assert_eq!(last.reason.as_deref(), Some("attempt 1: boom; attempt 2: timed out after 1s; attempt 3: bang"));
        assert!(retries.in_flight.is_empty(), "nothing kept after the last attempt");
    }

    /// The head and frame of `record` as a worker frames it.
    fn framed(record: &ProcessRecord) -> (RecordHead, Vec<u8>) {
        let mut framed = crate::message::FramedRecords::new("h", Some(record.id), 1);
        framed.push(record).expect("frames");
        let records = framed.records(1).expect("reads");
        let (head, frame) = records.first().expect("one record");
        (*head, frame.to_vec())
    }

    #[test]
    fn a_record_too_large_for_the_journal_is_never_retried() {
        // A finished process whose output is larger than the journal takes: its stand-in
        // record is a crash, but the process did not fail, so it runs once, as elsewhere.
        let mut huge = record(5, Status::Finished, None);
        huge.output = Value::Str("x".repeat(65 * 1024 * 1024));
        let (head, frame) = framed(&huge);
        assert_eq!(head.status, Status::Crashed, "the stand-in");
        let mut retries = Retries::new(2);
        retries.send(&[Job { id: 5, run: 0, params: Params::new(), process: Noop(5) }], 1).expect("encodes");
        assert!(matches!(retries.settle(head, &frame, 1).expect("settles"), Settled::AsFramed));
        assert!(retries.waiting.is_empty() && retries.in_flight.is_empty(), "nothing runs again");
        // After a failed attempt, the stand-in closes the process with both attempts counted.
        retries.send(&[Job { id: 5, run: 0, params: Params::new(), process: Noop(5) }], 1).expect("encodes");
        assert!(retries.settle_record(record(5, Status::Crashed, Some("once")), 1).is_none());
        let _ = retries.take_for::<Noop>(2, 3).expect("builds").expect("rank 2 may run it");
        let Settled::Closed(last) = retries.settle(head, &frame, 2).expect("settles") else {
            panic!("the stand-in is the last attempt");
        };
        assert_eq!((last.status, last.attempts), (Status::Crashed, 2));
        assert!(last.reason.as_deref().is_some_and(|r| r.contains("more than the journal takes")), "{last:?}");
        assert!(retries.waiting.is_empty() && retries.in_flight.is_empty());
        // A crashed process is retried as before.
        let (head, frame) = framed(&record(6, Status::Crashed, Some("boom")));
        retries.send(&[Job { id: 6, run: 0, params: Params::new(), process: Noop(6) }], 1).expect("encodes");
        assert!(matches!(retries.settle(head, &frame, 1).expect("settles"), Settled::Again));
    }

    #[test]
    fn a_success_after_a_failure_counts_both_attempts() {
        let mut retries = Retries::new(1);
        retries.send(&[Job { id: 3, run: 0, params: Params::new(), process: Noop(3) }], 2).expect("encodes");
        assert!(retries.settle_record(record(3, Status::Crashed, Some("once")), 2).is_none());
        let _ = retries.take_for::<Noop>(1, 2).expect("builds").expect("rank 1 may run it");
        let Some(last) = retries.settle_record(record(3, Status::Finished, None), 1) else {
            panic!("a finished attempt is the last");
        };
        assert_eq!((last.attempts, last.reason.as_deref()), (2, Some("attempt 1: once")));
    }
}
