//! Checks the journal test vectors in `journal-format/vectors/` (decode, JSON, canonical re-encode); `JAILTX_BLESS=1` rewrites them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jailtx::engine::{Action, Plan, Step, summary_of};
use jailtx::journal::frame::{self, HEADER_LEN, ScanError};
use jailtx::journal::state::{TxStatus, fold};
use jailtx::journal::{
    Abort, Begin, Commit, End, HISTORY_MAGIC, JOURNAL_MAGIC, Outcome, Record, StepMark, Summary,
};
use serde_json::{Value, json};

/// 2026-01-01T00:00:00Z in milliseconds: every timestamp in the vectors is fixed.
const T0: i64 = 1_767_225_600_000;

/// A file image being built, with each record's frame offset.
struct Image {
    magic: [u8; 8],
    bytes: Vec<u8>,
    records: Vec<(u64, Record)>,
}

impl Image {
    fn new(magic: [u8; 8]) -> Self {
        Image {
            magic,
            bytes: frame::header(magic).to_vec(),
            records: Vec::new(),
        }
    }

    fn push(mut self, record: Record) -> Self {
        let offset = self.bytes.len() as u64;
        self.bytes.extend(frame::encode(&record).unwrap());
        self.records.push((offset, record));
        self
    }

    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// The expected decoding of this image plus `torn` extra bytes.
    fn expect(&self, torn: u64) -> Value {
        json!({
            "records": self
                .records
                .iter()
                .map(|(offset, record)| json!({"offset": offset, "record": record}))
                .collect::<Vec<_>>(),
            "valid_len": self.len(),
            "torn_bytes": torn,
        })
    }
}

/// One vector: a file image and the decoding a reader must produce.
struct Vector {
    name: &'static str,
    magic: [u8; 8],
    bytes: Vec<u8>,
    expected: Value,
}

fn error_json(e: &ScanError) -> Value {
    let mut v = json!({ "error": e.to_string() });
    match e {
        ScanError::Corrupt { offset, .. } | ScanError::Undecodable { offset, .. } => {
            v["offset"] = json!(offset);
        }
        _ => {}
    }
    v
}

/// What `frame::scan` makes of `bytes`, in the vectors' JSON shape.
fn scan_json(bytes: &[u8], magic: [u8; 8]) -> Value {
    match frame::scan(bytes, magic) {
        Ok(s) => json!({
            "records": s
                .records
                .iter()
                .map(|(offset, record)| json!({"offset": offset, "record": record}))
                .collect::<Vec<_>>(),
            "valid_len": s.valid_len,
            "torn_bytes": s.torn_bytes,
        }),
        Err(e) => error_json(&e),
    }
}

fn mark(tx: u64, step: u32) -> StepMark {
    StepMark { tx, step }
}

fn step(name: &str, action: Action) -> Step {
    Step {
        name: name.into(),
        action,
    }
}

