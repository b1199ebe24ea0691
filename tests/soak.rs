//! Random-kill soak in the style of OSTree's: measure one upgrade's duration
//! D, then again and again SIGKILL a real `jailtx upgrade` after a random
//! delay in [0, 1.1·D] — anywhere, not only at the engine's fault points —
//! maybe simulate a reboot, `recover` forwards or backwards, and check the
//! invariants of SPEC section 4 (tests/support).
//!
//! `soak_short` (CI) runs 10 iterations; `soak_long` (`scripts/soak`) runs
//! `JAILTX_SOAK_ITERATIONS` (default 100). `JAILTX_SOAK_SEED` replays a run.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Baseline, Expect, JailDef, Rng, Root, Worlds, assert_no_failures, boot, check_invariants,
    check_second_recover, in_private_ns, killed, mixed_fleet, report_failure, run_isolated,
    world_version,
};

/// Iterations on one root before a fresh one (so both long-lived roots, with
/// archives to prune, and fresh ones are soaked).
const FRESH_EVERY: usize = 20;

/// The archives after a committed upgrade: the new one plus the newest of
/// the old ones, `keep` in all (what `prune` after the commit leaves).
fn archives_after(
    before: &BTreeMap<String, String>,
    new: &str,
    new_version: &str,
    keep: usize,
) -> BTreeMap<String, String> {
    let mut old: Vec<(&String, &String)> = before.iter().collect();
    old.sort_by_key(|(n, _)| std::cmp::Reverse(jailtx::ops::upgrade::parse_archive(n)));
    let mut out = BTreeMap::from([(new.to_owned(), new_version.to_owned())]);
    for (n, v) in old.into_iter().take(keep.saturating_sub(1)) {
        out.insert(n.clone(), v.clone());
    }
    out
}

fn last_tx(r: &Root) -> Value {
    r.transactions().pop().unwrap_or(Value::Null)
}

/// How long an upgrade takes (D), and where its downtime window lies.
struct Timing {
    d: Duration,
    window: (Duration, Duration),
}

impl Timing {
    /// Half the kills uniform in [0, 1.1·D] (OSTree's way); the other half
    /// uniform over the downtime window (with a margin), which otherwise
    /// gets few of them: staging (copy, manifest) is most of D.
    fn delay(&self, rng: &mut Rng) -> Duration {
        let us = |d: Duration| d.as_micros() as u64;
        if rng.coin() {
            let max = (us(self.d) * 11 / 10).max(1);
            return Duration::from_micros(rng.below(max + 1));
        }
        let (a, b) = (us(self.window.0), us(self.window.1));
        let margin = (b - a) / 5 + 1;
        let lo = a.saturating_sub(margin);
        let hi = (b + margin).min(us(self.d) * 11 / 10);
        Duration::from_micros(lo + rng.below(hi.saturating_sub(lo) + 1))
    }
}

/// Where the window (first stop to last health check) fell in a run of
/// `took` from process start, from its `--json` report: the engine's times
/// count from the upgrade's start, which came after the process started by
/// most of what the run took outside the upgrade and its /etc merge (the
/// rest is the prune and the exit).
fn window_in(report: &Value, took: Duration) -> (Duration, Duration) {
    let timings = report["report"]["timings"].as_array().unwrap();
    let name = |t: &&Value| t["name"].as_str().unwrap_or("").to_owned();
    let first = timings
        .iter()
        .find(|t| {
            let n = name(t);
            n.starts_with("stop-") || n.starts_with("unmount-")
        })
        .expect("a window");
    let last = timings
        .iter()
        .rev()
        .find(|t| {
            let n = name(t);
            n.starts_with("health") || n.starts_with("start-")
        })
        .expect("a window");
    let ms = |v: &Value| v.as_u64().unwrap_or(0);
    let engine =
        ms(&report["report"]["elapsed_ms"]) + ms(&report["etc_merge"]["report"]["elapsed_ms"]);
    let offset = took.saturating_sub(Duration::from_millis(engine)) * 3 / 4;
    let at = |v: &Value| offset + Duration::from_micros(v.as_u64().unwrap_or(0));
    (at(&first["start_us"]), at(&last["end_us"]))
}

struct Iteration {
    delay: Duration,
    exit: String,
    reboot: bool,
    rollback: bool,
    pending: Value,
    outcome: &'static str,
}

