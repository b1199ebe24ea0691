//! Issue 15, items 1 and 2: inside the upgrade's downtime window, jails stop
//! and start side by side (`[upgrade] parallel`), and each jail's own
//! downtime is measured and reported.
//!
//! - Overlap is shown by what the jails themselves write (the mtimes of
//!   marker files their exec.stop and exec.start touch around a 1 s sleep),
//!   as an ordering fact: every jail began stopping before any finished.
//!   Never a timed assertion on this machine's wall clock.
//! - A failing start of one jail, while the others start beside it, rolls
//!   every jail back.
//! - A crash matrix over the batched steps of the window (every stop,
//!   unmount, mount, start and the health check, at every instant, forwards
//!   and in the compensations, with and without a simulated reboot, resumed
//!   and rolled back) checks SPEC section 4 after each case. By default the
//!   recovery rotates over the cases; `JAILTX_FULL_MATRIX=1` runs each case
//!   with every recovery. `JAILTX_MATRIX_ONLY=TEXT` keeps the cases whose
//!   label holds TEXT; `JAILTX_MATRIX_JOBS=N` (2) runs N at a time.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde_json::Value;
use support::{
    Baseline, COMPENSATION, Expect, FORWARD, JailDef, Root, RunState, Worlds, assert_no_failures,
    check_invariants, check_second_recover, fleet, in_private_ns, report_failure, run_isolated,
    step_names, world_version,
};

/// When something began and ended, in nanoseconds (file mtimes).
type Span = (i128, i128);

