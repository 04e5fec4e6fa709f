//! Reading the latest record of each id of a journal in id order: streamed with a bounded
//! buffer when the journal is nearly in id order, else by an index of offsets.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::files;
use crate::journal::{read_journal_indexed, read_record_at, Damage};
use crate::{Error, ProcessRecord, Result};

/// How many records consolidation holds back while it streams a journal in id order: a
/// journal whose records are never further than this from their place in id order (what
/// every backend writes, since jobs are handed out in id order) is consolidated with memory
/// that does not grow with the number of processes.
pub(super) const REORDER_WINDOW: usize = 1 << 16;

/// How many records consolidation holds decoded while it streams a journal; records held
/// beyond these wait as offsets and are read again when their turn comes.
pub(super) const HELD_RECORDS: usize = 4096;

/// A record waiting for its turn while consolidation streams a journal.
enum Held {
    /// Decoded.
    Record(Box<ProcessRecord>),
    /// Where it is in the journal.
    Offset(u64),
}

/// How consolidation visits the latest record of each id in id order.
pub(super) enum Order {
    /// Reading the journal front to back, holding back up to `window` offsets in a sorted
    /// buffer: a record further out of order (e.g. from a resumed run) is noticed.
    Streamed {
        /// [`REORDER_WINDOW`] (smaller in tests).
        window: usize,
        /// [`HELD_RECORDS`] (smaller in tests).
        decoded_limit: usize,
    },
    /// By an index of every id's latest offset, sorted by id (8 bytes a process): for
    /// journals that are not nearly in id order.
    Indexed(Vec<u64>),
}

/// How a visit ended.
pub(super) enum Visit {
    /// Every id's latest record was visited, in id order; what a streaming read found
    /// damaged (an indexed visit reads no damage: the index's read reported it).
    Done { damage: Damage },
    /// The journal is not nearly in id order: visit it [`Order::Indexed`] instead.
    OutOfOrder,
}

/// A result directory's journal, open for consolidation.
pub(super) struct Journal {
    path: PathBuf,
    file: fs::File,
}

impl Journal {
    pub(super) fn open(dir: &Path) -> Result<Journal> {
        let path = dir.join(files::JOURNAL);
        let file = fs::File::open(&path).map_err(|e| Error::io("open the journal", &path, e))?;
        Ok(Journal { path, file })
    }

    /// Calls `each` with the latest record of every id, in id order.
    pub(super) fn visit_latest(
        &self,
        order: &Order,
        mut each: impl FnMut(ProcessRecord) -> Result<()>,
    ) -> Result<Visit> {
        let mut payload = Vec::new();
        match order {
            Order::Indexed(latest) => {
                for &offset in latest {
                    each(read_record_at(&self.file, &self.path, offset, &mut payload)?)?;
                }
                Ok(Visit::Done { damage: Damage::default() })
            }
            &Order::Streamed { window, decoded_limit } => {
                // Records wait here until every smaller id was visited; a later record of an
                // id replaces an earlier one while both wait. The first `HELD_RECORDS` wait
                // decoded, the others as offsets to read again.
                let mut held: BTreeMap<u64, Held> = BTreeMap::new();
                let mut decoded = 0usize;
                let mut next = 0u64;
                let mut out_of_order = false;
                let mut failure = None;
                let mut visit = |held: Held, decoded: &mut usize| match held {
                    Held::Record(record) => {
                        *decoded -= 1;
                        each(*record)
                    }
                    Held::Offset(offset) => {
                        read_record_at(&self.file, &self.path, offset, &mut payload).and_then(&mut each)
                    }
                };
                let damage = read_journal_indexed(&self.path, |offset, record| {
                    if out_of_order || failure.is_some() {
                        return;
                    }
                    if record.id < next {
                        out_of_order = true;
                        return;
                    }
                    let id = record.id;
                    let entry = if decoded < decoded_limit {
                        decoded += 1;
                        Held::Record(Box::new(record))
                    } else {
                        Held::Offset(offset)
                    };
                    if let Some(Held::Record(_)) = held.insert(id, entry) {
                        decoded -= 1;
                    }
                    // Visit what may go: the next ids in order, or the smallest when too many wait.
                    loop {
                        let crowded = held.len() > window;
                        let Some(entry) = held.first_entry() else { break };
                        if *entry.key() != next && !crowded {
                            break;
                        }
                        let (id, entry) = entry.remove_entry();
                        next = id + 1;
                        if let Err(error) = visit(entry, &mut decoded) {
                            failure = Some(error);
                            return;
                        }
                    }
                })?;
                if let Some(error) = failure {
                    return Err(error);
                }
                if out_of_order {
                    return Ok(Visit::OutOfOrder);
                }
                for (_, entry) in held {
                    visit(entry, &mut decoded)?;
                }
                Ok(Visit::Done { damage })
            }
        }
    }

