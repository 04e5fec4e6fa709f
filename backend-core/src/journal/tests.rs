//! Tests of the journal: round trips, every truncation, every flipped byte, random damage,
//! the writer's thread, frames made elsewhere.

use std::path::Path;
use std::time::{Duration, Instant};

use super::frame::write_record_json;
use super::*;
use crate::{Error, Location, Params, ProcessRecord, Status, Value};

fn record(id: u64) -> ProcessRecord {
    ProcessRecord {
        id,
        run: 0,
        params: Params::from_iter([("x".to_owned(), Value::Int(id as i64))]),
        status: Status::Finished,
        output: Value::Float(id as f64 / 2.0),
        reason: None,
        stderr_tail: None,
        attempts: 1,
        started_at: 1.0,
        duration_s: 0.5,
        location: Location::here("test"),
    }
}

fn write_journal(path: &Path, n: u64) {
    let mut w = JournalWriter::create(path).unwrap();
    for id in 0..n {
        w.append(&record(id)).unwrap();
    }
    w.sync().unwrap();
}

#[test]
fn round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    write_journal(&path, 5);
    let contents = read_journal(&path).unwrap();
    assert_eq!(contents.records, (0..5).map(record).collect::<Vec<_>>());
    assert!(contents.damage.is_none());
}

#[test]
fn every_truncation_is_detected_and_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    write_journal(&path, 3);
    let full = std::fs::read(&path).unwrap();
    // Offsets where records end (and the next begins).
    let mut boundaries = vec![JOURNAL_HEADER.len()];
    while *boundaries.last().unwrap() < full.len() {
        let at = *boundaries.last().unwrap();
        let len = u32::from_le_bytes(full[at..at + 4].try_into().unwrap()) as usize;
        boundaries.push(at + 8 + len);
    }
    let cut_path = dir.path().join("cut");
    for cut in 0..=full.len() {
        std::fs::write(&cut_path, &full[..cut]).unwrap();
        let contents = read_journal(&cut_path).unwrap();
        let complete = boundaries.iter().filter(|&&b| b <= cut).count().saturating_sub(1);
        assert_eq!(contents.records, (0..complete as u64).map(record).collect::<Vec<_>>(), "cut at {cut}");
        assert_eq!(contents.damage.torn_tail.is_some(), !boundaries.contains(&cut), "cut at {cut}");
        assert!(contents.damage.skipped.is_empty(), "cut at {cut}");
        if cut < JOURNAL_HEADER.len() {
            assert_eq!(contents.damage.torn_tail.as_ref().map(|t| t.offset), Some(0));
        }
    }
}

/// The byte ranges of a journal's records, header included, in order.
fn frame_ranges(bytes: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut at = JOURNAL_HEADER.len();
    while at < bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        ranges.push(at..at + 8 + len);
        at += 8 + len;
    }
    ranges
}

#[test]
fn a_flipped_byte_costs_only_its_own_record() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    write_journal(&path, 4);
    let full = std::fs::read(&path).unwrap();
    let ranges = frame_ranges(&full);
    for i in JOURNAL_HEADER.len()..full.len() {
        for flip in [0x01, 0x5a, 0xff] {
            let mut bytes = full.clone();
            bytes[i] ^= flip;
            std::fs::write(&path, &bytes).unwrap();
            let contents = read_journal(&path).unwrap();
            let hit = ranges.iter().position(|r| r.contains(&i)).unwrap() as u64;
            let intact: Vec<ProcessRecord> = (0..4).filter(|&id| id != hit).map(record).collect();
            assert_eq!(contents.records, intact, "flip {flip:#x} at {i}");
            assert!(!contents.damage.is_none(), "flip at {i} went unreported");
            if hit == 3 {
                assert_eq!(contents.damage.torn_tail.as_ref().map(|t| t.offset), Some(ranges[3].start as u64));
            } else {
                let skipped = &contents.damage.skipped;
                assert_eq!(skipped.len(), 1, "flip at {i}: {skipped:?}");
                assert_eq!(skipped[0].offset, ranges[hit as usize].start as u64, "flip at {i}");
                assert_eq!(skipped[0].len, ranges[hit as usize].len() as u64, "flip at {i}");
                assert_eq!(contents.damage.torn_tail, None);
            }
        }
    }
}

