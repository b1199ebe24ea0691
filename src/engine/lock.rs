//! One run at a time: an exclusive `File::try_lock` on the state dir's lock
//! file, held for the whole command, with the holder's pid written inside.
//! Read-only commands that must not see a template mid-switch (`audit`) take
//! it shared: any number of them at once, never beside a mutating run.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another jailtx run ({holder}) holds {path}; wait for it to finish")]
    Held { path: PathBuf, holder: String },
    #[error("lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// The held lock; released when dropped (or when the process dies, so a
/// crashed run never leaves a stale lock behind).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// The exclusive lock of a mutating command.
    pub fn acquire(path: &Path) -> Result<Self, LockError> {
        Self::take(path, false)
    }

    /// The shared lock of a read-only command.
    pub fn acquire_shared(path: &Path) -> Result<Self, LockError> {
        Self::take(path, true)
    }

    fn take(path: &Path, shared: bool) -> Result<Self, LockError> {
        let io_err = |source| LockError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        let taken = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match taken {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let pid = pid.trim();
                let holder = if pid.is_empty() {
                    "pid unknown".to_owned()
                } else {
                    format!("pid {pid}")
                };
                return Err(LockError::Held {
                    path: path.to_owned(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        // The pid is advisory, for the loser's message; the flock is what
        // excludes. Shared holders write theirs too (any one of them is a
        // right answer), so a mutating loser never names a long-gone run.
        file.set_len(0).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        write!(file, "{}", std::process::id()).map_err(io_err)?;
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let held = StateLock::acquire(&p).unwrap();
        let err = StateLock::acquire(&p).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );
        drop(held);
        StateLock::acquire(&p).unwrap();
    }

    #[test]
    fn shared_holders_exclude_only_the_exclusive_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let a = StateLock::acquire_shared(&p).unwrap();
        let b = StateLock::acquire_shared(&p).unwrap();
        let err = StateLock::acquire(&p).unwrap_err().to_string();
        assert!(err.contains("holds"), "{err}");
        drop((a, b));
        let x = StateLock::acquire(&p).unwrap();
        assert!(StateLock::acquire_shared(&p).is_err());
        drop(x);
    }
}
