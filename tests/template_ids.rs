//! Issue 16, item 5: template ids are host-independent. The same world
//! gives the same template id (`status --json`, `template_id`) on any root
//! and host: built from a directory or from an archive, from a copy with
//! other inode numbers and other directory mtimes, by a process with
//! another umask, by `template build` or by `upgrade`; and any real change
//! to the world (one byte, a mode bit, a symlink target, an owner) changes
//! it.
//!
//! What broke before: directories an archive implies without listing them
//! (a parent of a listed file) were made by tar with the umask of the
//! jailtx process, so a world unpacked by a root shell with umask 077 (or
//! cron's) got another id than the same world unpacked with 022. (A
//! symlink's mode, FreeBSD's umask-dependent one, is left out of the id
//! too: `manifest::format`'s unit test shows that, as Linux cannot make a
//! symlink of another mode.) `status --json` showed an id only in the rows
//! of jails, so a host without jails showed none.

mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use support::Root;

/// Mode bits of a fresh `mkdir`, and owner, set explicitly: the world must
/// not depend on the test's own umask.
fn dir(p: &Path, mode: u32) {
    std::fs::create_dir_all(p).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn file(p: &Path, data: &[u8], mode: u32) {
    std::fs::write(p, data).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A small world with what an id must see: a hard link, a setuid file of a
/// group other than root's, a symlink, a directory of another owner and
/// mode, the read-write directories (which move to skel), a carry-over
/// `usr/ports`. Every directory 0755 unless said otherwise.
fn world(w: &Path) {
    dir(w, 0o755);
    for d in ["bin", "etc", "usr/bin", "usr/share/misc", "var/log"] {
        for a in Path::new(d)
            .ancestors()
            .filter(|a| !a.as_os_str().is_empty())
        {
            dir(&w.join(a), 0o755);
        }
    }
    dir(&w.join("usr/sbin"), 0o750);
    std::os::unix::fs::chown(w.join("usr/sbin"), Some(1234), Some(5678)).unwrap();
    dir(&w.join("tmp"), 0o1777);
    dir(&w.join("root"), 0o700);
    dir(&w.join("var/empty"), 0o555);
    file(&w.join("bin/sh"), b"#!shell\n", 0o755);
    std::fs::hard_link(w.join("bin/sh"), w.join("bin/test")).unwrap();
    file(&w.join("bin/su"), b"setuid\n", 0o4755);
    std::os::unix::fs::chown(w.join("bin/su"), Some(0), Some(5)).unwrap();
    symlink("sh", w.join("bin/ls")).unwrap();
    file(&w.join("usr/bin/cc"), b"compiler\n", 0o755);
    file(&w.join("usr/sbin/daemon"), b"daemon\n", 0o750);
    file(&w.join("usr/share/misc/world-version"), b"world 1\n", 0o444);
    file(&w.join("etc/rc"), b"#!/bin/sh\n", 0o644);
    file(&w.join("etc/passwd"), b"root:x:0:0::/root:/bin/sh\n", 0o644);
    file(&w.join("var/log/messages"), b"", 0o644);
    dir(&w.join("usr/ports/sysutils/jailtx"), 0o755);
    dir(&w.join("usr/ports/sysutils"), 0o755);
    dir(&w.join("usr/ports"), 0o755);
    file(
        &w.join("usr/ports/sysutils/jailtx/Makefile"),
        b"PORTNAME= jailtx\n",
        0o644,
    );
}

/// `cp -a`: the same tree with other inode numbers; then every directory's
/// mtime set to another instant.
fn copy_of(w: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(w)
        .arg(to)
        .status()
        .unwrap();
    assert!(st.success(), "cp -a");
    let st = Command::new("find")
        .arg(to)
        .args([
            "-type",
            "d",
            "-exec",
            "touch",
            "-h",
            "-d",
            "2001-02-03 04:05:06",
            "{}",
            "+",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "touch");
}

fn tar(args: &[&str]) {
    let st = Command::new("tar").args(args).status().unwrap();
    assert!(st.success(), "tar {args:?}");
}

/// The world as FreeBSD ships one: `tar -cJf base.txz .`, every directory
/// listed.
fn full_txz(w: &Path, to: &Path) {
    tar(&["-C", w.to_str().unwrap(), "-cJf", to.to_str().unwrap(), "."]);
}

/// The world as an archive that lists its files and only the directories
/// whose mode is not 0755: the others (and the root) are implied.
fn sparse_tar(w: &Path, to: &Path) {
    let mut names = Vec::new();
    for e in walk(w) {
        let rel = e.strip_prefix(w).unwrap().to_str().unwrap().to_owned();
        let m = std::fs::symlink_metadata(&e).unwrap();
        if rel.is_empty() || (m.is_dir() && m.permissions().mode() & 0o7777 == 0o755) {
            continue;
        }
        names.push(rel);
    }
    names.sort();
    let mut args = vec![
        "-C".to_owned(),
        w.to_str().unwrap().to_owned(),
        "--no-recursion".into(),
        "-cf".into(),
        to.to_str().unwrap().to_owned(),
    ];
    args.extend(names);
    tar(&args.iter().map(String::as_str).collect::<Vec<_>>());
}

fn walk(p: &Path) -> Vec<PathBuf> {
    let mut out = vec![p.to_owned()];
    if std::fs::symlink_metadata(p).unwrap().is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            out.extend(walk(&e.unwrap().path()));
        }
    }
    out
}

/// Runs jailtx on `root` with the process umask `mask` (as a root shell or
/// cron might have it), asserting success.
fn run_with_umask(root: &Root, args: &[&str], mask: u32) {
    let mut c = root.command(args);
    // SAFETY: umask(2) is async-signal-safe and touches only the child.
    unsafe {
        c.pre_exec(move || {
            nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask as _));
            Ok(())
        });
    }
    let out = c.output().unwrap();
    assert!(
        out.status.success(),
        "jailtx {args:?} (umask {mask:03o}): {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The id `status --json` reports for the current template.
fn id(root: &Root) -> String {
    let s = root.status();
    let id = s["template_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no template_id: {s}"));
    assert_eq!(id.len(), 64, "the whole BLAKE3 id: {id}");
    id.to_owned()
}

