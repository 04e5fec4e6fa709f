//! Staging an operation that continues an earlier run ([`Operation::resume_from`]): the
//! ids its journal recorded, skipped (or run again when they crashed), and the check that
//! its spec is the same.

use std::path::Path;

use super::Lifecycle;
use crate::journal::{read_journal_with, JournalWriter};
use crate::lock::RunLock;
use crate::results::{files, to_toml_table};
use crate::{Error, Operation, Params, Process, Result, Resume, Status};

impl<P: Process> Lifecycle<P> {
    /// Stages the jobs that the earlier run in `resume.dir` did not finish.
    pub(super) fn stage_in_resumed(&mut self, operation: Operation<P>, resume: Resume) -> Result<()> {
        let dir = resume.dir;
        for (file, missing) in [(files::JOURNAL, "journal"), (files::OPERATION, "operation.toml")] {
            if !dir.join(file).is_file() {
                return Err(Error::NotARun { path: dir, missing });
            }
        }
        crate::results::check_format(&dir)?;
        check_same_spec(&dir, operation.spec())?;
        // Before the journal is read: a run still writing it would change it under us.
        self.lock = Some(RunLock::acquire(&dir)?);
        let journal_path = dir.join(files::JOURNAL);
        let mut done = IdSet::default();
        let (mut finished, mut crashed) = (IdSet::default(), IdSet::default());
        let learner = self.learner.clone();
        let damage = read_journal_with(&journal_path, |record| match record.status {
            Status::Finished => {
                // A resumed run predicts from what its earlier run measured.
                learner.learn(&record.params, record.duration_s);
                finished.insert(record.id);
                crashed.remove(record.id);
            }
            Status::Crashed | Status::TimedOut => {
                crashed.insert(record.id);
            }
        })?;
        if let Some(torn) = &damage.torn_tail {
            // Records appended after a torn one would be skipped as damage: cut the tail off
            // first. Corrupt records in the middle stay; readers skip them.
            crate::journal::cut_at(&journal_path, torn.offset)?;
        }
        done.clone_from(&finished);
        if !resume.rerun_crashed {
            crashed.iter().for_each(|id| done.insert(id));
        }
        let previously_crashed = if resume.rerun_crashed { 0 } else { crashed.count() };
        self.resumed_torn_tail = damage.torn_tail;
        if let Some(observer) = operation.observer() {
            // A source that decides from results learns what the earlier run recorded.
            read_journal_with(&journal_path, |record| {
                if done.contains(record.id) {
                    observer(&record);
                }
            })?;
        }
        let journal = JournalWriter::append_to(&journal_path)?;
        self.stage(operation, dir, journal, Some(done))?;
        self.board.preset(finished.count(), previously_crashed);
        Ok(())
    }
}

/// A set of process ids (dense from 0), one bit each: a million ids take 125 KiB.
#[derive(Debug, Default, Clone)]
pub(super) struct IdSet {
    words: Vec<u64>,
}

impl IdSet {
    fn insert(&mut self, id: u64) {
        let (word, bit) = ((id / 64) as usize, id % 64);
        if word >= self.words.len() {
            self.words.resize(word + 1, 0);
        }
        self.words[word] |= 1 << bit;
    }

    fn remove(&mut self, id: u64) {
        if let Some(w) = self.words.get_mut((id / 64) as usize) {
            *w &= !(1 << (id % 64));
        }
    }

    pub(super) fn contains(&self, id: u64) -> bool {
        self.words.get((id / 64) as usize).is_some_and(|w| w & (1 << (id % 64)) != 0)
    }

    fn count(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.words
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| (0..64).filter(move |b| w & (1 << b) != 0).map(move |b| i as u64 * 64 + b))
    }
}

/// Refuses to resume a run whose `operation.toml` differs from `spec` (the backend may differ).
fn check_same_spec(dir: &Path, spec: &Params) -> Result<()> {
    let path = dir.join(files::OPERATION);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io("read", &path, e))?;
    let mut was: toml::Table = toml::from_str(&text)
        .map_err(|_| Error::NotARun { path: dir.to_owned(), missing: "readable operation.toml" })?;
    let mut now = to_toml_table(spec);
    was.remove("backend");
    now.remove("backend");
    // Values compare as a run sees them: a NaN parameter is the same NaN there and now
    // (`==` on floats says NaN differs from itself), and the keys of a table in order (the
    // order of `parameter_ranges` numbers the processes).
    fn same(a: &toml::Value, b: &toml::Value) -> bool {
        use toml::Value::{Array, Float, Table};
        match (a, b) {
            (Float(x), Float(y)) => x == y || (x.is_nan() && y.is_nan()),
            (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b)),
            (Table(x), Table(y)) => x.len() == y.len() && x.iter().zip(y).all(|((j, a), (k, b))| j == k && same(a, b)),
            _ => a == b,
        }
    }
    let same_at = |k: &String| match (was.get(k), now.get(k)) {
        (Some(a), Some(b)) => same(a, b),
        (a, b) => a == b,
    };
    let keys: std::collections::BTreeSet<&String> = was.keys().chain(now.keys()).collect();
    let Some(key) = keys.into_iter().find(|k| !same_at(k)).cloned() else {
        return Ok(());
    };
    let show = |v: Option<&toml::Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "absent".into());
    Err(Error::ResumeSpecDiffers { path: dir.to_owned(), was: show(was.get(&key)), now: show(now.get(&key)), key })
}
