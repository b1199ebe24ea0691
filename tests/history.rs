//! History rotation (journal-format section 1), driven through the binary
//! with the test-only `JAILTX_HISTORY_ROTATE_BYTES` so that a rotation comes
//! after every transaction instead of after a megabyte: `history` lists
//! every file, oldest first, no summary is filed twice (also when the crash
//! that left it in the journal is followed by a rotation), and transaction
//! numbers go on from `history.1` when `history` is new.

mod support;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use jailtx::engine::summary_of;
use jailtx::journal::frame::{self, HEADER_LEN};
use jailtx::journal::state::fold;
use jailtx::journal::{Commit, End, HISTORY_MAGIC, JOURNAL_MAGIC, Outcome, Record};
use support::Root;
use support::plans::PlanBuilder;

/// Rotate whenever `history` holds a summary: one summary per file.
const ROTATE: (&str, &str) = ("JAILTX_HISTORY_ROTATE_BYTES", "17");

/// Runs a one-step plan making directory `name` under the rotation threshold.
fn run(r: &Root, name: &str) {
    let plan = PlanBuilder::new("small", &format!("make {name}"))
        .mkdir("mkdir", r.path(name), 0o755)
        .build();
    let p = r.plan_file(name, &plan);
    let out = r.run_env(&["run-plan", p.to_str().unwrap()], &[ROTATE]);
    assert_eq!(out.code(), Some(0), "{name}: {out}");
}

/// The transaction numbers of the summaries in one history file.
fn txs_in(path: &Path) -> Vec<u64> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let scan = frame::scan(&bytes, HISTORY_MAGIC).unwrap();
    scan.records.iter().map(|(_, r)| r.tx()).collect()
}

/// `history --json`'s transaction numbers, in the order listed.
fn listed(r: &Root) -> Vec<u64> {
    let h = r.history();
    assert!(h["pending"].is_null(), "{h}");
    h["transactions"]
        .as_array()
        .expect("transactions")
        .iter()
        .map(|t| t["tx"].as_u64().expect("tx"))
        .collect()
}

fn rotated(r: &Root, n: u32) -> std::path::PathBuf {
    r.state().join(format!("history.{n}"))
}

#[test]
fn rotation_keeps_eight_files_lists_them_in_order_and_numbers_on() {
    let r = Root::fresh(); // init: transaction 1, filed in `history`
    for i in 2..=12 {
        run(&r, &format!("d{i}"));
        // Each open rotated the previous summary away: `history` holds only
        // this transaction, numbered on from the one in `history.1`.
        assert_eq!(txs_in(&r.history_file()), [i], "after tx {i}");
        assert_eq!(txs_in(&rotated(&r, 1)), [i - 1], "after tx {i}");
    }
    // Eight rotated files, newest first; transactions 1 to 3 rotated out.
    for n in 1..=8 {
        assert_eq!(txs_in(&rotated(&r, n)), [12 - u64::from(n)], "history.{n}");
    }
    assert!(!rotated(&r, 9).exists());
    assert_eq!(listed(&r), (4..=12).collect::<Vec<_>>());
    let h = r.history();
    let last = &h["transactions"][8];
    assert_eq!(last["summary"], "make d12", "{h}");
    assert_eq!(last["outcome"], "committed", "{h}");
}

/// A summary filed just before a crash that kept the journal from being
/// reset: the next open rotates that summary into `history.1` first, and
/// must still see the transaction as filed (neither file it again nor
/// reuse its number).
#[test]
fn a_summary_rotated_before_the_journal_reset_is_not_filed_twice() {
    let r = Root::fresh();
    run(&r, "d2");
    // Transaction 3, killed after its only step's done record...
    let plan = PlanBuilder::new("small", "make d3")
        .mkdir("mkdir", r.path("d3"), 0o755)
        .build();
    let p = r.plan_file("d3", &plan);
    r.run_env(
        &["run-plan", p.to_str().unwrap()],
        &[ROTATE, ("JAILTX_FAULT", "after-done:0")],
    )
    .assert_killed("tx 3");
    // ...then finished by hand up to the crash: Commit and End in the
    // journal, its summary in `history`, the journal not yet reset.
    let journal = std::fs::read(r.journal()).unwrap();
    let records = frame::scan(&journal, JOURNAL_MAGIC).unwrap().records;
    let mut tx = fold(&r.journal(), &records).unwrap().pop().unwrap();
    assert_eq!(tx.tx(), 3);
    let end = End {
        tx: 3,
        ended_ms: tx.begin.started_ms + 1,
        outcome: Outcome::Committed,
        reason: None,
        notes: BTreeMap::new(),
    };
    tx.end = Some(end.clone());
    let append = |path: &Path, records: &[Record]| {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        for rec in records {
            f.write_all(&frame::encode(rec).unwrap()).unwrap();
        }
    };
    append(
        &r.journal(),
        &[Record::Commit(Commit { tx: 3 }), Record::End(end)],
    );
    append(&r.history_file(), &[Record::Summary(summary_of(&tx))]);
    assert_eq!(txs_in(&r.history_file()), [3]);
    assert_eq!(listed(&r), [1, 2, 3], "before the next open");

    run(&r, "d4");
    assert_eq!(txs_in(&rotated(&r, 1)), [3], "rotated with its summary");
    assert_eq!(txs_in(&r.history_file()), [4], "3 not filed again; 4 is 4");
    assert_eq!(
        std::fs::metadata(r.journal()).unwrap().len(),
        HEADER_LEN,
        "journal reset"
    );
    assert_eq!(listed(&r), [1, 2, 3, 4]);
}

#[test]
fn rotation_threshold_at_or_below_the_header_is_refused() {
    let r = Root::fresh();
    let plan = PlanBuilder::new("small", "make d")
        .mkdir("mkdir", r.path("d"), 0o755)
        .build();
    let p = r.plan_file("d", &plan);
    for bad in ["16", "0", "lots"] {
        let out = r.run_env(
            &["run-plan", p.to_str().unwrap()],
            &[("JAILTX_HISTORY_ROTATE_BYTES", bad)],
        );
        let line = out.one_line_error(2, bad);
        assert!(line.contains("JAILTX_HISTORY_ROTATE_BYTES"), "{line}");
    }
    assert!(!r.path("d").exists());
}
