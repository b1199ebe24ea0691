//! One run at a time: an exclusive `File::try_lock` on the state dir's lock
//! file, held for the whole command, with the holder's pid written inside.
//! Read-only commands that must not see a template mid-switch (`audit`) take
//! it shared: any number of them at once, never beside a mutating run.

use std::fs::{File, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::fs::statefile::{self, Kind, StateFileError};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("another jailtx run ({holder}) holds {path}; wait for it to finish")]
    Held { path: PathBuf, holder: String },
    #[error("lock {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    /// The lock file is not one jailtx made (a symlink to a host file, a
    /// fifo, another user's): refused before a byte of it is written.
    #[error(transparent)]
    Unsafe(#[from] StateFileError),
}

/// The held lock; released when dropped (or when the process dies, so a
/// crashed run never leaves a stale lock behind).
#[derive(Debug)]
pub struct StateLock {
    _file: File,
}

/// The holder's pid as the lock file says it (its leading digits).
fn holder_pid(file: &File) -> String {
    // A pid is a few digits; a longer file was not written by us. Read at
    // offset 0 (pread): a loser may read it more than once.
    let mut head = [0u8; 64];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    let pid = String::from_utf8_lossy(&head[..n]);
    // Only the leading digits: shared holders writing at once can
    // leave a shorter pid followed by another's padding or NULs.
    let pid = pid.trim_start();
    pid[..pid.find(|c: char| !c.is_ascii_digit()).unwrap_or(pid.len())].to_owned()
}

/// The loser's error, naming the holder's pid as the lock file says it.
fn held(path: &Path, file: &File) -> LockError {
    let pid = holder_pid(file);
    let holder = if pid.is_empty() {
        "pid unknown".to_owned()
    } else {
        format!("pid {pid}")
    };
    LockError::Held {
        path: path.to_owned(),
        holder,
    }
}

/// How long a loser waits when the run named in the lock file is gone: a
/// run killed while one of its threads was between fork and exec leaves
/// the child a copy of every descriptor, the lock's too, until its exec
/// (O_CLOEXEC) closes them, a matter of milliseconds. A live holder is
/// never waited for.
const DEAD_HOLDER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether the run named in the lock file has exited (its pid is free).
fn holder_gone(file: &File) -> bool {
    let Ok(pid) = holder_pid(file).parse::<i32>() else {
        return false;
    };
    pid > 0
        && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH)
}

