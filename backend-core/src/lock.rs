//! One writer per result directory: a run holds an exclusive lock on `<dir>/run.lock` from
//! `stage_in` to its end, so a second run (a `--resume` started while the first still runs)
//! is refused instead of running every process twice and interleaving two journals.
//!
//! The lock is the operating system's (`flock`): it goes with its holder, so a run killed
//! by any signal, even SIGKILL, leaves no stale lock behind. The file names its holder
//! (pid and host) for the message that refuses a second writer; it is never removed, as
//! removing a lock file races with a process that has it open and is about to lock it.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use crate::{Error, Result};

/// The lock file in a result directory.
pub const LOCK_FILE: &str = "run.lock";

/// The result directory whose lock this program holds, if any.
static HELD: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The result directory of the run this program is coordinating now (it holds its lock):
/// what a signal handler names in the command that resumes the run, and consolidates at once.
pub fn held_dir() -> Option<PathBuf> {
    HELD.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// The lock of a result directory, held while this value lives.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

impl Drop for RunLock {
    fn drop(&mut self) {
        *HELD.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }
}

impl RunLock {
    /// Takes the lock of `dir`, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<RunLock> {
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io("open the lock file", &path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(Error::RunInProgress { path: dir.to_owned(), holder: holder_of(&mut file) })
            }
            Err(TryLockError::Error(e)) => return Err(Error::io("lock", &path, e)),
        }
        let me = format!("{}\n", this_program());
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(me.as_bytes()))
            .map_err(|e| Error::io("write the lock file", &path, e))?;
        *HELD.lock().unwrap_or_else(PoisonError::into_inner) = Some(dir.to_owned());
        Ok(RunLock { _file: file })
    }

    /// Who holds the lock of `dir` now (`pid N on host H`), or `None` when no run holds it.
    pub fn holder(dir: &Path) -> Result<Option<String>> {
        let path: PathBuf = dir.join(LOCK_FILE);
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io("open the lock file", &path, e)),
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(None),
            Err(TryLockError::WouldBlock) => Ok(Some(holder_of(&mut file))),
            Err(TryLockError::Error(e)) => Err(Error::io("lock", &path, e)),
        }
    }
}

/// How a lock file names this program as its holder: `pid N on host H`.
pub(crate) fn this_program() -> String {
    format!("pid {} on host {}", std::process::id(), crate::record::this_host())
}

/// What a lock file says of its holder.
fn holder_of(file: &mut File) -> String {
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let text = text.trim();
    if text.is_empty() {
        "a process that has not said who it is yet".into()
    } else {
        text.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_none_after_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(RunLock::holder(dir.path()).unwrap(), None);
        let held = RunLock::acquire(dir.path()).unwrap();
        let holder = RunLock::holder(dir.path()).unwrap().expect("a holder");
        assert!(holder.contains(&format!("pid {}", std::process::id())), "{holder}");
        let err = RunLock::acquire(dir.path()).unwrap_err();
        assert!(matches!(err, Error::RunInProgress { .. }), "{err}");
        assert!(err.to_string().contains(&holder), "{err}");
        drop(held);
        assert_eq!(RunLock::holder(dir.path()).unwrap(), None);
        let _again = RunLock::acquire(dir.path()).unwrap();
    }
}
