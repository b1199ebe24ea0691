//! Durable filesystem primitives, cpdup-style tree copy and symlink-safe tree removal.
//!
//! Everything that makes a change on disk durable (fsync of files and of the
//! directories holding their names) lives here, so the journal and the engine
//! can state their crash guarantees in terms of these few functions.
//!
//! `durable` holds the single-step primitives, `copy` and `remove` the two
//! tree walks, `dirfd` the descriptor helpers those walks share (no-follow,
//! no-mount-crossing opens), `test_support` the fixtures of their tests.

pub mod beneath;
mod copy;
pub(crate) mod dirfd;
mod durable;
pub mod quarantine;
mod remove;
pub mod statefile;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub use copy::{CopyStats, copy_tree};
pub use durable::{
    create_dir_all_durable, create_dir_durable, fsync_dir, fsync_parent, remove_file_durable,
    rename_durable, set_dir_mode_durable, symlink_durable, sync_tree, temp_path, write_atomic,
    write_atomic_shared,
};
pub use remove::remove_tree;

/// Result of every function in this module.
pub type Result<T> = std::result::Result<T, FsError>;

/// Test-only fault hook (`JAILTX_FAULT=fsync-eio:<step>`, journal-format
/// section 12): while armed, every fsync and syncfs made through this module
/// fails with EIO without reaching the kernel, as on a disk that lost writes.
/// Process-wide, because a step may sync from any thread; the engine arms it
/// only around the one step a fault names. Never armed in production.
static FAIL_SYNCS: AtomicBool = AtomicBool::new(false);

/// Arms (`true`) or disarms the injected sync failure; see [`FAIL_SYNCS`].
pub fn inject_sync_failure(armed: bool) {
    FAIL_SYNCS.store(armed, Ordering::SeqCst);
}

/// The error an injected sync failure returns instead of syncing, if armed.
fn injected_sync_error() -> Option<io::Error> {
    FAIL_SYNCS
        .load(Ordering::SeqCst)
        .then(|| io::Error::from(nix::errno::Errno::EIO))
}

/// fsync(2) through `sync`, failing first if a failure is injected: the one
/// way this module syncs a file or directory, so the hook covers them all.
fn fsync_with(path: &Path, sync: impl FnOnce() -> io::Result<()>) -> Result<()> {
    if let Some(source) = injected_sync_error() {
        return Err(FsError::Fsync {
            path: path.to_owned(),
            source,
        });
    }
    sync().map_err(|source| FsError::Fsync {
        path: path.to_owned(),
        source,
    })
}

/// One variant per failing OS operation, so a log line names the exact step
/// and path that broke.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("open {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("stat {path}: {source}")]
    Stat { path: PathBuf, source: io::Error },
    #[error("read directory {path}: {source}")]
    ReadDir { path: PathBuf, source: io::Error },
    #[error("read symlink {path}: {source}")]
    ReadLink { path: PathBuf, source: io::Error },
    #[error("write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("copy data {from} -> {to}: {source}")]
    CopyData {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("fsync {path}: {source}")]
    Fsync { path: PathBuf, source: io::Error },
    #[error("syncfs on the filesystem holding {path}: {source}")]
    SyncFs { path: PathBuf, source: io::Error },
    #[error("rename {from} -> {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("mkdir {path}: {source}")]
    Mkdir { path: PathBuf, source: io::Error },
    #[error("chmod {path}: {source}")]
    Chmod { path: PathBuf, source: io::Error },
    #[error("chown {path}: {source}")]
    Chown { path: PathBuf, source: io::Error },
    #[error("set times on {path}: {source}")]
    SetTimes { path: PathBuf, source: io::Error },
    #[error("symlink {link} -> {target}: {source}")]
    Symlink {
        target: PathBuf,
        link: PathBuf,
        source: io::Error,
    },
    #[error("hard link {to} -> {from}: {source}")]
    Link {
        from: PathBuf,
        to: PathBuf,
        source: io::Error,
    },
    #[error("mknod {path}: {source}")]
    Mknod { path: PathBuf, source: io::Error },
    #[error("unlink {path}: {source}")]
    Unlink { path: PathBuf, source: io::Error },
    #[error("rmdir {path}: {source}")]
    RemoveDir { path: PathBuf, source: io::Error },
    #[error("cannot copy {src} into itself: {dst} is inside it")]
    CopyIntoItself { src: PathBuf, dst: PathBuf },
    #[error("copy destination {path} already exists; remove it or choose another destination")]
    DestinationExists { path: PathBuf },
    #[error("refusing to remove {path}: a filesystem is mounted there; unmount it first")]
    MountInside { path: PathBuf },
    #[error("{path} changed while it was being walked (directory replaced); retry")]
    TreeChanged { path: PathBuf },
    #[error("{path} has no final name component (it is / or ends in ..)")]
    NoFileName { path: PathBuf },
    /// A path below a jail-writable directory that would leave it or is unsafe to use.
    #[error("refusing {path}: {why} (never followed out of a jail-writable tree)")]
    Refused { path: PathBuf, why: String },
    #[error("{path}: {what}; move it aside, then run `jailtx recover`")]
    InTheWay { path: PathBuf, what: String },
    #[error("rename {from} -> {to}: neither exists; something outside jailtx moved it")]
    Vanished { from: PathBuf, to: PathBuf },
}

impl FsError {
    /// The path whose fsync or syncfs failed, if that is what this error is.
    /// Such a failure means writes may be lost whatever a retry says: callers
    /// stop instead of carrying on (or undoing) as if the data were safe.
    pub fn sync_failed(&self) -> Option<&Path> {
        match self {
            FsError::Fsync { path, .. } | FsError::SyncFs { path, .. } => Some(path),
            _ => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod test_support;
