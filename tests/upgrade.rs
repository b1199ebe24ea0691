//! Upgrade, rollback and recover on the Linux backend with real jails (issue 5):
//! the Handbook upgrade end to end, a failing health check, and a crash matrix
//! over the whole upgrade and rollback plans — every step × every instant of
//! `JAILTX_FAULT`, recovered forwards and backwards, with and without a
//! simulated reboot — checking SPEC section 4's invariants after each case.
//!
//! The crash points are derived from what the binary plans (`--dry-run
//! --json`, and for the /etc merge and prune that `upgrade` runs after its
//! commit, a reference run's report), never listed by hand. By default each
//! matrix runs a deterministic subset (see [`Sampling`]);
//! `JAILTX_FULL_MATRIX=1` runs every case. `JAILTX_MATRIX_ONLY=TEXT` keeps
//! only the cases whose label contains TEXT; `JAILTX_MATRIX_JOBS=N` (3) runs
//! N cases at a time.

mod support;

use std::collections::BTreeMap;
use std::time::Instant as Clock;

use serde_json::Value;
use support::matrix::{full_matrix, run_cases};
use support::{
    Baseline, COMPENSATION, Expect, FORWARD, JailDef, Out, Root, RunState, Worlds,
    assert_no_failures, check_invariants, check_second_recover, fleet, http_get, in_private_ns,
    mixed_fleet, snapshot_js, snapshot_live, step_names, two_running, world_version,
};

/// `[health]` that fails for jail `www` only.
const HEALTH_FAILS_FOR_WWW: &str = "[health]\ncommand = \"test \\\"$JAIL_NAME\\\" != www\"\n";

fn step_index(plan: &Value, name: &str) -> usize {
    step_names(plan)
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no step {name} in {:?}", step_names(plan)))
}

/// The first and last steps of the downtime window (stop … health).
fn window(plan: &Value) -> (usize, usize) {
    let n = step_names(plan);
    let first = n
        .iter()
        .position(|s| s.starts_with("stop-") || s.starts_with("unmount-"))
        .unwrap();
    let last = n
        .iter()
        .rposition(|s| s.starts_with("health-") || s.starts_with("start-"))
        .unwrap();
    (first, last)
}

/// The archive a rollback plan switches to (its `target` note).
fn rollback_target(plan: &Value) -> String {
    plan["notes"]["target"]
        .as_str()
        .unwrap_or_else(|| panic!("no target note: {}", plan["notes"]))
        .to_owned()
}

fn last_tx(r: &Root, op: &str) -> Value {
    r.transactions()
        .into_iter()
        .rev()
        .find(|t| t["op"] == op)
        .unwrap_or(Value::Null)
}

fn serving(jails: &[JailDef]) -> Vec<String> {
    jails
        .iter()
        .filter(|j| j.state == RunState::Running)
        .map(|j| http_get(&j.ip).unwrap_or_else(|e| e))
        .collect()
}

fn expect_serving(jails: &[JailDef], version: &str) -> Vec<String> {
    jails
        .iter()
        .filter(|j| j.state == RunState::Running)
        .map(|j| format!("{} {version}", j.hostname))
        .collect()
}

fn assert_clean(bad: Vec<String>, what: &str) {
    assert!(bad.is_empty(), "{what}:\n  {}", bad.join("\n  "));
}

