//! Issue 12 items 8 and 9: a jail's root cannot wedge jailtx, and a state
//! file's zero tail costs neither time nor memory in proportion to its size.
//!
//! What broke: a jail whose root swapped `etc/group` (and `etc`) between a
//! file and a symlink while an `/etc` merge ran left a transaction whose undo
//! failed with "js/ns/etc/group is in the way of group.jailtx-old";
//! `recover` and `recover --rollback` failed the same way, and every
//! mutating command exited 4 until someone repaired the tree by hand. And a
//! journal or history ending in a large run of zeros was read whole into
//! memory and rescanned with a BLAKE3 hash per offset (64 MiB: 7.5 s and
//! 64 MiB of heap; 3 GiB: minutes).
//!
//! The merge tests run the real binary on the Linux backend in a private
//! mount namespace (each re-runs itself under `unshare --mount`), on a
//! started busybox jail; the planted links point at a decoy host tree,
//! which must come out byte for byte unchanged.

mod support;

use std::os::unix::fs::symlink;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use support::decoy::Decoy;
use support::{
    JailDef, Kind, Root, RunState, Snapshot, diff, in_private_ns, mkworld, recover_args,
    rolls_back, snapshot_live, step_names,
};

const GROUP1: &str = "root:x:0:\nwheel:x:0:root\n";
const GROUP2: &str = "root:x:0:\nwheel:x:0:root\nstaff:x:20:\n";
/// The jail admin's edit: one line the new world does not touch.
const OURS: &str = "root:x:0:admin\nwheel:x:0:root\n";

/// What the jail's root does while the merge is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Obstacle {
    /// `etc/group` made a symlink to the decoy's `etc/shadow`, at whichever
    /// of `group` and `group.jailtx-old` is free (the names the merge's
    /// rename and its undo need), or `group` itself swapped when both are
    /// taken (the merged file is in the plan: nothing is lost).
    GroupLink,
    /// `etc` moved to `etc.real` and replaced by a symlink to the decoy's
    /// `etc`.
    EtcLink,
}

/// Worlds 1 and 2 (2 adds a group), a template of 1, jail `ns` started, its
/// `etc/group` edited; an upgrade to 2 whose merge is killed before its
/// first step and rolled back, so that `etc-merge` has the merge to run.
fn pending_merge(r: &Root) {
    let w1 = r.scratch.join("world1");
    let w2 = r.scratch.join("world2");
    mkworld(&w1, 1);
    mkworld(&w2, 2);
    std::fs::write(w1.join("etc/group"), GROUP1).unwrap();
    std::fs::write(w2.join("etc/group"), GROUP2).unwrap();
    r.template(&w1);
    r.ok(&JailDef::new("ns", RunState::Running).create_args());
    r.write("js/ns/etc/group", OURS);
    r.run_env(
        &["upgrade", "--from-dir", w2.to_str().unwrap()],
        &[("JAILTX_FAULT", "etc-merge/before-intent:0")],
    )
    .assert_killed("the merge after the upgrade");
    let out = r.ok(&["recover", "--rollback"]);
    assert!(out.contains("(etc-merge): rolled-back"), "{out}");
}

fn is_quarantined(key: &str) -> bool {
    key.contains(".jailtx-quarantine.")
}

/// Every jail's data, skel and the merge records, without quarantined
/// entries and without what the jail's root moved itself (`etc.real`).
fn merge_state(r: &Root) -> Snapshot {
    let mut s = Snapshot::new();
    for d in ["js", "j/skel/etc", ".jailtx/etc-merge"] {
        for (k, mut e) in snapshot_live(&r.path(d), |_| false) {
            let rel = format!("{d}/{k}");
            if is_quarantined(&rel) || rel.starts_with("js/ns/etc.real") {
                continue;
            }
            if d.starts_with(".jailtx") && e.kind == Kind::File {
                // A record's inode line differs from one root to the next.
                let text = r.read(&rel);
                let keep: Vec<&str> = text.lines().filter(|l| !l.starts_with("etc_ino")).collect();
                e.content = Some(support::Content::of(keep.join("\n").as_bytes()));
            }
            s.insert(rel, e);
        }
    }
    s
}

/// The quarantined entries below `js/ns`, as (path, link target).
fn quarantined(r: &Root) -> Vec<(PathBuf, Option<PathBuf>)> {
    let mut out = Vec::new();
    for dir in [r.path("js/ns"), r.path("js/ns/etc")] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if is_quarantined(&e.file_name().to_string_lossy()) {
                out.push((e.path(), std::fs::read_link(e.path()).ok()));
            }
        }
    }
    out.sort();
    out
}

