//! Reading and changing entries below a directory jailtx does not trust (`js/NAME`, a world being shaped), never following a symlink or `..` out of it.
//!
//! [`DirFd`] is the one door to such a tree: code that holds a `DirFd`
//! and a name acts on that entry; it never holds the tree's path to join
//! (`DirFd::shown` gives a path for messages only).
//!
//! The root passed in is trusted (host-owned: `js/NAME` itself, which a jail
//! sees as its `/s` mount root and cannot replace); everything below it is
//! not: the jail's root can swap any entry for a symlink at any instant. So
//! every path below the root is resolved one component at a time from a
//! directory descriptor, each component opened with O_NOFOLLOW|O_DIRECTORY
//! (and openat2's RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV where
//! the kernel has it, see [`super::dirfd::open_subdir`]); final components
//! are only ever used by *at calls that do not follow them (fstatat with
//! AT_SYMLINK_NOFOLLOW, openat with O_NOFOLLOW, unlinkat, renameat, linkat,
//! mkdirat, symlinkat). A relative path holding `..`, `.` or a root is refused
//! before anything is opened.
//!
//! Files are created under a temporary name with O_CREAT|O_EXCL (so the inode
//! written is always one made here, never a planted link's target) and
//! published with linkat(2), which fails rather than replace what appeared
//! meanwhile; renames use renameat2(RENAME_NOREPLACE) where Linux has it.

use std::ffi::{CString, OsStr, OsString};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Component, Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, open, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstat, fstatat, mkdirat};
use nix::unistd::{Gid, Uid, UnlinkatFlags, fchown, fsync, linkat, symlinkat, unlinkat};

use super::dirfd::{list, open_subdir, perm};
use super::{FsError, Result};

/// The largest file read into memory; bigger ones are refused (a jail's root
/// could plant a sparse file of any size).
pub const MAX_READ: u64 = 16 << 20;

/// What an entry is, as lstat(2) sees it (a symlink is never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A fifo, socket or device node.
    Special,
}

/// lstat(2) facts of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub kind: Kind,
    /// Permission bits (07777).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub ino: u64,
}

impl Stat {
    fn of(st: &FileStat) -> Stat {
        let fmt = SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits());
        let kind = match fmt {
            SFlag::S_IFREG => Kind::File,
            SFlag::S_IFDIR => Kind::Dir,
            SFlag::S_IFLNK => Kind::Symlink,
            _ => Kind::Special,
        };
        Stat {
            kind,
            // u16 on FreeBSD, u32 on Linux.
            #[allow(clippy::unnecessary_cast)]
            mode: st.st_mode as u32 & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
            size: st.st_size as u64,
            ino: st.st_ino,
        }
    }
}

/// An open directory somewhere below a trusted root; `path` is for messages.
#[derive(Debug)]
pub struct DirFd {
    fd: OwnedFd,
    path: PathBuf,
}

fn refused(path: &Path, why: impl Into<String>) -> FsError {
    FsError::Refused {
        path: path.to_path_buf(),
        why: why.into(),
    }
}

fn cname(path: &Path, name: &OsStr) -> Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| refused(path, "a name with a NUL byte"))
}

/// Checks that `rel` is a plain relative path (names only) and splits it.
pub fn components(rel: &Path) -> Result<Vec<&OsStr>> {
    let mut out = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            _ => return Err(refused(rel, "not a plain relative path (`..`, `.` or `/`)")),
        }
    }
    if out.is_empty() {
        return Err(refused(rel, "an empty relative path"));
    }
    Ok(out)
}

/// Opens the trusted root itself (not following a symlink there either).
pub fn open_root(root: &Path) -> Result<DirFd> {
    let fd = open(
        root,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::Open {
        path: root.to_path_buf(),
        source: e.into(),
    })?;
    Ok(DirFd {
        fd,
        path: root.to_path_buf(),
    })
}

