//! Shaping a world into a template: its read-write directories move to the
//! skel (first build) or are dropped (upgrade staging), and the template gets
//! an empty `s/` plus relative symlinks that resolve to `/s/<name>` inside a jail.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::fs::{self, beneath, beneath::DirFd, beneath::Kind};

use super::WorldError;

/// (path in the world, name in skel, mode when the world lacks it). The
/// Handbook's list, plus `home`, `usr/X11R6` and `usr/ports/distfiles`,
/// which also live under `/s` in a jail.
pub const MOVES: [(&str, &str, u32); 8] = [
    ("etc", "etc", 0o755),
    ("usr/local", "usr-local", 0o755),
    ("tmp", "tmp", 0o1777),
    ("var", "var", 0o755),
    ("root", "root", 0o700),
    ("home", "home", 0o755),
    ("usr/X11R6", "usr-X11R6", 0o755),
    ("usr/ports/distfiles", "distfiles", 0o755),
];

/// (link in the template, its target). Relative, so each resolves inside the
/// jail (root = the template) to `/s/<name>`. The Handbook's first listing
/// has `usr/local -> s/usr-local`, which would resolve to `/usr/s/usr-local`.
pub const LINKS: [(&str, &str); 8] = [
    ("etc", "s/etc"),
    ("home", "s/home"),
    ("root", "s/root"),
    ("tmp", "s/tmp"),
    ("var", "s/var"),
    ("usr/local", "../s/usr-local"),
    ("usr/X11R6", "../s/usr-X11R6"),
    ("usr/ports/distfiles", "../../s/distfiles"),
];

/// The line `skel/etc/make.conf` gets, so ports build under the jail's `/s`.
pub const MAKE_CONF_LINE: &str = "WRKDIRPREFIX?= /s/portbuild";

fn err(path: &Path, why: impl std::fmt::Display) -> WorldError {
    WorldError::Shape {
        path: path.to_owned(),
        why: why.to_string(),
    }
}

/// The directory `rel` below `top`, each missing component made (0755,
/// durably); an existing component that is not a real directory is
/// refused, never followed.
fn make_dirs(top: &DirFd, rel: &Path) -> Result<DirFd, WorldError> {
    let mut cur = top.try_clone()?;
    for c in rel.components() {
        cur = cur.make_dir(c.as_os_str(), 0o755)?;
    }
    Ok(cur)
}

/// Splits a relative path of the layout into its directory and last name.
fn split(rel: &Path) -> Result<(&Path, &OsStr), WorldError> {
    beneath::components(rel)?;
    match (rel.parent(), rel.file_name()) {
        (Some(p), Some(n)) => Ok((p, n)),
        _ => Err(err(rel, "not a path below the template")),
    }
}

/// The directory `rel` below `top` (`top` itself for an empty path), or
/// `None` when a component is missing; a link or file there is refused.
fn find_dir(top: &DirFd, rel: &Path) -> Result<Option<DirFd>, WorldError> {
    if rel.as_os_str().is_empty() {
        return Ok(Some(top.try_clone()?));
    }
    Ok(top.walk(rel)?)
}

