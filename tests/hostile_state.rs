//! Issue 12, items 5, 6 and 10 (SPEC section 5): hostile state files,
//! out-of-range values and addresses. What broke: `.jailtx/lock` as a
//! symlink (or hard link) to a host file was truncated to the pid; a journal
//! or history symlink was written through; a fifo at the config, a record, a
//! manifest, the journal or the history hung every command that read it; a
//! 2 GiB config or record was read whole; `stop_timeout_secs` or
//! `[health] timeout_secs` of 2^64-1 panicked in the downtime window and in
//! every later `recover`; `::ffff:127.0.9.50` passed the duplicate-IP check;
//! `--dry-run upgrade` during a running upgrade advised removing the build
//! in progress. Each case here exits 2 (5 for the held lock) with the file
//! named, the decoy host tree untouched, its secret never printed or
//! recorded, and the state dir as it was.

mod support;

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use jailtx::engine::Action;
use jailtx::host::JailSpec;
use support::decoy::Decoy;
use support::plans::PlanBuilder;
use support::{Out, Root, Snapshot, Worlds, assert_same, in_private_ns, snapshot};

/// The part of the decoy's secret that must never show up anywhere.
const SECRET_MARK: &str = "decoy-secret-hash";
/// However long a refusal may take: a hang is a failure, not a wait.
const PATIENCE: Duration = Duration::from_secs(10);

/// Runs `jailtx --root R ARGS` (plus `extra` before them), killing it and
/// failing the test if it has not exited within [`PATIENCE`].
fn run_within(r: &Root, extra: &[&str], args: &[&str]) -> Out {
    let mut cmd = support::jailtx(extra);
    cmd.arg("--root").arg(&r.root).args(args);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn jailtx");
    let mut pipes = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let readers = (
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipes.0.read_to_string(&mut s);
            s
        }),
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = pipes.1.read_to_string(&mut s);
            s
        }),
    );
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > PATIENCE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("jailtx {extra:?} {args:?} still ran after {PATIENCE:?}: it hangs");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Out {
        status,
        stdout: readers.0.join().unwrap(),
        stderr: readers.1.join().unwrap(),
    }
}

/// The state dir as it is now (symlinks and fifos recorded, never followed
/// or read). The lock's content is the advisory pid every locking run
/// writes, so only its kind, mode and owner are compared.
fn state_snapshot(r: &Root) -> Snapshot {
    let mut snap = snapshot(&r.state(), &[]);
    if let Some(lock) = snap.get_mut("lock")
        && lock.hardlink_of.is_none()
        && matches!(lock.kind, support::Kind::File)
    {
        lock.content = None;
    }
    snap
}

/// Asserts a refusal: exit `code` in one `jailtx:` line naming `file` and
/// saying `what`, no byte of the decoy's secret on stdout, stderr or in the
/// history, the decoy untouched and the state dir as `before`.
#[track_caller]
fn assert_refused(
    r: &Root,
    out: &Out,
    code: i32,
    file: &Path,
    what: &str,
    decoy: &Decoy,
    before: &Snapshot,
) {
    let line = out.one_line_error(code, what);
    assert!(
        line.contains(&file.display().to_string()),
        "{what}: the error must name {}: {line}",
        file.display()
    );
    assert!(line.contains(what), "{what}: {line}");
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains(SECRET_MARK), "{what}: secret printed: {out}");
    }
    if let Ok(h) = std::fs::symlink_metadata(r.history_file())
        && h.file_type().is_file()
    {
        let bytes = std::fs::read(r.history_file()).unwrap();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(SECRET_MARK),
            "{what}: secret in history"
        );
    }
    decoy.assert_untouched(what);
    assert_same(what, &state_snapshot(r), before);
}

/// Replaces state-dir file `rel` with a symlink to the decoy's secret.
fn plant_link(r: &Root, rel: &str, decoy: &Decoy) -> PathBuf {
    let p = r.state().join(rel);
    let _ = std::fs::remove_file(&p);
    std::os::unix::fs::symlink(decoy.path("etc/shadow"), &p).unwrap();
    p
}

