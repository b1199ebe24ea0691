//! Issue 7: the unattended `/etc` three-way merge after an upgrade.
//!
//! The diff3 engine against `git merge-file` on a generated corpus; then, on
//! the Linux backend in a private mount namespace (each test re-runs itself
//! under `unshare --mount`), the merge end to end: after an upgrade, each
//! rule of the merge alone, a jail root's hostile symlinks, idempotence, and
//! a crash at every step of the merge recovered both ways.

mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use jailtx::etcmerge::diff3::{Labels, Merged, merge};
use serde_json::Value;
use support::{
    Content, FORWARD, JailDef, Kind, Rng, Root, RunState, Snapshot, diff, in_private_ns, mkworld,
    recover_args, rolls_back, snapshot_live, step_names,
};

/// A config-file-like line: mostly distinct settings, some blank lines,
/// comments and braces that repeat, as in real files under /etc.
fn line(rng: &mut Rng) -> String {
    match rng.index(10) {
        0 => "\n".into(),
        1 => "# ----\n".into(),
        2 => "}\n".into(),
        _ => format!("opt{}=\"{}\"\n", rng.index(8), rng.index(2)),
    }
}

fn edit(rng: &mut Rng, base: &[String], hot: usize) -> Vec<String> {
    let mut out = base.to_vec();
    for _ in 0..1 + rng.index(3) {
        // Edits cluster around `hot` half the time, so both sides often meet.
        let at = if rng.chance(50) || out.is_empty() {
            hot.min(out.len())
        } else {
            rng.index(out.len() + 1)
        };
        match rng.index(3) {
            0 if at < out.len() => out[at] = line(rng),
            1 if at < out.len() => {
                let n = 1 + rng.index(2);
                out.drain(at..(at + n).min(out.len()));
            }
            _ => {
                for _ in 0..1 + rng.index(2) {
                    out.insert(at, line(rng));
                }
            }
        }
    }
    out
}

fn triple(rng: &mut Rng) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let base: Vec<String> = (0..3 + rng.index(20)).map(|_| line(rng)).collect();
    let hot = rng.index(base.len() + 1);
    let ours = edit(rng, &base, hot);
    let theirs = if rng.chance(10) {
        ours.clone()
    } else {
        edit(rng, &base, hot)
    };
    let join = |v: &[String], rng: &mut Rng| {
        let mut s = v.concat().into_bytes();
        if rng.chance(5) && s.ends_with(b"\n") {
            s.pop();
        }
        s
    };
    let b = join(&base, rng);
    let o = join(&ours, rng);
    let t = join(&theirs, rng);
    (b, o, t)
}

