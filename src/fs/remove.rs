//! Symlink-safe tree removal that never leaves the tree, even while a hostile process edits it.
//!
//! The tree may be a jail's read-write part, writable by the jail's root, who
//! can swap a directory for a symlink (to `/`, say) at any instant. So the walk
//! never resolves a path below `path`: every step is relative to a directory
//! descriptor, opened with O_NOFOLLOW|O_DIRECTORY (and openat2's
//! RESOLVE_NO_SYMLINKS|RESOLVE_NO_XDEV where the kernel has it), and unlinkat(2)
//! removes names without following them. A swapped entry is re-examined and
//! removed as what it now is; a symlink is always removed as a link.
//!
//! A mount found inside the tree stops the removal with
//! [`FsError::MountInside`]: its contents belong to someone else (a template,
//! another jail's data). Entries already removed by then stay removed.
//!
//! Out of scope: Linux immutable/append-only attributes (chattr +i); removal
//! of such an entry fails with EPERM and names it.

use std::ffi::{CStr, CString, OsStr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag, open};
use nix::sys::stat::{FchmodatFlags, FileStat, Mode, fchmod, fchmodat, fstat, fstatat};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};

use super::dirfd::{c_path, join, list, open_dotdot, open_subdir, parent_of, perm};
use super::{FsError, Result};

/// See the copy module: the same bound on open directory descriptors, so a
/// hostile tree thousands of levels deep cannot exhaust them.
const MAX_OPEN_DIRS: usize = 64;

/// How often an entry that keeps changing type under us is re-examined before
/// giving up with [`FsError::TreeChanged`].
const MAX_RETRIES: usize = 8;

