//! cpdup-style tree copy: every file type, mode, owner, times and in-tree hard link preserved.
//!
//! What an admin expects of `cpdup skel js/NAME`:
//! - symlinks are never followed in the source (the source root included);
//!   a symlink is copied as a symlink with the same target bytes;
//! - mode (setuid, setgid, sticky included), numeric owner and group, atime
//!   and mtime with nanoseconds are kept for every entry, symlinks included;
//! - files hard-linked to each other inside the tree stay hard-linked;
//! - fifos and device nodes are recreated with mknod(2); unix sockets are
//!   skipped and not counted (a socket is only meaningful with its listener);
//! - like `cpdup -x`, another filesystem mounted below the source (a bind mount
//!   of the same filesystem included) is not entered: its mount point is
//!   created as an empty directory carrying the mounted root's metadata;
//! - extended attributes, ACLs and file flags are not copied (nothing in a
//!   FreeBSD world or skel relies on them); holes in sparse files are filled.
//!
//! Nothing is fsynced here: the caller makes the whole tree durable with one
//! [`super::sync_tree`]. On error `dst` is left partly built; the
//! caller's compensation removes it with [`super::remove_tree`].

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, open, openat, readlinkat};
use nix::sys::stat::{
    FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags, fchmod, fchmodat, fstat, fstatat,
    futimens, lstat, mkdirat, mknodat, utimensat,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchown, fchownat, linkat, symlinkat};

use super::dirfd::{c_path, join, list, open_dotdot, open_subdir, parent_of, perm};
use super::{FsError, Result};

/// What [`copy_tree`] created. `hardlinks` counts the extra names of
/// hard-linked entries (the first name counts as a file, symlink or special);
/// `bytes` counts file data copied.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CopyStats {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    pub specials: u64,
    pub bytes: u64,
}

/// Directory descriptors a walk keeps open, at most. Deeper directories get
/// their ancestors' descriptors closed and reopened through `..` on the way
/// back, so any depth copies within the default limit of 1024 descriptors.
const MAX_OPEN_DIRS: usize = 64;

/// Largest single copy_file_range(2) request; the kernel clamps near 2 GiB.
const COPY_CHUNK: usize = 1 << 30;

/// Copies `src` to `dst`, which must not exist (its parent must). See the
/// module documentation for what is preserved.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<CopyStats> {
    let dst_name = dst.file_name().ok_or_else(|| FsError::NoFileName {
        path: dst.to_path_buf(),
    })?;
    let dst_name = c_path(Path::new(dst_name)).map_err(|source| FsError::Open {
        path: dst.to_path_buf(),
        source,
    })?;
    let dst_parent = parent_of(dst);
    let dst_parent_fd = open(
        dst_parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::Open {
        path: dst_parent.to_path_buf(),
        source: e.into(),
    })?;
    match fstatat(
        &dst_parent_fd,
        dst_name.as_c_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Err(Errno::ENOENT) => {}
        Ok(_) => {
            return Err(FsError::DestinationExists {
                path: dst.to_path_buf(),
            });
        }
        Err(e) => {
            return Err(FsError::Stat {
                path: dst.to_path_buf(),
                source: e.into(),
            });
        }
    }
    let st = lstat(src).map_err(|e| FsError::Stat {
        path: src.to_path_buf(),
        source: e.into(),
    })?;

    let mut copier = Copier {
        root_dev: st.st_dev,
        dst_root: (0, 0),
        src_dir: PathBuf::new(),
        dst_dir: dst_parent.to_path_buf(),
        links: HashMap::new(),
        stats: CopyStats::default(),
        noatime: true,
    };
    let src_c = c_path(src).map_err(|source| FsError::Open {
        path: src.to_path_buf(),
        source,
    })?;
    if !is(&st, SFlag::S_IFDIR) {
        // A lone file or symlink: named relative to the cwd, so the *at calls
        // take the whole path as its "name" and src_dir stays empty.
        copier.copy_entry(AT_FDCWD, &src_c, dst_parent_fd.as_fd(), &dst_name, &st)?;
        return Ok(copier.stats);
    }

    // The copy would otherwise list itself while being built, and never end.
    let canonical = |p: &Path| {
        std::fs::canonicalize(p).map_err(|source| FsError::Stat {
            path: p.to_path_buf(),
            source,
        })
    };
    if canonical(dst_parent)?.starts_with(canonical(src)?) {
        return Err(FsError::CopyIntoItself {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
        });
    }

    mkdirat(&dst_parent_fd, dst_name.as_c_str(), Mode::S_IRWXU).map_err(|e| FsError::Mkdir {
        path: dst.to_path_buf(),
        source: e.into(),
    })?;
    copier.stats.dirs += 1;
    copier.src_dir = src.to_path_buf();
    copier.dst_dir = dst.to_path_buf();
    let src_fd = open(
        src,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::Open {
        path: src.to_path_buf(),
        source: e.into(),
    })?;
    let dst_fd = open_new_dir(dst_parent_fd.as_fd(), &dst_name, &|| dst.to_path_buf())?;
    let dst_st = fstat(&dst_fd).map_err(|e| FsError::Stat {
        path: dst.to_path_buf(),
        source: e.into(),
    })?;
    copier.dst_root = (dst_st.st_dev, dst_st.st_ino);
    let root = copier.frame(src_fd, dst_fd, dst_name, st)?;
    copier.walk(root)?;
    Ok(copier.stats)
}