impl StateLock {
    /// Whether a mutating run holds the lock now ([`LockError::Held`]),
    /// without taking it or writing a byte: for `--dry-run`, which plans
    /// without the lock and must not mistake a run's work for leftovers.
    pub fn probe(path: &Path) -> Result<(), LockError> {
        let Some(file) = statefile::open_read(path, Kind::Lock)? else {
            return Ok(());
        };
        match file.try_lock_shared() {
            Ok(()) => Ok(()),
            Err(TryLockError::WouldBlock) => Err(held(path, &file)),
            Err(TryLockError::Error(source)) => Err(LockError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

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
        let file = statefile::open_rw(path, Kind::Lock)?;
        let try_take = || {
            if shared {
                file.try_lock_shared()
            } else {
                file.try_lock()
            }
        };
        let mut taken = try_take();
        let until = std::time::Instant::now() + DEAD_HOLDER_GRACE;
        while matches!(taken, Err(TryLockError::WouldBlock))
            && std::time::Instant::now() < until
            && holder_gone(&file)
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
            taken = try_take();
        }
        match taken {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(held(path, &file)),
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        // The pid is advisory, for the loser's message; the flock is what
        // excludes. Shared holders write theirs too (any one of them is a
        // right answer), so a mutating loser never names a long-gone run.
        // Overwritten in place, padded with spaces over the old pid, then cut
        // to its length: a loser reading at any moment sees the old pid or
        // the new one, never an empty file ("pid unknown"), as it could
        // between a truncate and the write.
        let old_len = file.metadata().map_err(io_err)?.len();
        let pid = std::process::id().to_string();
        // Padding is capped: a lock file that long was not written by us,
        // and its tail goes with the set_len anyway.
        let width = usize::try_from(old_len).unwrap_or(0).min(64).max(pid.len());
        file.write_all_at(format!("{pid:<width$}").as_bytes(), 0)
            .map_err(io_err)?;
        file.set_len(pid.len() as u64).map_err(io_err)?;
        Ok(StateLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// The lock once it is free: another test of this process forking a
    /// command may hold a copy of a just-closed descriptor (and its flock)
    /// until the child's exec closes it.
    fn acquire_soon(p: &Path) -> StateLock {
        for _ in 0..1000 {
            match StateLock::acquire(p) {
                Ok(lock) => return lock,
                Err(LockError::Held { .. }) => std::thread::sleep(Duration::from_millis(1)),
                Err(e) => panic!("{e}"),
            }
        }
        panic!("{} stayed locked for a second", p.display());
    }

    #[test]
    fn a_pid_left_with_nuls_is_named_by_its_digits() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let _held = StateLock::acquire(&p).unwrap();
        std::fs::write(&p, b"9\0\0\0\0").unwrap();
        let err = StateLock::acquire(&p).unwrap_err().to_string();
        assert!(err.contains("(pid 9)"), "{err}");
        assert!(!err.contains('\0'), "{err:?}");
    }

    /// A lock held on behalf of a run that has exited (a child between
    /// fork and exec) is waited for, briefly; a live holder is not.
    #[test]
    fn a_dead_holder_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        let held = StateLock::acquire(&p).unwrap();
        std::fs::write(&p, dead.to_string()).unwrap();
        let (lock, waited) = std::thread::scope(|s| {
            s.spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                drop(held);
            });
            let t = std::time::Instant::now();
            let lock = StateLock::acquire(&p);
            (lock, t.elapsed())
        });
        let lock = lock.expect("the lock, once the dead run's copy is gone");
        assert!(waited >= Duration::from_millis(150), "{waited:?}");
        // Now held by this (live) process: refused at once.
        let t = std::time::Instant::now();
        assert!(matches!(
            StateLock::acquire(&p),
            Err(LockError::Held { .. })
        ));
        assert!(t.elapsed() < DEAD_HOLDER_GRACE, "{:?}", t.elapsed());
        drop(lock);
    }

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
        drop(acquire_soon(&p));
    }

    /// The pid file is rewritten by every holder while losers read it: a
    /// reader must always find a pid (it used to be truncated, then written,
    /// so a reader between the two named no holder), and a longer earlier
    /// pid must not leave digits behind.
    #[test]
    fn the_pid_is_never_seen_missing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        std::fs::write(&p, "4194304999").unwrap();
        drop(StateLock::acquire(&p).unwrap());
        let me = std::process::id().to_string();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), me);
        let stop = std::sync::atomic::AtomicBool::new(false);
        /// Stops the reader however the writer's loop ends: a panic there
        /// must fail the test, not leave the scope waiting on a spinning
        /// reader forever.
        struct Stop<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, std::sync::atomic::Ordering::Relaxed);
            }
        }
        let seen = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let mut bad = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let text = std::fs::read_to_string(&p).unwrap();
                    if text.trim() != me {
                        bad.push(text);
                    }
                }
                bad
            });
            let _stop = Stop(&stop);
            for _ in 0..5_000 {
                drop(acquire_soon(&p));
            }
            drop(_stop);
            reader.join().unwrap()
        });
        assert!(
            seen.is_empty(),
            "a reader saw {} bad pids: {:?}",
            seen.len(),
            &seen[..seen.len().min(3)]
        );
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
        let x = acquire_soon(&p);
        assert!(StateLock::acquire_shared(&p).is_err());
        drop(x);
    }
}
