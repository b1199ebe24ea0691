//! Issue 20: keyed merges for account files and union merges for set-like lists.
//!
//! What broke: the new world appends a system user (`_tss`) to `passwd` and
//! `group`, the jail's admin appends one of their own (`alice`), both add a
//! line to `hosts`; the line-wise merge called each file a conflict and the
//! upgrade exited 7, leaving the jail without the new world's user. Now
//! the account files merge record by record (`strategy::TABLE`), `hosts`
//! takes both insertions, and the result passes Debian's `pwck -r` and
//! `grpck -r`. Then: a record-level clash (the rest still merges, the
//! proposal marks the record), a UID collision, and a property test of the
//! keyed merge over generated account files.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use jailtx::etcmerge::diff3::Labels;
use jailtx::etcmerge::keyed::{self, Keyed};
use jailtx::etcmerge::strategy::Account;
use proptest::prelude::*;
use serde_json::Value;
use support::{JailDef, Root, RunState, in_private_ns, mkworld};

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
daemon:x:1:1:daemon:/root:/usr/sbin/nologin\n\
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
const GROUP: &str = "root:x:0:\nwheel:x:10:root\ndaemon:x:1:\nnogroup:x:65534:\n";
const HOSTS: &str = "127.0.0.1 localhost\n::1 localhost\n";

const TSS: &str = "_tss:x:601:601:TPM software stack:/nonexistent:/usr/sbin/nologin\n";
const ALICE: &str = "alice:x:1001:1001:Alice:/home/alice:/bin/sh\n";

fn world(r: &Root, version: u32, files: &[(&str, String)]) -> PathBuf {
    let w = r.scratch.join(format!("world{version}"));
    mkworld(&w, version);
    for (name, text) in files {
        std::fs::write(w.join("etc").join(name), text).unwrap();
    }
    w
}

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

/// Worlds 1 and 2 (2 appends `_tss` to passwd and group and a line to
/// hosts), a template of 1 and jail ns whose admin appended `alice` and a
/// line of their own; then the upgrade to 2, with the merge after it killed
/// before its first step and rolled back, so that `etc-merge` can be looked
/// at (dry run) before it runs.
fn tss_and_alice(r: &Root) {
    let w1 = world(
        r,
        1,
        &[
            ("passwd", PASSWD.into()),
            ("group", GROUP.into()),
            ("hosts", HOSTS.into()),
        ],
    );
    let w2 = world(
        r,
        2,
        &[
            ("passwd", format!("{PASSWD}{TSS}")),
            ("group", format!("{GROUP}_tss:x:601:\n")),
            ("hosts", format!("{HOSTS}10.0.0.1 tpm.example.org\n")),
        ],
    );
    r.template(&w1);
    r.ok(&JailDef::new("ns", RunState::Stopped).create_args());
    r.write("js/ns/etc/passwd", &format!("{PASSWD}{ALICE}"));
    r.write(
        "js/ns/etc/group",
        &format!(
            "{}alice:x:1001:\n",
            GROUP.replace("wheel:x:10:root", "wheel:x:10:root,alice")
        ),
    );
    r.write(
        "js/ns/etc/hosts",
        &format!("{HOSTS}192.0.2.7 ns.example.org ns\n"),
    );
    r.run_env(
        &["upgrade", "--from-dir", w2.to_str().unwrap()],
        &[("JAILTX_FAULT", "etc-merge/before-intent:0")],
    )
    .assert_killed("the merge after the upgrade");
    let out = r.ok(&["recover", "--rollback"]);
    assert!(out.contains("(etc-merge): rolled-back"), "{out}");
}

