//! Moving aside what a jail's root put in the way of a step inside its own tree, so a resume or an undo there always finishes.
//!
//! A jail's root owns everything below `js/NAME` and can plant anything at
//! any name at any instant: a file, a symlink (to a host file, say), a
//! directory, a fifo. The `*In` actions ([`super::beneath`]) refuse such an
//! obstacle rather than follow or overwrite it, which is right for a fresh
//! run (it rolls back) but wedges a compensation or a resumed step: it would
//! fail the same way forever, and with it `recover`, `recover --rollback`
//! and every mutating command (exit 4). So these wrappers, which the engine
//! runs for every `*In` action, first move the obstacle aside, then act:
//!
//! - the obstacle is renamed, in its own directory, to
//!   `NAME.jailtx-quarantine.STAMP.N` with renameat2(RENAME_NOREPLACE)
//!   between directory handles opened without following links (the name is
//!   never resolved through anything the jail controls, and a name taken
//!   meanwhile makes us pick another rather than replace it);
//! - only entries below the trusted root are ever moved, and a moved entry
//!   is never followed, read, changed or deleted: it stays for the jail's
//!   admin to look at (`docs/etc-merge.md`, "Obstacles");
//! - each move is logged (a tracing warning) and kept in a per-thread list
//!   that the engine drains after each step into the transaction's notes
//!   (`quarantined` in its report, `--json` and the history summary).
//!
//! What counts as an obstacle is decided per action below: something at a
//! name the step owns that is not what the step put or expects there, or a
//! non-directory where a directory on the way belongs (after which the
//! directory is missing, and an undo has nothing left to do there).

use std::cell::RefCell;
use std::ffi::{OsStr, OsString};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;

use super::beneath::{self, DirFd, Kind};
use super::{FsError, Result};

/// The infix of a quarantined entry's name.
pub const QUARANTINE: &str = ".jailtx-quarantine";

/// Names tried before giving up: each try takes a fresh stamp, so only a
/// jail that guesses the clock to the nanosecond can make one fail.
const TRIES: u32 = 16;

/// One entry moved out of the way, both paths as the host sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quarantined {
    pub from: PathBuf,
    pub to: PathBuf,
}

impl std::fmt::Display for Quarantined {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} -> {}", self.from.display(), self.to.display())
    }
}

thread_local! {
    static MOVED: RefCell<Vec<Quarantined>> = const { RefCell::new(Vec::new()) };
}

/// The entries moved aside on this thread since the last call.
pub fn take_moved() -> Vec<Quarantined> {
    MOVED.with(|m| std::mem::take(&mut *m.borrow_mut()))
}

fn quarantine_name(name: &OsStr, stamp: u128, n: u32) -> OsString {
    let mut q = name.to_os_string();
    q.push(format!("{QUARANTINE}.{stamp:x}.{n}"));
    q
}

/// Moves entry `name` of `dir` aside to a fresh quarantine name in the same
/// directory, durably; returns the new path. `Ok(None)` when the entry is
/// gone already (the jail moved it itself).
pub fn move_aside(dir: &DirFd, name: &OsStr) -> Result<Option<PathBuf>> {
    let from = dir.path().join(name);
    for n in 0..TRIES {
        let stamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let q = quarantine_name(name, stamp, n);
        let to = dir.path().join(&q);
        match rename_noreplace(dir, name, &q) {
            Ok(()) => {}
            Err(Errno::EEXIST) => continue,
            Err(Errno::ENOENT) => return Ok(None),
            Err(e) => {
                return Err(FsError::Rename {
                    from,
                    to,
                    source: e.into(),
                });
            }
        }
        super::fsync_with(dir.path(), || Ok(nix::unistd::fsync(dir.as_fd())?))?;
        tracing::warn!(
            from = %from.display(),
            to = %to.display(),
            "moved aside what the jail put in the way; it is kept, never followed"
        );
        MOVED.with(|m| {
            m.borrow_mut().push(Quarantined {
                from: from.clone(),
                to: to.clone(),
            })
        });
        return Ok(Some(to));
    }
    Err(FsError::InTheWay {
        path: from,
        what: format!("no free {QUARANTINE} name to move it aside to after {TRIES} tries"),
    })
}

