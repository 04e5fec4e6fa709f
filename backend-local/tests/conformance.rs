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
    let reference = SerialBackend::default().run(sized_operation(base.path(), 500)).unwrap();
    let candidate = LocalBackend::new(Some(4)).unwrap().run(sized_operation(base.path(), 500)).unwrap();
    backend_core::testing::assert_same_summary(&reference, &candidate);
    backend_core::testing::assert_same_results(&reference.dir, &candidate.dir);
}

/// A made-up earlier run of the conformance operation in which a process took `x + 1`
/// seconds: a model seeded from it is trusted and hands out the largest `x` first.
fn history_where_larger_x_runs_longer(base: &std::path::Path, n: i64) -> std::path::PathBuf {
    use backend_core::{journal::JournalWriter, Location, Params, ProcessRecord, Status, Value};
    let dir = base.join("history");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("operation.toml"), "name = \"conformance\"\n").unwrap();
    let mut journal = JournalWriter::create(&dir.join("journal")).unwrap();
    for x in 0..n {
        for scale in [0.5, 2.0] {
            let params: Params = [("x".to_owned(), Value::Int(x)), ("scale".to_owned(), Value::Float(scale))].into();
            journal
                .append(&ProcessRecord {
                    id: x as u64,
                    run: 0,
                    params,
                    status: Status::Finished,
                    output: Value::Null,
                    reason: None,
                    stderr_tail: None,
                    attempts: 1,
                    started_at: 0.0,
                    duration_s: x as f64 + 1.0,
                    location: Location::here("history"),
                })
                .unwrap();
        }
    }
    journal.sync().unwrap();
    dir
}

#[test]
fn handing_out_the_longest_predicted_first_records_every_process_once() {
    let base = tempfile::tempdir().unwrap();
    let history = history_where_larger_x_runs_longer(base.path(), 100);
    let reference = SerialBackend::default().run(sized_operation(base.path(), 100)).unwrap();
    let operation = sized_operation(base.path(), 100).with_history([history]).with_lookahead(64);
    let candidate = LocalBackend::new(Some(2)).unwrap().run(operation).unwrap();
    backend_core::testing::assert_same_summary(&reference, &candidate);
    backend_core::testing::assert_same_results(&reference.dir, &candidate.dir);
    // The processes did run in another order: the first recorded is among the largest x of
    // the first window (64 jobs, 4 per x: x up to 16), not x = 0.
    let journal = backend_core::journal::read_journal(&candidate.dir.join("journal")).unwrap();
    let first_x = journal.records.first().and_then(|r| r.params["x"].as_i64()).unwrap();
    assert!(first_x >= 15, "the first recorded process has x = {first_x}");
}