/// Removes `path` and everything below it; returns how many entries went.
///
/// Only the last component of `path` and what lies below it are treated as
/// untrusted; the directories leading to it are resolved normally. A symlink
/// at `path` is removed as a link. A missing `path` is `Ok(0)`. The removal is
/// durable on return (the parent of `path` is fsynced); entries below are not
/// synced one by one: until that final fsync a crash can bring back part of
/// the tree, and the caller simply removes it again.
pub fn remove_tree(path: &Path) -> Result<u64> {
    let name = path.file_name().ok_or_else(|| FsError::NoFileName {
        path: path.to_path_buf(),
    })?;
    let name = c_path(Path::new(name)).map_err(|source| FsError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let parent = parent_of(path);
    let parent_fd = match open(
        parent,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(0),
        Err(e) => {
            return Err(FsError::Open {
                path: parent.to_path_buf(),
                source: e.into(),
            });
        }
    };
    remove_tree_at(parent_fd.as_fd(), parent, &name)
}

/// [`remove_tree`] of entry `name` of the open directory `parent` (whose
/// path, `parent_path`, is for messages only): for trees reached through
/// no-follow directory handles (`fs::beneath`), where no path is resolved.
/// Missing is `Ok(0)`; durable on return (`parent` is fsynced).
pub(crate) fn remove_tree_at(
    parent: BorrowedFd<'_>,
    parent_path: &Path,
    name: &CStr,
) -> Result<u64> {
    let mut remover = Remover {
        root_dev: 0,
        dir: parent_path.to_path_buf(),
        removed: 0,
    };
    let root = match fstatat(parent, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => {
            remover.root_dev = st.st_dev;
            remover.remove_entry(parent, name.to_owned(), st_type(&st))?
        }
        Err(Errno::ENOENT) => return Ok(0),
        Err(e) => {
            return Err(FsError::Stat {
                path: join(parent_path, name),
                source: e.into(),
            });
        }
    };
    if let Some(root) = root {
        remover.walk(parent, root)?;
    }
    // The one sync that matters: once the top name is gone on disk nothing
    // below is reachable, whatever state the unsynced inner removals are in.
    super::fsync_with(parent_path, || Ok(fsync(parent)?))?;
    Ok(remover.removed)
}

/// A directory being emptied.
struct Frame {
    dir: Dir,
    name: CString,
    stat: FileStat,
    entries: Vec<(CString, Option<Type>)>,
}

/// A frame waiting for its current child; its descriptor may be closed.
struct Parked {
    dir: Option<Dir>,
    name: CString,
    stat: FileStat,
    entries: Vec<(CString, Option<Type>)>,
}

struct Remover {
    root_dev: u64,
    /// Path of the directory whose entries are being removed; for messages only.
    dir: PathBuf,
    removed: u64,
}

impl Remover {
    /// Depth-first with an explicit stack; `top_parent` holds the root's name.
    fn walk(&mut self, top_parent: BorrowedFd<'_>, root: Frame) -> Result<()> {
        let mut cur = root;
        let mut parents: Vec<Parked> = Vec::new();
        loop {
            if let Some((name, kind)) = cur.entries.pop() {
                let Some(child) = self.remove_entry(cur.dir.as_fd(), name, kind)? else {
                    continue;
                };
                parents.push(Parked {
                    dir: Some(cur.dir),
                    name: cur.name,
                    stat: cur.stat,
                    entries: cur.entries,
                });
                if parents.len() > MAX_OPEN_DIRS {
                    let idx = parents.len() - 1 - MAX_OPEN_DIRS;
                    parents[idx].dir = None;
                }
                cur = child;
                continue;
            }
            // `cur` is empty: remove it through its parent's descriptor.
            self.dir.pop();
            let Some(parent) = parents.pop() else {
                rmdir(top_parent, &cur.name, &self.dir)?;
                self.removed += 1;
                return Ok(());
            };
            let dir = match parent.dir {
                Some(dir) => dir,
                None => self.reopen_parent(&cur, &parent.stat)?,
            };
            rmdir(dir.as_fd(), &cur.name, &self.dir)?;
            self.removed += 1;
            cur = Frame {
                dir,
                name: parent.name,
                stat: parent.stat,
                entries: parent.entries,
            };
        }
    }

    /// Reopens a parent whose descriptor was closed, through `..` of its
    /// child. If the child was moved meanwhile, `..` is some other directory:
    /// the (dev, ino) check refuses to go on there.
    fn reopen_parent(&self, cur: &Frame, want: &FileStat) -> Result<Dir> {
        let fd = open_dotdot(cur.dir.as_fd()).map_err(|e| FsError::Open {
            path: self.dir.clone(),
            source: e.into(),
        })?;
        let st = fstat(&fd).map_err(|e| FsError::Stat {
            path: self.dir.clone(),
            source: e.into(),
        })?;
        if (st.st_dev, st.st_ino) != (want.st_dev, want.st_ino) {
            return Err(FsError::TreeChanged {
                path: self.dir.clone(),
            });
        }
        Dir::from_fd(fd).map_err(|e| FsError::Open {
            path: self.dir.clone(),
            source: e.into(),
        })
    }

    /// Removes the entry `name` of `dir` if it is not a directory; a directory
    /// comes back as the frame to empty next. `kind` is readdir's guess: the
    /// kernel's answers to unlinkat/openat decide, so a swap between the two
    /// calls is harmless.
    fn remove_entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: CString,
        kind: Option<Type>,
    ) -> Result<Option<Frame>> {
        let path = || join(&self.dir, &name);
        let mut as_dir = kind == Some(Type::Directory);
        for _ in 0..MAX_RETRIES {
            if !as_dir {
                match unlinkat(dir, name.as_c_str(), UnlinkatFlags::NoRemoveDir) {
                    Ok(()) => {
                        self.removed += 1;
                        return Ok(None);
                    }
                    Err(Errno::ENOENT) => return Ok(None),
                    Err(Errno::EISDIR) => as_dir = true,
                    Err(Errno::EBUSY) => return Err(FsError::MountInside { path: path() }),
                    Err(e) => {
                        return Err(FsError::Unlink {
                            path: path(),
                            source: e.into(),
                        });
                    }
                }
                continue;
            }
            match open_subdir(dir, &name, OFlag::O_RDONLY) {
                Ok(fd) => return self.enter(fd, name).map(Some),
                Err(Errno::EXDEV) => return Err(FsError::MountInside { path: path() }),
                // Now a symlink (ELOOP) or a non-directory: unlink it as such.
                Err(Errno::ELOOP | Errno::ENOTDIR) => as_dir = false,
                Err(Errno::ENOENT) => return Ok(None),
                Err(Errno::EACCES) => {
                    let fd = self.open_unreadable(dir, &name)?;
                    return self.enter(fd, name).map(Some);
                }
                Err(e) => {
                    return Err(FsError::Open {
                        path: path(),
                        source: e.into(),
                    });
                }
            }
        }
        Err(FsError::TreeChanged { path: path() })
    }

    /// Checks an opened directory, makes it writable for us, and lists it.
    fn enter(&mut self, fd: OwnedFd, name: CString) -> Result<Frame> {
        // Pushed in place, and cloned only for a message: a fresh path per
        // directory would make a hostile, very deep tree cost quadratic time.
        self.dir.push(OsStr::from_bytes(name.to_bytes()));
        let path = || self.dir.clone();
        let st = fstat(&fd).map_err(|e| FsError::Stat {
            path: path(),
            source: e.into(),
        })?;
        // openat2 already refused mount points; this also covers kernels
        // without it (any mount of another filesystem changes st_dev).
        if st.st_dev != self.root_dev {
            return Err(FsError::MountInside { path: path() });
        }
        if st.st_mode & 0o700 != 0o700 {
            // Emptying needs write and search permission; root has them
            // anyway, an owner gets them from this chmod (on the descriptor,
            // so it cannot land on a swapped-in symlink's target). EPERM
            // (not the owner) is left for the unlinks below to report.
            match fchmod(&fd, perm(st.st_mode | 0o700)) {
                Ok(()) | Err(Errno::EPERM) => {}
                Err(e) => {
                    return Err(FsError::Chmod {
                        path: path(),
                        source: e.into(),
                    });
                }
            }
        }
        let mut dir = Dir::from_fd(fd).map_err(|e| FsError::Open {
            path: path(),
            source: e.into(),
        })?;
        let entries = list(&mut dir).map_err(|e| FsError::ReadDir {
            path: path(),
            source: e.into(),
        })?;
        Ok(Frame {
            dir,
            name,
            stat: st,
            entries,
        })
    }

    /// A directory we may not read (mode 0000, say, as its non-root owner):
    /// pin it with an O_PATH descriptor, chmod it through /proc/self/fd (which
    /// names exactly that inode, never a swapped-in symlink), then reopen it
    /// readable the same way.
    fn open_unreadable(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<OwnedFd> {
        let path = || join(&self.dir, name);
        let pinned = open_subdir(dir, name, OFlag::O_PATH).map_err(|e| match e {
            Errno::EXDEV => FsError::MountInside { path: path() },
            e => FsError::Open {
                path: path(),
                source: e.into(),
            },
        })?;
        let st = fstat(&pinned).map_err(|e| FsError::Stat {
            path: path(),
            source: e.into(),
        })?;
        if st.st_dev != self.root_dev {
            return Err(FsError::MountInside { path: path() });
        }
        let proc_path = PathBuf::from(format!("/proc/self/fd/{}", pinned.as_raw_fd()));
        fchmodat(
            AT_FDCWD,
            &proc_path,
            perm(st.st_mode | 0o700),
            FchmodatFlags::FollowSymlink,
        )
        .map_err(|e| FsError::Chmod {
            path: path(),
            source: e.into(),
        })?;
        open(
            &proc_path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::Open {
            path: path(),
            source: e.into(),
        })
    }
}

/// rmdir of `parent_path/name` through the parent's descriptor.
fn rmdir(parent: BorrowedFd<'_>, name: &CStr, parent_path: &Path) -> Result<()> {
    match unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
        Ok(()) => Ok(()),
        Err(Errno::EBUSY) => Err(FsError::MountInside {
            path: join(parent_path, name),
        }),
        Err(e) => Err(FsError::RemoveDir {
            path: join(parent_path, name),
            source: e.into(),
        }),
    }
}