/// Copies entry `src_name` of the open directory `src_parent` to
/// `dst_name` in `dst_parent`, which must not exist: [`copy_tree`] for trees
/// reached through no-follow directory handles (`fs::beneath`), so no path
/// is ever resolved on either side. The `*_path` arguments name the two
/// directories in messages (and for hard links within the copy).
pub(crate) fn copy_tree_at(
    src_parent: BorrowedFd<'_>,
    src_parent_path: &Path,
    src_name: &CStr,
    dst_parent: BorrowedFd<'_>,
    dst_parent_path: &Path,
    dst_name: &CStr,
) -> Result<CopyStats> {
    let src_path = join(src_parent_path, src_name);
    let dst_path = join(dst_parent_path, dst_name);
    match fstatat(dst_parent, dst_name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => {}
        Ok(_) => return Err(FsError::DestinationExists { path: dst_path }),
        Err(e) => {
            return Err(FsError::Stat {
                path: dst_path,
                source: e.into(),
            });
        }
    }
    let st =
        fstatat(src_parent, src_name, AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| FsError::Stat {
            path: src_path.clone(),
            source: e.into(),
        })?;
    let mut copier = Copier {
        root_dev: st.st_dev,
        dst_root: (0, 0),
        src_dir: src_parent_path.to_path_buf(),
        dst_dir: dst_parent_path.to_path_buf(),
        links: HashMap::new(),
        stats: CopyStats::default(),
        noatime: true,
    };
    if !is(&st, SFlag::S_IFDIR) {
        copier.copy_entry(src_parent, src_name, dst_parent, dst_name, &st)?;
        return Ok(copier.stats);
    }
    let src_fd = open_subdir(src_parent, src_name, OFlag::O_RDONLY).map_err(|e| FsError::Open {
        path: src_path.clone(),
        source: e.into(),
    })?;
    mkdirat(dst_parent, dst_name, Mode::S_IRWXU).map_err(|e| FsError::Mkdir {
        path: dst_path.clone(),
        source: e.into(),
    })?;
    copier.stats.dirs += 1;
    let dst_fd = open_new_dir(dst_parent, dst_name, &|| dst_path.clone())?;
    let dst_st = fstat(&dst_fd).map_err(|e| FsError::Stat {
        path: dst_path.clone(),
        source: e.into(),
    })?;
    copier.dst_root = (dst_st.st_dev, dst_st.st_ino);
    copier.src_dir = src_path;
    copier.dst_dir = dst_path;
    let root = copier.frame(src_fd, dst_fd, dst_name.to_owned(), st)?;
    copier.walk(root)?;
    Ok(copier.stats)
}

/// A source directory being copied and its copy.
struct Frame {
    src: Dir,
    dst: OwnedFd,
    /// The entry name, the same on both sides.
    name: CString,
    /// The source directory's lstat: metadata applied to the copy once its
    /// children are in, and identity checked when `src` is reopened.
    stat: FileStat,
    entries: Vec<CString>,
}