/// Replaces `p` with a fifo.
fn plant_fifo(p: &Path) {
    let _ = std::fs::remove_file(p);
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// A valid jail record for `name` (mode 0600, as jailtx writes them).
fn write_record(r: &Root, name: &str, ip: &str) -> PathBuf {
    let p = r.state().join(format!("jails/{name}.toml"));
    std::fs::write(
        &p,
        format!("name = \"{name}\"\nhostname = \"{name}.test\"\nip = \"{ip}\"\n"),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

/// A template directory `j/mroot` (empty: the commands here never get past
/// reading its manifest).
fn fake_template(r: &Root) {
    std::fs::create_dir(r.j().join("mroot")).unwrap();
}

#[test]
fn a_lock_symlinked_to_a_host_file_is_refused_not_truncated() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let lock = plant_link(&r, "lock", &decoy);
    let before = state_snapshot(&r);
    let out = run_within(&r, &[], &["prune"]);
    assert_refused(&r, &out, 2, &lock, "is a symlink", &decoy, &before);
}

#[test]
fn a_lock_hard_linked_to_a_host_file_is_refused_not_truncated() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let lock = r.state().join("lock");
    let _ = std::fs::remove_file(&lock);
    // The decoy and the root are both in the temp dir: one filesystem.
    std::fs::hard_link(decoy.path("etc/shadow"), &lock).unwrap();
    let before = state_snapshot(&r);
    let out = run_within(&r, &[], &["prune"]);
    // The decoy's link count is its own business; its content, mode and
    // mtime are what must not change.
    assert_refused(&r, &out, 2, &lock, "hard links", &decoy, &before);
}

#[test]
fn a_journal_symlinked_to_a_host_file_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let journal = plant_link(&r, "journal", &decoy);
    let before = state_snapshot(&r);
    for args in [&["prune"][..], &["history"], &["recover"]] {
        let out = run_within(&r, &[], args);
        assert_refused(&r, &out, 2, &journal, "is a symlink", &decoy, &before);
    }
}

#[test]
fn a_history_symlinked_to_a_host_file_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let history = plant_link(&r, "history", &decoy);
    let before = state_snapshot(&r);
    for args in [&["prune"][..], &["history"]] {
        let out = run_within(&r, &[], args);
        assert_refused(&r, &out, 2, &history, "is a symlink", &decoy, &before);
    }
    // A rotated one too.
    std::fs::remove_file(&history).unwrap();
    let rotated = plant_link(&r, "history.1", &decoy);
    let before = state_snapshot(&r);
    let out = run_within(&r, &[], &["history"]);
    assert_refused(&r, &out, 2, &rotated, "is a symlink", &decoy, &before);
}

#[test]
fn a_jail_record_symlinked_to_a_host_file_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let rec = plant_link(&r, "jails/web.toml", &decoy);
    let before = state_snapshot(&r);
    for args in [&["status"][..], &["start", "web"]] {
        let out = run_within(&r, &[], args);
        assert_refused(&r, &out, 2, &rec, "is a symlink", &decoy, &before);
    }
}

#[test]
fn a_manifest_symlinked_to_a_host_file_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    fake_template(&r);
    let m = plant_link(&r, "manifests/mroot.manifest", &decoy);
    let before = state_snapshot(&r);
    let out = run_within(&r, &[], &["audit"]);
    assert_refused(&r, &out, 2, &m, "is a symlink", &decoy, &before);
}

#[test]
fn a_config_symlinked_to_a_host_file_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let beside = r.root.join("jailtx.toml");
    std::os::unix::fs::symlink(decoy.path("etc/shadow"), &beside).unwrap();
    let before = state_snapshot(&r);
    let out = run_within(&r, &[], &["status"]);
    assert_refused(&r, &out, 2, &beside, "is a symlink", &decoy, &before);
    std::fs::remove_file(&beside).unwrap();
    let given = r.scratch.join("given.toml");
    std::os::unix::fs::symlink(decoy.path("etc/shadow"), &given).unwrap();
    let out = run_within(&r, &["--config", given.to_str().unwrap()], &["status"]);
    assert_refused(&r, &out, 2, &given, "is a symlink", &decoy, &before);
}

