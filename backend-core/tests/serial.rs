//! The serial backend against itself through the conformance suite, and its lifecycle.

use std::time::Duration;

use backend_core::testing::{check_conformance, conformance_operation, Probe};
use backend_core::{Backend, Error, SerialBackend};

#[test]
fn serial_passes_the_conformance_suite() {
    check_conformance(SerialBackend::<Probe>::new());
}

#[test]
fn lifecycle_calls_in_order() {
    let base = tempfile::tempdir().unwrap();
    let mut backend = SerialBackend::new();
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