/// A frame waiting for its current child; its descriptors may be closed.
struct Parked {
    fds: Option<(Dir, OwnedFd)>,
    name: CString,
    stat: FileStat,
    entries: Vec<CString>,
}

struct Copier {
    root_dev: u64,
    /// (dev, ino) of the copy's root: met again in the source only if the
    /// copy is inside it by a path canonicalize cannot see (a bind mount).
    dst_root: (u64, u64),
    /// Paths of the directory being filled, for messages and hard links only:
    /// every operation goes through descriptors.
    src_dir: PathBuf,
    dst_dir: PathBuf,
    /// (dev, ino) of a source entry with more than one link -> its first copy.
    links: HashMap<(u64, u64), PathBuf>,
    stats: CopyStats,
    /// O_NOATIME keeps reading from touching the source's atimes; it needs
    /// ownership or CAP_FOWNER, so it is dropped after the first EPERM.
    noatime: bool,
}

impl Copier {
    fn frame(&self, src: OwnedFd, dst: OwnedFd, name: CString, stat: FileStat) -> Result<Frame> {
        let mut dir = Dir::from_fd(src).map_err(|e| FsError::ReadDir {
            path: self.src_dir.clone(),
            source: e.into(),
        })?;
        let entries = list(&mut dir)
            .map_err(|e| FsError::ReadDir {
                path: self.src_dir.clone(),
                source: e.into(),
            })?
            .into_iter()
            .map(|(name, _)| name)
            .collect();
        Ok(Frame {
            src: dir,
            dst,
            name,
            stat,
            entries,
        })
    }

    /// Depth-first with an explicit stack: no recursion limit on depth.
    fn walk(&mut self, root: Frame) -> Result<()> {
        let mut cur = root;
        let mut parents: Vec<Parked> = Vec::new();
        loop {
            if let Some(name) = cur.entries.pop() {
                let Some(child) = self.copy_child(&cur, name)? else {
                    continue;
                };
                parents.push(Parked {
                    fds: Some((cur.src, cur.dst)),
                    name: cur.name,
                    stat: cur.stat,
                    entries: cur.entries,
                });
                if parents.len() > MAX_OPEN_DIRS {
                    let idx = parents.len() - 1 - MAX_OPEN_DIRS;
                    parents[idx].fds = None;
                }
                cur = child;
                continue;
            }
            // Last: the children's creation changed the mtime, and a 0555
            // directory must stay writable until they are all in. chown
            // before chmod, since chown may clear setuid/setgid.
            set_meta_fd(cur.dst.as_fd(), &cur.stat, &|| self.dst_dir.clone())?;
            let Some(parent) = parents.pop() else {
                return Ok(());
            };
            let (src, dst) = match parent.fds {
                Some(fds) => fds,
                None => self.reopen_parent(&cur, &parent)?,
            };
            self.src_dir.pop();
            self.dst_dir.pop();
            cur = Frame {
                src,
                dst,
                name: parent.name,
                stat: parent.stat,
                entries: parent.entries,
            };
        }
    }

    fn reopen_parent(&self, cur: &Frame, parent: &Parked) -> Result<(Dir, OwnedFd)> {
        let src_parent = || parent_of(&self.src_dir).to_path_buf();
        let src = open_dotdot(cur.src.as_fd()).map_err(|e| FsError::Open {
            path: src_parent(),
            source: e.into(),
        })?;
        let st = fstat(&src).map_err(|e| FsError::Stat {
            path: src_parent(),
            source: e.into(),
        })?;
        if (st.st_dev, st.st_ino) != (parent.stat.st_dev, parent.stat.st_ino) {
            return Err(FsError::TreeChanged { path: src_parent() });
        }
        let src = Dir::from_fd(src).map_err(|e| FsError::Open {
            path: src_parent(),
            source: e.into(),
        })?;
        // The copy is ours and mode 0700 until finished, so its `..` is not
        // re-verified: nobody else can have moved it.
        let dst = open_dotdot(cur.dst.as_fd()).map_err(|e| FsError::Open {
            path: parent_of(&self.dst_dir).to_path_buf(),
            source: e.into(),
        })?;
        Ok((src, dst))
    }

