//! A world's shape, checked before anything of it moves: each directory the
//! layout moves or links is a real directory or absent, `etc/make.conf` a
//! regular file or absent (SPEC section 5: a world is untrusted).
//!
//! Why these: `shape` moves or drops `etc`, `usr/local`, `var`, … and links
//! them to `s/`, an upgrade moves the carry-over paths across templates, and
//! a jail's `/s` is mounted on the template's `s`; through a symlink (or a
//! file standing for a parent) any of those would act on a host directory.
//! `etc/make.conf` is read and appended to. The walk goes through
//! [`DirFd`] handles only, so the check itself never follows a link.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::fs::FsError;
use crate::fs::beneath::{self, DirFd, Kind};

use super::WorldError;
use super::shape::{LINKS, MOVES};

/// Directories of a world that must be real directories or absent, besides
/// the [`MOVES`] sources, their parents, and the carry-over paths.
const ALSO_DIRS: [&str; 4] = [
    "s",
    "usr/ports",
    // Where shape keeps the pristine copies (etcmerge::PRISTINE and below).
    "usr/share/jailtx/pristine",
    "usr/share/jailtx/pristine/usr-local",
];

/// Files shape reads or writes: a regular file or absent.
pub const FILES: [&str; 1] = ["etc/make.conf"];

/// Every directory path the check covers, parents included, sorted (so a
/// parent is checked before its children).
pub fn dirs(carry_over: &[PathBuf]) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let tops = MOVES
        .iter()
        .map(|m| PathBuf::from(m.0))
        .chain(ALSO_DIRS.iter().map(PathBuf::from))
        .chain(
            super::PRISTINE_KEPT
                .iter()
                .map(|k| Path::new(super::PRISTINE).join(k.1)),
        )
        .chain(carry_over.iter().cloned());
    for p in tops {
        for a in p.ancestors() {
            if !a.as_os_str().is_empty() {
                out.insert(a.to_path_buf());
            }
        }
    }
    out
}

/// What a checked entry is, in words.
pub fn kind_words(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "a file",
        Kind::Dir => "a directory",
        Kind::Symlink => "a symlink",
        Kind::Special => "a fifo, socket or device",
    }
}

/// The refusal of a world whose `rel` is `what`.
pub fn unfit(rel: &Path, what: &str, must: &str) -> WorldError {
    WorldError::Unfit {
        rel: rel.to_owned(),
        why: format!("is {what}; the layout needs {must}"),
    }
}

const MUST_DIR: &str = "a real directory there (or none)";
const MUST_FILE: &str = "a regular file there (or none)";

