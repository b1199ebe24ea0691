//! The state dir: taking the lock, rotating the history, opening the engine
//! over the real journal, and reading history for the read-only commands.

use std::path::Path;

use crate::config::Layout;
use crate::engine::lock::{LockError, StateLock};
use crate::engine::{Engine, EngineError, Fault};
use crate::fs;
use crate::fs::statefile::{self, StateFileError};
use crate::host::Host;
use crate::journal::frame::HEADER_LEN;
use crate::journal::state::{fold, summaries};
use crate::journal::{
    FileStorage, HISTORY_MAGIC, JOURNAL_MAGIC, JournalError, Storage, Summary, TxId, TxState,
    read_log,
};

/// A history file past this size is rotated to `history.1` (and so on).
pub const HISTORY_ROTATE_BYTES: u64 = 1 << 20;
/// Rotated history files kept (about 5,000 transactions each).
pub const HISTORY_KEEP: u32 = 8;
/// The largest [`ROTATE_ENV`] accepted: a history is read whole.
pub const MAX_ROTATE_BYTES: u64 = 1 << 30;
/// Test-only (journal-format sections 1 and 12): replaces
/// [`HISTORY_ROTATE_BYTES`], so a test can rotate after a few transactions.
pub const ROTATE_ENV: &str = "JAILTX_HISTORY_ROTATE_BYTES";

