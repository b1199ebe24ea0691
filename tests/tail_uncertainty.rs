//! A trimmed tail is uncertainty, not absence (issue 13, item 2): a bit
//! flipped in the last durable frame of a journal cannot be told from a torn
//! append, so recovery trims it, and the record it held may have been any
//! record the protocol allows next — a StepIntent whose step then acted
//! among them. For every frame of a real `upgrade` transaction (a template,
//! jails in every run-state, real mounts), the binary is killed
//! (`JAILTX_FAULT`) where that frame is the journal's last, one bit of the
//! frame is flipped, and `recover` (on one root) and `recover --rollback`
//! (on another) must each leave exactly the state before the upgrade or the
//! state after it: template, archives, manifests, jails' mounts and run
//! state, every jail's data, and the layout of `j/` entry for entry.
//!
//! A second test does the same, every frame at four bit positions, over
//! `run-plan` of a plan that uses every filesystem action (no jails: a few
//! seconds), comparing the whole tree.
//!
//! The kill points are derived from the journal of a reference run, never
//! listed by hand, and each case checks that its journal ends with the frame
//! it aims at. By default each frame is flipped at one bit and every frame
//! runs in both directions; `JAILTX_FULL_MATRIX=1` also flips each frame at
//! three more places (its tag, its checksum, the end of its payload), each
//! with a reboot (mounts and jails gone) before the recovery.
//! `JAILTX_MATRIX_ONLY=TEXT` keeps the cases whose label contains TEXT;
//! `JAILTX_MATRIX_JOBS=N` (3) runs N at a time.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Instant as Clock;

use jailtx::journal::frame::{self, JOURNAL_MAGIC};
use jailtx::journal::{Commit, End, Outcome, Record};
use serde_json::Value;
use support::matrix::{full_matrix, run_cases};
use support::plans::{check_representative_after, make_fixture, representative_plan};
use support::{
    Baseline, Expect, JailDef, Root, RunState, Snapshot, Worlds, assert_no_failures, assert_same,
    boot, check_invariants, check_second_recover, diff, fleet, in_private_ns, snapshot_live,
    step_names, world_version,
};

/// Jails in every run-state a recovery must restore: the fewest that still
/// give the downtime window a batch of several steps.
fn jails() -> Vec<JailDef> {
    fleet(&[
        ("ns", RunState::Running),
        ("www", RunState::Running),
        ("spare", RunState::Stopped),
        ("cold", RunState::Unmounted),
    ])
}

/// `j/` as `ls -lR` sees it, minus what is below the jails' own directories
/// (mount points of the template and of `js/NAME`, checked by
/// `check_invariants`): the template, the archives, any staging left over.
fn layout(r: &Root, jails: &[JailDef]) -> Snapshot {
    snapshot_live(&r.j(), |rel| {
        let mut c = rel.components();
        let top = c
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned());
        c.next().is_some() && jails.iter().any(|j| Some(&j.name) == top.as_ref())
    })
}

/// A root with the jails on world 1, ready for the upgrade to world 2.
struct Prepared {
    root: Root,
    jails: Vec<JailDef>,
    base: Baseline,
    before: Snapshot,
    args: Vec<String>,
    plan: Value,
    old: Expect,
    new: Expect,
}

fn prepare(worlds: &Worlds) -> Prepared {
    let jails = jails();
    let root = Root::with_jails(None, &worlds.get(1), &jails);
    let base = Baseline::take(&root);
    let before = layout(&root, &jails);
    let args = vec![
        "upgrade".to_owned(),
        "--from-dir".to_owned(),
        worlds.get(2).to_str().unwrap().to_owned(),
    ];
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let plan = root.dry_run_plan(&a);
    let archive = plan["notes"]["archive"].as_str().unwrap().to_owned();
    let new = Expect {
        version: world_version(2),
        archives: BTreeMap::from([(archive, world_version(1))]),
        prunable: BTreeMap::new(),
        mroot_ino: None,
    };
    let old = Expect {
        version: world_version(1),
        archives: base.archives.clone(),
        prunable: BTreeMap::new(),
        mroot_ino: Some(base.mroot_ino),
    };
    Prepared {
        root,
        jails,
        base,
        before,
        args,
        plan,
        old,
        new,
    }
}

/// The records of a journal file, with their frame offsets.
fn records(path: &Path) -> Vec<(u64, Record)> {
    let bytes = std::fs::read(path).unwrap();
    let scan = frame::scan(&bytes, JOURNAL_MAGIC).unwrap();
    assert_eq!(
        scan.torn_bytes,
        0,
        "{}: a torn tail after a kill",
        path.display()
    );
    scan.records
}

