//! The one harness of the integration tests: running the binary on scratch
//! roots, tree snapshots, private mount namespaces, real jails on loopback
//! addresses, simulated reboots, and the invariants SPEC section 4 promises
//! after any crash followed by `recover`. Engine-level material (a plan
//! builder, the representative plan and its fixture) is in [`plans`].
//!
//! Every test binary uses a different part of it (hence `dead_code`, which
//! also covers [`plans`]).
#![allow(dead_code)]

pub mod cli_tree;
pub mod decoy;
pub mod freebsd;
pub mod matrix;
pub mod minisign;
pub mod plans;
pub mod variants;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs::Metadata;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use jailtx::engine::Plan;
use serde_json::Value;

// ------------------------------------------------------------ the binary

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_jailtx");

/// Variables of the binary a test must never inherit from whoever runs the
/// suite (a stray `JAILTX_FAULT` would kill every run).
const SCRUBBED_ENV: [&str; 4] = ["JAILTX_FAULT", "JAILTX_ROOT", "JAILTX_LOG", "RUST_LOG"];

/// The forward instants of `JAILTX_FAULT`, around each step.
pub const FORWARD: [&str; 4] = [
    "before-intent",
    "after-intent",
    "after-effect",
    "after-done",
];

/// The compensation instants, around each undo.
pub const COMPENSATION: [&str; 4] = [
    "comp-before-intent",
    "comp-after-intent",
    "comp-after-effect",
    "comp-after-done",
];

/// `jailtx ARGS…` in a scrubbed environment, not yet run.
pub fn jailtx<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args);
    for v in SCRUBBED_ENV {
        c.env_remove(v);
    }
    c
}

/// Runs the binary with `args` and `env` added to a scrubbed environment.
pub fn run_bin<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &str)]) -> Out {
    output(jailtx(args), env)
}

fn output(mut c: Command, env: &[(&str, &str)]) -> Out {
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().expect("spawn jailtx");
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `scripts/install /usr/local` into `destdir` (as `DESTDIR`) with the
/// test binary; fails the test, with the script's stderr, unless it succeeds.
pub fn install_into(destdir: &Path) {
    let out = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install"))
        .arg("/usr/local")
        .env("DESTDIR", destdir)
        .env("JAILTX_BIN", BIN)
        .output()
        .expect("run scripts/install");
    assert!(
        out.status.success(),
        "scripts/install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether `status` is a death by SIGKILL (what `JAILTX_FAULT` does).
pub fn killed(status: &ExitStatus) -> bool {
    status.signal() == Some(9)
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

    /// Whether a `JAILTX_FAULT` fired (death by SIGKILL).
    pub fn killed(&self) -> bool {
        killed(&self.status)
    }

    /// Asserts the run was killed by SIGKILL (a `JAILTX_FAULT` firing).
    #[track_caller]
    pub fn assert_killed(&self, what: &str) {
        assert_eq!(
            self.signal(),
            Some(9),
            "{what}: expected death by SIGKILL: {self}"
        );
    }

    /// Asserts the exit code and that exactly one stderr line starts
    /// `jailtx: ` (log lines may precede it); returns that line.
    #[track_caller]
    pub fn error_line(&self, code: i32) -> &str {
        assert_eq!(self.code(), Some(code), "exit code: {self}");
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("jailtx: "))
            .collect();
        assert_eq!(errors.len(), 1, "one error line: {self}");
        errors[0]
    }

    /// Asserts the exit code and that stderr is exactly one line starting
    /// `jailtx: `; returns that line.
    #[track_caller]
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

/// The arguments of `recover`, backwards when `rollback`.
pub fn recover_args(rollback: bool) -> &'static [&'static str] {
    if rollback {
        &["recover", "--rollback"]
    } else {
        &["recover"]
    }
}

/// Whether a crash at step `i` of a plan whose commit point is `commit`,
/// recovered with `rollback` or not, must leave the tree as before the
/// transaction (SPEC section 4: the commit record is appended just before
/// step `commit`'s first instant; from there on, and whenever recovery goes
/// forwards, the transaction completes).
pub fn rolls_back(i: usize, commit: usize, rollback: bool) -> bool {
    rollback && i < commit
}

/// Runs one case of a long run (a matrix, a soak): its violations, or
/// "panicked: …" when it panicked (say, a setup command failing), which is
/// that case's failure, not the end of the run.
pub fn run_isolated<T>(f: impl FnOnce() -> Result<T, Vec<String>>) -> Result<T, Vec<String>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|e| {
        let why = e
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(vec![format!("panicked: {why}")])
    })
}

/// Prints a failed case's violations as they come (a long run shows them
/// before its end) and returns them as one line for the final report.
pub fn report_failure(label: &str, bad: &[String]) -> String {
    println!("FAIL {label}:\n       {}", bad.join("\n       "));
    format!("{label}: {}", bad.join("; "))
}

