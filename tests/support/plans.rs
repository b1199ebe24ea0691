//! Shared helpers of the integration tests: fresh roots, running the binary,
//! tree snapshots that compare across roots, and a builder for plans.
//!
//! Each test crate uses a different part of this module.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};

use jailtx::engine::{Action, Plan, Step};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_jailtx");

/// Environment variables of the binary that a test must never inherit from
/// whoever runs the suite (a stray `JAILTX_FAULT` would kill every run).
const SCRUBBED_ENV: [&str; 4] = ["JAILTX_FAULT", "JAILTX_ROOT", "JAILTX_LOG", "RUST_LOG"];

/// A temporary folder holding a jailtx root (`root`) and, beside it, a
/// scratch folder (`scratch`) for plan files and the like, so that nothing a
/// test writes for itself lands inside the tree it snapshots.
pub struct Root {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub scratch: PathBuf,
}

impl Root {
    /// An empty root folder (mode 0755), `init` not run.
    pub fn bare() -> Root {
        let tmp = tempfile::Builder::new()
            .prefix("jailtx-test-")
            .tempdir()
            .expect("tempdir");
        // Physical paths: the binary stores BASE resolved, and plans carry
        // absolute paths that must compare equal to it.
        let base = tmp.path().canonicalize().expect("canonicalize tempdir");
        let root = base.join("root");
        let scratch = base.join("scratch");
        for d in [&root, &scratch] {
            std::fs::create_dir(d).expect("mkdir");
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Root {
            _tmp: tmp,
            root,
            scratch,
        }
    }

    /// A root with `jailtx init` done (`j/`, `js/`, `.jailtx/`).
    pub fn fresh() -> Root {
        let r = Root::bare();
        let out = r.run(&["init"], &[]);
        assert_eq!(out.code(), Some(0), "init failed: {out}");
        r
    }

    /// `ROOT/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// The state dir.
    pub fn state(&self) -> PathBuf {
        self.root.join(".jailtx")
    }

    pub fn journal(&self) -> PathBuf {
        self.state().join("journal")
    }

    pub fn history_file(&self) -> PathBuf {
        self.state().join("history")
    }

    /// Runs `jailtx --root ROOT ARGS…` with `env` added to a scrubbed environment.
    pub fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        let mut full: Vec<&OsStr> = vec![OsStr::new("--root"), self.root.as_os_str()];
        full.extend(args.iter().map(OsStr::new));
        run_bin(&full, env)
    }

    /// Writes `plan` as JSON into the scratch folder and returns its path.
    pub fn plan_file(&self, name: &str, plan: &Plan) -> PathBuf {
        let p = self.scratch.join(format!("{name}.json"));
        std::fs::write(
            &p,
            serde_json::to_string_pretty(plan).expect("plan to JSON"),
        )
        .expect("write plan");
        p
    }

    /// Writes raw text as a plan file (for malformed plans).
    pub fn raw_plan_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.scratch.join(format!("{name}.json"));
        std::fs::write(&p, text).expect("write plan");
        p
    }

    /// `jailtx history --json`, parsed.
    pub fn history_json(&self) -> serde_json::Value {
        let out = self.run(&["history", "--json"], &[]);
        assert_eq!(out.code(), Some(0), "history --json: {out}");
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("history JSON: {e}: {out}"))
    }

    /// The snapshot of the tree under the root, state dir excluded.
    pub fn tree(&self) -> Snapshot {
        snapshot(&self.root, &[".jailtx"])
    }

    /// The snapshot of everything under the root, state dir included, except
    /// the lock file's contents: the pid of the last run that held the lock,
    /// advisory, rewritten by every locked run by design.
    pub fn everything(&self) -> Snapshot {
        let mut s = snapshot(&self.root, &[]);
        if let Some(e) = s.get_mut(".jailtx/lock") {
            e.content = None;
        }
        s
    }
}

/// What a run of the binary did.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// The signal that killed the process, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.status.signal()
    }

    /// Asserts the run was killed by SIGKILL (a `JAILTX_FAULT` firing).
    pub fn assert_killed(&self, what: &str) {
        assert_eq!(
            self.signal(),
            Some(9),
            "{what}: expected death by SIGKILL: {self}"
        );
    }

    /// Asserts the exit code and that stderr is exactly one line starting
    /// `jailtx: `; returns that line.
    pub fn one_line_error(&self, code: i32, what: &str) -> &str {
        assert_eq!(self.code(), Some(code), "{what}: exit code: {self}");
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{what}: stderr must be one line: {self}");
        assert!(
            lines[0].starts_with("jailtx: "),
            "{what}: stderr must start with `jailtx: `: {self}"
        );
        lines[0]
    }
}