/// One frame of a transaction's journal to make the last and damage: the
/// record it holds and the fault that kills the run right after it is
/// written (the latest such instant: for an intent, after the step, or the
/// last step of its batch, has acted), or, for the frames no kill can end
/// a journal with, the records to append by hand (see [`frames_of`]).
#[derive(Debug, Clone)]
struct Frame {
    index: usize,
    record: Record,
    fault: String,
    /// Records appended by hand after the kill, this frame's last.
    append: Vec<Record>,
}

fn kind(r: &Record) -> String {
    match r {
        Record::Begin(_) => "begin".into(),
        Record::StepIntent(m) => format!("intent {}", m.step),
        Record::StepDone(m) => format!("done {}", m.step),
        Record::StepIntents(r) => format!("intents {}..={}", r.first, r.last),
        Record::StepDones(r) => format!("dones {}..={}", r.first, r.last),
        Record::Commit(_) => "commit".into(),
        Record::End(_) => "end".into(),
        other => format!("{other:?}"),
    }
}

/// The frames of a transaction of `op` (commit point `commit`, `n` steps)
/// from the journal of a run killed after its last step's done record
/// (every frame but the End), plus the End. `last` is that kill's fault.
fn frames_of(journal: &Path, op: &str, commit: u64, last: &str) -> Vec<Frame> {
    let mut out: Vec<Frame> = Vec::new();
    for (index, (_, record)) in records(journal).into_iter().enumerate() {
        let fault = match &record {
            Record::Begin(_) => format!("{op}/before-intent:0"),
            Record::StepIntent(m) => format!("{op}/after-effect:{}", m.step),
            Record::StepIntents(r) => format!("{op}/after-effect:{}", r.last),
            Record::StepDone(m) => format!("{op}/after-done:{}", m.step),
            Record::StepDones(r) => format!("{op}/after-done:{}", r.last),
            // Appended just before the commit step's first instant.
            Record::Commit(_) => format!("{op}/before-intent:{commit}"),
            other => panic!("unexpected record in a forward run's journal: {other:?}"),
        };
        out.push(Frame {
            index,
            record,
            fault,
            append: Vec::new(),
        });
    }
    // No kill can stop a run right after its End (the journal is reset next)
    // or, when the commit point is the plan's end, right after its Commit
    // (appended after the last step's done, with no instant between it and
    // the End): they are appended by hand to the journal of the last step's
    // `after-done`. The tree is the same, as neither record acts.
    let tx = out[0].record.tx();
    let mut extra = Vec::new();
    if !out.iter().any(|f| matches!(f.record, Record::Commit(_))) {
        extra.push(Record::Commit(Commit { tx }));
    }
    extra.push(Record::End(End {
        tx,
        ended_ms: 0,
        outcome: Outcome::Committed,
        reason: None,
        notes: BTreeMap::new(),
    }));
    for k in 0..extra.len() {
        out.push(Frame {
            index: out.len(),
            record: extra[k].clone(),
            fault: last.to_owned(),
            append: extra[..=k].to_vec(),
        });
    }
    out
}

/// The frames of the upgrade transaction, from a reference run.
fn frames(worlds: &Worlds) -> (Vec<Frame>, Vec<String>) {
    let p = prepare(worlds);
    let names = step_names(&p.plan);
    let last = format!("upgrade/after-done:{}", names.len() - 1);
    let args: Vec<&str> = p.args.iter().map(String::as_str).collect();
    p.root
        .run_env(&args, &[("JAILTX_FAULT", &last)])
        .assert_killed("the reference upgrade");
    let commit = p.plan["commit"].as_u64().unwrap();
    (
        frames_of(&p.root.journal(), "upgrade", commit, &last),
        names,
    )
}

