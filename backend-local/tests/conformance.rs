//! The local backend agrees with the serial reference, for several pool sizes.

use backend_core::testing::{check_conformance, sized_operation, Probe};
use backend_core::{Backend, SerialBackend};
use backend_local::LocalBackend;

#[test]
fn one_thread() {
    check_conformance(LocalBackend::<Probe>::new(Some(1)).unwrap());
}

#[test]
fn two_threads() {
    check_conformance(LocalBackend::<Probe>::new(Some(2)).unwrap());
}

#[test]
fn more_threads_than_cores() {
    check_conformance(LocalBackend::<Probe>::new(Some(7)).unwrap());
}

#[test]
fn default_pool() {
    check_conformance(LocalBackend::<Probe>::new(None).unwrap());
}

#[test]
fn a_larger_operation_records_every_process_once() {
    let base = tempfile::tempdir().unwrap();
    let reference = SerialBackend::new().run(sized_operation(base.path(), 500)).unwrap();
    let candidate = LocalBackend::new(Some(4)).unwrap().run(sized_operation(base.path(), 500)).unwrap();
    backend_core::testing::assert_same_summary(&reference, &candidate);
    backend_core::testing::assert_same_results(&reference.dir, &candidate.dir);
}
