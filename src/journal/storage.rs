//! The narrow I/O seam under the journal: a file as len/read/write/set_len/sync_data.
//!
//! Everything above this trait is pure logic, so a crash test can swap the file
//! for [`MemStorage`] and stop making writes durable at the Nth sync.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::fs::statefile::{self, Kind, StateFileError};

/// A byte-addressed file. Contracts, which every implementation must keep:
///
/// - `write` may extend the file; bytes between the old end and `offset` read as
///   zero. It makes nothing durable by itself.
/// - `sync_data` returns only once every `write` and `set_len` before it is
///   durable. An error means durability is unknown: callers must treat it as
///   fatal and never retry as if the data were safe (fsyncgate).
/// - `set_len` shrinks or grows the file; durable only after `sync_data`.
// `len` is redb's name for the file size; an `is_empty` would mean nothing here.
#[allow(clippy::len_without_is_empty)]
pub trait Storage {
    fn len(&self) -> io::Result<u64>;
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()>;
    fn set_len(&mut self, len: u64) -> io::Result<()>;
    fn sync_data(&mut self) -> io::Result<()>;

    fn read_all(&self) -> io::Result<Vec<u8>> {
        let len = usize::try_from(self.len()?)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        let mut buf = vec![0; len];
        self.read(0, &mut buf)?;
        Ok(buf)
    }
}

/// A real file; `sync_data` is fdatasync(2).
#[derive(Debug)]
pub struct FileStorage {
    file: File,
}

impl FileStorage {
    /// Opens `path` read-write, creating it (empty, mode 0600) when missing.
    /// Through `fs::statefile`: a symlink, a fifo or a file someone else
    /// could write is refused before a byte is read or written.
    pub fn open(path: &Path) -> Result<Self, StateFileError> {
        let file = statefile::open_rw(path, Kind::Journal)?;
        Ok(Self { file })
    }

    /// Opens `path` read-only, checked as [`FileStorage::open`] does;
    /// `None` when there is no such file. Writes will fail.
    pub fn open_read_only(path: &Path) -> Result<Option<Self>, StateFileError> {
        Ok(statefile::open_read(path, Kind::Journal)?.map(|file| Self { file }))
    }
}

impl Storage for FileStorage {
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.file.write_all_at(data, offset)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data()
    }
}

/// One simulated disk shared by several [`MemStorage`] files, for crash tests.
///
/// Each file has a live image (what reads see) and a durable image (what
/// survives power loss). `sync_data` copies live to durable until the disk's
/// power is cut at sync number `cut_at`; that sync and every later operation
/// fail, as a machine that lost power runs no more code.
#[derive(Debug, Default)]
pub struct MemDisk {
    files: Vec<(String, MemFile)>,
    syncs: u64,
    cut_at: Option<u64>,
    cut: bool,
}

#[derive(Debug, Default, Clone)]
struct MemFile {
    live: Vec<u8>,
    durable: Vec<u8>,
}

/// A shared handle on a [`MemDisk`].
#[derive(Debug, Clone, Default)]
pub struct MemDiskHandle(Arc<Mutex<MemDisk>>);

impl MemDiskHandle {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, MemDisk> {
        // A poisoned lock only means a test thread panicked; the data is still usable.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The file called `name` on this disk, created empty when new.
    pub fn file(&self, name: &str) -> MemStorage {
        let mut disk = self.lock();
        if !disk.files.iter().any(|(n, _)| n == name) {
            disk.files.push((name.to_owned(), MemFile::default()));
        }
        MemStorage {
            disk: self.clone(),
            name: name.to_owned(),
        }
    }

    /// Cut the power at sync number `k` (1-based): sync `k` and all later I/O fail.
    pub fn cut_power_at_sync(&self, k: u64) {
        self.lock().cut_at = Some(k);
    }

    /// How many `sync_data` calls succeeded so far.
    pub fn syncs(&self) -> u64 {
        self.lock().syncs
    }

    pub fn is_cut(&self) -> bool {
        self.lock().cut
    }