/// 1. The Handbook upgrade, then `rollback`, then the rollback of the rollback.
#[test]
fn upgrade_happy_path_then_rollback_twice() {
    if !in_private_ns("upgrade_happy_path_then_rollback_twice") {
        return;
    }
    let worlds = Worlds::new();
    let jails = fleet(&[
        ("ns", RunState::Running),
        ("mail", RunState::Running),
        ("www", RunState::Running),
        ("spare", RunState::Stopped),
        ("cold", RunState::Unmounted),
    ]);
    let r = Root::with_jails(None, &worlds.get(1), &jails);
    assert_eq!(serving(&jails), expect_serving(&jails, &world_version(1)));
    // js/ is hashed after the jails started (the rc writes index.html).
    let base = Baseline::take(&r);
    assert!(base.archives.is_empty());
    let w2 = worlds.get(2);
    let w2 = w2.to_str().unwrap();

    let plan = r.dry_run_plan(&["upgrade", "--from-dir", w2]);
    let archive = plan["notes"]["archive"].as_str().unwrap().to_owned();
    let today = chrono::Local::now().format("%Y%m%d").to_string();
    assert_eq!(archive, format!("mroot.{today}"));
    // The stopped jail is not stopped or started; the unmounted one not touched.
    let steps = step_names(&plan);
    for s in ["stop-spare", "start-spare", "health-spare"] {
        assert!(!steps.iter().any(|n| n == s), "{s} in {steps:?}");
    }
    assert!(!steps.iter().any(|n| n.ends_with("-cold")), "{steps:?}");

    let out = r.run(&["upgrade", "--from-dir", w2, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out}");
    let report: Value = serde_json::from_str(&out.stdout).unwrap();
    let downtime: f64 = report["report"]["notes"]["downtime_ms"]
        .as_str()
        .expect("notes.downtime_ms")
        .parse()
        .unwrap();
    assert!(downtime > 0.0, "{report}");
    assert_eq!(report["report"]["outcome"], "committed");

    assert_eq!(serving(&jails), expect_serving(&jails, &world_version(2)));
    let after_upgrade = Expect {
        version: world_version(2),
        archives: BTreeMap::from([(archive.clone(), world_version(1))]),
        prunable: BTreeMap::new(),
        mroot_ino: None,
    };
    assert_clean(
        check_invariants(&r, &jails, &base, &after_upgrade),
        "after upgrade",
    );
    // The old template is the archive, unchanged but for the ports tree.
    assert_eq!(
        std::fs::metadata(r.j().join(&archive))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .unwrap(),
        base.mroot_ino
    );
    assert!(!r.j().join(&archive).join("usr/ports").exists());
    assert!(!r.j().join("mroot2").exists());
    let tx = last_tx(&r, "upgrade");
    assert_eq!(tx["outcome"], "committed", "{tx}");
    assert_eq!(tx["notes"]["archive"], archive.as_str(), "{tx}");
    let h: f64 = tx["notes"]["downtime_ms"]
        .as_str()
        .expect("history shows the downtime")
        .parse()
        .unwrap();
    assert!(h > 0.0);
    // From and to: the ids of the old and the new template.
    let (from, to) = (&tx["notes"]["from"], &tx["notes"]["to"]);
    assert!(from.is_string() && to.is_string() && from != to, "{tx}");
    println!("upgrade of 3 running jails: downtime {downtime:.1} ms");

    // rollback: back to world 1, the upgraded template becomes an archive.
    let plan = r.dry_run_plan(&["rollback"]);
    let archive2 = plan["notes"]["archive"].as_str().unwrap().to_owned();
    assert_eq!(rollback_target(&plan), archive);
    assert_ne!(archive2, archive);
    let mroot_v2 = r.mroot_ino();
    let out = r.run(&["rollback", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out}");
    assert_eq!(serving(&jails), expect_serving(&jails, &world_version(1)));
    assert_clean(
        check_invariants(
            &r,
            &jails,
            &base,
            &Expect {
                version: world_version(1),
                archives: BTreeMap::from([(archive2.clone(), world_version(2))]),
                prunable: BTreeMap::new(),
                mroot_ino: Some(base.mroot_ino),
            },
        ),
        "after rollback",
    );
    let tx = last_tx(&r, "rollback");
    assert_eq!(tx["outcome"], "committed", "{tx}");
    assert!(tx["notes"]["downtime_ms"].is_string(), "{tx}");

    // The rollback of the rollback.
    let plan = r.dry_run_plan(&["rollback", "--to", &archive2]);
    let archive3 = plan["notes"]["archive"].as_str().unwrap().to_owned();
    let out = r.run(&["rollback", "--to", &archive2]);
    assert_eq!(out.status.code(), Some(0), "{out}");
    assert_eq!(serving(&jails), expect_serving(&jails, &world_version(2)));
    assert_clean(
        check_invariants(
            &r,
            &jails,
            &base,
            &Expect {
                version: world_version(2),
                archives: BTreeMap::from([(archive3, world_version(1))]),
                prunable: BTreeMap::new(),
                mroot_ino: Some(mroot_v2),
            },
        ),
        "after rollback --to",
    );
    assert_clean(check_second_recover(&r), "recover after all that");
}

/// The setup of the failing-health-check tests: jails on world 1, a health
/// check that fails for www, and an upgrade to world 2 that must roll back.
fn failing_health_upgrade() -> (Worlds, Root, Vec<JailDef>, Baseline, Out) {
    let worlds = Worlds::new();
    let jails = fleet(&[
        ("ns", RunState::Running),
        ("mail", RunState::Running),
        ("www", RunState::Running),
        ("spare", RunState::Stopped),
    ]);
    let r = Root::with_jails(Some(HEALTH_FAILS_FOR_WWW), &worlds.get(1), &jails);
    let base = Baseline::take(&r);
    let w2 = worlds.get(2);
    let out = r.run(&["upgrade", "--from-dir", w2.to_str().unwrap()]);
    (worlds, r, jails, base, out)
}

/// 2. A health check that fails for one jail rolls the whole upgrade back.
#[test]
fn failing_health_check_rolls_back() {
    if !in_private_ns("failing_health_check_rolls_back") {
        return;
    }
    let (_worlds, r, jails, base, out) = failing_health_upgrade();
    assert_eq!(out.status.code(), Some(1), "{out}");
    let err = &out.stderr;
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("jailtx:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].contains("www") && errors[0].contains("health"),
        "{err}"
    );
    assert!(errors[0].contains("rolled back"), "{err}");
    assert_eq!(serving(&jails), expect_serving(&jails, &world_version(1)));
    assert_clean(
        check_invariants(
            &r,
            &jails,
            &base,
            &Expect {
                version: world_version(1),
                archives: BTreeMap::new(),
                prunable: BTreeMap::new(),
                mroot_ino: Some(base.mroot_ino),
            },
        ),
        "after the failed upgrade",
    );
    let tx = last_tx(&r, "upgrade");
    assert_eq!(tx["outcome"], "rolled-back", "{tx}");
    assert_clean(check_second_recover(&r), "recover after the failed upgrade");
}

/// The failure is reported in one line on stderr (SPEC: one-line errors).
#[test]
fn failing_health_check_stderr_is_one_line() {
    if !in_private_ns("failing_health_check_stderr_is_one_line") {
        return;
    }
    let (_worlds, _r, _jails, _base, out) = failing_health_upgrade();
    assert_eq!(out.status.code(), Some(1), "{out}");
    let err = &out.stderr;
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

/// SPEC section 3: the upgrade writes mroot2's manifest outside the window;
/// a manifest moves with its tree, so every template keeps one and `audit
/// --all` checks them all, after an upgrade and after a rollback.
#[test]
fn every_template_keeps_its_manifest() {
    if !in_private_ns("every_template_keeps_its_manifest") {
        return;
    }
    let worlds = Worlds::new();
    let jails = fleet(&[("ns", RunState::Running)]);
    let r = Root::with_jails(None, &worlds.get(1), &jails);
    assert!(
        r.manifest_hash("mroot").is_some(),
        "template build writes one"
    );
    let check = |when: &str| {
        let mut missing = Vec::new();
        for (name, _) in r.templates() {
            if r.manifest_hash(&name).is_none() {
                missing.push(name);
            }
        }
        assert!(missing.is_empty(), "{when}: no manifest for {missing:?}");
        let out = r.run(&["audit", "--all"]);
        assert_eq!(out.status.code(), Some(0), "{when}: audit --all: {out}");
    };
    check("after template build");
    r.ok(&["upgrade", "--from-dir", worlds.get(2).to_str().unwrap()]);
    check("after upgrade");
    r.ok(&["rollback"]);
    check("after rollback");
}

/// A SIGKILL can land inside a jail's stop: after its `exec.stop` ran (the
/// service is down) and before the init is signalled (the init lives on).
/// The state that leaves is made here by hand — crash at the stop's intent,
/// then run the jail's exec.stop as the killed run had — and `recover
/// --rollback` must bring the service back, not take the live init for a
/// running jail. (The soak found this with a real random kill.)
#[test]
fn rollback_after_a_kill_inside_a_stop_restarts_the_service() {
    if !in_private_ns("rollback_after_a_kill_inside_a_stop_restarts_the_service") {
        return;
    }
    let worlds = Worlds::new();
    let jails = two_running();
    let r = Root::with_jails(None, &worlds.get(1), &jails);
    let w2 = worlds.get(2);
    let args = ["upgrade", "--from-dir", w2.to_str().unwrap()];
    let plan = r.dry_run_plan(&args);
    let stop = step_index(&plan, "stop-ns");
    let out = r.run_env(&args, &[("JAILTX_FAULT", &format!("after-intent:{stop}"))]);
    assert!(out.killed(), "{out}");
    // What the killed stop_jail had done: exec.stop inside the jail.
    let jid = r.jids()["ns"].expect("ns still has its init").to_string();
    let st = std::process::Command::new("nsenter")
        .args(["-t", &jid, "-m", "-u", "-i", "-p", "-r", "-w", "--"])
        .args(["/bin/sh", "/etc/rc.shutdown"])
        .status()
        .unwrap();
    assert!(st.success());
    assert!(http_get(&jails[0].ip).is_err(), "exec.stop stopped httpd");
    let out = r.run(&["recover", "--rollback"]);
    assert_eq!(out.status.code(), Some(0), "{out}");
    assert_eq!(serving(&jails), expect_serving(&jails, &world_version(1)));
}

/// A rollback of an upgrade that never reached its window (a crash while
/// staging, `recover --rollback`, no reboot) must leave the running jails
/// alone: same init, same JID, no restart of their services.
#[test]
fn rollback_before_the_window_leaves_jails_running() {
    if !in_private_ns("rollback_before_the_window_leaves_jails_running") {
        return;
    }
    let worlds = Worlds::new();
    let jails = two_running();
    let r = Root::with_jails(None, &worlds.get(1), &jails);
    let w2 = worlds.get(2);
    let args = ["upgrade", "--from-dir", w2.to_str().unwrap()];
    let plan = r.dry_run_plan(&args);
    let (first, _) = window(&plan);
    let before = r.jids();
    for i in 0..first {
        let out = r.run_env(&args, &[("JAILTX_FAULT", &format!("after-done:{i}"))]);
        assert!(out.killed(), "{out}");
        let out = r.run(&["recover", "--rollback"]);
        assert_eq!(out.status.code(), Some(0), "{out}");
        assert_eq!(
            r.jids(),
            before,
            "after-done:{i} ({}), recover --rollback restarted jails it never stopped",
            step_names(&plan)[i]
        );
    }
    assert_eq!(serving(&jails), expect_serving(&jails, &world_version(1)));
}

/// SPEC section 3: after the commit, the /etc three-way merge runs in each
/// jail. An upgrade that a crash interrupted and `recover` finished is an
/// upgrade too: its new /etc files must reach the jails as a clean run's do.
#[test]
fn recovered_upgrade_also_merges_etc() {
    if !in_private_ns("recovered_upgrade_also_merges_etc") {
        return;
    }
    let worlds = Worlds::new();
    let w2 = worlds.get(2);
    std::fs::write(w2.join("etc/motd"), "welcome to world 2\n").unwrap();
    let args = ["upgrade", "--from-dir", w2.to_str().unwrap()];
    // A clean upgrade brings the new file into the jail's /etc.
    let jails = fleet(&[("ns", RunState::Running)]);
    let clean = Root::with_jails(None, &worlds.get(1), &jails);
    clean.ok(&args);
    let motd = clean.js().join("ns/etc/motd");
    assert!(
        motd.is_file(),
        "the merge after a clean upgrade adds etc/motd"
    );
    drop(clean);
    // So must an upgrade that crashed at its last step and was recovered.
    let jails = fleet(&[("ns", RunState::Running)]);
    let r = Root::with_jails(None, &worlds.get(1), &jails);
    let plan = r.dry_run_plan(&args);
    let last = step_names(&plan).len() - 1;
    let out = r.run_env(&args, &[("JAILTX_FAULT", &format!("after-done:{last}"))]);
    assert!(out.killed(), "{out}");
    r.ok(&["recover"]);
    assert_eq!(serving(&jails), expect_serving(&jails, &world_version(2)));
    assert!(
        r.js().join("ns/etc/motd").is_file(),
        "after `recover` of the upgrade, ns's /etc was never merged"
    );
    drop(r);
    // The same under `--auto-recover` of an unrelated command, and the prune
    // follows too: with keep_archives = 0 no archive of world 1 is left.
    let jails = fleet(&[("ns", RunState::Running)]);
    let r = Root::with_jails(Some("keep_archives = 0\n"), &worlds.get(1), &jails);
    let out = r.run_env(&args, &[("JAILTX_FAULT", &format!("after-done:{last}"))]);
    assert!(out.killed(), "{out}");
    r.ok(&["--auto-recover", "start", "ns"]);
    assert_eq!(serving(&jails), expect_serving(&jails, &world_version(2)));
    assert!(
        r.js().join("ns/etc/motd").is_file(),
        "after `--auto-recover` of the upgrade, ns's /etc was never merged"
    );
    let archives: Vec<_> = std::fs::read_dir(r.j())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mroot."))
        .collect();
    assert!(
        archives.is_empty(),
        "keep_archives = 0, yet after the recovered upgrade: {archives:?}"
    );
}

// ---------------------------------------------------------------------------
// 3. Crash matrices.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    /// `upgrade --from-dir world2` over jails on world 1.
    Upgrade,
    /// `rollback` after a clean upgrade from world 1 to world 2.
    Rollback,
}

#[derive(Debug, Clone, Copy)]
struct Recovery {
    reboot: bool,
    rollback: bool,
}

impl Recovery {
    fn label(self) -> String {
        format!(
            "{}{}",
            if self.reboot { "reboot+" } else { "" },
            if self.rollback {
                "recover --rollback"
            } else {
                "recover"
            }
        )
    }
}

const PLAIN: [Recovery; 2] = [
    Recovery {
        reboot: false,
        rollback: false,
    },
    Recovery {
        reboot: false,
        rollback: true,
    },
];
const REBOOT_RESUME: [Recovery; 1] = [Recovery {
    reboot: true,
    rollback: false,
}];
const REBOOT_ROLLBACK: [Recovery; 1] = [Recovery {
    reboot: true,
    rollback: true,
}];
const REBOOT_BOTH: [Recovery; 2] = [REBOOT_RESUME[0], REBOOT_ROLLBACK[0]];

/// Which crash points a matrix runs by default (`JAILTX_FULL_MATRIX=1`: all
/// of them, each with every recovery).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sampling {
    /// Every step at its after-effect instant, and every instant at the
    /// edges (the window's first and last steps…), each with every recovery.
    Dense,
    /// As `Dense`, but each point with one recovery, alternating.
    DenseAlternating,
    /// Every step once, the instant and the recovery rotating with the index.
    Sparse,
    /// After-done of every step of the downtime window, with every
    /// recovery (full or not).
    Window,
    /// Every step at every instant, the recovery rotating.
    Every,
}

struct Matrix {
    name: &'static str,
    op: Op,
    /// Crash in the compensations of an upgrade whose health check fails.
    compensation: bool,
    recoveries: &'static [Recovery],
    sampling: Sampling,
    /// Crash in the transactions `upgrade` runs after its commit (the /etc
    /// merge, the prune) instead of in the upgrade itself.
    followups: bool,
}

/// A case's root, ready for the command under test.
struct Prepared {
    root: Root,
    jails: Vec<JailDef>,
    base: Baseline,
    args: Vec<String>,
    plan: Value,
    /// After the transaction took effect, and as before it.
    new: Expect,
    old: Expect,
}

fn prepare(worlds: &Worlds, m: &Matrix) -> Prepared {
    let jails = mixed_fleet();
    let w2 = worlds.get(2).to_str().unwrap().to_owned();
    match m.op {
        Op::Upgrade => {
            // keep_archives = 1 and an older archive give the prune that
            // `upgrade` runs after its commit something to do (the follow-up
            // matrix crashes in it).
            let mut config = "keep_archives = 1\n".to_owned();
            if m.compensation {
                config.push_str(HEALTH_FAILS_FOR_WWW);
            }
            let r = Root::with_jails(Some(&config), &worlds.get(1), &jails);
            let old_archive = r.j().join("mroot.20000101");
            std::fs::create_dir(&old_archive).unwrap();
            std::fs::create_dir_all(old_archive.join("usr/share/misc")).unwrap();
            std::fs::write(
                old_archive.join("usr/share/misc/world-version"),
                "world 0\n",
            )
            .unwrap();
            // Its manifest (a copy: only its presence matters) must go with it.
            let manifests = r.manifests_dir();
            if manifests.join("mroot.manifest").exists() {
                std::fs::copy(
                    manifests.join("mroot.manifest"),
                    manifests.join("mroot.20000101.manifest"),
                )
                .unwrap();
            }
            let base = Baseline::take(&r);
            let args = vec!["upgrade".to_owned(), "--from-dir".to_owned(), w2];
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let plan = r.dry_run_plan(&a);
            let archive = plan["notes"]["archive"].as_str().unwrap().to_owned();
            // `recover` finishes the upgrade transaction only: the prune
            // that `upgrade` runs after it may not have happened.
            let new = Expect {
                version: world_version(2),
                archives: BTreeMap::from([(archive, world_version(1))]),
                prunable: base.archives.clone(),
                mroot_ino: None,
            };
            let old = Expect {
                version: world_version(1),
                archives: base.archives.clone(),
                prunable: BTreeMap::new(),
                mroot_ino: Some(base.mroot_ino),
            };
            Prepared {
                root: r,
                jails,
                base,
                args,
                plan,
                new,
                old,
            }
        }
        Op::Rollback => {
            let r = Root::with_jails(None, &worlds.get(1), &jails);
            r.ok(&["upgrade", "--from-dir", &w2]);
            let base = Baseline::take(&r);
            let args = vec!["rollback".to_owned()];
            let plan = r.dry_run_plan(&["rollback"]);
            let to = rollback_target(&plan);
            let archive = plan["notes"]["archive"].as_str().unwrap().to_owned();
            let to_ino =
                std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(r.j().join(&to)).unwrap());
            let new = Expect {
                version: world_version(1),
                archives: BTreeMap::from([(archive, world_version(2))]),
                prunable: BTreeMap::new(),
                mroot_ino: Some(to_ino),
            };
            let old = Expect {
                version: world_version(2),
                archives: base.archives.clone(),
                prunable: BTreeMap::new(),
                mroot_ino: Some(base.mroot_ino),
            };
            Prepared {
                root: r,
                jails,
                base,
                args,
                plan,
                new,
                old,
            }
        }
    }
}

