//! Harness shared by the upgrade crash matrix (`tests/upgrade.rs`) and the
//! random-kill soak (`tests/soak.rs`): private mount namespaces, scratch
//! roots with real jails, simulated reboots, and the invariants SPEC
//! section 4 promises after any crash followed by `recover`.
//!
//! Parts are copied from `tests/jails.rs` (to be deduplicated later).
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_jailtx");
const NS_ENV: &str = "JAILTX_TEST_IN_NS";
/// Variables of the binary a test must never inherit from whoever runs the suite.
const SCRUBBED_ENV: [&str; 4] = ["JAILTX_FAULT", "JAILTX_ROOT", "JAILTX_LOG", "RUST_LOG"];

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

/// Worlds built once per test process by `scripts/mkworld DIR VERSION`.
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
            let st = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mkworld"))
                .arg(&w)
                .arg(version.to_string())
                .status()
                .unwrap();
            assert!(st.success(), "scripts/mkworld (needs busybox-static)");
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

/// Where the next loopback address to hand out is kept, shared by every test
/// process on the machine (cargo runs a binary's tests in parallel, each in
/// its own re-executed process, so a per-process counter is not enough).
const IP_COUNTER: &str = "/tmp/jailtx-test-ip-counter";

/// A loopback address nobody else uses: 127.2-99.x.y (tests/jails.rs keeps
/// 127.100-199.x.y), taken from a counter file under an exclusive lock so two
/// concurrent test processes never get the same one, and with port 8080 on
/// it checked free in case a jail of an earlier run still holds it.
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

/// Jails of the given names and states, each on a fresh loopback address.
pub fn fleet(spec: &[(&str, RunState)]) -> Vec<JailDef> {
    spec.iter()
        .map(|(name, state)| JailDef {
            name: (*name).to_owned(),
            hostname: format!("{name}.example.org"),
            ip: fresh_ip(),
            state: *state,
        })
        .collect()
}

/// A scratch `--root`; kills every jail under it and unmounts it when dropped.
pub struct Root {
    dir: tempfile::TempDir,
}

impl Root {
    /// An empty root with `jailtx init` done and `config` as its jailtx.toml.
    pub fn new(config: Option<&str>) -> Root {
        let dir = tempfile::Builder::new()
            .prefix("jailtx-upg")
            .tempdir_in("/var/tmp")
            .unwrap();
        let root = Root { dir };
        std::fs::create_dir(root.path()).unwrap();
        if let Some(c) = config {
            std::fs::write(root.path().join("jailtx.toml"), c).unwrap();
        }
        root.ok(&["init"]);
        root
    }

    /// Template from `world`, then the jails of `fleet` in their states.
    pub fn with_jails(config: Option<&str>, world: &Path, fleet: &[JailDef]) -> Root {
        let r = Root::new(config);
        r.ok(&["template", "build", "--from-dir", world.to_str().unwrap()]);
        for j in fleet {
            let mut args = vec![
                "jail",
                "create",
                &j.name,
                "--hostname",
                &j.hostname,
                "--ip",
                &j.ip,
            ];
            if j.state == RunState::Running {
                args.push("--start");
            }
            r.ok(&args);
            if j.state == RunState::Unmounted {
                let p = r.j().join(&j.name);
                nix::mount::umount(&p.join("s")).unwrap();
                nix::mount::umount(&p).unwrap();
            }
        }
        r
    }

    /// The scratch dir (the root is `r/` inside it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("r")
    }

    pub fn j(&self) -> PathBuf {
        self.path().join("j")
    }

    pub fn js(&self) -> PathBuf {
        self.path().join("js")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--root").arg(self.path()).args(args);
        for v in SCRUBBED_ENV {
            c.env_remove(v);
        }
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "jailtx {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.ok(&a)).unwrap()
    }

    /// The plan `args --dry-run --json` prints.
    pub fn dry_run_plan(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--dry-run");
        let v = self.json(&a);
        v["plan"].clone()
    }

    pub fn status(&self) -> serde_json::Value {
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

    pub fn manifests_dir(&self) -> PathBuf {
        self.path().join(".jailtx/manifests")
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
        let left = kill_processes_under(self.dir.path());
        assert!(left.is_empty(), "processes survive SIGKILL: {left:?}");
        for m in mounts_under(self.dir.path()).into_iter().rev() {
            if nix::mount::umount(&m).is_err() {
                let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
            }
        }
        assert!(mounts_under(self.dir.path()).is_empty());
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let left = kill_processes_under(self.dir.path());
        if !left.is_empty() {
            eprintln!("jail processes survive SIGKILL: {left:?}");
        }
        for m in mounts_under(self.dir.path()).into_iter().rev() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
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

/// (pid, root) of the processes whose root is below `dir` (jail processes).
pub fn processes_under(dir: &Path) -> Vec<(u32, PathBuf)> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_owned());
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let root = std::fs::read_link(e.path().join("root")).ok()?;
            root.starts_with(&dir).then_some((pid, root))
        })
        .collect()
}

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

pub type Snapshot = BTreeMap<PathBuf, String>;

/// Files under `dir` (relative) with type, mode, owner and content hash;
/// paths for which `skip` is true are left out.
pub fn snapshot_filtered(dir: &Path, skip: &dyn Fn(&Path) -> bool) -> Snapshot {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(dir).unwrap().to_owned();
            if skip(&rel) {
                continue;
            }
            let Ok(m) = std::fs::symlink_metadata(&p) else {
                continue;
            };
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if m.is_file() {
                match std::fs::read(&p) {
                    Ok(b) => format!("file {}", blake3::hash(&b)),
                    Err(e) => format!("file unreadable: {e}"),
                }
            } else {
                format!("special {}", m.rdev())
            };
            out.insert(
                rel,
                format!("{what} {:o} {}:{}", m.mode(), m.uid(), m.gid()),
            );
        }
    }
    out
}

pub fn snapshot(dir: &Path) -> Snapshot {
    snapshot_filtered(dir, &|_| false)
}

/// `js/` — every jail's own data — minus `NAME/var/www/index.html`, which the
/// world's `/etc/rc` rewrites at each start ("<hostname> world <VERSION>":
/// it changes with the template by design).
pub fn snapshot_js(root: &Root) -> Snapshot {
    snapshot_filtered(&root.js(), &|rel| {
        let mut c = rel.components();
        c.next();
        c.as_path() == Path::new("var/www/index.html")
    })
}

/// The whole root, minus the lock file (its content is the last holder's pid).
pub fn snapshot_root(root: &Root) -> Snapshot {
    snapshot_filtered(&root.path(), &|rel| rel == Path::new(".jailtx/lock"))
}

/// The entries that differ between two snapshots, for short failure messages.
pub fn diff(a: &Snapshot, b: &Snapshot) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in a {
        match b.get(k) {
            None => out.push(format!("- {} {v}", k.display())),
            Some(w) if w != v => out.push(format!("~ {} {v} -> {w}", k.display())),
            _ => {}
        }
    }
    for (k, v) in b {
        if !a.contains_key(k) {
            out.push(format!("+ {} {v}", k.display()));
        }
    }
    out
}

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
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !text.contains("nothing to recover") {
        bad.push(format!(
            "second recover: {} {text:?} {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
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

/// Whether `out` is a death by SIGKILL (what `JAILTX_FAULT` does).
pub fn killed(out: &Output) -> bool {
    out.status.signal() == Some(9)
}

pub fn describe(out: &Output) -> String {
    format!(
        "{} stdout {:?} stderr {:?}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

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

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}
