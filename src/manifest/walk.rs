//! The parallel template walk: rayon tasks per directory and per batch of files to hash, never following a symlink or leaving the root's filesystem.
//!
//! Every name is reached through its parent's descriptor (`*at` calls with
//! no-follow flags), so a symlink swapped into the tree while it is walked
//! is never entered: it is recorded as a symlink, or, when it replaced a
//! regular file the walk was about to open first, reported as a change. A directory on another
//! filesystem (a mount point) is recorded with `foreign` set and not
//! entered, like `find -xdev`. Files with several links are hashed once per
//! inode. The result is sorted by path, so callers can merge it with a
//! manifest in one pass.

use std::collections::{HashMap, HashSet};
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat, lstat};

use super::hash;
use super::{Entry, ManifestError};

/// Told how many bytes of file data were hashed, as they are (from any
/// thread); `audit` feeds a progress bar with it.
pub trait Progress: Sync {
    fn add(&self, bytes: u64);
}

/// No progress reporting.
impl Progress for () {
    fn add(&self, _bytes: u64) {}
}

/// What lstat said about a path, in the units the manifest stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// Full st_mode: type bits and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub ino: u64,
    pub dev: u64,
    pub nlink: u64,
    pub rdev: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
}

fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

impl From<&FileStat> for Meta {
    fn from(st: &FileStat) -> Meta {
        // The casts widen platform-sized stat fields into the fixed sizes
        // the manifest stores; none of them loses bits on Linux or FreeBSD.
        #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
        Meta {
            mode: st.st_mode as u32,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size.max(0) as u64,
            ino: st.st_ino as u64,
            dev: st.st_dev as u64,
            nlink: st.st_nlink as u64,
            rdev: st.st_rdev as u64,
            mtime_ns: ns(st.st_mtime as i64, st.st_mtime_nsec as i64),
            ctime_ns: ns(st.st_ctime as i64, st.st_ctime_nsec as i64),
        }
    }
}

impl Meta {
    pub fn file_type(&self) -> SFlag {
        // mode_t is u32 on Linux, u16 on FreeBSD; the type bits fit in both.
        #[allow(clippy::unnecessary_cast)]
        SFlag::from_bits_truncate((self.mode & SFlag::S_IFMT.bits() as u32) as nix::libc::mode_t)
    }
    pub fn is(&self, t: SFlag) -> bool {
        self.file_type() == t
    }
    /// A regular file with setuid or setgid: what an intruder plants.
    pub fn is_setid_file(&self) -> bool {
        self.is(SFlag::S_IFREG) && self.mode & 0o6000 != 0
    }
}

/// The metadata of a queued file not stat'ed yet; never leaves the walk.
const UNSTATED: Meta = Meta {
    mode: 0,
    uid: 0,
    gid: 0,
    size: 0,
    ino: 0,
    dev: 0,
    nlink: 0,
    rdev: 0,
    mtime_ns: 0,
    ctime_ns: 0,
};

/// One path found by the walk.
#[derive(Debug, Clone)]
pub struct Node {
    pub path: Vec<u8>,
    pub meta: Meta,
    /// A symlink's target bytes.
    pub target: Option<Vec<u8>>,
    /// BLAKE3 of a regular file's data, when the caller asked for it.
    pub blake3: Option<[u8; 32]>,
    /// A directory on another filesystem: recorded, not entered.
    pub foreign: bool,
    /// The index of this path in [`Options::entries`], found during the
    /// parallel walk so that an audit's comparison need not look it up.
    pub entry: Option<usize>,
}

/// What to walk and what to hash.
pub struct Options<'a> {
    /// Paths (relative, sorted) left out together with everything below them.
    pub exclude: &'a [Vec<u8>],
    /// A manifest's entries (an audit's; empty for a build), which every
    /// node is matched with by path.
    pub entries: &'a [Entry],
    /// Whether this regular file (path, entry and metadata set) is hashed.
    pub hash: &'a (dyn Fn(&Node) -> bool + Sync),
    /// Open regular files (as the directory entry types them) before any
    /// stat: their metadata then comes from one fstat of the open file,
    /// which saves an lstat by name per file when nearly every file is
    /// hashed (a build, a full audit). Off when few are (a quick audit).
    pub open_first: bool,
    pub progress: &'a dyn Progress,
}

