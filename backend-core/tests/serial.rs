//! The serial backend against itself through the conformance suite, and its lifecycle.

use std::time::Duration;

use backend_core::testing::{check_conformance, conformance_operation, Probe};
use backend_core::{Backend, Error, SerialBackend};

#[test]
fn serial_passes_the_conformance_suite() {
    check_conformance(SerialBackend::<Probe>::default());
}

#[test]
fn lifecycle_calls_in_order() {
    let base = tempfile::tempdir().unwrap();
    let mut backend = SerialBackend::default();
    assert!(matches!(backend.execute(), Err(Error::OutOfOrder { .. })));
    backend.stage_in(conformance_operation(base.path())).unwrap();
    assert_eq!(backend.check_status().total, Some(46));
    backend.execute().unwrap();
    while !backend.retrieve(Some(Duration::from_millis(10))).unwrap() {}
    let summary = backend.consolidate().unwrap();
    assert_eq!(summary.finished + summary.crashed, 46);
    assert!(summary.crashed > 0 && summary.finished > 0);
    assert!(summary.results_csv().is_file());
    backend.cleanup().unwrap();
}

/// A process whose output would not fit in the journal.
#[derive(serde::Serialize, serde::Deserialize)]
struct Output(usize);

impl backend_core::Process for Output {
    type Output = String;
    fn run(&self, _: &backend_core::ProcessContext<'_>) -> Result<String, backend_core::ProcessError> {
        Ok("x".repeat(self.0))
    }
}

#[test]
fn an_output_too_large_for_the_journal_is_a_crash_that_says_so_and_the_run_goes_on() {
    let base = tempfile::tempdir().unwrap();
    let sizes = [10, 65 * 1024 * 1024, 20];
    let operation =
        backend_core::Operation::from_processes("big", sizes.map(Output)).unwrap().with_results_base(base.path());
    let summary = SerialBackend::default().run(operation).unwrap();
    assert_eq!((summary.finished, summary.crashed), (2, 1));
    let journal =
        backend_core::journal::read_journal(&summary.dir.join(backend_core::results::files::JOURNAL)).unwrap();
    assert!(journal.damage.is_none(), "the journal stays whole after the large record");
    let big = journal.records.iter().find(|r| r.id == 1).expect("a record for the large output");
    assert_eq!(big.status, backend_core::Status::Crashed);
    let reason = big.reason.as_deref().unwrap_or_default();
    assert!(reason.contains("its record is 65 MiB, more than the journal takes (64 MiB)"), "{reason}");
    assert!(journal.records.iter().any(|r| r.id == 2 && r.output == backend_core::Value::from("x".repeat(20))));
}