/// Plants `obstacle`; returns the link target it planted.
fn plant(r: &Root, decoy: &Decoy, obstacle: Obstacle) -> PathBuf {
    match obstacle {
        Obstacle::GroupLink => {
            let target = decoy.path("etc/shadow");
            let group = r.path("js/ns/etc/group");
            let aside = r.path("js/ns/etc/group.jailtx-old");
            let at = if group.symlink_metadata().is_err() {
                group
            } else if aside.symlink_metadata().is_err() {
                aside
            } else {
                assert_eq!(
                    r.read("js/ns/etc/group"),
                    "root:x:0:admin\nwheel:x:0:root\nstaff:x:20:\n",
                    "both names taken: group is the merged file"
                );
                std::fs::remove_file(&group).unwrap();
                group
            };
            symlink(&target, &at).unwrap();
            target
        }
        Obstacle::EtcLink => {
            let target = decoy.path("etc");
            std::fs::rename(r.path("js/ns/etc"), r.path("js/ns/etc.real")).unwrap();
            symlink(&target, r.path("js/ns/etc")).unwrap();
            target
        }
    }
}

/// A crash after the effect of each step of the merge that touches the
/// jail, then the jail's root plants an obstacle, then `recover` or
/// `recover --rollback`: both finish (exit 0; `recover` of an EtcLink
/// before the commit exits 1, having had to roll back: the directory it
/// writes into is gone), the tree is as before or after the merge (as the
/// commit point decides) but for the entries moved aside, which are the
/// planted links, intact; the decoy is untouched; nothing is pending; the
/// move is reported (the report line and history).
#[test]
fn a_jail_root_cannot_wedge_the_merges_recovery() {
    if !in_private_ns("a_jail_root_cannot_wedge_the_merges_recovery") {
        return;
    }
    let probe = Root::new(None);
    pending_merge(&probe);
    let before = merge_state(&probe);
    let plan = probe.dry_run_plan(&["etc-merge"]);
    let steps = step_names(&plan);
    let commit = plan["commit"].as_u64().unwrap() as usize;
    let code = probe.run(&["etc-merge"]).code();
    assert!(matches!(code, Some(0 | 7)), "clean merge: {code:?}");
    assert_eq!(
        probe.read("js/ns/etc/group"),
        "root:x:0:admin\nwheel:x:0:root\nstaff:x:20:\n"
    );
    let after = merge_state(&probe);
    drop(probe);
    let ns_steps: Vec<usize> = (0..steps.len())
        .filter(|&i| steps[i].contains("ns-etc/group"))
        .collect();
    assert_eq!(
        ns_steps.len(),
        3,
        "aside, merge and drop of group: {steps:?}"
    );
    let mut failures = Vec::new();
    let mut moved = 0;
    for &i in &ns_steps {
        for obstacle in [Obstacle::GroupLink, Obstacle::EtcLink] {
            for rollback in [false, true] {
                let what = format!(
                    "after-effect:{i} ({}), {obstacle:?}, rollback={rollback}",
                    steps[i]
                );
                let r = Root::new(None);
                let decoy = Decoy::new();
                pending_merge(&r);
                r.run_env(
                    &["etc-merge"],
                    &[("JAILTX_FAULT", &format!("after-effect:{i}"))],
                )
                .assert_killed(&what);
                let real_before = snapshot_live(&r.path("js/ns/etc"), |_| false);
                let target = plant(&r, &decoy, obstacle);
                let out = r.run(recover_args(rollback));
                let want_code = if obstacle == Obstacle::EtcLink && !rollback && i < commit {
                    1
                } else {
                    0
                };
                if out.code() != Some(want_code) {
                    failures.push(format!("{what}: want exit {want_code}: {out}"));
                    continue;
                }
                decoy.assert_untouched(&what);
                let again = r.run(&["recover"]);
                if !again.stdout.contains("nothing to recover") {
                    failures.push(format!("{what}: still pending: {again}"));
                    continue;
                }
                let q = quarantined(&r);
                for (path, link) in &q {
                    if link.as_deref() != Some(target.as_path()) {
                        failures.push(format!(
                            "{what}: {} is not the planted link to {}",
                            path.display(),
                            target.display()
                        ));
                    }
                }
                let history = r.transactions();
                let last = history.last().cloned().unwrap_or_default();
                let noted = last["notes"]["quarantined"].as_str().unwrap_or("");
                if q.len() != noted.matches(".jailtx-quarantine.").count() {
                    failures.push(format!(
                        "{what}: {} moved aside, history says {noted:?}",
                        q.len()
                    ));
                }
                if !q.is_empty() && want_code == 0 && !out.stdout.contains("moved aside") {
                    failures.push(format!("{what}: the report does not say it: {out}"));
                }
                moved += q.len();
                let want = if want_code == 1 || rolls_back(i, commit, rollback) {
                    &before
                } else {
                    &after
                };
                let mut got = merge_state(&r);
                let mut want = want.clone();
                if obstacle == Obstacle::EtcLink {
                    // The jail moved its etc away itself: what jailtx left is
                    // etc.real exactly as the jail left it, and no etc (its
                    // link was moved aside).
                    want.retain(|k, _| !k.starts_with("js/ns/etc"));
                    got.retain(|k, _| !k.starts_with("js/ns/etc"));
                    let real = snapshot_live(&r.path("js/ns/etc.real"), |_| false);
                    if diff(&real_before, &real) != Vec::<String>::new() {
                        failures.push(format!("{what}: the jail's etc.real was changed"));
                    }
                    if r.path("js/ns/etc").symlink_metadata().is_ok() || q.len() != 1 {
                        failures.push(format!("{what}: etc link not moved aside: {q:?}"));
                    }
                }
                let d = diff(&want, &got);
                if !d.is_empty() {
                    failures.push(format!("{what}: {d:?}"));
                }
            }
        }
    }
    println!(
        "wedge: {} cases over steps {ns_steps:?} of {} (commit {commit}), {moved} entries moved aside",
        ns_steps.len() * 4,
        steps.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(moved > 0, "no case moved anything aside");
}

/// The issue's exact wedge, by hand: the merge killed right after it moved
/// `group` aside, a link planted at `group`; both recoveries finish, and a
/// mutating command then runs instead of exiting 4.
#[test]
fn the_issues_wedge_is_gone() {
    if !in_private_ns("the_issues_wedge_is_gone") {
        return;
    }
    for rollback in [true, false] {
        let r = Root::new(None);
        let decoy = Decoy::new();
        pending_merge(&r);
        let steps = step_names(&r.dry_run_plan(&["etc-merge"]));
        let aside = steps
            .iter()
            .position(|s| s.starts_with("aside-ns-etc/group"))
            .expect("aside step");
        r.run_env(
            &["etc-merge"],
            &[("JAILTX_FAULT", &format!("after-effect:{aside}"))],
        )
        .assert_killed("merge");
        symlink(decoy.path("etc/shadow"), r.path("js/ns/etc/group")).unwrap();
        let out = r.run(recover_args(rollback));
        assert_eq!(out.code(), Some(0), "rollback={rollback}: {out}");
        let want = if rollback {
            OURS
        } else {
            "root:x:0:admin\nwheel:x:0:root\nstaff:x:20:\n"
        };
        assert_eq!(r.read("js/ns/etc/group"), want);
        let q = quarantined(&r);
        assert_eq!(q.len(), 1, "{q:?}");
        assert_eq!(q[0].1.as_deref(), Some(decoy.path("etc/shadow").as_path()));
        r.ok(&["stop", "ns"]);
        decoy.assert_untouched("the wedge");
    }
}

/// A journal and a history, each ending in 64 MiB of zeros (real blocks),
/// opened and recovered by a jailtx whose heap is capped at 32 MiB
/// (RLIMIT_DATA): the old reader allocated the whole file and died; the
/// streamed one holds a frame at most. Then both tails are trimmed (the
/// history rotated, its tail still read by every command). The time and
/// peak RSS, before and after, are `scripts/bench-journal-tail`'s.
#[test]
fn a_64_mib_zero_tail_opens_in_bounded_memory() {
    let r = Root::fresh();
    let zeros = vec![0u8; 1 << 20];
    for f in [r.journal(), r.history_file()] {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
        for _ in 0..64 {
            file.write_all(&zeros).unwrap();
        }
    }
    let capped = |args: &[&str]| {
        let mut c = r.command(args);
        // SAFETY: setrlimit is async-signal-safe and touches no memory the
        // parent shares.
        unsafe {
            c.pre_exec(|| {
                let lim = nix::libc::rlimit {
                    rlim_cur: 32 << 20,
                    rlim_max: 32 << 20,
                };
                if nix::libc::setrlimit(nix::libc::RLIMIT_DATA, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = c.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = capped(&["history"]);
    assert_eq!(code, Some(0), "history over a zero tail: {err}");
    let (code, out, err) = capped(&["recover"]);
    assert_eq!(code, Some(0), "recover over a zero tail: {err}");
    assert!(out.contains("nothing to recover"), "{out}");
    assert_eq!(std::fs::metadata(r.journal()).unwrap().len(), 16);
    let (code, _, err) = capped(&["history"]);
    assert_eq!(code, Some(0), "history after: {err}");
    let (code, _, err) = capped(&["recover"]);
    assert_eq!(code, Some(0), "a second open: {err}");
}