#[test]
fn a_symlinked_state_dir_or_state_subdir_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    // jails/ pointing at a host directory.
    let jails = r.state().join("jails");
    std::fs::remove_dir(&jails).unwrap();
    std::os::unix::fs::symlink(decoy.path("etc"), &jails).unwrap();
    let before = state_snapshot(&r);
    for args in [&["status"][..], &["prune"], &["history"]] {
        let out = run_within(&r, &[], args);
        assert_refused(&r, &out, 2, &jails, "is a symlink", &decoy, &before);
    }
    std::fs::remove_file(&jails).unwrap();
    std::fs::create_dir(&jails).unwrap();
    std::fs::set_permissions(&jails, std::fs::Permissions::from_mode(0o700)).unwrap();
    // The state dir itself moved elsewhere and linked back.
    let elsewhere = r.scratch.join("state-elsewhere");
    std::fs::rename(r.state(), &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, r.state()).unwrap();
    let inside = snapshot(&elsewhere, &[]);
    for args in [&["status"][..], &["prune"]] {
        let out = run_within(&r, &[], args);
        let line = out.one_line_error(2, "symlinked state dir");
        assert!(line.contains("is a symlink"), "{line}");
        assert_same("state dir", &snapshot(&elsewhere, &[]), &inside);
    }
    decoy.assert_untouched("symlinked state dir");
}

#[test]
fn a_fifo_at_any_state_file_never_hangs() {
    let decoy = Decoy::new();
    let cases: [(&str, &[&[&str]]); 5] = [
        ("lock", &[&["prune"]]),
        (
            "journal",
            &[
                &["history"],
                &["prune"],
                &["recover", "--dry-run"],
                // status names an interrupted transaction: it reads the journal too.
                &["status"],
            ],
        ),
        ("history", &[&["history"], &["prune"]]),
        ("jails/web.toml", &[&["status"]]),
        ("manifests/mroot.manifest", &[&["audit"]]),
    ];
    for (rel, commands) in cases {
        let r = Root::fresh();
        fake_template(&r);
        let p = r.state().join(rel);
        plant_fifo(&p);
        let before = state_snapshot(&r);
        for args in commands {
            let out = run_within(&r, &[], args);
            assert_refused(&r, &out, 2, &p, "is a fifo", &decoy, &before);
        }
    }
}

#[test]
fn a_fifo_as_the_config_never_hangs() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let beside = r.root.join("jailtx.toml");
    plant_fifo(&beside);
    let before = state_snapshot(&r);
    let out = run_within(&r, &[], &["status"]);
    assert_refused(&r, &out, 2, &beside, "is a fifo", &decoy, &before);
    std::fs::remove_file(&beside).unwrap();
    let given = r.scratch.join("given.toml");
    plant_fifo(&given);
    let out = run_within(&r, &["--config", given.to_str().unwrap()], &["status"]);
    assert_refused(&r, &out, 2, &given, "is a fifo", &decoy, &before);
}

#[test]
fn a_state_file_others_can_write_or_own_is_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let journal = r.state().join("journal");
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o666)).unwrap();
    let before = state_snapshot(&r);
    for args in [&["history"][..], &["prune"]] {
        let out = run_within(&r, &[], args);
        assert_refused(
            &r,
            &out,
            2,
            &journal,
            "writable by group or others",
            &decoy,
            &before,
        );
    }
    std::fs::set_permissions(&journal, std::fs::Permissions::from_mode(0o600)).unwrap();
    let rec = write_record(&r, "web", "127.0.9.51");
    std::os::unix::fs::chown(&rec, Some(4321), Some(4321)).unwrap();
    let before = state_snapshot(&r);
    let out = run_within(&r, &[], &["status"]);
    assert_refused(&r, &out, 2, &rec, "owned by uid 4321", &decoy, &before);
    std::fs::remove_file(&rec).unwrap();
    let conf = r.root.join("jailtx.toml");
    std::fs::write(&conf, "keep_archives = 3\n").unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o646)).unwrap();
    let before = state_snapshot(&r);
    let out = run_within(&r, &[], &["status"]);
    assert_refused(
        &r,
        &out,
        2,
        &conf,
        "writable by group or others",
        &decoy,
        &before,
    );
}

