//! Process-level crash tests (STYLE 12): the real binary is killed with
//! SIGKILL (`JAILTX_FAULT`) at every instant of every step of a plan that uses
//! every filesystem action, then `jailtx recover` must leave exactly the old
//! or the new tree (SPEC section 4), file the transaction once in `history`,
//! and a second `recover` must find nothing to do.
//!
//! The crash points are never listed by hand: they are derived from the plan
//! as the binary reads it (`run-plan --dry-run --json`), so a step added to
//! the plan is crashed at too.

mod support;

use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use jailtx::engine::Plan;
use serde_json::Value;
use support::plans::{
    Fail, check_representative_after, make_fixture, par_for_each, representative_plan,
};
use support::{
    COMPENSATION, FORWARD, Out, Root, Snapshot, assert_same, history_entries, recover_args,
    rolls_back, step_names,
};

fn plan(r: &Root, fail: Option<Fail>) -> Plan {
    representative_plan(&r.root, fail)
}

/// A fresh root with the fixture, its tree snapshot, and the plan file.
fn setup(fail: Option<Fail>) -> (Root, Snapshot, std::path::PathBuf) {
    let r = Root::fresh();
    make_fixture(&r.root);
    let before = r.tree();
    let file = r.plan_file("plan", &plan(&r, fail));
    (r, before, file)
}

/// BEFORE and AFTER of the representative plan, from clean runs on fresh
/// roots (snapshots are relative, so they compare across roots).
fn references() -> &'static (Snapshot, Snapshot) {
    static REFS: OnceLock<(Snapshot, Snapshot)> = OnceLock::new();
    REFS.get_or_init(|| {
        let (r, before, file) = setup(None);
        let out = r.run(&["run-plan", file.to_str().unwrap()]);
        assert_eq!(out.code(), Some(0), "clean run: {out}");
        let after = r.tree();
        check_representative_after(&before, &after);
        (before, after)
    })
}

/// The plan as the binary reads it: step names and the commit point.
struct Derived {
    names: Vec<String>,
    commit: usize,
}

