//! Issue 20, item 4: `rollback` takes `/etc` back.
//!
//! `upgrade` v1 -> v2 merged each jail's `/etc` to v2, but `rollback` to v1
//! left it alone: the jail ran the v1 world under v2's `etc/defaults/rc.conf`
//! and `etc/hosts`, files its admin never edited. Now the rollback's commit
//! is followed by the same three-way merge the other way (base: the world
//! left, theirs: the world returned to), as its own transaction. On the
//! Linux backend, each test in a private mount namespace.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;
use support::matrix::{full_matrix, run_cases};
use support::{
    Content, FORWARD, JailDef, Kind, Root, RunState, Snapshot, assert_no_failures, diff,
    in_private_ns, mkworld, recover_args, rolls_back, snapshot_live, step_names,
};

/// v1's `etc/defaults/rc.conf`; v2 changes its `ntpd_enable` line.
const DEFAULTS1: &str = "# defaults\nsshd_enable=\"NO\"\nntpd_enable=\"NO\"\n\
                         syslogd_flags=\"-s\"\ncron_enable=\"YES\"\n# end\n";
/// v1's `etc/rc.conf`; v2 changes its third line, the admin its first.
const RC1: &str = "hostname=\"\"\nsshd_enable=\"NO\"\nsendmail_enable=\"NONE\"\n# end\n";
const HOSTS1: &str = "127.0.0.1 localhost\n";
const HOSTS2: &str = "127.0.0.1 localhost\n::1 localhost\n";

fn defaults2() -> String {
    DEFAULTS1.replace("ntpd_enable=\"NO\"", "ntpd_enable=\"YES\"")
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, PermissionsExt::from_mode(mode)).unwrap();
}

/// Worlds 1 and 2 in `r`'s scratch folder. World 2 changes
/// `defaults/rc.conf`, `hosts`, `rc.conf` and `motd`, adds `v2-only`,
/// drops `v1-only` and makes `mode-only` 0600 with the same bytes.
fn worlds(r: &Root) -> (PathBuf, PathBuf) {
    let make = |version: u32| {
        let w = r.scratch.join(format!("world{version}"));
        mkworld(&w, version);
        let etc = w.join("etc");
        std::fs::create_dir(etc.join("defaults")).unwrap();
        let v1 = version == 1;
        let defaults = if v1 { DEFAULTS1.into() } else { defaults2() };
        write_mode(&etc.join("defaults/rc.conf"), &defaults, 0o444);
        write_mode(&etc.join("hosts"), if v1 { HOSTS1 } else { HOSTS2 }, 0o644);
        let rc = if v1 {
            RC1.to_owned()
        } else {
            RC1.replace("\"NONE\"", "\"NO\"")
        };
        write_mode(&etc.join("rc.conf"), &rc, 0o644);
        write_mode(&etc.join("motd"), &format!("world {version}\n"), 0o644);
        let only = if v1 { "v1-only" } else { "v2-only" };
        write_mode(&etc.join(only), "only\n", 0o640);
        write_mode(
            &etc.join("mode-only"),
            "same\n",
            if v1 { 0o644 } else { 0o600 },
        );
        w
    };
    (make(1), make(2))
}

fn arg(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A root with a template of world 1 and jail `ns` (stopped), whose admin
/// edited the first line of `etc/rc.conf` and appended a user to
/// `etc/passwd`; returns world 2.
fn setup(r: &Root) -> PathBuf {
    let (w1, w2) = worlds(r);
    r.template(&w1);
    r.ok(&JailDef::new("ns", RunState::Stopped).create_args());
    r.write("js/ns/etc/rc.conf", &admins_rc());
    let passwd = r.read("js/ns/etc/passwd") + "alice:x:1001:1001::/home/alice:/bin/sh\n";
    r.write("js/ns/etc/passwd", &passwd);
    w2
}

fn admins_rc() -> String {
    RC1.replace("hostname=\"\"", "hostname=\"ns.example.org\"")
}

/// The pristine file `rel` (below etc) of the current template.
fn pristine(r: &Root, rel: &str) -> String {
    r.read(&format!("j/mroot/usr/share/jailtx/pristine/etc/{rel}"))
}

/// The report of `target` in a document's `etc_merge`.
fn target<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["etc_merge"]["targets"]
        .as_array()
        .unwrap_or_else(|| panic!("no targets in {doc}"))
        .iter()
        .find(|t| t["target"] == name)
        .unwrap_or_else(|| panic!("no target {name} in {doc}"))
}