/// Opens a world's top directory (the source of `--from-dir`, or a staging
/// tree): a symlink or a non-directory there is refused.
pub fn open_world(path: &Path) -> Result<DirFd, WorldError> {
    match beneath::open_root(path) {
        Ok(d) => Ok(d),
        Err(FsError::Open { source, .. })
            if matches!(
                source.raw_os_error(),
                Some(nix::libc::ELOOP) | Some(nix::libc::ENOTDIR)
            ) =>
        {
            let what = match std::fs::symlink_metadata(path) {
                Ok(m) if m.file_type().is_symlink() => "a symlink",
                _ => "not a directory",
            };
            Err(WorldError::Top {
                path: path.to_owned(),
                what,
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Checks the shape of the world below `top`. With `ours_ok`, a symlink
/// that is exactly one of shape's own [`LINKS`] is accepted (a rerun of
/// `shape` after a crash finds the links it made).
pub fn check_tree(top: &DirFd, carry_over: &[PathBuf], ours_ok: bool) -> Result<(), WorldError> {
    for rel in dirs(carry_over) {
        check_dir(top, &rel, ours_ok)?;
    }
    for rel in FILES {
        let rel = Path::new(rel);
        let (Some(parent), Some(name)) = (rel.parent(), rel.file_name()) else {
            continue;
        };
        let Some(dir) = walk_real(top, parent)? else {
            continue;
        };
        match dir.stat(name)?.map(|s| s.kind) {
            None | Some(Kind::File) => {}
            Some(k) => return Err(unfit(rel, kind_words(k), MUST_FILE)),
        }
    }
    Ok(())
}

/// The directory `rel` below `top` when every component is a real
/// directory; `None` when one is missing or is something else (which
/// [`check_dir`] refuses in its turn, or accepted as shape's own link).
fn walk_real(top: &DirFd, rel: &Path) -> Result<Option<DirFd>, WorldError> {
    let mut cur = top.try_clone()?;
    for c in rel.components() {
        let name = c.as_os_str();
        if cur.stat(name)?.map(|s| s.kind) != Some(Kind::Dir) {
            return Ok(None);
        }
        // A swap between the stat and the open is refused by subdir.
        match cur.subdir(name)? {
            Some(d) => cur = d,
            None => return Ok(None),
        }
    }
    Ok(Some(cur))
}

fn check_dir(top: &DirFd, rel: &Path, ours_ok: bool) -> Result<(), WorldError> {
    let (parent, name) = match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => (p, n),
        _ => return Ok(()),
    };
    // Parents come first in `dirs`' order, so a missing one ends it here
    // and a wrong one was refused already.
    let Some(dir) = walk_real(top, parent)? else {
        return Ok(());
    };
    match dir.stat(name)?.map(|s| s.kind) {
        None | Some(Kind::Dir) => Ok(()),
        Some(Kind::Symlink) if ours_ok && is_our_link(&dir, rel, name)? => Ok(()),
        Some(k) => Err(unfit(rel, kind_words(k), MUST_DIR)),
    }
}

fn is_our_link(dir: &DirFd, rel: &Path, name: &OsStr) -> Result<bool, WorldError> {
    let Some((_, target)) = LINKS.iter().find(|(l, _)| Path::new(l) == rel) else {
        return Ok(false);
    };
    Ok(dir.read_link(name)? == Path::new(target))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_before_children() {
        let d: Vec<PathBuf> = dirs(&["usr/src/sys".into()]).into_iter().collect();
        let pos = |p: &str| d.iter().position(|x| x == Path::new(p)).unwrap();
        assert!(pos("usr") < pos("usr/local"));
        assert!(pos("usr/src") < pos("usr/src/sys"));
        assert!(pos("usr/ports") < pos("usr/ports/distfiles"));
        for p in [
            "etc",
            "s",
            "tmp",
            "usr/X11R6",
            "usr/share/jailtx/pristine/etc",
        ] {
            pos(p);
        }
    }

    #[test]
    fn symlinks_files_and_fifos_are_refused_real_dirs_pass() {
        let d = tempfile::tempdir().unwrap();
        let w = d.path().join("w");
        std::fs::create_dir_all(w.join("usr/local")).unwrap();
        std::fs::create_dir_all(w.join("etc")).unwrap();
        let top = open_world(&w).unwrap();
        check_tree(&top, &[], false).unwrap();
        std::os::unix::fs::symlink("/", w.join("s")).unwrap();
        let e = check_tree(&top, &[], false).unwrap_err().to_string();
        assert!(e.contains("`s` is a symlink"), "{e}");
        std::fs::remove_file(w.join("s")).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", w.join("etc/make.conf")).unwrap();
        let e = check_tree(&top, &[], false).unwrap_err().to_string();
        assert!(e.contains("`etc/make.conf` is a symlink"), "{e}");
        std::fs::remove_file(w.join("etc/make.conf")).unwrap();
        std::fs::write(w.join("usr/src"), "x").unwrap();
        check_tree(&top, &[], false).unwrap();
        let e = check_tree(&top, &["usr/src/sys".into()], false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("`usr/src` is a file"), "{e}");
        // shape's own link passes only when asked to.
        std::os::unix::fs::symlink("s/etc", w.join("home")).unwrap();
        assert!(check_tree(&top, &[], false).is_err());
        assert!(check_tree(&top, &[], true).is_err(), "home links to s/home");
        std::fs::remove_file(w.join("home")).unwrap();
        std::os::unix::fs::symlink("s/home", w.join("home")).unwrap();
        check_tree(&top, &[], true).unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&w, &link).unwrap();
        let e = open_world(&link).unwrap_err().to_string();
        assert!(e.contains("a symlink"), "{e}");
    }
}