#[test]
fn a_huge_config_or_record_is_refused_unread() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let two_gib = 2u64 << 30;
    let conf = r.root.join("jailtx.toml");
    File::create(&conf).unwrap().set_len(two_gib).unwrap();
    let before = state_snapshot(&r);
    let t = Instant::now();
    let out = run_within(&r, &[], &["status"]);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_refused(
        &r,
        &out,
        2,
        &conf,
        "more than a config file may be",
        &decoy,
        &before,
    );
    std::fs::remove_file(&conf).unwrap();
    let rec = write_record(&r, "web", "127.0.9.52");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&rec)
        .unwrap()
        .set_len(two_gib)
        .unwrap();
    let before = state_snapshot(&r);
    let t = Instant::now();
    let out = run_within(&r, &[], &["status"]);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "took {:?}",
        t.elapsed()
    );
    assert_refused(
        &r,
        &out,
        2,
        &rec,
        "more than a record may be",
        &decoy,
        &before,
    );
}

#[test]
fn out_of_range_durations_and_counts_are_refused() {
    let decoy = Decoy::new();
    let r = Root::fresh();
    let conf = r.root.join("jailtx.toml");
    for (text, key) in [
        (
            "[jail]\nstop_timeout_secs = 18446744073709551615\n",
            "jail.stop_timeout_secs",
        ),
        (
            "[health]\ntimeout_secs = 18446744073709551615\n",
            "health.timeout_secs",
        ),
        (
            "[jail]\nstop_timeout_secs = 3601\n",
            "jail.stop_timeout_secs",
        ),
        ("keep_archives = 4294967295\n", "keep_archives"),
    ] {
        std::fs::write(&conf, text).unwrap();
        let before = state_snapshot(&r);
        for args in [&["status"][..], &["prune"]] {
            let out = run_within(&r, &[], args);
            assert_refused(&r, &out, 2, &conf, "out of range", &decoy, &before);
            let line = out.one_line_error(2, key);
            assert!(line.contains(key), "{line}");
        }
    }
    std::fs::remove_file(&conf).unwrap();
    let before = state_snapshot(&r);
    let out = run_within(&r, &[], &["prune", "--keep", "4294967295"]);
    let line = out.one_line_error(2, "prune --keep");
    assert!(
        line.contains("--keep = 4294967295 is out of range"),
        "{line}"
    );
    assert_same("prune --keep", &state_snapshot(&r), &before);
    // The jail init's own flag (how a jail learns its stop timeout).
    let out = support::run_bin(
        &[
            "__jail-init",
            "--name",
            "x",
            "--root",
            "/nonexistent",
            "--hostname",
            "x",
            "--ip",
            "127.0.9.53",
            "--start",
            "true",
            "--stop-timeout",
            "18446744073709551615",
        ],
        &[],
    );
    assert_eq!(out.code(), Some(2), "{out}");
    assert!(out.stderr.contains("out of range"), "{out}");
}

