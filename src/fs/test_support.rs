//! Test fixtures shared by the fs tests: a tree holding every kind of entry, metadata snapshots, child-process runs.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::fcntl::{AT_FDCWD, OFlag, open, openat};
use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mkdirat, mknod, utimensat};
use nix::sys::time::TimeSpec;
use nix::unistd::{Gid, Uid, fchownat, mkfifo};

/// Runs one `#[ignore]`d test of this binary in a child process, behind
/// `prefix` (e.g. `unshare --mount …` or `setpriv …`), with `env` telling it
/// its paths. Panics with the child's output unless it ran and passed.
pub(crate) fn run_child(prefix: &[&str], test: &str, env: &[(&str, &OsStr)]) {
    let exe = std::env::current_exe().expect("current test binary");
    let mut cmd = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args([
        "--exact",
        test,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn child test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child test {test} failed:\n{text}");
    // A filter that matches nothing also exits 0, and a helper without its
    // env var skips: make sure it really ran.
    assert!(
        text.contains("1 passed") && !text.contains("skipped:"),
        "child test {test} did not run:\n{text}"
    );
}

/// A private mount namespace: mounts made by the child die with it and never
/// reach the host.
pub(crate) const PRIVATE_MOUNT_NS: &[&str] =
    &["unshare", "--mount", "--propagation", "private", "--"];

/// The directory a child test works in, from the env var its parent test
/// sets. `None` (with the reason printed) when the helper is run directly,
/// e.g. by `--include-ignored`: it only makes sense inside its parent's
/// namespace or credentials, which report its real outcome.
pub(crate) fn child_dir(var: &str) -> Option<PathBuf> {
    let dir = std::env::var_os(var).map(PathBuf::from);
    if dir.is_none() {
        eprintln!("skipped: {var} is unset; this helper runs only when its parent test starts it");
    }
    dir
}

/// `mount --bind from to`; only ever called inside a private namespace.
pub(crate) fn bind_mount(from: &Path, to: &Path) {
    let st = Command::new("mount")
        .arg("--bind")
        .arg(from)
        .arg(to)
        .status()
        .expect("run mount");
    assert!(st.success(), "mount --bind {from:?} {to:?}");
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Sets atime and mtime of `path` without following it.
pub(crate) fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    utimensat(
        AT_FDCWD,
        path,
        &TimeSpec::new(atime.0, atime.1),
        &TimeSpec::new(mtime.0, mtime.1),
        UtimensatFlags::NoFollowSymlink,
    )
    .expect("utimensat");
}

pub(crate) fn lchown(path: &Path, uid: u32, gid: u32) {
    fchownat(
        AT_FDCWD,
        path,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .expect("lchown");
}

/// 2001-09-09T01:46:40.123456789Z
pub(crate) const OLD_MTIME: (i64, i64) = (1_000_000_000, 123_456_789);
/// An atime after every ctime in the tree: with relatime, reading a directory
/// or symlink then leaves its atime alone, so atimes are stable to compare.
const FUTURE_ATIME: (i64, i64) = (2_051_222_400, 987_654_321);

/// Builds at `root` (which must not exist) a tree with every kind of entry
/// jailtx meets in a skel or template. Must run as root (mknod, chown).
pub(crate) fn build_rich_tree(root: &Path) {
    fs::create_dir(root).expect("mkdir root");
    let p = |rel: &str| root.join(rel);

    fs::create_dir(p("bin")).expect("mkdir");
    fs::write(p("bin/su"), b"#!/bin/sh\necho su\n").expect("write");
    set_mode(&p("bin/su"), 0o4755);

    fs::create_dir_all(p("var/empty")).expect("mkdir");
    fs::write(p("var/empty/.keep"), b"").expect("write");
    set_mode(&p("var/empty"), 0o555);

    fs::create_dir(p("tmp")).expect("mkdir");
    set_mode(&p("tmp"), 0o1777);
    fs::create_dir(p("sgid")).expect("mkdir");
    set_mode(&p("sgid"), 0o2775);

    symlink("does/not/exist", p("dangling")).expect("symlink");
    fs::create_dir(p("etc")).expect("mkdir");
    symlink("../bin/su", p("etc/su-link")).expect("symlink");
    symlink(OsStr::from_bytes(b"\xff\xfe/not utf-8 \x01"), p("etc/odd")).expect("symlink");

    fs::write(p("hard_a"), b"shared by two names\n").expect("write");
    fs::hard_link(p("hard_a"), p("etc/hard_b")).expect("link");

    mkfifo(&p("fifo"), Mode::from_bits_truncate(0o640)).expect("mkfifo");
    fs::create_dir(p("dev")).expect("mkdir");
    mknod(
        &p("dev/null"),
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(1, 3),
    )
    .expect("mknod");
    // Skipped by the copy; removed by remove_tree like any entry.
    drop(std::os::unix::net::UnixListener::bind(p("sock")).expect("bind socket"));

    let mut deep = root.join("deep");
    for i in 0..30 {
        deep.push(format!("d{i}"));
    }
    fs::create_dir_all(&deep).expect("mkdir deep");
    fs::write(deep.join("leaf.txt"), b"bottom\n").expect("write");

    fs::write(p("owned"), b"not root's\n").expect("write");
    set_mode(&p("owned"), 0o640);
    lchown(&p("owned"), 1234, 5678);
    symlink("owned", p("owned-link")).expect("symlink");
    lchown(&p("owned-link"), 1234, 5678);
    fs::create_dir(p("owned-dir")).expect("mkdir");
    set_mode(&p("owned-dir"), 0o750);
    lchown(&p("owned-dir"), 1234, 5678);

    fs::write(p("empty"), b"").expect("write");
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 17)
        .map(|i: u32| (i % 251) as u8)
        .collect();
    fs::write(p("big"), &big).expect("write");

    fs::write(p("old"), b"from 2001\n").expect("write");

    stabilize_atimes(root);
    set_times(&p("old"), (1_000_000_100, 500), OLD_MTIME);
    set_times(&p("owned-link"), FUTURE_ATIME, OLD_MTIME);
    set_times(&p("var/empty"), FUTURE_ATIME, OLD_MTIME);
}

/// Gives every directory and symlink under `root` an atime in the future
/// (mtimes kept): with relatime, reading one then leaves its atime alone, so
/// snapshots taken before and after a walk agree. Files get a past atime:
/// the copy reads them with O_NOATIME and snapshots never read them.
pub(crate) fn stabilize_atimes(root: &Path) {
    for (path, meta) in walk(root) {
        let mtime = (meta.mtime(), meta.mtime_nsec());
        if meta.is_file() {
            set_times(&path, (1_500_000_000, 42), mtime);
        } else {
            set_times(&path, FUTURE_ATIME, mtime);
        }
    }
}

/// Asserts two snapshots are equal, naming the first entry that differs.
pub(crate) fn assert_same(want: &BTreeMap<PathBuf, Snap>, got: &BTreeMap<PathBuf, Snap>) {
    for (rel, w) in want {
        assert_eq!(got.get(rel), Some(w), "entry {rel:?}");
    }
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(extra.is_empty(), "unexpected entries: {extra:?}");
}

/// Every entry under `root` (root included), parents before children, with
/// its lstat; never follows symlinks.
pub(crate) fn walk(root: &Path) -> Vec<(PathBuf, fs::Metadata)> {
    let mut out = Vec::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(path) = todo.pop() {
        let meta = fs::symlink_metadata(&path).expect("lstat");
        if meta.is_dir() {
            let mut names: Vec<OsString> = fs::read_dir(&path)
                .expect("read_dir")
                .map(|e| e.expect("dirent").file_name())
                .collect();
            names.sort();
            todo.extend(names.into_iter().rev().map(|n| path.join(n)));
        }
        out.push((path, meta));
    }
    out
}

/// What must be equal between a source entry and its copy.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Snap {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u64,
    pub rdev: u64,
    pub size: Option<u64>,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub target: Option<Vec<u8>>,
}

pub(crate) fn kind(meta: &fs::Metadata) -> &'static str {
    match meta.mode() & SFlag::S_IFMT.bits() {
        m if m == SFlag::S_IFDIR.bits() => "dir",
        m if m == SFlag::S_IFREG.bits() => "file",
        m if m == SFlag::S_IFLNK.bits() => "symlink",
        m if m == SFlag::S_IFIFO.bits() => "fifo",
        m if m == SFlag::S_IFCHR.bits() => "chr",
        m if m == SFlag::S_IFBLK.bits() => "blk",
        m if m == SFlag::S_IFSOCK.bits() => "socket",
        _ => "unknown",
    }
}

