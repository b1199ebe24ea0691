//! Every failure path of the CLI so far (SPEC sections 2 and 4): the exit
//! code, a one-line message on stderr naming the problem, and no change to
//! the root (state dir included) unless the spec says otherwise. With
//! `--json`, stdout is exactly one JSON document with `error` and `exit_code`.

mod support;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use jailtx::engine::Plan;
use jailtx::journal::frame::{self, HEADER_LEN};
use jailtx::journal::{HISTORY_MAGIC, JOURNAL_MAGIC, Record, StepMark};
use serde_json::Value;
use support::plans::PlanBuilder;
use support::{Root, Snapshot, assert_same, history_entries, run_bin, snapshot};

/// Everything under the root, byte for byte, lock file contents included:
/// for errors caught before the lock is taken.
fn strict(r: &Root) -> Snapshot {
    snapshot(&r.root, &[])
}

/// A small plan: a directory, a file in it and a symlink beside it.
fn small_plan(r: &Root, dir: &str) -> Plan {
    PlanBuilder::new("small", &format!("make {dir}"))
        .mkdir("mkdir", r.path(dir), 0o755)
        .write("write", r.path(&format!("{dir}/f")), "data\n", 0o644)
        .symlink("link", dir, r.path(&format!("{dir}.link")))
        .build()
}