impl DirFd {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The subdirectory `name`; `None` when there is no entry of that name.
    /// A symlink, a non-directory or a mount point there is refused.
    pub fn subdir(&self, name: &OsStr) -> Result<Option<DirFd>> {
        let path = self.path.join(name);
        let c = cname(&path, name)?;
        match open_subdir(self.fd.as_fd(), &c, OFlag::O_RDONLY) {
            Ok(fd) => Ok(Some(DirFd { fd, path })),
            Err(Errno::ENOENT) => Ok(None),
            // O_NOFOLLOW|O_DIRECTORY on a symlink answers ELOOP or ENOTDIR
            // depending on the kernel path taken: ask what it is.
            Err(Errno::ELOOP | Errno::ENOTDIR) => match self.stat(name)?.map(|s| s.kind) {
                Some(Kind::Symlink) => Err(refused(&path, "a symlink where a directory belongs")),
                _ => Err(refused(&path, "not a directory")),
            },
            Err(Errno::EXDEV) => Err(refused(&path, "a mount point")),
            Err(e) => Err(FsError::Open {
                path,
                source: e.into(),
            }),
        }
    }

    /// The directory `rel` below this one, component by component.
    pub fn walk(&self, rel: &Path) -> Result<Option<DirFd>> {
        let mut cur: Option<DirFd> = None;
        for name in components(rel)? {
            let next = match &cur {
                None => self.subdir(name)?,
                Some(d) => d.subdir(name)?,
            };
            match next {
                Some(d) => cur = Some(d),
                None => return Ok(None),
            }
        }
        Ok(cur)
    }