pub struct Walked {
    /// In no particular order; the root (`""`) is among them.
    pub nodes: Vec<Node>,
    pub hashed_files: u64,
    pub hashed_bytes: u64,
}

/// Walks the tree at `root` (a real directory, never a symlink to one).
pub fn walk(root: &Path, opts: &Options<'_>) -> Result<Walked, ManifestError> {
    let st = lstat(root).map_err(|e| match e {
        Errno::ENOENT => ManifestError::NoTemplate {
            path: root.to_owned(),
        },
        e => ManifestError::Stat {
            path: root.to_owned(),
            source: e.into(),
        },
    })?;
    if Meta::from(&st).file_type() != SFlag::S_IFDIR {
        return Err(ManifestError::NotADirectory {
            path: root.to_owned(),
        });
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = open(root, flags, Mode::empty()).map_err(|e| ManifestError::Open {
        path: root.to_owned(),
        source: e.into(),
    })?;
    let meta = Meta::from(&fstat(&fd).map_err(|e| ManifestError::Stat {
        path: root.to_owned(),
        source: e.into(),
    })?);
    let w = Walker {
        root,
        root_dev: meta.dev,
        opts,
        // An audit finds about as many nodes as the manifest has entries:
        // reserved once, the list is never copied to grow (a few MB).
        out: Mutex::new(Vec::with_capacity(opts.entries.len() + 64)),
        error: Mutex::new(None),
        failed: AtomicBool::new(false),
        claimed: Mutex::new(HashSet::new()),
        hashed_files: AtomicU64::new(0),
        hashed_bytes: AtomicU64::new(0),
        noatime: AtomicBool::new(true),
    };
    let top_entry = opts
        .entries
        .first()
        .filter(|e| e.path.is_empty())
        .map(|_| 0);
    let top = Walker::node(Vec::new(), meta, top_entry);
    rayon::scope(|s| w.dir(s, fd, top));
    if let Some(e) = w.error.into_inner().unwrap_or_else(PoisonError::into_inner) {
        return Err(e);
    }
    let mut nodes = w.out.into_inner().unwrap_or_else(PoisonError::into_inner);
    share_hashes(&mut nodes, opts);
    Ok(Walked {
        nodes,
        hashed_files: w.hashed_files.into_inner(),
        hashed_bytes: w.hashed_bytes.into_inner(),
    })
}

/// Gives every wanted hard-linked file the hash its inode got through
/// whichever of its names claimed it.
fn share_hashes(nodes: &mut [Node], opts: &Options<'_>) {
    let by_inode: HashMap<(u64, u64), [u8; 32]> = nodes
        .iter()
        .filter(|n| n.meta.nlink > 1)
        .filter_map(|n| Some(((n.meta.dev, n.meta.ino), n.blake3?)))
        .collect();
    for n in nodes.iter_mut() {
        if n.blake3.is_none() && n.meta.nlink > 1 && n.meta.is(SFlag::S_IFREG) && (opts.hash)(n) {
            n.blake3 = by_inode.get(&(n.meta.dev, n.meta.ino)).copied();
        }
    }
}

/// Stats and hashes again the regular file `node` names under `root`
/// (after the build waited out a timestamp tick, see `settle`). The final
/// component is never followed, and the inode must be the one walked.
pub fn rehash(root: &Path, node: &mut Node) -> Result<(), ManifestError> {
    let path = root.join(OsStr::from_bytes(&node.path));
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NOCTTY
        | OFlag::O_NONBLOCK
        | OFlag::O_CLOEXEC;
    let file = File::from(open(&path, flags, Mode::empty()).map_err(|e| match e {
        Errno::ENOENT | Errno::ELOOP => ManifestError::Changed { path: path.clone() },
        e => ManifestError::Open {
            path: path.clone(),
            source: e.into(),
        },
    })?);
    let st = fstat(&file).map_err(|e| ManifestError::Stat {
        path: path.clone(),
        source: e.into(),
    })?;
    let m = Meta::from(&st);
    if m.ino != node.meta.ino || !m.is(SFlag::S_IFREG) {
        return Err(ManifestError::Changed { path });
    }
    let (digest, _) =
        hash::blake3_of(&file, m.size).map_err(|source| ManifestError::Hash { path, source })?;
    node.meta = m;
    node.blake3 = Some(digest);
    Ok(())
}

/// A hashing task takes files until it holds this many bytes or files
/// (files not yet stat'ed count as nothing towards the bytes).
const BATCH_BYTES: u64 = 1 << 20;
const BATCH_FILES: usize = 64;

/// A regular file waiting in a hashing batch: its name in the batch's
/// directory, and its node with the lstat's metadata, or none yet when the
/// walk opens it first (`Options::open_first`).
struct Queued {
    name: CString,
    node: Node,
    stated: bool,
}

struct Walker<'a> {
    root: &'a Path,
    root_dev: u64,
    opts: &'a Options<'a>,
    out: Mutex<Vec<Node>>,
    error: Mutex<Option<ManifestError>>,
    failed: AtomicBool,
    /// (dev, ino) of multiply-linked files already being hashed.
    claimed: Mutex<HashSet<(u64, u64)>>,
    hashed_files: AtomicU64,
    hashed_bytes: AtomicU64,
    /// O_NOATIME keeps an audit from touching atimes; it needs ownership or
    /// CAP_FOWNER, so it is dropped after the first EPERM.
    noatime: AtomicBool,
}