/// renameat2(RENAME_NOREPLACE) within one directory (on FreeBSD, which has
/// no such flag, a check then a rename). On Linux it never falls back to a
/// plain rename, which would replace: on a filesystem without the flag the
/// move fails and the step with it, as it did before quarantining existed.
fn rename_noreplace(dir: &DirFd, from: &OsStr, to: &OsStr) -> std::result::Result<(), Errno> {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{RenameFlags, renameat2};
        renameat2(
            dir.as_fd(),
            from,
            dir.as_fd(),
            to,
            RenameFlags::RENAME_NOREPLACE,
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        // FreeBSD has no RENAME_NOREPLACE: check, then rename, as
        // fs::beneath does there. Only the jail can race us (jailtx holds
        // its lock), and a lost race replaces an entry of the jail's own
        // making under a name no one else uses, never one of ours.
        use nix::fcntl::AtFlags;
        match nix::sys::stat::fstatat(dir.as_fd(), to, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => return Err(Errno::EEXIST),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        nix::fcntl::renameat(dir.as_fd(), from, dir.as_fd(), to)
    }
}

/// The directory holding `root/rel` and the final name, moving aside each
/// non-directory (symlink, file, special file) that stands where a
/// directory on the way belongs; `None` when a directory on the way is
/// missing (then, or once its impostor is moved aside).
pub fn clear_parent(root: &Path, rel: &Path) -> Result<(Option<DirFd>, OsString)> {
    let parts = beneath::components(rel)?;
    let Some((name, dirs)) = parts.split_last() else {
        return Err(FsError::Refused {
            path: rel.to_path_buf(),
            why: "an empty relative path".into(),
        });
    };
    let mut cur = beneath::open_root(root)?;
    for d in dirs {
        match cur.subdir(d) {
            Ok(Some(next)) => cur = next,
            Ok(None) => return Ok((None, name.to_os_string())),
            Err(e @ FsError::Refused { .. }) => match cur.stat(d)?.map(|s| s.kind) {
                None => return Ok((None, name.to_os_string())),
                // A directory refused for another reason (a mount point):
                // nothing the jail's root may have moved aside for it.
                Some(Kind::Dir) => return Err(e),
                Some(_) => {
                    move_aside(&cur, d)?;
                    return Ok((None, name.to_os_string()));
                }
            },
            Err(e) => return Err(e),
        }
    }
    Ok((Some(cur), name.to_os_string()))
}

fn missing(root: &Path, rel: &Path) -> FsError {
    FsError::Refused {
        path: root.join(rel),
        why: "its directory is missing".into(),
    }
}

/// Whether `dir/name` is a regular file whose BLAKE3 is `hash` (a symlink,
/// a special file or an unreadable size is not: never followed, never read).
fn file_hashing_to(dir: &DirFd, name: &OsStr, hash: &str) -> Result<bool> {
    match dir.stat(name)? {
        Some(st) if st.kind == Kind::File && st.size <= beneath::MAX_READ => match dir.read(name) {
            Ok((bytes, _)) => Ok(blake3::hash(&bytes).to_hex().as_str() == hash),
            Err(FsError::Refused { .. }) => Ok(false),
            Err(e) => Err(e),
        },
        _ => Ok(false),
    }
}

/// Whether `dir/name` is what a step with `expect` moved there: the file
/// the plan read, or (no hash) what plans move without one: a link (the
/// etc-merge moving a jail's symlink aside) or a directory (an upgrade's
/// carry-over tree, e.g. `usr/ports`). A regular file without a hash is
/// never taken for ours: every file a plan moves carries its hash.
fn is_ours(dir: &DirFd, name: &OsStr, expect: Option<&str>) -> Result<bool> {
    match expect {
        Some(hash) => file_hashing_to(dir, name, hash),
        None => Ok(matches!(
            dir.stat(name)?.map(|s| s.kind),
            Some(Kind::Symlink | Kind::Dir)
        )),
    }
}

/// [`beneath::write_new`], moving aside anything at the name that is not
/// the file this step writes.
pub fn write_new(
    root: &Path,
    rel: &Path,
    contents: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let (dir, name) = clear_parent(root, rel)?;
    let dir = dir.ok_or_else(|| missing(root, rel))?;
    if dir.stat(&name)?.is_some() && !file_is(&dir, &name, contents)? {
        move_aside(&dir, &name)?;
    }
    beneath::write_new(root, rel, contents, mode, uid, gid)
}

fn file_is(dir: &DirFd, name: &OsStr, contents: &[u8]) -> Result<bool> {
    file_hashing_to(dir, name, blake3::hash(contents).to_hex().as_str())
}

/// [`beneath::unwrite_new`] past impostor directories on the way (then there
/// is nothing of this step's left to remove).
pub fn unwrite_new(root: &Path, rel: &Path, contents: &[u8]) -> Result<()> {
    match clear_parent(root, rel)? {
        (None, _) => Ok(()),
        (Some(_), _) => beneath::unwrite_new(root, rel, contents),
    }
}

/// [`beneath::rename`] for a resumed or first run: when both names are
/// taken, the one that is not the plan's file is moved aside (`to` holding
/// it means the rename was done and `from` was planted since; `from`
/// holding it means `to` was planted). When neither is, the step is refused
/// as before.
pub fn rename(root: &Path, from: &Path, to: &Path, expect: Option<&str>) -> Result<()> {
    let (fdir, fname) = clear_parent(root, from)?;
    let (tdir, tname) = clear_parent(root, to)?;
    let fdir = fdir.ok_or_else(|| missing(root, from))?;
    let tdir = tdir.ok_or_else(|| missing(root, to))?;
    if fdir.stat(&fname)?.is_some() && tdir.stat(&tname)?.is_some() {
        if is_ours(&tdir, &tname, expect)? {
            move_aside(&fdir, &fname)?;
        } else if is_ours(&fdir, &fname, expect)? {
            move_aside(&tdir, &tname)?;
        }
    }
    beneath::rename(root, from, to, expect)
}

/// Undoes [`rename`]: moves `to` back to `from` if `to` is the plan's file
/// (moving aside whatever took `from` meanwhile). Anything else at `to` is
/// not ours: moved aside, and `from` is left as it is.
pub fn unrename(root: &Path, from: &Path, to: &Path, expect: Option<&str>) -> Result<()> {
    let (Some(fdir), fname) = clear_parent(root, from)? else {
        return Ok(());
    };
    let (Some(tdir), tname) = clear_parent(root, to)? else {
        return Ok(());
    };
    if tdir.stat(&tname)?.is_none() {
        // Never moved (or moved back already): nothing to undo.
        return match beneath::rename(root, to, from, None) {
            Err(FsError::Vanished { .. }) => Ok(()),
            other => other,
        };
    }
    if !is_ours(&tdir, &tname, expect)? {
        move_aside(&tdir, &tname)?;
        return Ok(());
    }
    if fdir.stat(&fname)?.is_some() {
        move_aside(&fdir, &fname)?;
    }
    match beneath::rename(root, to, from, None) {
        Err(FsError::Vanished { .. }) => Ok(()),
        other => other,
    }
}

/// [`beneath::remove_file`] (after the commit: forward only), past impostor
/// directories on the way; a directory at the name is not the file this
/// step removes and is moved aside instead of failing the unlink forever.
pub fn remove_file(root: &Path, rel: &Path) -> Result<()> {
    let (Some(dir), name) = clear_parent(root, rel)? else {
        return Ok(());
    };
    if dir.stat(&name)?.map(|s| s.kind) == Some(Kind::Dir) {
        move_aside(&dir, &name)?;
        return Ok(());
    }
    beneath::remove_file(root, rel)
}

/// [`beneath::make_dir`], moving aside a non-directory at the name.
pub fn make_dir(root: &Path, rel: &Path, mode: u32, uid: u32, gid: u32) -> Result<()> {
    let (dir, name) = clear_parent(root, rel)?;
    let dir = dir.ok_or_else(|| missing(root, rel))?;
    if matches!(dir.stat(&name)?.map(|s| s.kind), Some(k) if k != Kind::Dir) {
        move_aside(&dir, &name)?;
    }
    beneath::make_dir(root, rel, mode, uid, gid)
}

/// [`beneath::unmake_dir`]; a directory the jail filled meanwhile (the
/// step's own entries were undone first) is moved aside whole.
pub fn unmake_dir(root: &Path, rel: &Path) -> Result<()> {
    let (Some(dir), name) = clear_parent(root, rel)? else {
        return Ok(());
    };
    match beneath::unmake_dir(root, rel) {
        Err(FsError::RemoveDir { source, .. })
            if matches!(
                source.raw_os_error().map(Errno::from_raw),
                Some(Errno::ENOTEMPTY | Errno::EEXIST)
            ) =>
        {
            move_aside(&dir, &name)?;
            Ok(())
        }
        other => other,
    }
}

/// [`beneath::symlink`], moving aside anything at the name that is not
/// the link this step makes.
pub fn symlink(root: &Path, rel: &Path, target: &Path) -> Result<()> {
    let (dir, name) = clear_parent(root, rel)?;
    let dir = dir.ok_or_else(|| missing(root, rel))?;
    let ours = match dir.stat(&name)?.map(|s| s.kind) {
        None => true,
        Some(Kind::Symlink) => dir.read_link(&name)? == target,
        Some(_) => false,
    };
    if !ours {
        move_aside(&dir, &name)?;
    }
    beneath::symlink(root, rel, target)
}

/// [`beneath::unsymlink`] past impostor directories on the way.
pub fn unsymlink(root: &Path, rel: &Path, target: &Path) -> Result<()> {
    match clear_parent(root, rel)? {
        (None, _) => Ok(()),
        (Some(_), _) => beneath::unsymlink(root, rel, target),
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
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::fs::write(host.join("group"), "wheel:*:0:root\n").unwrap();
        std::fs::write(root.join("etc/group"), "ours\n").unwrap();
        (d, root, host)
    }

    fn quarantined(dir: &Path, name: &str) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{name}{QUARANTINE}."))
            })
            .collect();
        out.sort();
        out
    }

    fn hash(s: &str) -> String {
        blake3::hash(s.as_bytes()).to_hex().to_string()
    }

    /// The wedge: the aside copy is ours, a symlink to a host file
    /// was planted at the original name; the undo moves the link aside
    /// (never following it) and the admin's file back.
    #[test]
    fn undo_moves_a_planted_link_aside_and_the_file_back() {
        let (_d, root, host) = tree();
        let (from, to) = (Path::new("etc/group"), Path::new("etc/group.jailtx-old"));
        rename(&root, from, to, Some(&hash("ours\n"))).unwrap();
        ln(host.join("group"), root.join("etc/group")).unwrap();
        take_moved();
        let e = beneath::rename(&root, to, from, None).unwrap_err();
        assert!(matches!(e, FsError::InTheWay { .. }), "{e}");
        unrename(&root, from, to, Some(&hash("ours\n"))).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join("etc/group")).unwrap(),
            "ours\n"
        );
        let q = quarantined(&root.join("etc"), "group");
        assert_eq!(q.len(), 1);
        assert_eq!(std::fs::read_link(&q[0]).unwrap(), host.join("group"));
        assert_eq!(take_moved().len(), 1);
        assert_eq!(
            std::fs::read_to_string(host.join("group")).unwrap(),
            "wheel:*:0:root\n"
        );
        // Again: nothing left to do, nothing moved.
        unrename(&root, from, to, Some(&hash("ours\n"))).unwrap();
        assert!(take_moved().is_empty());
    }

    /// `etc` itself swapped for a link to a host directory: the undo moves
    /// the link aside and finds nothing of its own left to do.
    #[test]
    fn a_link_where_a_directory_belongs_is_moved_aside_not_followed() {
        let (_d, root, host) = tree();
        std::fs::rename(root.join("etc"), root.join("etc.real")).unwrap();
        ln(&host, root.join("etc")).unwrap();
        take_moved();
        unrename(
            &root,
            Path::new("etc/group"),
            Path::new("etc/group.jailtx-old"),
            None,
        )
        .unwrap();
        unwrite_new(&root, Path::new("etc/group"), b"x").unwrap();
        unmake_dir(&root, Path::new("etc/sub")).unwrap();
        remove_file(&root, Path::new("etc/group.jailtx-old")).unwrap();
        assert!(!root.join("etc").exists());
        assert_eq!(quarantined(&root, "etc").len(), 1);
        assert_eq!(take_moved().len(), 1);
        assert_eq!(
            std::fs::read_to_string(host.join("group")).unwrap(),
            "wheel:*:0:root\n"
        );
        assert_eq!(std::fs::read_dir(&host).unwrap().count(), 1);
    }

    /// A resumed rename whose effect happened before the crash, with the
    /// original name planted again since: the plant is moved aside.
    #[test]
    fn resumed_rename_moves_the_plant_not_the_plans_file() {
        let (_d, root, host) = tree();
        let (from, to) = (Path::new("etc/group"), Path::new("etc/group.jailtx-old"));
        std::fs::rename(root.join(from), root.join(to)).unwrap();
        ln(host.join("group"), root.join(from)).unwrap();
        rename(&root, from, to, Some(&hash("ours\n"))).unwrap();
        assert_eq!(std::fs::read_to_string(root.join(to)).unwrap(), "ours\n");
        assert!(!root.join(from).exists());
        assert_eq!(quarantined(&root.join("etc"), "group").len(), 1);
        // A file planted at the name a write publishes is moved aside too.
        std::fs::write(root.join(from), "planted\n").unwrap();
        write_new(&root, from, b"merged\n", 0o644, 0, 0).unwrap();
        assert_eq!(
            std::fs::read_to_string(root.join(from)).unwrap(),
            "merged\n"
        );
        assert_eq!(quarantined(&root.join("etc"), "group").len(), 2);
    }

    #[test]
    fn a_filled_directory_is_moved_aside_whole() {
        let (_d, root, _host) = tree();
        make_dir(&root, Path::new("etc/sub"), 0o755, 0, 0).unwrap();
        std::fs::write(root.join("etc/sub/x"), "jail's\n").unwrap();
        unmake_dir(&root, Path::new("etc/sub")).unwrap();
        let q = quarantined(&root.join("etc"), "sub");
        assert_eq!(q.len(), 1);
        assert_eq!(std::fs::read_to_string(q[0].join("x")).unwrap(), "jail's\n");
    }
}
