//! Shaping a world into a template: its read-write directories move to the
//! skel (first build) or are dropped (upgrade staging), and the template gets
//! an empty `s/` plus relative symlinks that resolve to `/s/<name>` inside a jail.

use std::io;
use std::path::{Path, PathBuf};

use crate::fs;

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

fn lstat(path: &Path) -> Result<Option<std::fs::Metadata>, WorldError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(err(path, e)),
    }
}

/// Makes `dir` and its missing parents (mode 0755), durably.
fn mkdirs(dir: &Path) -> Result<(), WorldError> {
    Ok(fs::create_dir_all_durable(dir, 0o755)?)
}

/// Shapes `template` in place, idempotently (every sub-step looks before it
/// acts, so a rerun after a crash finishes the job). With `skel`, the world's
/// read-write directories move there (first build); without, they are dropped
/// (an upgrade keeps the existing skel and jails' data).
pub fn shape(
    template: &Path,
    skel: Option<&Path>,
    carry_over: &[PathBuf],
) -> Result<(), WorldError> {
    // First, while the world's own configuration is still in place: every
    // copy is made before anything moves, so a rerun after a crash between
    // two copies still finds the sources of the missing ones.
    for (rel, kept_as, what) in crate::etcmerge::PRISTINE_KEPT {
        keep_pristine(template, rel, kept_as, what)?;
    }
    if let Some(skel) = skel
        && lstat(skel)?.is_none()
    {
        fs::create_dir_durable(skel, 0o755)?;
    }
    for (rel, skel_name, mode) in MOVES {
        let src = template.join(rel);
        let is_real_dir = lstat(&src)?.is_some_and(|m| m.is_dir());
        match skel {
            Some(skel) => {
                let dst = skel.join(skel_name);
                if is_real_dir {
                    if lstat(&dst)?.is_some() {
                        return Err(err(
                            &dst,
                            format!("already exists, and so does {}", src.display()),
                        ));
                    }
                    fs::rename_durable(&src, &dst)?;
                } else if lstat(&dst)?.is_none() {
                    fs::create_dir_durable(&dst, mode)?;
                }
            }
            // Staging only: Populate's compensation removes the whole tree,
            // so dropping these before the commit point loses nothing.
            None if is_real_dir => {
                fs::remove_tree(&src)?;
            }
            None => {}
        }
    }
    if skel.is_none() {
        // The old template's carry-over paths move in at the switch, so the
        // ports tree (say) exists exactly once; the new world's copy goes.
        for rel in carry_over {
            let p = template.join(rel);
            if lstat(&p)?.is_some() {
                fs::remove_tree(&p)?;
            }
            if let Some(parent) = p.parent() {
                mkdirs(parent)?;
            }
        }
    }
    let s = template.join("s");
    if lstat(&s)?.is_none() {
        fs::create_dir_durable(&s, 0o755)?;
    }
    for (rel, target) in LINKS {
        let link = template.join(rel);
        // A link inside a carried-over tree arrives with that tree.
        if skel.is_none() && carry_over.iter().any(|c| Path::new(rel).starts_with(c)) {
            continue;
        }
        if let Some(parent) = link.parent() {
            mkdirs(parent)?;
        }
        match lstat(&link)? {
            Some(m) if m.file_type().is_symlink() => {
                let now = std::fs::read_link(&link).map_err(|e| err(&link, e))?;
                if now != Path::new(target) {
                    return Err(err(
                        &link,
                        format!("is a symlink to {}, not {target}", now.display()),
                    ));
                }
                continue;
            }
            Some(m) if m.is_dir() => {
                // An empty directory left where the link goes (MOVES had
                // nothing to carry); anything else is a conflict, never data loss.
                std::fs::remove_dir(&link)
                    .map_err(|e| err(&link, format!("in the way of the link: {e}")))?;
            }
            Some(_) => return Err(err(&link, "a file is in the way of the link")),
            None => {}
        }
        fs::symlink_durable(Path::new(target), &link)?;
    }
    if let Some(skel) = skel {
        let make_conf = skel.join("etc/make.conf");
        let current = match std::fs::read_to_string(&make_conf) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(err(&make_conf, e)),
        };
        if !current.lines().any(|l| l.trim() == MAKE_CONF_LINE) {
            let mut text = current;
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(MAKE_CONF_LINE);
            text.push('\n');
            fs::write_atomic(&make_conf, text.as_bytes(), 0o644)?;
        }
    }
    Ok(())
}

/// Copies the world's `rel` (all of it, or its top-level dotfiles) to
/// `kept_as` below [`crate::etcmerge::PRISTINE`] inside the template: for
/// `etc`, the base and "theirs" of every later `/etc` merge. Inside the
/// template, so it moves with each rename (mroot2, mroot, mroot.DATE), is
/// covered by the manifest, and an archive keeps its own. Idempotent: the
/// copy is built under a side name, made durable and renamed into place, so
/// an existing copy is whole; a rerun after a crash rebuilds the side copy.
/// It runs before `rel` moves to the skel or is dropped, so a rerun that
/// finds no real `rel` has its copy already (or a world without `rel`:
/// nothing to keep). A `rel` reached through a symlink in the world is not
/// real (the copy would be of something else) and is not kept either.
fn keep_pristine(
    template: &Path,
    rel: &str,
    kept_as: &str,
    what: crate::etcmerge::Kept,
) -> Result<(), WorldError> {
    let dst = template.join(crate::etcmerge::PRISTINE).join(kept_as);
    if lstat(&dst)?.is_some() {
        return Ok(());
    }
    let mut src = template.to_owned();
    for c in Path::new(rel).components() {
        src.push(c);
        if !lstat(&src)?.is_some_and(|m| m.is_dir()) {
            return Ok(());
        }
    }
    if let Some(parent) = dst.parent() {
        mkdirs(parent)?;
    }
    let partial = super::partial_path(&dst);
    fs::remove_tree(&partial)?;
    match what {
        crate::etcmerge::Kept::Tree => {
            fs::copy_tree(&src, &partial)?;
        }
        crate::etcmerge::Kept::DotFiles => copy_dotfiles(&src, &partial)?,
    }
    fs::sync_tree(&partial)?;
    fs::rename_durable(&partial, &dst)?;
    Ok(())
}

/// Makes `dst` with `src`'s mode and copies into it the files and symlinks
/// of `src` named `.*` (never following one), in name order; subdirectories
/// (`.ssh`, say) and everything else are an account's data and stay out.
fn copy_dotfiles(src: &Path, dst: &Path) -> Result<(), WorldError> {
    let mode = lstat(src)?.map_or(0o700, |m| {
        std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777
    });
    fs::create_dir_durable(dst, mode)?;
    let mut names = Vec::new();
    for e in std::fs::read_dir(src).map_err(|e| err(src, e))? {
        let e = e.map_err(|e| err(src, e))?;
        let ft = e.file_type().map_err(|x| err(&e.path(), x))?;
        let name = e.file_name();
        if name.as_encoded_bytes().starts_with(b".") && (ft.is_file() || ft.is_symlink()) {
            names.push(name);
        }
    }
    names.sort();
    for n in names {
        fs::copy_tree(&src.join(&n), &dst.join(&n))?;
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
        let pristine = w.join(crate::etcmerge::PRISTINE_ETC);
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
        let kept = skel_world.join(crate::etcmerge::PRISTINE_ETC);
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
        let kept = w.join(crate::etcmerge::PRISTINE);
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
        let kept = bare.join(crate::etcmerge::PRISTINE);
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