/// Kills `args` at `frame`'s fault on root `r` and damages that frame, the
/// journal's last: checks the journal ends with the frames of `frames` up to
/// it (the End appended by hand), then flips one bit of it.
fn kill_and_flip(r: &Root, args: &[&str], frames: &[Frame], c: &Case) -> Result<(), Vec<String>> {
    r.run_env(args, &[("JAILTX_FAULT", &c.frame.fault)])
        .assert_killed(&c.frame.fault);
    let journal = r.journal();
    let mut recs = records(&journal);
    if !c.frame.append.is_empty() {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal)
            .unwrap();
        for r in &c.frame.append {
            std::io::Write::write_all(&mut f, &frame::encode(r).unwrap()).unwrap();
        }
        recs = records(&journal);
    }
    let got: Vec<String> = recs.iter().map(|(_, r)| kind(r)).collect();
    let want: Vec<String> = frames[..=c.frame.index]
        .iter()
        .map(|f| kind(&f.record))
        .collect();
    if got != want {
        return Err(vec![format!(
            "the kill at {} left the journal {got:?}, want {want:?}",
            c.frame.fault
        )]);
    }
    // One bit of the last frame: it fails its checksum and, being the last,
    // reads as a torn tail.
    let (offset, _) = *recs.last().unwrap();
    let mut bytes = std::fs::read(&journal).unwrap();
    let len = bytes.len() - offset as usize;
    let (at, bit) = c.flip.at(c.frame.index, len);
    bytes[offset as usize + at] ^= bit;
    std::fs::write(&journal, &bytes).unwrap();
    let scan = frame::scan(&bytes, JOURNAL_MAGIC).unwrap();
    assert_eq!(
        (scan.valid_len, scan.torn_bytes),
        (offset, len as u64),
        "the damaged frame must read as a torn tail"
    );
    Ok(())
}

/// Where the case must end: forwards (after-state), or back (before-state);
/// `None` when the transaction never began (its Begin was the frame lost).
fn ends_forwards(frames: &[Frame], c: &Case) -> Option<bool> {
    // A lost Begin loses the transaction: no step acted, nothing is pending
    // and history never hears of it. Past a durable Commit only forwards is
    // allowed; before it (the Commit itself lost included) a rollback goes
    // back.
    let committed = frames[..c.frame.index]
        .iter()
        .any(|f| matches!(f.record, Record::Commit(_)));
    (c.frame.index > 0).then_some(!c.rollback || committed)
}

/// The history entry of the last transaction of `op` has `outcome`
/// (`None`: there is none), and nothing is pending.
fn check_history(r: &Root, op: &str, outcome: Option<&str>) -> Option<String> {
    let h = r.history();
    let last = h["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|t| t["op"] == op)
        .cloned()
        .unwrap_or(Value::Null);
    let filed = match outcome {
        Some(o) => last["outcome"] == o,
        None => last.is_null(),
    };
    (!filed || !h["pending"].is_null()).then(|| format!("history: {h}, want {op} {outcome:?}"))
}

/// Where in a frame of `len` bytes a bit is flipped: never in the length
/// field (a shorter length leaves whole bytes after the frame: corruption,
/// refused, which is another story), so the frame reads as a torn tail.
#[derive(Debug, Clone, Copy)]
enum Flip {
    /// A payload bit chosen from the frame's index (the default).
    Spread,
    Tag,
    Checksum,
    PayloadEnd,
}

impl Flip {
    fn at(self, index: usize, len: usize) -> (usize, u8) {
        match self {
            Flip::Spread => (13 + (index * 7) % (len - 13), 1 << (index % 8)),
            Flip::Tag => (4, 0x40),
            Flip::Checksum => (5 + index % 8, 1),
            Flip::PayloadEnd => (len - 1, 0x80),
        }
    }
}

#[derive(Debug, Clone)]
struct Case {
    frame: Frame,
    flip: Flip,
    rollback: bool,
    reboot: bool,
}

impl Case {
    fn recover(&self) -> &'static [&'static str] {
        if self.rollback {
            &["recover", "--rollback"]
        } else {
            &["recover"]
        }
    }

    fn label(&self, names: &[String]) -> String {
        let step = match &self.frame.record {
            Record::StepIntent(m) | Record::StepDone(m) => format!(" ({})", names[m.step as usize]),
            Record::StepIntents(r) | Record::StepDones(r) => {
                format!(" ({}..{})", names[r.first as usize], names[r.last as usize])
            }
            _ => String::new(),
        };
        format!(
            "frame {} {}{step}, {:?} flip, {}{}",
            self.frame.index,
            kind(&self.frame.record),
            self.flip,
            if self.reboot { "reboot+" } else { "" },
            if self.rollback {
                "recover --rollback"
            } else {
                "recover"
            }
        )
    }
}