    /// Copies one entry of `cur`; a directory comes back as the frame to fill next.
    fn copy_child(&mut self, cur: &Frame, name: CString) -> Result<Option<Frame>> {
        let st = fstatat(&cur.src, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| {
            FsError::Stat {
                path: join(&self.src_dir, &name),
                source: e.into(),
            }
        })?;
        if !is(&st, SFlag::S_IFDIR) {
            self.copy_entry(cur.src.as_fd(), &name, cur.dst.as_fd(), &name, &st)?;
            return Ok(None);
        }
        if (st.st_dev, st.st_ino) == self.dst_root {
            return Err(FsError::CopyIntoItself {
                src: join(&self.src_dir, &name),
                dst: self.dst_dir.clone(),
            });
        }
        // Paths are built only for messages: joining one per entry would
        // cost time quadratic in the depth of a deep tree.
        let dst_path = || join(&self.dst_dir, &name);
        // 0700 until its children are in: no one else can enter or race us
        // inside the copy while it is incomplete.
        mkdirat(&cur.dst, name.as_c_str(), Mode::S_IRWXU).map_err(|e| FsError::Mkdir {
            path: dst_path(),
            source: e.into(),
        })?;
        self.stats.dirs += 1;
        let dst = open_new_dir(cur.dst.as_fd(), &name, &dst_path)?;
        let src = if st.st_dev == self.root_dev {
            match open_subdir(cur.src.as_fd(), &name, OFlag::O_RDONLY) {
                Ok(fd) => Some(fd),
                Err(Errno::EXDEV) => None,
                Err(e) => {
                    return Err(FsError::Open {
                        path: join(&self.src_dir, &name),
                        source: e.into(),
                    });
                }
            }
        } else {
            None
        };
        let Some(src) = src else {
            // A mount point: created, not entered.
            set_meta_fd(dst.as_fd(), &st, &dst_path)?;
            return Ok(None);
        };
        let component = OsStr::from_bytes(name.to_bytes());
        self.src_dir.push(component);
        self.dst_dir.push(component);
        self.frame(src, dst, name, st).map(Some)
    }

    /// Copies a non-directory `src_dir/src_name` to `dst_dir/dst_name`.
    fn copy_entry(
        &mut self,
        src_dir: BorrowedFd<'_>,
        src_name: &CStr,
        dst_dir: BorrowedFd<'_>,
        dst_name: &CStr,
        st: &FileStat,
    ) -> Result<()> {
        let key = (st.st_dev, st.st_ino);
        if st.st_nlink > 1
            && let Some(first) = self.links.get(&key)
        {
            // Not AT_SYMLINK_FOLLOW: a hard-linked symlink stays a link to the symlink.
            linkat(
                AT_FDCWD,
                first.as_path(),
                dst_dir,
                dst_name,
                AtFlags::empty(),
            )
            .map_err(|e| FsError::Link {
                from: first.clone(),
                to: join(&self.dst_dir, dst_name),
                source: e.into(),
            })?;
            self.stats.hardlinks += 1;
            return Ok(());
        }
        let dst_path = || join(&self.dst_dir, dst_name);
        let kind = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        match kind {
            SFlag::S_IFREG => {
                self.copy_file(src_dir, src_name, dst_dir, dst_name, st)?;
            }
            SFlag::S_IFLNK => {
                let target = readlinkat(src_dir, src_name).map_err(|e| FsError::ReadLink {
                    path: join(&self.src_dir, src_name),
                    source: e.into(),
                })?;
                symlinkat(target.as_os_str(), dst_dir, dst_name).map_err(|e| FsError::Symlink {
                    target: target.clone().into(),
                    link: dst_path(),
                    source: e.into(),
                })?;
                set_meta_at(dst_dir, dst_name, st, false, &dst_path)?;
                self.stats.symlinks += 1;
            }
            SFlag::S_IFIFO | SFlag::S_IFCHR | SFlag::S_IFBLK => {
                mknodat(
                    dst_dir,
                    dst_name,
                    kind,
                    Mode::S_IRUSR | Mode::S_IWUSR,
                    st.st_rdev,
                )
                .map_err(|e| FsError::Mknod {
                    path: dst_path(),
                    source: e.into(),
                })?;
                set_meta_at(dst_dir, dst_name, st, true, &dst_path)?;
                self.stats.specials += 1;
            }
            // Sockets (and any type unknown to us) are skipped: see the module doc.
            _ => return Ok(()),
        }
        if st.st_nlink > 1 {
            let first = join(&self.dst_dir, dst_name);
            self.links.insert(key, first);
        }
        Ok(())
    }

