//! Reading a file's data for hashing: read(2) into a reused buffer for all but the largest files, memory-mapped windows (hashed with rayon) for those.
//!
//! Why not mmap every file above a few pages, as `b3sum` does: each munmap in
//! a multi-threaded process makes the kernel shoot down the other threads'
//! TLB entries with inter-processor interrupts, and with page-table setup
//! that cost more than the copy that read(2) makes into a cache-resident
//! buffer, up to files of a few MiB (a full audit of a 680 MiB, 17,000-file
//! template was 10-15 % faster reading everything under 4 MiB than mapping
//! everything over 128 KiB; docs/audit.md). Mapping files one after
//! another into a per-thread arena unmapped in one call (one shootdown per
//! arena) was measured too: no faster from 1 MiB up, slower below, since
//! the page-table setup alone costs about what the copy does.
//!
//! Why windows and not `blake3::Hasher::update_mmap_rayon` for the large
//! files: that call opens by path (following symlinks, which a template walk
//! must never do) and maps the whole file, and mapped pages count as
//! resident memory, so one 2 GB file would make the audit's peak RSS 2 GB. A
//! window of [`WINDOW`] bytes is mapped, hashed in parallel, and unmapped
//! before the next, which bounds RSS at threads x WINDOW whatever the file
//! sizes.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Files at least this large are memory-mapped: large enough that the
/// mapping's cost (page tables, the munmap's IPIs) is less than the copy it
/// saves, and that splitting the hashing over threads pays (measured: 1, 4
/// and 16 MiB, 4 the best by a few percent).
pub(super) const MMAP_MIN: u64 = 4 << 20;
/// Bytes per read(2): a few hundred KiB stay in the L2 cache between the
/// copy and the hashing, and give BLAKE3 enough chunks for its widest SIMD.
const READ_BUF: usize = 256 << 10;
/// Bytes mapped at once. A power of two, so every window after the first
/// starts on a BLAKE3 subtree boundary and `update_rayon` splits it evenly.
const WINDOW: usize = 16 << 20;
/// Windows at least this large are hashed with rayon; smaller ones on the
/// calling thread (splitting costs more than it gains below this).
const RAYON_MIN: usize = 1 << 20;

thread_local! {
    static BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_BUF]);
}

/// Something fed a file's bytes in order.
pub(super) trait Sink {
    fn update(&mut self, data: &[u8]);
    /// Like `update`, for large slices: may use every idle rayon thread.
    fn update_big(&mut self, data: &[u8]) {
        self.update(data);
    }
}

impl Sink for blake3::Hasher {
    fn update(&mut self, data: &[u8]) {
        blake3::Hasher::update(self, data);
    }
    fn update_big(&mut self, data: &[u8]) {
        if data.len() >= RAYON_MIN {
            self.update_rayon(data);
        } else {
            blake3::Hasher::update(self, data);
        }
    }
}

/// Feeds all of `file` to `sink`, from offset 0 to end of file; `size` is
/// what fstat said. Returns the bytes read. `file` must be a regular file.
///
/// If the file is truncated by someone else while a window is mapped, the
/// kernel raises SIGBUS (as it would for `b3sum`); templates are written
/// only by jailtx, under its lock, so that is a crash of a read-only
/// command at worst, never a wrong answer.
pub(super) fn feed(file: &File, size: u64, sink: &mut dyn Sink) -> io::Result<u64> {
    let mut done = 0u64;
    if size >= MMAP_MIN {
        while done < size {
            let len = usize::try_from(size - done).map_or(WINDOW, |left| left.min(WINDOW));
            // SAFETY: the mapping is private to this function and read-only;
            // the slice does not outlive it. Concurrent modification of the
            // file can change the bytes we hash (we then report a content
            // difference, which is the truth) or raise SIGBUS on truncation
            // (see above); it cannot make the slice dangle.
            let map = unsafe {
                memmap2::MmapOptions::new()
                    .offset(done)
                    .len(len)
                    .populate()
                    .map(file)?
            };
            sink.update_big(&map);
            done += len as u64;
        }
    }
    // The whole of a file under MMAP_MIN, or whatever was appended after the
    // fstat of a large one (read until EOF: the size is only a hint).
    BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        loop {
            // pread: the descriptor's offset is never used, so a file
            // hashed twice through one descriptor reads from 0 both times.
            match file.read_at(&mut buf, done) {
                Ok(0) => return Ok(done),
                Ok(n) => {
                    sink.update(&buf[..n]);
                    done += n as u64;
                    // A short read that reaches the size fstat gave is the
                    // end: this saves a zero-length read per small file. A
                    // short read before it (FUSE, NFS may cut reads) goes on.
                    if n < buf.len() && done >= size {
                        return Ok(done);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    })
}

/// BLAKE3 of all of `file`, and the bytes read.
pub(super) fn blake3_of(file: &File, size: u64) -> io::Result<([u8; 32], u64)> {
    let mut h = blake3::Hasher::new();
    let n = feed(file, size, &mut h)?;
    Ok((*h.finalize().as_bytes(), n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn every_size_class_hashes_like_blake3() {
        let dir = tempfile::tempdir().unwrap();
        for size in [
            0,
            1,
            4095,
            READ_BUF - 1,
            READ_BUF,
            READ_BUF + 1,
            MMAP_MIN as usize - 1,
            MMAP_MIN as usize,
            MMAP_MIN as usize + WINDOW + 12345,
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let p = dir.path().join(format!("f{size}"));
            std::fs::File::create(&p).unwrap().write_all(&data).unwrap();
            let f = File::open(&p).unwrap();
            let (h, n) = blake3_of(&f, size as u64).unwrap();
            assert_eq!(n, size as u64);
            assert_eq!(h, *blake3::hash(&data).as_bytes(), "size {size}");
            // A stale (smaller) size hint still reads to the end.
            let (h2, n2) = blake3_of(&f, (size / 2) as u64).unwrap();
            assert_eq!((h2, n2), (h, n), "hint {size}/2");
        }
    }
}