/// A plan in the journal (from a run killed mid-way, or written by an older
/// build) whose stop and health timeouts are 2^64-1: `recover` used to panic
/// on them every time; now it clamps them and finishes.
#[test]
fn recover_finishes_a_journaled_plan_with_huge_timeouts() {
    if !in_private_ns("recover_finishes_a_journaled_plan_with_huge_timeouts") {
        return;
    }
    let worlds = Worlds::new();
    let r = Root::new(None);
    r.template(&worlds.get(1));
    r.ok(&[
        "jail",
        "create",
        "web",
        "--hostname",
        "web.test",
        "--ip",
        "127.0.9.54",
        "--start",
    ]);
    assert!(r.jids()["web"].is_some(), "web runs");
    let spec = JailSpec {
        name: "web".into(),
        path: r.j().join("web"),
        hostname: "web.test".into(),
        ip: "127.0.9.54".into(),
        exec_start: "/bin/sh /etc/rc".into(),
        exec_stop: "/bin/sh /etc/rc.shutdown jail".into(),
        stop_timeout_secs: u64::MAX,
    };
    let plan = PlanBuilder::new("huge", "timeouts beyond any clock")
        .step(
            "health",
            Action::HealthCheck {
                jails: vec![(spec.clone(), Some("true".into()))],
                timeout_secs: u64::MAX,
            },
        )
        .step("stop-web", Action::StopJail { jail: spec })
        .build();
    let file = r.plan_file("huge", &plan);
    let killed = r.run_env(
        &["run-plan", file.to_str().unwrap()],
        &[("JAILTX_FAULT", "after-intent:0")],
    );
    killed.assert_killed("run-plan killed after the health check's intent");
    let t = Instant::now();
    let out = r.run(&["recover"]);
    assert_eq!(out.code(), Some(0), "recover: {out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(r.jids()["web"], None, "the plan's stop ran");
    r.ok(&["history"]);
}

#[test]
fn an_ipv4_mapped_address_is_the_same_address() {
    let r = Root::fresh();
    write_record(&r, "web", "127.0.9.50");
    let before = state_snapshot(&r);
    for spelling in ["::ffff:127.0.9.50", "::FFFF:127.0.9.50", "::ffff:7f00:932"] {
        let out = run_within(
            &r,
            &[],
            &[
                "jail",
                "create",
                "mail",
                "--hostname",
                "mail.test",
                "--ip",
                spelling,
            ],
        );
        let line = out.one_line_error(2, spelling);
        assert!(line.contains("is already jail web's"), "{spelling}: {line}");
        assert_same(spelling, &state_snapshot(&r), &before);
    }
}

#[test]
fn unspecified_broadcast_and_multicast_addresses_are_refused() {
    let r = Root::fresh();
    let before = state_snapshot(&r);
    for ip in [
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "239.255.255.250",
        "::",
        "ff02::1",
        "::ffff:0.0.0.0",
        "::ffff:255.255.255.255",
        "::ffff:224.0.0.1",
    ] {
        let out = run_within(
            &r,
            &[],
            &[
                "jail",
                "create",
                "web",
                "--hostname",
                "web.test",
                "--ip",
                ip,
            ],
        );
        let line = out.one_line_error(2, ip);
        assert!(line.contains("cannot be a jail's address"), "{ip}: {line}");
        assert_same(ip, &state_snapshot(&r), &before);
    }
}

/// While another run holds the lock, what a dry run finds in the way is
/// that run's work: it says so instead of advising its removal.
#[test]
fn a_dry_run_during_a_run_never_advises_removing_its_work() {
    let r = Root::fresh();
    fake_template(&r);
    let partial = r.j().join("mroot2.jailtx-partial");
    std::fs::create_dir(&partial).unwrap();
    let world = r.scratch.join("world");
    std::fs::create_dir(&world).unwrap();
    let upgrade = [
        "upgrade",
        "--from-dir",
        world.to_str().unwrap(),
        "--dry-run",
    ];
    // Unlocked: a leftover, and the advice is right.
    let out = run_within(&r, &[], &upgrade);
    let line = out.one_line_error(2, "leftover");
    assert!(line.contains("remove it"), "{line}");
    // Locked by a run in progress: no advice to remove its build.
    let lock = File::options()
        .read(true)
        .write(true)
        .open(r.state().join("lock"))
        .unwrap();
    lock.lock().unwrap();
    std::fs::write(r.state().join("lock"), "4242").unwrap();
    let before = state_snapshot(&r);
    let out = run_within(&r, &[], &upgrade);
    let line = out.one_line_error(5, "held");
    assert!(
        line.contains("another jailtx run (pid 4242) holds"),
        "{line}"
    );
    assert!(!line.contains("remove it"), "{line}");
    assert!(partial.is_dir());
    assert_same("dry run", &state_snapshot(&r), &before);
    drop(lock);
}