/// Shapes `template` in place, idempotently (every sub-step looks before it
/// acts, so a rerun after a crash finishes the job). With `skel`, the world's
/// read-write directories move there (first build); without, they are dropped
/// (an upgrade keeps the existing skel and jails' data).
///
/// The world is untrusted (SPEC section 5): its shape is checked first
/// ([`super::check_tree`]), and then every entry of it is reached through a
/// no-follow [`DirFd`] opened from `template`, never through a joined path,
/// so a symlink anywhere in the world is refused or moved as a link, never
/// followed to the host. `template` and `skel` themselves are the layout's
/// (`j/mroot2`, `j/skel`), made by jailtx.
pub fn shape(
    template: &Path,
    skel: Option<&Path>,
    carry_over: &[PathBuf],
) -> Result<(), WorldError> {
    let t = super::open_world(template)?;
    super::check_tree(&t, carry_over, true)?;
    // First, while the world's own configuration is still in place: every
    // copy is made before anything moves, so a rerun after a crash between
    // two copies still finds the sources of the missing ones.
    for (rel, kept_as, what) in super::PRISTINE_KEPT {
        keep_pristine(&t, rel, kept_as, what)?;
    }
    let skel = match skel {
        Some(path) => {
            if std::fs::symlink_metadata(path).is_err() {
                fs::create_dir_durable(path, 0o755)?;
            }
            Some(beneath::open_root(path)?)
        }
        None => None,
    };
    for (rel, skel_name, mode) in MOVES {
        let (parent, name) = split(Path::new(rel))?;
        let dir = find_dir(&t, parent)?;
        let is_real_dir = match &dir {
            Some(d) => d.stat(name)?.is_some_and(|s| s.kind == Kind::Dir),
            None => false,
        };
        let skel_name = OsStr::new(skel_name);
        match (&skel, dir) {
            (Some(skel), Some(dir)) if is_real_dir => {
                if skel.stat(skel_name)?.is_some() {
                    return Err(err(
                        &skel.shown(skel_name),
                        format!("already exists, and so does {}", dir.shown(name).display()),
                    ));
                }
                dir.move_to(name, skel, skel_name)?;
            }
            (Some(skel), _) => {
                if skel.stat(skel_name)?.is_none() {
                    skel_from_pristine(&t, skel, skel_name, mode)?;
                }
            }
            // Staging only: Populate's compensation removes the whole tree,
            // so dropping these before the commit point loses nothing.
            (None, Some(dir)) if is_real_dir => {
                dir.remove_tree(name)?;
            }
            (None, _) => {}
        }
    }
    if skel.is_none() {
        // The old template's carry-over paths move in at the switch, so the
        // ports tree (say) exists exactly once; the new world's copy goes.
        for rel in carry_over {
            let (parent, name) = split(rel)?;
            make_dirs(&t, parent)?.remove_tree(name)?;
        }
    }
    t.make_dir(OsStr::new("s"), 0o755)?;
    for (rel, target) in LINKS {
        // A link inside a carried-over tree arrives with that tree.
        if skel.is_none() && carry_over.iter().any(|c| Path::new(rel).starts_with(c)) {
            continue;
        }
        let (parent, name) = split(Path::new(rel))?;
        let dir = make_dirs(&t, parent)?;
        match dir.stat(name)?.map(|s| s.kind) {
            Some(Kind::Symlink) => {
                let now = dir.read_link(name)?;
                if now != Path::new(target) {
                    return Err(err(
                        &dir.shown(name),
                        format!("is a symlink to {}, not {target}", now.display()),
                    ));
                }
                continue;
            }
            Some(Kind::Dir) => {
                // An empty directory left where the link goes (MOVES had
                // nothing to carry); anything else is a conflict, never data loss.
                dir.remove_dir(name)
                    .map_err(|e| err(&dir.shown(name), format!("in the way of the link: {e}")))?;
            }
            Some(_) => return Err(err(&dir.shown(name), "a file is in the way of the link")),
            None => {}
        }
        dir.make_symlink(name, Path::new(target))?;
    }
    if let Some(skel) = &skel {
        append_make_conf(skel)?;
    }
    Ok(())
}

/// Makes the skel's `skel_name` where the world had no real directory to
/// move: from the template's pristine copy when it has one (a template
/// installed from a bundle is already shaped, and its pristine copies are
/// all of its configuration there is: `etc`, `usr/local/etc`, root's
/// dotfiles), else empty with `mode`. The copy is built under a side name
/// and renamed into place, so an existing `skel_name` is whole.
fn skel_from_pristine(
    t: &DirFd,
    skel: &DirFd,
    skel_name: &OsStr,
    mode: u32,
) -> Result<(), WorldError> {
    let pristine = find_dir(t, Path::new(super::PRISTINE))?;
    let has = |d: &DirFd, n: &OsStr| -> Result<bool, WorldError> {
        Ok(d.stat(n)?.is_some_and(|s| s.kind == Kind::Dir))
    };
    let Some(pristine) = pristine else {
        skel.make_dir(skel_name, mode)?;
        return Ok(());
    };
    let partial = {
        let mut n = skel_name.to_os_string();
        n.push(".jailtx-partial");
        n
    };
    skel.remove_tree(&partial)?;
    // `etc`, `usr-local` (its `etc` is what was kept), `root` (its dotfiles).
    if has(&pristine, skel_name)? {
        pristine.copy_to(skel_name, skel, &partial)?;
    } else {
        skel.make_dir(&partial, mode)?;
    }
    skel.sync_tree(&partial)?;
    skel.move_to(&partial, skel, skel_name)?;
    Ok(())
}