/// Fails the test when any of `total` cases failed, listing them.
#[track_caller]
pub fn assert_no_failures(failures: &[String], total: usize, cases: &str) {
    assert!(
        failures.is_empty(),
        "{} of {total} {cases} broke an invariant:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The step names of a plan as the binary prints it (`--dry-run --json`):
/// crash points are derived from these, never listed by hand.
pub fn step_names(plan: &Value) -> Vec<String> {
    plan["steps"]
        .as_array()
        .unwrap_or_else(|| panic!("no steps in {plan}"))
        .iter()
        .map(|s| s["name"].as_str().expect("step name").to_owned())
        .collect()
}

/// The summaries `history --json` lists for transaction `tx`.
pub fn history_entries(history: &Value, tx: u64) -> Vec<Value> {
    history["transactions"]
        .as_array()
        .expect("transactions array")
        .iter()
        .filter(|t| t["tx"] == tx)
        .cloned()
        .collect()
}

// ------------------------------------------------------------ scratch roots

/// A scratch folder holding a jailtx root (`root`) and, beside it, a folder
/// (`scratch`) for plan files, worlds and the like, so that nothing a test
/// writes for itself lands inside the tree it snapshots. When dropped it
/// kills every process whose root is below it (jails) and unmounts what is
/// mounted there, so a failed test leaves nothing running.
pub struct Root {
    _tmp: tempfile::TempDir,
    /// The scratch folder, physical: /proc reports mounts and process roots
    /// resolved, and the binary stores BASE resolved (plans carry absolute
    /// paths that must compare equal to it).
    dir: PathBuf,
    pub root: PathBuf,
    pub scratch: PathBuf,
}

impl Root {
    fn make(parent: &Path) -> Root {
        let tmp = tempfile::Builder::new()
            .prefix("jailtx-")
            .tempdir_in(parent)
            .expect("tempdir");
        let dir = tmp.path().canonicalize().expect("canonicalize tempdir");
        let root = dir.join("r");
        let scratch = dir.join("scratch");
        for d in [&root, &scratch] {
            std::fs::create_dir(d).expect("mkdir");
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        Root {
            _tmp: tmp,
            dir,
            root,
            scratch,
        }
    }

    /// An empty root (mode 0755) in the system's temp dir, `init` not run:
    /// for the engine-level tests, which mount nothing and start no jail.
    pub fn bare() -> Root {
        Root::make(&std::env::temp_dir())
    }

    /// [`Root::bare`] with `jailtx init` done (`j/`, `js/`, `.jailtx/`).
    pub fn fresh() -> Root {
        let r = Root::bare();
        r.ok(&["init"]);
        r
    }

    /// A root for real jails, under /var/tmp/jailtx-* (where a leftover
    /// mount or jail is looked for after a run), with `config` as its
    /// jailtx.toml and `jailtx init` done.
    pub fn new(config: Option<&str>) -> Root {
        let r = Root::make(Path::new("/var/tmp"));
        if let Some(c) = config {
            r.write("jailtx.toml", c);
        }
        r.ok(&["init"]);
        r
    }

    /// [`Root::new`], then a template from `world`, then the jails of
    /// `fleet` in their states.
    pub fn with_jails(config: Option<&str>, world: &Path, fleet: &[JailDef]) -> Root {
        let r = Root::new(config);
        r.template(world);
        for j in fleet {
            r.ok(&j.create_args());
            if j.state == RunState::Unmounted {
                let p = r.j().join(&j.name);
                nix::mount::umount(&p.join("s")).unwrap();
                nix::mount::umount(&p).unwrap();
            }
        }
        r
    }

    /// The scratch folder (`root` and `scratch` are inside it).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `ROOT/rel`.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    pub fn j(&self) -> PathBuf {
        self.path("j")
    }

    pub fn js(&self) -> PathBuf {
        self.path("js")
    }

    /// The state dir.
    pub fn state(&self) -> PathBuf {
        self.path(".jailtx")
    }

    pub fn journal(&self) -> PathBuf {
        self.state().join("journal")
    }

    pub fn history_file(&self) -> PathBuf {
        self.state().join("history")
    }

    pub fn manifests_dir(&self) -> PathBuf {
        self.state().join("manifests")
    }

    /// `jailtx --root ROOT ARGS…` in a scrubbed environment, not yet run.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = jailtx(&[OsStr::new("--root"), self.root.as_os_str()]);
        c.args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Out {
        self.run_env(args, &[])
    }

    /// Runs with `env` added to the scrubbed environment.
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        output(self.command(args), env)
    }

    /// Runs, asserts the exit code is `want`, returns stdout.
    #[track_caller]
    pub fn code(&self, args: &[&str], want: i32) -> String {
        let out = self.run(args);
        assert_eq!(out.code(), Some(want), "jailtx {args:?}: {out}");
        out.stdout
    }

    /// Runs, asserts success, returns stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        self.code(args, 0)
    }

    /// `args --json`, asserting the exit code is `want`: its one document.
    #[track_caller]
    pub fn json_code(&self, args: &[&str], want: i32) -> Value {
        let mut a = args.to_vec();
        a.push("--json");
        let text = self.code(&a, want);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{a:?}: {e}: {text}"))
    }

    /// `args --json`, asserting success: its one document.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> Value {
        self.json_code(args, 0)
    }

    /// The plan `args --dry-run --json` prints.
    #[track_caller]
    pub fn dry_run_plan(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.push("--dry-run");
        let v = self.json(&a);
        assert_eq!(v["dry_run"], true, "{v}");
        v["plan"].clone()
    }

    /// `jailtx history --json`.
    pub fn history(&self) -> Value {
        self.json(&["history"])
    }

    /// The transactions `history` lists, oldest first.
    pub fn transactions(&self) -> Vec<Value> {
        self.history()["transactions"]
            .as_array()
            .expect("transactions array")
            .clone()
    }

    pub fn status(&self) -> Value {
        self.json(&["status"])
    }

    /// name -> jid of the jails `status` reports running.
    pub fn jids(&self) -> BTreeMap<String, Option<u64>> {
        self.status()["jails"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| (j["name"].as_str().unwrap().to_owned(), j["jid"].as_u64()))
            .collect()
    }

    /// `jailtx template build --from-dir WORLD`.
    pub fn template(&self, world: &Path) {
        self.ok(&["template", "build", "--from-dir", world.to_str().unwrap()]);
    }

    /// The text of `ROOT/rel`.
    pub fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }

    pub fn write(&self, rel: &str, text: &str) {
        std::fs::write(self.path(rel), text).unwrap_or_else(|e| panic!("{rel}: {e}"));
    }

    /// Writes `plan` as JSON into the scratch folder and returns its path.
    pub fn plan_file(&self, name: &str, plan: &Plan) -> PathBuf {
        let text = serde_json::to_string_pretty(plan).expect("plan to JSON");
        self.raw_plan_file(name, &text)
    }

    /// Writes raw text as a plan file (for malformed plans).
    pub fn raw_plan_file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.scratch.join(format!("{name}.json"));
        std::fs::write(&p, text).expect("write plan");
        p
    }

    /// The exact snapshot of the tree under the root, state dir excluded.
    pub fn tree(&self) -> Snapshot {
        snapshot(&self.root, &[".jailtx"])
    }

    /// The exact snapshot of everything under the root, state dir included,
    /// except the lock file's contents: the pid of the last run that held
    /// the lock, advisory, rewritten by every locked run by design.
    pub fn everything(&self) -> Snapshot {
        let mut s = snapshot(&self.root, &[]);
        if let Some(e) = s.get_mut(LOCK) {
            e.content = None;
        }
        s
    }

    /// The text of `usr/share/misc/world-version` below `j/<dir>`.
    pub fn version_in(&self, dir: &str) -> Option<String> {
        std::fs::read_to_string(self.j().join(dir).join("usr/share/misc/world-version"))
            .ok()
            .map(|s| s.trim().to_owned())
    }

    /// Archived templates in `j/` (name -> world-version), as on disk.
    pub fn archives(&self) -> BTreeMap<String, String> {
        std::fs::read_dir(self.j())
            .unwrap()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_owned();
                jailtx::ops::upgrade::parse_archive(&name)?;
                Some((name.clone(), self.version_in(&name).unwrap_or_default()))
            })
            .collect()
    }

    /// The names of the manifests in the state dir (`mroot`, `mroot.DATE`…).
    pub fn manifest_names(&self) -> BTreeSet<String> {
        std::fs::read_dir(self.manifests_dir())
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| {
                        e.file_name()
                            .to_str()?
                            .strip_suffix(".manifest")
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The BLAKE3 of template `name`'s manifest file, if it has one.
    pub fn manifest_hash(&self, name: &str) -> Option<String> {
        std::fs::read(self.manifests_dir().join(format!("{name}.manifest")))
            .ok()
            .map(|b| blake3::hash(&b).to_string())
    }

    /// (name, inode) of the current template and of every archive.
    pub fn templates(&self) -> Vec<(String, u64)> {
        let mut out = vec![("mroot".to_owned(), self.mroot_ino())];
        for name in self.archives().into_keys() {
            if let Ok(m) = std::fs::metadata(self.j().join(&name)) {
                out.push((name, m.ino()));
            }
        }
        out
    }

    pub fn mroot_ino(&self) -> u64 {
        std::fs::metadata(self.j().join("mroot")).unwrap().ino()
    }

    /// What a reboot does to this root: every jail process killed, every
    /// mount under it gone (deepest first).
    pub fn simulate_reboot(&self) {
        let left = kill_processes_under(&self.dir);
        assert!(left.is_empty(), "processes survive SIGKILL: {left:?}");
        for m in mounts_under(&self.dir).into_iter().rev() {
            if nix::mount::umount(&m).is_err() {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        assert!(mounts_under(&self.dir).is_empty());
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let left = kill_processes_under(&self.dir);
        if !left.is_empty() {
            eprintln!("jail processes survive SIGKILL: {left:?}");
        }
        for m in mounts_under(&self.dir).into_iter().rev() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

// ------------------------------------------------------------ snapshots

/// The lock file, relative to the root: its content is the pid of the last
/// run that held the lock (advisory, not state).
const LOCK: &str = ".jailtx/lock";

/// The type of a tree entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
    Symlink,
    Fifo,
    Socket,
    CharDevice,
    BlockDevice,
}

/// A file's contents: the bytes when small, else their length and BLAKE3.
#[derive(Clone, PartialEq, Eq)]
pub enum Content {
    Bytes(Vec<u8>),
    Hash {
        len: u64,
        blake3: String,
    },
    /// In a live snapshot only: the file could not be read (the error).
    Unreadable(String),
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::Bytes(b) => write!(f, "{:?}", String::from_utf8_lossy(b)),
            Content::Hash { len, blake3 } => write!(f, "{len} bytes, blake3 {blake3}"),
            Content::Unreadable(e) => write!(f, "unreadable: {e}"),
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
    /// Symlinks only; a target inside the snapshot's directory is written
    /// `$ROOT/…` so snapshots of different roots compare.
    pub target: Option<String>,
    /// Character and block devices only.
    pub rdev: Option<u64>,
    /// Exact snapshots, regular files with more than one name in the
    /// snapshot: the first such name (in path order). Hard links are thus
    /// compared, not inode numbers.
    pub hardlink_of: Option<String>,
}

/// Relative path (`.` for the directory itself) -> entry.
pub type Snapshot = BTreeMap<String, Entry>;

/// The exact snapshot of `dir`, which nothing else writes to while it is
/// read: every entry from `dir` itself (`.`) down, hard links grouped, and
/// any error reading it fails the test. `exclude` lists relative paths
/// whose whole subtree is left out (e.g. `.jailtx`, the state dir).
pub fn snapshot(dir: &Path, exclude: &[&str]) -> Snapshot {
    walk(dir, false, &|rel| {
        exclude.iter().any(|x| Path::new(x) == rel)
    })
}

/// The snapshot of a tree that running jails may write to while it is read
/// (`js/`, a whole root): an entry that vanishes mid-walk is passed over
/// and a file that cannot be read is recorded as such. Only what is below
/// `dir` is listed (the directory itself is often a mount point, whose own
/// metadata is the mounted tree's), and hard links are not grouped (a
/// bind-mounted template shows one inode under every jail's path).
/// `skip(rel)` leaves out an entry and its subtree.
pub fn snapshot_live(dir: &Path, skip: impl Fn(&Path) -> bool) -> Snapshot {
    walk(dir, true, &skip)
}

/// `js/` — every jail's own data — minus `NAME/var/www/index.html`, which the
/// world's `/etc/rc` rewrites at each start ("<hostname> world <VERSION>":
/// it changes with the template by design).
pub fn snapshot_js(root: &Root) -> Snapshot {
    snapshot_live(&root.js(), |rel| {
        let mut c = rel.components();
        c.next();
        c.as_path() == Path::new("var/www/index.html")
    })
}

/// The whole root, live, minus the lock file.
pub fn snapshot_root(root: &Root) -> Snapshot {
    snapshot_live(&root.root, |rel| rel == Path::new(LOCK))
}

/// Walks `dir` without following symlinks; `live` as [`snapshot_live`]
/// says, else as [`snapshot`].
fn walk(dir: &Path, live: bool, skip: &dyn Fn(&Path) -> bool) -> Snapshot {
    let mut out = Snapshot::new();
    let mut inodes: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    // Relative paths still to visit; the empty one is `dir` itself.
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let top = rel.as_os_str().is_empty();
        let path = if top { dir.to_owned() } else { dir.join(&rel) };
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(_) if live => continue,
            Err(e) => panic!("lstat {}: {e}", path.display()),
        };
        let Some(entry) = entry(dir, &path, &meta, live) else {
            continue;
        };
        if entry.kind == Kind::Dir {
            match std::fs::read_dir(&path) {
                Ok(rd) => {
                    for e in rd {
                        let e = match e {
                            Ok(e) => e,
                            Err(_) if live => continue,
                            Err(e) => panic!("read_dir {}: {e}", path.display()),
                        };
                        let child = rel.join(e.file_name());
                        if !skip(&child) {
                            todo.push(child);
                        }
                    }
                }
                Err(_) if live => {}
                Err(e) => panic!("read_dir {}: {e}", path.display()),
            }
        }
        if live && top {
            continue;
        }
        let key = if top {
            ".".to_owned()
        } else {
            rel.to_string_lossy().into_owned()
        };
        if !live && entry.kind == Kind::File && meta.nlink() > 1 {
            inodes
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(key.clone());
        }
        out.insert(key, entry);
    }
    for names in inodes.values().filter(|n| n.len() > 1) {
        let first = names.iter().min().expect("non-empty").clone();
        for n in names {
            out.get_mut(n).expect("entry").hardlink_of = Some(first.clone());
        }
    }
    out
}

/// The entry for `path` (below snapshot directory `dir`); `None` when a
/// live tree's symlink went away before it could be read.
fn entry(dir: &Path, path: &Path, meta: &Metadata, live: bool) -> Option<Entry> {
    let ft = meta.file_type();
    let kind = if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_fifo() {
        Kind::Fifo
    } else if ft.is_socket() {
        Kind::Socket
    } else if ft.is_char_device() {
        Kind::CharDevice
    } else {
        Kind::BlockDevice
    };
    let content = (kind == Kind::File).then(|| match std::fs::read(path) {
        Ok(b) => Content::of(&b),
        Err(e) if live => Content::Unreadable(e.to_string()),
        Err(e) => panic!("read {}: {e}", path.display()),
    });
    let target = if kind == Kind::Symlink {
        let t = match std::fs::read_link(path) {
            Ok(t) => t.to_string_lossy().into_owned(),
            Err(_) if live => return None,
            Err(e) => panic!("readlink {}: {e}", path.display()),
        };
        let d = dir.to_string_lossy();
        Some(match t.strip_prefix(d.as_ref()) {
            Some(rest) if rest.is_empty() || rest.starts_with('/') => format!("$ROOT{rest}"),
            _ => t,
        })
    } else {
        None
    };
    Some(Entry {
        kind,
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        content,
        target,
        rdev: matches!(kind, Kind::CharDevice | Kind::BlockDevice).then(|| meta.rdev()),
        hardlink_of: None,
    })
}

/// The entries that differ between two snapshots, one line each: `-` only
/// in `a`, `+` only in `b`, `~` in both but different (empty: equal).
pub fn diff(a: &Snapshot, b: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("- {k} {v:?}")),
            Some(w) if w != v => out.push(format!("~ {k} {v:?} -> {w:?}")),
            _ => {}
        }
    }
    for (k, w) in b {
        if !a.contains_key(k) {
            out.push(format!("+ {k} {w:?}"));
        }
    }
    out
}