/// One kill-recover-check round from version `cur` to `cur + 1`; the
/// version the root is on afterwards, or the violations.
fn iterate(
    r: &Root,
    jails: &[JailDef],
    worlds: &Worlds,
    cur: u32,
    timing: &Timing,
    rng: &mut Rng,
) -> Result<(u32, Iteration), Vec<String>> {
    let next = cur + 1;
    let w = worlds.get(next);
    let w = w.to_str().unwrap();
    let base = Baseline::take(r);
    let before_tx = last_tx(r)["tx"].as_u64().unwrap_or(0);
    let plan = r.dry_run_plan(&["upgrade", "--from-dir", w]);
    let archive = plan["notes"]["archive"].as_str().unwrap().to_owned();

    let delay = timing.delay(rng);
    let mut child = r
        .command(&["upgrade", "--from-dir", w])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let _ = child.kill();
    let status = child.wait().unwrap();
    let exit = if killed(&status) {
        "killed".to_owned()
    } else {
        format!("finished ({status})")
    };
    let reboot = rng.coin();
    let rollback = rng.coin();
    if reboot {
        r.simulate_reboot();
    }
    let pending = r.json(&["recover", "--dry-run"])["pending"].clone();
    let mut args = vec!["recover"];
    if rollback {
        args.push("--rollback");
    }
    let out = r.run(&args);
    let mut bad = Vec::new();
    if !out.status.success() {
        bad.push(format!("{args:?}: {out}"));
        return Err(bad);
    }
    // Which way it had to go. `upgrade` runs up to three transactions: the
    // upgrade, then the /etc merge and the prune (each its own).
    let h = r.history();
    let ours: Vec<&Value> = h["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["tx"].as_u64().unwrap_or(0) > before_tx)
        .collect();
    let upgrade = ours.iter().find(|t| t["op"] == "upgrade");
    let tx = upgrade.map(|t| (*t).clone()).unwrap_or(Value::Null);
    let committed = tx["outcome"] == "committed";
    let pending_op = pending["op"].as_str().unwrap_or("");
    let forwards = if pending_op == "upgrade" {
        pending["committed"] == true || (pending["will"] == "resume" && !rollback)
    } else {
        // Nothing pending (the run finished, or died before its upgrade
        // began or after its end record), or a pending merge or prune
        // (the upgrade had committed).
        committed
    };
    if forwards != committed {
        bad.push(format!("history says {tx}, want committed = {forwards}"));
    }
    if status.success() && !forwards {
        bad.push("the upgrade exited 0 but the result is the old template".into());
    }
    if !pending.is_null() && !ours.iter().any(|t| t["tx"] == pending["tx"]) {
        bad.push(format!("the recovered transaction is not in history: {h}"));
    }
    if reboot && pending.is_null() {
        // The reboot fell before the upgrade began or after it ended: no
        // transaction to finish, and on Linux nothing starts jails at boot.
        // Boot them as the host's rc would, then check the same invariants.
        boot(r, jails);
    }
    let want = if forwards {
        // A finished command pruned to keep_archives (2); a recovered one
        // may not have got to its prune.
        let archives = BTreeMap::from([(archive.clone(), world_version(cur))]);
        let prunable = if status.success() {
            BTreeMap::new()
        } else {
            base.archives.clone()
        };
        let archives = if status.success() {
            archives_after(&base.archives, &archive, &world_version(cur), 2)
        } else {
            archives
        };
        Expect {
            version: world_version(next),
            archives,
            prunable,
            mroot_ino: None,
        }
    } else {
        Expect {
            version: world_version(cur),
            archives: base.archives.clone(),
            prunable: BTreeMap::new(),
            mroot_ino: Some(base.mroot_ino),
        }
    };
    bad.extend(check_invariants(r, jails, &base, &want));
    if forwards {
        let ino = std::fs::metadata(r.j().join(&archive))
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .ok();
        if ino != Some(base.mroot_ino) {
            bad.push(format!("{archive} is not the old mroot"));
        }
    }
    bad.extend(check_second_recover(r));
    if !bad.is_empty() {
        bad.insert(
            0,
            format!(
                "delay {delay:?}, upgrade {exit}, reboot {reboot}, recover{}, pending {pending}, the upgrade in history {tx}",
                if rollback { " --rollback" } else { "" }
            ),
        );
        return Err(bad);
    }
    if cur > 1 {
        worlds.forget(cur - 1);
    }
    Ok((
        if forwards { next } else { cur },
        Iteration {
            delay,
            exit,
            reboot,
            rollback,
            pending,
            outcome: if forwards { "new" } else { "old" },
        },
    ))
}

/// A fresh root on world `version` with the soak's jails.
fn fresh(worlds: &Worlds, version: u32) -> (Root, Vec<JailDef>) {
    let jails = mixed_fleet();
    let r = Root::with_jails(None, &worlds.get(version), &jails);
    (r, jails)
}

fn soak(iterations: usize) {
    let seed = std::env::var("JAILTX_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                ^ u64::from(std::process::id())
        });
    println!("soak: {iterations} iterations, seed {seed} (JAILTX_SOAK_SEED={seed} replays it)");
    let mut rng = Rng::new(seed);
    let started = Instant::now();
    let worlds = Worlds::new();

    // D: a whole upgrade, process start to exit (the median of three, so a
    // cold first run does not stretch it), and where in it the downtime
    // window falls (from the engine's step timings).
    let (mut r, mut jails) = fresh(&worlds, 1);
    let mut runs = Vec::new();
    for v in 2..=4 {
        let w = worlds.get(v);
        let t = Instant::now();
        let out = r.run(&["upgrade", "--from-dir", w.to_str().unwrap(), "--json"]);
        let took = t.elapsed();
        assert!(out.status.success(), "{out}");
        let report: Value = serde_json::from_str(&out.stdout).unwrap();
        runs.push((took, window_in(&report, took)));
    }
    runs.sort_by_key(|r| r.0);
    let (d, window) = runs[1];
    let timing = Timing { d, window };
    println!(
        "soak: one upgrade takes D = {:.1} ms (runs {:?}); its window is about {:.1}..{:.1} ms in",
        d.as_secs_f64() * 1e3,
        runs.iter().map(|r| r.0).collect::<Vec<_>>(),
        window.0.as_secs_f64() * 1e3,
        window.1.as_secs_f64() * 1e3,
    );
    let mut cur = 4;

    let mut failures = Vec::new();
    let mut killed_runs = 0;
    let mut reboots = 0;
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for k in 1..=iterations {
        if k % FRESH_EVERY == 0 {
            drop(r);
            cur += 1;
            (r, jails) = fresh(&worlds, cur);
        }
        let result = run_isolated(|| iterate(&r, &jails, &worlds, cur, &timing, &mut rng));
        match result {
            Ok((now, it)) => {
                if it.exit == "killed" {
                    killed_runs += 1;
                }
                reboots += usize::from(it.reboot);
                *outcomes.entry(it.outcome).or_default() += 1;
                let at = if it.pending.is_null() {
                    "nothing pending".to_owned()
                } else {
                    format!(
                        "{} {} of {} steps done{}",
                        it.pending["op"].as_str().unwrap_or("?"),
                        it.pending["steps_done"],
                        it.pending["steps"],
                        if it.pending["committed"] == true {
                            ", committed"
                        } else {
                            ""
                        }
                    )
                };
                println!(
                    "ok   {k:4}: kill after {:7.1} ms: {}, {at}; {}recover{} -> {} (world {now})",
                    it.delay.as_secs_f64() * 1e3,
                    it.exit,
                    if it.reboot { "reboot, " } else { "" },
                    if it.rollback { " --rollback" } else { "" },
                    it.outcome,
                );
                cur = now;
            }
            Err(bad) => {
                failures.push(report_failure(&format!("iteration {k}"), &bad));
                // Whatever that left, go on from a fresh root.
                drop(r);
                cur += 2;
                (r, jails) = fresh(&worlds, cur);
            }
        }
    }
    println!(
        "soak: {iterations} iterations in {:.1} s, seed {seed}: {killed_runs} upgrades killed, {reboots} reboots, outcomes {outcomes:?}, {} failed",
        started.elapsed().as_secs_f64(),
        failures.len()
    );
    assert_no_failures(&failures, iterations, &format!("iterations (seed {seed})"));
}

#[test]
fn soak_short() {
    if !in_private_ns("soak_short") {
        return;
    }
    soak(10);
}

#[test]
#[ignore = "long: scripts/soak runs it (JAILTX_SOAK_ITERATIONS, default 100)"]
fn soak_long() {
    if !in_private_ns("soak_long") {
        return;
    }
    let n = std::env::var("JAILTX_SOAK_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    soak(n);
}

#[test]
fn archives_after_keeps_the_newest() {
    let before = BTreeMap::from([
        ("mroot.20260101".to_owned(), "world 1".to_owned()),
        ("mroot.20260101.1".to_owned(), "world 2".to_owned()),
        ("mroot.20250101".to_owned(), "world 0".to_owned()),
    ]);
    let got = archives_after(&before, "mroot.20260102", "world 3", 2);
    assert_eq!(
        got,
        BTreeMap::from([
            ("mroot.20260102".to_owned(), "world 3".to_owned()),
            ("mroot.20260101.1".to_owned(), "world 2".to_owned()),
        ])
    );
}