fn notes(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A plan with every `Action` variant once, in variant order, and cleanup
/// after the commit point.
fn upgrade_plan() -> Plan {
    Plan {
        op: "upgrade".into(),
        summary: "new template from /tmp/world".into(),
        steps: vec![
            step(
                "mkdir-s",
                Action::MakeDir {
                    path: "/home/j/mroot2/s".into(),
                    mode: 0o755,
                },
            ),
            step(
                "archive-mroot",
                Action::Rename {
                    from: "/home/j/mroot".into(),
                    to: "/home/j/mroot.20260101".into(),
                },
            ),
            step(
                "write-fstab",
                Action::WriteFile {
                    path: "/var/db/jailtx/jails/www.fstab".into(),
                    contents: "/home/j/mroot /home/j/www nullfs ro 0 0\n".into(),
                    mode: 0o644,
                },
            ),
            step(
                "link-etc",
                Action::Symlink {
                    target: "s/etc".into(),
                    link: "/home/j/mroot2/etc".into(),
                },
            ),
            step(
                "copy-skel",
                Action::CopyTree {
                    from: "/home/j/skel".into(),
                    to: "/home/js/www".into(),
                },
            ),
            step(
                "prune-old",
                Action::RemoveTree {
                    path: "/home/j/mroot.20251201".into(),
                },
            ),
        ],
        commit: 5,
        notes: notes(&[("from", "mroot.20251201"), ("to", "mroot")]),
    }
}

fn create_plan() -> Plan {
    Plan {
        op: "jail-create".into(),
        summary: "jail www (10.0.0.2)".into(),
        steps: vec![
            step(
                "mkdir-root",
                Action::MakeDir {
                    path: "/home/j/www".into(),
                    mode: 0o755,
                },
            ),
            step(
                "copy-skel",
                Action::CopyTree {
                    from: "/home/j/skel".into(),
                    to: "/home/js/www".into(),
                },
            ),
            step(
                "mkdir-s",
                Action::MakeDir {
                    path: "/home/j/www/s".into(),
                    mode: 0o755,
                },
            ),
        ],
        commit: 3,
        notes: BTreeMap::new(),
    }
}

fn committed() -> Image {
    let tx = 7;
    let mut img = Image::new(JOURNAL_MAGIC).push(Record::Begin(Begin {
        tx,
        started_ms: T0,
        plan: upgrade_plan(),
    }));
    for i in 0..5 {
        img = img
            .push(Record::StepIntent(mark(tx, i)))
            .push(Record::StepDone(mark(tx, i)));
    }
    img.push(Record::Commit(Commit { tx }))
        .push(Record::StepIntent(mark(tx, 5)))
        .push(Record::StepDone(mark(tx, 5)))
        .push(Record::End(End {
            tx,
            ended_ms: T0 + 61_500,
            outcome: Outcome::Committed,
            reason: None,
            notes: notes(&[("downtime_ms", "4200")]),
        }))
}

const FAILURE: &str = "mkdir /home/j/www/s: File exists (os error 17)";

fn rolled_back() -> Image {
    let tx = 8;
    let mut img = Image::new(JOURNAL_MAGIC).push(Record::Begin(Begin {
        tx,
        started_ms: T0 + 120_000,
        plan: create_plan(),
    }));
    for i in 0..2 {
        img = img
            .push(Record::StepIntent(mark(tx, i)))
            .push(Record::StepDone(mark(tx, i)));
    }
    img = img
        .push(Record::StepIntent(mark(tx, 2)))
        .push(Record::Abort(Abort {
            tx,
            step: Some(2),
            reason: FAILURE.into(),
        }));
    for i in (0..3).rev() {
        img = img
            .push(Record::CompIntent(mark(tx, i)))
            .push(Record::CompDone(mark(tx, i)));
    }
    img.push(Record::End(End {
        tx,
        ended_ms: T0 + 121_250,
        outcome: Outcome::RolledBack,
        reason: Some(FAILURE.into()),
        notes: BTreeMap::new(),
    }))
}

/// Transaction 9 stopped after the intent of step 1: `recover` resumes at step 1.
fn interrupted() -> Image {
    let tx = 9;
    Image::new(JOURNAL_MAGIC)
        .push(Record::Begin(Begin {
            tx,
            started_ms: T0 + 180_000,
            plan: create_plan(),
        }))
        .push(Record::StepIntent(mark(tx, 0)))
        .push(Record::StepDone(mark(tx, 0)))
        .push(Record::StepIntent(mark(tx, 1)))
}

fn summaries() -> Image {
    Image::new(HISTORY_MAGIC)
        .push(Record::Summary(Summary {
            tx: 7,
            op: "upgrade".into(),
            summary: "new template from /tmp/world".into(),
            started_ms: T0,
            ended_ms: T0 + 61_500,
            outcome: Outcome::Committed,
            steps: 6,
            reason: None,
            notes: notes(&[
                ("downtime_ms", "4200"),
                ("from", "mroot.20251201"),
                ("to", "mroot"),
            ]),
        }))
        .push(Record::Summary(Summary {
            tx: 8,
            op: "jail-create".into(),
            summary: "jail www (10.0.0.2)".into(),
            started_ms: T0 + 120_000,
            ended_ms: T0 + 121_250,
            outcome: Outcome::RolledBack,
            steps: 3,
            reason: Some(FAILURE.into()),
            notes: BTreeMap::new(),
        }))
}

fn vectors() -> Vec<Vector> {
    let mut out = Vec::new();
    let mut add = |name, img: &Image, bytes: Vec<u8>, expected| {
        out.push(Vector {
            name,
            magic: img.magic,
            bytes,
            expected,
        })
    };

    let empty = Image::new(JOURNAL_MAGIC);
    add(
        "empty.journal",
        &empty,
        empty.bytes.clone(),
        empty.expect(0),
    );

    for (name, img) in [
        ("committed.journal", committed()),
        ("rolled-back.journal", rolled_back()),
        ("interrupted.journal", interrupted()),
        ("history.history", summaries()),
    ] {
        add(name, &img, img.bytes.clone(), img.expect(0));
    }

    // The abort of transaction 10 was being appended when the power went:
    // its header and half its payload reached the disk.
    let base = Image::new(JOURNAL_MAGIC)
        .push(Record::Begin(Begin {
            tx: 10,
            started_ms: T0 + 240_000,
            plan: create_plan(),
        }))
        .push(Record::StepIntent(mark(10, 0)))
        .push(Record::StepDone(mark(10, 0)))
        .push(Record::StepIntent(mark(10, 1)));
    let abort = frame::encode(&Record::Abort(Abort {
        tx: 10,
        step: Some(1),
        reason: "copy /home/j/skel -> /home/js/www: No space left on device (os error 28)".into(),
    }))
    .unwrap();
    let cut = frame::FRAME_HEADER_LEN + (abort.len() - frame::FRAME_HEADER_LEN) / 2;
    let mut bytes = base.bytes.clone();
    bytes.extend_from_slice(&abort[..cut]);
    add("torn-tail.journal", &base, bytes, base.expect(cut as u64));

    // The file size grew but the appended data never reached the disk.
    let mut bytes = base.bytes.clone();
    bytes.extend([0u8; 512]);
    add("zero-tail.journal", &base, bytes, base.expect(512));

    // One bit flipped in the payload of the second record (a step intent),
    // with a whole record after it: corruption, refused.
    let offset = base.records[1].0;
    let mut bytes = base.bytes.clone();
    bytes[offset as usize + frame::FRAME_HEADER_LEN] ^= 0x04;
    let err = ScanError::Corrupt {
        offset,
        why: "checksum mismatch",
    };
    add("corrupt-middle.journal", &base, bytes, error_json(&err));

    // A frame with a sound checksum but a tag this version does not know
    // (written by a newer jailtx): refused, never skipped.
    let (tag, payload) = (10u8, [10u8, 0]);
    let mut bytes = frame::header(JOURNAL_MAGIC).to_vec();
    bytes.extend((payload.len() as u32).to_le_bytes());
    bytes.push(tag);
    bytes.extend(frame::checksum(payload.len() as u32, tag, &payload).to_le_bytes());
    bytes.extend(payload);
    let err = ScanError::Undecodable {
        offset: HEADER_LEN,
        tag,
        why: "unknown record type".into(),
    };
    add("unknown-tag.journal", &empty, bytes, error_json(&err));

    out
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("journal-format/vectors")
}

fn json_path(dir: &Path, name: &str) -> PathBuf {
    let stem = name.rsplit_once('.').map_or(name, |(s, _)| s);
    dir.join(format!("{stem}.json"))
}

fn blessing() -> bool {
    std::env::var("JAILTX_BLESS").is_ok_and(|v| v == "1")
}

const REBLESS: &str =
    "if the format change is intended, rerun with JAILTX_BLESS=1 and review the diff";

#[test]
fn vectors_decode_as_recorded() {
    let dir = dir();
    let bless = blessing();
    for v in vectors() {
        // The builder's own expectation must hold before anything is written.
        assert_eq!(
            scan_json(&v.bytes, v.magic),
            v.expected,
            "{}: the decoder disagrees with the built vector",
            v.name
        );
        let bin = dir.join(v.name);
        let js = json_path(&dir, v.name);
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&bin, &v.bytes).unwrap();
            let text = serde_json::to_string_pretty(&v.expected).unwrap() + "\n";
            std::fs::write(&js, text).unwrap();
            continue;
        }
        let stored =
            std::fs::read(&bin).unwrap_or_else(|e| panic!("{}: {e}; {REBLESS}", bin.display()));
        let text = std::fs::read_to_string(&js)
            .unwrap_or_else(|e| panic!("{}: {e}; {REBLESS}", js.display()));
        let stored_json: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            scan_json(&stored, v.magic),
            stored_json,
            "{}: decoding differs from {}",
            bin.display(),
            js.display()
        );
        assert!(
            stored == v.bytes,
            "{}: bytes differ from what this version encodes; {REBLESS}",
            bin.display()
        );
        assert_eq!(stored_json, v.expected, "{}: {REBLESS}", js.display());
    }
}