/// Asserts two snapshots are equal, listing the differences when not.
#[track_caller]
pub fn assert_same(what: &str, actual: &Snapshot, expected: &Snapshot) {
    if actual != expected {
        panic!(
            "{what}: trees differ (- only actual, + only expected, ~ actual -> expected):\n  {}",
            diff(actual, expected).join("\n  ")
        );
    }
}

// ------------------------------------------------------------ namespaces and jails

const NS_ENV: &str = "JAILTX_TEST_IN_NS";

/// Re-runs test `name` in a private mount namespace (nothing it mounts can
/// reach the host); true when already inside. The child's stdout (cases,
/// timings) is passed on line by line as it comes, so `--nocapture` shows a
/// long run's progress.
pub fn in_private_ns(name: &str) -> bool {
    if std::env::var_os(NS_ENV).is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([
            name,
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "--include-ignored",
        ])
        .env(NS_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run unshare (util-linux)");
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut text = String::new();
    for line in std::io::BufRead::lines(std::io::BufReader::new(child.stdout.take().unwrap())) {
        let Ok(line) = line else { break };
        println!("{line}");
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait().unwrap();
    let err = err_reader.join().unwrap_or_default();
    assert!(
        status.success() && text.contains("1 passed"),
        "{name} inside its mount namespace:\n{text}\n{err}"
    );
    false
}

/// `scripts/mkworld DEST VERSION`: a small real world (static busybox)
/// whose `/etc/rc` serves "<hostname> world <VERSION>" on the jail's
/// address, port 8080.
pub fn mkworld(dest: &Path, version: u32) {
    let st = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mkworld"))
        .arg(dest)
        .arg(version.to_string())
        .status()
        .unwrap();
    assert!(st.success(), "scripts/mkworld (needs busybox-static)");
}

/// What world `version` says it is: its `usr/share/misc/world-version`,
/// which its jails serve after their hostname.
pub fn world_version(version: u32) -> String {
    format!("world {version}")
}

/// Worlds built once per test process by [`mkworld`].
pub struct Worlds {
    dir: tempfile::TempDir,
}

impl Worlds {
    pub fn new() -> Worlds {
        let dir = tempfile::Builder::new()
            .prefix("jailtx-worlds")
            .tempdir_in("/var/tmp")
            .unwrap();
        Worlds { dir }
    }

    /// The world of `version`, built on first use.
    pub fn get(&self, version: u32) -> PathBuf {
        let w = self.dir.path().join(format!("world{version}"));
        if !w.exists() {
            mkworld(&w, version);
        }
        w
    }

    /// Drops the world of `version` (the soak makes many).
    pub fn forget(&self, version: u32) {
        let _ = std::fs::remove_dir_all(self.dir.path().join(format!("world{version}")));
    }
}

impl Default for Worlds {
    fn default() -> Self {
        Self::new()
    }
}

/// How a jail stands before the transaction under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Mounted and running.
    Running,
    /// Mounted, not running (created without `--start`).
    Stopped,
    /// Neither mounted nor running (its mounts taken away by hand).
    Unmounted,
}

#[derive(Debug, Clone)]
pub struct JailDef {
    pub name: String,
    pub hostname: String,
    pub ip: String,
    pub state: RunState,
}

impl JailDef {
    /// Jail `name` as `name.example.org` on a fresh loopback address.
    pub fn new(name: &str, state: RunState) -> JailDef {
        JailDef {
            name: name.to_owned(),
            hostname: format!("{name}.example.org"),
            ip: fresh_ip(),
            state,
        }
    }

    /// The arguments of its `jail create`, with `--start` when it runs.
    pub fn create_args(&self) -> Vec<&str> {
        let mut args = vec![
            "jail",
            "create",
            &self.name,
            "--hostname",
            &self.hostname,
            "--ip",
            &self.ip,
        ];
        if self.state == RunState::Running {
            args.push("--start");
        }
        args
    }
}

/// Jails of the given names and states, each on a fresh loopback address.
pub fn fleet(spec: &[(&str, RunState)]) -> Vec<JailDef> {
    spec.iter()
        .map(|(name, state)| JailDef::new(name, *state))
        .collect()
}

/// Jails ns and www, both to be started.
pub fn two_running() -> Vec<JailDef> {
    fleet(&[("ns", RunState::Running), ("www", RunState::Running)])
}

/// Jails in every run-state a transaction must restore: two running, one
/// stopped but mounted, one with its root unmounted.
pub fn mixed_fleet() -> Vec<JailDef> {
    fleet(&[
        ("ns", RunState::Running),
        ("www", RunState::Running),
        ("spare", RunState::Stopped),
        ("cold", RunState::Unmounted),
    ])
}

/// Where the next loopback address to hand out is kept, shared by every test
/// process on the machine (cargo runs a binary's tests in parallel, each in
/// its own re-executed process, so a per-process counter is not enough).
const IP_COUNTER: &str = "/tmp/jailtx-test-ip-counter";

/// A loopback address nobody else uses: 127.2-99.x.y, taken from a counter
/// file under an exclusive lock so two concurrent test processes never get
/// the same one, and with port 8080 on it checked free in case a jail of an
/// earlier run still holds it. A test that needs the same address on
/// several roots (a crash matrix) takes it once and holds it.
pub fn fresh_ip() -> String {
    use std::fs::OpenOptions;
    use std::io::Seek;
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(IP_COUNTER)
        .unwrap();
    f.lock().unwrap();
    let mut text = String::new();
    f.read_to_string(&mut text).unwrap();
    let mut n: u32 = text.trim().parse().unwrap_or(0);
    let ip = loop {
        n = (n + 1) % (98 * 250 * 250);
        let ip = format!(
            "127.{}.{}.{}",
            2 + n / (250 * 250),
            1 + (n / 250) % 250,
            1 + n % 250
        );
        if std::net::TcpListener::bind((ip.as_str(), 8080)).is_ok() {
            break ip;
        }
    };
    f.set_len(0).unwrap();
    f.rewind().unwrap();
    write!(f, "{n}").unwrap();
    f.sync_data().unwrap();
    ip
}

/// What the host's boot scripts would do for jailtx's jails after a reboot
/// that no transaction has to recover from: mount every jail that was
/// mounted (as `fstab.NAME` would: the template read-only, `js/NAME` on
/// `s`), then `jailtx start` the ones that ran.
pub fn boot(root: &Root, jails: &[JailDef]) {
    use nix::mount::{MsFlags, mount};
    for j in jails {
        if j.state == RunState::Unmounted {
            continue;
        }
        let dst = root.j().join(&j.name);
        if is_mounted(&dst) {
            continue;
        }
        let none = None::<&str>;
        mount(
            Some(&root.j().join("mroot")),
            &dst,
            none,
            MsFlags::MS_BIND,
            none,
        )
        .unwrap();
        let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        mount(none, &dst, none, ro, none).unwrap();
        mount(
            Some(&root.js().join(&j.name)),
            &dst.join("s"),
            none,
            MsFlags::MS_BIND,
            none,
        )
        .unwrap();
    }
    let mut start = vec!["start"];
    for j in jails {
        if j.state == RunState::Running {
            start.push(&j.name);
        }
    }
    root.ok(&start);
}

/// SIGKILLs every process whose root is below `dir` and waits until they
/// are gone; the ones still there after 30 s (never panics: Drop uses it).
pub fn kill_processes_under(dir: &Path) -> Vec<(u32, PathBuf)> {
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let left = processes_under(dir);
        if left.is_empty() || Instant::now() > until {
            return left;
        }
        for (pid, _) in &left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// (pid, root) of the jail processes below `dir`: those chrooted below it,
/// and those in the PID namespace of a jail init whose `--root` is below it
/// (after `pivot_root` a jail's `/proc/PID/root` reads `/` from the host;
/// the root reported is then the init's `--root`).
pub fn processes_under(dir: &Path) -> Vec<(u32, PathBuf)> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    let ours = std::fs::read_link("/proc/self/ns/pid").ok();
    // (pid, root link, PID namespace link, command line)
    type Proc = (u32, Option<PathBuf>, Option<PathBuf>, Vec<u8>);
    let procs: Vec<Proc> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let root = std::fs::read_link(e.path().join("root")).ok();
            let ns = std::fs::read_link(e.path().join("ns/pid")).ok();
            let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            Some((pid, root, ns, cmdline))
        })
        .collect();
    let init_root = |cmdline: &[u8]| -> Option<PathBuf> {
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.get(1) != Some(&&b"__jail-init"[..]) {
            return None;
        }
        let i = args.iter().position(|a| *a == b"--root")?;
        let root = PathBuf::from(<OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
            args.get(i + 1)?,
        ));
        root.starts_with(&dir).then_some(root)
    };
    let jail_ns: BTreeMap<PathBuf, PathBuf> = procs
        .iter()
        .filter_map(|(_, _, ns, cmdline)| {
            let ns = ns.clone().filter(|n| Some(n) != ours.as_ref())?;
            Some((ns, init_root(cmdline)?))
        })
        .collect();
    procs
        .into_iter()
        .filter_map(|(pid, root, ns, _)| match root {
            Some(root) if root.starts_with(&dir) => Some((pid, root)),
            _ => Some((pid, jail_ns.get(ns.as_ref()?)?.clone())),
        })
        .collect()
}