fn list(t: &Value, key: &str) -> Vec<String> {
    t[key]
        .as_array()
        .unwrap_or_else(|| panic!("no {key} in {t}"))
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            o => o["path"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// Every `/etc` jailtx merges (each jail's and skel's), as `ls -l` and
/// `cmp` see them: kinds, modes, owners, bytes, link targets.
fn etcs(r: &Root) -> Snapshot {
    let mut s = Snapshot::new();
    let mut dirs = vec!["j/skel/etc".to_owned()];
    for e in std::fs::read_dir(r.js()).unwrap().flatten() {
        dirs.push(format!("js/{}/etc", e.file_name().to_string_lossy()));
    }
    for d in dirs {
        for (k, e) in snapshot_live(&r.path(&d), |_| false) {
            s.insert(format!("{d}/{k}"), e);
        }
    }
    s
}

/// [`etcs`] plus the merge records (their inode lines aside, which differ
/// from one scratch root to the next).
fn merge_state(r: &Root) -> Snapshot {
    let mut s = etcs(r);
    for (k, mut e) in snapshot_live(&r.path(".jailtx/etc-merge"), |_| false) {
        let rel = format!(".jailtx/etc-merge/{k}");
        if e.kind == Kind::File {
            let text = r.read(&rel);
            let keep: Vec<&str> = text.lines().filter(|l| !l.starts_with("etc_ino")).collect();
            e.content = Some(Content::of(keep.join("\n").as_bytes()));
        }
        s.insert(rel, e);
    }
    s
}

/// The case: after upgrade v1 -> v2 and rollback to v1, the files
/// the admin never edited are v1's pristine ones again, byte for byte, and
/// the admin's edits made before the upgrade are still there.
#[test]
fn rollback_returns_files_the_admin_never_edited_to_the_old_world() {
    if !in_private_ns("rollback_returns_files_the_admin_never_edited_to_the_old_world") {
        return;
    }
    let r = Root::new(None);
    let w2 = setup(&r);
    let alice = r.read("js/ns/etc/passwd");
    let doc = r.json(&["upgrade", "--from-dir", arg(&w2)]);
    assert_eq!(r.read("js/ns/etc/defaults/rc.conf"), defaults2(), "{doc}");
    assert_eq!(r.read("js/ns/etc/hosts"), HOSTS2);
    let doc = r.json(&["rollback"]);
    assert_eq!(doc["report"]["outcome"], "committed", "{doc}");
    assert_eq!(r.read("j/mroot/usr/share/misc/world-version"), "world 1\n");
    assert!(doc["etc_merge"]["error"].is_null(), "{doc}");
    for rel in ["defaults/rc.conf", "hosts", "motd"] {
        assert_eq!(
            r.read(&format!("js/ns/etc/{rel}")),
            pristine(&r, rel),
            "etc/{rel} is v1's again: {doc}"
        );
    }
    assert_eq!(pristine(&r, "defaults/rc.conf"), DEFAULTS1);
    assert_eq!(r.read("js/ns/etc/rc.conf"), admins_rc(), "the admin's edit");
    assert_eq!(r.read("js/ns/etc/passwd"), alice, "the admin's user");
    let ns = target(&doc, "ns");
    assert_eq!(
        list(ns, "updated"),
        [
            "etc/defaults/rc.conf",
            "etc/hosts",
            "etc/mode-only",
            "etc/motd"
        ],
        "{ns}"
    );
    assert_eq!(list(ns, "merged"), ["etc/rc.conf"], "{ns}");
    assert_eq!(list(ns, "added"), ["etc/v1-only"], "{ns}");
    assert_eq!(list(ns, "removed"), ["etc/v2-only"], "{ns}");
    assert_eq!(ns["to"], "mroot", "{ns}");
    assert!(ns["from"].as_str().unwrap().starts_with("mroot."), "{ns}");
    // Its own transaction, after the rollback's.
    let ops: Vec<String> = r
        .transactions()
        .iter()
        .map(|t| t["op"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        ops[ops.len() - 2..],
        ["rollback", "etc-merge"],
        "history: {ops:?}"
    );
    // The records follow the rollback: a merge by hand has nothing to do.
    let again = r.json(&["etc-merge"]);
    assert_eq!(again["changed"], false, "{again}");
}

/// A rollback right after an upgrade, with no edit in between, leaves
/// every jail's `/etc` (and skel's) exactly as before the upgrade: bytes,
/// modes and owners, the admin's edits included; a running jail too.
#[test]
fn rollback_right_after_an_upgrade_gives_every_etc_back_byte_for_byte() {
    if !in_private_ns("rollback_right_after_an_upgrade_gives_every_etc_back_byte_for_byte") {
        return;
    }
    let r = Root::new(None);
    let w2 = setup(&r);
    r.ok(&JailDef::new("www", RunState::Running).create_args());
    std::fs::set_permissions(r.path("js/www/etc/hosts"), PermissionsExt::from_mode(0o600)).unwrap();
    let before = etcs(&r);
    r.json(&["upgrade", "--from-dir", arg(&w2)]);
    let upgraded = etcs(&r);
    assert_ne!(diff(&before, &upgraded), Vec::<String>::new());
    let doc = r.json(&["rollback"]);
    assert!(
        doc["etc_merge"]["report"]["outcome"] == "committed",
        "{doc}"
    );
    assert_eq!(diff(&before, &etcs(&r)), Vec::<String>::new(), "{doc}");
    let status = r.status();
    let www = status["jails"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["name"] == "www")
        .unwrap();
    assert_eq!(www["running"], true, "{status}");
}

/// An edit the admin made after the upgrade, on the line the rollback
/// would revert: exit 7, the admin's file untouched, a proposal beside it,
/// and the rollback itself committed (the jail runs world 1). The dry run
/// says so beforehand (exit 7 too) and changes nothing.
#[test]
fn an_edit_after_the_upgrade_that_clashes_with_the_revert_is_exit_7() {
    if !in_private_ns("an_edit_after_the_upgrade_that_clashes_with_the_revert_is_exit_7") {
        return;
    }
    let r = Root::new(None);
    let w2 = setup(&r);
    r.json(&["upgrade", "--from-dir", arg(&w2)]);
    let mine = DEFAULTS1.replace("ntpd_enable=\"NO\"", "ntpd_enable=\"YES\" # mine");
    r.write("js/ns/etc/defaults/rc.conf", &mine);
    let before = merge_state(&r);
    let dry = r.json_code(&["rollback", "--dry-run"], 7);
    let ns = target(&dry, "ns");
    assert_eq!(list(ns, "conflicts"), ["etc/defaults/rc.conf"], "{ns}");
    assert_eq!(ns["from"], "mroot", "{ns}");
    let steps = step_names(&dry["etc_merge"]["plan"]);
    assert!(
        steps.contains(&"propose-ns-etc/defaults/rc.conf".to_owned()),
        "{steps:?}"
    );
    assert_eq!(diff(&before, &merge_state(&r)), Vec::<String>::new());
    let doc = r.json_code(&["rollback"], 7);
    assert_eq!(doc["report"]["outcome"], "committed", "{doc}");
    assert_eq!(r.read("j/mroot/usr/share/misc/world-version"), "world 1\n");
    let ns = target(&doc, "ns");
    assert_eq!(list(ns, "conflicts"), ["etc/defaults/rc.conf"], "{ns}");
    assert_eq!(
        ns["conflicts"][0]["proposal"], "etc/defaults/rc.conf.jailtx-merge",
        "{ns}"
    );
    assert_eq!(r.read("js/ns/etc/defaults/rc.conf"), mine, "untouched");
    let proposal = r.read("js/ns/etc/defaults/rc.conf.jailtx-merge");
    for marker in [
        "<<<<<<< ns (yours)\nntpd_enable=\"YES\" # mine\n",
        "=======\nntpd_enable=\"NO\"\n>>>>>>> mroot",
    ] {
        assert!(proposal.contains(marker), "{marker:?} in\n{proposal}");
    }
    // The rest went back to world 1 regardless.
    assert_eq!(r.read("js/ns/etc/hosts"), HOSTS1);
    let human = r.code(&["etc-merge"], 7);
    assert!(
        human.contains("unresolved etc/defaults/rc.conf.jailtx-merge"),
        "{human}"
    );
}

/// `rollback --dry-run` shows the merge back as planned before the
/// switch (from `mroot`, the world left, to the archive returned to), in
/// JSON, in text and as FreeBSD commands, and changes nothing; the real
/// rollback then does what it said.
#[test]
fn rollback_dry_run_shows_the_merge_back() {
    if !in_private_ns("rollback_dry_run_shows_the_merge_back") {
        return;
    }
    let r = Root::new(None);
    let w2 = setup(&r);
    r.json(&["upgrade", "--from-dir", arg(&w2)]);
    let before = merge_state(&r);
    let dry = r.json(&["rollback", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["plan"]["op"], "rollback", "{dry}");
    let archive = dry["plan"]["notes"]["target"].as_str().unwrap().to_owned();
    assert_eq!(dry["etc_merge"]["plan"]["op"], "etc-merge", "{dry}");
    let ns = target(&dry, "ns");
    assert_eq!(
        (&ns["from"], &ns["to"]),
        (&"mroot".into(), &archive.clone().into())
    );
    let lists =
        |t: &Value| ["updated", "added", "removed", "merged", "conflicts"].map(|k| (k, list(t, k)));
    let planned = lists(ns);
    assert!(
        planned[0].1.contains(&"etc/defaults/rc.conf".to_owned()),
        "{ns}"
    );
    let text = r.ok(&["rollback", "--dry-run"]);
    for line in [
        "then, as its own transaction, /etc merged back:",
        "  updated    etc/defaults/rc.conf\n",
        "  merged     etc/rc.conf\n",
    ] {
        assert!(text.contains(line), "{line:?} in\n{text}");
    }
    let bsd = r.json(&["--backend", "freebsd", "rollback", "--dry-run"]);
    assert_eq!(bsd["op"], "rollback", "{bsd}");
    let merge_cmds = &bsd["etc_merge"]["transcript"]["commands"];
    assert!(
        merge_cmds.as_array().is_some_and(|c| !c.is_empty()),
        "{bsd}"
    );
    assert_eq!(lists(target(&bsd, "ns")), planned);
    assert_eq!(
        diff(&before, &merge_state(&r)),
        Vec::<String>::new(),
        "a dry run changes nothing"
    );
    let doc = r.json(&["rollback"]);
    assert_eq!(lists(target(&doc, "ns")), planned, "as the dry run said");
}

/// `etc-merge` by hand after a rollback whose own merge never ran merges
/// the right way (from the world the jail was merged to, to `mroot`), and
/// after a rollback of the rollback, the merge follows that switch too.
#[test]
fn etc_merge_by_hand_follows_the_last_switch_whichever_way() {
    if !in_private_ns("etc_merge_by_hand_follows_the_last_switch_whichever_way") {
        return;
    }
    let r = Root::new(None);
    let w2 = setup(&r);
    r.json(&["upgrade", "--from-dir", arg(&w2)]);
    let upgraded = etcs(&r);
    let out = r.run_env(
        &["rollback"],
        &[("JAILTX_FAULT", "etc-merge/before-intent:0")],
    );
    out.assert_killed("the merge after the rollback");
    let out = r.ok(&["recover", "--rollback"]);
    assert!(out.contains("(etc-merge): rolled-back"), "{out}");
    assert_eq!(r.read("j/mroot/usr/share/misc/world-version"), "world 1\n");
    assert_eq!(r.read("js/ns/etc/hosts"), HOSTS2, "not merged yet");
    let doc = r.json(&["etc-merge"]);
    assert_eq!(r.read("js/ns/etc/hosts"), HOSTS1, "{doc}");
    assert_eq!(r.read("js/ns/etc/defaults/rc.conf"), DEFAULTS1);
    assert_eq!(r.read("js/ns/etc/rc.conf"), admins_rc());
    // Forwards again: the rollback of the rollback merges to world 2.
    let archive = r.dry_run_plan(&["rollback"])["notes"]["target"]
        .as_str()
        .unwrap()
        .to_owned();
    r.json(&["rollback", "--to", &archive]);
    assert_eq!(r.read("j/mroot/usr/share/misc/world-version"), "world 2\n");
    assert_eq!(diff(&upgraded, &etcs(&r)), Vec::<String>::new());
}

/// A rollback killed after its last step and carried to its commit by
/// `recover` is followed by its merge, as a recovered upgrade is.
#[test]
fn a_recovered_rollback_is_followed_by_its_merge() {
    if !in_private_ns("a_recovered_rollback_is_followed_by_its_merge") {
        return;
    }
    let r = Root::new(None);
    let w2 = setup(&r);
    r.json(&["upgrade", "--from-dir", arg(&w2)]);
    let last = step_names(&r.dry_run_plan(&["rollback"])).len() - 1;
    r.run_env(
        &["rollback"],
        &[("JAILTX_FAULT", &format!("rollback/after-done:{last}"))],
    )
    .assert_killed("the rollback");
    assert_eq!(r.read("js/ns/etc/hosts"), HOSTS2);
    let doc = r.json(&["recover"]);
    assert_eq!(doc["recovered"]["op"], "rollback", "{doc}");
    assert_eq!(doc["etc_merge"]["report"]["outcome"], "committed", "{doc}");
    assert_eq!(r.read("js/ns/etc/hosts"), HOSTS1);
    assert_eq!(r.read("js/ns/etc/defaults/rc.conf"), DEFAULTS1);
}

/// The automatic rollback of an upgrade whose health check fails happens
/// inside the upgrade's transaction, before its commit, so no merge has
/// run: `/etc` is as before the upgrade, exit 1, and nothing is merged.
#[test]
fn a_failed_health_check_rolls_back_before_any_merge() {
    if !in_private_ns("a_failed_health_check_rolls_back_before_any_merge") {
        return;
    }
    let r = Root::new(Some("[health]\ncommand = \"false\"\n"));
    let (w1, w2) = worlds(&r);
    r.template(&w1);
    r.ok(&JailDef::new("ns", RunState::Running).create_args());
    let before = etcs(&r);
    let out = r.run(&["upgrade", "--from-dir", arg(&w2)]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert_eq!(diff(&before, &etcs(&r)), Vec::<String>::new());
    let ops: Vec<Value> = r.transactions().iter().map(|t| t["op"].clone()).collect();
    assert!(!ops.contains(&"etc-merge".into()), "{ops:?}");
}

/// A crash at each step of the rollback's merge transaction, then
/// `recover` or `recover --rollback`: every `/etc`, and the records, are
/// exactly as the rollback's commit left them or as a clean rollback
/// leaves them (per the merge's commit point), the journal is clean and
/// the jails run world 1. `JAILTX_FULL_MATRIX=1` adds the other two
/// forward instants.
#[test]
fn a_crash_in_the_rollbacks_merge_recovers_both_ways() {
    if !in_private_ns("a_crash_in_the_rollbacks_merge_recovers_both_ways") {
        return;
    }
    // A clean run: the merge's steps and the two states a crash may end in.
    let probe = Root::new(None);
    let w2 = setup(&probe);
    probe.json(&["upgrade", "--from-dir", arg(&w2)]);
    let unmerged = merge_state(&probe);
    let dry = probe.json(&["rollback", "--dry-run"]);
    let steps = step_names(&dry["etc_merge"]["plan"]);
    let commit = dry["etc_merge"]["plan"]["commit"].as_u64().unwrap() as usize;
    for kind in [
        "aside-ns-",
        "update-skel-",
        "merge-ns-",
        "add-ns-",
        "drop-ns-",
    ] {
        assert!(
            steps.iter().any(|s| s.starts_with(kind)),
            "{kind} in {steps:?}"
        );
    }
    probe.json(&["rollback"]);
    let merged = merge_state(&probe);
    assert_ne!(unmerged, merged);
    drop(probe);
    let instants: &[&str] = if full_matrix() {
        &FORWARD
    } else {
        &["before-intent", "after-effect"]
    };
    let mut cases = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        for instant in instants {
            for rollback in [false, true] {
                let label = format!("etc-merge/{instant}:{i} ({step}), rollback={rollback}");
                cases.push((label, (i, *instant, rollback)));
            }
        }
    }
    let (total, failures) = run_cases(cases, |&(i, instant, rollback)| {
        let r = Root::new(None);
        let w2 = setup(&r);
        r.json(&["upgrade", "--from-dir", arg(&w2)]);
        let fault = format!("etc-merge/{instant}:{i}");
        let out = r.run_env(&["rollback"], &[("JAILTX_FAULT", &fault)]);
        let mut bad = Vec::new();
        if !out.killed() {
            bad.push(format!("not killed: {out}"));
        }
        let rec = r.run(recover_args(rollback));
        if rec.code() != Some(0) {
            bad.push(format!("recover: {rec}"));
        }
        let want = if rolls_back(i, commit, rollback) {
            &unmerged
        } else {
            &merged
        };
        bad.extend(diff(want, &merge_state(&r)));
        let again = r.run(&["recover"]);
        if !again.stdout.contains("nothing to recover") {
            bad.push(format!("a second recover: {again}"));
        }
        if r.read("j/mroot/usr/share/misc/world-version") != "world 1\n" {
            bad.push("mroot is not world 1".into());
        }
        if bad.is_empty() { Ok(()) } else { Err(bad) }
    });
    assert_no_failures(&failures, total, "crashes in the rollback's merge");
    eprintln!(
        "rollback's merge: {total} crash cases over {} steps",
        steps.len()
    );
}