fn st_type(st: &FileStat) -> Option<Type> {
    if st.st_mode & nix::libc::S_IFMT == nix::libc::S_IFDIR {
        Some(Type::Directory)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;
    use crate::fs::test_support::{
        PRIVATE_MOUNT_NS, bind_mount, build_rich_tree, child_dir, deep_depth, make_deep, run_child,
        set_mode, walk,
    };

    /// A directory outside the tree, with content that must survive.
    fn outside(tmp: &Path) -> PathBuf {
        let out = tmp.join("outside");
        fs::create_dir_all(out.join("sub")).expect("mkdir");
        fs::write(out.join("precious"), b"keep").expect("write");
        fs::write(out.join("sub/also"), b"keep too").expect("write");
        out
    }

    fn assert_outside_intact(out: &Path) {
        assert_eq!(fs::read(out.join("precious")).expect("precious"), b"keep");
        assert_eq!(
            fs::read(out.join("sub/also")).expect("sub/also"),
            b"keep too"
        );
    }

    #[test]
    fn removes_a_tree_of_every_kind() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("js");
        build_rich_tree(&root);
        let entries = walk(&root).len() as u64;
        assert!(entries > 40);
        assert_eq!(remove_tree(&root).expect("remove"), entries);
        assert!(fs::symlink_metadata(&root).is_err(), "tree gone");
        assert_eq!(fs::read_dir(tmp.path()).expect("read").count(), 0);
    }

    #[test]
    fn missing_path_is_zero() {
        let tmp = tempfile::tempdir().expect("tempdir");
        assert_eq!(remove_tree(&tmp.path().join("nope")).expect("missing"), 0);
        assert_eq!(
            remove_tree(&tmp.path().join("no/such/parent")).expect("missing"),
            0
        );
    }

    #[test]
    fn a_path_without_a_final_name_is_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("a");
        fs::create_dir(&dir).expect("mkdir");
        let err = remove_tree(&dir.join("..")).expect_err("no final name");
        assert!(matches!(err, FsError::NoFileName { .. }), "{err}");
        assert!(dir.is_dir());
    }

    #[test]
    fn a_single_file_is_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let file = tmp.path().join("f");
        fs::write(&file, b"x").expect("write");
        assert_eq!(remove_tree(&file).expect("remove"), 1);
        assert!(!file.exists());
    }

    #[test]
    fn symlink_inside_to_an_outside_directory_is_removed_as_a_link() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = outside(tmp.path());
        let root = tmp.path().join("tree");
        fs::create_dir_all(root.join("a/b")).expect("mkdir");
        symlink(&out, root.join("a/b/escape")).expect("symlink");
        symlink("../../../outside", root.join("a/b/relative-escape")).expect("symlink");
        symlink(out.join("sub"), root.join("escape-sub")).expect("symlink");
        assert!(
            root.join("a/b/relative-escape/precious").exists(),
            "links resolve"
        );

        assert_eq!(remove_tree(&root).expect("remove"), 6);
        assert!(!root.exists());
        assert_outside_intact(&out);
        assert_eq!(walk(&out).len(), 4, "nothing removed outside");
    }

    #[test]
    fn top_level_symlink_removes_only_the_link() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let out = outside(tmp.path());
        let link = tmp.path().join("link");
        symlink(&out, &link).expect("symlink");
        assert_eq!(remove_tree(&link).expect("remove"), 1);
        assert!(fs::symlink_metadata(&link).is_err(), "link gone");
        assert_outside_intact(&out);
    }

    #[test]
    fn read_only_and_unreadable_directories_are_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("tree");
        fs::create_dir_all(root.join("ro/locked/inner")).expect("mkdir");
        fs::write(root.join("ro/locked/inner/f"), b"x").expect("write");
        fs::write(root.join("ro/f"), b"x").expect("write");
        set_mode(&root.join("ro/locked/inner"), 0o000);
        set_mode(&root.join("ro/locked"), 0o000);
        set_mode(&root.join("ro"), 0o555);
        set_mode(&root, 0o500);
        assert_eq!(remove_tree(&root).expect("remove"), 6);
        assert!(!root.exists());
    }

    /// The same as above for a non-root owner, who needs the chmods (root's
    /// capabilities bypass them).
    #[test]
    fn read_only_and_unreadable_directories_are_removed_by_their_owner() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("nobody");
        fs::create_dir(&dir).expect("mkdir");
        crate::fs::test_support::lchown(&dir, 65534, 65534);
        // The test binary lives under /work: let nobody reach the tempdir.
        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o711)).expect("chmod");
        run_child(
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--",
            ],
            "fs::remove::tests::non_root_child",
            &[("JAILTX_FS_TEST_DIR", dir.as_os_str())],
        );
        assert_eq!(fs::read_dir(&dir).expect("read").count(), 0);
    }

    #[test]
    #[ignore = "helper: run as nobody by read_only_and_unreadable_directories_are_removed_by_their_owner"]
    fn non_root_child() {
        let Some(dir) = child_dir("JAILTX_FS_TEST_DIR") else {
            return;
        };
        assert!(
            !nix::unistd::Uid::effective().is_root(),
            "must run unprivileged"
        );
        let root = dir.join("tree");
        fs::create_dir_all(root.join("ro/locked/inner")).expect("mkdir");
        fs::write(root.join("ro/locked/inner/f"), b"x").expect("write");
        fs::write(root.join("ro/f"), b"x").expect("write");
        set_mode(&root.join("ro/locked/inner"), 0o000);
        set_mode(&root.join("ro/locked"), 0o000);
        set_mode(&root.join("ro"), 0o555);
        assert!(
            fs::remove_dir_all(&root).is_err(),
            "plain removal must fail here"
        );
        assert_eq!(remove_tree(&root).expect("remove"), 6);
        assert!(!root.exists());
    }

    #[test]
    fn tree_deeper_than_path_max_and_the_descriptor_limit_is_removed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("deep");
        make_deep(&root, 2500);
        assert_eq!(deep_depth(&root), (2500, true));
        assert_eq!(remove_tree(&root).expect("remove"), 2502);
        assert!(!root.exists());
    }

    #[test]
    fn mounts_inside_the_tree_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        run_child(
            PRIVATE_MOUNT_NS,
            "fs::remove::tests::mount_child",
            &[("JAILTX_FS_TEST_DIR", tmp.path().as_os_str())],
        );
        // Outside the namespace nothing was ever mounted: the outside files
        // are plain files here, and must all still be there.
        assert_outside_intact(&tmp.path().join("outside"));
    }

    #[test]
    #[ignore = "helper: run by mounts_inside_the_tree_are_refused in a private mount namespace"]
    fn mount_child() {
        let Some(dir) = child_dir("JAILTX_FS_TEST_DIR") else {
            return;
        };
        let out = outside(&dir);

        // A directory bind mount of the same filesystem, one level down.
        let tree = dir.join("tree");
        fs::create_dir_all(tree.join("s/mnt")).expect("mkdir");
        fs::write(tree.join("s/file"), b"x").expect("write");
        bind_mount(&out, &tree.join("s/mnt"));
        let err = remove_tree(&tree).expect_err("mount inside");
        assert!(
            matches!(&err, FsError::MountInside { path } if path == &tree.join("s/mnt")),
            "{err}"
        );
        assert!(err.to_string().contains("unmount it first"), "{err}");
        assert_outside_intact(&tree.join("s/mnt"));
        assert_outside_intact(&out);

        // The path itself is a mount point.
        let err = remove_tree(&tree.join("s/mnt")).expect_err("mount at top");
        assert!(matches!(err, FsError::MountInside { .. }), "{err}");
        assert_outside_intact(&out);

        // A file bind mount.
        let tree2 = dir.join("tree2");
        fs::create_dir(&tree2).expect("mkdir");
        fs::write(tree2.join("f"), b"").expect("write");
        bind_mount(&out.join("precious"), &tree2.join("f"));
        let err = remove_tree(&tree2).expect_err("file mount inside");
        assert!(
            matches!(&err, FsError::MountInside { path } if path == &tree2.join("f")),
            "{err}"
        );
        assert_outside_intact(&out);
    }
}