/// Runs one upgrade case; the violations found.
fn run_case(
    worlds: &Worlds,
    after: &Snapshot,
    frames: &[Frame],
    c: &Case,
) -> Result<(), Vec<String>> {
    let p = prepare(worlds);
    let r = &p.root;
    let args: Vec<&str> = p.args.iter().map(String::as_str).collect();
    kill_and_flip(r, &args, frames, c)?;
    if c.reboot {
        r.simulate_reboot();
    }
    let out = r.run(c.recover());
    if !out.status.success() {
        return Err(vec![format!("{}: {out}", c.recover().join(" "))]);
    }
    let forwards = ends_forwards(frames, c);
    if forwards.is_none() && c.reboot {
        // No transaction is pending, so recovery has nothing to settle: the
        // jails come back as after any reboot, by the host's boot.
        boot(r, &p.jails);
    }
    let (want, tree, outcome) = match forwards {
        Some(true) => (&p.new, after, Some("committed")),
        Some(false) => (&p.old, &p.before, Some("rolled-back")),
        None => (&p.old, &p.before, None),
    };
    let mut bad = check_invariants(r, &p.jails, &p.base, want);
    let d = diff(tree, &layout(r, &p.jails));
    if !d.is_empty() {
        let which = if forwards == Some(true) {
            "after"
        } else {
            "before"
        };
        bad.push(format!("j/ is not the {which} state: {d:?}"));
    }
    if std::fs::metadata(r.journal()).unwrap().len() != 16 {
        bad.push("the journal was not reset".into());
    }
    bad.extend(check_history(r, "upgrade", outcome));
    bad.extend(check_second_recover(r));
    if bad.is_empty() { Ok(()) } else { Err(bad) }
}

/// For every frame of a real upgrade transaction, made the last and
/// damaged: `recover` and `recover --rollback` each end in exactly the
/// before- or the after-state.
#[test]
fn bit_flip_in_the_last_frame_of_an_upgrade() {
    if !in_private_ns("bit_flip_in_the_last_frame_of_an_upgrade") {
        return;
    }
    let started = Clock::now();
    let worlds = Worlds::new();
    worlds.get(1);
    worlds.get(2);
    // The after-state's layout, from a clean upgrade.
    let after = {
        let p = prepare(&worlds);
        let args: Vec<&str> = p.args.iter().map(String::as_str).collect();
        p.root.ok(&args);
        layout(&p.root, &p.jails)
    };
    let (frames, names) = frames(&worlds);
    assert!(
        frames
            .iter()
            .any(|f| matches!(f.record, Record::StepIntents(_))),
        "the upgrade journals no batch: {:?}",
        frames.iter().map(|f| kind(&f.record)).collect::<Vec<_>>()
    );
    let flips: &[Flip] = if full_matrix() {
        &[Flip::Spread, Flip::Tag, Flip::Checksum, Flip::PayloadEnd]
    } else {
        &[Flip::Spread]
    };
    let mut cases = Vec::new();
    for f in &frames {
        for (k, flip) in flips.iter().enumerate() {
            for rollback in [false, true] {
                cases.push(Case {
                    frame: f.clone(),
                    flip: *flip,
                    rollback,
                    reboot: k > 0,
                });
            }
        }
    }
    run_all("upgrade", frames.len(), &names, cases, started, |c| {
        run_case(&worlds, &after, &frames, c)
    });
}