/// Where the entries below one directory lie in a sorted manifest: every
/// path that starts with `DIR/` (every path but the root's, for the root)
/// sorts into one run, and within it by what follows the prefix, so a
/// child is found by a binary search over that run, comparing names only.
/// No index of all paths is built: the walk needs none, and building one
/// (hashing ~20,000 long paths) would run before the walk on one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Children {
    lo: usize,
    hi: usize,
    /// Bytes of the `DIR/` prefix.
    skip: usize,
}

impl Children {
    /// The run below entry `dir` (none when the directory has no entry).
    fn of(entries: &[Entry], dir: Option<usize>) -> Children {
        let Some(d) = dir else {
            return Children {
                lo: 0,
                hi: 0,
                skip: 0,
            };
        };
        let p = entries[d].path.as_slice();
        if p.is_empty() {
            return Children {
                lo: d + 1,
                hi: entries.len(),
                skip: 0,
            };
        }
        // Paths starting with `p/` are those from `p/` up to, not
        // including, `p0` ('0' is the byte after '/').
        let rest = &entries[d + 1..];
        let lo = rest.partition_point(|e| cmp_with(&e.path, p, b'/').is_lt());
        let hi = lo + rest[lo..].partition_point(|e| cmp_with(&e.path, p, b'0').is_lt());
        Children {
            lo: d + 1 + lo,
            hi: d + 1 + hi,
            skip: p.len() + 1,
        }
    }

    /// The entry of child `name`.
    fn find(&self, entries: &[Entry], name: &[u8]) -> Option<usize> {
        entries[self.lo..self.hi]
            .binary_search_by(|e| e.path[self.skip..].cmp(name))
            .ok()
            .map(|k| self.lo + k)
    }
}

