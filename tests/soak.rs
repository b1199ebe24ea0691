//! Random-kill soak in the style of OSTree's: measure one upgrade's duration
//! D, then again and again kill a real `jailtx upgrade`, maybe simulate a
//! reboot, `recover` forwards or backwards, and check the invariants of SPEC
//! section 4 (tests/support).
//!
//! Odd iterations SIGKILL the upgrade after a random delay in [0, 1.1·D]:
//! anywhere, not only at the engine's fault points. Those rarely land in the
//! downtime window (the build before it is most of D), where a crash hurts,
//! so even iterations kill it inside the window: half of them with
//! `JAILTX_FAULT` at one of the window's steps (stops, unmounts, renames,
//! mounts, starts, the health check), taken in a shuffled round so that every
//! window step is hit once per round, at a random instant of that step; the
//! other half with SIGKILL after a random delay from the moment the journal
//! shows the window's first intent (up to 1.1 times the shortest window of
//! three probe runs), which also lands between the fault points, inside a
//! jail's stop or start.
//!
//! The direction recovery must take is derived by the test from the journal
//! as the kill left it (the frame decoder only: not the engine's fold, not
//! `recover --dry-run`, which is only cross-checked against it). The soak
//! fails if fewer than [`MIN_PENDING_PERCENT`] % of the runs were killed with
//! a transaction pending, and its closing line gives the kill counts and
//! where the kills landed.
//!
//! `soak_short` (CI) runs 10 iterations; `soak_long` (`scripts/soak`) runs
//! `JAILTX_SOAK_ITERATIONS` (default 100). `JAILTX_SOAK_SEED` replays a run.

mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use jailtx::journal::frame;
use jailtx::journal::{JOURNAL_MAGIC, Record};
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

/// The share of runs that must have been killed with a transaction pending:
/// the window half alone gives 50 %, and most uniform kills land in the
/// upgrade too (about 85 % here); a soak below this killed too little to
/// have tested recovery.
const MIN_PENDING_PERCENT: usize = 60;

/// The instants a window kill is drawn from (the forward ones: the upgrade
/// has not failed, so no compensation runs).
const INSTANTS: [&str; 4] = [
    "before-intent",
    "after-intent",
    "after-effect",
    "after-done",
];

/// How the soak kills the upgrade.
struct Kills {
    /// A whole upgrade, process start to exit: the uniform kills' range.
    d: Duration,
    /// The window's length in a probe run: the in-window timed kills' range.
    window_len: Duration,
    /// The window's step indices, first stop/unmount to last start/health
    /// check, from the plan.
    window: Vec<usize>,
    /// The order the window steps are taken in this round.
    round: Vec<usize>,
    /// Fault kills aimed so far.
    faults: usize,
}

/// Where one kill was aimed.
#[derive(Debug, Clone)]
enum Aim {
    /// SIGKILL after this delay.
    After(Duration),
    /// SIGKILL this long after the journal shows the window's first intent.
    InWindow(Duration),
    /// `JAILTX_FAULT=upgrade/INSTANT:STEP`.
    Fault { step: usize, instant: &'static str },
}

impl Kills {
    fn aim(&mut self, k: usize, rng: &mut Rng) -> Aim {
        if k % 2 == 1 {
            let us = (self.d.as_micros() as u64 * 11 / 10).max(1);
            return Aim::After(Duration::from_micros(rng.below(us + 1)));
        }
        if k % 4 == 2 {
            let us = (self.window_len.as_micros() as u64 * 11 / 10).max(1);
            return Aim::InWindow(Duration::from_micros(rng.below(us + 1)));
        }
        self.faults += 1;
        if self.round.is_empty() {
            self.round = self.window.clone();
            // Fisher-Yates with the soak's own generator (replayable).
            for i in (1..self.round.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                self.round.swap(i, j);
            }
        }
        let step = self.round.pop().unwrap();
        let instant = INSTANTS[rng.below(INSTANTS.len() as u64) as usize];
        Aim::Fault { step, instant }
    }
}

/// The window of an upgrade plan (as `--dry-run --json` prints it): from the
/// template renames (`archive-mroot`, while the jails still run), else the
/// first step that stops a jail or unmounts, to the last that starts one or
/// checks health.
fn window_of(plan: &Value) -> Vec<usize> {
    let renames = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .position(|s| s["name"] == "archive-mroot");
    let kinds: Vec<String> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["action"]
                .as_object()
                .and_then(|o| o.keys().next().cloned())
                .unwrap_or_default()
        })
        .collect();
    let first = renames.unwrap_or_else(|| {
        kinds
            .iter()
            .position(|k| k == "stop-jail" || k == "unmount")
            .expect("a window")
    });
    let last = kinds
        .iter()
        .rposition(|k| k == "start-jail" || k == "health-check")
        .expect("a window");
    (first..=last).collect()
}

