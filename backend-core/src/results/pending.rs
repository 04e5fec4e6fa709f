//! A consolidated file written beside its place and renamed into place, or removed when its
//! writing failed.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// A consolidated file being written beside its place (`.<name>.tmp`), renamed into place
/// by `commit`. One dropped without its commit (a write failed, e.g. the disk is full) is
/// removed, so a failed consolidation leaves no temporary file behind.
pub(super) struct PendingFile {
    pub(super) tmp: PathBuf,
    path: PathBuf,
    pub(super) out: BufWriter<Box<dyn Write + Send>>,
    committed: bool,
}

impl PendingFile {
    pub(super) fn create(dir: &Path, name: &str) -> Result<Self> {
        let tmp = dir.join(format!(".{name}.tmp"));
        let file = fs::File::create(&tmp).map_err(|e| Error::io("create", &tmp, e))?;
        Ok(PendingFile::writing_to(Box::new(file), tmp, dir.join(name)))
    }

    pub(super) fn writing_to(out: Box<dyn Write + Send>, tmp: PathBuf, path: PathBuf) -> Self {
        PendingFile { out: BufWriter::with_capacity(256 * 1024, out), tmp, path, committed: false }
    }

    pub(super) fn json_line(&mut self, value: &impl serde::Serialize) -> Result<()> {
        serde_json::to_writer(&mut self.out, value)
            .map_err(|e| Error::io("write", &self.tmp, std::io::Error::other(e.to_string())))?;
        self.out.write_all(b"\n").map_err(|e| Error::io("write", &self.tmp, e))
    }

    pub(super) fn commit(mut self) -> Result<()> {
        self.out.flush().map_err(|e| Error::io("write", &self.tmp, e))?;
        fs::rename(&self.tmp, &self.path).map_err(|e| Error::io("move into place", &self.path, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for PendingFile {
    fn drop(&mut self) {
        if !self.committed {
            // What is still buffered would fail to write as the rest did; it is not wanted.
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::files;
    use super::*;

    /// A file system that is full: every write fails with ENOSPC.
    struct Full;

    impl Write for Full {
        fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
            Err(std::io::Error::from_raw_os_error(28))
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_staged_file_that_fails_to_write_is_removed_and_nothing_is_moved_into_place() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let tmp = dir.path().join(".results.csv.tmp");
        fs::write(&tmp, "partial").expect("the staged file exists");
        let mut staged = PendingFile::writing_to(Box::new(Full), tmp.clone(), dir.path().join(files::RESULTS_CSV));
        let line = "x".repeat(300 * 1024);
        let error = staged.json_line(&line).expect_err("the disk is full");
        assert!(error.to_string().contains("No space left on device"), "{error}");
        drop(staged);
        assert!(!tmp.exists(), "the staged file is removed");
        assert!(!dir.path().join(files::RESULTS_CSV).exists(), "nothing was moved into place");
    }
}
