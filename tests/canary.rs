//! Issue 15, item 3: `upgrade --canary NAME[,NAME…] [--canary-wait SECS]`.
//!
//! - A canary whose health check fails rolls the canaries back (exit 1) and
//!   never stops another jail: their JIDs are unchanged, every jail serves
//!   the old world.
//! - Canaries that stay healthy are followed by every other jail.
//! - During the canaries' soak `status` shows each jail's own template (the
//!   canaries on the new one, the rest on the old one), told by identity.
//! - A kill during `--canary-wait` is recovered, resumed or rolled back,
//!   with or without a reboot, to one template for every jail.
//! - Bad `--canary` input is exit 2 with nothing changed.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use support::{
    Baseline, Expect, JailDef, Root, RunState, Worlds, check_invariants, check_second_recover,
    fleet, http_get, in_private_ns, step_names, world_version,
};

/// ns, mail and www running on world 1, spare stopped.
fn setup(worlds: &Worlds) -> (Root, Vec<JailDef>, Baseline) {
    let jails = fleet(&[
        ("ns", RunState::Running),
        ("mail", RunState::Running),
        ("www", RunState::Running),
        ("spare", RunState::Stopped),
    ]);
    let r = Root::with_jails(None, &worlds.get(1), &jails);
    let base = Baseline::take(&r);
    (r, jails, base)
}

/// Each jail's `template` as `status --json` shows it.
fn templates(r: &Root) -> BTreeMap<String, Option<String>> {
    r.status()["jails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap().to_owned(),
                j["template"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// The short id of the template `mroot` is now.
fn current_id(r: &Root) -> String {
    let m = jailtx::manifest::read(&r.manifests_dir().join("mroot.manifest")).unwrap();
    m.id().chars().take(12).collect()
}

fn old_world(base: &Baseline) -> Expect {
    Expect {
        version: world_version(1),
        archives: base.archives.clone(),
        prunable: BTreeMap::new(),
        mroot_ino: Some(base.mroot_ino),
    }
}

fn new_world(archive: &str) -> Expect {
    Expect {
        version: world_version(2),
        archives: BTreeMap::from([(archive.to_owned(), world_version(1))]),
        prunable: BTreeMap::new(),
        mroot_ino: None,
    }
}

fn upgrade_args<'a>(w2: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["upgrade", "--from-dir", w2.to_str().unwrap()];
    args.extend(extra);
    args
}

/// 1. The canary's health check fails on the new world: exit 1, the canary
///    is back on the old world, and the other jails were never stopped.
#[test]
fn a_failing_canary_never_stops_the_others() {
    if !in_private_ns("a_failing_canary_never_stops_the_others") {
        return;
    }
    let worlds = Worlds::new();
    let (r, jails, base) = setup(&worlds);
    // Healthy only while ns serves world 1: read through its mounted root.
    let check = format!(
        "[health.jails]\nns = \"grep -qx 'world 1' {}/ns/usr/share/misc/world-version\"\n",
        r.j().display()
    );
    r.write("jailtx.toml", &check);
    let before = r.jids();
    let old_id = current_id(&r);
    let w2 = worlds.get(2);
    let out = r.run(&upgrade_args(
        &w2,
        &["--canary", "ns", "--canary-wait", "0"],
    ));
    assert_eq!(out.code(), Some(1), "{out}");
    let err = out.one_line_error(1, "failed canary");
    assert!(err.contains("ns"), "{err}");
    let after = r.jids();
    for name in ["mail", "www"] {
        assert_eq!(after[name], before[name], "{name} was restarted: {after:?}");
    }
    assert!(
        after["ns"].is_some(),
        "the canary is not running: {after:?}"
    );
    assert_ne!(after["ns"], before["ns"], "the canary never switched");
    let t = templates(&r);
    for name in ["ns", "mail", "www", "spare"] {
        assert_eq!(t[name].as_deref(), Some(old_id.as_str()), "{name}: {t:?}");
    }
    let mut bad = check_invariants(&r, &jails, &base, &old_world(&base));
    bad.extend(check_second_recover(&r));
    assert!(bad.is_empty(), "{bad:#?}");
    r.ok(&["stop"]);
}

/// 1b. The canary passes its first check but fails the one after its soak
///    (`canary-wait`): the same rollback, and no other jail ever stopped.
#[test]
fn a_canary_failing_after_its_soak_never_stops_the_others() {
    if !in_private_ns("a_canary_failing_after_its_soak_never_stops_the_others") {
        return;
    }
    let worlds = Worlds::new();
    let (r, jails, base) = setup(&worlds);
    // Healthy the first time it is asked, unhealthy every time after.
    let mark = r.scratch.join("asked-once");
    let check = format!(
        "[health.jails]\nns = \"if [ -e {m} ]; then exit 1; fi; touch {m}\"\n",
        m = mark.display()
    );
    r.write("jailtx.toml", &check);
    let before = r.jids();
    let old_id = current_id(&r);
    let w2 = worlds.get(2);
    let out = r.run(&upgrade_args(
        &w2,
        &["--canary", "ns", "--canary-wait", "1"],
    ));
    assert_eq!(out.code(), Some(1), "{out}");
    let err = out.one_line_error(1, "canary failing after its soak");
    assert!(err.contains("canary-wait") && err.contains("ns"), "{err}");
    assert!(mark.exists(), "the first check never ran");
    let after = r.jids();
    for name in ["mail", "www"] {
        assert_eq!(after[name], before[name], "{name} was restarted: {after:?}");
    }
    let t = templates(&r);
    for name in ["ns", "mail", "www", "spare"] {
        assert_eq!(t[name].as_deref(), Some(old_id.as_str()), "{name}: {t:?}");
    }
    let mut bad = check_invariants(&r, &jails, &base, &old_world(&base));
    bad.extend(check_second_recover(&r));
    assert!(bad.is_empty(), "{bad:#?}");
    r.ok(&["stop"]);
}

/// 2. Two canaries stay healthy through their soak: every jail follows, and
///    the plan switched them before anything else stopped.
#[test]
fn healthy_canaries_are_followed_by_every_jail() {
    if !in_private_ns("healthy_canaries_are_followed_by_every_jail") {
        return;
    }
    let worlds = Worlds::new();
    let (r, jails, base) = setup(&worlds);
    let w2 = worlds.get(2);
    let args = upgrade_args(&w2, &["--canary", "ns,mail", "--canary-wait", "1"]);
    let plan = r.dry_run_plan(&args);
    let names = step_names(&plan);
    let at = |n: &str| names.iter().position(|s| s == n).unwrap_or(usize::MAX);
    let wait = at("canary-wait");
    assert!(wait < names.len(), "{names:?}");
    for canary in ["ns", "mail"] {
        assert!(at(&format!("start-{canary}")) < at("health-check-canary"));
    }
    assert!(
        at("health-check-canary") < wait && wait < at("stop-www"),
        "{names:?}"
    );
    assert!(at("unmount-s-spare") > wait, "{names:?}");
    let report = r.json(&args);
    assert_eq!(report["report"]["outcome"], "committed", "{report}");
    let new_id = current_id(&r);
    let t = templates(&r);
    for name in ["ns", "mail", "www", "spare"] {
        assert_eq!(t[name].as_deref(), Some(new_id.as_str()), "{name}: {t:?}");
    }
    for j in &jails {
        if j.state == RunState::Running {
            let body = http_get(&j.ip).unwrap();
            assert!(body.ends_with(&world_version(2)), "{}: {body}", j.name);
        }
    }
    let archive = plan["notes"]["archive"].as_str().unwrap();
    let mut bad = check_invariants(&r, &jails, &base, &new_world(archive));
    bad.extend(check_second_recover(&r));
    assert!(bad.is_empty(), "{bad:#?}");
    r.ok(&["stop"]);
}

/// Mount point -> the mount's root within its filesystem (mountinfo's
/// fourth field).
fn mount_roots() -> BTreeMap<std::path::PathBuf, String> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            Some((f.get(4)?.into(), (*f.get(3)?).to_owned()))
        })
        .collect()
}

