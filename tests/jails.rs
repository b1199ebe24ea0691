//! Templates and jails for real on the Linux backend (issue 3): every test
//! re-runs itself inside a private mount namespace (nothing leaks onto the
//! host) and leaves no jail process behind.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_jailtx");
const NS_ENV: &str = "JAILTX_TEST_IN_NS";

/// Re-runs test `name` in a private mount namespace; true when already inside.
fn in_private_ns(name: &str) -> bool {
    if std::env::var_os(NS_ENV).is_some() {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(NS_ENV, "1")
        .output()
        .expect("run unshare (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "{name} inside its mount namespace:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    false
}

/// A scratch --root with a world; kills any jail left under it when dropped.
struct Root {
    dir: tempfile::TempDir,
    world: PathBuf,
}

impl Root {
    fn new() -> Root {
        let dir = tempfile::Builder::new()
            .prefix("jailtx-test")
            .tempdir_in("/var/tmp")
            .unwrap();
        let world = dir.path().join("world");
        let st = Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/mkworld"))
            .arg(&world)
            .status()
            .unwrap();
        assert!(st.success(), "scripts/mkworld (needs busybox-static)");
        let root = Root { dir, world };
        root.ok(&["init"]);
        root
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("r")
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--root")
            .arg(self.path())
            .args(args)
            .env_remove("JAILTX_FAULT")
            .output()
            .unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "jailtx {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn template(&self) {
        self.ok(&[
            "template",
            "build",
            "--from-dir",
            self.world.to_str().unwrap(),
        ]);
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["status", "--json"])).unwrap()
    }

    fn jid(&self, name: &str) -> Option<u32> {
        self.status()["jails"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .and_then(|j| j["jid"].as_u64())
            .map(|j| j as u32)
    }

    /// Runs a shell command inside jail `name`.
    fn in_jail(&self, name: &str, script: &str) -> Output {
        let jid = self.jid(name).expect("jail running").to_string();
        Command::new("nsenter")
            .args([
                "-t", &jid, "-m", "-u", "-i", "-p", "-r", "-w", "--", "/bin/sh", "-c", script,
            ])
            .output()
            .unwrap()
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = self.run(&["stop"]);
        for pid in processes_under(self.dir.path()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for m in mounts_under(self.dir.path()).into_iter().rev() {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// PIDs of processes whose root is below `dir` (jail processes).
fn processes_under(dir: &Path) -> Vec<u32> {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let root = std::fs::read_link(e.path().join("root")).ok()?;
            root.starts_with(&dir).then_some(pid)
        })
        .collect()
}

fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    jailtx::host::mountinfo::mount_points(&text)
        .into_iter()
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// A loopback address of our own (127.X.Y.Z from the pid), so parallel test
/// binaries never contend for an address.
fn ip(n: u8) -> String {
    let pid = std::process::id();
    format!("127.{}.{}.{n}", 100 + (pid >> 8) % 100, pid & 0xff)
}

fn http_get(ip: &str) -> String {
    let mut last = String::new();
    for _ in 0..50 {
        match TcpStream::connect((ip, 8080)) {
            Ok(mut s) => {
                write!(s, "GET / HTTP/1.0\r\n\r\n").unwrap();
                let mut body = String::new();
                s.read_to_string(&mut body).unwrap();
                return body
                    .rsplit("\r\n\r\n")
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_owned();
            }
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("no answer from {ip}:8080: {last}");
}

/// Files under `dir` (relative) with type, mode, owner and content.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(dir).unwrap().to_owned();
            let what = if m.file_type().is_symlink() {
                format!("link {}", std::fs::read_link(&p).unwrap().display())
            } else if m.is_dir() {
                stack.push(p.clone());
                "dir".to_owned()
            } else if m.is_file() {
                format!("file {}", blake3::hash(&std::fs::read(&p).unwrap()))
            } else {
                format!("special {}", m.rdev())
            };
            out.insert(
                rel,
                format!("{what} {:o} {}:{}", m.mode(), m.uid(), m.gid()),
            );
        }
    }
    // The lock file holds the last holder's pid: advisory, not state.
    out.remove(Path::new(".jailtx/lock"));
    out
}

/// The entries that differ between two snapshots, for short failure messages.
fn diff(a: &BTreeMap<PathBuf, String>, b: &BTreeMap<PathBuf, String>) -> Vec<String> {
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

#[test]
fn handbook_three_jails() {
    if !in_private_ns("handbook_three_jails") {
        return;
    }
    let r = Root::new();
    r.template();
    let base = r.path();
    let jails = [
        ("ns", "ns.example.org", ip(17)),
        ("mail", "mail.example.org", ip(18)),
        ("www", "www.example.org", ip(19)),
    ];
    for (name, host, addr) in &jails {
        r.ok(&[
            "jail",
            "create",
            name,
            "--hostname",
            host,
            "--ip",
            addr,
            "--start",
        ]);
    }
    // Each jail's own service answers on its own address.
    for (_, host, addr) in &jails {
        assert_eq!(http_get(addr), format!("{host} world 1"));
    }
    let st = r.status();
    for j in st["jails"].as_array().unwrap() {
        assert_eq!(j["running"], true, "{j}");
        assert_eq!(j["mounted"], true, "{j}");
    }
    // Inside a jail: the template is read-only, /s is writable and lands in
    // js/NAME, and every template link resolves to /s/<name>.
    let out = r.in_jail(
        "mail",
        "hostname; touch /bin/x 2>&1; echo hi > /s/tmp/probe && echo wrote",
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("mail.example.org\n"), "{text}");
    assert!(text.contains("Read-only file system"), "{text}");
    assert!(text.contains("wrote"), "{text}");
    assert_eq!(
        std::fs::read_to_string(base.join("js/mail/tmp/probe")).unwrap(),
        "hi\n"
    );
    for (link, _) in jailtx::world::LINKS {
        let out = r.in_jail("ns", &format!("cd /{link} && pwd -P"));
        let resolved = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(
            resolved.starts_with("/s/"),
            "/{link} resolves to {resolved:?}"
        );
    }
    let out = r.in_jail("www", "ls /dev; cat /dev/null && echo null-ok");
    let text = String::from_utf8_lossy(&out.stdout);
    for node in [
        "null", "zero", "full", "random", "urandom", "tty", "fd", "null-ok",
    ] {
        assert!(text.contains(node), "/dev lacks {node}: {text}");
    }
    // stop leaves no process behind.
    r.ok(&["stop"]);
    assert_eq!(processes_under(r.dir.path()), Vec::<u32>::new());
    // destroy keeps js/NAME; a new jail of that name gets it back.
    r.ok(&["jail", "destroy", "mail"]);
    assert!(base.join("js/mail/tmp/probe").is_file());
    assert!(!base.join("j/mail").exists());
    assert!(!base.join(".jailtx/jails/mail.toml").exists());
    r.ok(&[
        "jail",
        "create",
        "mail",
        "--hostname",
        "mail.example.org",
        "--ip",
        &jails[1].2,
    ]);
    assert!(base.join("js/mail/tmp/probe").is_file());
    // --purge removes it.
    r.ok(&["jail", "destroy", "mail", "--purge"]);
    assert!(!base.join("js/mail").exists());
    assert!(mounts_under(&base.join("j/mail")).is_empty());
}

#[test]
fn failed_exec_start_leaves_no_jail() {
    if !in_private_ns("failed_exec_start_leaves_no_jail") {
        return;
    }
    let r = Root::new();
    std::fs::write(
        r.path().join("jailtx.toml"),
        "[jail]\nexec_start = \"/bin/sh -c 'exit 3'\"\n",
    )
    .unwrap();
    r.template();
    let before = snapshot(&r.path());
    let out = r.run(&[
        "jail",
        "create",
        "bad",
        "--hostname",
        "bad.example.org",
        "--ip",
        &ip(30),
        "--start",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("exit") && err.contains("rolled back"), "{err}");
    assert_eq!(processes_under(r.dir.path()), Vec::<u32>::new());
    assert!(mounts_under(&r.path()).is_empty());
    let mut after = snapshot(&r.path());
    // The journal and history record the attempt; nothing else changed.
    after.retain(|p, _| !p.starts_with(".jailtx"));
    let mut before = before;
    before.retain(|p, _| !p.starts_with(".jailtx"));
    assert_eq!(diff(&before, &after), Vec::<String>::new());
}

#[test]
fn template_from_archives_and_command() {
    if !in_private_ns("template_from_archives_and_command") {
        return;
    }
    let r = Root::new();
    r.template();
    let want_root = snapshot(&r.path().join("j/mroot"));
    let want_skel = snapshot(&r.path().join("j/skel"));
    for (ext, flag) in [("tar", ""), ("tar.gz", "z"), ("txz", "J")] {
        let other = Root::new();
        let tarball = other.dir.path().join(format!("base.{ext}"));
        let st = Command::new("tar")
            .arg(format!("-c{flag}f"))
            .arg(&tarball)
            .args(["-C", other.world.to_str().unwrap(), "."])
            .status()
            .unwrap();
        assert!(st.success());
        other.ok(&["template", "build", "--from-tar", tarball.to_str().unwrap()]);
        let got = snapshot(&other.path().join("j/mroot"));
        assert_eq!(diff(&want_root, &got), Vec::<String>::new(), "{ext}");
        let got = snapshot(&other.path().join("j/skel"));
        assert_eq!(diff(&want_skel, &got), Vec::<String>::new(), "{ext}");
    }
    let other = Root::new();
    let cmd = format!("{}/scripts/mkworld {{dest}}", env!("CARGO_MANIFEST_DIR"));
    other.ok(&["template", "build", "--from-cmd", &cmd]);
    let got = snapshot(&other.path().join("j/mroot"));
    assert_eq!(diff(&want_root, &got), Vec::<String>::new());
}

#[test]
fn bad_input_is_refused_with_nothing_changed() {
    if !in_private_ns("bad_input_is_refused_with_nothing_changed") {
        return;
    }
    let r = Root::new();
    r.template();
    r.ok(&[
        "jail",
        "create",
        "ns",
        "--hostname",
        "ns.example.org",
        "--ip",
        &ip(17),
    ]);
    let before = snapshot(&r.path());
    let ns_ip = ip(17);
    let cases: Vec<Vec<&str>> = vec![
        vec![
            "jail",
            "create",
            "bad.name",
            "--hostname",
            "a.org",
            "--ip",
            "127.0.0.9",
        ],
        vec![
            "jail",
            "create",
            "mroot3",
            "--hostname",
            "a.org",
            "--ip",
            "127.0.0.9",
        ],
        vec![
            "jail",
            "create",
            "skel",
            "--hostname",
            "a.org",
            "--ip",
            "127.0.0.9",
        ],
        vec![
            "jail",
            "create",
            "x",
            "--hostname=-a.org",
            "--ip",
            "127.0.0.9",
        ],
        vec!["jail", "create", "x", "--ip", "127.0.0.9"],
        vec![
            "jail",
            "create",
            "x",
            "--hostname",
            "a.org",
            "--ip",
            "300.1.1.1",
        ],
        vec![
            "jail",
            "create",
            "ns",
            "--hostname",
            "a.org",
            "--ip",
            "127.0.0.9",
        ],
        vec!["jail", "create", "x", "--hostname", "a.org", "--ip", &ns_ip],
        vec!["jail", "destroy", "nosuch"],
        vec!["start", "nosuch"],
        vec!["template", "build", "--from-dir", "/nonexistent"],
        vec!["template", "build", "--from-tar", "/etc/hostname"],
        vec!["template", "build", "--from-cmd", "true"],
        vec!["template", "build", "--from-dir", "/"],
    ];
    for args in cases {
        let out = r.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert_eq!(
            diff(&before, &snapshot(&r.path())),
            Vec::<String>::new(),
            "{args:?}"
        );
    }
}

/// What recovery must restore: the tree (minus the state dir and the page
/// each rc rewrites), the mounts under the root and the running jails.
#[derive(Debug, PartialEq)]
struct HostState {
    tree: BTreeMap<PathBuf, String>,
    mounts: Vec<PathBuf>,
    running: Vec<String>,
}

fn host_state(r: &Root) -> HostState {
    let base = r.path();
    let mut tree = snapshot(&base);
    tree.retain(|p, _| {
        !p.starts_with(".jailtx")
            && !p.to_string_lossy().ends_with("var/www/index.html")
            && !p.to_string_lossy().ends_with("var/www")
    });
    let mut mounts: Vec<PathBuf> = mounts_under(&base)
        .into_iter()
        .map(|m| m.strip_prefix(&base).unwrap().to_owned())
        .collect();
    mounts.sort();
    let running = r.status()["jails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["running"] == true)
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect();
    HostState {
        tree,
        mounts,
        running,
    }
}

/// A power cut: every jail process under the root dies, every mount goes.
fn simulate_reboot(r: &Root) {
    for pid in processes_under(r.dir.path()) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    for m in mounts_under(&r.path()).into_iter().rev() {
        nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH).unwrap();
    }
}

/// The plan's steps and commit point, from `--dry-run --json`.
fn plan_of(r: &Root, args: &[&str]) -> (Vec<String>, usize) {
    let mut a = args.to_vec();
    a.extend(["--dry-run", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&r.ok(&a)).unwrap();
    let steps = v["plan"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    (steps, v["plan"]["commit"].as_u64().unwrap() as usize)
}

/// Crashes `args` at every step and forward instant, recovers both ways (with
/// and without a reboot in between), and checks the host is exactly in the
/// state before or after, as the commit point decides.
fn crash_matrix(setup: &dyn Fn(&Root), args: &[&str]) {
    let probe = Root::new();
    setup(&probe);
    let before = host_state(&probe);
    let (steps, commit) = plan_of(&probe, args);
    probe.ok(args);
    let after = host_state(&probe);
    drop(probe);
    assert!(!steps.is_empty(), "{args:?} plans nothing");
    let mut cases = 0;
    for (i, step) in steps.iter().enumerate() {
        for instant in [
            "before-intent",
            "after-intent",
            "after-effect",
            "after-done",
        ] {
            for rollback in [false, true] {
                // The reboot variant on the instant where the journal knows least.
                let reboots: &[bool] = if instant == "after-intent" {
                    &[false, true]
                } else {
                    &[false]
                };
                for &reboot in reboots {
                    let r = Root::new();
                    setup(&r);
                    let fault = format!("{instant}:{i}");
                    let out = Command::new(BIN)
                        .arg("--root")
                        .arg(r.path())
                        .args(args)
                        .env("JAILTX_FAULT", &fault)
                        .output()
                        .unwrap();
                    use std::os::unix::process::ExitStatusExt;
                    assert_eq!(
                        out.status.signal(),
                        Some(9),
                        "{args:?} {fault} ({step}) was not killed"
                    );
                    if reboot {
                        simulate_reboot(&r);
                    }
                    let recover: &[&str] = if rollback {
                        &["recover", "--rollback"]
                    } else {
                        &["recover"]
                    };
                    r.ok(recover);
                    let want = if rollback && i < commit {
                        &before
                    } else {
                        &after
                    };
                    let got = host_state(&r);
                    let what = format!(
                        "{args:?} crash {fault} ({step}), recover rollback={rollback} reboot={reboot}"
                    );
                    assert_eq!(diff(&want.tree, &got.tree), Vec::<String>::new(), "{what}");
                    assert_eq!(want.mounts, got.mounts, "{what}");
                    assert_eq!(want.running, got.running, "{what}");
                    assert!(r.ok(&["recover"]).contains("nothing to recover"), "{what}");
                    assert_eq!(
                        host_state(&r),
                        got,
                        "{what}: a second recover changed something"
                    );
                    cases += 1;
                }
            }
        }
    }
    eprintln!("{args:?}: {cases} crash cases over {} steps", steps.len());
}

fn with_template(r: &Root) {
    r.template();
}

fn with_running_jail(r: &Root) {
    r.template();
    r.ok(&[
        "jail",
        "create",
        "ns",
        "--hostname",
        "ns.example.org",
        "--ip",
        &ip(17),
        "--start",
    ]);
    r.ok(&[
        "jail",
        "create",
        "www",
        "--hostname",
        "www.example.org",
        "--ip",
        &ip(19),
        "--start",
    ]);
}

#[test]
fn crash_matrix_jail_create() {
    if !in_private_ns("crash_matrix_jail_create") {
        return;
    }
    let addr = ip(17);
    crash_matrix(
        &with_template,
        &[
            "jail",
            "create",
            "ns",
            "--hostname",
            "ns.example.org",
            "--ip",
            &addr,
            "--start",
        ],
    );
}

#[test]
fn crash_matrix_jail_destroy() {
    if !in_private_ns("crash_matrix_jail_destroy") {
        return;
    }
    crash_matrix(&with_running_jail, &["jail", "destroy", "ns", "--purge"]);
}

#[test]
fn crash_matrix_restart_and_stop() {
    if !in_private_ns("crash_matrix_restart_and_stop") {
        return;
    }
    crash_matrix(&with_running_jail, &["stop"]);
    crash_matrix(&with_running_jail, &["restart", "ns"]);
}