/// A step the command under test runs, in whichever of its transactions.
#[derive(Debug, Clone)]
struct Target {
    /// The transaction's op: `upgrade`, `rollback`, or after an upgrade's
    /// commit `etc-merge` and `prune` (transactions of their own).
    op: String,
    /// The step's index in its transaction's plan, and that plan's commit
    /// point (`None`: not known from outside).
    index: usize,
    commit: Option<usize>,
    name: String,
}

impl Target {
    /// What `JAILTX_FAULT` is set to: the step's index in a transaction of
    /// its op (`etc-merge/after-effect:2`), so a step of the same index or
    /// name in another of the command's transactions never fires it.
    fn fault(&self, instant: &str) -> String {
        format!("{}/{instant}:{}", self.op, self.index)
    }
}

#[derive(Debug, Clone)]
struct Case {
    instant: &'static str,
    target: Target,
    rec: Recovery,
}

impl Case {
    fn label(&self, m: &Matrix) -> String {
        let t = &self.target;
        let tx = if t.op == "upgrade" || t.op == "rollback" {
            String::new()
        } else {
            format!("{} ", t.op)
        };
        format!(
            "{}: {}{}:{} ({}), {}",
            m.name,
            tx,
            self.instant,
            t.index,
            t.name,
            self.rec.label()
        )
    }
}