/// Starts the upgrade in the background and waits (up to a minute) until
/// `status` shows the canary `ns` on a template other than `old_id`.
fn start_and_wait_for_canary(r: &Root, args: &[&str], old_id: &str) -> Child {
    let mut child = r
        .command(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the upgrade ended ({st}) before the canary switched");
        }
        let t = templates(r);
        if t["ns"].as_deref().is_some_and(|id| id != old_id) {
            return child;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "no switch: {t:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 3. While the canary soaks, `status` shows it on the new template and the
///    other jails on the old one; afterwards every jail is on the new one.
#[test]
fn status_shows_each_jails_own_template_during_the_soak() {
    if !in_private_ns("status_shows_each_jails_own_template_during_the_soak") {
        return;
    }
    let worlds = Worlds::new();
    let (r, _jails, _base) = setup(&worlds);
    let old_id = current_id(&r);
    let w2 = worlds.get(2);
    let args = upgrade_args(&w2, &["--canary", "ns", "--canary-wait", "4"]);
    let archive = r.dry_run_plan(&args)["notes"]["archive"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut child = start_and_wait_for_canary(&r, &args, &old_id);
    let during = templates(&r);
    let new_id = during["ns"].clone().unwrap();
    // The unfinished transaction is running, not interrupted: no `recover`.
    assert_eq!(r.status()["pending"]["running"], true, "{}", r.status());
    let text = r.ok(&["status"]);
    assert!(
        text.contains("is running") && !text.contains("recover"),
        "{text}"
    );
    // What the README says the Linux mount table shows meanwhile: a bind
    // mount's root by its directory's current name.
    let roots = mount_roots();
    let root_of = |name: &str| roots.get(&r.j().join(name)).cloned().unwrap_or_default();
    assert!(root_of("ns").ends_with("/mroot"), "{roots:?}");
    assert!(
        root_of("mail").ends_with(&format!("/{archive}")),
        "{roots:?}"
    );
    for name in ["mail", "www", "spare"] {
        assert_eq!(
            during[name].as_deref(),
            Some(old_id.as_str()),
            "{name} during the soak: {during:?}"
        );
    }
    let st = child.wait().unwrap();
    assert!(st.success(), "{st}");
    let t = templates(&r);
    assert!(
        t.values().all(|id| id.as_deref() == Some(new_id.as_str())),
        "{t:?}"
    );
    assert_eq!(current_id(&r), new_id);
    r.ok(&["stop"]);
}

/// 4. A kill during `--canary-wait`, then `recover` (resume or roll back,
///    with or without a reboot): every jail on one template.
#[test]
fn a_kill_during_the_soak_recovers_to_one_template() {
    if !in_private_ns("a_kill_during_the_soak_recovers_to_one_template") {
        return;
    }
    let worlds = Worlds::new();
    for (reboot, rollback) in [(false, false), (false, true), (true, false), (true, true)] {
        let label = format!("reboot {reboot}, rollback {rollback}");
        let (r, jails, base) = setup(&worlds);
        let old_id = current_id(&r);
        let w2 = worlds.get(2);
        let args = upgrade_args(&w2, &["--canary", "ns", "--canary-wait", "3"]);
        let archive = r.dry_run_plan(&args)["notes"]["archive"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut child = start_and_wait_for_canary(&r, &args, &old_id);
        // Into the soak: the canary's health check is done by now or soon;
        // either instant is one a kill may hit.
        std::thread::sleep(Duration::from_millis(300));
        child.kill().unwrap();
        let st = child.wait().unwrap();
        assert!(!st.success(), "{label}: the upgrade was not killed: {st}");
        let pending = &r.status()["pending"];
        assert_eq!(pending["running"], false, "{label}: {pending}");
        assert!(r.ok(&["status"]).contains("jailtx recover"), "{label}");
        if reboot {
            r.simulate_reboot();
        }
        let mut rec = vec!["recover"];
        if rollback {
            rec.push("--rollback");
        }
        let out = r.run(&rec);
        assert_eq!(out.code(), Some(0), "{label}: {out}");
        let want = if rollback {
            old_world(&base)
        } else {
            new_world(&archive)
        };
        let mut bad = check_invariants(&r, &jails, &base, &want);
        bad.extend(check_second_recover(&r));
        let t = templates(&r);
        let id = current_id(&r);
        if !t.values().all(|v| v.as_deref() == Some(id.as_str())) {
            bad.push(format!("templates after recover: {t:?}, mroot is {id}"));
        }
        assert!(bad.is_empty(), "{label}: {bad:#?}");
        r.ok(&["stop"]);
    }
}

/// 5. Bad canary input: exit 2, one line, nothing changed, no history row.
#[test]
fn bad_canary_input_changes_nothing() {
    if !in_private_ns("bad_canary_input_changes_nothing") {
        return;
    }
    let worlds = Worlds::new();
    let (r, _jails, _base) = setup(&worlds);
    let w2 = worlds.get(2);
    let tree = r.everything();
    let history = r.history();
    let jids = r.jids();
    let cases: &[(&[&str], &str)] = &[
        (&["--canary", "nosuch"], "no such jail"),
        (&["--canary", "spare"], "not running"),
        (&["--canary", "ns,ns"], "twice"),
        (&["--canary", "-x"], "-x"),
        (
            &["--canary", "ns", "--canary-wait", "86401"],
            "out of range",
        ),
        (&["--canary-wait", "5"], "--canary"),
        (&["--canary", "ns", "--canary-wait", "soon"], "soon"),
    ];
    for (extra, says) in cases {
        for dry in [false, true] {
            let mut args = upgrade_args(&w2, extra);
            if dry {
                args.push("--dry-run");
            }
            let out = r.run(&args);
            let err = out.one_line_error(2, &format!("{extra:?}"));
            assert!(err.contains(says), "{extra:?}: {err}");
        }
        support::assert_same(&format!("{extra:?}"), &r.everything(), &tree);
        assert_eq!(r.history(), history, "{extra:?}");
        assert_eq!(r.jids(), jids, "{extra:?}");
    }
    r.ok(&["stop"]);
}