fn derive(fail: Option<Fail>) -> Derived {
    let probe = Root::bare();
    let file = probe.plan_file("probe", &plan(&probe, fail));
    let v = probe.dry_run_plan(&["run-plan", file.to_str().expect("utf-8 path")]);
    let names = step_names(&v);
    let kinds: std::collections::BTreeSet<String> = v["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .flat_map(|s| s["action"].as_object().expect("action").keys().cloned())
        .collect();
    for k in [
        "make-dir",
        "write-file",
        "symlink",
        "copy-tree",
        "rename",
        "remove-tree",
    ] {
        assert!(kinds.contains(k), "the plan must use {k}: {kinds:?}");
    }
    let commit = v["commit"].as_u64().expect("commit") as usize;
    assert!(
        commit < names.len(),
        "some work must follow the commit point"
    );
    Derived { names, commit }
}

/// The pending transaction's number, from `history --json` after a crash.
fn pending_tx(r: &Root) -> u64 {
    let h = r.history();
    h["pending"]["tx"]
        .as_u64()
        .unwrap_or_else(|| panic!("a transaction must be pending after the crash: {h}"))
}

/// A fresh root (see [`setup`]) whose `run-plan` was killed at `fault`:
/// the root, its tree before the run, and the pending transaction.
fn killed_run(fail: Option<Fail>, fault: &str, what: &str) -> (Root, Snapshot, u64) {
    let (r, before, file) = setup(fail);
    r.run_env(
        &["run-plan", file.to_str().unwrap()],
        &[("JAILTX_FAULT", fault)],
    )
    .assert_killed(what);
    let tx = pending_tx(&r);
    (r, before, tx)
}

/// Runs `args` (a `recover`) killed at `fault`.
fn killed_recover(r: &Root, args: &[&str], fault: &str, what: &str) {
    r.run_env(args, &[("JAILTX_FAULT", fault)])
        .assert_killed(&format!("{what} ({})", args.join(" ")));
}

/// Runs `args` (a `recover`), which must exit 0.
fn recover(r: &Root, args: &[&str], what: &str) -> Out {
    let rec = r.run(args);
    assert_eq!(rec.code(), Some(0), "{what}: {rec}");
    rec
}

/// After a finished recovery: the tree is `expected`, the journal is back to
/// its header, `history` lists `tx` once with `outcome`, and another
/// `recover` prints `nothing to recover` and changes nothing.
fn check_finished(r: &Root, what: &str, tx: u64, expected: &Snapshot, outcome: &str) {
    assert_same(what, &r.tree(), expected);
    assert_eq!(
        std::fs::metadata(r.journal()).unwrap().len(),
        16,
        "{what}: journal not reset"
    );
    let h = r.history();
    assert_eq!(h["pending"], Value::Null, "{what}: {h}");
    let entries = history_entries(&h, tx);
    assert_eq!(entries.len(), 1, "{what}: tx {tx} filed once: {h}");
    assert_eq!(entries[0]["outcome"], outcome, "{what}: {h}");
    assert_eq!(entries[0]["op"], "crash-test", "{what}: {h}");

    let all = r.everything();
    let again = r.run(&["recover"]);
    assert_eq!(again.code(), Some(0), "{what}: second recover: {again}");
    assert_eq!(again.stdout.trim(), "nothing to recover", "{what}: {again}");
    assert_same(&format!("{what}: second recover"), &r.everything(), &all);
}

/// Crashes a fresh run at `instant` of every step, for both recovery modes.
fn forward_matrix(instant: &str) {
    let (before, after) = references();
    let d = derive(None);
    let points: Vec<(usize, bool)> = (0..d.names.len())
        .flat_map(|i| [(i, false), (i, true)])
        .collect();
    let runs = AtomicUsize::new(0);
    par_for_each(&points, |&(i, rollback)| {
        let what = format!(
            "{instant}:{i} ({}), then recover{}",
            d.names[i],
            if rollback { " --rollback" } else { "" }
        );
        let (r, b, tx) = killed_run(None, &format!("{instant}:{i}"), &what);
        assert_same(&format!("{what}: fixture"), &b, before);
        let rec = recover(&r, recover_args(rollback), &what);
        let (expected, outcome) = if rolls_back(i, d.commit, rollback) {
            (before, "rolled-back")
        } else {
            (after, "committed")
        };
        assert!(rec.stdout.contains(outcome), "{what}: {rec}");
        check_finished(&r, &what, tx, expected, outcome);
        runs.fetch_add(1, Ordering::Relaxed);
    });
    let runs = runs.into_inner();
    assert_eq!(runs, 2 * d.names.len());
    eprintln!(
        "{instant}: {} steps x 2 recovery modes = {runs} crash runs",
        d.names.len()
    );
}

#[test]
fn crash_before_intent_of_every_step() {
    forward_matrix(FORWARD[0]);
}

#[test]
fn crash_after_intent_of_every_step() {
    forward_matrix(FORWARD[1]);
}

#[test]
fn crash_after_effect_of_every_step() {
    forward_matrix(FORWARD[2]);
}

#[test]
fn crash_after_done_of_every_step() {
    forward_matrix(FORWARD[3]);
}

/// A plan whose step before the commit point fails is rolled back: exit 1,
/// the tree as before, one error line naming the step.
fn failing_plan_rolls_back(fail: Fail) {
    let (before, _) = references();
    let d = derive(Some(fail));
    let (r, b, file) = setup(Some(fail));
    assert_same("fixture", &b, before);
    let out = r.run(&["run-plan", file.to_str().unwrap()]);
    // Logs (WARN lines) may precede it; the error itself is one line.
    let error = out.error_line(1);
    let fail_at = d.commit - 1;
    assert!(
        error.contains(&format!("step {fail_at} (fail:")) && error.contains("rolled back"),
        "{out}"
    );
    assert!(
        out.stderr
            .lines()
            .all(|l| l.starts_with("jailtx: ") || l.contains(" WARN ")),
        "only the error and log lines on stderr: {out}"
    );
    assert_same("after the failed run", &r.tree(), before);
    let h = r.history();
    let e = history_entries(&h, 2);
    assert_eq!(e.len(), 1, "{h}");
    assert_eq!(e[0]["outcome"], "rolled-back", "{h}");

    // Quietly: stderr is then the error line alone.
    let out = r.run(&["-q", "run-plan", file.to_str().unwrap()]);
    let line = out.one_line_error(1, "quiet failing run");
    assert!(line.contains("fail"), "{line}");
    assert_same("after the second failed run", &r.tree(), before);
}

#[test]
fn failing_plan_rolls_back_write_into_missing_dir() {
    failing_plan_rolls_back(Fail::WriteIntoMissingDir);
}

#[test]
fn failing_plan_rolls_back_rename_of_missing_source() {
    failing_plan_rolls_back(Fail::RenameMissingSource);
}

/// Crashes the rollback of the failing plan at every compensation instant of
/// every compensated step; a plain `recover` (no --rollback) must finish the
/// rollback it finds begun.
fn compensation_matrix(fail: Fail) {
    let (before, _) = references();
    let d = derive(Some(fail));
    // Every step before the commit point got an intent (the last one is the
    // failing step), so every one of them is compensated.
    let compensated = 0..d.commit;
    let points: Vec<(usize, &str)> = compensated
        .clone()
        .flat_map(|i| COMPENSATION.map(|instant| (i, instant)))
        .collect();
    let runs = AtomicUsize::new(0);
    par_for_each(&points, |&(i, instant)| {
        let what = format!("{instant}:{i} ({}), then recover", d.names[i]);
        let (r, _, tx) = killed_run(Some(fail), &format!("{instant}:{i}"), &what);
        let rec = recover(&r, &["recover"], &what);
        assert!(rec.stdout.contains("rolled-back"), "{what}: {rec}");
        check_finished(&r, &what, tx, before, "rolled-back");
        runs.fetch_add(1, Ordering::Relaxed);
    });
    let runs = runs.into_inner();
    assert_eq!(runs, COMPENSATION.len() * compensated.len());
    eprintln!(
        "compensation ({fail:?}): {} steps x {} instants = {runs} crash runs",
        compensated.len(),
        COMPENSATION.len()
    );
}

#[test]
fn crash_during_rollback_write_into_missing_dir() {
    compensation_matrix(Fail::WriteIntoMissingDir);
}

#[test]
fn crash_during_rollback_rename_of_missing_source() {
    compensation_matrix(Fail::RenameMissingSource);
}

/// A crash, then a crash of the `recover` itself at a later point (named by
/// step name, to exercise that form too), then `recover` finishes: the tree
/// is the new one.
#[test]
fn double_crash_during_resume() {
    let (_, after) = references();
    let d = derive(None);
    let n = d.names.len();
    let steps: Vec<usize> = (0..n).collect();
    par_for_each(&steps, |&i| {
        let first = format!("after-intent:{i}");
        let second = if i + 1 < n {
            format!("after-done:{}", d.names[i + 1])
        } else {
            format!("after-effect:{}", d.names[i])
        };
        let what = format!("{first}, recover killed at {second}, recover");
        let (r, _, tx) = killed_run(None, &first, &what);
        killed_recover(&r, &["recover"], &second, &what);
        assert_eq!(pending_tx(&r), tx, "{what}");
        recover(&r, &["recover"], &what);
        check_finished(&r, &what, tx, after, "committed");
    });
}

/// A crash before the commit point, then `recover --rollback` killed while it
/// undoes, then a plain `recover`: a begun rollback goes on to the old tree.
#[test]
fn double_crash_during_rollback() {
    let (before, _) = references();
    let d = derive(None);
    let steps: Vec<usize> = (0..d.commit).collect();
    par_for_each(&steps, |&i| {
        let first = format!("after-done:{i}");
        // The first undo (step i, before its comp intent, the Abort durable)
        // or the last one (step 0, undone but not recorded).
        let second = if i % 2 == 0 {
            "comp-after-effect:0".to_owned()
        } else {
            format!("comp-before-intent:{i}")
        };
        let what = format!("{first}, recover --rollback killed at {second}, recover");
        let (r, _, tx) = killed_run(None, &first, &what);
        killed_recover(&r, &["recover", "--rollback"], &second, &what);
        recover(&r, &["recover"], &what);
        check_finished(&r, &what, tx, before, "rolled-back");
    });
}

/// The failing plan killed while compensating, its recovery killed while
/// compensating too, then recovered: the old tree.
#[test]
fn double_crash_in_a_failed_transaction() {
    let (before, _) = references();
    let fail = Fail::WriteIntoMissingDir;
    let d = derive(Some(fail));
    let k = d.commit - 1;
    let first = format!("comp-after-effect:{k}");
    let second = "comp-after-intent:0";
    let what = format!("{first}, recover killed at {second}, recover");
    let (r, _, tx) = killed_run(Some(fail), &first, &what);
    killed_recover(&r, &["recover"], second, &what);
    recover(&r, &["recover"], &what);
    check_finished(&r, &what, tx, before, "rolled-back");
}