    /// lstat of entry `name`; `None` when missing.
    pub fn stat(&self, name: &OsStr) -> Result<Option<Stat>> {
        let path = self.path.join(name);
        let c = cname(&path, name)?;
        match fstatat(&self.fd, c.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(Stat::of(&st))),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(FsError::Stat {
                path,
                source: e.into(),
            }),
        }
    }

    /// The names in this directory, sorted.
    pub fn names(&self) -> Result<Vec<OsString>> {
        let fd = openat(
            &self.fd,
            c".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::Open {
            path: self.path.clone(),
            source: e.into(),
        })?;
        let read = |e: Errno| FsError::ReadDir {
            path: self.path.clone(),
            source: e.into(),
        };
        let mut dir = Dir::from_fd(fd).map_err(read)?;
        let mut out: Vec<OsString> = list(&mut dir)
            .map_err(read)?
            .into_iter()
            .map(|(n, _)| OsString::from_vec(n.into_bytes()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// The contents of regular file `name` and its lstat. A symlink, a
    /// special file or a file above [`MAX_READ`] is refused; opening never
    /// blocks (O_NONBLOCK: a fifo swapped in after a check cannot hang us).
    pub fn read(&self, name: &OsStr) -> Result<(Vec<u8>, Stat)> {
        let path = self.path.join(name);
        let c = cname(&path, name)?;
        let fd = openat(
            &self.fd,
            c.as_c_str(),
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| match e {
            Errno::ELOOP => refused(&path, "a symlink"),
            e => FsError::Open {
                path: path.clone(),
                source: e.into(),
            },
        })?;
        let st = fstat(&fd).map_err(|e| FsError::Stat {
            path: path.clone(),
            source: e.into(),
        })?;
        let st = Stat::of(&st);
        if st.kind != Kind::File {
            return Err(refused(&path, "not a regular file"));
        }
        if st.size > MAX_READ {
            return Err(refused(&path, format!("larger than {MAX_READ} bytes")));
        }
        let mut file = std::fs::File::from(fd);
        let mut buf = Vec::with_capacity(st.size as usize);
        // Read one byte past the limit: a file that grew after fstat is refused too.
        (&mut file)
            .take(MAX_READ + 1)
            .read_to_end(&mut buf)
            .map_err(|source| FsError::Open {
                path: path.clone(),
                source,
            })?;
        if buf.len() as u64 > MAX_READ {
            return Err(refused(&path, format!("larger than {MAX_READ} bytes")));
        }
        Ok((buf, st))
    }

    /// The target of symlink `name`, byte for byte.
    pub fn read_link(&self, name: &OsStr) -> Result<PathBuf> {
        let path = self.path.join(name);
        let c = cname(&path, name)?;
        readlinkat(&self.fd, c.as_c_str())
            .map(PathBuf::from)
            .map_err(|e| FsError::ReadLink {
                path,
                source: e.into(),
            })
    }

    /// A second handle on the same directory.
    pub fn try_clone(&self) -> Result<DirFd> {
        let fd = self.fd.try_clone().map_err(|source| FsError::Open {
            path: self.path.clone(),
            source,
        })?;
        Ok(DirFd {
            fd,
            path: self.path.clone(),
        })
    }

    /// Makes this directory's entries durable (fsync of the directory).
    pub fn sync(&self) -> Result<()> {
        super::fsync_with(&self.path, || Ok(fsync(&self.fd)?))
    }

    /// The path of entry `name`, for messages only: every effect goes
    /// through this handle, never through the path.
    pub fn shown(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// The subdirectory `name`, made (with `mode`, durably) when missing;
    /// an existing directory is taken as it is. A symlink or anything else
    /// there is refused, as by [`DirFd::subdir`].
    pub fn make_dir(&self, name: &OsStr, mode: u32) -> Result<DirFd> {
        if let Some(d) = self.subdir(name)? {
            return Ok(d);
        }
        let path = self.path.join(name);
        let c = cname(&path, name)?;
        match mkdirat(&self.fd, c.as_c_str(), Mode::from_bits_truncate(0o700)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(e) => {
                return Err(FsError::Mkdir {
                    path,
                    source: e.into(),
                });
            }
        }
        let made = self
            .subdir(name)?
            .ok_or_else(|| refused(&path, "vanished after mkdir"))?;
        super::durable::chmod_durable(&made.fd, &path, mode)?;
        self.sync()?;
        Ok(made)
    }

    /// Creates symlink `name` -> `target` (stored as is, never resolved),
    /// durably; fails with `InTheWay` when `name` exists.
    pub fn make_symlink(&self, name: &OsStr, target: &Path) -> Result<()> {
        let path = self.path.join(name);
        let c = cname(&path, name)?;
        symlinkat(target, &self.fd, c.as_c_str()).map_err(|e| match e {
            Errno::EEXIST => FsError::InTheWay {
                path: path.clone(),
                what: format!("is in the way of the symlink to {}", target.display()),
            },
            e => FsError::Symlink {
                target: target.to_path_buf(),
                link: path.clone(),
                source: e.into(),
            },
        })?;
        self.sync()
    }

    /// Moves entry `name` to `to_name` in directory `to`, never replacing
    /// anything there, and makes both directories durable.
    pub fn move_to(&self, name: &OsStr, to: &DirFd, to_name: &OsStr) -> Result<()> {
        rename_noreplace(self, name, to, to_name)?;
        to.sync()?;
        self.sync()
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &OsStr) -> Result<()> {
        let path = self.path.join(name);
        let c = cname(&path, name)?;
        unlinkat(&self.fd, c.as_c_str(), UnlinkatFlags::RemoveDir).map_err(|e| {
            FsError::RemoveDir {
                path,
                source: e.into(),
            }
        })?;
        self.sync()
    }

    /// Removes entry `name` and everything below it without following any
    /// symlink (a symlink is removed as a link); missing is `Ok(0)`.
    pub fn remove_tree(&self, name: &OsStr) -> Result<u64> {
        let path = self.path.join(name);
        let c = cname(&path, name)?;
        super::remove::remove_tree_at(self.fd.as_fd(), &self.path, &c)
    }

    /// Copies entry `name` (a tree, file or symlink; never followed) to
    /// `to_name` in directory `to`, which must not exist. Not synced: the
    /// caller makes the copy durable (see [`super::sync_tree`]).
    pub fn copy_to(&self, name: &OsStr, to: &DirFd, to_name: &OsStr) -> Result<()> {
        let c = cname(&self.path.join(name), name)?;
        let ct = cname(&to.path.join(to_name), to_name)?;
        super::copy::copy_tree_at(
            self.fd.as_fd(),
            &self.path,
            &c,
            to.fd.as_fd(),
            &to.path,
            &ct,
        )
        .map(drop)
    }

    /// Makes the tree at entry `name` durable, as [`super::sync_tree`] does
    /// (Linux: one syncfs through this handle), then this directory.
    pub fn sync_tree(&self, name: &OsStr) -> Result<()> {
        #[cfg(target_os = "linux")]
        {
            let _ = name;
            if let Some(source) = super::injected_sync_error() {
                return Err(FsError::SyncFs {
                    path: self.path.clone(),
                    source,
                });
            }
            nix::unistd::syncfs(&self.fd).map_err(|e| FsError::SyncFs {
                path: self.path.clone(),
                source: e.into(),
            })?;
        }
        #[cfg(not(target_os = "linux"))]
        super::durable::fsync_tree(&self.path.join(name))?;
        self.sync()
    }

    /// Writes regular file `name` with `contents` and `mode` (root-owned),
    /// atomically and durably: a temporary made with O_EXCL, fsynced, then
    /// renamed over `name`. Whatever non-directory stood at `name` (a
    /// symlink included) is replaced as an entry, never written through.
    pub fn replace_file(&self, name: &OsStr, contents: &[u8], mode: u32) -> Result<()> {
        let path = self.path.join(name);
        let tmp = temp_name(name);
        let (fd, tmp_path, ctmp) = self.create_temp(&tmp)?;
        let result = fill(fd, &tmp_path, contents, mode, 0, 0).and_then(|()| {
            let c = cname(&path, name)?;
            nix::fcntl::renameat(&self.fd, ctmp.as_c_str(), &self.fd, c.as_c_str()).map_err(|e| {
                FsError::Rename {
                    from: tmp_path.clone(),
                    to: path.clone(),
                    source: e.into(),
                }
            })
        });
        if result.is_err() {
            self.unlink(&tmp)?;
        }
        result?;
        self.sync()
    }

    /// Creates the temporary `tmp` (removing a leftover of a run that died
    /// first) with O_CREAT|O_EXCL|O_NOFOLLOW, mode 0600: the inode written
    /// is always one made here, never a planted link's target.
    fn create_temp(&self, tmp: &OsStr) -> Result<(OwnedFd, PathBuf, CString)> {
        let tmp_path = self.path.join(tmp);
        self.unlink(tmp)?;
        let ctmp = cname(&tmp_path, tmp)?;
        let fd = openat(
            &self.fd,
            ctmp.as_c_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| FsError::Open {
            path: tmp_path.clone(),
            source: e.into(),
        })?;
        Ok((fd, tmp_path, ctmp))
    }

    fn unlink(&self, name: &OsStr) -> Result<bool> {
        let path = self.path.join(name);
        let c = cname(&path, name)?;
        match unlinkat(&self.fd, c.as_c_str(), UnlinkatFlags::NoRemoveDir) {
            Ok(()) => Ok(true),
            Err(Errno::ENOENT) => Ok(false),
            Err(e) => Err(FsError::Unlink {
                path,
                source: e.into(),
            }),
        }
    }
}

/// The directory holding `root/rel` and the final name; `None` when a
/// directory on the way is missing.
fn parent(root: &Path, rel: &Path) -> Result<(Option<DirFd>, OsString)> {
    let parts = components(rel)?;
    let (name, dirs) = parts.split_last().ok_or_else(|| refused(rel, "empty"))?;
    let top = open_root(root)?;
    if dirs.is_empty() {
        return Ok((Some(top), name.to_os_string()));
    }
    let dir: PathBuf = dirs.iter().collect();
    Ok((top.walk(&dir)?, name.to_os_string()))
}

fn temp_name(name: &OsStr) -> OsString {
    let mut t = OsString::from(".");
    t.push(name);
    t.push(".jailtx-tmp");
    t
}

/// Whether `dir/name` is a regular file holding exactly `contents`.
fn holds(dir: &DirFd, name: &OsStr, contents: &[u8]) -> Result<bool> {
    match dir.stat(name)? {
        Some(st) if st.kind == Kind::File && st.size == contents.len() as u64 => {
            Ok(dir.read(name)?.0 == contents)
        }
        _ => Ok(false),
    }
}

/// Creates `root/rel` with `contents`, `mode` and owner, atomically: a
/// temporary made with O_EXCL, fsynced, then linked to the name (which fails
/// rather than replace anything) and unlinked. Idempotent: a file already
/// holding exactly `contents` is taken as this step's earlier work; anything
/// else in the way is an error, never overwritten.
pub fn write_new(
    root: &Path,
    rel: &Path,
    contents: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let (dir, name) = parent(root, rel)?;
    let dir = dir.ok_or_else(|| refused(&root.join(rel), "its directory is missing"))?;
    let path = dir.path.join(&name);
    let tmp = temp_name(&name);
    if dir.stat(&name)?.is_some() {
        if holds(&dir, &name, contents)? {
            // Published by an earlier run that may have died before
            // removing its temporary.
            dir.unlink(&tmp)?;
            return dir.sync();
        }
        return Err(FsError::InTheWay {
            path,
            what: "exists and is not the file this step writes".into(),
        });
    }
    let (fd, tmp_path, ctmp) = dir.create_temp(&tmp)?;
    let result = fill(fd, &tmp_path, contents, mode, uid, gid).and_then(|()| {
        let cname_ = cname(&path, &name)?;
        linkat(
            &dir.fd,
            ctmp.as_c_str(),
            &dir.fd,
            cname_.as_c_str(),
            AtFlags::empty(),
        )
        .map_err(|e| match e {
            Errno::EEXIST => FsError::InTheWay {
                path: path.clone(),
                what: "appeared while it was being written".into(),
            },
            e => FsError::Link {
                from: tmp_path.clone(),
                to: path.clone(),
                source: e.into(),
            },
        })
    });
    dir.unlink(&tmp)?;
    result?;
    dir.sync()
}

fn fill(fd: OwnedFd, path: &Path, contents: &[u8], mode: u32, uid: u32, gid: u32) -> Result<()> {
    // chown first: it clears set-id bits, which the chmod then sets.
    fchown(&fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| {
        FsError::Chown {
            path: path.to_path_buf(),
            source: e.into(),
        }
    })?;
    fchmod(&fd, perm(mode)).map_err(|e| FsError::Chmod {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    let mut file = std::fs::File::from(fd);
    file.write_all(contents).map_err(|source| FsError::Write {
        path: path.to_path_buf(),
        source,
    })?;
    super::fsync_with(path, || file.sync_all())
}

/// Undoes [`write_new`]: removes `root/rel` if it still holds `contents`
/// (anything else there is not this step's), and any temporary.
pub fn unwrite_new(root: &Path, rel: &Path, contents: &[u8]) -> Result<()> {
    let (dir, name) = parent(root, rel)?;
    let Some(dir) = dir else { return Ok(()) };
    dir.unlink(&temp_name(&name))?;
    if holds(&dir, &name, contents)? {
        dir.unlink(&name)?;
    }
    dir.sync()
}

/// BLAKE3 (hex) of the contents of regular file `dir/name`.
fn hash_of(dir: &DirFd, name: &OsStr) -> Result<String> {
    Ok(blake3::hash(&dir.read(name)?.0).to_hex().to_string())
}

/// Renames `root/from` to `root/to` (both below `root`) without replacing
/// anything, idempotently: done when only `to` exists. With `expect`, `from`
/// must be a regular file whose BLAKE3 is `expect` — the file the plan was
/// made from; a file changed since is refused, not moved.
pub fn rename(root: &Path, from: &Path, to: &Path, expect: Option<&str>) -> Result<()> {
    let (fdir, fname) = parent(root, from)?;
    let (tdir, tname) = parent(root, to)?;
    let fdir = fdir.ok_or_else(|| refused(&root.join(from), "its directory is missing"))?;
    let tdir = tdir.ok_or_else(|| refused(&root.join(to), "its directory is missing"))?;
    let here = fdir.stat(&fname)?.is_some();
    let there = tdir.stat(&tname)?.is_some();
    match (here, there) {
        (true, false) => {
            if let Some(want) = expect
                && hash_of(&fdir, &fname)? != want
            {
                return Err(FsError::InTheWay {
                    path: fdir.path.join(&fname),
                    what: "changed since the plan was made; run the command again".into(),
                });
            }
            rename_noreplace(&fdir, &fname, &tdir, &tname)?;
            tdir.sync()?;
            fdir.sync()
        }
        (false, true) => {
            tdir.sync()?;
            fdir.sync()
        }
        (true, true) => Err(FsError::InTheWay {
            path: tdir.path.join(&tname),
            what: format!("is in the way of {}", fdir.path.join(&fname).display()),
        }),
        (false, false) => Err(FsError::Vanished {
            from: fdir.path.join(&fname),
            to: tdir.path.join(&tname),
        }),
    }
}

fn rename_noreplace(fdir: &DirFd, fname: &OsStr, tdir: &DirFd, tname: &OsStr) -> Result<()> {
    let from = fdir.path.join(fname);
    let to = tdir.path.join(tname);
    let cf = cname(&from, fname)?;
    let ct = cname(&to, tname)?;
    let err = |e: Errno| FsError::Rename {
        from: from.clone(),
        to: to.clone(),
        source: e.into(),
    };
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{RenameFlags, renameat2};
        match renameat2(
            &fdir.fd,
            cf.as_c_str(),
            &tdir.fd,
            ct.as_c_str(),
            RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => return Ok(()),
            // Filesystems without the flag: fall back to check-then-rename
            // (jailtx holds its lock; only the jail itself could race it).
            Err(Errno::EINVAL) | Err(Errno::ENOSYS) => {}
            Err(Errno::EEXIST) => {
                return Err(FsError::InTheWay {
                    path: to.clone(),
                    what: "appeared while renaming".into(),
                });
            }
            Err(e) => return Err(err(e)),
        }
    }
    if tdir.stat(tname)?.is_some() {
        return Err(FsError::InTheWay {
            path: to,
            what: "appeared while renaming".into(),
        });
    }
    nix::fcntl::renameat(&fdir.fd, cf.as_c_str(), &tdir.fd, ct.as_c_str()).map_err(err)
}

/// Removes file or symlink `root/rel` (never a directory, never what a link
/// points to); missing is success.
pub fn remove_file(root: &Path, rel: &Path) -> Result<()> {
    let (dir, name) = parent(root, rel)?;
    let Some(dir) = dir else { return Ok(()) };
    dir.unlink(&name)?;
    dir.sync()
}

/// Makes directory `root/rel` with `mode` and owner; an existing directory
/// is this step's earlier work.
pub fn make_dir(root: &Path, rel: &Path, mode: u32, uid: u32, gid: u32) -> Result<()> {
    let (dir, name) = parent(root, rel)?;
    let dir = dir.ok_or_else(|| refused(&root.join(rel), "its directory is missing"))?;
    let path = dir.path.join(&name);
    let c = cname(&path, &name)?;
    match mkdirat(&dir.fd, c.as_c_str(), Mode::from_bits_truncate(0o700)) {
        Ok(()) | Err(Errno::EEXIST) => {}
        Err(e) => {
            return Err(FsError::Mkdir {
                path,
                source: e.into(),
            });
        }
    }
    // Opened without following: a symlink planted in the window is refused.
    let made = dir
        .subdir(&name)?
        .ok_or_else(|| refused(&path, "vanished after mkdir"))?;
    fchown(&made.fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid))).map_err(|e| {
        FsError::Chown {
            path: path.clone(),
            source: e.into(),
        }
    })?;
    // The new directory's mode and owner are in its own inode: synced
    // there, then its name in the parent.
    super::durable::chmod_durable(&made.fd, &path, mode)?;
    dir.sync()
}

/// Undoes [`make_dir`]: removes the directory if it is there (it must be
/// empty by then: the steps that filled it were undone first).
pub fn unmake_dir(root: &Path, rel: &Path) -> Result<()> {
    let (dir, name) = parent(root, rel)?;
    let Some(dir) = dir else { return Ok(()) };
    let path = dir.path.join(&name);
    if dir.stat(&name)?.map(|s| s.kind) != Some(Kind::Dir) {
        return Ok(());
    }
    let c = cname(&path, &name)?;
    unlinkat(&dir.fd, c.as_c_str(), UnlinkatFlags::RemoveDir).map_err(|e| FsError::RemoveDir {
        path,
        source: e.into(),
    })?;
    dir.sync()
}

/// Creates symlink `root/rel` -> `target` (stored as is, never resolved);
/// a link with that target already there is this step's earlier work.
pub fn symlink(root: &Path, rel: &Path, target: &Path) -> Result<()> {
    let (dir, name) = parent(root, rel)?;
    let dir = dir.ok_or_else(|| refused(&root.join(rel), "its directory is missing"))?;
    let path = dir.path.join(&name);
    match dir.stat(&name)?.map(|s| s.kind) {
        None => {
            let c = cname(&path, &name)?;
            symlinkat(target, &dir.fd, c.as_c_str()).map_err(|e| FsError::Symlink {
                target: target.to_path_buf(),
                link: path.clone(),
                source: e.into(),
            })?;
        }
        Some(Kind::Symlink) if dir.read_link(&name)? == target => {}
        Some(_) => {
            return Err(FsError::InTheWay {
                path,
                what: format!("exists and is not a symlink to {}", target.display()),
            });
        }
    }
    dir.sync()
}

/// Undoes [`symlink`]: removes the link if it still points at `target`.
pub fn unsymlink(root: &Path, rel: &Path, target: &Path) -> Result<()> {
    let (dir, name) = parent(root, rel)?;
    let Some(dir) = dir else { return Ok(()) };
    if dir.stat(&name)?.map(|s| s.kind) == Some(Kind::Symlink) && dir.read_link(&name)? == target {
        dir.unlink(&name)?;
    }
    dir.sync()
}

/// For `fs::quarantine`, which renames within a directory opened here
/// (never resolving a path the jail controls).
impl AsFd for DirFd {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink as ln;

    use super::*;

    fn tree() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("js");
        let host = d.path().join("host");
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("shadow"), "secret\n").unwrap();
        std::fs::write(root.join("etc/rc.conf"), "a=1\n").unwrap();
        (d, root, host)
    }

    #[test]
    fn reads_never_follow_links() {
        let (_d, root, host) = tree();
        ln(host.join("shadow"), root.join("etc/hosts")).unwrap();
        ln(&host, root.join("etc/linked")).unwrap();
        let top = open_root(&root).unwrap();
        let etc = top.subdir(OsStr::new("etc")).unwrap().unwrap();
        assert_eq!(etc.read(OsStr::new("rc.conf")).unwrap().0, b"a=1\n");
        let e = etc.read(OsStr::new("hosts")).unwrap_err();
        assert!(matches!(e, FsError::Refused { .. }), "{e}");
        let e = etc.subdir(OsStr::new("linked")).unwrap_err();
        assert!(matches!(e, FsError::Refused { .. }), "{e}");
        let e = top.walk(Path::new("etc/linked/x")).unwrap_err();
        assert!(matches!(e, FsError::Refused { .. }), "{e}");
        assert_eq!(
            etc.stat(OsStr::new("hosts")).unwrap().unwrap().kind,
            Kind::Symlink
        );
        assert!(components(Path::new("etc/../x")).is_err());
        assert!(components(Path::new("/etc")).is_err());
    }

    #[test]
    fn writes_through_a_swapped_directory_are_refused() {
        let (_d, root, host) = tree();
        std::fs::rename(root.join("etc"), root.join("etc.real")).unwrap();
        ln(&host, root.join("etc")).unwrap();
        let e = write_new(&root, Path::new("etc/new"), b"x", 0o644, 0, 0).unwrap_err();
        assert!(matches!(e, FsError::Refused { .. }), "{e}");
        let e = rename(&root, Path::new("etc/shadow"), Path::new("etc/s2"), None).unwrap_err();
        assert!(matches!(e, FsError::Refused { .. }), "{e}");
        remove_file(&root, Path::new("etc/shadow")).unwrap_err();
        assert_eq!(std::fs::read(host.join("shadow")).unwrap(), b"secret\n");
        assert_eq!(std::fs::read_dir(&host).unwrap().count(), 1);
    }

    #[test]
    fn write_rename_and_undo_are_idempotent() {
        let (_d, root, _host) = tree();
        let rel = Path::new("etc/rc.conf");
        let aside = Path::new("etc/rc.conf.jailtx-old");
        let want = blake3::hash(b"a=1\n").to_hex().to_string();
        let e = rename(&root, rel, aside, Some("00")).unwrap_err();
        assert!(matches!(e, FsError::InTheWay { .. }), "{e}");
        rename(&root, rel, aside, Some(&want)).unwrap();
        rename(&root, rel, aside, Some(&want)).unwrap();
        write_new(&root, rel, b"a=2\n", 0o640, 0, 0).unwrap();
        write_new(&root, rel, b"a=2\n", 0o640, 0, 0).unwrap();
        let e = write_new(&root, rel, b"other\n", 0o640, 0, 0).unwrap_err();
        assert!(matches!(e, FsError::InTheWay { .. }), "{e}");
        assert_eq!(std::fs::read(root.join(rel)).unwrap(), b"a=2\n");
        unwrite_new(&root, rel, b"a=2\n").unwrap();
        unwrite_new(&root, rel, b"a=2\n").unwrap();
        let (from, to) = (aside, rel);
        rename(&root, from, to, None).unwrap();
        assert_eq!(std::fs::read(root.join(rel)).unwrap(), b"a=1\n");
        make_dir(&root, Path::new("etc/sub/new"), 0o750, 0, 0).unwrap();
        make_dir(&root, Path::new("etc/sub/new"), 0o750, 0, 0).unwrap();
        symlink(&root, Path::new("etc/sub/new/l"), Path::new("../x")).unwrap();
        symlink(&root, Path::new("etc/sub/new/l"), Path::new("../x")).unwrap();
        unsymlink(&root, Path::new("etc/sub/new/l"), Path::new("../x")).unwrap();
        unmake_dir(&root, Path::new("etc/sub/new")).unwrap();
        unmake_dir(&root, Path::new("etc/sub/new")).unwrap();
        assert!(!root.join("etc/sub/new").exists());
        remove_file(&root, rel).unwrap();
        remove_file(&root, rel).unwrap();
        assert!(!root.join(rel).exists());
    }
}