#[test]
fn decoded_records_re_encode_to_the_same_bytes() {
    for v in vectors() {
        let Ok(scan) = frame::scan(&v.bytes, v.magic) else {
            continue;
        };
        let mut again = frame::header(v.magic).to_vec();
        for (offset, record) in &scan.records {
            assert_eq!(*offset, again.len() as u64, "{}", v.name);
            again.extend(frame::encode(record).unwrap());
        }
        assert!(
            again[..] == v.bytes[..scan.valid_len as usize],
            "{}: re-encoding is not byte-identical",
            v.name
        );
    }
}

#[test]
fn json_records_read_back_as_the_same_records() {
    for v in vectors() {
        let Ok(scan) = frame::scan(&v.bytes, v.magic) else {
            continue;
        };
        for (i, (_, record)) in scan.records.iter().enumerate() {
            let js = v.expected["records"][i]["record"].clone();
            let back: Record = serde_json::from_value(js).unwrap();
            assert_eq!(&back, record, "{} record {i}", v.name);
        }
    }
}

#[test]
fn journal_vectors_fold_as_their_names_say() {
    let path = Path::new("vector");
    let status = |img: Image| {
        let txs = fold(path, &img.records).unwrap();
        assert_eq!(txs.len(), 1);
        txs.into_iter().next().unwrap()
    };
    let c = status(committed());
    assert_eq!(c.status(), TxStatus::Ended);
    assert!(c.committed && c.done.iter().all(|d| *d));
    let r = status(rolled_back());
    assert_eq!(r.status(), TxStatus::Ended);
    assert_eq!(r.comp_done, r.intent);
    let i = status(interrupted());
    assert_eq!(i.status(), TxStatus::InFlight);
    assert_eq!(i.first_not_done(), 1);
    assert!(i.intent[1]);

    // The history vector holds what filing the two ended vectors produces, so
    // "end durable, summary not filed" recovers to the same history line.
    let filed: Vec<Record> = [c, r]
        .iter()
        .map(|t| Record::Summary(summary_of(t)))
        .collect();
    let history: Vec<Record> = summaries().records.into_iter().map(|(_, r)| r).collect();
    assert_eq!(filed, history);
}

#[test]
fn every_vector_file_is_known_and_listed() {
    if blessing() {
        return;
    }
    let dir = dir();
    let known: Vec<String> = vectors().iter().map(|v| v.name.to_owned()).collect();
    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    for name in &known {
        assert!(
            readme.contains(name),
            "{name} is not described in vectors/README.md"
        );
    }
    for entry in std::fs::read_dir(&dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name == "README.md" {
            continue;
        }
        let listed = known.contains(&name)
            || known
                .iter()
                .any(|k| json_path(Path::new(""), k) == Path::new(&name));
        assert!(listed, "{name}: a stray file in the vectors folder");
    }
}