impl std::fmt::Display for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status {:?}\n--- stdout\n{}--- stderr\n{}---",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs the binary with `args` and `env` added to a scrubbed environment.
pub fn run_bin<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Out {
    let mut cmd = Command::new(BIN);
    cmd.args(args);
    for k in SCRUBBED_ENV {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn jailtx");
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Other,
}

/// A file's contents: the bytes when small, else their length and BLAKE3.
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    Hash { len: u64, blake3: String },
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Content::Hash { len, blake3 } => write!(f, "{len} bytes, blake3 {blake3}"),
        }
    }
}

/// Files at most this long are kept byte for byte in a snapshot.
const INLINE_MAX: usize = 4096;

impl Content {
    pub fn of(bytes: &[u8]) -> Content {
        if bytes.len() <= INLINE_MAX {
            Content::Bytes(bytes.to_vec())
        } else {
            Content::Hash {
                len: bytes.len() as u64,
                blake3: blake3::hash(bytes).to_hex().to_string(),
            }
        }
    }
}

/// One entry of a snapshot: what `ls -l` and `cmp` would compare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits with setuid, setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Regular files only.
    pub content: Option<Content>,
    /// Symlinks only; a target inside the root is written `$ROOT/…` so
    /// snapshots of different roots compare.
    pub target: Option<String>,
    /// Regular files with more than one name in the snapshot: the first such
    /// name (in path order). Hard links are thus compared, not inode numbers.
    pub hardlink_of: Option<String>,
}

/// Relative path (`.` for the root itself) -> entry.
pub type Snapshot = BTreeMap<String, Entry>;

/// Walks `dir` without following symlinks. `exclude` lists relative paths
/// whose whole subtree is left out (e.g. `.jailtx`, the state dir).
pub fn snapshot(dir: &Path, exclude: &[&str]) -> Snapshot {
    let mut out = Snapshot::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    walk(dir, dir, ".", exclude, &mut out, &mut inodes);
    for names in inodes.values().filter(|n| n.len() > 1) {
        let first = names.iter().min().expect("non-empty").clone();
        for n in names {
            out.get_mut(n).expect("entry").hardlink_of = Some(first.clone());
        }
    }
    out
}

fn walk(
    root: &Path,
    path: &Path,
    rel: &str,
    exclude: &[&str],
    out: &mut Snapshot,
    inodes: &mut BTreeMap<(u64, u64), Vec<String>>,
) {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("lstat {}: {e}", path.display()));
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else {
        Kind::Other
    };
    let content = (kind == Kind::File).then(|| {
        Content::of(&std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display())))
    });
    let target = (kind == Kind::Symlink).then(|| {
        let t = std::fs::read_link(path).expect("readlink");
        let t = t.to_string_lossy().into_owned();
        let r = root.to_string_lossy();
        match t.strip_prefix(r.as_ref()) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("$ROOT{rest}"),
            _ => t,
        }
    });
    if kind == Kind::File && meta.nlink() > 1 {
        inodes
            .entry((meta.dev(), meta.ino()))
            .or_default()
            .push(rel.to_owned());
    }
    out.insert(
        rel.to_owned(),
        Entry {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            content,
            target,
            hardlink_of: None,
        },
    );
    if kind == Kind::Dir {
        let mut names: Vec<_> = std::fs::read_dir(path)
            .unwrap_or_else(|e| panic!("read_dir {}: {e}", path.display()))
            .map(|e| e.expect("dirent").file_name())
            .collect();
        names.sort();
        for name in names {
            let name = name.to_string_lossy().into_owned();
            let child = if rel == "." {
                name.clone()
            } else {
                format!("{rel}/{name}")
            };
            if exclude.iter().any(|x| *x == child) {
                continue;
            }
            walk(root, &path.join(&name), &child, exclude, out, inodes);
        }
    }
}

/// The differences between two snapshots, one line each ("" when equal).
pub fn diff(a: &Snapshot, b: &Snapshot) -> String {
    let mut s = String::new();
    for (k, v) in a {
        match b.get(k) {
            None => writeln!(s, "  only in left:  {k} {v:?}").unwrap(),
            Some(w) if w != v => {
                writeln!(s, "  differs:       {k}\n    left  {v:?}\n    right {w:?}").unwrap()
            }
            _ => {}
        }
    }
    for (k, w) in b {
        if !a.contains_key(k) {
            writeln!(s, "  only in right: {k} {w:?}").unwrap();
        }
    }
    s
}

/// Asserts two snapshots are equal, listing the differences when not.
#[track_caller]
pub fn assert_same(what: &str, actual: &Snapshot, expected: &Snapshot) {
    if actual != expected {
        panic!(
            "{what}: trees differ (left = actual, right = expected):\n{}",
            diff(actual, expected)
        );
    }
}

