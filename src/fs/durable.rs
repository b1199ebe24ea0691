//! Durable single-step primitives: each change is on stable storage, name included, when it returns.
//!
//! A new or renamed name lives in its parent directory, so a change to a name
//! is durable only after that directory is fsynced (POSIX promises nothing
//! less, and ext4/XFS really do lose an un-fsynced rename across a crash).
//! Every function here ends with that fsync; an fsync error is returned, never
//! retried: after a failed fsync the kernel may have dropped the dirty pages,
//! so a second fsync "succeeding" proves nothing and the caller must treat the
//! step as failed.

use std::ffi::OsString;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::sys::stat::{Mode, fchmod};
use nix::unistd::{fsync, mkdir};

use super::dirfd::{parent_of, perm};
use super::{FsError, Result};

fn open_dir(dir: &Path) -> Result<OwnedFd> {
    open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::Open {
        path: dir.to_path_buf(),
        source: e.into(),
    })
}

/// Makes the entries of `dir` (creations, renames, unlinks) durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    let fd = open_dir(dir)?;
    super::fsync_with(dir, || Ok(fsync(&fd)?))
}

/// Makes `path`'s directory entry durable by fsyncing the directory holding it.
pub fn fsync_parent(path: &Path) -> Result<()> {
    fsync_dir(parent_of(path))
}

/// rename(2), durable in both directories.
///
/// The destination's directory is synced first: once it is durable the object
/// can be found under its new name, so a crash between the two syncs can at
/// worst leave it reachable under both names (on filesystems that do not
/// journal the rename as one unit), never under neither.
pub fn rename_durable(from: &Path, to: &Path) -> Result<()> {
    fs::rename(from, to).map_err(|source| FsError::Rename {
        from: from.to_path_buf(),
        to: to.to_path_buf(),
        source,
    })?;
    fsync_parent(to)?;
    if parent_of(from) != parent_of(to) {
        fsync_parent(from)?;
    }
    Ok(())
}