    fn copy_file(
        &mut self,
        src_dir: BorrowedFd<'_>,
        src_name: &CStr,
        dst_dir: BorrowedFd<'_>,
        dst_name: &CStr,
        st: &FileStat,
    ) -> Result<()> {
        let src_path = || join(&self.src_dir, src_name);
        let dst_path = || join(&self.dst_dir, dst_name);
        let base = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
        let opened = if self.noatime {
            match openat(
                src_dir,
                src_name,
                base | super::dirfd::NOATIME,
                Mode::empty(),
            ) {
                Err(Errno::EPERM) => {
                    self.noatime = false;
                    openat(src_dir, src_name, base, Mode::empty())
                }
                other => other,
            }
        } else {
            openat(src_dir, src_name, base, Mode::empty())
        };
        let src = File::from(opened.map_err(|e| FsError::Open {
            path: src_path(),
            source: e.into(),
        })?);
        // 0600 until the owner and mode are set: a setuid file must never
        // exist with its final mode and a wrong owner.
        let dst = openat(
            dst_dir,
            dst_name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::S_IRUSR | Mode::S_IWUSR,
        )
        .map_err(|e| FsError::Open {
            path: dst_path(),
            source: e.into(),
        })?;
        let dst = File::from(dst);
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let copied = copy_data(&src, &dst, size).map_err(|source| FsError::CopyData {
            from: src_path(),
            to: dst_path(),
            source,
        })?;
        set_meta_fd(dst.as_fd(), st, &dst_path)?;
        self.stats.files += 1;
        self.stats.bytes += copied;
        Ok(())
    }
}

fn is(st: &FileStat, kind: SFlag) -> bool {
    st.st_mode & SFlag::S_IFMT.bits() == kind.bits()
}

fn open_new_dir(
    parent: BorrowedFd<'_>,
    name: &CStr,
    path: &dyn Fn() -> PathBuf,
) -> Result<OwnedFd> {
    openat(
        parent,
        name,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::Open {
        path: path(),
        source: e.into(),
    })
}

/// Copies `size` bytes (the source is a quiescent tree, so its lstat size is
/// the amount to copy; a file that shrank stops at its end). copy_file_range(2)
/// keeps the data in the kernel and lets filesystems that can share extents
/// (XFS, btrfs) clone instead of copying; where it is refused (cross-device on
/// older kernels, some filesystems) std's copy takes over from the current offsets.
fn copy_data(src: &File, dst: &File, size: u64) -> io::Result<u64> {
    let mut copied = 0u64;
    while copied < size {
        let want = usize::try_from(size - copied).map_or(COPY_CHUNK, |n| n.min(COPY_CHUNK));
        // SAFETY: both descriptors are open for the duration of the call (the
        // Files are borrowed), and null offsets tell the kernel to use and
        // advance the file positions, so no memory of ours is written.
        let n = unsafe {
            nix::libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                want,
                0,
            )
        };
        match n {
            0 => break,
            n if n > 0 => copied += n.unsigned_abs() as u64,
            _ => match Errno::last() {
                Errno::EINTR => {}
                Errno::EXDEV | Errno::ENOSYS | Errno::EOPNOTSUPP | Errno::EINVAL if copied == 0 => {
                    return io::copy(&mut &*src, &mut &*dst);
                }
                e => return Err(e.into()),
            },
        }
    }
    Ok(copied)
}

fn times(st: &FileStat) -> (TimeSpec, TimeSpec) {
    (
        TimeSpec::new(st.st_atime, st.st_atime_nsec),
        TimeSpec::new(st.st_mtime, st.st_mtime_nsec),
    )
}

/// Owner, then mode, then times, on an open copy (file or directory).
fn set_meta_fd(fd: BorrowedFd<'_>, st: &FileStat, path: &dyn Fn() -> PathBuf) -> Result<()> {
    fchown(
        fd,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )
    .map_err(|e| FsError::Chown {
        path: path(),
        source: e.into(),
    })?;
    fchmod(fd, perm(st.st_mode)).map_err(|e| FsError::Chmod {
        path: path(),
        source: e.into(),
    })?;
    let (atime, mtime) = times(st);
    futimens(fd, &atime, &mtime).map_err(|e| FsError::SetTimes {
        path: path(),
        source: e.into(),
    })
}