/// `x` compared with the bytes of `p` followed by `c`.
fn cmp_with(x: &[u8], p: &[u8], c: u8) -> std::cmp::Ordering {
    use std::cmp::Ordering;
    let n = p.len().min(x.len());
    match x[..n].cmp(&p[..n]) {
        Ordering::Equal if x.len() <= p.len() => Ordering::Less,
        Ordering::Equal => match x[p.len()].cmp(&c) {
            Ordering::Equal if x.len() > p.len() + 1 => Ordering::Greater,
            o => o,
        },
        o => o,
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn child(parent: &[u8], name: &CStr) -> Vec<u8> {
    let name = name.to_bytes();
    let mut p = Vec::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        p.extend_from_slice(parent);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Opens directory `name` in `parent`: never through a symlink, and EXDEV
/// when it is a mount point where the kernel can tell (openat2 on Linux);
/// elsewhere the caller's st_dev check catches mounts of other filesystems.
fn open_subdir(parent: BorrowedFd<'_>, name: &CStr) -> nix::Result<OwnedFd> {
    crate::fs::dirfd::open_subdir(parent, name, OFlag::O_RDONLY)
}

impl<'a> Walker<'a> {
    fn path(&self, rel: &[u8]) -> PathBuf {
        if rel.is_empty() {
            self.root.to_owned()
        } else {
            self.root.join(OsStr::from_bytes(rel))
        }
    }

    fn fail(&self, e: ManifestError) {
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::Relaxed);
    }

    fn node(path: Vec<u8>, meta: Meta, entry: Option<usize>) -> Node {
        Node {
            entry,
            path,
            meta,
            target: None,
            blake3: None,
            foreign: false,
        }
    }

    /// Records directory `node` (open as `fd`) and walks it.
    fn dir<'s>(&'s self, s: &rayon::Scope<'s>, fd: OwnedFd, node: Node) {
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        if let Err(e) = self.list_dir(s, fd, node) {
            self.fail(e);
        }
    }

    fn list_dir<'s>(
        &'s self,
        s: &rayon::Scope<'s>,
        fd: OwnedFd,
        node: Node,
    ) -> Result<(), ManifestError> {
        let path = &node.path;
        let read_err = |e: Errno| ManifestError::ReadDir {
            path: self.path(path),
            source: e.into(),
        };
        let mut names = Vec::new();
        {
            let dup = fd.try_clone().map_err(|e| ManifestError::ReadDir {
                path: self.path(path),
                source: e,
            })?;
            let mut d = Dir::from_fd(dup).map_err(read_err)?;
            for entry in d.iter() {
                let entry = entry.map_err(read_err)?;
                let name = entry.file_name();
                if name != c"." && name != c".." {
                    // d_type, where the filesystem gives it (else an lstat decides).
                    names.push((name.to_owned(), entry.file_type()));
                }
            }
        }
        let fd = Arc::new(fd);
        let kids = Children::of(self.opts.entries, node.entry);
        let mut local = Vec::with_capacity(names.len() + 1);
        let mut batch = Vec::new();
        let mut batch_bytes = 0;
        for (name, d_type) in names {
            let cpath = child(path, &name);
            if self.opts.exclude.binary_search(&cpath).is_ok() {
                continue;
            }
            let entry = kids.find(self.opts.entries, name.to_bytes());
            if d_type == Some(nix::dir::Type::Directory) {
                // Opened without an lstat first: `subdir` takes the
                // metadata from the open directory, and stats the name
                // only if it is a mount point it does not enter.
                let node = Walker::node(cpath, UNSTATED, entry);
                let fd = Arc::clone(&fd);
                s.spawn(move |s| self.subdir(s, &fd, &name, node));
                continue;
            }
            if d_type == Some(nix::dir::Type::File) && self.opts.open_first {
                let node = Walker::node(cpath, UNSTATED, entry);
                batch.push(Queued {
                    name,
                    node,
                    stated: false,
                });
                if batch.len() >= BATCH_FILES {
                    self.spawn_hashing(s, &fd, std::mem::take(&mut batch));
                    batch_bytes = 0;
                }
                continue;
            }
            let st = match fstatat(&*fd, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Gone since readdir: absent is what the walk saw.
                Err(Errno::ENOENT) => continue,
                Err(e) => {
                    return Err(ManifestError::Stat {
                        path: self.path(&cpath),
                        source: e.into(),
                    });
                }
            };
            let m = Meta::from(&st);
            let mut node = Walker::node(cpath, m, entry);
            match m.file_type() {
                SFlag::S_IFDIR => {
                    if m.dev != self.root_dev {
                        node.foreign = true;
                        local.push(node);
                        continue;
                    }
                    let fd = Arc::clone(&fd);
                    s.spawn(move |s| self.subdir(s, &fd, &name, node));
                }
                SFlag::S_IFREG if (self.opts.hash)(&node) && self.claim(&m) => {
                    batch_bytes += m.size;
                    batch.push(Queued {
                        name,
                        node,
                        stated: true,
                    });
                    // One task per batch of small files (or per large file):
                    // a task per file costs more in rayon wake-ups than
                    // hashing a small file, one per directory balances badly.
                    if batch_bytes >= BATCH_BYTES || batch.len() >= BATCH_FILES {
                        self.spawn_hashing(s, &fd, std::mem::take(&mut batch));
                        batch_bytes = 0;
                    }
                }
                SFlag::S_IFLNK => {
                    let target =
                        readlinkat(&*fd, name.as_c_str()).map_err(|e| ManifestError::ReadLink {
                            path: self.path(&node.path),
                            source: e.into(),
                        })?;
                    node.target = Some(target.as_bytes().to_vec());
                    local.push(node);
                }
                _ => local.push(node),
            }
        }
        if !batch.is_empty() {
            self.spawn_hashing(s, &fd, batch);
        }
        local.push(node);
        lock(&self.out).append(&mut local);
        Ok(())
    }

    /// Hashes the files `batch` names in directory `dir`, as one rayon task.
    fn spawn_hashing<'s>(&'s self, s: &rayon::Scope<'s>, dir: &Arc<OwnedFd>, batch: Vec<Queued>) {
        let dir = Arc::clone(dir);
        s.spawn(move |_| {
            let mut done = Vec::with_capacity(batch.len());
            // Files and bytes hashed, added to the shared counts once per
            // batch: two threads adding per file made its cache line bounce.
            let mut tally = (0, 0);
            for q in batch {
                if self.failed.load(Ordering::Relaxed) {
                    return;
                }
                match self.hash_file(&dir, &q.name, q.node, q.stated, &mut tally) {
                    Ok(Some(node)) => done.push(node),
                    Ok(None) => {}
                    Err(e) => return self.fail(e),
                }
            }
            self.hashed_files.fetch_add(tally.0, Ordering::Relaxed);
            self.hashed_bytes.fetch_add(tally.1, Ordering::Relaxed);
            lock(&self.out).append(&mut done);
        });
    }

    /// Opens and walks a subdirectory found in `parent`, or records it as a
    /// mount point when it is one. `node.meta` is the walk's lstat, or
    /// [`UNSTATED`] when the directory entry typed it a directory.
    fn subdir<'s>(&'s self, s: &rayon::Scope<'s>, parent: &OwnedFd, name: &CString, node: Node) {
        if self.failed.load(Ordering::Relaxed) {
            return;
        }
        match open_subdir(parent.as_fd(), name) {
            // What was opened is a directory (O_DIRECTORY, no symlink
            // followed), and its own metadata is what is recorded.
            Ok(fd) => match fstat(&fd) {
                Ok(st) if Meta::from(&st).dev == self.root_dev => self.dir(
                    s,
                    fd,
                    Node {
                        meta: Meta::from(&st),
                        ..node
                    },
                ),
                Ok(st) => lock(&self.out).push(Node {
                    foreign: true,
                    meta: Meta::from(&st),
                    ..node
                }),
                Err(e) => self.fail(ManifestError::Stat {
                    path: self.path(&node.path),
                    source: e.into(),
                }),
            },
            // A mount point, not entered: recorded with what lstat says
            // of it (the mounted root's metadata, as for any path).
            Err(Errno::EXDEV) => {
                match fstatat(parent, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(st) => lock(&self.out).push(Node {
                        foreign: true,
                        meta: Meta::from(&st),
                        ..node
                    }),
                    Err(Errno::ENOENT) => {}
                    Err(e) => self.fail(ManifestError::Stat {
                        path: self.path(&node.path),
                        source: e.into(),
                    }),
                }
            }
            Err(Errno::ENOENT) => {}
            Err(Errno::ELOOP | Errno::ENOTDIR) => self.fail(ManifestError::Changed {
                path: self.path(&node.path),
            }),
            Err(e) => self.fail(ManifestError::Open {
                path: self.path(&node.path),
                source: e.into(),
            }),
        }
    }

    /// True when this file's data is not already being hashed under another
    /// of its names.
    fn claim(&self, m: &Meta) -> bool {
        m.nlink <= 1 || lock(&self.claimed).insert((m.dev, m.ino))
    }

    /// Opens, checks and hashes one regular file. `stated`: `node.meta` is
    /// the walk's lstat, and the open file must be that inode; otherwise the
    /// directory entry said "regular file" and the fstat here is the only
    /// stat, so the hash and hard-link decisions are taken here.
    fn hash_file(
        &self,
        dir: &OwnedFd,
        name: &CStr,
        mut node: Node,
        stated: bool,
        tally: &mut (u64, u64),
    ) -> Result<Option<Node>, ManifestError> {
        // O_NONBLOCK and O_NOCTTY: if the name now holds a fifo or a
        // device, opening it must neither block nor grab a terminal.
        let base = OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NOCTTY
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let opened = if self.noatime.load(Ordering::Relaxed) {
            match openat(dir, name, base | crate::fs::dirfd::NOATIME, Mode::empty()) {
                Err(Errno::EPERM) => {
                    self.noatime.store(false, Ordering::Relaxed);
                    openat(dir, name, base, Mode::empty())
                }
                other => other,
            }
        } else {
            openat(dir, name, base, Mode::empty())
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(ManifestError::Changed {
                    path: self.path(&node.path),
                });
            }
            Err(e) => {
                return Err(ManifestError::Open {
                    path: self.path(&node.path),
                    source: e.into(),
                });
            }
        };
        let file = File::from(fd);
        let st = fstat(&file).map_err(|e| ManifestError::Stat {
            path: self.path(&node.path),
            source: e.into(),
        })?;
        let m = Meta::from(&st);
        if (stated && m.ino != node.meta.ino) || !m.is(SFlag::S_IFREG) {
            return Err(ManifestError::Changed {
                path: self.path(&node.path),
            });
        }
        // The metadata taken before reading is what the data belongs to: a
        // write during the read changes the ctime again, so the stat cache
        // never vouches for bytes it did not see.
        node.meta = m;
        let wanted = stated || ((self.opts.hash)(&node) && self.claim(&m));
        if !wanted {
            // Not wanted, or its inode is hashed under another name: recorded
            // with the metadata of this one stat.
            return Ok(Some(node));
        }
        let (digest, n) = hash::blake3_of(&file, m.size).map_err(|source| ManifestError::Hash {
            path: self.path(&node.path),
            source,
        })?;
        tally.0 += 1;
        tally.1 += n;
        self.opts.progress.add(n);
        node.blake3 = Some(digest);
        Ok(Some(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn nodes(
        root: &Path,
        entries: &[Entry],
        open_first: bool,
        hash: &(dyn Fn(&Node) -> bool + Sync),
    ) -> (Vec<Node>, u64) {
        let exclude = vec![b"usr/ports".to_vec()];
        let opts = Options {
            exclude: &exclude,
            entries,
            hash,
            open_first,
            progress: &(),
        };
        let w = walk(root, &opts).unwrap();
        let mut n = w.nodes;
        n.sort_by(|a, b| a.path.cmp(&b.path));
        (n, w.hashed_files)
    }

    proptest::proptest! {
        /// A child found through its directory's run is the entry a search
        /// of the whole manifest finds, for names that sort around `/`.
        #[test]
        fn children_find_what_a_full_search_finds(
            paths in proptest::collection::vec(
                proptest::collection::vec(0..5usize, 1..4), 0..24),
        ) {
            const NAMES: [&[u8]; 5] = [b"a", b"a-b", b"a.b", b"a0", b"b"];
            let mut all = std::collections::BTreeSet::new();
            all.insert(Vec::new());
            for p in &paths {
                let mut path = Vec::new();
                for &c in p {
                    if !path.is_empty() {
                        path.push(b'/');
                    }
                    path.extend_from_slice(NAMES[c]);
                    all.insert(path.clone());
                }
            }
            let entries: Vec<Entry> = all
                .into_iter()
                .map(|path| Entry { path, mode: 0o755, uid: 0, gid: 0, kind: super::super::Kind::Dir })
                .collect();
            for (d, dir) in entries.iter().enumerate() {
                let kids = Children::of(&entries, Some(d));
                for name in NAMES {
                    let want = child(&dir.path, &CString::new(name).unwrap());
                    let linear = entries.iter().position(|e| e.path == want);
                    proptest::prop_assert_eq!(kids.find(&entries, name), linear);
                }
            }
            proptest::prop_assert_eq!(Children::of(&entries, None).find(&entries, b"a"), None);
        }
    }

    /// Opening regular files first (one fstat) must find exactly what the
    /// lstat-first walk finds: metadata, hashes, hard links hashed once and
    /// shared, unwanted files recorded unhashed, excluded trees left out.
    #[test]
    fn open_first_walks_exactly_like_lstat_first() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join("bin")).unwrap();
        std::fs::create_dir_all(r.join("usr/ports/x")).unwrap();
        std::fs::write(r.join("usr/ports/x/Makefile"), b"ports").unwrap();
        for (name, size) in [
            ("empty", 0),
            ("small", 100),
            ("mid", 300 << 10),
            ("big", (4 << 20) + 7),
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            std::fs::write(r.join("bin").join(name), data).unwrap();
        }
        std::fs::write(r.join("bin/ln1"), b"linked").unwrap();
        std::fs::hard_link(r.join("bin/ln1"), r.join("bin/ln2")).unwrap();
        symlink("small", r.join("bin/sym")).unwrap();
        nix::unistd::mkfifo(&r.join("bin/fifo"), Mode::S_IRUSR).unwrap();
        std::fs::write(r.join("skipped"), b"not hashed").unwrap();
        // Siblings that sort between `bin` and `bin/...` ('-' and '.' are
        // below '/'), and a file added after the manifest was made.
        std::fs::create_dir_all(r.join("bin-x/y")).unwrap();
        std::fs::write(r.join("bin.d"), b"d").unwrap();
        let m = crate::manifest::build(r, &["usr/ports".into()]).unwrap();
        std::fs::write(r.join("bin/added"), b"new").unwrap();

        let all = |_: &Node| true;
        let some = |n: &Node| n.path != b"skipped";
        for hash in [&all as &(dyn Fn(&Node) -> bool + Sync), &some] {
            let (a, hashed_a) = nodes(r, &m.entries, true, hash);
            let (b, hashed_b) = nodes(r, &m.entries, false, hash);
            // The hard-linked pair's data is read once either way.
            assert_eq!(hashed_a, hashed_b);
            let key = |n: &Node| {
                (
                    n.path.clone(),
                    n.meta,
                    n.target.clone(),
                    n.blake3,
                    n.foreign,
                    n.entry,
                )
            };
            assert_eq!(
                a.iter().map(key).collect::<Vec<_>>(),
                b.iter().map(key).collect::<Vec<_>>()
            );
            assert!(!a.iter().any(|n| n.path.starts_with(b"usr/ports/")));
            for n in &a {
                assert_eq!(n.entry, m.find(&n.path), "{:?}", n.path);
                assert_eq!(n.entry.is_none(), n.path == b"bin/added");
                if n.meta.is(SFlag::S_IFREG) && hash(n) {
                    let data = std::fs::read(r.join(OsStr::from_bytes(&n.path))).unwrap();
                    assert_eq!(
                        n.blake3,
                        Some(*blake3::hash(&data).as_bytes()),
                        "{:?}",
                        n.path
                    );
                } else {
                    assert_eq!(n.blake3, None, "{:?}", n.path);
                }
            }
        }
    }
}
