//! A Linux jail's console log, `NAME.log` in the state dir: written by
//! jailtx from a pipe (never by the jail's processes), rotated at a size cap
//! into `NAME.log.1` and `NAME.log.2`, opened without following links, and
//! fed through a bounded buffer that drops output rather than block the jail.
//!
//! The jail's processes only ever hold the write end of a pipe. A reader
//! thread empties the pipe into a queue of at most [`QUEUE_CHUNKS`] chunks
//! of at most [`CHUNK`] bytes (1 MiB); when the queue is full (the disk is
//! slower than the jail's output) the chunk is dropped and counted, and the
//! writer thread puts a one-line note with the count into the log before
//! the next chunk it writes. So a jail never waits on the disk for longer
//! than it takes to fill the pipe, and never forever.

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};

use nix::fcntl::{FcntlArg, OFlag, openat, renameat};
use nix::sys::signal::{SigSet, SigmaskHow};
use nix::sys::stat::{Mode, SFlag, fchmod, fstat};
use nix::unistd::UnlinkatFlags;

/// How much the reader takes from the pipe at a time.
pub const CHUNK: usize = 64 * 1024;
/// How many chunks wait for the disk before output is dropped.
pub const QUEUE_CHUNKS: usize = 16;
/// Rotated generations kept beside `NAME.log`.
pub const GENERATIONS: u32 = 2;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("open the jail log directory {path}: {source}")]
    Dir { path: PathBuf, source: nix::Error },
    #[error(
        "jail log {path} is not a regular file jailtx wrote (a symlink, fifo, directory, \
         hard link or file of another owner): remove it and start the jail again"
    )]
    Untrusted { path: PathBuf },
    #[error("open jail log {path}: {source}")]
    Open { path: PathBuf, source: nix::Error },
    #[error("write jail log {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("make the console pipe of jail {name}: {source}")]
    Pipe { name: String, source: nix::Error },
}

/// `NAME.log` and its rotated generations, reached only through a handle
/// on their directory: nothing is resolved through a link.
pub struct Log {
    dir: OwnedFd,
    dir_path: PathBuf,
    name: String,
    max: u64,
    file: Option<(std::fs::File, u64)>,
}

impl Log {
    /// Opens the log of jail `name` in `dir`, creating it (0600) if needed;
    /// refuses one that is not a regular file owned by us with one link.
    pub fn open(dir: &Path, name: &str, max: u64) -> Result<Log, LogError> {
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
        let dir_fd =
            nix::fcntl::open(dir, flags, Mode::empty()).map_err(|source| LogError::Dir {
                path: dir.to_owned(),
                source,
            })?;
        let mut log = Log {
            dir: dir_fd,
            dir_path: dir.to_owned(),
            name: name.to_owned(),
            max: max.max(1),
            file: None,
        };
        log.file = Some(log.open_current()?);
        Ok(log)
    }

    fn file_name(&self, generation: u32) -> String {
        match generation {
            0 => format!("{}.log", self.name),
            n => format!("{}.log.{n}", self.name),
        }
    }

    fn path(&self) -> PathBuf {
        self.dir_path.join(self.file_name(0))
    }