    /// The offset of every id's latest record, in id order (the journal read once), and
    /// what the read found damaged.
    pub(super) fn latest_offsets(&self) -> Result<(Vec<u64>, Damage)> {
        let mut index: Vec<(u64, u64)> = Vec::new();
        let damage = read_journal_indexed(&self.path, |offset, record| index.push((record.id, offset)))?;
        // A stable sort keeps the journal's order among records of one id: the last one counts.
        index.sort_by_key(|&(id, _)| id);
        let latest = index
            .iter()
            .enumerate()
            .filter(|&(i, &(id, _))| !matches!(index.get(i + 1), Some(&(next, _)) if next == id))
            .map(|(_, &(_, offset))| offset)
            .collect();
        Ok((latest, damage))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::record;
    use super::super::{consolidate_dir, read_results_jsonl};
    use super::*;
    use crate::journal::JournalWriter;
    use crate::Value;
    use proptest::prelude::*;

    /// The (id, output) of each record `order` visits, or `None` when it found the journal
    /// out of order.
    fn visited(journal: &Journal, order: &Order) -> Option<Vec<(u64, Value)>> {
        let mut seen = Vec::new();
        let visit = journal
            .visit_latest(order, |r| {
                seen.push((r.id, r.output));
                Ok(())
            })
            .expect("the journal reads");
        matches!(visit, Visit::Done { .. }).then_some(seen)
    }

    proptest! {
        /// Whatever the journal's order and duplicates, streaming with any window visits what
        /// the index visits (each id's last record, in id order), or says it cannot.
        #[test]
        fn streaming_visits_what_the_index_visits(
            ids in proptest::collection::vec(0u64..40, 0..80),
            window in 0usize..12,
            decoded_limit in 0usize..4,
        ) {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let mut writer = JournalWriter::create(&dir.path().join(files::JOURNAL)).expect("a journal");
            for (n, &id) in ids.iter().enumerate() {
                writer.append(&record(id, n as u32)).expect("appends");
            }
            writer.sync().expect("syncs");
            let journal = Journal::open(dir.path()).expect("opens");
            let (latest, damage) = journal.latest_offsets().expect("indexes");
            prop_assert!(damage.is_none());
            let indexed = visited(&journal, &Order::Indexed(latest)).expect("the index visits all");
            let mut expected: BTreeMap<u64, Value> = BTreeMap::new();
            for (n, &id) in ids.iter().enumerate() {
                expected.insert(id, Value::Int(n as i64));
            }
            prop_assert_eq!(&indexed, &expected.into_iter().collect::<Vec<_>>());
            match visited(&journal, &Order::Streamed { window, decoded_limit }) {
                Some(streamed) => prop_assert_eq!(streamed, indexed),
                // A journal in id order, each id once, always streams.
                None => prop_assert!(
                    ids.windows(2).any(|pair| pair[0] >= pair[1]),
                    "{:?} is in order", ids
                ),
            }
        }
    }

    #[test]
    fn nearly_sorted_journals_stream_and_others_fall_back_to_the_index() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join(files::JOURNAL);
        let mut writer = JournalWriter::create(&path).expect("a journal");
        // In flight four at a time, finishing in reverse: at most 3 places out of order.
        for chunk in (0..100u64).collect::<Vec<_>>().chunks(4) {
            for &id in chunk.iter().rev() {
                writer.append(&record(id, 0)).expect("appends");
            }
        }
        writer.sync().expect("syncs");
        let journal = Journal::open(dir.path()).expect("opens");
        let ids = |seen: Vec<(u64, Value)>| seen.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        let streamed = visited(&journal, &Order::Streamed { window: 3, decoded_limit: 2 }).expect("within the window");
        assert_eq!(ids(streamed), (0..100).collect::<Vec<_>>());
        assert_eq!(
            visited(&journal, &Order::Streamed { window: 2, decoded_limit: 2 }),
            None,
            "4 in flight need a window of 3"
        );

        // A resumed run re-ran process 7 after its turn: the index finds the later record.
        let mut writer = JournalWriter::append_to(&path).expect("reopens");
        writer.append(&record(7, 1)).expect("appends");
        writer.sync().expect("syncs");
        let journal = Journal::open(dir.path()).expect("opens");
        assert_eq!(
            visited(&journal, &Order::Streamed { window: 1000, decoded_limit: 2 }),
            None,
            "7 came back after its turn"
        );
        let consolidated = consolidate_dir(dir.path()).expect("consolidates");
        assert_eq!((consolidated.recorded, consolidated.finished), (100, 100));
        let rows = read_results_jsonl(dir.path()).expect("results.jsonl");
        let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().expect("an id")).collect();
        assert_eq!(ids, (0..100).collect::<Vec<_>>());
        assert_eq!(rows[7]["output"], 1, "the later record of 7 counts: {:?}", rows[7]);
    }
}