/// The transaction the kill left open, as the journal holds it, folded by
/// the test itself: which op, which steps have intent and done records,
/// whether it committed or aborted.
#[derive(Debug)]
struct Open {
    tx: u64,
    op: String,
    intent: Vec<bool>,
    done: Vec<bool>,
    committed: bool,
    aborted: bool,
}

/// What the journal says, read right after the kill: the open transaction
/// (none: the journal is at rest, or its last transaction has its end
/// record) and, for an upgrade that ended but whose summary the kill kept
/// from being filed, whether it committed.
fn read_journal(r: &Root) -> (Option<Open>, Option<bool>) {
    let bytes = std::fs::read(r.journal()).unwrap();
    let scan = frame::scan(&bytes, JOURNAL_MAGIC).expect("the journal decodes");
    let (mut open, mut ended_upgrade) = (None::<Open>, None);
    for (_, record) in scan.records {
        let o = open.as_mut();
        match (record, o) {
            (Record::Begin(b), _) => {
                let n = b.plan.steps.len();
                open = Some(Open {
                    tx: b.tx,
                    op: b.plan.op.clone(),
                    intent: vec![false; n],
                    done: vec![false; n],
                    committed: false,
                    aborted: false,
                });
            }
            (Record::StepIntent(m), Some(o)) => o.intent[m.step as usize] = true,
            (Record::StepIntents(m), Some(o)) => {
                o.intent[m.first as usize..=m.last as usize].fill(true);
            }
            (Record::StepDone(m), Some(o)) => o.done[m.step as usize] = true,
            (Record::StepDones(m), Some(o)) => {
                o.done[m.first as usize..=m.last as usize].fill(true);
            }
            (Record::Commit(_), Some(o)) => o.committed = true,
            (Record::Abort(_), Some(o)) => o.aborted = true,
            (Record::End(e), Some(o)) => {
                if o.op == "upgrade" {
                    ended_upgrade = Some(e.outcome == jailtx::journal::Outcome::Committed);
                }
                open = None;
            }
            _ => {}
        }
    }
    (open, ended_upgrade)
}

/// How long the window (`window`'s steps) took in a run, from its `--json`
/// report: first step's start to last step's end.
fn window_len(report: &Value, window: &[usize]) -> Duration {
    let timings = report["report"]["timings"].as_array().unwrap();
    let at = |i: usize, key: &str| {
        timings
            .iter()
            .find(|t| t["index"] == i)
            .and_then(|t| t[key].as_u64())
            .expect("the window's step timings")
    };
    let (first, last) = (window[0], window[window.len() - 1]);
    Duration::from_micros(at(last, "end_us").saturating_sub(at(first, "start_us")))
}

/// Where a kill landed, for the closing histogram: the upgrade step a fault
/// fired at, or (a timed kill) the upgrade's first step without a done
/// record (batches of stops/unmounts and of mounts/starts are journaled as
/// one, so a timed kill inside one shows as its first step), or the
/// transaction or phase outside the upgrade.
fn landed(aim: &Aim, open: Option<&Open>, killed: bool) -> String {
    match (aim, open) {
        _ if !killed => "finished".into(),
        (Aim::Fault { step, .. }, Some(o)) if o.op == "upgrade" => format!("{step:02}"),
        (Aim::After(_) | Aim::InWindow(_), Some(o)) if o.op == "upgrade" => format!(
            "{:02}",
            o.done.iter().position(|d| !d).unwrap_or(o.done.len())
        ),
        (_, Some(o)) => o.op.clone(),
        (_, None) => "none open".into(),
    }
}