    /// `NAME.log` for appending, and its size. O_NONBLOCK keeps a planted
    /// fifo from blocking the open; the checks after it refuse the fifo.
    fn open_current(&self) -> Result<(std::fs::File, u64), LogError> {
        let flags = OFlag::O_WRONLY
            | OFlag::O_APPEND
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let fd = openat(
            &self.dir,
            self.file_name(0).as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|source| match source {
            // A symlink, a fifo nobody reads, a directory.
            nix::Error::ELOOP | nix::Error::ENXIO | nix::Error::EISDIR => {
                LogError::Untrusted { path: self.path() }
            }
            source => LogError::Open {
                path: self.path(),
                source,
            },
        })?;
        let untrusted = || LogError::Untrusted { path: self.path() };
        let st = fstat(&fd).map_err(|_| untrusted())?;
        let regular = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFREG;
        // A hard link would make the append land in another file.
        if !regular || st.st_uid != nix::unistd::geteuid().as_raw() || st.st_nlink != 1 {
            return Err(untrusted());
        }
        if st.st_mode & 0o7777 != 0o600 {
            // Logs of older versions were 0644: the jail's output is the
            // jail's, not every host user's.
            fchmod(&fd, Mode::from_bits_truncate(0o600)).map_err(|source| LogError::Open {
                path: self.path(),
                source,
            })?;
        }
        nix::fcntl::fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_APPEND)).map_err(|source| {
            LogError::Open {
                path: self.path(),
                source,
            }
        })?;
        Ok((
            std::fs::File::from(fd),
            u64::try_from(st.st_size).unwrap_or(0),
        ))
    }

    /// `NAME.log.1` becomes `.2` (the old `.2` goes), `NAME.log` becomes
    /// `.1`, and a new empty `NAME.log` is opened. Renames move whatever
    /// entry is there (a planted link moves as a link), never its target.
    fn rotate(&mut self) -> Result<(), LogError> {
        self.file = None;
        for g in (1..=GENERATIONS).rev() {
            let (from, to) = (self.file_name(g - 1), self.file_name(g));
            if renameat(&self.dir, from.as_str(), &self.dir, to.as_str()).is_err() {
                // Something jailtx did not make is in the way (a directory):
                // the older generation is dropped instead.
                let _ = nix::unistd::unlinkat(&self.dir, from.as_str(), UnlinkatFlags::NoRemoveDir);
            }
        }
        self.file = Some(self.open_current()?);
        Ok(())
    }

    /// Appends `buf`, rotating so that no file grows past the cap.
    pub fn write(&mut self, mut buf: &[u8]) -> Result<(), LogError> {
        let path = self.path();
        while !buf.is_empty() {
            let (file, size) = match &mut self.file {
                Some((f, s)) if *s < self.max => (f, s),
                // Full, or unopenable last time (it is tried again).
                Some(_) | None => {
                    self.rotate()?;
                    continue;
                }
            };
            let room = usize::try_from(self.max - *size).unwrap_or(usize::MAX);
            let n = buf.len().min(room);
            file.write_all(&buf[..n])
                .map_err(|source| LogError::Write {
                    path: path.clone(),
                    source,
                })?;
            *size += n as u64;
            buf = &buf[n..];
        }
        Ok(())
    }
}

/// The write end of a jail's console pipe, and a way to wait for what was
/// written to reach the log.
pub struct Console {
    pub input: OwnedFd,
    done: Receiver<()>,
}

impl Console {
    /// A pipe whose output goes to `log` (or nowhere), pumped by two
    /// threads that block every signal: a process waiting for signals with
    /// sigwait (the jail's init) must get them all on its own thread.
    pub fn start(name: &str, log: Option<Log>) -> Result<Console, LogError> {
        let (read, write) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|source| LogError::Pipe {
                name: name.to_owned(),
                source,
            })?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(QUEUE_CHUNKS);
        let (done_tx, done) = std::sync::mpsc::channel();
        let dropped = Arc::new(AtomicU64::new(0));
        let old = SigSet::all().thread_swap_mask(SigmaskHow::SIG_BLOCK).ok();
        let counted = Arc::clone(&dropped);
        std::thread::spawn(move || read_pipe(read, tx, &counted));
        std::thread::spawn(move || {
            write_log(log, rx, &dropped);
            let _ = done_tx.send(());
        });
        if let Some(old) = old {
            let _ = old.thread_set_mask();
        }
        Ok(Console { input: write, done })
    }

    /// Closes our write end and waits up to `timeout` for the pump to have
    /// written everything (it ends once every writer has closed the pipe).
    pub fn finish(self, timeout: std::time::Duration) {
        drop(self.input);
        let _ = self.done.recv_timeout(timeout);
    }
}

/// For the jail's init, before it leaves the host's filesystem: a console
/// pipe into `dir/NAME.log` (or nowhere), onto which the init's own stderr
/// is also sent; returns its write end for exec.start. The init is made
/// non-dumpable first: it keeps the log directory open for rotations, and
/// the jail's root (the same uid) must not reach that handle through
/// `/proc/1/fd` or ptrace, which non-dumpable processes refuse to callers
/// without CAP_SYS_PTRACE.
pub fn init_console(dir: Option<&Path>, name: &str, max: u64) -> Result<OwnedFd, String> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| format!("make the init non-dumpable: {e}"))?;
    let log = dir
        .map(|d| Log::open(d, name, max))
        .transpose()
        .map_err(|e| e.to_string())?;
    let Console { input, .. } = Console::start(name, log).map_err(|e| e.to_string())?;
    nix::unistd::dup2_stderr(&input).map_err(|e| format!("send stderr to the console: {e}"))?;
    Ok(input)
}

fn read_pipe(read: OwnedFd, tx: SyncSender<Vec<u8>>, dropped: &AtomicU64) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = match nix::unistd::read(read.as_fd(), &mut buf) {
            Ok(0) => return,
            Ok(n) => n,
            Err(nix::Error::EINTR) => continue,
            Err(_) => return,
        };
        match tx.try_send(buf[..n].to_vec()) {
            Ok(()) => {}
            Err(TrySendError::Full(chunk)) => {
                dropped.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => return,
        }
    }
}