/// Metadata of every entry under `root`, keyed by path relative to it.
pub(crate) fn snapshot(root: &Path) -> BTreeMap<PathBuf, Snap> {
    walk(root)
        .into_iter()
        .map(|(path, meta)| {
            let rel = path.strip_prefix(root).expect("under root").to_path_buf();
            let kind = kind(&meta);
            let snap = Snap {
                kind,
                mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                nlink: meta.nlink(),
                rdev: meta.rdev(),
                // A directory's size depends on its history, not its contents.
                size: (kind != "dir").then_some(meta.size()),
                atime: (meta.atime(), meta.atime_nsec()),
                mtime: (meta.mtime(), meta.mtime_nsec()),
                target: (kind == "symlink").then(|| {
                    fs::read_link(&path)
                        .expect("readlink")
                        .into_os_string()
                        .into_vec()
                }),
            };
            (rel, snap)
        })
        .collect()
}

use std::os::unix::ffi::OsStringExt;

/// A chain of `depth` directories named `dd` below `root` with a file at the
/// bottom, built through descriptors so it can exceed PATH_MAX.
pub(crate) fn make_deep(root: &Path, depth: usize) {
    fs::create_dir(root).expect("mkdir");
    let mut fd: OwnedFd =
        open(root, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).expect("open root");
    for _ in 0..depth {
        mkdirat(&fd, "dd", Mode::from_bits_truncate(0o755)).expect("mkdirat");
        fd = openat(
            &fd,
            "dd",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .expect("openat");
    }
    let file = openat(
        &fd,
        "leaf",
        OFlag::O_WRONLY | OFlag::O_CREAT,
        Mode::from_bits_truncate(0o644),
    )
    .expect("create leaf");
    nix::unistd::write(&file, b"deep\n").expect("write leaf");
}

/// How deep the `dd` chain below `root` goes, and whether `leaf` ends it.
pub(crate) fn deep_depth(root: &Path) -> (usize, bool) {
    let mut fd: OwnedFd =
        open(root, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).expect("open root");
    let mut depth = 0;
    while let Ok(next) = openat(
        &fd,
        "dd",
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW,
        Mode::empty(),
    ) {
        fd = next;
        depth += 1;
    }
    let leaf = nix::sys::stat::fstatat(&fd, "leaf", nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
    (depth, leaf.is_ok())
}