/// Adds [`MAKE_CONF_LINE`] to the skel's `etc/make.conf` unless it is
/// there. The file came from the world: it is read only as a regular file
/// (no-follow, size-capped) and replaced, never written through; a symlink
/// or anything else there is refused (the world check refuses it first).
fn append_make_conf(skel: &DirFd) -> Result<(), WorldError> {
    let etc = skel
        .subdir(OsStr::new("etc"))?
        .ok_or_else(|| err(&skel.shown(OsStr::new("etc")), "missing after the move"))?;
    let name = OsStr::new("make.conf");
    let current = match etc.stat(name)?.map(|s| s.kind) {
        None => String::new(),
        Some(Kind::File) => String::from_utf8_lossy(&etc.read(name)?.0).into_owned(),
        Some(k) => {
            return Err(err(
                &etc.shown(name),
                format!(
                    "is {}, not a regular file: it is never read or written through",
                    super::check::kind_words(k)
                ),
            ));
        }
    };
    if current.lines().any(|l| l.trim() == MAKE_CONF_LINE) {
        return Ok(());
    }
    let mut text = current;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(MAKE_CONF_LINE);
    text.push('\n');
    Ok(etc.replace_file(name, text.as_bytes(), 0o644)?)
}

/// Copies the world's `rel` (all of it, or its top-level dotfiles) to
/// `kept_as` below [`super::PRISTINE`] inside the template: for
/// `etc`, the base and "theirs" of every later `/etc` merge. Inside the
/// template, so it moves with each rename (mroot2, mroot, mroot.DATE), is
/// covered by the manifest, and an archive keeps its own. Idempotent: the
/// copy is built under a side name, made durable and renamed into place, so
/// an existing copy is whole; a rerun after a crash rebuilds the side copy.
/// It runs before `rel` moves to the skel or is dropped, so a rerun that
/// finds no real `rel` has its copy already (or a world without `rel`:
/// nothing to keep). A `rel` reached through a symlink in the world is not
/// real (the copy would be of something else) and is not kept either.
fn keep_pristine(t: &DirFd, rel: &str, kept_as: &str, what: super::Kept) -> Result<(), WorldError> {
    let (kept_parent, kept_name) = split(Path::new(kept_as))?;
    let pristine = Path::new(super::PRISTINE).join(kept_parent);
    if let Some(d) = find_dir(t, &pristine)?
        && d.stat(kept_name)?.is_some()
    {
        return Ok(());
    }
    let (src_parent, src_name) = split(Path::new(rel))?;
    let mut src = t.try_clone()?;
    for c in src_parent.components() {
        match src.stat(c.as_os_str())?.map(|s| s.kind) {
            Some(Kind::Dir) => {}
            _ => return Ok(()),
        }
        src = src
            .subdir(c.as_os_str())?
            .ok_or_else(|| err(&src.shown(c.as_os_str()), "vanished"))?;
    }
    let Some(st) = src.stat(src_name)?.filter(|s| s.kind == Kind::Dir) else {
        return Ok(());
    };
    let dst = make_dirs(t, &pristine)?;
    let partial = {
        let mut n = kept_name.to_os_string();
        n.push(".jailtx-partial");
        n
    };
    dst.remove_tree(&partial)?;
    match what {
        super::Kept::Tree => src.copy_to(src_name, &dst, &partial)?,
        super::Kept::DotFiles => {
            let from = src
                .subdir(src_name)?
                .ok_or_else(|| err(&src.shown(src_name), "vanished"))?;
            copy_dotfiles(&from, &dst.make_dir(&partial, st.mode)?)?;
        }
    }
    dst.sync_tree(&partial)?;
    dst.move_to(&partial, &dst, kept_name)?;
    Ok(())
}