fn git_merge_file(dir: &Path, base: &[u8], ours: &[u8], theirs: &[u8]) -> (bool, Vec<u8>) {
    for (name, text) in [("base", base), ("ours", ours), ("theirs", theirs)] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    let out = Command::new("git")
        .current_dir(dir)
        .args(["merge-file", "-p", "ours", "base", "theirs"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .output()
        .expect("run git merge-file (git is needed by this test)");
    // 0: clean; 1..=127: that many conflicts (capped). Anything else (a
    // signal, 128 and up for git's own errors) is git failing, which must
    // never count as a conflict verdict.
    let code = out.status.code();
    assert!(
        code.is_some_and(|c| (0..=127).contains(&c)),
        "git merge-file failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    (code == Some(0), out.stdout)
}

const LABELS: Labels = Labels {
    ours: "ours",
    base: "base",
    theirs: "theirs",
};

/// The clean/conflict verdict of our diff3 matches `git merge-file`'s on a
/// generated corpus, and clean results are byte-identical.
#[test]
fn diff3_agrees_with_git_merge_file() {
    let cases: usize = std::env::var("JAILTX_MERGE_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let dir = tempfile::tempdir().unwrap();
    // A fixed seed: every run tests the same corpus.
    let mut rng = Rng::new(7);
    let (mut clean, mut clashes) = (0, 0);
    let mut bad = Vec::new();
    for i in 0..cases {
        let (b, o, t) = triple(&mut rng);
        let (git_clean, git_out) = git_merge_file(dir.path(), &b, &o, &t);
        let ours = merge(&b, &o, &t, LABELS);
        match (&ours, git_clean) {
            (Merged::Clean(m), true) => {
                clean += 1;
                if *m != git_out {
                    bad.push(format!("case {i}: clean results differ"));
                }
            }
            (Merged::Conflict { .. }, false) => clashes += 1,
            _ => bad.push(format!("case {i}: git clean={git_clean}, ours {ours:?}")),
        }
    }
    eprintln!("{cases} triples: {clean} clean, {clashes} conflicts");
    assert!(
        bad.is_empty(),
        "{} of {cases} differ:\n{}",
        bad.len(),
        bad.join("\n")
    );
    assert!(clean >= 10 && clashes >= 10, "corpus covers both verdicts");
}

/// `scripts/mkworld` version `version` in `r`'s scratch folder, then `edit`
/// on its etc.
fn world(r: &Root, version: u32, edit: impl Fn(&Path)) -> PathBuf {
    let w = r.scratch.join(format!("world{version}"));
    mkworld(&w, version);
    edit(&w.join("etc"));
    w
}

/// Creates jail `name`, never started here.
fn jail(r: &Root, name: &str) {
    r.ok(&JailDef::new(name, RunState::Stopped).create_args());
}

fn upgrade(r: &Root, world: &Path, want: i32) -> Value {
    r.json_code(&["upgrade", "--from-dir", world.to_str().unwrap()], want)
}

/// The report of `target` in an upgrade's or etc-merge's JSON document.
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
        .unwrap()
        .iter()
        .map(|v| match v {
            Value::String(s) => s.clone(),
            o => o["path"].as_str().unwrap().to_owned(),
        })
        .collect()
}

const RC1: &str = "hostname=\"\"\nsshd_enable=\"NO\"\nsendmail_enable=\"NONE\"\n# end\n";

/// World 1 with a longer rc.conf; world 2 changes its third line and adds a file.
fn worlds(r: &Root) -> (PathBuf, PathBuf) {
    let w1 = world(r, 1, |etc| {
        std::fs::write(etc.join("rc.conf"), RC1).unwrap()
    });
    let w2 = world(r, 2, |etc| {
        std::fs::write(etc.join("rc.conf"), RC1.replace("\"NONE\"", "\"NO\"")).unwrap();
        std::fs::write(etc.join("ntp.conf"), "pool 0.freebsd.pool.ntp.org iburst\n").unwrap();
    });
    (w1, w2)
}

/// The end-to-end case: an admin's edit in one line, the new world's
/// in another, merged cleanly by the upgrade itself; the new file added;
/// skel merged too; a second run changes nothing.
#[test]
fn upgrade_merges_etc_cleanly_and_adds_new_files() {
    if !in_private_ns("upgrade_merges_etc_cleanly_and_adds_new_files") {
        return;
    }
    let r = Root::new(None);
    let (w1, w2) = worlds(&r);
    r.template(&w1);
    assert_eq!(
        std::fs::read_to_string(r.path("j/mroot/usr/share/jailtx/pristine/etc/rc.conf")).unwrap(),
        RC1,
        "the template keeps the world's own etc"
    );
    jail(&r, "ns");
    let ours = RC1.replace("hostname=\"\"", "hostname=\"ns.example.org\"");
    r.write("js/ns/etc/rc.conf", &ours);
    let doc = upgrade(&r, &w2, 0);
    assert_eq!(doc["report"]["outcome"], "committed", "{doc}");
    assert!(doc["etc_merge"]["error"].is_null(), "{doc}");
    let ns = target(&doc, "ns");
    assert_eq!(list(ns, "merged"), ["etc/rc.conf"], "{ns}");
    assert_eq!(list(ns, "added"), ["etc/ntp.conf"], "{ns}");
    assert!(list(ns, "conflicts").is_empty() && list(ns, "updated").is_empty());
    assert_eq!(ns["from"].as_str().unwrap()[..6], *"mroot.");
    assert_eq!(
        r.read("js/ns/etc/rc.conf"),
        ours.replace("\"NONE\"", "\"NO\""),
        "both edits"
    );
    assert_eq!(
        r.read("js/ns/etc/ntp.conf"),
        "pool 0.freebsd.pool.ntp.org iburst\n"
    );
    let skel = target(&doc, "skel");
    assert_eq!(list(skel, "updated"), ["etc/rc.conf"], "{skel}");
    assert_eq!(list(skel, "added"), ["etc/ntp.conf"], "{skel}");
    // No aside copy or temporary is left behind.
    for e in std::fs::read_dir(r.path("js/ns/etc")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(!n.contains("jailtx"), "{n} left in js/ns/etc");
    }
    // Idempotent: a second run plans nothing and changes nothing.
    let before = merge_state(&r);
    let again = r.json(&["etc-merge"]);
    assert_eq!(again["changed"], false, "{again}");
    assert!(r.ok(&["etc-merge"]).contains("nothing to change"));
    assert_eq!(diff(&before, &merge_state(&r)), Vec::<String>::new());
    // A jail created now starts from the merged skel and needs nothing.
    jail(&r, "www");
    assert_eq!(
        r.json(&["etc-merge", "www"])["etc_merge"]["targets"][0]["merged"],
        serde_json::json!([])
    );
    assert_eq!(r.read("js/www/etc/ntp.conf"), r.read("j/skel/etc/ntp.conf"));
}

/// A clash: the admin's file stays byte for byte, the proposal with markers
/// lands beside it, the upgrade stays committed, exit 7; later runs report
/// it as unresolved until the proposal is removed.
#[test]
fn a_clash_keeps_the_admins_file_and_writes_a_proposal() {
    if !in_private_ns("a_clash_keeps_the_admins_file_and_writes_a_proposal") {
        return;
    }
    let r = Root::new(None);
    let (w1, w2) = worlds(&r);
    r.template(&w1);
    jail(&r, "ns");
    let ours = RC1.replace("\"NONE\"", "\"YES\"");
    r.write("js/ns/etc/rc.conf", &ours);
    let doc = upgrade(&r, &w2, 7);
    assert_eq!(doc["report"]["outcome"], "committed", "{doc}");
    assert_eq!(r.read("j/mroot/usr/share/misc/world-version"), "world 2\n");
    let ns = target(&doc, "ns");
    assert_eq!(list(ns, "conflicts"), ["etc/rc.conf"], "{ns}");
    assert_eq!(
        ns["conflicts"][0]["proposal"], "etc/rc.conf.jailtx-merge",
        "{ns}"
    );
    assert_eq!(list(ns, "added"), ["etc/ntp.conf"], "{ns}");
    assert_eq!(
        r.read("js/ns/etc/rc.conf"),
        ours,
        "the admin's file is untouched"
    );
    let proposal = r.read("js/ns/etc/rc.conf.jailtx-merge");
    for marker in [
        "<<<<<<< ns (yours)\nsendmail_enable=\"YES\"\n",
        "||||||| mroot.",
        "=======\nsendmail_enable=\"NO\"\n>>>>>>> mroot (new world)\n",
    ] {
        assert!(proposal.contains(marker), "{marker:?} in\n{proposal}");
    }
    let mode = std::fs::metadata(r.path("js/ns/etc/rc.conf.jailtx-merge"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0, "a proposal is never executable");
    // The human output says the same.
    let again = r.code(&["etc-merge"], 7);
    assert!(
        again.contains("unresolved etc/rc.conf.jailtx-merge"),
        "{again}"
    );
    let before = merge_state(&r);
    let doc = r.json_code(&["etc-merge"], 7);
    assert_eq!(
        list(target(&doc, "ns"), "unresolved"),
        ["etc/rc.conf.jailtx-merge"]
    );
    assert_eq!(doc["changed"], false);
    assert_eq!(
        diff(&before, &merge_state(&r)),
        Vec::<String>::new(),
        "nothing changes while unresolved"
    );
    // Resolved: the admin edits the file and removes the proposal.
    std::fs::remove_file(r.path("js/ns/etc/rc.conf.jailtx-merge")).unwrap();
    let doc = r.json(&["etc-merge"]);
    assert!(list(target(&doc, "ns"), "unresolved").is_empty(), "{doc}");
}

/// Every rule of the issue, on one jail, with `etc-merge` alone (the jail's
/// record says which world its etc came from; a rollback whose own merge is
/// undone is the way back to world 1 so that `etc-merge` has something to do).
#[test]
fn each_rule_of_the_merge() {
    if !in_private_ns("each_rule_of_the_merge") {
        return;
    }
    let r = Root::new(None);
    let w1 = world(&r, 1, |etc| {
        for (name, text) in [
            ("untouched", "v1\n"),
            ("kept", "v1\n"),
            ("dropped", "v1\n"),
            ("dropped-changed", "v1\n"),
            ("deleted-here", "v1\n"),
            ("both", "a\nb\nc\nd\ne\n"),
        ] {
            std::fs::write(etc.join(name), text).unwrap();
        }
        std::fs::create_dir(etc.join("rc.d")).unwrap();
        std::fs::write(etc.join("rc.d/old"), "#!/bin/sh\n").unwrap();
    });
    let w2 = world(&r, 2, |etc| {
        for (name, text) in [
            ("untouched", "v2\n"),
            ("kept", "v1\n"),
            ("deleted-here", "v2\n"),
            ("both", "a\nb\nc\nd\nE\n"),
            ("brand-new", "new\n"),
        ] {
            std::fs::write(etc.join(name), text).unwrap();
        }
        std::fs::create_dir_all(etc.join("rc.d")).unwrap();
        std::fs::write(etc.join("rc.d/fresh"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(etc.join("rc.d/fresh"), PermissionsExt::from_mode(0o555)).unwrap();
        std::fs::create_dir(etc.join("newdir")).unwrap();
        std::fs::write(etc.join("newdir/conf"), "x\n").unwrap();
    });
    r.template(&w1);
    jail(&r, "ns");
    r.write("js/ns/etc/kept", "mine\n");
    r.write("js/ns/etc/dropped-changed", "mine\n");
    r.write("js/ns/etc/both", "A\nb\nc\nd\ne\n");
    std::fs::remove_file(r.path("js/ns/etc/deleted-here")).unwrap();
    let doc = upgrade(&r, &w2, 7);
    let ns = target(&doc, "ns");
    assert_eq!(list(ns, "updated"), ["etc/untouched"], "{ns}");
    assert_eq!(
        list(ns, "added"),
        [
            "etc/brand-new",
            "etc/newdir/",
            "etc/newdir/conf",
            "etc/rc.d/fresh"
        ],
        "{ns}"
    );
    assert_eq!(list(ns, "removed"), ["etc/dropped", "etc/rc.d/old"], "{ns}");
    assert_eq!(list(ns, "merged"), ["etc/both"], "{ns}");
    assert_eq!(
        list(ns, "conflicts"),
        ["etc/deleted-here", "etc/dropped-changed"],
        "{ns}"
    );
    for c in ns["conflicts"].as_array().unwrap() {
        assert!(c["proposal"].is_null(), "{c}");
    }
    assert_eq!(r.read("js/ns/etc/untouched"), "v2\n");
    assert_eq!(r.read("js/ns/etc/kept"), "mine\n");
    assert_eq!(r.read("js/ns/etc/both"), "A\nb\nc\nd\nE\n");
    assert_eq!(r.read("js/ns/etc/dropped-changed"), "mine\n");
    assert_eq!(r.read("js/ns/etc/newdir/conf"), "x\n");
    assert!(!r.path("js/ns/etc/dropped").exists());
    assert!(!r.path("js/ns/etc/deleted-here").exists(), "not restored");
    assert!(!r.path("js/ns/etc/rc.d/old").exists());
    let m = std::fs::metadata(r.path("js/ns/etc/rc.d/fresh")).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o555, "the world's mode");
    // Back to world 1, with the merge that follows the rollback killed
    // before its first step and rolled back: etc-merge by hand merges back
    // from world 2 (the recorded base) to world 1, as that merge would have.
    r.run_env(
        &["rollback"],
        &[("JAILTX_FAULT", "etc-merge/before-intent:0")],
    )
    .assert_killed("the merge after the rollback");
    r.ok(&["recover", "--rollback"]);
    let before = merge_state(&r);
    let doc = r.json_code(&["etc-merge", "ns", "--dry-run"], 7);
    assert_eq!(doc["dry_run"], true);
    assert!(!doc["plan"]["steps"].as_array().unwrap().is_empty());
    // The dry run says per file what the merge back would do: world 2 is
    // the base now, world 1 theirs.
    let lists = |ns: &Value| {
        ["updated", "added", "removed", "merged", "conflicts"].map(|key| (key, list(ns, key)))
    };
    let want = [
        ("updated", vec!["etc/untouched"]),
        ("added", vec!["etc/dropped", "etc/rc.d/old"]),
        (
            "removed",
            vec!["etc/brand-new", "etc/newdir/conf", "etc/rc.d/fresh"],
        ),
        ("merged", vec!["etc/both"]),
        ("conflicts", vec!["etc/deleted-here", "etc/dropped-changed"]),
    ]
    .map(|(key, v)| (key, v.into_iter().map(String::from).collect::<Vec<_>>()));
    let planned = lists(target(&doc, "ns"));
    assert_eq!(planned, want, "{doc}");
    let human = r.code(&["etc-merge", "ns", "--dry-run"], 7);
    for line in [
        "etc-merge ns (",
        "  updated    etc/untouched\n",
        "  removed    etc/rc.d/fresh\n",
        "  merged     etc/both\n",
        "  conflict   etc/dropped-changed (added here and by the new world, differently; \
         proposal in etc/dropped-changed.jailtx-merge)\n",
        "  conflict   etc/deleted-here (removed here, changed by the new world: not restored)\n",
    ] {
        assert!(human.contains(line), "{line:?} in\n{human}");
    }
    // The FreeBSD dry run prints its commands, the same per-file report
    // (conflicts have no step) and exits 7 too.
    let bsd = ["--backend", "freebsd", "etc-merge", "ns", "--dry-run"];
    let text = r.code(&bsd, 7);
    assert!(text.starts_with("# jailtx etc-merge on FreeBSD"), "{text}");
    assert!(text.contains("  merged     etc/both\n"), "{text}");
    let doc = r.json_code(&bsd, 7);
    assert!(
        doc["commands"].as_array().is_some_and(|c| !c.is_empty()),
        "{doc}"
    );
    assert_eq!(lists(target(&doc, "ns")), planned, "{doc}");
    assert_eq!(
        diff(&before, &merge_state(&r)),
        Vec::<String>::new(),
        "dry run changes nothing"
    );
    let doc = r.json_code(&["etc-merge", "ns"], 7);
    let ns = target(&doc, "ns");
    assert_eq!(lists(ns), planned, "the merge does what the dry run said");
    assert_eq!(ns["to"], "mroot");
    assert!(ns["from"].as_str().unwrap().starts_with("mroot."), "{ns}");
    assert_eq!(r.read("js/ns/etc/untouched"), "v1\n");
    assert_eq!(r.read("js/ns/etc/both"), "A\nb\nc\nd\ne\n");
    assert!(!r.path("js/ns/etc/brand-new").exists());
}

fn mode_of(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, PermissionsExt::from_mode(mode))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// Modes follow the three-way rule (ours' mode unless it equals base's,
/// then theirs'), including when only a mode changed: the new world making
/// a file 0600 with the same bytes used to be ignored.
#[test]
fn modes_follow_the_three_way_rule() {
    if !in_private_ns("modes_follow_the_three_way_rule") {
        return;
    }
    let r = Root::new(None);
    // (name, world 1, world 2 with mode 0600; every file is 0644 in world 1).
    const FILES: [(&str, &str, &str); 7] = [
        ("mode-only", "v1\n", "v1\n"),
        ("mode-only-admin-mode", "v1\n", "v1\n"),
        ("mode-and-content", "v1\n", "v2\n"),
        ("mode-and-content-admin-mode", "v1\n", "v2\n"),
        ("mode-only-admin-content", "a\nb\n", "a\nb\n"),
        ("same-edit-both-sides", "v1\n", "v2\n"),
        (
            "world-edit-already-here",
            "a\nb\nc\nd\ne\n",
            "A\nb\nc\nd\ne\n",
        ),
    ];
    let w1 = world(&r, 1, |etc| {
        for (name, text, _) in FILES {
            std::fs::write(etc.join(name), text).unwrap();
            chmod(&etc.join(name), 0o644);
        }
    });
    let w2 = world(&r, 2, |etc| {
        for (name, _, text) in FILES {
            std::fs::write(etc.join(name), text).unwrap();
            chmod(&etc.join(name), 0o600);
        }
    });
    r.template(&w1);
    jail(&r, "ns");
    let etc = r.path("js/ns/etc");
    chmod(&etc.join("mode-only-admin-mode"), 0o640);
    chmod(&etc.join("mode-and-content-admin-mode"), 0o640);
    r.write("js/ns/etc/mode-only-admin-content", "A\nb\n");
    r.write("js/ns/etc/same-edit-both-sides", "v2\n");
    r.write("js/ns/etc/world-edit-already-here", "A\nb\nc\nd\nE\n");
    let doc = upgrade(&r, &w2, 0);
    let ns = target(&doc, "ns");
    assert_eq!(
        list(ns, "updated"),
        [
            "etc/mode-and-content",
            "etc/mode-and-content-admin-mode",
            "etc/mode-only",
            "etc/mode-only-admin-content",
            "etc/same-edit-both-sides",
            "etc/world-edit-already-here",
        ],
        "{ns}"
    );
    for key in ["merged", "conflicts", "refused", "added", "removed"] {
        assert!(list(ns, key).is_empty(), "{key}: {ns}");
    }
    for (name, mode, text) in [
        // The world changed the mode only, the admin kept the old one.
        ("mode-only", 0o600, "v1\n"),
        // The admin changed the mode: kept, whatever the world did.
        ("mode-only-admin-mode", 0o640, "v1\n"),
        ("mode-and-content-admin-mode", 0o640, "v2\n"),
        // The world changed content and mode; the admin touched neither.
        ("mode-and-content", 0o600, "v2\n"),
        // The admin's content stays, the world's new mode applies.
        ("mode-only-admin-content", 0o600, "A\nb\n"),
        // The admin already had the new content, not the new mode.
        ("same-edit-both-sides", 0o600, "v2\n"),
        // A line-wise merge whose result is ours: the mode still follows.
        ("world-edit-already-here", 0o600, "A\nb\nc\nd\nE\n"),
    ] {
        assert_eq!(mode_of(&etc.join(name)), mode, "mode of {name}");
        assert_eq!(r.read(&format!("js/ns/etc/{name}")), text, "{name}");
    }
    // Idempotent: a second run finds every mode where the rule puts it.
    let again = r.json(&["etc-merge"]);
    assert_eq!(again["changed"], false, "{again}");
}

/// Issue 7 item 1, beyond etc: each template keeps its world's root
/// dotfiles and `usr/local/etc` pristine too, an archive keeps its own
/// through the upgrade's renames, and (only etc being merged) the jail's
/// copies are left as they are.
#[test]
fn pristine_config_beyond_etc_moves_with_each_template() {
    if !in_private_ns("pristine_config_beyond_etc_moves_with_each_template") {
        return;
    }
    let r = Root::new(None);
    let config = |version: &'static str| {
        move |etc: &Path| {
            let w = etc.parent().unwrap();
            std::fs::write(w.join("root/.profile"), version).unwrap();
            std::fs::create_dir_all(w.join("usr/local/etc")).unwrap();
            std::fs::write(w.join("usr/local/etc/app.conf"), version).unwrap();
        }
    };
    let w1 = world(&r, 1, config("v1\n"));
    let w2 = world(&r, 2, config("v2\n"));
    r.template(&w1);
    jail(&r, "ns");
    assert_eq!(r.read("js/ns/root/.profile"), "v1\n");
    upgrade(&r, &w2, 0);
    let archives: Vec<String> = r.archives().into_keys().collect();
    assert_eq!(archives.len(), 1, "{archives:?}");
    for (template, want) in [("mroot", "v2\n"), (archives[0].as_str(), "v1\n")] {
        let kept = format!("j/{template}/usr/share/jailtx/pristine");
        assert_eq!(r.read(&format!("{kept}/root/.profile")), want, "{template}");
        assert_eq!(
            r.read(&format!("{kept}/usr-local/etc/app.conf")),
            want,
            "{template}"
        );
    }
    assert_eq!(r.read("js/ns/root/.profile"), "v1\n", "not merged");
    assert_eq!(r.read("js/ns/usr-local/etc/app.conf"), "v1\n", "not merged");
}

/// A jail's root replaced etc/hosts with a symlink to a host file, and (in
/// another jail) etc itself with a symlink to a host directory: both are
/// refused and reported, and nothing on the host changes.
#[test]
fn hostile_symlinks_are_refused_and_host_files_stay() {
    if !in_private_ns("hostile_symlinks_are_refused_and_host_files_stay") {
        return;
    }
    let r = Root::new(None);
    let w1 = world(&r, 1, |_| {});
    let w2 = world(&r, 2, |etc| {
        std::fs::write(etc.join("hosts"), "127.0.0.1 localhost\n::1 localhost\n").unwrap();
        std::fs::write(etc.join("rc.conf"), "hostname=\"\"\nntpd_enable=\"YES\"\n").unwrap();
        std::fs::create_dir(etc.join("rc.d")).unwrap();
        std::fs::write(etc.join("rc.d/new"), "#!/bin/sh\n").unwrap();
    });
    // Stand-ins for /etc/shadow and /etc on the host.
    let host = r.scratch.join("host-etc");
    std::fs::create_dir(&host).unwrap();
    for (name, text) in [
        ("shadow", "root:$6$secret:19000::::::\n"),
        ("hosts", "127.0.0.1 localhost\n"),
        ("rc.conf", "hostname=\"\"\n"),
    ] {
        std::fs::write(host.join(name), text).unwrap();
    }
    let host_before = snapshot_live(&host, |_| false);
    r.template(&w1);
    jail(&r, "ns");
    jail(&r, "www");
    jail(&r, "mail");
    std::fs::remove_file(r.path("js/ns/etc/hosts")).unwrap();
    symlink(host.join("shadow"), r.path("js/ns/etc/hosts")).unwrap();
    std::fs::rename(r.path("js/www/etc"), r.path("js/www/etc.real")).unwrap();
    symlink(&host, r.path("js/www/etc")).unwrap();
    // A directory the world adds, planted as a link to the host's etc.
    symlink(&host, r.path("js/mail/etc/rc.d")).unwrap();
    let doc = upgrade(&r, &w2, 7);
    let ns = target(&doc, "ns");
    assert_eq!(list(ns, "refused"), ["etc/hosts"], "{ns}");
    assert!(
        list(ns, "notes").is_empty(),
        "refused, not also noted: {ns}"
    );
    assert_eq!(
        list(ns, "updated"),
        ["etc/rc.conf"],
        "the rest is merged: {ns}"
    );
    let www = target(&doc, "www");
    assert_eq!(list(www, "refused"), ["etc"], "{www}");
    assert!(
        www["refused"][0]["why"]
            .as_str()
            .unwrap()
            .contains("symlink")
    );
    let mail = target(&doc, "mail");
    assert_eq!(list(mail, "refused"), ["etc/rc.d"], "{mail}");
    assert_eq!(
        diff(&host_before, &snapshot_live(&host, |_| false)),
        Vec::<String>::new(),
        "host files unchanged"
    );
    assert_eq!(
        std::fs::read_link(r.path("js/ns/etc/hosts")).unwrap(),
        host.join("shadow"),
        "the jail's link is left as it is"
    );
    // etc itself stays refused on every run. hosts is refused only while
    // the world changes it (the record now says ns is at world 2); after
    // that it is a note, which does not ask for the operator (exit 0).
    let human = r.code(&["etc-merge"], 7);
    assert!(human.contains("refused    etc (a symlink"), "{human}");
    for line in [
        "  note       etc/hosts (a symlink where the world has a regular file",
        "  note       etc/rc.d (a symlink where the world has a directory",
    ] {
        assert!(human.contains(line), "{line:?} in\n{human}");
    }
    let doc = r.json(&["etc-merge", "ns"]);
    let ns = target(&doc, "ns");
    assert_eq!(list(ns, "notes"), ["etc/hosts"], "{ns}");
    assert!(list(ns, "refused").is_empty(), "{ns}");
    assert_eq!(doc["changed"], false, "{doc}");
    assert_eq!(
        diff(&host_before, &snapshot_live(&host, |_| false)),
        Vec::<String>::new()
    );
}

/// The state before and after a merge: every jail's data, skel and the
/// merge records (the journal and history aside).
fn merge_state(r: &Root) -> Snapshot {
    let mut s = Snapshot::new();
    for d in ["js", "j/skel", ".jailtx/etc-merge"] {
        for (k, mut e) in snapshot_live(&r.path(d), |_| false) {
            let rel = format!("{d}/{k}");
            if d.starts_with(".jailtx") && e.kind == Kind::File {
                // A record's inode line differs from one scratch root to the
                // next, so records are compared by their other lines.
                let text = r.read(&rel);
                let keep: Vec<&str> = text.lines().filter(|l| !l.starts_with("etc_ino")).collect();
                e.content = Some(Content::of(keep.join("\n").as_bytes()));
            }
            s.insert(rel, e);
        }
    }
    s
}

/// Worlds 1 and 2 and a template of world 1 with jail ns, whose /etc has an
/// edit that merges and one that clashes with world 2, and one of each
/// other strategy (issue 20): `group` merged by key with one record
/// clashing (written and proposed), `hosts` by union; returns world 2.
fn clashing_setup(r: &Root) -> String {
    let (w1, w2) = worlds(r);
    std::fs::write(w1.join("etc/motd"), "hello\nworld 1\n").unwrap();
    std::fs::write(w2.join("etc/motd"), "hello\nworld 2\n").unwrap();
    std::fs::write(w1.join("etc/group"), "root:x:0:\nstaff:x:20:\n").unwrap();
    std::fs::write(
        w2.join("etc/group"),
        "root:x:0:\nstaff:x:21:\n_tss:x:601:\n",
    )
    .unwrap();
    std::fs::write(w1.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    std::fs::write(w2.join("etc/hosts"), "127.0.0.1 localhost\n10.0.0.1 tpm\n").unwrap();
    r.template(&w1);
    jail(r, "ns");
    r.write(
        "js/ns/etc/rc.conf",
        &RC1.replace("hostname=\"\"", "hostname=\"ns\""),
    );
    r.write("js/ns/etc/motd", "hello\nworld 1 and ns\n");
    r.write("js/ns/etc/group", "root:x:0:\nstaff:x:22:\nalice:x:1001:\n");
    r.write("js/ns/etc/hosts", "127.0.0.1 localhost\n192.0.2.7 ns\n");
    w2.to_str().unwrap().to_owned()
}

/// [`clashing_setup`], then an upgrade to world 2 whose merge never ran: the
/// upgrade commits, the merge that follows it is killed before its first
/// step and rolled back, which leaves it to be run.
fn pending_merge(r: &Root) {
    let w2 = clashing_setup(r);
    r.run_env(
        &["upgrade", "--from-dir", &w2],
        &[("JAILTX_FAULT", "etc-merge/before-intent:0")],
    )
    .assert_killed("the merge after the upgrade");
    let out = r.ok(&["recover", "--rollback"]);
    assert!(out.contains("(etc-merge): rolled-back"), "{out}");
}

/// An upgrade killed after its last step and finished by another command's
/// `--auto-recover`: the merge runs, and its clash does not fail the command
/// asked for but is said on stderr (`recover` itself would exit 7).
#[test]
fn auto_recover_of_an_upgrade_merges_and_reports_the_clash() {
    if !in_private_ns("auto_recover_of_an_upgrade_merges_and_reports_the_clash") {
        return;
    }
    let r = Root::new(None);
    let w2 = clashing_setup(&r);
    let plan = r.dry_run_plan(&["upgrade", "--from-dir", &w2]);
    let last = step_names(&plan).len() - 1;
    r.run_env(
        &["upgrade", "--from-dir", &w2],
        &[("JAILTX_FAULT", &format!("after-done:{last}"))],
    )
    .assert_killed("the upgrade");
    let out = r.run(&["--auto-recover", "prune", "--keep", "5"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stderr
            .contains("after the recovered upgrade: /etc needs the operator"),
        "{out}"
    );
    assert!(r.path("js/ns/etc/motd.jailtx-merge").is_file(), "{out}");
    assert_eq!(r.read("js/ns/etc/motd"), "hello\nworld 1 and ns\n");
}

/// A crash at each step of the merge, before its intent is durable
/// (`before-intent`) and after its effect (`after-effect`), then `recover`
/// and `recover --rollback`: the tree is exactly as before the merge or
/// after it, as the commit point decides, and a second recover finds
/// nothing. `JAILTX_FULL_MATRIX=1` (as in the other matrices) adds the other
/// two forward instants.
#[test]
fn a_crash_in_the_merge_recovers_both_ways() {
    if !in_private_ns("a_crash_in_the_merge_recovers_both_ways") {
        return;
    }
    let probe = Root::new(None);
    pending_merge(&probe);
    let before = merge_state(&probe);
    let plan = probe.json_code(&["etc-merge", "--dry-run"], 7);
    let steps = step_names(&plan["plan"]);
    let commit = plan["plan"]["commit"].as_u64().unwrap() as usize;
    for kind in [
        "aside-ns-",
        "update-skel-",
        "merge-ns-",
        "propose-ns-",
        "drop-ns-",
        "record-",
        // The keyed merge with a clashing record writes and proposes; the
        // union merge writes.
        "merge-ns-etc/group",
        "propose-ns-etc/group",
        "merge-ns-etc/hosts",
    ] {
        assert!(
            steps.iter().any(|s| s.starts_with(kind)),
            "{kind} in {steps:?}"
        );
    }
    probe.code(&["etc-merge"], 7);
    let after = merge_state(&probe);
    assert_ne!(before, after);
    drop(probe);
    let instants: &[&str] = if std::env::var("JAILTX_FULL_MATRIX").is_ok_and(|v| v == "1") {
        &FORWARD
    } else {
        &["before-intent", "after-effect"]
    };
    let mut cases = 0;
    for (i, step) in steps.iter().enumerate() {
        for instant in instants {
            for rollback in [false, true] {
                let r = Root::new(None);
                pending_merge(&r);
                let fault = format!("{instant}:{i}");
                r.run_env(&["etc-merge"], &[("JAILTX_FAULT", &fault)])
                    .assert_killed(&format!("{fault} ({step})"));
                r.ok(recover_args(rollback));
                let want = if rolls_back(i, commit, rollback) {
                    &before
                } else {
                    &after
                };
                let got = merge_state(&r);
                let what = format!("crash {fault} ({step}), rollback={rollback}");
                assert_eq!(diff(want, &got), Vec::<String>::new(), "{what}");
                assert!(r.ok(&["recover"]).contains("nothing to recover"), "{what}");
                cases += 1;
            }
        }
    }
    eprintln!("etc-merge: {cases} crash cases over {} steps", steps.len());
}