/// Builds a [`Plan`] step by step; serialises to the JSON `run-plan` reads.
pub struct PlanBuilder {
    plan: Plan,
    commit: Option<usize>,
}

impl PlanBuilder {
    pub fn new(op: &str, summary: &str) -> Self {
        PlanBuilder {
            plan: Plan::new(op, summary),
            commit: None,
        }
    }

    pub fn step(mut self, name: &str, action: Action) -> Self {
        self.plan.steps.push(Step {
            name: name.to_owned(),
            action,
        });
        self
    }

    /// Puts the commit point before the next step (default: after the last).
    pub fn commit_here(mut self) -> Self {
        self.commit = Some(self.plan.steps.len());
        self
    }

    pub fn mkdir(self, name: &str, path: impl Into<PathBuf>, mode: u32) -> Self {
        self.step(
            name,
            Action::MakeDir {
                path: path.into(),
                mode,
            },
        )
    }

    pub fn write(self, name: &str, path: impl Into<PathBuf>, contents: &str, mode: u32) -> Self {
        self.step(
            name,
            Action::WriteFile {
                path: path.into(),
                contents: contents.to_owned(),
                mode,
            },
        )
    }

    pub fn symlink(self, name: &str, target: impl Into<PathBuf>, link: impl Into<PathBuf>) -> Self {
        self.step(
            name,
            Action::Symlink {
                target: target.into(),
                link: link.into(),
            },
        )
    }

    pub fn rename(self, name: &str, from: impl Into<PathBuf>, to: impl Into<PathBuf>) -> Self {
        self.step(
            name,
            Action::Rename {
                from: from.into(),
                to: to.into(),
            },
        )
    }

    pub fn copy_tree(self, name: &str, from: impl Into<PathBuf>, to: impl Into<PathBuf>) -> Self {
        self.step(
            name,
            Action::CopyTree {
                from: from.into(),
                to: to.into(),
            },
        )
    }

    pub fn remove_tree(self, name: &str, path: impl Into<PathBuf>) -> Self {
        self.step(name, Action::RemoveTree { path: path.into() })
    }

    pub fn note(mut self, k: &str, v: &str) -> Self {
        self.plan.notes.insert(k.to_owned(), v.to_owned());
        self
    }

    pub fn build(mut self) -> Plan {
        self.plan.commit = self.commit.unwrap_or(self.plan.steps.len()) as u32;
        self.plan
    }
}

