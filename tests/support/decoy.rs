//! A decoy host tree outside every scratch root, for the hostile-input tests
//! (SPEC section 5): hostile worlds, jail roots and state files point their
//! symlinks, hard links and mounts at it, and each test ends by checking that
//! it is byte for byte as it was (content, mode, owner, mtime, link targets).

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What one decoy entry looked like; mtime is compared to the nanosecond.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_ns: (i64, i64),
    pub size: u64,
    pub content: Option<Vec<u8>>,
    pub target: Option<PathBuf>,
}

/// A host tree that looks like the parts of `/` a hostile world aims at:
/// `usr/local`, `usr/ports`, `etc/shadow`, `srv/` (an empty directory a
/// mount could land on), `bin/sh`-like file, and a directory `s`.
pub struct Decoy {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
    before: BTreeMap<PathBuf, Seen>,
}

/// The secret a symlink to `etc/shadow` must never leak.
pub const SECRET: &str = "root:$6$decoy-secret-hash:19000:0:99999:7:::\n";

impl Decoy {
    /// Makes the decoy tree in the system temp dir (never under a root) and
    /// records it.
    pub fn new() -> Decoy {
        let tmp = tempfile::Builder::new()
            .prefix("jailtx-decoy-")
            .tempdir()
            .expect("decoy tempdir");
        let dir = tmp.path().canonicalize().expect("canonicalize decoy");
        let files: [(&str, &[u8], u32); 6] = [
            ("usr/local/etc/keep.conf", b"host usr/local\n", 0o644),
            ("usr/ports/Makefile", b"host ports\n", 0o644),
            ("etc/shadow", SECRET.as_bytes(), 0o600),
            ("etc/make.conf", b"# host make.conf\n", 0o644),
            ("bin/sh", b"#!host shell\n", 0o755),
            ("s/keep", b"host s\n", 0o644),
        ];
        for (rel, bytes, mode) in files {
            let p = dir.join(rel);
            std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir decoy");
            std::fs::write(&p, bytes).expect("write decoy");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
        std::fs::create_dir_all(dir.join("srv")).expect("mkdir decoy srv");
        std::os::unix::fs::symlink("../etc/shadow", dir.join("srv/link")).expect("decoy link");
        // Times in the past, so a touch by a later run shows as a change.
        let st = Command::new("find")
            .arg(&dir)
            .args([
                "-exec",
                "touch",
                "-h",
                "-d",
                "2001-02-03 04:05:06",
                "{}",
                "+",
            ])
            .status()
            .expect("find/touch");
        assert!(st.success(), "touch decoy");
        let before = record(&dir);
        Decoy {
            _tmp: tmp,
            dir,
            before,
        }
    }

    /// A path inside the decoy.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }

    /// Panics naming every difference from how the decoy was made.
    pub fn assert_untouched(&self, what: &str) {
        let now = record(&self.dir);
        let mut bad = Vec::new();
        for (p, seen) in &self.before {
            match now.get(p) {
                None => bad.push(format!("{} vanished", p.display())),
                Some(n) if n != seen => {
                    bad.push(format!("{} changed: {seen:?} -> {n:?}", p.display()))
                }
                Some(_) => {}
            }
        }
        for p in now.keys() {
            if !self.before.contains_key(p) {
                bad.push(format!("{} appeared", p.display()));
            }
        }
        assert!(
            bad.is_empty(),
            "{what}: the decoy host tree {} changed:\n{}",
            self.dir.display(),
            bad.join("\n")
        );
    }
}

impl Default for Decoy {
    fn default() -> Self {
        Decoy::new()
    }
}

fn record(dir: &Path) -> BTreeMap<PathBuf, Seen> {
    let mut out = BTreeMap::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let p = if rel.as_os_str().is_empty() {
            dir.to_owned()
        } else {
            dir.join(&rel)
        };
        let m = std::fs::symlink_metadata(&p).expect("lstat decoy");
        let ft = m.file_type();
        let kind = if ft.is_dir() {
            "dir"
        } else if ft.is_symlink() {
            "symlink"
        } else if ft.is_file() {
            "file"
        } else {
            "special"
        };
        if ft.is_dir() {
            let mut names: Vec<_> = std::fs::read_dir(&p)
                .expect("read decoy dir")
                .map(|e| e.expect("decoy entry").file_name())
                .collect();
            names.sort();
            for n in names {
                todo.push(rel.join(n));
            }
        }
        out.insert(
            rel,
            Seen {
                kind,
                mode: m.mode() & 0o7777,
                uid: m.uid(),
                gid: m.gid(),
                // A directory's mtime changes when an entry is added or
                // removed in it, which is exactly what must not happen.
                mtime_ns: (m.mtime(), m.mtime_nsec()),
                size: m.len(),
                content: ft.is_file().then(|| std::fs::read(&p).expect("read decoy")),
                target: ft
                    .is_symlink()
                    .then(|| std::fs::read_link(&p).expect("readlink decoy")),
            },
        );
    }
    out
}