/// Runs `cases` through [`run_cases`] (filtered by `JAILTX_MATRIX_ONLY`), and
/// fails listing every case that broke something.
fn run_all(
    what: &str,
    frames: usize,
    names: &[String],
    cases: Vec<Case>,
    started: Clock,
    run: impl Fn(&Case) -> Result<(), Vec<String>> + Sync,
) {
    let labelled = cases.into_iter().map(|c| (c.label(names), c)).collect();
    let (ran, failures) = run_cases(labelled, run);
    println!(
        "{what}: {frames} frames, {} cases ({}), {} failed, {:.1} s",
        ran,
        if full_matrix() { "full" } else { "default" },
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(ran > 0, "no case ran");
    assert_no_failures(&failures, ran, "cases");
}

/// A root with the fixture of the representative plan (every filesystem
/// action), and that plan's file.
fn fixture_root() -> (Root, std::path::PathBuf) {
    let r = Root::fresh();
    make_fixture(&r.root);
    let file = r.plan_file("plan", &representative_plan(&r.root, None));
    (r, file)
}

/// The same over `run-plan` of a plan that uses every filesystem action
/// (MakeDir, WriteFile, Symlink, CopyTree, Rename and, after its commit
/// point, RemoveTree): no jails, so every frame and flip runs in a few
/// seconds. The whole tree must be exactly the before- or the after-state.
#[test]
fn bit_flip_in_the_last_frame_of_a_plan_of_every_filesystem_action() {
    let started = Clock::now();
    let (before, after) = {
        let (r, file) = fixture_root();
        let before = r.tree();
        r.ok(&["run-plan", file.to_str().unwrap()]);
        let after = r.tree();
        check_representative_after(&before, &after);
        (before, after)
    };
    let (r, file) = fixture_root();
    let args = ["run-plan", file.to_str().unwrap()];
    let plan = r.dry_run_plan(&args);
    let names = step_names(&plan);
    let op = plan["op"].as_str().unwrap().to_owned();
    let last = format!("{op}/after-done:{}", names.len() - 1);
    r.run_env(&args, &[("JAILTX_FAULT", &last)])
        .assert_killed("the reference run");
    let commit = plan["commit"].as_u64().unwrap();
    let frames = frames_of(&r.journal(), &op, commit, &last);
    drop(r);
    let mut cases = Vec::new();
    for f in &frames {
        for flip in [Flip::Spread, Flip::Tag, Flip::Checksum, Flip::PayloadEnd] {
            for rollback in [false, true] {
                cases.push(Case {
                    frame: f.clone(),
                    flip,
                    rollback,
                    reboot: false,
                });
            }
        }
    }
    run_all(
        "every filesystem action",
        frames.len(),
        &names,
        cases,
        started,
        |c| {
            let (r, file) = fixture_root();
            let args = ["run-plan", file.to_str().unwrap()];
            kill_and_flip(&r, &args, &frames, c)?;
            let out = r.run(c.recover());
            if !out.status.success() {
                return Err(vec![format!("{}: {out}", c.recover().join(" "))]);
            }
            let forwards = ends_forwards(&frames, c);
            let (tree, outcome) = match forwards {
                Some(true) => (&after, Some("committed")),
                Some(false) => (&before, Some("rolled-back")),
                None => (&before, None),
            };
            let mut bad: Vec<String> = diff(tree, &r.tree());
            if !bad.is_empty() {
                bad.insert(0, format!("not the {:?} state (true: after):", forwards));
            }
            bad.extend(check_history(&r, &op, outcome));
            let again = r.run(&["recover"]);
            if again.stdout.trim() != "nothing to recover" {
                bad.push(format!("second recover: {again}"));
            }
            if bad.is_empty() { Ok(()) } else { Err(bad) }
        },
    );
}

/// The trim is durable as soon as any command opens the journal for
/// writing, so the lost intent must be written again then, not only by
/// `recover`: a command that finds the transaction pending and stops
/// (exit 4) must not leave a later `recover --rollback` blind to the step.
#[test]
fn a_command_refused_for_the_pending_transaction_keeps_the_uncertainty() {
    let (before, _) = {
        let (r, _) = fixture_root();
        (r.tree(), ())
    };
    let (r, file) = fixture_root();
    let args = ["run-plan", file.to_str().unwrap()];
    let plan = r.dry_run_plan(&args);
    let names = step_names(&plan);
    let op = plan["op"].as_str().unwrap().to_owned();
    let last = format!("{op}/after-done:{}", names.len() - 1);
    r.run_env(&args, &[("JAILTX_FAULT", &last)])
        .assert_killed("the reference run");
    let commit = plan["commit"].as_u64().unwrap();
    let frames = frames_of(&r.journal(), &op, commit, &last);
    drop(r);
    // The last intent before the commit point: a rename that moved the old
    // tree aside, whose rollback must move it back.
    let frame = frames
        .iter()
        .rev()
        .find(|f| matches!(&f.record, Record::StepIntent(m) if (m.step as u64) < commit))
        .expect("an intent before the commit point")
        .clone();
    let c = Case {
        frame,
        flip: Flip::Spread,
        rollback: true,
        reboot: false,
    };
    let (r, file) = fixture_root();
    let args = ["run-plan", file.to_str().unwrap()];
    kill_and_flip(&r, &args, &frames, &c).unwrap();
    let refused = r.run(&args);
    assert_eq!(refused.code(), Some(4), "{refused}");
    let bytes = std::fs::read(r.journal()).unwrap();
    let scan = frame::scan(&bytes, JOURNAL_MAGIC).unwrap();
    // The refused command trimmed the tail (durably) and wrote the intent
    // that the damaged frame held again in its place.
    assert_eq!(scan.torn_bytes, 0, "the refused command trims the tail");
    assert_eq!(
        scan.records.last().map(|(_, r)| r),
        Some(&c.frame.record),
        "the lost intent is written again"
    );
    let out = r.run(c.recover());
    assert_eq!(out.code(), Some(0), "{out}");
    assert_same(&c.label(&names), &r.tree(), &before);
}