    /// The durable image of `name` (what a reboot would find).
    pub fn durable(&self, name: &str) -> Vec<u8> {
        self.with_file(name, |f| f.durable.clone())
    }

    /// The live image of `name`.
    pub fn live(&self, name: &str) -> Vec<u8> {
        self.with_file(name, |f| f.live.clone())
    }

    fn with_file<T>(&self, name: &str, f: impl FnOnce(&MemFile) -> T) -> T {
        let disk = self.lock();
        let file = disk
            .files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .unwrap_or_default();
        f(&file)
    }

    /// A new disk whose files hold, live and durable, `images` (the reboot).
    pub fn from_images(images: &[(&str, Vec<u8>)]) -> Self {
        let disk = MemDisk {
            files: images
                .iter()
                .map(|(n, b)| {
                    (
                        (*n).to_owned(),
                        MemFile {
                            live: b.clone(),
                            durable: b.clone(),
                        },
                    )
                })
                .collect(),
            ..MemDisk::default()
        };
        Self(Arc::new(Mutex::new(disk)))
    }
}

/// A file on a [`MemDisk`].
#[derive(Debug, Clone)]
pub struct MemStorage {
    disk: MemDiskHandle,
    name: String,
}

fn power_cut() -> io::Error {
    io::Error::other("simulated power loss")
}

impl MemStorage {
    fn with<T>(&self, f: impl FnOnce(&mut MemDisk, usize) -> io::Result<T>) -> io::Result<T> {
        let mut disk = self.disk.lock();
        if disk.cut {
            return Err(power_cut());
        }
        let idx = disk
            .files
            .iter()
            .position(|(n, _)| *n == self.name)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, self.name.clone()))?;
        f(&mut disk, idx)
    }
}

impl Storage for MemStorage {
    fn len(&self) -> io::Result<u64> {
        self.with(|d, i| Ok(d.files[i].1.live.len() as u64))
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.with(|d, i| {
            let live = &d.files[i].1.live;
            let start = usize::try_from(offset).map_err(|_| io::ErrorKind::UnexpectedEof)?;
            let end = start
                .checked_add(buf.len())
                .ok_or(io::ErrorKind::UnexpectedEof)?;
            let src = live.get(start..end).ok_or(io::ErrorKind::UnexpectedEof)?;
            buf.copy_from_slice(src);
            Ok(())
        })
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.with(|d, i| {
            let live = &mut d.files[i].1.live;
            let start = usize::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
            let end = start + data.len();
            if live.len() < end {
                live.resize(end, 0);
            }
            live[start..end].copy_from_slice(data);
            Ok(())
        })
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.with(|d, i| {
            let len = usize::try_from(len).map_err(|_| io::ErrorKind::InvalidInput)?;
            d.files[i].1.live.resize(len, 0);
            Ok(())
        })
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.with(|d, i| {
            let next = d.syncs + 1;
            if d.cut_at == Some(next) {
                d.cut = true;
                return Err(power_cut());
            }
            d.syncs = next;
            let file = &mut d.files[i].1;
            file.durable = file.live.clone();
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mem_storage_keeps_only_synced_bytes_after_cut() {
        let disk = MemDiskHandle::new();
        let mut f = disk.file("j");
        f.write(0, b"abc").unwrap();
        f.sync_data().unwrap();
        f.write(3, b"def").unwrap();
        disk.cut_power_at_sync(2);
        assert!(f.sync_data().is_err());
        assert!(f.write(6, b"x").is_err());
        assert_eq!(disk.durable("j"), b"abc");
        assert_eq!(disk.live("j"), b"abcdef");
    }

    #[test]
    fn file_storage_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = FileStorage::open(&dir.path().join("x")).unwrap();
        f.write(4, b"zz").unwrap();
        f.sync_data().unwrap();
        assert_eq!(f.read_all().unwrap(), b"\0\0\0\0zz");
        f.set_len(1).unwrap();
        assert_eq!(f.len().unwrap(), 1);
    }
}
