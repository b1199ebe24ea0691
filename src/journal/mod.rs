//! The write-ahead journal: framed, checksummed records of each transaction's
//! plan and progress, plus the history file that keeps finished transactions.
//!
//! The journal file holds at most the transaction in flight (and, briefly, a
//! finished one whose summary is being filed): once a transaction ends, its
//! summary is appended to `history` and the journal is cut back to its header.
//! So the journal never grows beyond one transaction, and `history` (rotated
//! by size) still lists the transactions.

pub mod frame;
pub mod record;
pub mod state;
pub mod storage;

use std::io;
use std::path::{Path, PathBuf};

pub use frame::{HISTORY_MAGIC, JOURNAL_MAGIC, Scan, ScanError};
pub use record::{Abort, Begin, Commit, End, Outcome, Record, StepMark, StepRange, Summary, TxId};
pub use state::TxState;
pub use storage::{FileStorage, MemDiskHandle, MemStorage, Storage};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error(
        "{path}: {source}; the file is left as it is: restore it or move it aside, then run `jailtx recover`"
    )]
    Scan { path: PathBuf, source: ScanError },
    #[error("{path}: {what}; the file is left as it is")]
    Sequence { path: PathBuf, what: String },
    #[error("read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// fdatasync failed: whether anything since the last sync is on disk is unknown.
    #[error(
        "fdatasync {path}: {source}; durability is unknown, stopping (check the disk, then run `jailtx recover`)"
    )]
    Sync { path: PathBuf, source: io::Error },
    #[error("encode record for {path}: {source}")]
    Encode {
        path: PathBuf,
        source: postcard::Error,
    },
}

impl std::error::Error for ScanError {}

impl JournalError {
    /// 2 for a file that cannot be trusted (refused, nothing changed); 6 for
    /// an I/O failure in the middle of a write (operator needed).
    pub fn exit_code(&self) -> u8 {
        match self {
            JournalError::Scan { .. } | JournalError::Sequence { .. } => 2,
            _ => 6,
        }
    }
}

/// An append-only framed file (the journal or the history) over a [`Storage`].
#[derive(Debug)]
pub struct Log<S: Storage> {
    storage: S,
    path: PathBuf,
    magic: [u8; 8],
    end: u64,
    syncs: u64,
}

/// A [`Storage`] as the byte source of a streamed scan.
struct StorageSource<'a, S: Storage>(&'a S);

impl<S: Storage> frame::Source for StorageSource<'_, S> {
    type Error = io::Error;
    fn size(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0.read(offset, buf)
    }
}

/// Reads a framed file without changing it; an empty file reads as no
/// records. Streams the file (frame::scan_source): time linear in its size,
/// memory bounded by one frame, whatever its tail holds.
pub fn read_log<S: Storage>(
    storage: &S,
    path: &Path,
    magic: [u8; 8],
) -> Result<Scan, JournalError> {
    let read_err = |source| JournalError::Read {
        path: path.to_owned(),
        source,
    };
    let len = storage.len().map_err(read_err)?;
    if len <= frame::HEADER_LEN {
        // An empty file, or a header cut short (or zero-filled) by a crash
        // while the file was first created, holds no records; open() writes
        // it anew.
        let mut bytes = vec![0u8; len as usize];
        storage.read(0, &mut bytes).map_err(read_err)?;
        let header = frame::header(magic);
        // A header prefix followed by zeros: the size landed before the data did.
        let agree = bytes
            .iter()
            .zip(&header)
            .take_while(|(a, b)| a == b)
            .count();
        let unfinished_header =
            bytes[agree..].iter().all(|b| *b == 0) && bytes.as_slice() != header.as_slice();
        if unfinished_header {
            return Ok(Scan {
                records: Vec::new(),
                valid_len: 0,
                torn_bytes: 0,
            });
        }
    }
    frame::scan_source(&StorageSource(storage), magic).map_err(|e| match e {
        frame::ScanFailure::Read(source) => read_err(source),
        frame::ScanFailure::Scan(source) => JournalError::Scan {
            path: path.to_owned(),
            source,
        },
    })
}

impl<S: Storage> Log<S> {
    /// Opens for appending: writes the header into an empty file, trims a torn
    /// tail (durably, before anything can be appended after it), and refuses
    /// corruption without touching the file. Every record it returns is
    /// durable when it returns (see the sync at the end).
    pub fn open(storage: S, path: &Path, magic: [u8; 8]) -> Result<(Self, Scan), JournalError> {
        let scan = read_log(&storage, path, magic)?;
        let mut log = Log {
            storage,
            path: path.to_owned(),
            magic,
            end: scan.valid_len,
            syncs: 0,
        };
        if scan.valid_len == 0 {
            log.reset()?;
        } else if scan.torn_bytes > 0 {
            tracing::info!(
                path = %log.path.display(),
                offset = scan.valid_len,
                bytes = scan.torn_bytes,
                "trimming an unfinished final record"
            );
            log.storage
                .set_len(scan.valid_len)
                .map_err(|source| log.write_err(source))?;
            log.sync()?;
        } else if !scan.records.is_empty() {
            // What we read may exist only in the page cache: a run killed
            // (SIGKILL) after a write but before its fdatasync returned
            // leaves the record visible to us and not durable. Callers act on
            // what they read without appending it again (recovery runs the
            // step of an intent it found; Engine::open resets the journal
            // once history shows the summary), and an effect made durable on
            // the strength of a record that a power loss can still take back
            // breaks the write-ahead rule. So make it durable first. With
            // nothing dirty the sync is cheap, and a journal at rest (a bare
            // header) has no records and costs none.
            log.sync()?;
        }
        Ok((log, scan))
    }

    fn write_err(&self, source: io::Error) -> JournalError {
        JournalError::Write {
            path: self.path.clone(),
            source,
        }
    }

    fn sync(&mut self) -> Result<(), JournalError> {
        self.storage
            .sync_data()
            .map_err(|source| JournalError::Sync {
                path: self.path.clone(),
                source,
            })?;
        self.syncs += 1;
        Ok(())
    }

    /// Appends one record and makes it durable before returning.
    pub fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let bytes = frame::encode(record).map_err(|source| JournalError::Encode {
            path: self.path.clone(),
            source,
        })?;
        self.storage
            .write(self.end, &bytes)
            .map_err(|source| self.write_err(source))?;
        self.sync()?;
        self.end += bytes.len() as u64;
        Ok(())
    }

    /// Cuts the file back to a bare header, durably.
    pub fn reset(&mut self) -> Result<(), JournalError> {
        // A valid header stays where it is and only the records go: a crash
        // during a truncate leaves either the old file or the bare header,
        // never a half-written header. A new file gets its header written.
        if self.end >= frame::HEADER_LEN {
            self.storage
                .set_len(frame::HEADER_LEN)
                .map_err(|source| self.write_err(source))?;
        } else {
            let header = frame::header(self.magic);
            self.storage
                .set_len(0)
                .and_then(|()| self.storage.write(0, &header))
                .map_err(|source| self.write_err(source))?;
        }
        self.sync()?;
        self.end = frame::HEADER_LEN;
        Ok(())
    }

    /// Bytes in the file (all records are whole).
    pub fn len(&self) -> u64 {
        self.end
    }

    pub fn is_empty(&self) -> bool {
        self.end <= frame::HEADER_LEN
    }

    /// fdatasyncs made through this handle.
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