/// The steps of the command's own transaction, from its dry-run plan.
fn main_targets(m: &Matrix, plan: &Value) -> Vec<Target> {
    let commit = plan["commit"].as_u64().unwrap() as usize;
    let op = match m.op {
        Op::Upgrade => "upgrade",
        Op::Rollback => "rollback",
    };
    step_names(plan)
        .into_iter()
        .enumerate()
        .map(|(i, name)| Target {
            op: op.to_owned(),
            index: i,
            commit: Some(commit),
            name,
        })
        .collect()
}

/// The steps of the transactions `upgrade` runs after its commit: the /etc
/// merge (from the report of a reference run) and the prune (the plan that
/// run would have pruned with, shown by `prune --dry-run` after an upgrade
/// that kept every archive).
fn followup_targets(worlds: &Worlds, m: &Matrix) -> Vec<Target> {
    let p = prepare(worlds, m);
    let r = &p.root;
    let config = r.path("jailtx.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let keep_all = text.replace("keep_archives = 1", "keep_archives = 100");
    assert_ne!(keep_all, text);
    std::fs::write(&config, keep_all).unwrap();
    let args: Vec<&str> = p.args.iter().map(String::as_str).collect();
    let out = r.json(&args);
    std::fs::write(&config, text).unwrap();
    let mut targets = Vec::new();
    let merge = &out["etc_merge"]["report"];
    for t in merge["timings"].as_array().into_iter().flatten() {
        let name = t["name"].as_str().unwrap().to_owned();
        targets.push(Target {
            op: "etc-merge".into(),
            index: t["index"].as_u64().unwrap() as usize,
            commit: None,
            name,
        });
    }
    let prune = r.dry_run_plan(&["prune"]);
    let commit = prune["commit"].as_u64().unwrap() as usize;
    for (i, name) in step_names(&prune).into_iter().enumerate() {
        targets.push(Target {
            op: "prune".into(),
            index: i,
            commit: Some(commit),
            name,
        });
    }
    assert!(
        targets.iter().any(|t| t.op == "prune"),
        "the reference upgrade left nothing to prune: {out}"
    );
    targets
}

/// Every case of `m`: its targets × instants × recoveries, sampled.
fn cases(m: &Matrix, plan: &Value, targets: &[Target]) -> Vec<Case> {
    let (first, last) = window(plan);
    let failing = step_names(plan)
        .iter()
        .rposition(|s| s.starts_with("health"));
    let (instants, edges): (&[&'static str; 4], Vec<usize>) = if m.compensation {
        // Everything up to the failing health check gets compensated.
        (
            &COMPENSATION,
            vec![first, failing.expect("a health-check step")],
        )
    } else {
        (&FORWARD, vec![first, last])
    };
    let nrec = m.recoveries.len();
    let mut out = Vec::new();
    for (k, t) in targets.iter().enumerate() {
        if m.compensation && Some(t.index) > failing {
            continue;
        }
        let i = t.index;
        for (ip, inst) in instants.iter().enumerate() {
            for (rp, rec) in m.recoveries.iter().enumerate() {
                let dense = ip == 2 || edges.contains(&i);
                let keep = match m.sampling {
                    Sampling::Window => ip == 3 && (first..=last).contains(&i),
                    _ if full_matrix() => true,
                    Sampling::Dense => dense,
                    Sampling::DenseAlternating => dense && rp == (i + ip) % nrec,
                    Sampling::Sparse => ip == k % 4 && rp == (k + k / 4) % nrec,
                    Sampling::Every => rp == (k + ip) % nrec,
                };
                if keep {
                    out.push(Case {
                        instant: inst,
                        target: t.clone(),
                        rec: *rec,
                    });
                }
            }
        }
    }
    out
}

/// Runs one crash case; the violations found, if any.
fn run_case(
    worlds: &Worlds,
    m: &Matrix,
    reference: &[String],
    c: &Case,
) -> Result<(), Vec<String>> {
    let p = prepare(worlds, m);
    let r = &p.root;
    if step_names(&p.plan) != reference {
        return Err(vec![format!("plan differs: {:?}", step_names(&p.plan))]);
    }
    let t = &c.target;
    let args: Vec<&str> = p.args.iter().map(String::as_str).collect();
    let fault = t.fault(c.instant);
    let out = r.run_env(&args, &[("JAILTX_FAULT", &fault)]);
    if !out.killed() {
        return Err(vec![format!("the fault {fault} did not fire: {out}")]);
    }
    // The kill must have fallen in the transaction aimed at.
    let pending = &r.history()["pending"];
    if pending["op"] != t.op.as_str() {
        return Err(vec![format!(
            "the fault {fault} left pending {pending}, not the {} transaction aimed at",
            t.op
        )]);
    }
    if c.rec.reboot {
        r.simulate_reboot();
    }
    let mut args = vec!["recover"];
    if c.rec.rollback {
        args.push("--rollback");
    }
    let out = r.run(&args);
    if !out.status.success() {
        return Err(vec![format!("{}: {out}", c.rec.label())]);
    }
    // Whether the crashed transaction had to end forwards: `None` when that
    // cannot be known from outside (a rollback of a plan of unknown commit).
    let forwards = if c.instant.starts_with("comp-") {
        Some(false)
    } else if !c.rec.rollback {
        Some(true)
    } else {
        t.commit.map(|commit| t.index >= commit)
    };
    let main_tx = t.op == "upgrade" || t.op == "rollback";
    let want = if !main_tx {
        // The upgrade itself committed; the older archive is pruned only
        // when the prune transaction went through.
        let mut want = p.new.clone();
        let pruned = t.op == "prune" && forwards == Some(true);
        if !pruned {
            want.archives.append(&mut want.prunable.clone());
        }
        want.prunable.clear();
        want
    } else if forwards == Some(true) {
        p.new.clone()
    } else {
        p.old.clone()
    };
    let mut bad = check_invariants(r, &p.jails, &p.base, &want);
    let h = r.history();
    if !h["pending"].is_null() {
        bad.push(format!("history still has a pending transaction: {h}"));
    }
    if let Some(f) = forwards {
        let tx = last_tx(r, &t.op);
        let outcome = if f { "committed" } else { "rolled-back" };
        if tx["outcome"] != outcome {
            bad.push(format!("history: {tx}, want outcome {outcome}"));
        }
    }
    if !main_tx && last_tx(r, "upgrade")["outcome"] != "committed" {
        bad.push("history: the upgrade is not committed".into());
    }
    let txs: Vec<u64> = h["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["tx"].as_u64().unwrap())
        .collect();
    if txs.windows(2).any(|w| w[0] >= w[1]) {
        bad.push(format!("history files a transaction twice: {txs:?}"));
    }
    bad.extend(check_second_recover(r));
    if bad.is_empty() { Ok(()) } else { Err(bad) }
}

/// Runs matrix `m` and fails listing every case that broke an invariant.
fn run_matrix(m: &Matrix) {
    let started = Clock::now();
    let worlds = Worlds::new();
    worlds.get(1);
    worlds.get(2);
    let reference = prepare(&worlds, m).plan;
    let names = step_names(&reference);
    let targets = if m.followups {
        followup_targets(&worlds, m)
    } else {
        main_targets(m, &reference)
    };
    let labelled = cases(m, &reference, &targets)
        .into_iter()
        .map(|c| (c.label(m), c))
        .collect();
    let (ran, failures) = run_cases(labelled, |case| run_case(&worlds, m, &names, case));
    let secs = started.elapsed().as_secs_f64();
    println!(
        "matrix {}: {} steps, {} cases ({}), {} failed, {secs:.1} s",
        m.name,
        targets.len(),
        ran,
        if full_matrix() {
            "full"
        } else {
            "default subset"
        },
        failures.len(),
    );
    assert!(ran > 0, "no case ran");
    assert_no_failures(&failures, ran, "cases");
}

#[test]
fn upgrade_crash_matrix() {
    if !in_private_ns("upgrade_crash_matrix") {
        return;
    }
    run_matrix(&Matrix {
        name: "upgrade",
        op: Op::Upgrade,
        compensation: false,
        recoveries: &PLAIN,
        sampling: Sampling::Dense,
        followups: false,
    });
}

#[test]
fn upgrade_crash_matrix_reboot_resume() {
    if !in_private_ns("upgrade_crash_matrix_reboot_resume") {
        return;
    }
    run_matrix(&Matrix {
        name: "upgrade, reboot, resume",
        op: Op::Upgrade,
        compensation: false,
        recoveries: &REBOOT_RESUME,
        sampling: Sampling::Sparse,
        followups: false,
    });
}

#[test]
fn upgrade_crash_matrix_reboot_rollback() {
    if !in_private_ns("upgrade_crash_matrix_reboot_rollback") {
        return;
    }
    run_matrix(&Matrix {
        name: "upgrade, reboot, rollback",
        op: Op::Upgrade,
        compensation: false,
        recoveries: &REBOOT_ROLLBACK,
        sampling: Sampling::Sparse,
        followups: false,
    });
}

/// After its commit, `upgrade` runs the /etc merge and the prune as
/// transactions of their own: a crash in either, recovered both ways, leaves
/// the committed upgrade in place, the jails in their prior run-state and
/// the archives consistent.
#[test]
fn upgrade_followup_crash_matrix() {
    if !in_private_ns("upgrade_followup_crash_matrix") {
        return;
    }
    run_matrix(&Matrix {
        name: "upgrade's merge and prune",
        op: Op::Upgrade,
        compensation: false,
        recoveries: &PLAIN,
        sampling: Sampling::Every,
        followups: true,
    });
}

/// The same with a reboot between the crash and `recover`.
#[test]
fn upgrade_followup_crash_matrix_reboot() {
    if !in_private_ns("upgrade_followup_crash_matrix_reboot") {
        return;
    }
    run_matrix(&Matrix {
        name: "upgrade's merge and prune, reboot",
        op: Op::Upgrade,
        compensation: false,
        recoveries: &REBOOT_BOTH,
        sampling: Sampling::Every,
        followups: true,
    });
}

#[test]
fn upgrade_compensation_crash_matrix() {
    if !in_private_ns("upgrade_compensation_crash_matrix") {
        return;
    }
    run_matrix(&Matrix {
        name: "upgrade compensation",
        op: Op::Upgrade,
        compensation: true,
        recoveries: &PLAIN,
        sampling: Sampling::DenseAlternating,
        followups: false,
    });
}

#[test]
fn upgrade_compensation_crash_matrix_reboot() {
    if !in_private_ns("upgrade_compensation_crash_matrix_reboot") {
        return;
    }
    run_matrix(&Matrix {
        name: "upgrade compensation, reboot",
        op: Op::Upgrade,
        compensation: true,
        recoveries: &REBOOT_BOTH,
        sampling: Sampling::Sparse,
        followups: false,
    });
}

#[test]
fn rollback_crash_matrix() {
    if !in_private_ns("rollback_crash_matrix") {
        return;
    }
    run_matrix(&Matrix {
        name: "rollback",
        op: Op::Rollback,
        compensation: false,
        recoveries: &PLAIN,
        sampling: Sampling::Dense,
        followups: false,
    });
}

#[test]
fn rollback_crash_matrix_reboot_resume() {
    if !in_private_ns("rollback_crash_matrix_reboot_resume") {
        return;
    }
    run_matrix(&Matrix {
        name: "rollback, reboot, resume",
        op: Op::Rollback,
        compensation: false,
        recoveries: &REBOOT_RESUME,
        sampling: Sampling::Sparse,
        followups: false,
    });
}

#[test]
fn rollback_crash_matrix_reboot_rollback() {
    if !in_private_ns("rollback_crash_matrix_reboot_rollback") {
        return;
    }
    run_matrix(&Matrix {
        name: "rollback, reboot, rollback",
        op: Op::Rollback,
        compensation: false,
        recoveries: &REBOOT_ROLLBACK,
        sampling: Sampling::Sparse,
        followups: false,
    });
}

// ---------------------------------------------------------------------------
// 4. A reboot in the window: `recover` restores every jail's run-state.

/// Crashes the upgrade after each step of the window, reboots (no mounts,
/// no jails), recovers in one direction, and checks that every jail is back
/// in its prior run-state on one template (with the other invariants).
fn reboot_in_window(rollback: bool) {
    run_matrix(&Matrix {
        name: if rollback {
            "reboot in the window, rollback"
        } else {
            "reboot in the window, resume"
        },
        op: Op::Upgrade,
        compensation: false,
        recoveries: if rollback {
            &REBOOT_ROLLBACK
        } else {
            &REBOOT_RESUME
        },
        sampling: Sampling::Window,
        followups: false,
    });
}

#[test]
fn reboot_in_window_then_resume_restores_run_state() {
    if !in_private_ns("reboot_in_window_then_resume_restores_run_state") {
        return;
    }
    reboot_in_window(false);
}

#[test]
fn reboot_in_window_then_rollback_restores_run_state() {
    if !in_private_ns("reboot_in_window_then_rollback_restores_run_state") {
        return;
    }
    reboot_in_window(true);
}

/// js/ is hashed with index.html left out; make sure that is the only file
/// the rc touches, so the exclusion hides nothing else.
#[test]
fn js_snapshot_excludes_only_the_rc_index() {
    if !in_private_ns("js_snapshot_excludes_only_the_rc_index") {
        return;
    }
    let worlds = Worlds::new();
    let jails = fleet(&[("ns", RunState::Running)]);
    let r = Root::with_jails(None, &worlds.get(1), &jails);
    let all = snapshot_live(&r.js(), |_| false);
    let filtered = snapshot_js(&r);
    let left_out: Vec<_> = all.keys().filter(|k| !filtered.contains_key(*k)).collect();
    assert_eq!(left_out, ["ns/var/www/index.html"], "{left_out:?}");
}
