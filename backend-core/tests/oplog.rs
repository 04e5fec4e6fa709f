//! `operation.log` receives tracing records with host, worker and process id, and records
//! forwarded from elsewhere (MPI worker ranks).

use backend_core::oplog::{self, OperationLogLayer};
use tracing_subscriber::layer::SubscriberExt;

#[test]
fn records_land_in_operation_log_with_their_process() {
    let dir = tempfile::tempdir().unwrap();
    let subscriber = tracing_subscriber::registry().with(OperationLogLayer::default());
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!("before the run: dropped");
        oplog::open(dir.path()).unwrap();
        tracing::info!(processes = 3, "the master starts");
        oplog::set_current(Some(("thread-1", 42)));
        tracing::warn!("a process complains");
        tracing::debug!("below the level: dropped");
        oplog::set_current(None);
        oplog::forward();
        tracing::info!("a worker rank's record");
        let forwarded = oplog::take_forwarded();
        assert_eq!(forwarded.len(), 1);
        oplog::open(dir.path()).unwrap();
        oplog::append_forwarded(&forwarded);
        oplog::close();
        tracing::info!("after the run: dropped");
    });
    let log = std::fs::read_to_string(dir.path().join("operation.log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines[0].contains("INFO")
            && lines[0].contains("process=-")
            && lines[0].contains("the master starts processes=3"),
        "{log}"
    );
    assert!(
        lines[1].contains("WARN")
            && lines[1].contains("thread-1 process=42")
            && lines[1].contains("a process complains"),
        "{log}"
    );
    assert!(lines[2].contains("a worker rank's record"), "{log}");
    assert!(lines.iter().all(|l| l.contains(backend_core::this_host())));
}