#[test]
fn random_damage_in_a_large_journal_costs_only_the_records_it_touches() {
    use proptest::strategy::{Strategy, ValueTree};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    write_journal(&path, 2000);
    let full = std::fs::read(&path).unwrap();
    let ranges = frame_ranges(&full);
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let damage = proptest::collection::vec((JOURNAL_HEADER.len()..full.len(), 1usize..40, 1u8..=255), 1..12);
    for _ in 0..40 {
        let hits = damage.new_tree(&mut runner).unwrap().current();
        let mut bytes = full.clone();
        let mut touched = std::collections::BTreeSet::new();
        for &(at, len, xor) in &hits {
            for b in at..(at + len).min(bytes.len()) {
                bytes[b] ^= xor;
                touched.insert(ranges.iter().position(|r| r.contains(&b)).unwrap() as u64);
            }
        }
        std::fs::write(&path, &bytes).unwrap();
        let contents = read_journal(&path).unwrap();
        let intact: Vec<ProcessRecord> = (0..2000).filter(|id| !touched.contains(id)).map(record).collect();
        assert_eq!(contents.records, intact, "damage {hits:?}");
    }
}

#[test]
fn records_reach_the_file_and_the_disk_without_a_later_append_or_a_flush() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    let mut w = JournalWriter::create(&path).unwrap();
    w.append(&record(0)).unwrap();
    // The writer is neither flushed nor dropped: its thread writes the record out.
    let start = Instant::now();
    while read_journal(&path).unwrap().records.is_empty() {
        assert!(start.elapsed() < Duration::from_secs(30), "the record never reached the file");
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(read_journal(&path).unwrap().records, vec![record(0)]);
    // And it reaches the disk on its own, without a sync or a later append.
    while w.background_syncs() == 0 {
        assert!(start.elapsed() < Duration::from_secs(30), "the record was never synced");
        std::thread::sleep(Duration::from_millis(5));
    }
    drop(w);
}

#[test]
fn frames_made_elsewhere_are_appended_as_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let (by_record, by_frame) = (dir.path().join("a"), dir.path().join("b"));
    write_journal(&by_record, 4);
    let mut w = JournalWriter::create(&by_frame).unwrap();
    for id in 0..4 {
        let mut frame = Vec::new();
        encode_frame(&record(id), &mut frame).unwrap();
        assert_eq!(decode_frame(&frame).unwrap(), record(id));
        w.append_frame(&frame).unwrap();
    }
    w.sync().unwrap();
    assert_eq!(std::fs::read(&by_record).unwrap(), std::fs::read(&by_frame).unwrap());
}

#[test]
fn a_damaged_frame_does_not_decode() {
    let mut frame = Vec::new();
    encode_frame(&record(9), &mut frame).unwrap();
    for cut in 0..frame.len() {
        assert!(decode_frame(&frame[..cut]).is_err(), "cut at {cut}");
    }
    for at in 0..frame.len() {
        let mut bytes = frame.clone();
        bytes[at] ^= 0x5a;
        assert!(decode_frame(&bytes).is_err(), "flip at {at}");
    }
}

#[test]
fn a_file_that_is_not_a_journal_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal");
    std::fs::write(&path, b"hello").unwrap();
    assert!(matches!(read_journal(&path), Err(Error::NotAJournal { .. })));
}

fn text() -> impl proptest::strategy::Strategy<Value = String> {
    // Plain text, and the characters JSON escapes.
    proptest::string::string_regex("[a-z0-9 é\"\\\\\n\t\u{1}\u{7f}]{0,12}").expect("a valid regex")
}

fn any_record() -> impl proptest::strategy::Strategy<Value = ProcessRecord> {
    use proptest::prelude::*;
    let value = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        any::<f64>().prop_map(Value::Float),
        text().prop_map(Value::Str),
        proptest::collection::vec(any::<i64>().prop_map(Value::Int), 0..3).prop_map(Value::List),
    ];
    let params = proptest::collection::vec((text(), value.clone()), 0..4).prop_map(|kv| kv.into_iter().collect());
    let status = prop_oneof![Just(Status::Finished), Just(Status::Crashed), Just(Status::TimedOut)];
    (
        (any::<u64>(), any::<u32>(), params, status, value),
        (proptest::option::of(text()), proptest::option::of(text()), any::<u32>()),
        (any::<f64>(), any::<f64>(), text(), text()),
    )
        .prop_map(
            |(
                (id, run, params, status, output),
                (reason, stderr_tail, attempts),
                (started_at, duration_s, host, worker),
            )| {
                ProcessRecord {
                    id,
                    run,
                    params,
                    status,
                    output,
                    reason,
                    stderr_tail,
                    attempts,
                    started_at,
                    duration_s,
                    location: Location { host, worker },
                }
            },
        )
}

proptest::proptest! {
    #[test]
    fn records_are_written_as_serde_writes_them(record in any_record()) {
        let mut ours = Vec::new();
        write_record_json(&record, &mut ours).unwrap();
        proptest::prop_assert_eq!(String::from_utf8(ours).unwrap(), serde_json::to_string(&record).unwrap());
    }

    #[test]
    fn arbitrary_bytes_never_panic(tail in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut bytes = JOURNAL_HEADER.to_vec();
        bytes.extend_from_slice(&tail);
        std::fs::write(&path, &bytes).unwrap();
        let _ = read_journal(&path).unwrap();
    }
}