/// Runs Debian's `pwck -r` and `grpck -r` on copies of `etc`'s passwd and
/// group in a scratch root (`-R`), with every home directory and shell the
/// passwd names made there, so that only the files' own consistency can
/// fail them (fields, unique names, each primary group and member known).
fn pwck_and_grpck(etc: &Path, scratch: &Path) {
    let root = scratch.join("pwck-root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    for f in ["passwd", "group"] {
        std::fs::copy(etc.join(f), root.join("etc").join(f)).unwrap();
    }
    let passwd = std::fs::read_to_string(etc.join("passwd")).unwrap();
    for line in passwd.lines() {
        let f: Vec<&str> = line.split(':').collect();
        std::fs::create_dir_all(root.join(f[5].trim_start_matches('/'))).unwrap();
        let shell = root.join(f[6].trim_start_matches('/'));
        std::fs::create_dir_all(shell.parent().unwrap()).unwrap();
        std::fs::write(&shell, "").unwrap();
        std::fs::set_permissions(&shell, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    for tool in ["pwck", "grpck"] {
        let out = Command::new(tool)
            .args(["-r", "-R"])
            .arg(&root)
            .output()
            .unwrap_or_else(|e| panic!("run {tool} (Debian package passwd): {e}"));
        assert!(
            out.status.success(),
            "{tool} -r on the merged files ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// The issue's case: both sides only added records (and hosts lines); the
/// merge is clean, says which strategy merged each file (dry run, human
/// and JSON), makes pwd_mkdb due on FreeBSD, and the result passes pwck
/// and grpck. Before issue 20: three conflicts and exit 7.
#[test]
fn issue20_tss_and_alice_merge_clean() {
    if !in_private_ns("issue20_tss_and_alice_merge_clean") {
        return;
    }
    let r = Root::new(None);
    tss_and_alice(&r);
    let human = r.ok(&["etc-merge", "--dry-run"]);
    for line in [
        "  merged (keyed) etc/group\n",
        "  merged (keyed) etc/passwd\n",
        "  merged (union) etc/hosts\n",
    ] {
        assert!(human.contains(line), "{line:?} in\n{human}");
    }
    let doc = r.json(&["etc-merge", "--dry-run"]);
    let ns = target(&doc, "ns");
    assert_eq!(
        list(ns, "merged"),
        ["etc/group", "etc/hosts", "etc/passwd"],
        "{ns}"
    );
    assert_eq!(
        ns["strategy"],
        serde_json::json!({"etc/group": "keyed", "etc/hosts": "union", "etc/passwd": "keyed"})
    );
    // On FreeBSD the keyed merge of passwd makes pwd_mkdb due in the jail.
    let bsd = r.ok(&["--backend", "freebsd", "etc-merge", "ns", "--dry-run"]);
    assert!(
        bsd.contains("jexec ns /usr/sbin/pwd_mkdb -p /etc/master.passwd"),
        "{bsd}"
    );
    assert!(bsd.contains("  merged (keyed) etc/passwd\n"), "{bsd}");
    let doc = r.json(&["etc-merge"]);
    let ns = target(&doc, "ns");
    assert!(list(ns, "conflicts").is_empty(), "{ns}");
    assert_eq!(list(ns, "merged").len(), 3, "{ns}");
    assert_eq!(r.read("js/ns/etc/passwd"), format!("{PASSWD}{ALICE}{TSS}"));
    assert_eq!(
        r.read("js/ns/etc/group"),
        format!(
            "{}alice:x:1001:\n_tss:x:601:\n",
            GROUP.replace("wheel:x:10:root", "wheel:x:10:root,alice")
        )
    );
    assert_eq!(
        r.read("js/ns/etc/hosts"),
        format!("{HOSTS}192.0.2.7 ns.example.org ns\n10.0.0.1 tpm.example.org\n"),
        "both lines, the admin's first"
    );
    for e in std::fs::read_dir(r.path("js/ns/etc")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(!n.contains("jailtx"), "{n} left in js/ns/etc");
    }
    pwck_and_grpck(&r.path("js/ns/etc"), &r.scratch);
    // Idempotent.
    let again = r.json(&["etc-merge"]);
    assert_eq!(again["changed"], false, "{again}");
}

/// One record both sides changed differently is a conflict for that record
/// alone: the rest of the file merges (the new user is there at once), the
/// record stays as the admin has it, and the proposal marks just it. A new
/// group whose GID the admin's own group has is never added beside it.
#[test]
fn a_record_clash_leaves_that_record_and_merges_the_rest() {
    if !in_private_ns("a_record_clash_leaves_that_record_and_merges_the_rest") {
        return;
    }
    let r = Root::new(None);
    let w1 = world(&r, 1, &[("passwd", PASSWD.into()), ("group", GROUP.into())]);
    let csh = PASSWD.replace("root:/root:/bin/sh", "root:/root:/bin/csh");
    let w2 = world(
        &r,
        2,
        &[
            ("passwd", format!("{csh}{TSS}")),
            ("group", format!("{GROUP}_tss:x:601:\n")),
        ],
    );
    r.template(&w1);
    r.ok(&JailDef::new("ns", RunState::Stopped).create_args());
    let tcsh = PASSWD.replace("root:/root:/bin/sh", "root:/root:/bin/tcsh");
    r.write("js/ns/etc/passwd", &tcsh);
    let group = format!("{GROUP}staff:x:601:alice\n");
    r.write("js/ns/etc/group", &group);
    let doc = r.json_code(&["upgrade", "--from-dir", w2.to_str().unwrap()], 7);
    let ns = target(&doc, "ns");
    assert_eq!(list(ns, "merged"), ["etc/passwd"], "{ns}");
    assert_eq!(ns["strategy"]["etc/passwd"], "keyed", "{ns}");
    assert_eq!(list(ns, "conflicts"), ["etc/group", "etc/passwd"], "{ns}");
    let why = |i: usize| ns["conflicts"][i]["why"].as_str().unwrap().to_owned();
    assert!(
        why(0).contains("_tss: the new world gives it GID 601, which staff has here"),
        "{}",
        why(0)
    );
    assert!(
        why(1).contains("root: changed here and by the new world"),
        "{}",
        why(1)
    );
    assert_eq!(r.read("js/ns/etc/passwd"), format!("{tcsh}{TSS}"));
    assert_eq!(r.read("js/ns/etc/group"), group, "no second group 601");
    let p = r.read("js/ns/etc/passwd.jailtx-merge");
    assert!(
        p.contains("<<<<<<< ns (yours)\nroot:x:0:0:root:/root:/bin/tcsh\n")
            && p.contains("=======\nroot:x:0:0:root:/root:/bin/csh\n>>>>>>> mroot (new world)\n")
            && p.contains("daemon:x:1:1:daemon:/root:/usr/sbin/nologin\n")
            && p.contains(TSS),
        "{p}"
    );
    let g = r.read("js/ns/etc/group.jailtx-merge");
    assert!(g.contains("=======\n_tss:x:601:\n>>>>>>>"), "{g}");
    let human = r.code(&["etc-merge"], 7);
    assert!(
        human.contains("unresolved etc/passwd.jailtx-merge"),
        "{human}"
    );
}

// ---- the property test of the keyed merge, in process ----

const L: Labels = Labels {
    ours: "ours",
    base: "base",
    theirs: "theirs",
};

/// One side's edit of an account file (indices wrap around the records).
#[derive(Debug, Clone)]
enum Edit {
    Remove(usize),
    /// A field other than name and ID: gecos, home, shell (passwd) or the
    /// password field (group); `v` picks the new value.
    Change(usize, usize, u8),
    /// A new record `nN` with ID `200 + id`: both sides draw from the same
    /// few, so names and IDs collide across sides.
    Add(u8, u8),
    /// The record's ID becomes `200 + id`.
    Renumber(usize, u8),
    /// Add (`true`) or drop a member `mN` (group only).
    Member(usize, u8, bool),
    /// A comment line at a position.
    Comment(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0..8usize).prop_map(Edit::Remove),
        (0..8usize, 0..3usize, 0..3u8).prop_map(|(i, f, v)| Edit::Change(i, f, v)),
        (0..4u8, 0..4u8).prop_map(|(n, id)| Edit::Add(n, id)),
        (0..8usize, 0..4u8).prop_map(|(i, id)| Edit::Renumber(i, id)),
        (0..8usize, 0..4u8, any::<bool>()).prop_map(|(i, m, add)| Edit::Member(i, m, add)),
        (0..8usize).prop_map(Edit::Comment),
    ]
}

type Rec = Vec<String>;

#[derive(Debug, Clone)]
enum Ln {
    Comment(String),
    Rec(Rec),
}

fn base_file(account: Account, n: usize) -> Vec<Ln> {
    (0..n)
        .map(|i| {
            let id = (100 + i).to_string();
            Ln::Rec(match account {
                Account::Group => vec![format!("u{i}"), "x".into(), id, "m0,m1".into()],
                _ => vec![
                    format!("u{i}"),
                    "x".into(),
                    id.clone(),
                    id,
                    "gecos".into(),
                    format!("/home/u{i}"),
                    "/bin/sh".into(),
                ],
            })
        })
        .collect()
}

fn recs(f: &[Ln]) -> Vec<&Rec> {
    f.iter()
        .filter_map(|l| match l {
            Ln::Rec(r) => Some(r),
            Ln::Comment(_) => None,
        })
        .collect()
}

/// Applies `edits`, skipping any that would give this side a name or ID
/// twice (each side on its own stays a valid file).
fn apply(account: Account, file: &[Ln], edits: &[Edit], side: &str) -> Vec<Ln> {
    let mut f = file.to_vec();
    for e in edits {
        let recs_at: Vec<usize> = (0..f.len())
            .filter(|i| matches!(f[*i], Ln::Rec(_)))
            .collect();
        let pick = |i: usize| (!recs_at.is_empty()).then(|| recs_at[i % recs_at.len()]);
        let has_id = |f: &[Ln], id: &str| recs(f).iter().any(|r| r[2] == id);
        match *e {
            Edit::Remove(i) => {
                if let Some(at) = pick(i) {
                    f.remove(at);
                }
            }
            Edit::Change(i, field, v) => {
                if let Some(at) = pick(i)
                    && let Ln::Rec(r) = &mut f[at]
                {
                    let field = match account {
                        Account::Group => 1,
                        _ => 4 + field,
                    };
                    r[field] = format!("{side}{v}");
                }
            }
            Edit::Add(n, id) => {
                let name = format!("n{n}");
                let id = (200 + u32::from(id)).to_string();
                if recs(&f).iter().any(|r| r[0] == name) || has_id(&f, &id) {
                    continue;
                }
                let r = match account {
                    Account::Group => vec![name, "x".into(), id, format!("m{n}")],
                    _ => vec![
                        name.clone(),
                        "x".into(),
                        id.clone(),
                        id,
                        side.into(),
                        format!("/home/{name}"),
                        "/bin/sh".into(),
                    ],
                };
                f.push(Ln::Rec(r));
            }
            Edit::Renumber(i, id) => {
                let id = (200 + u32::from(id)).to_string();
                if has_id(&f, &id) {
                    continue;
                }
                if let Some(at) = pick(i)
                    && let Ln::Rec(r) = &mut f[at]
                {
                    r[2] = id;
                }
            }
            Edit::Member(i, m, add) => {
                if account != Account::Group {
                    continue;
                }
                if let Some(at) = pick(i)
                    && let Ln::Rec(r) = &mut f[at]
                {
                    let m = format!("m{m}");
                    let mut ms: Vec<String> = r[3]
                        .split(',')
                        .filter(|x| !x.is_empty() && **x != m)
                        .map(String::from)
                        .collect();
                    if add {
                        ms.push(m);
                    }
                    r[3] = ms.join(",");
                }
            }
            Edit::Comment(i) => {
                let at = i % (f.len() + 1);
                f.insert(at, Ln::Comment(format!("# {side} note {i}")));
            }
        }
    }
    f
}

fn text(f: &[Ln]) -> String {
    f.iter()
        .map(|l| match l {
            Ln::Comment(c) => format!("{c}\n"),
            Ln::Rec(r) => format!("{}\n", r.join(":")),
        })
        .collect()
}

/// name -> record line, of a file's text.
fn by_name(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| (l.split(':').next().unwrap().to_owned(), l.to_owned()))
        .collect()
}

fn run(b: &str, o: &str, t: &str, account: Account) -> (String, BTreeSet<String>) {
    match keyed::merge(b.as_bytes(), o.as_bytes(), t.as_bytes(), account, L) {
        Keyed::Merged {
            text, conflicts, ..
        } => (
            String::from_utf8(text).unwrap(),
            conflicts.into_iter().map(|c| c.name).collect(),
        ),
        Keyed::Unkeyed(why) => panic!("generated files are keyed: {why}"),
    }
}

/// Whether base -> ours and base -> theirs of one group record touch the
/// member list alone (the one case merged field by field).
fn members_only(b: &str, o: &str, t: &str) -> bool {
    let strip = |r: &str| r.rsplit_once(':').map(|(head, _)| head.to_owned());
    strip(b) == strip(o) && strip(b) == strip(t)
}

/// Which cases one generated triple reached, so that a test can show the
/// generator reaches each.
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    clash: bool,
    id_clash: bool,
    members: bool,
    world_added: bool,
}

fn check(account: Account, n: usize, ours_edits: &[Edit], theirs_edits: &[Edit]) -> Seen {
    let mut seen = Seen::default();
    let base = base_file(account, n);
    let (b, o, t) = (
        text(&base),
        text(&apply(account, &base, ours_edits, "o")),
        text(&apply(account, &base, theirs_edits, "t")),
    );
    let (m, conflicts) = run(&b, &o, &t, account);
    let ctx = format!("base:\n{b}ours:\n{o}theirs:\n{t}merged:\n{m}conflicts: {conflicts:?}");
    let (mb, mo, mt, mm) = (by_name(&b), by_name(&o), by_name(&t), by_name(&m));
    // No name twice, no ID twice (neither side has one twice on its own).
    let names: Vec<&str> = m.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(names.len(), mm.len(), "a name twice\n{ctx}");
    let ids: BTreeSet<&str> = mm.values().map(|r| r.split(':').nth(2).unwrap()).collect();
    assert_eq!(ids.len(), mm.len(), "an ID twice\n{ctx}");
    // Every comment of ours stays.
    for c in o.lines().filter(|l| l.starts_with('#')) {
        assert!(m.lines().any(|l| l == c), "{c:?} lost\n{ctx}");
    }
    let all: BTreeSet<&String> = mb.keys().chain(mo.keys()).chain(mt.keys()).collect();
    for name in all {
        let (rb, ro, rt) = (mb.get(name), mo.get(name), mt.get(name));
        let both_changed = ro != rb && rt != rb && ro != rt;
        let merged_members = both_changed
            && account == Account::Group
            && matches!((rb, ro, rt), (Some(b), Some(o), Some(t)) if members_only(b, o, t));
        let got = mm.get(name);
        if conflicts.contains(name) {
            // A conflict keeps ours, and is either a clash of changes or
            // an ID the new world's record would share with another one.
            assert_eq!(got, ro, "{name}: a conflict keeps ours\n{ctx}");
            let clash = both_changed && !merged_members;
            let id_taken = rt.is_some_and(|rt| {
                let id = rt.split(':').nth(2).unwrap();
                mm.iter()
                    .any(|(other, r)| other != name && r.split(':').nth(2) == Some(id))
            });
            assert!(clash || id_taken, "{name}: conflict without a cause\n{ctx}");
            seen.clash |= clash;
            seen.id_clash |= !clash;
        } else {
            assert!(
                !both_changed || merged_members,
                "{name}: clash not reported\n{ctx}"
            );
            let want = if ro == rt || rt == rb {
                ro
            } else if ro == rb {
                rt
            } else {
                // Members merged: every field but the member list is base's.
                let (o, t, b) = (ro.unwrap(), rt.unwrap(), rb.unwrap());
                let g = got.unwrap_or_else(|| panic!("{name}: lost\n{ctx}"));
                let set = |r: &str| -> BTreeSet<String> {
                    r.rsplit(':')
                        .next()
                        .unwrap()
                        .split(',')
                        .filter(|x| !x.is_empty())
                        .map(String::from)
                        .collect()
                };
                let (sb, so, st) = (set(b), set(o), set(t));
                let want: BTreeSet<String> = so
                    .iter()
                    .chain(&st)
                    .filter(|x| !sb.contains(*x) || (so.contains(*x) && st.contains(*x)))
                    .cloned()
                    .collect();
                assert_eq!(set(g), want, "{name}: members\n{ctx}");
                seen.members = true;
                continue;
            };
            assert_eq!(got, want, "{name}\n{ctx}");
            seen.world_added |= rb.is_none() && ro.is_none() && rt.is_some();
        }
        // The admin's records (added or changed) are never lost.
        if ro.is_some() && ro != rb {
            assert!(got.is_some(), "{name}: the admin's record lost\n{ctx}");
        }
    }
    // Ours' records keep their order.
    let order = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.split(':').next().unwrap().to_owned())
            .collect()
    };
    let kept: Vec<String> = order(&o)
        .into_iter()
        .filter(|n| mm.contains_key(n))
        .collect();
    let in_m: Vec<String> = order(&m)
        .into_iter()
        .filter(|n| mo.contains_key(n))
        .collect();
    assert_eq!(kept, in_m, "ours' order\n{ctx}");
    // Idempotent: merging the result again changes nothing.
    let (again, again_conflicts) = run(&b, &m, &t, account);
    assert_eq!(again, m, "not idempotent\n{ctx}");
    assert_eq!(again_conflicts, conflicts, "{ctx}");
    seen
}

type Case = (usize, Vec<Edit>, Vec<Edit>);

fn cases() -> impl Strategy<Value = Case> {
    (
        1..6usize,
        proptest::collection::vec(edit(), 0..6),
        proptest::collection::vec(edit(), 0..6),
    )
}

/// The generator reaches every case the property speaks of: clashing
/// changes, ID collisions, member lists merged, records only the new
/// world added.
#[test]
fn the_generated_files_reach_every_case() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for account in [Account::Passwd, Account::Group] {
        let mut all = Seen::default();
        for _ in 0..512 {
            let (n, o, t) = cases().new_tree(&mut runner).unwrap().current();
            let s = check(account, n, &o, &t);
            all.clash |= s.clash;
            all.id_clash |= s.id_clash;
            all.members |= s.members;
            all.world_added |= s.world_added;
        }
        assert!(
            all.clash && all.id_clash && all.world_added,
            "{account:?}: {all:?}"
        );
        assert_eq!(all.members, account == Account::Group, "{all:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn keyed_merge_of_passwd((n, o, t) in cases()) {
        check(Account::Passwd, n, &o, &t);
    }

    #[test]
    fn keyed_merge_of_group((n, o, t) in cases()) {
        check(Account::Group, n, &o, &t);
    }
}