/// `jailtx run-plan --dry-run --json FILE` on `root`: the plan as the binary
/// read it (steps and commit point), the source crash points are derived from.
pub fn dry_run_plan(root: &Root, file: &Path) -> serde_json::Value {
    let out = root.run(
        &[
            "--dry-run",
            "--json",
            "run-plan",
            file.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    assert_eq!(out.code(), Some(0), "dry run: {out}");
    let v: serde_json::Value =
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("dry-run JSON: {e}: {out}"));
    assert_eq!(v["dry_run"], true, "{out}");
    v["plan"].clone()
}

/// The summaries `history --json` lists for transaction `tx`.
pub fn history_entries(history: &serde_json::Value, tx: u64) -> Vec<serde_json::Value> {
    history["transactions"]
        .as_array()
        .expect("transactions array")
        .iter()
        .filter(|t| t["tx"] == tx)
        .cloned()
        .collect()
}

pub fn mkdir_mode(p: &Path, mode: u32) {
    std::fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

pub fn write_mode(p: &Path, contents: &[u8], mode: u32) {
    std::fs::write(p, contents).unwrap_or_else(|e| panic!("write {}: {e}", p.display()));
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// The world the representative plan works on, made under `dir` outside any
/// transaction: a small skel (`src/`) with a symlink, a hard link, a sticky
/// dir, a setuid file, a fifo, a file owned by another user and one too large
/// to inline in a snapshot; and `old/`, which the plan moves aside and
/// removes after its commit point. `dir/js` must exist (the plan moves its
/// new tree there; `init` makes it).
pub fn make_fixture(dir: &Path) {
    use std::os::unix::fs::symlink;
    let src = dir.join("src");
    mkdir_mode(&src, 0o755);
    write_mode(&src.join("file.txt"), b"hello\n", 0o644);
    write_mode(&src.join("tool"), b"#!/bin/sh\necho hi\n", 0o755);
    write_mode(&src.join("suid"), b"setuid", 0o4755);
    symlink("file.txt", src.join("link")).expect("symlink");
    std::fs::hard_link(src.join("file.txt"), src.join("hard")).expect("hard link");
    mkdir_mode(&src.join("sticky"), 0o1777);
    write_mode(&src.join("sticky/inner"), b"inner\n", 0o600);
    std::os::unix::fs::chown(src.join("sticky/inner"), Some(1234), Some(5678)).expect("chown");
    mkdir_mode(&src.join("sub"), 0o700);
    let big: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    write_mode(&src.join("sub/big.bin"), &big, 0o600);
    symlink("/nonexistent/abs", src.join("sub/abs")).expect("symlink");
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .expect("mkfifo");
    std::fs::set_permissions(src.join("fifo"), std::fs::Permissions::from_mode(0o640))
        .expect("chmod");

    let old = dir.join("old");
    mkdir_mode(&old, 0o755);
    write_mode(&old.join("a.txt"), b"old a\n", 0o644);
    mkdir_mode(&old.join("nested"), 0o750);
    write_mode(&old.join("nested/b.txt"), b"old b\n", 0o640);
    symlink("../a.txt", old.join("nested/l")).expect("symlink");
}

/// How the failing variant of the representative plan fails, right before
/// its commit point.
#[derive(Debug, Clone, Copy)]
pub enum Fail {
    /// write-file into a directory that does not exist.
    WriteIntoMissingDir,
    /// rename whose source does not exist.
    RenameMissingSource,
}

/// The representative plan over [`make_fixture`]'s world in `dir`: every
/// filesystem action, a move-aside before the commit point and the removal
/// of what was moved aside after it. With `fail`, a step that must fail is
/// put right before the commit point (named `fail`).
pub fn representative_plan(dir: &Path, fail: Option<Fail>) -> Plan {
    let p = |s: &str| dir.join(s);
    let mut b = PlanBuilder::new("crash-test", "every fs action")
        .note("fixture", "src+old")
        .mkdir("mkdir-new", p("new"), 0o750)
        .write("write-conf", p("new/app.conf"), "key = value\n", 0o640)
        .copy_tree("copy-skel", p("src"), p("new/tree"))
        .symlink("link-current", "js/app", p("current"))
        .rename("aside-old", p("old"), p("old.aside"))
        .rename("promote", p("new"), p("js/app"));
    b = match fail {
        None => b,
        Some(Fail::WriteIntoMissingDir) => {
            b.write("fail", p("missing-dir/conf"), "never written\n", 0o644)
        }
        Some(Fail::RenameMissingSource) => b.rename("fail", p("missing"), p("missing.moved")),
    };
    b.commit_here()
        .remove_tree("remove-old", p("old.aside"))
        .build()
}

/// Checks the AFTER tree of the representative plan (relative to its dir)
/// by hand, once, so that the crash tests compare against a known-good tree.
pub fn check_representative_after(before: &Snapshot, after: &Snapshot) {
    assert_ne!(before, after, "the plan must change the tree");
    assert!(after.contains_key("js/app/tree/sticky/inner"), "{after:?}");
    assert_eq!(after["js/app/app.conf"].mode, 0o640);
    assert_eq!(after["js/app"].mode, 0o750);
    assert_eq!(after["js/app/tree/sticky"].mode, 0o1777);
    assert_eq!(after["js/app/tree/suid"].mode, 0o4755);
    assert_eq!(after["js/app/tree/sticky/inner"].uid, 1234);
    assert_eq!(after["js/app/tree/sticky/inner"].gid, 5678);
    assert_eq!(after["js/app/tree/fifo"].kind, Kind::Fifo);
    assert_eq!(
        after["js/app/tree/hard"].hardlink_of.as_deref(),
        Some("js/app/tree/file.txt")
    );
    assert_eq!(
        after["js/app/tree/sub/big.bin"].content,
        before["src/sub/big.bin"].content
    );
    assert_eq!(after["current"].target.as_deref(), Some("js/app"));
    assert!(!after.contains_key("old") && !after.contains_key("old.aside"));
    assert!(!after.keys().any(|k| k.contains("jailtx")));
}

/// Maps `f` over `items` on a few threads, keeping the order: the crash
/// tests spend their time waiting for fsyncs and child processes, not on the
/// CPU. A panic in any call fails the caller (after the others finish).
pub fn par_map<T: Sync, R: Send>(items: &[T], f: impl Fn(&T) -> R + Sync) -> Vec<R> {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicUsize, Ordering};
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(2, 4);
    std::thread::scope(|s| {
        for _ in 0..threads.min(items.len()) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(i) else { break };
                    let r = f(item);
                    out.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                }
            });
        }
    });
    out.into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|r| r.expect("every item mapped"))
        .collect()
}

/// [`par_map`] for its effects.
pub fn par_for_each<T: Sync>(items: &[T], f: impl Fn(&T) + Sync) {
    par_map(items, f);
}