/// Waits until the journal holds an intent for step `step` (or a later one)
/// of an upgrade, polling its size; false if the upgrade exited first.
fn wait_for_intent(r: &Root, child: &mut std::process::Child, step: usize) -> bool {
    let journal = r.journal();
    let mut seen_len = 0;
    let started = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the upgrade ran for 10 minutes without reaching step {step}"
        );
        let len = std::fs::metadata(&journal).map(|m| m.len()).unwrap_or(0);
        if len != seen_len {
            seen_len = len;
            let bytes = std::fs::read(&journal).unwrap_or_default();
            if let Ok(scan) = frame::scan(&bytes, JOURNAL_MAGIC) {
                let mut upgrade = false;
                for (_, record) in scan.records {
                    match record {
                        Record::Begin(b) => upgrade = b.plan.op == "upgrade",
                        Record::StepIntent(m) if upgrade && m.step as usize >= step => {
                            return true;
                        }
                        Record::StepIntents(m) if upgrade && m.last as usize >= step => {
                            return true;
                        }
                        _ => {}
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_micros(500));
    }
}

struct Iteration {
    aim: Aim,
    exit: String,
    reboot: bool,
    rollback: bool,
    /// Something was pending after the kill (from the journal).
    pending: bool,
    landed: String,
    /// The upgrade's steps with a done record when it was killed, if it was
    /// the open transaction (a batch's steps are done together).
    steps_done: Option<usize>,
    outcome: &'static str,
}

/// One kill-recover-check round from version `cur` to `cur + 1`; the
/// version the root is on afterwards, or the violations.
fn iterate(
    r: &Root,
    jails: &[JailDef],
    worlds: &Worlds,
    cur: u32,
    aim: Aim,
    rng: &mut Rng,
) -> Result<(u32, Iteration), Vec<String>> {
    let next = cur + 1;
    let w = worlds.get(next);
    let w = w.to_str().unwrap();
    let base = Baseline::take(r);
    let before_tx = last_tx(r)["tx"].as_u64().unwrap_or(0);
    let plan = r.dry_run_plan(&["upgrade", "--from-dir", w]);
    let archive = plan["notes"]["archive"].as_str().unwrap().to_owned();

    let mut cmd = r.command(&["upgrade", "--from-dir", w]);
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Aim::Fault { step, instant } = &aim {
        // Only in the upgrade's own transaction: the merge and the prune
        // that follow it have steps of the same indices.
        cmd.env("JAILTX_FAULT", format!("upgrade/{instant}:{step}"));
    }
    let mut child = cmd.spawn().unwrap();
    match &aim {
        Aim::After(delay) => {
            std::thread::sleep(*delay);
            let _ = child.kill();
        }
        Aim::InWindow(delay) => {
            let first = window_of(&plan)[0];
            if wait_for_intent(r, &mut child, first) {
                std::thread::sleep(*delay);
                let _ = child.kill();
            }
        }
        Aim::Fault { .. } => {}
    }
    let status = child.wait().unwrap();
    let was_killed = killed(&status);
    let exit = if was_killed {
        "killed".to_owned()
    } else {
        format!("finished ({status})")
    };
    let (open, ended_upgrade) = read_journal(r);
    let landed = landed(&aim, open.as_ref(), was_killed);
    let steps_done = open
        .as_ref()
        .filter(|o| o.op == "upgrade")
        .map(|o| o.done.iter().filter(|d| **d).count());
    let mut bad = Vec::new();
    if let Aim::Fault { step, instant } = &aim {
        // The fault must have fired where it was aimed: the upgrade open,
        // its build done, the step's done record there only after-done.
        match &open {
            Some(o) if o.op == "upgrade" && was_killed => {
                let first = window_of(&plan)[0];
                if !o.done[..first].iter().all(|d| *d) {
                    bad.push(format!("killed at {instant}:{step} before the build was done"));
                }
                if o.done[*step] != (*instant == "after-done") {
                    bad.push(format!(
                        "killed at {instant}:{step} but step {step} done = {}",
                        o.done[*step]
                    ));
                }
                if *instant != "before-intent" && !o.intent[*step] {
                    bad.push(format!("killed at {instant}:{step} without its intent"));
                }
            }
            _ => bad.push(format!(
                "the fault upgrade/{instant}:{step} did not kill the upgrade ({exit}, open {open:?})"
            )),
        }
    }
    let reboot = rng.coin();
    let rollback = rng.coin();
    if reboot {
        r.simulate_reboot();
    }
    let pending = r.json(&["recover", "--dry-run"])["pending"].clone();
    // recover --dry-run must see what the test read from the journal.
    let agrees = match &open {
        None => pending.is_null(),
        Some(o) => {
            pending["tx"] == o.tx
                && pending["op"] == o.op.as_str()
                && pending["steps_done"] == o.done.iter().filter(|d| **d).count()
                && pending["committed"] == o.committed
        }
    };
    if !agrees {
        bad.push(format!(
            "recover --dry-run says pending {pending}, the journal holds {open:?}"
        ));
    }
    let mut args = vec!["recover"];
    if rollback {
        args.push("--rollback");
    }
    let out = r.run(&args);
    if !out.status.success() {
        bad.push(format!("{args:?}: {out}"));
        return Err(bad);
    }
    // Which way it had to go, from the journal the kill left. `upgrade` runs
    // up to three transactions: the upgrade, then the /etc merge and the
    // prune (each its own), which begin only after the upgrade committed.
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
    let forwards = match (&open, ended_upgrade) {
        // Past its commit point only forwards; rolling back only backwards;
        // otherwise as asked.
        (Some(o), _) if o.op == "upgrade" => o.committed || (!o.aborted && !rollback),
        (Some(_), _) => true,
        (None, Some(c)) => c,
        // Nothing in the journal: the kill fell before the upgrade began, or
        // after its summary was filed. Only the exit status and history say
        // which; check_invariants below holds the disk to that answer.
        (None, None) => status.success() || committed,
    };
    if forwards != committed {
        bad.push(format!("history says {tx}, want committed = {forwards}"));
    }
    if status.success() && !forwards {
        bad.push("the upgrade exited 0 but the result is the old template".into());
    }
    if let Some(o) = &open
        && !ours.iter().any(|t| t["tx"] == o.tx)
    {
        bad.push(format!("the recovered transaction is not in history: {h}"));
    }
    if reboot && open.is_none() {
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
                "kill {aim:?}, upgrade {exit}, reboot {reboot}, recover{}, journal {open:?}, pending {pending}, the upgrade in history {tx}",
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
            aim,
            exit,
            reboot,
            rollback,
            pending: open.is_some(),
            landed,
            steps_done,
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
    // cold first run does not stretch it), and the window's steps.
    let (mut r, mut jails) = fresh(&worlds, 1);
    let mut runs = Vec::new();
    let mut window = Vec::new();
    let mut lens = Vec::new();
    for v in 2..=4 {
        let w = worlds.get(v);
        let w = w.to_str().unwrap();
        window = window_of(&r.dry_run_plan(&["upgrade", "--from-dir", w]));
        let t = Instant::now();
        let out = r.run(&["upgrade", "--from-dir", w, "--json"]);
        runs.push(t.elapsed());
        assert!(out.status.success(), "{out}");
        let report: Value = serde_json::from_str(&out.stdout).unwrap();
        lens.push(window_len(&report, &window));
    }
    runs.sort();
    lens.sort();
    let d = runs[1];
    // The shortest of the three: load stretches a window, never shrinks it,
    // and a range longer than the window sends the kills past it.
    let window_len = lens[0];
    println!(
        "soak: one upgrade takes D = {:.1} ms (runs {runs:?}); its window is steps {}..={}, \
         {:.1} ms",
        d.as_secs_f64() * 1e3,
        window[0],
        window[window.len() - 1],
        window_len.as_secs_f64() * 1e3,
    );
    let mut kills = Kills {
        d,
        window_len,
        window: window.clone(),
        round: Vec::new(),
        faults: 0,
    };
    let mut cur = 4;

    let mut failures = Vec::new();
    let (mut killed_runs, mut pending_runs, mut reboots) = (0, 0, 0);
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    let mut landings: BTreeMap<String, usize> = BTreeMap::new();
    let mut window_hits: BTreeMap<usize, usize> = BTreeMap::new();
    let mut done_hist: BTreeMap<usize, usize> = BTreeMap::new();
    // In-window timed kills: aimed, and landed with the window under way.
    let mut timed_in_window = (0, 0);
    for k in 1..=iterations {
        if k % FRESH_EVERY == 0 {
            drop(r);
            cur += 1;
            (r, jails) = fresh(&worlds, cur);
        }
        let aim = kills.aim(k, &mut rng);
        let result = run_isolated(|| iterate(&r, &jails, &worlds, cur, aim, &mut rng));
        match result {
            Ok((now, it)) => {
                killed_runs += usize::from(it.exit == "killed");
                pending_runs += usize::from(it.pending);
                reboots += usize::from(it.reboot);
                *outcomes.entry(it.outcome).or_default() += 1;
                *landings.entry(it.landed.clone()).or_default() += 1;
                if let Some(n) = it.steps_done {
                    *done_hist.entry(n).or_default() += 1;
                }
                let in_window = |landed: &str| {
                    landed
                        .parse::<usize>()
                        .is_ok_and(|s| (window[0]..=window[window.len() - 1]).contains(&s))
                };
                let how = match it.aim {
                    Aim::After(delay) => format!("kill after {:7.1} ms", delay.as_secs_f64() * 1e3),
                    Aim::InWindow(delay) => {
                        timed_in_window.0 += 1;
                        timed_in_window.1 += usize::from(in_window(&it.landed));
                        format!("kill {:6.1} ms into the window", delay.as_secs_f64() * 1e3)
                    }
                    Aim::Fault { step, instant } => {
                        *window_hits.entry(step).or_default() += 1;
                        format!("fault {instant}:{step}")
                    }
                };
                println!(
                    "ok   {k:4}: {how}: {}, landed at {}{}; {}recover{} -> {} (world {now})",
                    it.exit,
                    it.landed,
                    if it.pending { "" } else { ", nothing pending" },
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
        "soak: {iterations} iterations in {:.1} s, seed {seed}: {killed_runs} upgrades killed, \
         {pending_runs} with a transaction pending ({} of {} timed window kills inside the window, \
         {} fault kills), {reboots} reboots, outcomes {outcomes:?}, \
         landed at (upgrade step, or transaction) {landings:?}, upgrade steps done when \
         killed {done_hist:?}, {} failed",
        started.elapsed().as_secs_f64(),
        timed_in_window.1,
        timed_in_window.0,
        kills.faults,
        failures.len()
    );
    assert_no_failures(&failures, iterations, &format!("iterations (seed {seed})"));
    assert!(
        pending_runs * 100 >= iterations * MIN_PENDING_PERCENT,
        "only {pending_runs} of {iterations} runs were killed with a transaction pending \
         (at least {MIN_PENDING_PERCENT} % must be): the kills missed (seed {seed})"
    );
    // Every window step is aimed at once per round of window kills.
    let rounds = kills.faults / window.len();
    for step in &window {
        let hits = window_hits.get(step).copied().unwrap_or(0);
        assert!(
            hits >= rounds,
            "window step {step} was hit {hits} times in {rounds} rounds (seed {seed})"
        );
    }
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