/// A root whose transaction 2 (`small`, making `a`) was killed after the
/// intent of its first step: the journal holds exactly two records, Begin
/// and StepIntent(0).
fn pending_root() -> Root {
    let r = Root::fresh();
    let p = r.plan_file("a", &small_plan(&r, "a"));
    r.run_env(
        &["run-plan", p.to_str().unwrap()],
        &[("JAILTX_FAULT", "after-intent:0")],
    )
    .assert_killed("pending_root");
    let scan = frame::scan(&std::fs::read(r.journal()).unwrap(), JOURNAL_MAGIC).unwrap();
    assert_eq!(scan.records.len(), 2, "{:?}", scan.records);
    assert_eq!(scan.torn_bytes, 0);
    r
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn bad_config_exits_2_and_changes_nothing() {
    let cases = [
        ("bsae = \"/x\"\n", "unknown field `bsae`"),
        (
            "base = \"relative/dir\"\n",
            "base relative/dir must be an absolute path",
        ),
        (
            "state_dir = \"var/db\"\n",
            "state_dir var/db must be an absolute path",
        ),
        ("backend = \"solaris\"\n", "\"solaris\""),
        ("base = [\n", "jailtx.toml"),
        ("carry_over = [\"../x\"]\n", "carry_over"),
    ];
    for (toml, names) in cases {
        let r = Root::fresh();
        let cfg = r.path("jailtx.toml");
        std::fs::write(&cfg, toml).unwrap();
        let plan = r.plan_file("a", &small_plan(&r, "a"));
        let before = strict(&r);
        for args in [
            vec!["init"],
            vec!["run-plan", s(&plan)],
            vec!["recover"],
            vec!["history"],
        ] {
            let what = format!("config {toml:?}, {args:?}");
            let out = r.run(&args);
            let line = out.one_line_error(2, &what);
            assert!(line.contains(names), "{what}: {line}");
            assert_same(&what, &strict(&r), &before);
        }
        // --config FILE names the file the same way.
        let out = r.run(&["--config", s(&cfg), "init"]);
        assert!(out.one_line_error(2, toml).contains(names), "{out}");
        assert_same(toml, &strict(&r), &before);
    }
}

#[test]
fn missing_config_file_exits_2() {
    let r = Root::fresh();
    let before = strict(&r);
    let missing = r.scratch.join("no-such.toml");
    let out = r.run(&["--config", s(&missing), "init"]);
    let line = out.one_line_error(2, "missing --config");
    assert!(line.contains(s(&missing)), "{line}");
    assert_same("missing --config", &strict(&r), &before);
}

#[test]
fn unknown_backend_exits_2_and_changes_nothing() {
    let r = Root::fresh();
    let plan = r.plan_file("a", &small_plan(&r, "a"));
    let before = strict(&r);
    for args in [
        vec!["--backend", "solaris", "init"],
        vec!["--backend", "solaris", "run-plan", s(&plan)],
        vec!["--backend", "", "recover"],
    ] {
        let out = r.run(&args);
        let line = out.one_line_error(2, &format!("{args:?}"));
        assert!(line.contains("--backend"), "{line}");
        assert_same(&format!("{args:?}"), &strict(&r), &before);
    }
}

#[test]
fn bad_fault_value_exits_2_and_changes_nothing() {
    let r = Root::fresh();
    let plan = r.plan_file("a", &small_plan(&r, "a"));
    let before = strict(&r);
    for value in ["bogus", "later:3", "after-effect:", "after-effect", ":3"] {
        let out = r.run_env(&["run-plan", s(&plan)], &[("JAILTX_FAULT", value)]);
        let line = out.one_line_error(2, value);
        assert!(line.contains("JAILTX_FAULT"), "{value}: {line}");
        assert_same(value, &strict(&r), &before);
    }
}

#[test]
fn commands_before_init_exit_2_saying_to_run_init() {
    let r = Root::bare();
    let plan = r.plan_file("a", &small_plan(&r, "a"));
    let before = strict(&r);
    for args in [
        vec!["history"],
        vec!["history", "--json"],
        vec!["recover"],
        vec!["recover", "--rollback"],
        vec!["recover", "--dry-run"],
        vec!["run-plan", s(&plan)],
        vec!["--auto-recover", "run-plan", s(&plan)],
    ] {
        let what = format!("{args:?} before init");
        let out = r.run(&args);
        if args.contains(&"--json") {
            assert_eq!(out.code(), Some(2), "{what}: {out}");
            continue; // checked in json_errors_are_one_json_document
        }
        let line = out.one_line_error(2, &what);
        assert!(line.contains("run `jailtx init` first"), "{what}: {line}");
        assert!(
            line.contains(".jailtx"),
            "{what}: names the state dir: {line}"
        );
        assert_same(&what, &strict(&r), &before);
    }
    // A root that does not exist is not created by a failing command.
    let gone = r.root.join("not-there");
    let out = run_bin(&["--root", s(&gone), "recover"], &[]);
    out.one_line_error(2, "missing root");
    assert!(!gone.exists());
}

#[test]
fn pending_transaction_exits_4_naming_it() {
    let r = pending_root();
    let other = r.plan_file("b", &small_plan(&r, "b"));
    let before = r.everything();
    for args in [vec!["run-plan", s(&other)], vec!["init"]] {
        let what = format!("{args:?} with tx 2 pending");
        let out = r.run(&args);
        let line = out.one_line_error(4, &what);
        for part in ["transaction 2", "small", "make a", "jailtx recover"] {
            assert!(line.contains(part), "{what}: must name {part:?}: {line}");
        }
        assert_same(&what, &r.everything(), &before);
    }
}

/// SPEC: bad input is exit 2 and changes nothing, also while a transaction
/// is pending: the arguments are checked before the pending check (exit 4)
/// and before `--auto-recover` would recover it.
#[test]
fn bad_arguments_exit_2_before_the_pending_check() {
    let r = pending_root();
    let before = r.everything();
    let cases: [(&[&str], &str); 10] = [
        (
            &[
                "jail",
                "create",
                "bad name",
                "--hostname",
                "h.example",
                "--ip",
                "192.0.2.9",
            ],
            "bad name",
        ),
        (
            &[
                "jail",
                "create",
                "ok",
                "--hostname",
                "bad_host",
                "--ip",
                "192.0.2.9",
            ],
            "bad_host",
        ),
        (
            &[
                "jail",
                "create",
                "ok",
                "--hostname",
                "h.example",
                "--ip",
                "999.1.1.1",
            ],
            "999.1.1.1",
        ),
        (&["jail", "destroy", "../x"], "../x"),
        (&["start", "mroot"], "mroot"),
        (&["stop", "ns", "bad/name"], "bad/name"),
        (&["etc-merge", "skel", "a b"], "a b"),
        (&["rollback", "--to", "yesterday"], "yesterday"),
        (
            &["upgrade", "--from-dir", "/nonexistent/world"],
            "/nonexistent/world",
        ),
        (
            &["template", "build", "--from-tar", "/nonexistent.txz"],
            "/nonexistent.txz",
        ),
    ];
    for (args, named) in cases {
        for auto in [false, true] {
            let mut all = if auto { vec!["--auto-recover"] } else { vec![] };
            all.extend_from_slice(args);
            let what = format!("{all:?} with tx 2 pending");
            let out = r.run(&all);
            let line = out.one_line_error(2, &what);
            assert!(line.contains(named), "{what}: must name {named:?}: {line}");
            assert_same(&what, &r.everything(), &before);
        }
    }
    // Good arguments (the forms each check accepts) still meet the pending
    // transaction.
    for args in [
        &["stop", "ns"][..],
        &["etc-merge", "skel", "ns"],
        &["rollback", "--to", "20260101"],
        &["rollback", "--to", "mroot.20260101.2"],
        &[
            "jail",
            "create",
            "ns",
            "--hostname",
            "ns.example",
            "--ip",
            "2001:db8::53",
        ],
    ] {
        let what = format!("{args:?} with tx 2 pending");
        r.run(args).one_line_error(4, &what);
    }
    assert_same("good arguments", &r.everything(), &before);
}

#[test]
fn auto_recover_finishes_the_pending_transaction_then_proceeds() {
    let r = pending_root();
    let other = r.plan_file("b", &small_plan(&r, "b"));
    let out = r.run(&["--auto-recover", "run-plan", s(&other)]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(
        out.stderr.contains("recovered: transaction 2"),
        "says it recovered tx 2: {out}"
    );
    assert!(out.stdout.contains("transaction 3"), "{out}");
    for p in ["a/f", "a.link", "b/f", "b.link"] {
        assert!(
            std::fs::symlink_metadata(r.path(p)).is_ok(),
            "{p} missing: {out}"
        );
    }
    let h = r.history();
    assert_eq!(h["pending"], Value::Null);
    for tx in [2, 3] {
        let e = history_entries(&h, tx);
        assert_eq!(e.len(), 1, "{h}");
        assert_eq!(e[0]["outcome"], "committed", "{h}");
    }
}

/// Takes the state dir's lock as another jailtx run would and writes `pid`.
fn hold_lock(r: &Root, pid: u32) -> File {
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(r.state().join("lock"))
        .unwrap();
    f.try_lock().expect("lock free");
    f.set_len(0).unwrap();
    write!(f, "{pid}").unwrap();
    f
}

#[test]
fn lock_held_exits_5_naming_the_pid() {
    let r = Root::fresh();
    let plan = r.plan_file("a", &small_plan(&r, "a"));
    let pid = std::process::id();
    let lock = hold_lock(&r, pid);
    let before = strict(&r);
    for args in [
        vec!["init"],
        vec!["run-plan", s(&plan)],
        vec!["recover"],
        vec!["recover", "--rollback"],
        vec!["--auto-recover", "run-plan", s(&plan)],
    ] {
        let what = format!("{args:?} with the lock held");
        let out = r.run(&args);
        let line = out.one_line_error(5, &what);
        assert!(line.contains(&format!("pid {pid}")), "{what}: {line}");
        assert!(line.contains(s(&r.state().join("lock"))), "{what}: {line}");
        // The loser does not touch the lock file, pid included.
        assert_same(&what, &strict(&r), &before);
    }
    // Readers take no lock.
    assert_eq!(r.run(&["history"]).code(), Some(0));
    drop(lock);
    let out = r.run(&["run-plan", s(&plan)]);
    assert_eq!(out.code(), Some(0), "lock released: {out}");
}

/// The commands that must refuse a corrupt journal, and what each must say.
fn refuse_corrupt_journal(r: &Root, what: &str, offset: u64) {
    let other = r.plan_file("b", &small_plan(r, "b"));
    let journal = std::fs::read(r.journal()).unwrap();
    let before = r.everything();
    for args in [
        vec!["recover"],
        vec!["recover", "--rollback"],
        vec!["recover", "--dry-run"],
        vec!["run-plan", s(&other)],
        vec!["--auto-recover", "run-plan", s(&other)],
        vec!["init"],
        vec!["history"],
    ] {
        let what = format!("{what}, {args:?}");
        let out = r.run(&args);
        let line = out.one_line_error(2, &what);
        assert!(
            line.contains(s(&r.journal())),
            "{what}: names the file: {line}"
        );
        assert!(
            line.contains(&format!("offset {offset}")),
            "{what}: names the offset: {line}"
        );
        assert_eq!(
            std::fs::read(r.journal()).unwrap(),
            journal,
            "{what}: journal rewritten"
        );
        assert_same(&what, &r.everything(), &before);
    }
}

#[test]
fn corrupt_first_record_is_refused_naming_file_and_offset() {
    let probe = pending_root();
    let bytes = std::fs::read(probe.journal()).unwrap();
    let first = HEADER_LEN as usize;
    let plen = u32::from_le_bytes(bytes[first..first + 4].try_into().unwrap()) as usize;
    let end = first + frame::FRAME_HEADER_LEN + plen;
    assert!(end < bytes.len(), "the first record is not the last");
    // The tag, the checksum, the payload's first and last bytes.
    for at in [first + 4, first + 5, first + 13, end - 1] {
        let r = pending_root();
        let mut b = std::fs::read(r.journal()).unwrap();
        b[at] ^= 0x01;
        std::fs::write(r.journal(), &b).unwrap();
        refuse_corrupt_journal(&r, &format!("byte {at} flipped"), HEADER_LEN);
    }
}

/// A flipped bit in the first record's length makes its declared extent
/// reach past EOF, which the torn-tail rule alone would take for an
/// unfinished append (and the first writer would trim that record and all
/// after it). The whole frames after it prove otherwise (section 7.2 of
/// `journal-format/README.md`): refused, the file left as it is. (Once a
/// listed gap, since fixed.)
#[test]
fn corrupt_length_field_of_the_first_record_is_refused() {
    let r = pending_root();
    let mut b = std::fs::read(r.journal()).unwrap();
    let at = HEADER_LEN as usize + 1; // bit 8 of the length: +256 bytes
    b[at] ^= 0x01;
    std::fs::write(r.journal(), &b).unwrap();
    refuse_corrupt_journal(&r, "length field flipped", HEADER_LEN);
}

#[test]
fn corrupt_history_is_refused() {
    let r = Root::fresh();
    let a = r.plan_file("a", &small_plan(&r, "a"));
    assert_eq!(r.run(&["run-plan", s(&a)]).code(), Some(0));
    let b = r.plan_file("b", &small_plan(&r, "b"));
    let mut bytes = std::fs::read(r.history_file()).unwrap();
    let scan = frame::scan(&bytes, HISTORY_MAGIC).unwrap();
    assert_eq!(scan.records.len(), 2, "init's and a's summaries");
    bytes[HEADER_LEN as usize + frame::FRAME_HEADER_LEN] ^= 0x40; // init's summary
    std::fs::write(r.history_file(), &bytes).unwrap();
    let before = r.everything();
    for args in [
        vec!["history"],
        vec!["history", "--json"],
        vec!["run-plan", s(&b)],
        vec!["recover"],
    ] {
        let what = format!("corrupt history, {args:?}");
        let out = r.run(&args);
        let line = out.one_line_error(2, &what);
        assert!(line.contains(s(&r.history_file())), "{what}: {line}");
        assert!(line.contains("offset 16"), "{what}: {line}");
        assert_same(&what, &r.everything(), &before);
    }
}

/// The bytes a torn append could leave: half of a frame, or zeros.
fn torn_tails(tx: u64) -> Vec<(&'static str, Vec<u8>)> {
    let frame = frame::encode(&Record::StepDone(StepMark { tx, step: 0 })).unwrap();
    vec![
        ("half a frame", frame[..frame.len() / 2].to_vec()),
        (
            "a frame but its last byte",
            frame[..frame.len() - 1].to_vec(),
        ),
        ("zeros", vec![0u8; 40]),
    ]
}

#[test]
fn torn_journal_tail_is_trimmed_and_recovered() {
    for (kind, tail) in torn_tails(2) {
        let r = pending_root();
        let orig = std::fs::read(r.journal()).unwrap();
        let mut torn = orig.clone();
        torn.extend(&tail);
        std::fs::write(r.journal(), &torn).unwrap();

        // A reader shows the pending transaction and leaves the bytes alone.
        let h = r.history();
        assert_eq!(h["pending"]["tx"], 2, "{kind}: {h}");
        assert_eq!(std::fs::read(r.journal()).unwrap(), torn, "{kind}");

        // A writer trims the torn bytes before it appends: kill recover
        // after its first append, and the journal is the old records plus
        // exactly that one.
        r.run_env(&["recover"], &[("JAILTX_FAULT", "after-done:0")])
            .assert_killed(kind);
        let mut want = orig.clone();
        want.extend(frame::encode(&Record::StepDone(StepMark { tx: 2, step: 0 })).unwrap());
        assert_eq!(
            std::fs::read(r.journal()).unwrap(),
            want,
            "{kind}: torn bytes trimmed before the append"
        );

        let out = r.run(&["recover"]);
        assert_eq!(out.code(), Some(0), "{kind}: {out}");
        assert!(out.stdout.contains("committed"), "{kind}: {out}");
        for p in ["a/f", "a.link"] {
            assert!(std::fs::symlink_metadata(r.path(p)).is_ok(), "{kind}: {p}");
        }
        assert_eq!(std::fs::read(r.journal()).unwrap().len() as u64, HEADER_LEN);
        let e = history_entries(&r.history(), 2);
        assert_eq!(e.len(), 1, "{kind}");
        assert_eq!(e[0]["outcome"], "committed", "{kind}");
    }
}

/// SPEC section 2: `--dry-run` changes nothing. `recover --dry-run` opens
/// the journal for writing, which trims a torn tail (and would file an ended
/// transaction's summary and reset the journal).
#[test]
fn recover_dry_run_changes_nothing() {
    let r = pending_root();
    let mut torn = std::fs::read(r.journal()).unwrap();
    torn.extend([0u8; 5]);
    std::fs::write(r.journal(), &torn).unwrap();
    let before = r.everything();
    let out = r.run(&["recover", "--dry-run"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("transaction 2"), "{out}");
    assert_same("recover --dry-run", &r.everything(), &before);
}

#[test]
fn torn_history_tail_is_trimmed() {
    let r = Root::fresh();
    let summary = frame::scan(&std::fs::read(r.history_file()).unwrap(), HISTORY_MAGIC)
        .unwrap()
        .records
        .pop()
        .unwrap()
        .1;
    let whole = frame::encode(&summary).unwrap();
    let orig = std::fs::read(r.history_file()).unwrap();
    let mut torn = orig.clone();
    torn.extend(&whole[..whole.len() / 2]);
    std::fs::write(r.history_file(), &torn).unwrap();
    // Readers ignore it and change nothing.
    let h = r.history();
    assert_eq!(history_entries(&h, 1).len(), 1, "{h}");
    assert_eq!(std::fs::read(r.history_file()).unwrap(), torn);
    // The next writer trims it, then files its own summary after init's.
    let a = r.plan_file("a", &small_plan(&r, "a"));
    assert_eq!(r.run(&["run-plan", s(&a)]).code(), Some(0));
    let bytes = std::fs::read(r.history_file()).unwrap();
    assert!(bytes.starts_with(&orig));
    let scan = frame::scan(&bytes, HISTORY_MAGIC).unwrap();
    assert_eq!(scan.torn_bytes, 0);
    let txs: Vec<u64> = scan.records.iter().map(|(_, r)| r.tx()).collect();
    assert_eq!(txs, [1, 2]);
}

/// A bad plan file: exit 2, one line naming the problem, nothing changed.
fn refuse_plan(r: &Root, file: &Path, names: &[&str]) {
    let before = r.everything();
    for args in [
        vec!["run-plan", s(file)],
        vec!["--dry-run", "run-plan", s(file)],
    ] {
        let what = format!("{args:?}");
        let out = r.run(&args);
        let line = out.one_line_error(2, &what);
        for n in names {
            assert!(line.contains(n), "{what}: must name {n:?}: {line}");
        }
        assert_same(&what, &r.everything(), &before);
    }
}

#[test]
fn remove_tree_before_the_commit_point_is_refused() {
    let r = Root::fresh();
    let plan = PlanBuilder::new("bad", "removal before commit")
        .mkdir("mk", r.path("a"), 0o755)
        .remove_tree("rm-js", r.path("js"))
        .build();
    assert_eq!(plan.commit, 2, "both steps before the commit point");
    let file = r.plan_file("bad", &plan);
    refuse_plan(
        &r,
        &file,
        &["step 1", "rm-js", "cannot be undone", "commit point"],
    );
}

#[test]
fn other_bad_plans_are_refused() {
    let r = Root::fresh();
    let mut out_of_range = small_plan(&r, "a");
    out_of_range.commit = 9;
    let f = r.plan_file("range", &out_of_range);
    refuse_plan(&r, &f, &["commit point 9", "3 steps"]);

    let mut unnamed = small_plan(&r, "a");
    unnamed.steps[1].name.clear();
    let f = r.plan_file("unnamed", &unnamed);
    refuse_plan(&r, &f, &["step 1", "empty name"]);

    let f = r.raw_plan_file("syntax", "{\"op\": ");
    refuse_plan(&r, &f, &[s(&f)]);

    let f = r.raw_plan_file(
        "action",
        r#"{"op":"x","summary":"y","commit":1,"notes":{},"steps":[{"name":"n","action":{"explode":{}}}]}"#,
    );
    refuse_plan(&r, &f, &[s(&f), "explode"]);

    let f = r.scratch.join("no-such-plan.json");
    refuse_plan(&r, &f, &[s(&f)]);
}

/// SPEC: exit 2 means nothing changed. With `--auto-recover`, `run-plan`
/// resumes the pending transaction before it validates the plan, then exits
/// 2 with the pending transaction finished behind the operator's back.
#[test]
fn bad_plan_with_auto_recover_leaves_the_pending_transaction_alone() {
    let r = pending_root();
    let plan = PlanBuilder::new("bad", "removal before commit")
        .remove_tree("rm-js", r.path("js"))
        .commit_here()
        .build();
    let mut plan = plan;
    plan.commit = 1;
    let file = r.plan_file("bad", &plan);
    let before = r.everything();
    let out = r.run(&["--auto-recover", "run-plan", s(&file)]);
    out.one_line_error(2, "bad plan with --auto-recover");
    assert_same("bad plan with --auto-recover", &r.everything(), &before);
}

#[test]
fn failing_plan_exits_1_and_rolls_back() {
    let r = Root::fresh();
    let plan = PlanBuilder::new("fails", "second step fails")
        .mkdir("mk", r.path("a"), 0o755)
        .write("bad-write", r.path("missing/f"), "x\n", 0o644)
        .build();
    let file = r.plan_file("fails", &plan);
    let before = r.tree();
    let out = r.run(&["-q", "run-plan", s(&file)]);
    let line = out.one_line_error(1, "failing plan");
    for part in ["step 1", "bad-write", "rolled back", "nothing changed"] {
        assert!(line.contains(part), "{line}");
    }
    assert_same("failing plan", &r.tree(), &before);
    let e = history_entries(&r.history(), 2);
    assert_eq!(e[0]["outcome"], "rolled-back");
}

/// A rollback that cannot finish (someone put a file into a directory the
/// transaction made) stops with exit 6 and says what to do; after the fix,
/// `recover` finishes it.
#[test]
fn stuck_rollback_exits_6_then_recover_finishes_after_the_fix() {
    let r = Root::fresh();
    let plan = PlanBuilder::new("two", "two dirs")
        .mkdir("mk-a", r.path("a"), 0o755)
        .mkdir("mk-b", r.path("b"), 0o755)
        .build();
    let file = r.plan_file("two", &plan);
    let before = r.tree();
    r.run_env(&["run-plan", s(&file)], &[("JAILTX_FAULT", "after-done:1")])
        .assert_killed("two");
    std::fs::write(r.path("a/intruder"), b"not jailtx's").unwrap();
    let out = r.run(&["recover", "--rollback"]);
    let line = out.one_line_error(6, "stuck rollback");
    for part in ["undoing step 0", "mk-a", s(&r.path("a")), "jailtx recover"] {
        assert!(line.contains(part), "must name {part:?}: {line}");
    }
    // Still pending, and it can only go backwards now.
    let out = r.run(&["run-plan", s(&file)]);
    out.one_line_error(4, "pending after the stuck rollback");
    std::fs::remove_file(r.path("a/intruder")).unwrap();
    let out = r.run(&["recover"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.contains("rolled-back"), "{out}");
    assert_same("after the fix", &r.tree(), &before);
}

/// Runs `args` with `--json` and checks stdout is exactly one JSON document
/// `{"error": <the stderr message>, "exit_code": <the exit code>}`.
fn json_error(r: &Root, args: &[&str], env: &[(&str, &str)], code: i32) {
    let mut full = vec!["--json"];
    full.extend(args);
    let what = format!("{full:?}");
    let out = r.run_env(&full, env);
    assert_eq!(out.code(), Some(code), "{what}: {out}");
    let docs: Vec<Value> = serde_json::Deserializer::from_str(&out.stdout)
        .into_iter::<Value>()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{what}: stdout is not JSON: {e}: {out}"));
    assert_eq!(docs.len(), 1, "{what}: one document: {out}");
    let doc = docs[0].as_object().expect("an object");
    let keys: Vec<&str> = doc.keys().map(String::as_str).collect();
    assert_eq!(keys, ["error", "exit_code"], "{what}: {out}");
    assert_eq!(doc["exit_code"], code, "{what}: {out}");
    let msg = doc["error"].as_str().expect("error string");
    assert!(!msg.is_empty() && !msg.contains('\n'), "{what}: {out}");
    let line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("jailtx: "))
        .unwrap_or_else(|| panic!("{what}: no error line: {out}"));
    assert_eq!(line.strip_prefix("jailtx: "), Some(msg), "{what}");
}

#[test]
fn json_errors_are_one_json_document() {
    let bare = Root::bare();
    json_error(&bare, &["history"], &[], 2);
    json_error(&bare, &["recover"], &[], 2);

    let r = Root::fresh();
    let a = r.plan_file("a", &small_plan(&r, "a"));
    json_error(&r, &["--backend", "solaris", "init"], &[], 2);
    json_error(&r, &["run-plan", s(&a)], &[("JAILTX_FAULT", "bogus")], 2);
    let bad = r.raw_plan_file("bad", "[]");
    json_error(&r, &["run-plan", s(&bad)], &[], 2);
    let fails = r.plan_file(
        "fails",
        &PlanBuilder::new("fails", "fails")
            .write("w", r.path("missing/f"), "x", 0o644)
            .build(),
    );
    json_error(&r, &["run-plan", s(&fails)], &[], 1);
    {
        let _lock = hold_lock(&r, 4242);
        json_error(&r, &["run-plan", s(&a)], &[], 5);
    }

    let p = pending_root();
    let b = p.plan_file("b", &small_plan(&p, "b"));
    json_error(&p, &["run-plan", s(&b)], &[], 4);
    let mut bytes = std::fs::read(p.journal()).unwrap();
    bytes[HEADER_LEN as usize + 20] ^= 1;
    std::fs::write(p.journal(), &bytes).unwrap();
    json_error(&p, &["recover"], &[], 2);
    json_error(&p, &["history"], &[], 2);
}

#[test]
fn usage_errors_exit_2_in_one_line() {
    let r = Root::fresh();
    let before = strict(&r);
    for (args, names) in [
        (vec!["frobnicate"], "frobnicate"),
        (vec!["init", "--no-such-flag"], "--no-such-flag"),
        (vec!["run-plan"], "<FILE>"),
        (vec!["-v", "-q", "history"], "--quiet"),
    ] {
        let what = format!("{args:?}");
        let out = r.run(&args);
        let line = out.one_line_error(2, &what);
        assert!(line.contains(names), "{what}: {line}");
        assert_same(&what, &strict(&r), &before);
    }
}

/// SPEC section 2: with `--json`, one JSON document on stdout, errors
/// included; a usage error caught by the argument parser prints none.
#[test]
fn json_usage_error_is_one_json_document() {
    let r = Root::fresh();
    json_error(&r, &["frobnicate"], &[], 2);
    json_error(&r, &["init", "--no-such-flag"], &[], 2);
}

/// A path the journal cannot record (not UTF-8: FreeBSD allows any bytes in a
/// name) is bad input: exit 2, one line, nothing changed (the lock's pid
/// aside) — not a journal failure with exit 6 at the Begin.
#[test]
fn a_path_that_is_not_utf8_is_refused_as_bad_input() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let r = Root::fresh();
    let world = r.scratch.join(OsStr::from_bytes(b"world-\xff"));
    std::fs::create_dir_all(world.join("bin")).unwrap();
    std::fs::write(world.join("bin/sh"), b"#!/bin/sh\n").unwrap();
    let before = r.everything();
    for args in [
        vec![
            OsStr::new("template"),
            OsStr::new("build"),
            OsStr::new("--from-dir"),
            world.as_os_str(),
        ],
        vec![
            OsStr::new("--dry-run"),
            OsStr::new("template"),
            OsStr::new("build"),
            OsStr::new("--from-dir"),
            world.as_os_str(),
        ],
    ] {
        let mut full = vec![OsStr::new("--root"), r.root.as_os_str()];
        full.extend(args);
        let out = run_bin(&full, &[]);
        let line = out.one_line_error(2, "a non-UTF-8 --from-dir");
        assert!(line.contains("not valid UTF-8"), "{line}");
        assert_same("a non-UTF-8 --from-dir", &r.everything(), &before);
    }
}

/// The records of a journal file, in order.
fn journal_records(r: &Root) -> Vec<Record> {
    let bytes = std::fs::read(r.journal()).unwrap();
    let scan = frame::scan(&bytes, JOURNAL_MAGIC).unwrap();
    assert_eq!(scan.torn_bytes, 0);
    scan.records.into_iter().map(|(_, r)| r).collect()
}

/// Issue 2 ("an fsync error is fatal, never retried as if the data were
/// safe"): a step whose fsync fails used to be rolled back, its undo
/// fsyncing the same directory again and calling the result safe, and the
/// run exited 1 "nothing changed". Now the run stops at once with exit 6:
/// nothing more is journaled (no Abort, no compensation), the transaction
/// stays pending, and `recover` on a healthy disk finishes it either way.
/// `comp-fsync-eio` does the same to an undo: the rollback stops with its
/// CompIntent and no CompDone.
#[test]
fn fsync_failure_in_a_step_is_fatal_and_recoverable() {
    let after = {
        let r = Root::fresh();
        let a = r.plan_file("a", &small_plan(&r, "a"));
        r.ok(&["run-plan", s(&a)]);
        r.tree()
    };
    let failed_root = |what: &str| -> (Root, Snapshot) {
        let r = Root::fresh();
        let a = r.plan_file("a", &small_plan(&r, "a"));
        let before = r.tree();
        let out = r.run_env(&["run-plan", s(&a)], &[("JAILTX_FAULT", "fsync-eio:write")]);
        let line = out.one_line_error(6, what);
        let tmp = r.path("a/.f.jailtx-tmp");
        for want in [s(&tmp), "lost writes", "jailtx recover", "step 1 (write)"] {
            assert!(line.contains(want), "{what}: {want:?} missing: {line}");
        }
        let records = journal_records(&r);
        assert!(
            matches!(
                records.as_slice(),
                [
                    Record::Begin(_),
                    Record::StepIntent(StepMark { step: 0, .. }),
                    Record::StepDone(StepMark { step: 0, .. }),
                    Record::StepIntent(StepMark { step: 1, .. }),
                ]
            ),
            "{what}: the intent of the failing step, nothing after it: {records:?}"
        );
        (r, before)
    };

    let (r, _) = failed_root("resume");
    r.ok(&["recover"]);
    assert_same("resumed after the fsync failure", &r.tree(), &after);
    r.ok(&["recover"]);
    assert_same("a second recover changes nothing", &r.tree(), &after);

    let (r, before) = failed_root("rollback");
    r.ok(&["recover", "--rollback"]);
    assert_same("rolled back after the fsync failure", &r.tree(), &before);

    // The undo's fsync fails: stop as well, with the rollback half way.
    let (r, before) = failed_root("undo");
    let out = r.run_env(
        &["recover", "--rollback"],
        &[("JAILTX_FAULT", "comp-fsync-eio:write")],
    );
    let line = out.one_line_error(6, "undo");
    assert!(line.contains("undoing step 1 (write)"), "{line}");
    assert!(line.contains("lost writes"), "{line}");
    let records = journal_records(&r);
    assert!(
        matches!(
            &records[4..],
            [
                Record::Abort(_),
                Record::CompIntent(StepMark { step: 1, .. })
            ]
        ),
        "the rollback stops after its CompIntent: {records:?}"
    );
    r.ok(&["recover"]);
    assert_same(
        "the rollback finished after the undo's fsync failure",
        &r.tree(),
        &before,
    );
    let history = r.history();
    let entries = history_entries(&history, 2);
    assert_eq!(entries.len(), 1, "{history}");
    assert_eq!(entries[0]["outcome"], "rolled-back", "{history}");
}

/// `recover --rollback --dry-run` says what `recover --rollback` does: an
/// in-flight transaction is rolled back, not resumed (it printed "resume").
#[test]
fn recover_dry_run_follows_rollback_flag() {
    let r = pending_root();
    let before = r.everything();
    let will = |args: &[&str]| r.json(args)["pending"]["will"].clone();
    assert_eq!(will(&["recover", "--dry-run"]), "resume");
    assert_eq!(will(&["recover", "--rollback", "--dry-run"]), "roll back");
    let text = r.ok(&["recover", "--rollback", "--dry-run"]);
    assert!(text.contains("will roll back"), "{text}");
    assert_same("recover --rollback --dry-run", &r.everything(), &before);
    // And the real run does what the preview said.
    let out = r.json(&["recover", "--rollback"]);
    assert_eq!(out["recovered"]["outcome"], "rolled-back", "{out}");
}

/// A reader that goes away (`jailtx --json history | head -c 30`) ends the
/// output, not the process with a panic; a full disk behind `>` is exit 6.
#[test]
fn closed_stdout_is_not_a_panic() {
    use std::io::Read;
    use std::process::Stdio;
    let r = Root::fresh();
    for i in 0..40 {
        let p = r.plan_file(&format!("p{i}"), &small_plan(&r, &format!("d{i}")));
        r.ok(&["run-plan", s(&p)]);
    }
    for args in [&["--json", "history"][..], &["history"][..]] {
        let mut c = r.command(args);
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Read a little, then close the pipe before the writer is done.
        let mut head = [0u8; 30];
        child.stdout.take().unwrap().read_exact(&mut head).unwrap();
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
    let full = r
        .command(&["history"])
        .stdout(File::create("/dev/full").unwrap())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&full.stderr);
    assert_eq!(full.status.code(), Some(6), "{stderr}");
    assert!(
        stderr.contains("cannot write the output to stdout"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

/// A `JAILTX_FAULT` naming no step of the transaction would never fire, and a
/// crash test using it would pass without crashing: exit 2, nothing done.
#[test]
fn fault_naming_no_step_is_refused() {
    let r = Root::fresh();
    let p = r.plan_file("a", &small_plan(&r, "a"));
    let before = r.everything();
    for fault in ["after-effect:mk", "after-effect:3", "before-intent:writ"] {
        let out = r.run_env(&["run-plan", s(&p)], &[("JAILTX_FAULT", fault)]);
        let line = out.one_line_error(2, fault);
        assert!(
            line.contains(fault) && line.contains("names no step"),
            "{line}"
        );
        assert!(line.contains("mkdir, write, link"), "{line}");
        assert_same(fault, &r.everything(), &before);
    }
    // The pending transaction's steps count for `recover` too.
    let r = pending_root();
    let before = r.everything();
    let out = r.run_env(&["recover"], &[("JAILTX_FAULT", "comp-after-done:mount-s")]);
    out.one_line_error(2, "recover with a fault naming no step");
    assert_same("recover", &r.everything(), &before);
    // A fault for another op leaves this one alone.
    let out = r.run_env(
        &["recover"],
        &[("JAILTX_FAULT", "upgrade/after-effect:nope")],
    );
    assert_eq!(out.code(), Some(0), "{out}");
}

/// `status` on a host an interrupted transaction left half-switched says so
/// (the jails' rows alone look like a quiet stopped host), and changes nothing.
#[test]
fn status_names_the_interrupted_transaction() {
    let r = pending_root();
    let before = r.everything();
    let st = r.json(&["status"]);
    assert_eq!(st["pending"]["tx"], 2, "{st}");
    assert_eq!(st["pending"]["op"], "small", "{st}");
    assert_eq!(st["pending"]["steps_done"], 0, "{st}");
    let text = r.ok(&["status"]);
    let line = text.lines().last().unwrap_or("");
    assert!(
        line.contains("transaction 2 (small: make a) is interrupted after 0 of 3 steps")
            && line.contains("jailtx recover --rollback"),
        "{text}"
    );
    assert_same("status", &r.everything(), &before);
    r.ok(&["recover"]);
    assert!(r.json(&["status"])["pending"].is_null());
    assert!(!r.ok(&["status"]).contains("interrupted"));
}

/// A bit flip in the journal's last frame may have taken a step's intent
/// with it: `recover --dry-run` says that step may have run (and changes
/// nothing, the damaged frame included).
#[test]
fn recover_dry_run_names_a_step_whose_intent_may_be_lost() {
    let r = Root::fresh();
    let p = r.plan_file("a", &small_plan(&r, "a"));
    r.run_env(&["run-plan", s(&p)], &[("JAILTX_FAULT", "after-intent:1")])
        .assert_killed("after-intent:1");
    let mut j = std::fs::read(r.journal()).unwrap();
    let last = j.len() - 1;
    j[last] ^= 0x10;
    std::fs::write(r.journal(), &j).unwrap();
    let before = r.everything();
    let d = r.json(&["recover", "--dry-run"]);
    assert_eq!(d["pending"]["maybe_ran"], "write", "{d}");
    let text = r.ok(&["recover", "--rollback", "--dry-run"]);
    assert!(text.contains("step write may have run"), "{text}");
    assert_same("recover --dry-run", &r.everything(), &before);
    // Undamaged: nothing may have run unrecorded.
    let r = pending_root();
    assert!(r.json(&["recover", "--dry-run"])["pending"]["maybe_ran"].is_null());
}