/// A first template from `args` (`--from-dir D` or `--from-tar F`) on a
/// fresh root of its own, built with `mask`; its id.
fn built(args: &[&str], mask: u32) -> (Root, String) {
    let r = Root::fresh();
    let mut a = vec!["template", "build"];
    a.extend_from_slice(args);
    run_with_umask(&r, &a, mask);
    let id = id(&r);
    (r, id)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn issue16_the_same_world_has_one_id_on_every_root() {
    let scratch = tempfile::tempdir_in("/var/tmp").unwrap();
    let w = scratch.path().join("world");
    world(&w);
    let copy = scratch.path().join("copy");
    copy_of(&w, &copy);
    let full = scratch.path().join("base.txz");
    full_txz(&w, &full);
    let sparse = scratch.path().join("sparse.tar");
    sparse_tar(&w, &sparse);

    let (a, from_dir) = built(&["--from-dir", s(&w)], 0o022);
    let ino = |r: &Root, rel: &str| {
        std::os::unix::fs::MetadataExt::ino(&std::fs::symlink_metadata(r.j().join(rel)).unwrap())
    };
    let cases = [
        (
            "--from-tar base.txz, umask 077",
            vec!["--from-tar", s(&full)],
            0o077,
        ),
        ("--from-dir of a copy", vec!["--from-dir", s(&copy)], 0o022),
        (
            "--from-tar with implied dirs, umask 022",
            vec!["--from-tar", s(&sparse)],
            0o022,
        ),
        (
            "--from-tar with implied dirs, umask 077",
            vec!["--from-tar", s(&sparse)],
            0o077,
        ),
    ];
    for (what, args, mask) in cases {
        let (r, got) = built(&args, mask);
        assert_ne!(r.root, a.root, "separate roots");
        assert_ne!(
            ino(&r, "mroot/bin/sh"),
            ino(&a, "mroot/bin/sh"),
            "{what}: other inodes"
        );
        assert_eq!(got, from_dir, "{what}: the id of the same world");
    }
}

/// "Build once, install on many hosts": an upgrade on a root that ran
/// another world ends on the id a first build of the world has elsewhere.
#[test]
fn issue16_an_upgrade_to_a_world_has_the_id_a_build_of_it_has() {
    let scratch = tempfile::tempdir_in("/var/tmp").unwrap();
    let w = scratch.path().join("world");
    world(&w);
    let old = scratch.path().join("old");
    copy_of(&w, &old);
    file(
        &old.join("usr/share/misc/world-version"),
        b"world 0\n",
        0o444,
    );
    let full = scratch.path().join("base.txz");
    full_txz(&w, &full);

    let (_, want) = built(&["--from-tar", s(&full)], 0o022);
    let (r, before) = built(&["--from-dir", s(&old)], 0o022);
    assert_ne!(before, want, "another world, another id");
    run_with_umask(&r, &["upgrade", "--from-tar", s(&full)], 0o077);
    assert_eq!(id(&r), want);
}

/// Every real change to the world makes a new id.
#[test]
fn issue16_a_content_change_changes_the_id() {
    let scratch = tempfile::tempdir_in("/var/tmp").unwrap();
    let w = scratch.path().join("world");
    world(&w);
    let (_, base) = built(&["--from-dir", s(&w)], 0o022);
    type Change = fn(&Path);
    let changes: [(&str, Change); 5] = [
        ("one byte", |w| {
            file(&w.join("usr/bin/cc"), b"compileR\n", 0o755)
        }),
        ("a mode bit", |w| {
            std::fs::set_permissions(w.join("usr/bin/cc"), std::fs::Permissions::from_mode(0o775))
                .unwrap()
        }),
        ("a directory's mode bit", |w| {
            std::fs::set_permissions(w.join("usr/bin"), std::fs::Permissions::from_mode(0o775))
                .unwrap()
        }),
        ("a symlink target", |w| {
            std::fs::remove_file(w.join("bin/ls")).unwrap();
            symlink("su", w.join("bin/ls")).unwrap();
        }),
        ("an owner", |w| {
            std::os::unix::fs::lchown(w.join("usr/bin/cc"), Some(1), None).unwrap()
        }),
    ];
    let mut seen = vec![base.clone()];
    for (i, (what, change)) in changes.into_iter().enumerate() {
        let v = scratch.path().join(format!("v{i}"));
        copy_of(&w, &v);
        change(&v);
        let (_, got) = built(&["--from-dir", s(&v)], 0o022);
        assert!(!seen.contains(&got), "{what}: a new id ({got})");
        seen.push(got);
    }
}