fn write_log(mut log: Option<Log>, rx: Receiver<Vec<u8>>, dropped: &AtomicU64) {
    while let Ok(chunk) = rx.recv() {
        let Some(log) = log.as_mut() else { continue };
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            let note = format!(
                "\n[jailtx: {lost} bytes of console output dropped: the log could not keep up]\n"
            );
            if log.write(note.as_bytes()).is_err() {
                dropped.fetch_add(lost, Ordering::Relaxed);
            }
        }
        if log.write(&chunk).is_err() {
            // Full disk, or a planted entry at NAME.log: counted, and the
            // next chunk tries again.
            dropped.fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn sizes(dir: &Path) -> Vec<(String, u64)> {
        let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let m = std::fs::symlink_metadata(e.path()).unwrap();
                (e.file_name().to_string_lossy().into_owned(), m.len())
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn rotates_at_the_cap_keeping_two_generations() {
        let d = tempfile::tempdir().unwrap();
        let mut log = Log::open(d.path(), "ns", 1000).unwrap();
        for _ in 0..50 {
            log.write(&[b'x'; 300]).unwrap();
        }
        let got = sizes(d.path());
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["ns.log", "ns.log.1", "ns.log.2"]);
        assert!(got.iter().all(|(_, s)| *s <= 1000), "{got:?}");
        assert_eq!(got[1].1, 1000);
        let m = std::fs::metadata(d.path().join("ns.log")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        assert_eq!(m.uid(), nix::unistd::geteuid().as_raw());
    }

    #[test]
    fn refuses_links_and_fifos_without_touching_their_targets() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("sym.log")).unwrap();
        std::fs::hard_link(&target, d.path().join("hard.log")).unwrap();
        nix::unistd::mkfifo(&d.path().join("fifo.log"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::create_dir(d.path().join("dir.log")).unwrap();
        for name in ["sym", "hard", "fifo", "dir"] {
            let e = Log::open(d.path(), name, 1000).err().unwrap();
            assert!(matches!(e, LogError::Untrusted { .. }), "{name}: {e}");
        }
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn a_link_planted_after_a_rotation_is_not_written_through() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let mut log = Log::open(d.path(), "ns", 10).unwrap();
        log.write(b"0123456789").unwrap();
        std::fs::rename(d.path().join("ns.log"), d.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&target, d.path().join("ns.log")).unwrap();
        log.file = None;
        // The next write rotates the planted link aside, as a link, and
        // starts a new file.
        log.write(b"abc").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
        assert_eq!(
            std::fs::read_to_string(d.path().join("ns.log")).unwrap(),
            "abc"
        );
        let aside = std::fs::symlink_metadata(d.path().join("ns.log.1")).unwrap();
        assert!(aside.file_type().is_symlink());
    }

    /// A disk that does not keep up (here: a writer that has not started)
    /// never blocks the pipe's writer: past the queue, output is dropped
    /// and counted, and the log says how much.
    #[test]
    fn a_slow_log_drops_and_counts_instead_of_blocking_the_jail() {
        let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE_CHUNKS);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&dropped);
        let reader = std::thread::spawn(move || read_pipe(read, tx, &counted));
        let total = CHUNK * QUEUE_CHUNKS * 4;
        let mut w = std::fs::File::from(write);
        w.write_all(&vec![b'x'; total]).unwrap();
        drop(w);
        reader.join().unwrap();
        let queued: usize = rx.try_iter().map(|c| c.len()).sum::<usize>();
        let lost = dropped.load(Ordering::Relaxed);
        assert!(
            lost > 0 && queued <= CHUNK * QUEUE_CHUNKS,
            "{lost} {queued}"
        );
        assert_eq!(queued as u64 + lost, total as u64);

        let d = tempfile::tempdir().unwrap();
        let log = Log::open(d.path(), "ns", 1 << 20).unwrap();
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        tx.send(b"after\n".to_vec()).unwrap();
        drop(tx);
        write_log(Some(log), rx, &dropped);
        let text = std::fs::read_to_string(d.path().join("ns.log")).unwrap();
        assert_eq!(
            text,
            format!(
                "\n[jailtx: {lost} bytes of console output dropped: the log could not keep up]\nafter\n"
            )
        );
    }

    #[test]
    fn the_pump_writes_what_the_pipe_gets() {
        let d = tempfile::tempdir().unwrap();
        let log = Log::open(d.path(), "ns", 1 << 20).unwrap();
        let c = Console::start("ns", Some(log)).unwrap();
        let mut w = std::fs::File::from(c.input.try_clone().unwrap());
        assert!(c.input.as_raw_fd() > 2);
        w.write_all(b"hello\n").unwrap();
        drop(w);
        c.finish(std::time::Duration::from_secs(5));
        let text = std::fs::read_to_string(d.path().join("ns.log")).unwrap();
        assert_eq!(text, "hello\n");
    }
}