/// The mount points at or below `dir`, in mount order.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    jailtx::host::mountinfo::mount_points(&text)
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect()
}

pub fn is_mounted(p: &Path) -> bool {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    jailtx::host::mountinfo::mount_points(&text)
        .iter()
        .any(|m| m == p)
}

/// The body of `GET /` on `ip:8080`, retried for about a second.
pub fn http_get(ip: &str) -> Result<String, String> {
    let mut last = String::new();
    for _ in 0..50 {
        match TcpStream::connect((ip, 8080)) {
            Ok(mut s) => {
                s.set_read_timeout(Some(Duration::from_secs(5))).ok();
                write!(s, "GET / HTTP/1.0\r\n\r\n").map_err(|e| e.to_string())?;
                let mut body = String::new();
                s.read_to_string(&mut body).map_err(|e| e.to_string())?;
                return Ok(body
                    .rsplit("\r\n\r\n")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned());
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("no answer from {ip}:8080: {last}"))
}

// ------------------------------------------------------------ SPEC section 4

/// What a root looked like before the transaction under test.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub js: Snapshot,
    pub mroot_ino: u64,
    pub archives: BTreeMap<String, String>,
    pub version: String,
    /// Template directory inode -> hash of its manifest, for the templates
    /// (mroot and archives) that had one.
    pub manifests: BTreeMap<u64, String>,
}

impl Baseline {
    pub fn take(root: &Root) -> Baseline {
        Baseline {
            js: snapshot_js(root),
            mroot_ino: root.mroot_ino(),
            archives: root.archives(),
            version: root.version_in("mroot").unwrap(),
            manifests: root
                .templates()
                .into_iter()
                .filter_map(|(name, ino)| Some((ino, root.manifest_hash(&name)?)))
                .collect(),
        }
    }
}

/// The state a recovered root must be in.
#[derive(Debug, Clone)]
pub struct Expect {
    /// `world N` of mroot, of every mounted jail, and served by every running one.
    pub version: String,
    /// The archives that must be there (name -> their world-version).
    pub archives: BTreeMap<String, String>,
    /// Archives that may be there or may have been pruned (the prune after
    /// an upgrade is a transaction of its own, which a crash can prevent).
    pub prunable: BTreeMap<String, String>,
    /// The inode `j/mroot` must have (the same directory as before, or the
    /// one the switch moved in), when known.
    pub mroot_ino: Option<u64>,
}

/// Checks every invariant of SPEC section 4 that a test can observe; returns
/// the violations (empty: all hold).
pub fn check_invariants(
    root: &Root,
    jails: &[JailDef],
    base: &Baseline,
    want: &Expect,
) -> Vec<String> {
    let mut bad = Vec::new();
    let j = root.j();
    // One template: mroot holds the expected world.
    match root.version_in("mroot") {
        Some(v) if v == want.version => {}
        other => bad.push(format!("mroot holds {other:?}, want {:?}", want.version)),
    }
    if let Some(ino) = want.mroot_ino
        && root.mroot_ino() != ino
    {
        bad.push("j/mroot is not the expected directory (inode differs)".into());
    }
    // Leftovers of staging and side names.
    for e in std::fs::read_dir(&j).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n == "mroot2" || n.contains(".jailtx-") {
            bad.push(format!("j/{n} is left over"));
        }
    }
    // Archives: exactly the expected set, each with its world.
    let archives = root.archives();
    let allowed = |name: &String, version: &String| {
        want.archives.get(name).or(want.prunable.get(name)) == Some(version)
    };
    if want.archives.keys().any(|a| !archives.contains_key(a))
        || archives.iter().any(|(n, v)| !allowed(n, v))
    {
        bad.push(format!(
            "archives {archives:?}, want {:?} and maybe {:?} (before: {:?})",
            want.archives, want.prunable, base.archives
        ));
    }
    // Manifests move with their trees: a template that had one before has
    // the same one now, under its current name; no manifest outlives its
    // tree (pruned archives, a rolled-back staging).
    let manifests = root.manifest_names();
    for (name, ino) in root.templates() {
        if let Some(h) = base.manifests.get(&ino)
            && root.manifest_hash(&name).as_ref() != Some(h)
        {
            bad.push(format!("template {name} lost its manifest (or it changed)"));
        }
    }
    for m in &manifests {
        let dir_ok = (m == "mroot" || jailtx::ops::upgrade::parse_archive(m).is_some())
            && j.join(m).is_dir();
        if !dir_ok {
            bad.push(format!("manifest {m} has no template directory"));
        }
    }
    // The carried-over ports tree exists exactly once, in mroot (jail roots
    // that are mount points show mroot itself and are not counted).
    let names: BTreeSet<&str> = jails.iter().map(|d| d.name.as_str()).collect();
    let mut ports = Vec::new();
    for e in std::fs::read_dir(&j).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        let p = e.path();
        if names.contains(n.as_str()) && is_mounted(&p) {
            continue;
        }
        if std::fs::symlink_metadata(p.join("usr/ports")).is_ok() {
            ports.push(n);
        }
    }
    if ports != ["mroot"] {
        bad.push(format!(
            "usr/ports found in {ports:?}, want exactly [\"mroot\"]"
        ));
    } else if !j.join("mroot/usr/ports/sysutils/jailtx/Makefile").is_file() {
        bad.push("mroot/usr/ports lost its content".into());
    }
    // Every jail in its prior run-state, on the one template.
    let jids = root.jids();
    for d in jails {
        let path = j.join(&d.name);
        let root_m = is_mounted(&path);
        let s_m = is_mounted(&path.join("s"));
        let running = jids.get(&d.name).copied().flatten().is_some();
        let (want_mounted, want_running) = match d.state {
            RunState::Running => (true, true),
            RunState::Stopped => (true, false),
            RunState::Unmounted => (false, false),
        };
        if root_m != want_mounted || s_m != want_mounted {
            bad.push(format!(
                "jail {}: root mounted {root_m}, s mounted {s_m}; want {want_mounted}",
                d.name
            ));
        }
        if running != want_running {
            bad.push(format!(
                "jail {}: running {running}, want {want_running}",
                d.name
            ));
        }
        if root_m {
            match root.version_in(&d.name) {
                Some(v) if v == want.version => {}
                other => bad.push(format!(
                    "jail {} is mounted on {other:?}, want {:?}",
                    d.name, want.version
                )),
            }
        }
        if want_running && running {
            let expect = format!("{} {}", d.hostname, want.version);
            match http_get(&d.ip) {
                Ok(body) if body == expect => {}
                Ok(body) => bad.push(format!("jail {} serves {body:?}, want {expect:?}", d.name)),
                Err(e) => bad.push(format!("jail {}: {e}", d.name)),
            }
        }
    }
    // Every byte of js/* (minus the index.html each start rewrites).
    let js = snapshot_js(root);
    let d = diff(&base.js, &js);
    if !d.is_empty() {
        bad.push(format!("js/ changed: {d:?}"));
    }
    // No stray processes: only the inits (and their children) of running jails.
    let allowed: BTreeSet<PathBuf> = jails
        .iter()
        .filter(|d| jids.get(&d.name).copied().flatten().is_some())
        .map(|d| j.join(&d.name))
        .collect();
    for (pid, proot) in processes_under(root.dir()) {
        if !allowed.contains(&proot) {
            bad.push(format!("stray process {pid} with root {}", proot.display()));
        }
    }
    bad
}

/// A second `recover` must find nothing and change nothing.
pub fn check_second_recover(root: &Root) -> Vec<String> {
    let mut bad = Vec::new();
    let before = snapshot_root(root);
    let jids = root.jids();
    let mounts = mounts_under(root.dir());
    let out = root.run(&["recover"]);
    if !out.status.success() || !out.stdout.contains("nothing to recover") {
        bad.push(format!(
            "second recover: {} {:?} {}",
            out.status,
            out.stdout,
            out.stderr.trim()
        ));
    }
    let d = diff(&before, &snapshot_root(root));
    if !d.is_empty() {
        bad.push(format!("second recover changed files: {d:?}"));
    }
    if root.jids() != jids {
        bad.push("second recover changed the running jails".into());
    }
    if mounts_under(root.dir()) != mounts {
        bad.push("second recover changed the mounts".into());
    }
    bad
}

// ------------------------------------------------------------ randomness

/// A small seeded generator (splitmix64): reproducible without a crate.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// [`Rng::below`] for indices and lengths.
    pub fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// True `percent` times in a hundred.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}