/// Copies into `dst` the files and symlinks of `src` named `.*` (never
/// following one), in name order; subdirectories (`.ssh`, say) and
/// everything else are an account's data and stay out.
fn copy_dotfiles(src: &DirFd, dst: &DirFd) -> Result<(), WorldError> {
    for name in src.names()? {
        if !name.as_encoded_bytes().starts_with(b".") {
            continue;
        }
        if matches!(
            src.stat(&name)?.map(|s| s.kind),
            Some(Kind::File | Kind::Symlink)
        ) {
            src.copy_to(&name, dst, &name)?;
        }
    }
    Ok(())
}

/// Undoes [`shape`]: removes the skel it created. The shaped template itself
/// goes with the compensation of the populate step that always precedes it.
pub fn unshape(skel: Option<&Path>) -> Result<(), WorldError> {
    if let Some(skel) = skel {
        fs::remove_tree(skel)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(d: &Path) -> std::path::PathBuf {
        let w = d.join("w");
        for p in [
            "bin",
            "etc",
            "usr/bin",
            "usr/local/bin",
            "var/empty",
            "root",
            "tmp",
            "dev",
        ] {
            std::fs::create_dir_all(w.join(p)).unwrap();
        }
        std::fs::write(w.join("etc/rc"), "echo hi\n").unwrap();
        std::fs::write(w.join("usr/local/bin/tool"), "x").unwrap();
        w
    }

    #[test]
    fn first_build_moves_rw_dirs_and_links_resolve_to_s() {
        let d = tempfile::tempdir().unwrap();
        let w = world(d.path());
        let skel = d.path().join("skel");
        shape(&w, Some(&skel), &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(skel.join("etc/rc")).unwrap(),
            "echo hi\n"
        );
        assert!(skel.join("usr-local/bin/tool").is_file());
        for name in ["home", "usr-X11R6", "distfiles", "var/empty", "root", "tmp"] {
            assert!(skel.join(name).is_dir(), "{name}");
        }
        assert!(w.join("s").is_dir());
        // Resolve each link as a jail would: root = w, /s = skel.
        for (rel, target) in LINKS {
            let link = w.join(rel);
            assert_eq!(std::fs::read_link(&link).unwrap(), Path::new(target));
            let parent_in_jail = Path::new("/").join(rel).parent().unwrap().to_owned();
            let resolved = normalize(&parent_in_jail.join(target));
            assert!(
                resolved.starts_with("/s/"),
                "{rel} -> {}",
                resolved.display()
            );
        }
        let mc = std::fs::read_to_string(skel.join("etc/make.conf")).unwrap();
        assert_eq!(mc, format!("{MAKE_CONF_LINE}\n"));
        // Idempotent: a second run changes nothing and does not fail.
        shape(&w, Some(&skel), &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(skel.join("etc/make.conf")).unwrap(),
            mc
        );
    }

    fn normalize(p: &Path) -> std::path::PathBuf {
        let mut out = std::path::PathBuf::from("/");
        for c in p.components() {
            match c {
                std::path::Component::ParentDir => {
                    out.pop();
                }
                std::path::Component::Normal(n) => out.push(n),
                _ => {}
            }
        }
        out
    }

    #[test]
    fn the_worlds_own_etc_is_kept_inside_the_template() {
        let d = tempfile::tempdir().unwrap();
        let w = world(d.path());
        // A crash left a half-built side copy: the rerun replaces it.
        let pristine = w.join(crate::world::PRISTINE_ETC);
        let partial = super::super::partial_path(&pristine);
        std::fs::create_dir_all(partial.join("junk")).unwrap();
        shape(&w, None, &[]).unwrap();
        assert_eq!(
            std::fs::read_to_string(pristine.join("rc")).unwrap(),
            "echo hi\n"
        );
        assert!(!partial.exists());
        assert!(!w.join("s/etc").exists());
        // Rerun after etc is gone: the copy stays as it was.
        shape(&w, None, &[]).unwrap();
        assert_eq!(std::fs::read_dir(&pristine).unwrap().count(), 1);
        let skel_world = world(&d.path().join("b"));
        let skel = d.path().join("skel");
        shape(&skel_world, Some(&skel), &[]).unwrap();
        let kept = skel_world.join(crate::world::PRISTINE_ETC);
        assert!(kept.join("rc").is_file());
        assert!(
            !kept.join("make.conf").exists(),
            "the skel's line is not the world's"
        );
    }

    /// Issue 7 item 1: besides `etc`, the world's `usr/local/etc` and root's
    /// dotfiles are kept pristine, and nothing of root's data.
    #[test]
    fn other_skel_bound_config_is_kept_pristine() {
        let d = tempfile::tempdir().unwrap();
        let w = world(d.path());
        std::fs::create_dir_all(w.join("usr/local/etc/rc.d")).unwrap();
        std::fs::write(w.join("usr/local/etc/pkg.conf"), "REPOS_DIR=[]\n").unwrap();
        std::fs::write(w.join("usr/local/etc/rc.d/svc"), "#!/bin/sh\n").unwrap();
        std::fs::write(w.join("root/.cshrc"), "set prompt\n").unwrap();
        std::fs::write(w.join("root/.profile"), "PATH=/bin\n").unwrap();
        std::os::unix::fs::symlink(".cshrc", w.join("root/.tcshrc")).unwrap();
        std::fs::write(w.join("root/notes"), "data\n").unwrap();
        std::fs::create_dir(w.join("root/.ssh")).unwrap();
        std::fs::write(w.join("root/.ssh/id"), "key\n").unwrap();
        let kept = w.join(crate::world::PRISTINE);
        // A crash left a half-built side copy of root's: the run replaces it.
        std::fs::create_dir_all(super::super::partial_path(&kept.join("root")).join("x")).unwrap();
        let skel = d.path().join("skel");
        shape(&w, Some(&skel), &[]).unwrap();
        let names = |p: &Path| {
            let mut v: Vec<String> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        assert_eq!(names(&kept), ["etc", "root", "usr-local"]);
        assert_eq!(names(&kept.join("root")), [".cshrc", ".profile", ".tcshrc"]);
        assert_eq!(
            std::fs::read_link(kept.join("root/.tcshrc")).unwrap(),
            Path::new(".cshrc"),
            "a symlink is kept as a symlink"
        );
        assert_eq!(
            std::fs::read_to_string(kept.join("usr-local/etc/pkg.conf")).unwrap(),
            "REPOS_DIR=[]\n"
        );
        assert!(kept.join("usr-local/etc/rc.d/svc").is_file());
        // The originals moved to the skel as before.
        assert!(skel.join("root/.ssh/id").is_file());
        assert!(skel.join("usr-local/etc/pkg.conf").is_file());
        // Idempotent: the rerun (sources gone) leaves the copies as they are.
        shape(&w, Some(&skel), &[]).unwrap();
        assert_eq!(names(&kept.join("root")), [".cshrc", ".profile", ".tcshrc"]);
        // A world without usr/local/etc keeps none (nothing to keep).
        let bare = world(&d.path().join("b"));
        shape(&bare, None, &[]).unwrap();
        let kept = bare.join(crate::world::PRISTINE);
        assert_eq!(names(&kept), ["etc", "root"]);
        assert!(names(&kept.join("root")).is_empty());
    }

    #[test]
    fn upgrade_staging_drops_rw_dirs() {
        let d = tempfile::tempdir().unwrap();
        let w = world(d.path());
        shape(&w, None, &["usr/ports".into()]).unwrap();
        assert!(
            std::fs::symlink_metadata(w.join("etc"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
        assert!(!w.join("s/etc").exists());
        assert!(w.join("usr/bin").is_dir());
    }

    #[test]
    fn a_file_in_the_way_of_a_link_is_a_conflict() {
        let d = tempfile::tempdir().unwrap();
        let w = world(d.path());
        std::fs::write(w.join("home"), "not a dir").unwrap();
        let e = shape(&w, None, &[]).unwrap_err().to_string();
        assert!(e.contains("home"), "{e}");
    }
}
