//! `jailtx metrics` (issue 17, item 3): the Prometheus text that
//! node_exporter's textfile collector publishes. `promtool check metrics`
//! (Debian's `prometheus` package) must accept it for a root with jails, an
//! upgrade in its history, a drifted template and an interrupted
//! transaction, and every value must be the one `status`, `audit --json`,
//! `history --json` and the journal file itself give. `--output` replaces
//! the file whole: never through a symlink or fifo planted at its name,
//! never partly written, always mode 0644. Like `status`, the command takes
//! no lock and so never waits for a running transaction.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{Root, RunState, Worlds, fleet, in_private_ns};

/// `promtool check metrics` on `text` (its stdin): the linter's verdict,
/// with what it printed.
fn promtool_check(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (Debian package prometheus; scripts/test installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[track_caller]
fn assert_promtool_accepts(text: &str) {
    let (ok, said) = promtool_check(text);
    assert!(ok, "promtool check metrics refused it: {said}\n{text}");
}

/// A sample's name and labels as written (`name{a="b"}`) -> its value.
fn samples(text: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (key, value) = line.rsplit_once(' ').expect("NAME VALUE");
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        assert!(
            out.insert(key.to_owned(), value).is_none(),
            "{key} twice:\n{text}"
        );
    }
    out
}

#[track_caller]
fn value(s: &BTreeMap<String, f64>, key: &str) -> f64 {
    *s.get(key)
        .unwrap_or_else(|| panic!("no sample {key} in {s:#?}"))
}

fn ms_to_s(ms: &Value) -> f64 {
    ms.as_str()
        .expect("milliseconds as text")
        .parse::<f64>()
        .unwrap()
        / 1000.0
}

#[track_caller]
fn assert_close(what: &str, got: f64, want: f64) {
    assert!((got - want).abs() < 1e-6, "{what}: {got} != {want}");
}

/// The jails' run state as `status --json` reports it.
fn running(r: &Root) -> BTreeMap<String, bool> {
    r.status()["jails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap().to_owned(),
                j["running"].as_bool().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_root_with_jails_drift_and_a_pending_transaction() {
    if !in_private_ns("a_root_with_jails_drift_and_a_pending_transaction") {
        return;
    }
    let worlds = Worlds::new();
    let jails = fleet(&[
        ("ns", RunState::Running),
        ("www", RunState::Running),
        ("spare", RunState::Stopped),
    ]);
    let r = Root::with_jails(None, &worlds.get(1), &jails);
    // An audit of world 1's template: its record names that template's id,
    // so after the upgrade below it no longer speaks for `mroot`.
    r.ok(&["audit", "--quick"]);
    let before = samples(&r.ok(&["metrics"]));
    assert_eq!(
        value(
            &before,
            "jailtx_template_last_audit_full{template=\"mroot\"}"
        ),
        0.0
    );
    r.ok(&["upgrade", "--from-dir", worlds.get(2).to_str().unwrap()]);
    let text = r.ok(&["metrics"]);
    assert_promtool_accepts(&text);
    assert!(
        !text.contains("jailtx_template_last_audit_timestamp_seconds{template=\"mroot\"}"),
        "world 1's audit published for world 2's template:\n{text}"
    );

    // Drift: one byte of the current template changed, found by a full audit.
    let f = r.path("j/mroot/usr/share/misc/world-version");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&f, &bytes).unwrap();
    let audit = r.json_code(&["audit"], 3);
    let drift = audit["audit"][0]["report"]["differences"]
        .as_array()
        .unwrap()
        .len();
    assert!(drift > 0, "{audit}");

    // An interrupted transaction: `stop www` killed after its first intent.
    let out = r.run_env(&["stop", "www"], &[("JAILTX_FAULT", "after-intent:0")]);
    out.assert_killed("stop www");
    assert!(!r.status()["pending"].is_null(), "no pending transaction");

    let text = r.ok(&["metrics"]);
    assert_promtool_accepts(&text);
    // The same bytes through --output, the way node_exporter reads them.
    let dir = r.scratch.join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("jailtx.prom");
    r.ok(&["metrics", "--output", file.to_str().unwrap()]);
    let written = std::fs::read_to_string(&file).unwrap();
    assert_promtool_accepts(&written);
    let s = samples(&written);
    assert_eq!(s, samples(&text), "--output and stdout differ");

    // Jails: as `status` says, and ns and spare as the fleet was made.
    let status = running(&r);
    assert_eq!(status.len(), 3, "{status:?}");
    for (name, up) in &status {
        let got = value(&s, &format!("jailtx_jail_running{{jail=\"{name}\"}}"));
        assert_eq!(got, f64::from(u8::from(*up)), "{name}");
    }
    assert_eq!(value(&s, "jailtx_jail_running{jail=\"ns\"}"), 1.0);
    assert_eq!(value(&s, "jailtx_jail_running{jail=\"spare\"}"), 0.0);
    assert_eq!(value(&s, "jailtx_jail_mounted{jail=\"spare\"}"), 1.0);

    // Templates: ids as `audit --json` names them, the archive too.
    let id = audit["audit"][0]["id"].as_str().unwrap();
    let archives: Vec<String> = r.archives().into_keys().collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    assert_eq!(
        value(
            &s,
            &format!("jailtx_template_info{{template=\"mroot\",id=\"{id}\",signer=\"\"}}")
        ),
        1.0
    );
    let archive_info = format!("jailtx_template_info{{template=\"{}\",", archives[0]);
    assert!(
        s.keys().any(|k| k.starts_with(&archive_info)),
        "no info for the archive {}: {s:#?}",
        archives[0]
    );

    // Drift: the count `audit --json` gave, at the time the audit recorded.
    assert_eq!(
        value(&s, "jailtx_template_drift_differences{template=\"mroot\"}"),
        drift as f64
    );
    assert_eq!(
        value(&s, "jailtx_template_last_audit_full{template=\"mroot\"}"),
        1.0
    );
    let audited = value(
        &s,
        "jailtx_template_last_audit_timestamp_seconds{template=\"mroot\"}",
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        audited <= now && audited > now - 600.0,
        "audited at {audited}, now {now}"
    );

    // The upgrade: as `history --json` has it.
    let history = r.transactions();
    let upgrade = history
        .iter()
        .rev()
        .find(|t| t["op"] == "upgrade")
        .expect("the upgrade in history");
    let notes = &upgrade["notes"];
    assert_close(
        "window",
        value(&s, "jailtx_last_upgrade_window_seconds"),
        ms_to_s(&notes["downtime_ms"]),
    );
    assert_close(
        "ended",
        value(&s, "jailtx_last_upgrade_timestamp_seconds"),
        upgrade["ended_ms"].as_f64().unwrap() / 1000.0,
    );
    assert_eq!(
        value(&s, "jailtx_last_upgrade_outcome{outcome=\"committed\"}"),
        1.0
    );
    assert_eq!(
        value(&s, "jailtx_last_upgrade_outcome{outcome=\"rolled-back\"}"),
        0.0
    );
    let per_jail: BTreeMap<&str, &str> = notes["jail_downtime_ms"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(|p| p.split_once('=').unwrap())
        .collect();
    assert_eq!(per_jail.keys().copied().collect::<Vec<_>>(), ["ns", "www"]);
    for (name, ms) in per_jail {
        assert_close(
            name,
            value(
                &s,
                &format!("jailtx_jail_last_downtime_seconds{{jail=\"{name}\"}}"),
            ),
            ms.parse::<f64>().unwrap() / 1000.0,
        );
    }
    assert!(
        !s.contains_key("jailtx_jail_last_downtime_seconds{jail=\"spare\"}"),
        "spare never went down"
    );

    // The pending transaction and the journal that holds it.
    assert_eq!(value(&s, "jailtx_transaction_pending"), 1.0);
    let journal = std::fs::metadata(r.journal()).unwrap().len();
    assert!(journal > 16, "the journal holds the interrupted stop");
    assert_eq!(value(&s, "jailtx_journal_size_bytes"), journal as f64);
    assert_eq!(
        value(
            &s,
            &format!(
                "jailtx_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        1.0
    );

    // Recovered: nothing pending, the journal back to its header.
    r.ok(&["recover"]);
    let s = samples(&r.ok(&["metrics"]));
    assert_eq!(value(&s, "jailtx_transaction_pending"), 0.0);
    assert_eq!(
        value(&s, "jailtx_journal_size_bytes"),
        std::fs::metadata(r.journal()).unwrap().len() as f64
    );
}

/// promtool is a real check here: it refuses what breaks the conventions
/// the exposition follows (so the test above could fail).
#[test]
fn promtool_refuses_a_broken_exposition() {
    for bad in [
        "jailtx_x 1\n",
        "# HELP jailtx_x_ms A time.\n# TYPE jailtx_x_ms gauge\njailtx_x_ms 1\n",
        "# HELP jailtx_x A thing.\n# TYPE jailtx_x gauge\njailtx_x{a=\"b} 1\n",
    ] {
        let (ok, said) = promtool_check(bad);
        assert!(!ok, "promtool accepted {bad:?}: {said}");
    }
}

/// Holding the state lock (as a running upgrade does) does not make
/// `metrics` wait or fail: it reads as `status` does.
#[test]
fn metrics_never_waits_for_the_lock() {
    let r = Root::fresh();
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.state().join("lock"))
        .unwrap();
    lock.lock().unwrap();
    let t = Instant::now();
    let text = r.ok(&["metrics"]);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_promtool_accepts(&text);
    assert_eq!(value(&samples(&text), "jailtx_transaction_pending"), 0.0);
    // The lock is really held: a mutating command is refused with exit 5.
    assert_eq!(r.run(&["prune"]).code(), Some(5));
}

/// `--output`: the final name is replaced by a rename, never written
/// through; whatever was planted there (a symlink to a host file, a fifo)
/// is gone and the host file untouched; a directory there is refused with
/// exit 2; the file is 0644 whatever the umask, and no temporary is left.
#[test]
fn output_replaces_what_is_planted_and_never_follows_it() {
    let r = Root::fresh();
    let dir = r.scratch.join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let target = dir.join("jailtx.prom");
    let victim = r.scratch.join("victim");
    std::fs::write(&victim, b"host file\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();

    let write = |umask: &str| {
        // The umask is the operator's: 077 must still give 0644.
        let mut c = Command::new("sh");
        c.arg("-c")
            .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
            .arg(support::BIN)
            .arg("--root")
            .arg(&r.root)
            .args(["metrics", "--output", target.to_str().unwrap()])
            .env_remove("JAILTX_ROOT")
            .env_remove("JAILTX_FAULT")
            .stdin(Stdio::null());
        let mut child = c.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("metrics --output hung on what is at {}", target.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let check_written = |what: &str| {
        let m = std::fs::symlink_metadata(&target).unwrap();
        assert!(m.file_type().is_file(), "{what}: {:?}", m.file_type());
        assert_eq!(m.permissions().mode() & 0o7777, 0o644, "{what}");
        assert_promtool_accepts(&std::fs::read_to_string(&target).unwrap());
        assert_eq!(std::fs::read(&victim).unwrap(), b"host file\n", "{what}");
        let names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["jailtx.prom"], "{what}: a temporary left");
    };

    std::os::unix::fs::symlink(&victim, &target).unwrap();
    assert_eq!(write("077"), Some(0));
    check_written("symlink planted at the name");

    std::fs::remove_file(&target).unwrap();
    nix::unistd::mkfifo(&target, nix::sys::stat::Mode::from_bits_truncate(0o644)).unwrap();
    assert_eq!(write("022"), Some(0));
    check_written("fifo planted at the name");
    assert!(
        !std::fs::symlink_metadata(&target)
            .unwrap()
            .file_type()
            .is_fifo()
    );

    // A directory at the name: refused, one line, exit 2, left as it was.
    std::fs::remove_file(&target).unwrap();
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("inside"), b"x").unwrap();
    let out = r.run(&["metrics", "--output", target.to_str().unwrap()]);
    let line = out.one_line_error(2, "a directory at --output");
    assert!(line.contains("is a directory"), "{line}");
    assert_eq!(std::fs::read(target.join("inside")).unwrap(), b"x");

    // No directory to put it in, or no file name: exit 2, nothing made.
    let missing = r.scratch.join("nowhere/jailtx.prom");
    let out = r.run(&["metrics", "--output", missing.to_str().unwrap()]);
    let line = out.one_line_error(2, "a missing directory");
    assert!(line.contains("is not a directory"), "{line}");
    assert!(!r.scratch.join("nowhere").exists());
    let out = r.run(&["metrics", "--output", &format!("{}/", dir.display())]);
    out.one_line_error(2, "a trailing slash");
}

/// Readers never see part of a file: while `metrics --output` rewrites the
/// file again and again, every read of it is a whole exposition.
#[test]
fn a_reader_never_sees_a_partial_file() {
    let r = Root::fresh();
    let dir = r.scratch.join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let target = dir.join("jailtx.prom");
    r.ok(&["metrics", "--output", target.to_str().unwrap()]);
    let whole = std::fs::read_to_string(&target).unwrap();
    let last = whole.lines().last().unwrap().to_owned();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (target, stop, last) = (target.clone(), stop.clone(), last.clone());
        std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&target).unwrap();
                assert!(
                    text.ends_with(&format!("{last}\n")),
                    "read {reads}: a partial file: {text:?}"
                );
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..20 {
        r.ok(&["metrics", "--output", target.to_str().unwrap()]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().expect("the reader saw a partial file");
    assert!(reads > 20, "only {reads} reads");
}

/// Where the state dir is missing, `metrics` is `status`'s exit 2.
#[test]
fn without_a_state_dir_it_is_exit_2_like_status() {
    let r = Root::bare();
    let out = r.run(&["metrics"]);
    let line = out.one_line_error(2, "no state dir");
    assert!(line.contains("jailtx init"), "{line}");
    assert_eq!(r.run(&["status"]).code(), Some(2));
}

/// A template from a tiny world (no jails): enough for audits.
fn small_template(r: &Root) {
    let world = r.scratch.join("world");
    for d in ["bin", "etc", "usr/bin", "var", "tmp", "root"] {
        std::fs::create_dir_all(world.join(d)).unwrap();
    }
    std::fs::write(world.join("bin/sh"), b"shell\n").unwrap();
    std::fs::write(world.join("usr/bin/env"), b"env binary\n").unwrap();
    r.template(&world);
}

/// The audit record is a state file like the others: one planted at its
/// name (a fifo, a symlink to a host file) is refused by `metrics` with
/// exit 2 naming it, never read or waited on; the next audit replaces it
/// with its own record (a rename: never written through).
#[test]
fn a_planted_audit_record_is_refused_and_replaced_by_the_next_audit() {
    let r = Root::fresh();
    small_template(&r);
    let rec = r.manifests_dir().join("mroot.audit");
    let victim = r.scratch.join("victim");
    std::fs::write(&victim, b"host file\n").unwrap();
    for (what, plant) in [
        (
            "is a fifo",
            &(|p: &std::path::Path| {
                nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap()
            }) as &dyn Fn(&std::path::Path),
        ),
        ("is a symlink", &|p| {
            std::os::unix::fs::symlink(&victim, p).unwrap()
        }),
    ] {
        plant(&rec);
        let out = r.run(&["metrics"]);
        let line = out.one_line_error(2, what);
        assert!(
            line.contains(what) && line.contains(&rec.display().to_string()),
            "{line}"
        );
        r.ok(&["audit", "--quick"]);
        let m = std::fs::symlink_metadata(&rec).unwrap();
        assert!(m.file_type().is_file(), "{what}: {:?}", m.file_type());
        assert_eq!(std::fs::read(&victim).unwrap(), b"host file\n");
        let s = samples(&r.ok(&["metrics"]));
        assert_eq!(
            value(&s, "jailtx_template_drift_differences{template=\"mroot\"}"),
            0.0
        );
        std::fs::remove_file(&rec).unwrap();
    }
    // `--json`: the same text, as one document.
    r.ok(&["audit"]);
    let doc = r.json(&["metrics"]);
    assert_eq!(doc["metrics"].as_str().unwrap(), r.ok(&["metrics"]));
}