/// A jail's marker file's mtime, in nanoseconds.
fn mtime_ns(path: &Path) -> i128 {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// Whether every interval began before any ended: all of them overlap at
/// one instant (the latest beginning).
fn all_overlap(spans: &[Span]) -> bool {
    let latest_begin = spans.iter().map(|s| s.0).max().unwrap();
    let earliest_end = spans.iter().map(|s| s.1).min().unwrap();
    latest_begin < earliest_end
}

/// Four running jails whose exec.stop and exec.start each sleep 1 s between
/// two marker files in `/s` (the jail's `js/NAME`), upgraded with
/// `parallel`. Returns the stop and start intervals (from the markers'
/// mtimes) and the upgrade's `--json` report.
fn upgrade_with_markers(parallel: u32) -> (Vec<Span>, Vec<Span>, Value) {
    let worlds = Worlds::new();
    let config = format!(
        "[jail]\n\
         exec_start = \"touch /s/start-begin; sleep 1; touch /s/start-end; /bin/sh /etc/rc\"\n\
         exec_stop = \"touch /s/stop-begin; sleep 1; touch /s/stop-end; /bin/sh /etc/rc.shutdown\"\n\
         [upgrade]\nparallel = {parallel}\n"
    );
    let jails = fleet(&[
        ("a", RunState::Running),
        ("b", RunState::Running),
        ("c", RunState::Running),
        ("d", RunState::Running),
    ]);
    let r = Root::with_jails(Some(&config), &worlds.get(1), &jails);
    // The creates' own starts wrote start markers: only the upgrade's count.
    for j in &jails {
        for m in ["start-begin", "start-end"] {
            std::fs::remove_file(r.js().join(&j.name).join(m)).unwrap();
        }
    }
    let w2 = worlds.get(2);
    let report = r.json(&["upgrade", "--from-dir", w2.to_str().unwrap()]);
    let span = |j: &JailDef, what: &str| {
        let dir = r.js().join(&j.name);
        let begin = mtime_ns(&dir.join(format!("{what}-begin")));
        let end = mtime_ns(&dir.join(format!("{what}-end")));
        assert!(begin < end, "jail {}: {what} ended before it began", j.name);
        (begin, end)
    };
    let stops: Vec<_> = jails.iter().map(|j| span(j, "stop")).collect();
    let starts: Vec<_> = jails.iter().map(|j| span(j, "start")).collect();
    for (j, (stop, start)) in jails.iter().zip(stops.iter().zip(&starts)) {
        assert!(
            stop.1 < start.0,
            "jail {} started before its stop ended",
            j.name
        );
    }
    r.ok(&["stop"]);
    (stops, starts, report)
}

/// 1. With `parallel = 4`, the four jails' stops overlap and so do their
///    starts; every jail's downtime is reported, in `--json` and `history`.
///    With `parallel = 1` (the control), no two overlap: the markers do
///    tell the difference.
#[test]
fn jails_stop_and_start_side_by_side() {
    if !in_private_ns("jails_stop_and_start_side_by_side") {
        return;
    }
    let (stops, starts, report) = upgrade_with_markers(4);
    assert!(all_overlap(&stops), "the stops ran one by one: {stops:?}");
    assert!(
        all_overlap(&starts),
        "the starts ran one by one: {starts:?}"
    );
    let notes = &report["report"]["notes"];
    let per_jail = notes["jail_downtime_ms"]
        .as_str()
        .expect("jail_downtime_ms");
    let names: Vec<&str> = per_jail
        .split(' ')
        .map(|p| p.split_once('=').expect("NAME=MS").0)
        .collect();
    assert_eq!(names, ["a", "b", "c", "d"], "{notes}");
    // Each jail is down for its own stop and start (2 s of sleeps), and
    // the window holds every jail's downtime.
    let longest: f64 = notes["max_jail_downtime_ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let window: f64 = notes["downtime_ms"].as_str().unwrap().parse().unwrap();
    assert!(longest >= 2000.0 && longest <= window, "{notes}");

    let (stops, starts, _) = upgrade_with_markers(1);
    assert!(
        !all_overlap(&stops) && !all_overlap(&starts),
        "one thread, yet the jails overlapped: {stops:?} {starts:?}"
    );
}

/// `history --json` carries the per-jail downtime beside the window, and
/// the human output says it.
#[test]
fn per_jail_downtime_in_history_and_output() {
    if !in_private_ns("per_jail_downtime_in_history_and_output") {
        return;
    }
    let worlds = Worlds::new();
    let jails = fleet(&[
        ("ns", RunState::Running),
        ("www", RunState::Running),
        ("spare", RunState::Stopped),
    ]);
    let r = Root::with_jails(None, &worlds.get(1), &jails);
    let w2 = worlds.get(2);
    let out = r.ok(&["upgrade", "--from-dir", w2.to_str().unwrap()]);
    assert!(
        out.lines().any(
            |l| l.starts_with("downtime per jail (its stop to its start): longest ")
                && l.contains("ns=")
                && l.contains("www=")
                && !l.contains("spare=")
        ),
        "{out}"
    );
    let h = r.history();
    let tx = h["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|t| t["op"] == "upgrade")
        .unwrap()
        .clone();
    let notes = &tx["notes"];
    assert!(notes["downtime_ms"].is_string(), "{tx}");
    let per_jail = notes["jail_downtime_ms"]
        .as_str()
        .expect("jail_downtime_ms");
    let ms: BTreeMap<&str, f64> = per_jail
        .split(' ')
        .map(|p| {
            let (n, v) = p.split_once('=').unwrap();
            (n, v.parse().unwrap())
        })
        .collect();
    assert_eq!(ms.keys().copied().collect::<Vec<_>>(), ["ns", "www"]);
    let longest: f64 = notes["max_jail_downtime_ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let window: f64 = notes["downtime_ms"].as_str().unwrap().parse().unwrap();
    assert!(ms.values().all(|v| *v > 0.0 && *v <= longest), "{notes}");
    assert!(longest <= window, "{notes}");
}

/// `[jail] exec_start` that fails on world 2 for jail `bad` only.
const START_FAILS_FOR_BAD: &str = "[jail]\nexec_start = \"if grep -q 'world 2' /usr/share/misc/world-version && test $(hostname) = bad.example.org; then exit 1; fi; /bin/sh /etc/rc\"\n";

/// 2. One jail's start fails while the others start beside it: the upgrade
///    exits 1 and every jail is back, running, on the old world.
#[test]
fn a_failing_start_beside_others_rolls_every_jail_back() {
    if !in_private_ns("a_failing_start_beside_others_rolls_every_jail_back") {
        return;
    }
    let worlds = Worlds::new();
    let jails = fleet(&[
        ("a", RunState::Running),
        ("bad", RunState::Running),
        ("c", RunState::Running),
        ("d", RunState::Running),
        ("spare", RunState::Stopped),
    ]);
    let r = Root::with_jails(Some(START_FAILS_FOR_BAD), &worlds.get(1), &jails);
    let base = Baseline::take(&r);
    let w2 = worlds.get(2);
    let out = r.run(&["upgrade", "--from-dir", w2.to_str().unwrap()]);
    assert_eq!(out.code(), Some(1), "{out}");
    assert!(out.stderr.contains("start-bad"), "{out}");
    let old = Expect {
        version: world_version(1),
        archives: base.archives.clone(),
        prunable: BTreeMap::new(),
        mroot_ino: Some(base.mroot_ino),
    };
    let mut bad = check_invariants(&r, &jails, &base, &old);
    bad.extend(check_second_recover(&r));
    assert!(bad.is_empty(), "{bad:#?}");
    r.ok(&["stop"]);
}

/// A crash while another jail's exec.stop still runs leaves no lock behind:
/// `recover` right after the kill finds no "another jailtx run". (exec.stop
/// runs under a middle process that never execs; it held every descriptor
/// of jailtx, the lock's too, until exec.stop ended.)
#[test]
fn a_crash_beside_a_running_exec_stop_leaves_no_lock() {
    if !in_private_ns("a_crash_beside_a_running_exec_stop_leaves_no_lock") {
        return;
    }
    let worlds = Worlds::new();
    let config = "[jail]\nexec_stop = \"test $(hostname) = slow.example.org && sleep 4; /bin/sh /etc/rc.shutdown\"\n";
    let jails = fleet(&[("slow", RunState::Running), ("fast", RunState::Running)]);
    let r = Root::with_jails(Some(config), &worlds.get(1), &jails);
    let base = Baseline::take(&r);
    let w2 = worlds.get(2);
    let args = ["upgrade", "--from-dir", w2.to_str().unwrap()];
    let plan = r.dry_run_plan(&args);
    let stop_fast = step_names(&plan)
        .iter()
        .position(|n| n == "stop-fast")
        .unwrap();
    // stop-fast ends while slow's exec.stop sleeps (they run side by side).
    let fault = format!("upgrade/after-effect:{stop_fast}");
    r.run_env(&args, &[("JAILTX_FAULT", &fault)])
        .assert_killed("upgrade killed after stop-fast");
    let out = r.run(&["recover", "--rollback"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let old = Expect {
        version: world_version(1),
        archives: base.archives.clone(),
        prunable: BTreeMap::new(),
        mroot_ino: Some(base.mroot_ino),
    };
    let bad = check_invariants(&r, &jails, &base, &old);
    assert!(bad.is_empty(), "{bad:#?}");
    r.ok(&["stop"]);
}

// ---------------------------------------------------------------------------
// The crash matrix over the window's batches.

/// `[health]` that fails for jail `www` only: the compensation cases.
const HEALTH_FAILS_FOR_WWW: &str = "[health]\ncommand = \"test \\\"$JAIL_NAME\\\" != www\"\n";

#[derive(Debug, Clone, Copy)]
struct Recovery {
    reboot: bool,
    rollback: bool,
}

const RECOVERIES: [Recovery; 4] = [
    Recovery {
        reboot: false,
        rollback: false,
    },
    Recovery {
        reboot: true,
        rollback: true,
    },
    Recovery {
        reboot: false,
        rollback: true,
    },
    Recovery {
        reboot: true,
        rollback: false,
    },
];

impl Recovery {
    fn label(self) -> String {
        format!(
            "{}recover{}",
            if self.reboot { "reboot+" } else { "" },
            if self.rollback { " --rollback" } else { "" }
        )
    }
}

#[derive(Debug, Clone)]
struct Case {
    instant: &'static str,
    index: usize,
    rec: Recovery,
}

/// The batched steps of an upgrade plan: the window's stops, unmounts,
/// mounts, starts and health check (derived from the plan, never listed).
fn batched(plan: &Value) -> Vec<(usize, String)> {
    let kinds = [
        "stop-jail",
        "unmount",
        "mount",
        "start-jail",
        "health-check",
        "canary-wait",
    ];
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            let action = s["action"].as_object().expect("action");
            action.keys().any(|k| kinds.contains(&k.as_str()))
        })
        .map(|(i, s)| (i, s["name"].as_str().unwrap().to_owned()))
        .collect()
}

/// The upgrade's extra arguments: with `canary`, `www` switches first
/// (and, in the compensation cases, is the jail whose health check fails).
fn extra(canary: bool) -> &'static [&'static str] {
    if canary {
        &["--canary", "www", "--canary-wait", "0"]
    } else {
        &[]
    }
}

fn upgrade_args(w2: &Path, canary: bool) -> Vec<&str> {
    let mut args = vec!["upgrade", "--from-dir", w2.to_str().unwrap()];
    args.extend(extra(canary));
    args
}

/// A root ready for the upgrade: three running jails (so each batch has
/// chains to run side by side), one stopped, one unmounted.
fn prepare(
    worlds: &Worlds,
    compensation: bool,
    canary: bool,
) -> (Root, Vec<JailDef>, Baseline, Value) {
    let jails = fleet(&[
        ("ns", RunState::Running),
        ("www", RunState::Running),
        ("mail", RunState::Running),
        ("spare", RunState::Stopped),
        ("cold", RunState::Unmounted),
    ]);
    let config = if compensation {
        HEALTH_FAILS_FOR_WWW
    } else {
        ""
    };
    let r = Root::with_jails(Some(config), &worlds.get(1), &jails);
    let base = Baseline::take(&r);
    let w2 = worlds.get(2);
    let plan = r.dry_run_plan(&upgrade_args(&w2, canary));
    (r, jails, base, plan)
}

fn run_case(
    worlds: &Worlds,
    compensation: bool,
    canary: bool,
    c: &Case,
) -> Result<(), Vec<String>> {
    let (r, jails, base, plan) = prepare(worlds, compensation, canary);
    let w2 = worlds.get(2);
    let fault = format!("upgrade/{}:{}", c.instant, c.index);
    let out = r.run_env(&upgrade_args(&w2, canary), &[("JAILTX_FAULT", &fault)]);
    if !out.killed() {
        return Err(vec![format!("the fault {fault} did not fire: {out}")]);
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
    let commit = plan["commit"].as_u64().unwrap() as usize;
    let rolled_back = c.rec.rollback && c.index < commit;
    let forwards = !(compensation || rolled_back);
    let want = if forwards {
        let archive = plan["notes"]["archive"].as_str().unwrap().to_owned();
        Expect {
            version: world_version(2),
            archives: BTreeMap::from([(archive, world_version(1))]),
            prunable: BTreeMap::new(),
            mroot_ino: None,
        }
    } else {
        Expect {
            version: world_version(1),
            archives: base.archives.clone(),
            prunable: BTreeMap::new(),
            mroot_ino: Some(base.mroot_ino),
        }
    };
    let mut bad = check_invariants(&r, &jails, &base, &want);
    let h = r.history();
    let outcome = if forwards { "committed" } else { "rolled-back" };
    let last = h["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|t| t["op"] == "upgrade")
        .cloned();
    if last.as_ref().map(|t| &t["outcome"]) != Some(&Value::from(outcome)) {
        bad.push(format!("history: {last:?}, want outcome {outcome}"));
    }
    bad.extend(check_second_recover(&r));
    if bad.is_empty() { Ok(()) } else { Err(bad) }
}

fn run_matrix(compensation: bool, canary: bool) {
    let worlds = Worlds::new();
    let (_, _, _, plan) = prepare(&worlds, compensation, canary);
    let mut steps = batched(&plan);
    let names = step_names(&plan);
    let full = std::env::var("JAILTX_FULL_MATRIX").is_ok_and(|v| v == "1");
    if canary {
        let wait = names
            .iter()
            .position(|n| n == "canary-wait")
            .expect("canary-wait");
        // The canary's own instants, the soak and the first chain after it
        // (the other chains are the plain matrix's); all with the long form.
        if compensation {
            // The canary's failing check is where the compensations begin.
            steps.retain(|(i, _)| *i < wait);
        } else if !full {
            let next = names[wait + 1..]
                .iter()
                .position(|n| n.starts_with("start-"))
                .map_or(wait, |k| wait + 1 + k);
            steps.retain(|(i, _)| *i <= next);
        }
    }
    // Every jail's chain, more than one side by side (with a canary, the
    // canary's chain and at least the next).
    for kind in ["stop-", "unmount-s-", "mount-root-", "start-"] {
        let n = steps.iter().filter(|(_, s)| s.starts_with(kind)).count();
        // The canary compensations stop at the canary's failing check:
        // only its own chain ran.
        let least = match (canary, compensation) {
            (true, true) => 1,
            (true, false) => 2,
            (false, _) => 3,
        };
        assert!(n >= least, "{kind}* steps: {n} in {names:?}");
    }
    let instants: &[&'static str; 4] = if compensation {
        &COMPENSATION
    } else {
        &FORWARD
    };
    let only = std::env::var("JAILTX_MATRIX_ONLY").unwrap_or_default();
    let mut todo = Vec::new();
    for (k, (index, name)) in steps.iter().enumerate() {
        for (ip, instant) in instants.iter().enumerate() {
            for (rp, rec) in RECOVERIES.iter().enumerate() {
                // Default: each (step, instant) once, the recovery rotating
                // so that each step meets all four across its instants.
                if !full && rp != (k + ip) % RECOVERIES.len() {
                    continue;
                }
                let c = Case {
                    instant,
                    index: *index,
                    rec: *rec,
                };
                let label = format!("{instant}:{index} ({name}), {}", rec.label());
                if label.contains(&only) {
                    todo.push((label, c));
                }
            }
        }
    }
    let jobs = std::env::var("JAILTX_MATRIX_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2usize)
        .max(1);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let failures = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..jobs {
            s.spawn(|| {
                while let Some((label, c)) =
                    todo.get(next.fetch_add(1, std::sync::atomic::Ordering::SeqCst))
                {
                    match run_isolated(|| run_case(&worlds, compensation, canary, c)) {
                        Ok(()) => println!("ok   {label}"),
                        Err(bad) => failures.lock().unwrap().push(report_failure(label, &bad)),
                    }
                }
            });
        }
    });
    assert!(!todo.is_empty(), "no case ran");
    let failures = failures.into_inner().unwrap();
    assert_no_failures(&failures, todo.len(), "cases");
}

#[test]
fn crash_matrix_over_the_parallel_batches() {
    if !in_private_ns("crash_matrix_over_the_parallel_batches") {
        return;
    }
    run_matrix(false, false);
}

#[test]
fn crash_matrix_over_the_parallel_batches_compensations() {
    if !in_private_ns("crash_matrix_over_the_parallel_batches_compensations") {
        return;
    }
    run_matrix(true, false);
}

/// The same over an upgrade with a canary (`www`): its chain and health
/// check, the soak, the first chain after it.
#[test]
fn crash_matrix_over_the_canary_phase() {
    if !in_private_ns("crash_matrix_over_the_canary_phase") {
        return;
    }
    run_matrix(false, true);
}

/// A canary whose health check fails, crashed at every instant of its
/// compensations: the other jails end as they were.
#[test]
fn crash_matrix_over_the_canary_phase_compensations() {
    if !in_private_ns("crash_matrix_over_the_canary_phase_compensations") {
        return;
    }
    run_matrix(true, true);
}
