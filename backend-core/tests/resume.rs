//! Resuming a run: only what is missing (or crashed, when asked) runs again, the journal is
//! appended to, a torn tail is cut off, and a directory of another spec is refused.

use backend_core::journal::read_journal;
use backend_core::results::files;
use backend_core::testing::{assert_same_outcomes, assert_same_results, conformance_operation, sized_operation, Probe};
use backend_core::{Backend, Error, SerialBackend};

/// Runs the conformance operation, then keeps only the first `keep` bytes of its journal.
fn interrupted_run(base: &std::path::Path, keep_fraction: f64) -> std::path::PathBuf {
    let summary = SerialBackend::<Probe>::default().run(conformance_operation(base)).unwrap();
    let journal = summary.dir.join(files::JOURNAL);
    let bytes = std::fs::read(&journal).unwrap();
    let keep = (bytes.len() as f64 * keep_fraction) as usize;
    std::fs::write(&journal, &bytes[..keep]).unwrap();
    for file in [files::RESULTS_CSV, files::RESULTS_JSONL, files::CRASHED_JSONL] {
        std::fs::remove_file(summary.dir.join(file)).unwrap();
    }
    summary.dir
}

#[test]
fn resume_finishes_a_torn_run_with_every_process_once() {
    let base = tempfile::tempdir().unwrap();
    let reference = SerialBackend::default().run(conformance_operation(base.path())).unwrap();
    for fraction in [0.0, 0.3, 0.77, 1.0] {
        let dir = interrupted_run(base.path(), fraction);
        let before = read_journal(&dir.join(files::JOURNAL)).unwrap().records.len();
        let summary =
            SerialBackend::default().run(conformance_operation(base.path()).resume_from(&dir, false)).unwrap();
        assert_eq!(summary.dir, dir, "a resumed run writes into the same directory");
        assert_eq!(summary.missing(), 0);
        assert_same_results(&reference.dir, &dir);
        let after = read_journal(&dir.join(files::JOURNAL)).unwrap().records.len();
        assert_eq!(after, 46, "appended {} records to {before}", after - before);
    }
}

#[test]
fn rerun_crashed_runs_crashed_processes_again() {
    let base = tempfile::tempdir().unwrap();
    let first = SerialBackend::<Probe>::default().run(conformance_operation(base.path())).unwrap();
    let again = SerialBackend::default().run(conformance_operation(base.path()).resume_from(&first.dir, true)).unwrap();
    assert_eq!((again.finished, again.crashed), (first.finished, first.crashed));
    let journal = read_journal(&first.dir.join(files::JOURNAL)).unwrap();
    assert_eq!(journal.records.len() as u64, 46 + first.crashed, "only the crashed ones ran again");
    let nothing =
        SerialBackend::default().run(conformance_operation(base.path()).resume_from(&first.dir, false)).unwrap();
    assert_eq!(read_journal(&first.dir.join(files::JOURNAL)).unwrap().records.len(), journal.records.len());
    assert_eq!(nothing.finished + nothing.crashed, 46);
}

#[test]
fn resume_refuses_another_spec_and_non_runs() {
    let base = tempfile::tempdir().unwrap();
    let first = SerialBackend::<Probe>::default().run(conformance_operation(base.path())).unwrap();
    let err =
        SerialBackend::default().run(sized_operation(base.path(), 13).resume_from(&first.dir, false)).unwrap_err();
    assert!(matches!(err, Error::ResumeSpecDiffers { .. }), "{err}");
    assert!(err.to_string().contains("`parameter_ranges` differs"), "{err}");
    let err =
        SerialBackend::default().run(conformance_operation(base.path()).resume_from(base.path(), false)).unwrap_err();
    assert!(matches!(err, Error::NotARun { .. }), "{err}");
    assert!(err.to_string().contains("is not a taskfarm run directory"), "{err}");
}

#[test]
fn a_corrupt_record_in_the_middle_costs_only_itself() {
    let base = tempfile::tempdir().unwrap();
    let reference = SerialBackend::default().run(conformance_operation(base.path())).unwrap();
    let first = SerialBackend::<Probe>::default().run(conformance_operation(base.path())).unwrap();
    let journal = first.dir.join(files::JOURNAL);
    let mut bytes = std::fs::read(&journal).unwrap();
    // One bit flipped a tenth of the way in: inside one record, not at the end.
    let at = bytes.len() / 10;
    bytes[at] ^= 0x04;
    std::fs::write(&journal, &bytes).unwrap();
    let damaged = read_journal(&journal).unwrap();
    assert_eq!(damaged.records.len(), 45, "one record lost, the 45 after and before it kept");
    assert_eq!(damaged.damage.skipped.len(), 1, "{:?}", damaged.damage);
    assert!(damaged.damage.torn_tail.is_none());
    let lost: Vec<u64> = (0..46).filter(|id| !damaged.records.iter().any(|r| r.id == *id)).collect();

    let again =
        SerialBackend::default().run(conformance_operation(base.path()).resume_from(&first.dir, false)).unwrap();
    assert_eq!(again.missing(), 0);
    assert_eq!(again.damage.skipped.len(), 1, "the damage is reported: {:?}", again.damage);
    let after = read_journal(&journal).unwrap();
    assert_eq!(after.records.len(), 46, "only the lost process ran again");
    assert_eq!(after.records.last().map(|r| r.id), lost.first().copied());
    assert_same_outcomes(&reference.dir, &first.dir);
}

#[test]
fn a_resumed_dispatch_counts_only_the_jobs_it_will_yield() {
    let base = tempfile::tempdir().unwrap();
    for fraction in [0.0, 0.3, 1.0] {
        let dir = interrupted_run(base.path(), fraction);
        let recorded = read_journal(&dir.join(files::JOURNAL)).unwrap().records.len() as u64;
        let mut lifecycle = backend_core::Lifecycle::<Probe>::new(backend_core::BackendKind::Serial);
        lifecycle.stage_in(conformance_operation(base.path()).resume_from(&dir, true)).unwrap();
        let mut seen = None;
        lifecycle
            .execute_here(|dispatch, _| {
                seen = Some((dispatch.len, dispatch.jobs.count() as u64));
                Ok(())
            })
            .unwrap();
        let (len, yielded) = seen.unwrap();
        assert_eq!(len, Some(yielded), "{recorded} of 46 recorded");
        lifecycle.cleanup().unwrap();
    }
}