/// The size at which `history` is rotated: [`HISTORY_ROTATE_BYTES`] unless
/// the test-only [`ROTATE_ENV`] says otherwise. The value must exceed the
/// 16-byte header: a rotated file without a summary would lose the last
/// filed transaction number, which the next one is counted from.
fn rotate_threshold() -> Result<u64, StateError> {
    let Some(value) = std::env::var_os(ROTATE_ENV) else {
        return Ok(HISTORY_ROTATE_BYTES);
    };
    value
        .to_str()
        .and_then(|v| v.parse::<u64>().ok())
        .filter(|&n| n > HEADER_LEN && n <= MAX_ROTATE_BYTES)
        .ok_or_else(|| StateError::BadEnv {
            name: ROTATE_ENV,
            value: value.to_string_lossy().into_owned(),
            want: "a byte count above 16 and at most 1 GiB (test-only; unset it in production)",
        })
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state dir {0} does not exist; run `jailtx init` first")]
    Missing(std::path::PathBuf),
    #[error("open {path}: {source}")]
    Open {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Lock(#[from] LockError),
    /// A state file or directory jailtx did not make: exit 2, nothing changed.
    #[error(transparent)]
    Unsafe(#[from] StateFileError),
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Fs(#[from] fs::FsError),
    #[error("{name}={value:?}: expected {want}")]
    BadEnv {
        name: &'static str,
        value: String,
        want: &'static str,
    },
}

/// A mutating command's hold on the state dir: the lock and the engine.
pub struct State {
    pub engine: Engine<FileStorage>,
    _lock: StateLock,
}

/// Whether the state dir exists, after checking it and its directories
/// (`jails`, `manifests`, `etc-merge`): each a real directory, root's,
/// writable by no one else, or absent. Every command checks this before it
/// reads or writes a state file, so no file is reached through a symlinked
/// or foreign directory.
pub fn check_dirs(layout: &Layout) -> Result<bool, StateError> {
    if !statefile::check_dir(&layout.state)? {
        return Ok(false);
    }
    for dir in [
        &layout.jails,
        &layout.manifests,
        &crate::etcmerge::record::dir(layout),
    ] {
        statefile::check_dir(dir)?;
    }
    Ok(true)
}

/// [`check_dirs`], with a missing state dir an error (run `jailtx init`).
pub fn require(layout: &Layout) -> Result<(), StateError> {
    if check_dirs(layout)? {
        Ok(())
    } else {
        Err(StateError::Missing(layout.state.clone()))
    }
}

/// The highest transaction number in a history file, 0 when none.
fn last_tx_in(path: &Path) -> Result<TxId, StateError> {
    let Some(storage) = FileStorage::open_read_only(path)? else {
        return Ok(0);
    };
    let scan = read_log(&storage, path, HISTORY_MAGIC)?;
    Ok(summaries(path, &scan.records)?
        .last()
        .map(|s| s.tx)
        .unwrap_or(0))
}

/// Moves `history` to `history.1` (shifting older ones) once it is
/// `threshold` bytes or more, so the history stays bounded. Runs under the
/// lock, before the engine opens.
fn rotate_history(layout: &Layout, threshold: u64) -> Result<(), StateError> {
    let size = match FileStorage::open_read_only(&layout.history)? {
        Some(h) => h.len().map_err(|source| StateError::Open {
            path: layout.history.clone(),
            source,
        })?,
        None => 0,
    };
    if size < threshold {
        return Ok(());
    }
    // Every file the rotation renames is checked before the first rename,
    // so a planted one is refused with nothing moved.
    for n in 1..=HISTORY_KEEP {
        FileStorage::open_read_only(&layout.history_rotated(n))?;
    }
    let oldest = layout.history_rotated(HISTORY_KEEP);
    if oldest.exists() {
        fs::remove_file_durable(&oldest)?;
    }
    for n in (1..HISTORY_KEEP).rev() {
        let from = layout.history_rotated(n);
        if from.exists() {
            fs::rename_durable(&from, &layout.history_rotated(n + 1))?;
        }
    }
    fs::rename_durable(&layout.history, &layout.history_rotated(1))?;
    Ok(())
}

impl State {
    /// Locks the state dir and opens the engine. Fails with exit 5 semantics
    /// when another run holds the lock.
    pub fn open(
        layout: &Layout,
        fault: Option<Fault>,
        host: Box<dyn Host>,
    ) -> Result<State, StateError> {
        require(layout)?;
        let threshold = rotate_threshold()?;
        let lock = StateLock::acquire(&layout.lock)?;
        rotate_history(layout, threshold)?;
        let filed = last_tx_in(&layout.history_rotated(1))?;
        let missing = |p: &Path| std::fs::symlink_metadata(p).is_err();
        let new_files = missing(&layout.journal) || missing(&layout.history);
        let engine = Engine::open(
            FileStorage::open(&layout.journal)?,
            &layout.journal,
            FileStorage::open(&layout.history)?,
            &layout.history,
            filed,
            fault,
            host,
        )?;
        if new_files {
            // A file's name is durable only once its directory is synced.
            fs::fsync_dir(&layout.state)?;
        }
        Ok(State {
            engine,
            _lock: lock,
        })
    }
}

/// The journal's transactions, oldest first, read without opening anything
/// for writing (a torn tail stays as it is). The unfinished one, if any, is
/// marked as `Engine::open` marks it when the tail was trimmed.
fn read_journal(layout: &Layout) -> Result<Vec<TxState>, StateError> {
    let Some(s) = FileStorage::open_read_only(&layout.journal)? else {
        return Ok(Vec::new());
    };
    let scan = read_log(&s, &layout.journal, JOURNAL_MAGIC)?;
    let mut txs = fold(&layout.journal, &scan.records)?;
    for tx in txs.iter_mut().filter(|tx| tx.end.is_none()) {
        tx.tail_trimmed = scan.torn_bytes > 0;
    }
    Ok(txs)
}

/// The journal's size in bytes (0 before the first transaction), read
/// without opening it for writing: for `metrics`.
pub fn journal_len(layout: &Layout) -> Result<u64, StateError> {
    require(layout)?;
    match FileStorage::open_read_only(&layout.journal)? {
        Some(s) => s.len().map_err(|source| StateError::Open {
            path: layout.journal.clone(),
            source,
        }),
        None => Ok(0),
    }
}

/// The interrupted transaction, if any, read without changing a byte: for
/// `status`.
pub fn read_pending(layout: &Layout) -> Result<Option<TxState>, StateError> {
    require(layout)?;
    Ok(read_journal(layout)?
        .into_iter()
        .find(|tx| tx.end.is_none()))
}

/// Every finished transaction, oldest first, and the interrupted one if any.
/// Reads without the lock and without changing a byte.
pub fn read_history(layout: &Layout) -> Result<(Vec<Summary>, Option<TxState>), StateError> {
    require(layout)?;
    let mut out = Vec::new();
    let mut files: Vec<_> = (1..=HISTORY_KEEP)
        .rev()
        .map(|n| layout.history_rotated(n))
        .collect();
    files.push(layout.history.clone());
    for path in &files {
        let Some(s) = FileStorage::open_read_only(path)? else {
            continue;
        };
        let scan = read_log(&s, path, HISTORY_MAGIC)?;
        out.extend(summaries(path, &scan.records)?.into_iter().cloned());
    }
    let mut pending = None;
    let last = out.last().map(|s| s.tx).unwrap_or(0);
    for tx in read_journal(layout)? {
        if tx.end.is_none() {
            pending = Some(tx);
        } else if tx.tx() > last {
            // Ended but not yet filed (crash before the summary landed).
            out.push(crate::engine::summary_of(&tx));
        }
    }
    Ok((out, pending))
}