/// mkdir(2) with exactly `mode` (setuid/setgid/sticky included, the umask
/// ignored), durable. Fails if `path` exists: callers that must be idempotent
/// check first, so an unexpected directory is never silently adopted.
pub fn create_dir_durable(path: &Path, mode: u32) -> Result<()> {
    // Created owner-only, then widened: the directory is never reachable with
    // more permissions than asked for, whatever the umask.
    mkdir(path, Mode::S_IRWXU).map_err(|e| FsError::Mkdir {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    set_dir_mode_durable(path, mode)
}

/// Gives the directory at `path` exactly `mode`, through a descriptor opened
/// without following a symlink (one swapped in at `path` is refused, never
/// chmodded through), and makes the mode and the name durable: what an
/// interrupted [`create_dir_durable`] needs to be finished.
pub fn set_dir_mode_durable(path: &Path, mode: u32) -> Result<()> {
    let fd = open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::Open {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    chmod_durable(&fd, path, mode)?;
    fsync_parent(path)
}

/// fchmod to exactly `mode`, then fsync: the mode lives in the directory's
/// own inode, which the parent's fsync does not cover.
pub(super) fn chmod_durable(fd: &OwnedFd, path: &Path, mode: u32) -> Result<()> {
    fchmod(fd, perm(mode)).map_err(|e| FsError::Chmod {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    super::fsync_with(path, || Ok(fsync(fd)?))
}

/// `mkdir -p` where every directory created gets exactly `mode` and is made
/// durable parent first, so no created directory can outlive its parent's
/// entry after a crash. Existing directories (or symlinks to them) are left
/// as they are, mode included; an existing non-directory is an error.
pub fn create_dir_all_durable(path: &Path, mode: u32) -> Result<()> {
    let mut missing = Vec::new();
    let mut cur = path;
    loop {
        match fs::metadata(cur) {
            Ok(meta) if meta.is_dir() => break,
            Ok(_) => {
                return Err(FsError::Mkdir {
                    path: cur.to_path_buf(),
                    source: io::ErrorKind::NotADirectory.into(),
                });
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => missing.push(cur),
            Err(source) => {
                return Err(FsError::Stat {
                    path: cur.to_path_buf(),
                    source,
                });
            }
        }
        match cur.parent() {
            Some(p) if !p.as_os_str().is_empty() => cur = p,
            _ => break,
        }
    }
    for dir in missing.into_iter().rev() {
        match create_dir_durable(dir, mode) {
            // Made by someone else meanwhile: fine if it is a directory.
            Err(FsError::Mkdir { source, .. })
                if source.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            other => other?,
        }
    }
    Ok(())
}

/// The temporary [`write_atomic`] writes before renaming over `path`:
/// `.NAME.jailtx-tmp` beside it. Exposed so a rollback can remove a
/// temporary left by a crash. A `path` without a final name yields a name
/// no file can have, so removing it is a harmless no-op.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut tmp_name = OsString::from(".");
    tmp_name.push(path.file_name().unwrap_or_default());
    tmp_name.push(".jailtx-tmp");
    parent_of(path).join(tmp_name)
}

/// Replaces `path` with `contents` and exactly `mode` so that after a crash
/// `path` holds either the old or the new contents, never a mix.
///
/// The temporary is [`temp_path`] (same directory: rename(2) is atomic only
/// within one filesystem). A temporary left by a crash is removed first; one
/// writer per path at a time is assumed (jailtx holds its lock).
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    if path.file_name().is_none() {
        return Err(FsError::NoFileName {
            path: path.to_path_buf(),
        });
    }
    write_atomic_through(path, temp_path(path), contents, mode)
}

/// [`write_atomic`] for a path that several processes may write at once
/// (`audit`s side by side under the shared lock, two `metrics --output`
/// runs): the temporary carries the writer's pid, `.NAME.PID.jailtx-tmp`,
/// so one writer never removes or renames another's half-written file, and
/// `path` still only ever holds one whole version. A temporary a crash left
/// under a pid that is alive again is removed first, as [`write_atomic`]
/// does; others stay until removed by hand (the name says what they are).
pub fn write_atomic_shared(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let Some(name) = path.file_name() else {
        return Err(FsError::NoFileName {
            path: path.to_path_buf(),
        });
    };
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.jailtx-tmp", std::process::id()));
    write_atomic_through(path, parent_of(path).join(tmp_name), contents, mode)
}

fn write_atomic_through(path: &Path, tmp: PathBuf, contents: &[u8], mode: u32) -> Result<()> {
    // Removing (rather than O_TRUNC) also disposes of a stale temporary that
    // is a symlink or has another owner; create_new then guarantees the file
    // we write is one we made.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(FsError::Unlink { path: tmp, source }),
    }
    let result = write_tmp(&tmp, contents, mode).and_then(|()| rename_durable(&tmp, path));
    if result.is_err() {
        // Best effort: the error being returned matters more than this one.
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_tmp(tmp: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(tmp)
        .map_err(|source| FsError::Open {
            path: tmp.to_path_buf(),
            source,
        })?;
    file.write_all(contents).map_err(|source| FsError::Write {
        path: tmp.to_path_buf(),
        source,
    })?;
    // fchmod, not the open mode: the umask would clear bits of that one.
    file.set_permissions(Permissions::from_mode(mode & 0o7777))
        .map_err(|source| FsError::Chmod {
            path: tmp.to_path_buf(),
            source,
        })?;
    // The data must be durable before the rename makes it visible under the
    // real name, or a crash could leave `path` empty.
    super::fsync_with(tmp, || file.sync_all())
}

/// symlink(2), durable. `target` is stored byte for byte, never resolved.
pub fn symlink_durable(target: &Path, link: &Path) -> Result<()> {
    std::os::unix::fs::symlink(target, link).map_err(|source| FsError::Symlink {
        target: target.to_path_buf(),
        link: link.to_path_buf(),
        source,
    })?;
    fsync_parent(link)
}

/// unlink(2) of a file or symlink (never what it points to), durable. A
/// missing `path` is success, so a replayed step is harmless; its directory is
/// still synced, because the unlink may have been done by an earlier attempt
/// whose sync never happened.
pub fn remove_file_durable(path: &Path) -> Result<()> {
    let missing = match fs::remove_file(path) {
        Ok(()) => false,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(source) => {
            return Err(FsError::Unlink {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    match fsync_parent(path) {
        Err(FsError::Open { source, .. })
            if missing && source.kind() == io::ErrorKind::NotFound =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Makes everything written under `tree` (a tree this process built: files,
/// directories, names) durable, and its own name in its parent.
///
/// Linux: one syncfs(2) on the filesystem holding it, far cheaper than an
/// fsync per file after a bulk copy; since Linux 5.8 it also reports
/// writeback errors, which is what makes it usable as a durability point.
/// It is called on the parent, so a `tree` that is a lone symlink is never
/// followed. Elsewhere (FreeBSD has no syncfs, and its sync(2) does not
/// wait for the writes): an fsync of every file and directory of `tree`.
pub fn sync_tree(tree: &Path) -> Result<()> {
    #[cfg(target_os = "linux")]
    {
        sync_filesystem(tree.parent().unwrap_or(Path::new("/")))
    }
    #[cfg(not(target_os = "linux"))]
    {
        fsync_tree(tree)?;
        fsync_parent(tree)
    }
}

/// fsync of every regular file and directory under `tree` (itself included),
/// children before their directory, never following a symlink. The
/// portable, slower form of [`sync_tree`].
#[cfg_attr(target_os = "linux", allow(dead_code))]
pub(crate) fn fsync_tree(tree: &Path) -> Result<()> {
    let meta = fs::symlink_metadata(tree).map_err(|source| FsError::Stat {
        path: tree.to_path_buf(),
        source,
    })?;
    let ft = meta.file_type();
    if !(ft.is_file() || ft.is_dir()) {
        // A symlink, fifo or device: nothing of its own beyond the name.
        return Ok(());
    }
    if ft.is_dir() {
        let entries = fs::read_dir(tree).map_err(|source| FsError::Stat {
            path: tree.to_path_buf(),
            source,
        })?;
        for e in entries {
            let e = e.map_err(|source| FsError::Stat {
                path: tree.to_path_buf(),
                source,
            })?;
            fsync_tree(&e.path())?;
        }
    }
    let fd = open(
        tree,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::Open {
        path: tree.to_path_buf(),
        source: e.into(),
    })?;
    super::fsync_with(tree, || Ok(fsync(&fd)?))
}

/// syncfs(2) on the filesystem holding `path` (see [`sync_tree`]).
#[cfg(target_os = "linux")]
fn sync_filesystem(path: &Path) -> Result<()> {
    // O_NONBLOCK and O_NOCTTY: `path` may be a fifo or a device node, and
    // opening it must neither block nor grab a terminal.
    let fd = open(
        path,
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FsError::Open {
        path: path.to_path_buf(),
        source: e.into(),
    })?;
    if let Some(source) = super::injected_sync_error() {
        return Err(FsError::SyncFs {
            path: path.to_path_buf(),
            source,
        });
    }
    nix::unistd::syncfs(&fd).map_err(|e: nix::errno::Errno| FsError::SyncFs {
        path: path.to_path_buf(),
        source: e.into(),
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, symlink};

    use super::*;
    use crate::fs::test_support::{child_dir, run_child};

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).expect("lstat").mode() & 0o7777
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| {
                e.expect("dirent")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_atomic_replaces_contents_and_leaves_no_temporary() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("jail.conf");
        fs::write(&path, b"old contents, longer than the new ones\n").expect("write");
        write_atomic(&path, b"new\n", 0o640).expect("write_atomic");
        assert_eq!(fs::read(&path).expect("read"), b"new\n");
        assert_eq!(mode_of(&path), 0o640);
        assert_eq!(names(tmp.path()), ["jail.conf"]);

        write_atomic(&path, b"", 0o600).expect("empty");
        assert_eq!(fs::read(&path).expect("read"), b"");
    }

    #[test]
    fn write_atomic_shared_replaces_a_planted_name_and_leaves_others_temporaries() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"host\n").expect("write");
        let path = tmp.path().join("x.prom");
        symlink(&victim, &path).expect("symlink");
        // Another writer's temporary, mid-write: never touched.
        let other = tmp.path().join(".x.prom.1.jailtx-tmp");
        fs::write(&other, b"half").expect("write");
        write_atomic_shared(&path, b"new\n", 0o644).expect("write_atomic_shared");
        assert_eq!(fs::read(&victim).expect("read"), b"host\n");
        assert!(fs::symlink_metadata(&path).expect("lstat").is_file());
        assert_eq!(fs::read(&path).expect("read"), b"new\n");
        assert_eq!(mode_of(&path), 0o644);
        assert_eq!(fs::read(&other).expect("read"), b"half");
        assert_eq!(
            names(tmp.path()),
            [".x.prom.1.jailtx-tmp", "victim", "x.prom"]
        );
        assert!(write_atomic_shared(Path::new("/"), b"", 0o644).is_err());
    }

    #[test]
    fn write_atomic_and_create_dir_ignore_the_umask() {
        let tmp = tempfile::tempdir().expect("tempdir");
        // The umask is per process: a child changes it, never this harness.
        run_child(
            &[],
            "fs::durable::tests::umask_child",
            &[("JAILTX_FS_TEST_DIR", tmp.path().as_os_str())],
        );
        assert_eq!(mode_of(&tmp.path().join("f644")), 0o644);
        assert_eq!(mode_of(&tmp.path().join("f4755")), 0o4755);
        assert_eq!(mode_of(&tmp.path().join("tmp")), 0o1777);
        assert_eq!(mode_of(&tmp.path().join("empty")), 0o555);
        assert_eq!(mode_of(&tmp.path().join("a")), 0o751);
        assert_eq!(mode_of(&tmp.path().join("a/b/c")), 0o751);
    }

    #[test]
    #[ignore = "helper: run by write_atomic_and_create_dir_ignore_the_umask in its own process"]
    fn umask_child() {
        let Some(dir) = child_dir("JAILTX_FS_TEST_DIR") else {
            return;
        };
        nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
        write_atomic(&dir.join("f644"), b"x", 0o644).expect("write_atomic");
        write_atomic(&dir.join("f4755"), b"x", 0o4755).expect("write_atomic");
        create_dir_durable(&dir.join("tmp"), 0o1777).expect("mkdir");
        create_dir_durable(&dir.join("empty"), 0o555).expect("mkdir");
        create_dir_all_durable(&dir.join("a/b/c"), 0o751).expect("mkdir -p");
    }

    #[test]
    fn write_atomic_overwrites_a_stale_temporary() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = tmp.path().join("rc.conf");
        let stale = temp_path(&path);
        assert_eq!(stale, tmp.path().join(".rc.conf.jailtx-tmp"));

        // A half-written leftover, unreadable to boot.
        fs::write(&stale, b"half writ").expect("write");
        fs::set_permissions(&stale, Permissions::from_mode(0o000)).expect("chmod");
        write_atomic(&path, b"whole\n", 0o644).expect("write_atomic");
        assert_eq!(fs::read(&path).expect("read"), b"whole\n");
        assert_eq!(names(tmp.path()), ["rc.conf"]);

        // A leftover that is a symlink: replaced, its target untouched.
        let victim = tmp.path().join("victim");
        fs::write(&victim, b"untouched").expect("write");
        symlink(&victim, &stale).expect("symlink");
        write_atomic(&path, b"again\n", 0o644).expect("write_atomic");
        assert_eq!(fs::read(&path).expect("read"), b"again\n");
        assert_eq!(fs::read(&victim).expect("read"), b"untouched");
        assert_eq!(names(tmp.path()), ["rc.conf", "victim"]);
    }

    #[test]
    fn write_atomic_into_a_missing_directory_fails_cleanly() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let err = write_atomic(&tmp.path().join("no/such/file"), b"x", 0o644).expect_err("no dir");
        assert!(matches!(err, FsError::Open { .. }), "{err}");
        assert!(err.to_string().starts_with("open "), "{err}");
    }

    #[test]
    fn rename_durable_moves_across_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join("a")).expect("mkdir");
        fs::create_dir(tmp.path().join("b")).expect("mkdir");
        let from = tmp.path().join("a/mroot2");
        fs::create_dir(&from).expect("mkdir");
        let to = tmp.path().join("b/mroot");
        rename_durable(&from, &to).expect("rename");
        assert!(to.is_dir());
        assert!(!from.exists());

        let err = rename_durable(&from, &to).expect_err("source gone");
        assert!(
            matches!(&err, FsError::Rename { from: f, to: t, .. } if f == &from && t == &to),
            "{err}"
        );
        assert!(err.to_string().contains(" -> "), "{err}");
    }

    #[test]
    fn create_dir_durable_refuses_an_existing_path() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("d");
        create_dir_durable(&dir, 0o700).expect("mkdir");
        let err = create_dir_durable(&dir, 0o755).expect_err("exists");
        assert!(matches!(err, FsError::Mkdir { .. }), "{err}");
        assert_eq!(mode_of(&dir), 0o700, "existing directory left alone");

        // mkdir -p: existing parts are fine and keep their mode.
        create_dir_all_durable(&dir.join("x/y"), 0o750).expect("mkdir -p");
        create_dir_all_durable(&dir.join("x/y"), 0o750).expect("idempotent");
        assert_eq!(mode_of(&dir), 0o700);
        assert_eq!(mode_of(&dir.join("x")), 0o750);
        fs::write(dir.join("file"), b"").expect("write");
        let err = create_dir_all_durable(&dir.join("file"), 0o750).expect_err("file in the way");
        assert!(matches!(err, FsError::Mkdir { .. }), "{err}");
        let err = create_dir_all_durable(&dir.join("file/z"), 0o750).expect_err("file in the way");
        assert!(matches!(err, FsError::Stat { .. }), "{err}");
    }

    #[test]
    fn symlink_durable_stores_the_target_verbatim() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let link = tmp.path().join("etc");
        symlink_durable(Path::new("s/etc"), &link).expect("symlink");
        assert_eq!(fs::read_link(&link).expect("readlink"), Path::new("s/etc"));
        let err = symlink_durable(Path::new("other"), &link).expect_err("exists");
        assert!(matches!(err, FsError::Symlink { .. }), "{err}");
    }

    #[test]
    fn remove_file_durable_removes_links_not_targets_and_tolerates_missing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = tmp.path().join("target");
        fs::write(&target, b"keep").expect("write");
        let link = tmp.path().join("link");
        symlink(&target, &link).expect("symlink");
        remove_file_durable(&link).expect("remove link");
        assert!(fs::symlink_metadata(&link).is_err());
        assert_eq!(fs::read(&target).expect("read"), b"keep");

        remove_file_durable(&link).expect("missing is fine");
        remove_file_durable(&tmp.path().join("no/such/dir/file")).expect("missing parent too");

        let err = remove_file_durable(tmp.path()).expect_err("a directory");
        assert!(matches!(err, FsError::Unlink { .. }), "{err}");
    }

    #[test]
    fn fsync_tree_syncs_files_and_dirs_and_skips_links_and_fifos() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let t = tmp.path().join("t");
        fs::create_dir_all(t.join("a/b")).expect("mkdir");
        fs::write(t.join("a/b/f"), b"x").expect("write");
        symlink("/nonexistent", t.join("a/dangling")).expect("symlink");
        nix::unistd::mkfifo(&t.join("a/fifo"), Mode::S_IRWXU).expect("mkfifo");
        fsync_tree(&t).expect("a tree with a dangling link and a fifo");
        fsync_tree(&t.join("a/dangling")).expect("a lone link is not followed");
        sync_tree(&t).expect("sync_tree");
        let err = fsync_tree(&t.join("missing")).expect_err("missing");
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn fsync_and_syncfs_report_missing_paths() {
        let tmp = tempfile::tempdir().expect("tempdir");
        fsync_dir(tmp.path()).expect("fsync dir");
        fsync_parent(&tmp.path().join("not-yet")).expect("fsync parent");
        sync_filesystem(tmp.path()).expect("syncfs");
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::S_IRWXU).expect("mkfifo");
        sync_filesystem(&fifo).expect("syncfs through a fifo does not block");

        let missing = tmp.path().join("missing");
        for err in [
            fsync_dir(&missing).expect_err("missing"),
            fsync_parent(&missing.join("x")).expect_err("missing"),
            sync_filesystem(&missing).expect_err("missing"),
        ] {
            assert!(
                matches!(&err, FsError::Open { path, source } if path == &missing
                    && source.kind() == io::ErrorKind::NotFound),
                "{err}"
            );
        }
        let file = tmp.path().join("file");
        fs::write(&file, b"").expect("write");
        assert!(
            matches!(fsync_dir(&file), Err(FsError::Open { .. })),
            "not a directory"
        );
    }
}
