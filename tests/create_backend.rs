//! `create_backend` picks backends by name, and says clearly when one is missing.

use backend_core::testing::{check_conformance, Probe};
use taskfarm::{create_backend, BackendOptions, Error};

#[test]
fn serial_by_name_passes_the_conformance_suite() {
    check_conformance(create_backend::<Probe>("serial", &BackendOptions::default()).unwrap());
}

#[cfg(feature = "local")]
#[test]
fn local_by_name_passes_the_conformance_suite() {
    check_conformance(create_backend::<Probe>("local", &BackendOptions::default().pool_size(3)).unwrap());
}

#[test]
fn an_unknown_backend_lists_the_known_ones() {
    let err = create_backend::<Probe>("cloud", &BackendOptions::default()).err().unwrap();
    assert!(matches!(err, Error::UnknownBackend { .. }));
    assert_eq!(err.to_string(), "there is no backend called `cloud`: choose one of serial, local, mpi");
}

#[cfg(not(feature = "mpi"))]
#[test]
fn mpi_in_a_build_without_it_names_the_feature() {
    let err = create_backend::<Probe>("mpi", &BackendOptions::default()).err().unwrap();
    assert!(err.to_string().contains("enable the `mpi` feature"), "{err}");
    assert!(!taskfarm::has_backend("mpi"));
}

#[cfg(feature = "local")]
#[test]
fn a_pool_of_zero_is_refused() {
    let err = create_backend::<Probe>("local", &BackendOptions::default().pool_size(0)).err().unwrap();
    assert_eq!(err.to_string(), "the pool size must be at least 1");
}