/// Owner, mode (unless a symlink, whose mode Linux ignores) and times of a
/// freshly made node, without following it. The copy's directories are 0700
/// and ours, so the name still denotes the node just made.
fn set_meta_at(
    dir: BorrowedFd<'_>,
    name: &CStr,
    st: &FileStat,
    chmod: bool,
    path: &dyn Fn() -> PathBuf,
) -> Result<()> {
    fchownat(
        dir,
        name,
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|e| FsError::Chown {
        path: path(),
        source: e.into(),
    })?;
    if chmod {
        fchmodat(dir, name, perm(st.st_mode), FchmodatFlags::FollowSymlink).map_err(|e| {
            FsError::Chmod {
                path: path(),
                source: e.into(),
            }
        })?;
    }
    let (atime, mtime) = times(st);
    utimensat(dir, name, &atime, &mtime, UtimensatFlags::NoFollowSymlink).map_err(|e| {
        FsError::SetTimes {
            path: path(),
            source: e.into(),
        }
    })
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{MetadataExt, symlink};

    use super::*;
    use crate::fs::test_support::{
        OLD_MTIME, PRIVATE_MOUNT_NS, assert_same, bind_mount, build_rich_tree, child_dir,
        deep_depth, make_deep, run_child, set_mode, snapshot, stabilize_atimes, walk,
    };

    #[test]
    fn copies_every_kind_with_all_metadata() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("skel");
        let dst = tmp.path().join("copy");
        build_rich_tree(&src);
        let before = snapshot(&src);

        let stats = copy_tree(&src, &dst).expect("copy_tree");

        // The copy reads the source without disturbing it, atimes included.
        assert_same(&before, &snapshot(&src));
        let mut expected = before;
        expected.retain(|_, s| s.kind != "socket");
        let got = snapshot(&dst);
        for (rel, want) in &expected {
            assert_eq!(got.get(rel), Some(want), "entry {rel:?}");
        }
        assert_eq!(
            got.len(),
            expected.len(),
            "no extra entries: {:?}",
            got.keys()
        );

        // Spot checks, so a fixture that silently failed to set something
        // still fails here.
        let meta = |rel: &str| fs::symlink_metadata(dst.join(rel)).expect(rel);
        assert_eq!(meta("bin/su").mode() & 0o7777, 0o4755);
        assert_eq!(meta("var/empty").mode() & 0o7777, 0o555);
        assert!(meta("var/empty/.keep").is_file());
        assert_eq!(meta("tmp").mode() & 0o7777, 0o1777);
        assert_eq!(meta("sgid").mode() & 0o7777, 0o2775);
        assert_eq!(
            fs::read_link(dst.join("dangling")).expect("readlink"),
            Path::new("does/not/exist")
        );
        assert_eq!(
            fs::read_link(dst.join("etc/odd"))
                .expect("readlink")
                .as_os_str()
                .as_bytes(),
            b"\xff\xfe/not utf-8 \x01"
        );
        assert_eq!(
            fs::read(dst.join("etc/su-link")).expect("via link"),
            b"#!/bin/sh\necho su\n"
        );
        let (a, b) = (meta("hard_a"), meta("etc/hard_b"));
        assert_eq!(a.ino(), b.ino(), "hard links share an inode in the copy");
        assert_eq!(a.nlink(), 2);
        assert_ne!(
            a.ino(),
            fs::metadata(src.join("hard_a")).expect("src").ino()
        );
        assert_eq!(kind_of(&meta("fifo")), SFlag::S_IFIFO);
        assert_eq!(kind_of(&meta("dev/null")), SFlag::S_IFCHR);
        assert_eq!(meta("dev/null").rdev(), nix::sys::stat::makedev(1, 3));
        assert!(
            fs::symlink_metadata(dst.join("sock")).is_err(),
            "sockets are skipped"
        );
        for rel in ["owned", "owned-link", "owned-dir"] {
            assert_eq!((meta(rel).uid(), meta(rel).gid()), (1234, 5678), "{rel}");
        }
        assert_eq!((meta("old").mtime(), meta("old").mtime_nsec()), OLD_MTIME);
        assert_eq!(
            (meta("old").atime(), meta("old").atime_nsec()),
            (1_000_000_100, 500)
        );
        assert_eq!(
            (meta("owned-link").mtime(), meta("owned-link").mtime_nsec()),
            OLD_MTIME
        );
        assert_eq!(
            (meta("var/empty").mtime(), meta("var/empty").mtime_nsec()),
            OLD_MTIME
        );
        let leaf: PathBuf = (0..30).map(|i| format!("d{i}")).collect();
        assert_eq!(
            fs::read(dst.join("deep").join(leaf).join("leaf.txt")).expect("leaf"),
            b"bottom\n"
        );

        // Contents, compared after the copy so reading them cannot disturb
        // the atimes compared above.
        for (path, m) in walk(&src) {
            if m.is_file() {
                let rel = path.strip_prefix(&src).expect("under src");
                assert_eq!(
                    fs::read(&path).expect("src"),
                    fs::read(dst.join(rel)).expect("dst")
                );
            }
        }

        let mut seen = std::collections::HashSet::new();
        let bytes = walk(&src)
            .iter()
            .filter(|(_, m)| m.is_file() && seen.insert(m.ino()))
            .map(|(_, m)| m.len())
            .sum();
        assert!(bytes > 3 * 1024 * 1024);
        assert_eq!(
            stats,
            CopyStats {
                files: 8,
                dirs: 40,
                symlinks: 4,
                hardlinks: 1,
                specials: 2,
                bytes,
            }
        );
    }

    fn kind_of(m: &fs::Metadata) -> SFlag {
        SFlag::from_bits_truncate(m.mode() & SFlag::S_IFMT.bits())
    }

    #[test]
    fn existing_destination_is_refused_and_left_alone() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir(&src).expect("mkdir");
        fs::write(src.join("new"), b"new").expect("write");
        let dst = tmp.path().join("dst");
        fs::create_dir(&dst).expect("mkdir");
        fs::write(dst.join("mine"), b"keep me").expect("write");
        set_mode(&dst, 0o751);
        stabilize_atimes(&dst);
        let before = snapshot(&dst);

        let err = copy_tree(&src, &dst).expect_err("dst exists");
        assert!(
            matches!(&err, FsError::DestinationExists { path } if path == &dst),
            "{err}"
        );
        assert!(err.to_string().contains(&*dst.to_string_lossy()), "{err}");
        assert_same(&before, &snapshot(&dst));

        // A dangling symlink is an existing destination too.
        let link = tmp.path().join("link");
        symlink("nowhere", &link).expect("symlink");
        assert!(matches!(
            copy_tree(&src, &link),
            Err(FsError::DestinationExists { .. })
        ));
        assert_eq!(
            fs::read_link(&link).expect("still a link"),
            Path::new("nowhere")
        );
    }

    #[test]
    fn copying_a_directory_into_itself_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir_all(src.join("sub")).expect("mkdir");
        for dst in [
            src.join("copy"),
            src.join("sub/copy"),
            src.join("sub/../copy"),
        ] {
            let err = copy_tree(&src, &dst).expect_err("into itself");
            assert!(matches!(err, FsError::CopyIntoItself { .. }), "{err}");
            assert!(!dst.exists());
        }
        // Reached through a symlink, it is still inside.
        symlink(&src, tmp.path().join("alias")).expect("symlink");
        let err = copy_tree(&tmp.path().join("alias/"), &src.join("copy")).expect_err("alias");
        assert!(matches!(err, FsError::CopyIntoItself { .. }), "{err}");
        // A sibling whose name merely starts the same is fine.
        copy_tree(&src, &tmp.path().join("src2")).expect("sibling");
    }

    #[test]
    fn missing_destination_parent_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        fs::create_dir(&src).expect("mkdir");
        let err = copy_tree(&src, &tmp.path().join("no/such/dst")).expect_err("no parent");
        assert!(
            matches!(&err, FsError::Open { path, .. } if path.ends_with("no/such")),
            "{err}"
        );
    }

    #[test]
    fn symlink_and_file_at_the_source_root_are_copied_as_themselves() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("dir");
        fs::create_dir(&dir).expect("mkdir");
        fs::write(dir.join("inside"), b"x").expect("write");
        let link = tmp.path().join("link");
        symlink(&dir, &link).expect("symlink");

        let stats = copy_tree(&link, &tmp.path().join("link2")).expect("copy link");
        assert_eq!(stats.symlinks, 1);
        assert_eq!((stats.files, stats.dirs), (0, 0));
        assert_eq!(
            fs::read_link(tmp.path().join("link2")).expect("readlink"),
            dir
        );

        let file = dir.join("inside");
        set_mode(&file, 0o4711);
        let stats = copy_tree(&file, &tmp.path().join("file2")).expect("copy file");
        assert_eq!((stats.files, stats.bytes), (1, 1));
        let m = fs::symlink_metadata(tmp.path().join("file2")).expect("lstat");
        assert!(m.is_file());
        assert_eq!(m.mode() & 0o7777, 0o4711);
    }

    #[test]
    fn deep_tree_beyond_the_descriptor_window_keeps_metadata() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        let mut p = src.clone();
        for i in 0..3 * MAX_OPEN_DIRS {
            p.push(format!("{}", i % 10));
        }
        fs::create_dir_all(&p).expect("mkdir");
        fs::write(p.join("f"), b"f").expect("write");
        // Read-only directories all the way down: each must get its mode
        // after its children, including those reached again through `..`.
        for (path, m) in walk(&src).into_iter().rev() {
            if m.is_dir() {
                set_mode(&path, 0o555);
            }
        }
        stabilize_atimes(&src);
        let before = snapshot(&src);
        let dst = tmp.path().join("dst");
        let stats = copy_tree(&src, &dst).expect("copy");
        assert_eq!(stats.dirs, 3 * MAX_OPEN_DIRS as u64 + 1);
        assert_same(&before, &snapshot(&dst));
    }

    #[test]
    fn tree_deeper_than_path_max_is_copied() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let src = tmp.path().join("src");
        // 3 bytes a level: 6300 bytes of path, past PATH_MAX (4096), and more
        // levels than the default limit of 1024 open descriptors.
        make_deep(&src, 2100);
        let dst = tmp.path().join("dst");
        let stats = copy_tree(&src, &dst).expect("copy");
        assert_eq!((stats.dirs, stats.files), (2101, 1));
        assert_eq!(deep_depth(&dst), (2100, true));
        crate::fs::remove_tree(&src).expect("cleanup");
        crate::fs::remove_tree(&dst).expect("cleanup");
    }

    #[test]
    fn mount_points_below_the_source_are_created_not_entered() {
        let tmp = tempfile::tempdir().expect("tempdir");
        run_child(
            PRIVATE_MOUNT_NS,
            "fs::copy::tests::mount_point_child",
            &[("JAILTX_FS_TEST_DIR", tmp.path().as_os_str())],
        );
    }

    #[test]
    #[ignore = "helper: run by mount_points_below_the_source_are_created_not_entered in a private mount namespace"]
    fn mount_point_child() {
        let Some(dir) = child_dir("JAILTX_FS_TEST_DIR") else {
            return;
        };
        let outside = dir.join("outside");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(outside.join("secret"), b"not part of the tree").expect("write");
        let src = dir.join("src");
        fs::create_dir_all(src.join("mnt")).expect("mkdir");
        fs::write(src.join("file"), b"mine").expect("write");
        // The same filesystem: only openat2's RESOLVE_NO_XDEV can tell.
        bind_mount(&outside, &src.join("mnt"));
        set_mode(&src.join("mnt"), 0o711);
        assert!(src.join("mnt/secret").exists(), "mount is live");

        let dst = dir.join("dst");
        let stats = copy_tree(&src, &dst).expect("copy");
        assert_eq!((stats.files, stats.dirs), (1, 2));
        assert_eq!(fs::read(dst.join("file")).expect("file"), b"mine");
        let mnt = fs::symlink_metadata(dst.join("mnt")).expect("mount point copied");
        assert!(mnt.is_dir());
        assert_eq!(mnt.mode() & 0o7777, 0o711);
        assert_eq!(fs::read_dir(dst.join("mnt")).expect("read").count(), 0);
    }
}
