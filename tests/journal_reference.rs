//! The journal spec as an executable check (issue 13): the independent Python reader in `journal-format/reference/` against the Rust reader, over every vector, damaged copies of them, crafted sequencing errors and the journals real ops leave behind; and every `Action`, `Source`, `Outcome` variant and record kind must have its row in the spec and a vector.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use jailtx::engine::{Action, Plan, Step};
use jailtx::etcmerge::Blob;
use jailtx::host::JailSpec;
use jailtx::journal::frame::{self, ScanError};
use jailtx::journal::state::{TxStatus, fold, summaries};
use jailtx::journal::{
    Abort, Begin, Commit, End, FileStorage, HISTORY_MAGIC, JOURNAL_MAGIC, JournalError, Outcome,
    Record, StepMark, StepRange, Summary, read_log,
};
use jailtx::world::Source;
use serde_json::{Value, json};
use support::plans::{Fail, make_fixture, representative_plan};
use support::{COMPENSATION, FORWARD, Root, RunState, Worlds, fleet, in_private_ns, step_names};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn vectors_dir() -> PathBuf {
    repo().join("journal-format/vectors")
}

fn spec_text() -> String {
    std::fs::read_to_string(repo().join("journal-format/README.md")).unwrap()
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Journal,
    History,
}

impl Kind {
    fn of(path: &Path) -> Kind {
        let name = path.file_name().unwrap().to_string_lossy();
        if name.starts_with("history") || name.ends_with(".history") {
            Kind::History
        } else {
            Kind::Journal
        }
    }
    fn flag(self) -> &'static str {
        match self {
            Kind::Journal => "journal",
            Kind::History => "history",
        }
    }
    fn magic(self) -> [u8; 8] {
        match self {
            Kind::Journal => JOURNAL_MAGIC,
            Kind::History => HISTORY_MAGIC,
        }
    }
}

/// The Python reference's reading of each file (all of one kind), in one run.
fn reference(files: &[PathBuf], kind: Kind) -> BTreeMap<PathBuf, Value> {
    let out = Command::new("python3")
        .arg(repo().join("journal-format/reference/jtxref.py"))
        .args(["--kind", kind.flag()])
        .args(files)
        .output()
        .expect("run python3 (scripts/test installs it)");
    // 1 is a refused file (a verdict), anything else a failure of the tool.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "jtxref.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    if let [one] = files {
        // One file prints its reading; several, an object of readings.
        return BTreeMap::from([(one.clone(), v)]);
    }
    let Value::Object(all) = v else {
        panic!("jtxref.py printed no object: {v}")
    };
    all.into_iter()
        .map(|(k, v)| (PathBuf::from(k), v))
        .collect()
}

fn status_name(s: TxStatus) -> &'static str {
    match s {
        TxStatus::InFlight => "in-flight",
        TxStatus::Committed => "committed",
        TxStatus::RollingBack => "rolling-back",
        TxStatus::Ended => "ended",
    }
}

fn scan_error_json(e: &ScanError) -> Value {
    let (verdict, offset) = match e {
        ScanError::Corrupt { offset, .. } => ("corrupt", Some(offset)),
        ScanError::Undecodable { offset, .. } => ("undecodable", Some(offset)),
        _ => ("bad-header", None),
    };
    let mut v = json!({"verdict": verdict, "error": e.to_string()});
    if let Some(o) = offset {
        v["offset"] = json!(o);
    }
    v
}

/// The Rust reader's reading of a file, in the reference's canonical shape
/// (journal-format/reference/README.md): what `read_log`, `fold` and
/// `summaries` make of it, the same calls every jailtx command makes.
fn rust_reading(path: &Path, kind: Kind) -> Value {
    let size = std::fs::metadata(path).unwrap().len();
    let storage = FileStorage::open_read_only(path).unwrap().unwrap();
    let scan = match read_log(&storage, path, kind.magic()) {
        Ok(s) => s,
        Err(JournalError::Scan { source, .. }) => return scan_error_json(&source),
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let mut v = json!({
        "verdict": if scan.valid_len < size { "torn" } else { "clean" },
        "records": scan.records.iter()
            .map(|(offset, record)| json!({"offset": offset, "record": record}))
            .collect::<Vec<_>>(),
        "valid_len": scan.valid_len,
        "torn_bytes": scan.torn_bytes,
    });
    let checked = match kind {
        Kind::Journal => fold(path, &scan.records).map(|txs| {
            v["transactions"] = txs
                .iter()
                .map(|t| json!({"tx": t.tx(), "status": status_name(t.status())}))
                .collect();
        }),
        Kind::History => summaries(path, &scan.records).map(|_| ()),
    };
    match checked {
        Ok(()) => {}
        Err(JournalError::Sequence { what, .. }) => {
            v["verdict"] = json!("sequence");
            v["error"] = json!(what);
        }
        Err(e) => panic!("{}: {e}", path.display()),
    }
    v
}

/// Postcard's own words for a payload that does not decode are not part of
/// the format: only the kind, the offset and the tag are.
fn comparable(mut v: Value) -> Value {
    if v["verdict"] == "undecodable" {
        let msg = v["error"].as_str().unwrap().to_owned();
        if !msg.ends_with("unknown record type") {
            let cut = msg.find("does not decode").unwrap() + "does not decode".len();
            v["error"] = json!(&msg[..cut]);
        }
    }
    v
}

/// Both readers over `files`; returns the readings (they agree).
fn agree(files: &[PathBuf]) -> BTreeMap<PathBuf, Value> {
    let mut all = BTreeMap::new();
    for kind in [Kind::Journal, Kind::History] {
        let these: Vec<PathBuf> = files
            .iter()
            .filter(|f| Kind::of(f) == kind)
            .cloned()
            .collect();
        if these.is_empty() {
            continue;
        }
        let py = reference(&these, kind);
        let mut bad = Vec::new();
        for f in &these {
            let r = comparable(rust_reading(f, kind));
            let p = comparable(py[f].clone());
            if r != p {
                bad.push(format!("{}:\n  rust:   {r}\n  python: {p}", f.display()));
            }
            all.insert(f.clone(), r);
        }
        assert!(
            bad.is_empty(),
            "the reference reader and jailtx disagree on {} of {} files:\n{}",
            bad.len(),
            these.len(),
            bad.join("\n")
        );
    }
    all
}

fn vector_files() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(vectors_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("journal" | "history")
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn reference_reads_every_vector_as_recorded_and_as_jailtx_does() {
    let files = vector_files();
    assert!(files.len() >= 10, "{files:?}");
    let readings = agree(&files);
    for f in &files {
        let expected: Value =
            serde_json::from_str(&std::fs::read_to_string(f.with_extension("json")).unwrap())
                .unwrap();
        // The vector's JSON is the scan's part of the reading.
        let reading = &readings[f];
        let part: serde_json::Map<String, Value> = expected
            .as_object()
            .unwrap()
            .keys()
            .map(|k| (k.clone(), reading[k].clone()))
            .collect();
        assert_eq!(Value::Object(part), expected, "{}", f.display());
    }
}

/// Every cut and every flipped bit of two small vectors: torn tails at every
/// offset, corruption at every offset, as both readers judge them.
#[test]
fn reference_judges_every_cut_and_bit_flip_as_jailtx_does() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for name in ["interrupted.journal", "history.history"] {
        let bytes = std::fs::read(vectors_dir().join(name)).unwrap();
        for cut in 0..bytes.len() {
            let f = tmp.path().join(format!("cut{cut}-{name}"));
            std::fs::write(&f, &bytes[..cut]).unwrap();
            files.push(f);
        }
        for at in 0..bytes.len() {
            let mut b = bytes.clone();
            b[at] ^= 1 << (at % 8);
            let f = tmp.path().join(format!("flip{at}-{name}"));
            std::fs::write(&f, &b).unwrap();
            files.push(f);
        }
    }
    let readings = agree(&files);
    let verdicts: BTreeSet<&str> = readings
        .values()
        .map(|v| v["verdict"].as_str().unwrap())
        .collect();
    for v in ["clean", "torn", "corrupt", "bad-header"] {
        assert!(verdicts.contains(v), "no case judged {v}: {verdicts:?}");
    }
}

// ------------------------------------------------------------ coverage

/// One example of every `Action` variant, with its name in the spec's
/// table. The match is exhaustive: a variant added to `Action` does not
/// compile until it has an example here, and the tests below then fail
/// until the spec has its row and a vector holds it.
fn action_example(name: &str) -> Action {
    let jail = JailSpec {
        name: "www".into(),
        path: "/home/j/www".into(),
        hostname: "www.example.org".into(),
        ip: "10.0.0.2".into(),
        exec_start: "/bin/sh /etc/rc".into(),
        exec_stop: "/bin/sh /etc/rc.shutdown".into(),
        stop_timeout_secs: 10,
    };
    let examples = [
        Action::MakeDir {
            path: "/a".into(),
            mode: 0o755,
        },
        Action::Rename {
            from: "/a".into(),
            to: "/b".into(),
        },
        Action::WriteFile {
            path: "/a".into(),
            contents: "x\n".into(),
            mode: 0o644,
        },
        Action::Symlink {
            target: "/a".into(),
            link: "/b".into(),
        },
        Action::RemoveTree { path: "/a".into() },
        Action::CopyTree {
            from: "/a".into(),
            to: "/b".into(),
        },
        Action::Mount {
            src: "/a".into(),
            dst: "/b".into(),
            read_only: true,
        },
        Action::Unmount {
            src: "/a".into(),
            dst: "/b".into(),
            read_only: false,
        },
        Action::StartJail { jail: jail.clone() },
        Action::StopJail { jail: jail.clone() },
        Action::Populate {
            source: Source::Cmd("make installworld DESTDIR={dest}".into()),
            to: "/b".into(),
        },
        Action::HealthCheck {
            jails: vec![(jail.clone(), Some("true".into())), (jail, None)],
            timeout_secs: 3600,
        },
        Action::Shape {
            template: "/a".into(),
            skel: Some("/s".into()),
            carry_over: vec!["usr/ports".into()],
        },
        Action::WriteManifest {
            template: "/a".into(),
            to: "/m".into(),
            exclude: vec![],
        },
        Action::ClearFlags { path: "/a".into() },
        Action::WriteFileIn {
            root: "/r".into(),
            rel: "etc/x".into(),
            contents: Blob(vec![0xff, 0, 1]),
            mode: 0o600,
            uid: 1001,
            gid: 0,
        },
        Action::RenameIn {
            root: "/r".into(),
            from: "a".into(),
            to: "b".into(),
            expect: None,
        },
        Action::RemoveFileIn {
            root: "/r".into(),
            rel: "a".into(),
        },
        Action::MakeDirIn {
            root: "/r".into(),
            rel: "d".into(),
            mode: 0o700,
            uid: 0,
            gid: 5,
        },
        Action::SymlinkIn {
            root: "/r".into(),
            rel: "l".into(),
            target: "/t".into(),
        },
        Action::VerifyManifest {
            template: "/a".into(),
            manifest: "/m".into(),
        },
        Action::CanaryWait {
            jails: Vec::new(),
            wait_secs: 30,
            timeout_secs: 5,
        },
    ];
    examples
        .into_iter()
        .find(|a| action_name(a) == name)
        .unwrap_or_else(|| panic!("no example of Action::{name} in action_example"))
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::MakeDir { .. } => "MakeDir",
        Action::Rename { .. } => "Rename",
        Action::WriteFile { .. } => "WriteFile",
        Action::Symlink { .. } => "Symlink",
        Action::RemoveTree { .. } => "RemoveTree",
        Action::CopyTree { .. } => "CopyTree",
        Action::Mount { .. } => "Mount",
        Action::Unmount { .. } => "Unmount",
        Action::StartJail { .. } => "StartJail",
        Action::StopJail { .. } => "StopJail",
        Action::Populate { .. } => "Populate",
        Action::HealthCheck { .. } => "HealthCheck",
        Action::Shape { .. } => "Shape",
        Action::WriteManifest { .. } => "WriteManifest",
        Action::ClearFlags { .. } => "ClearFlags",
        Action::WriteFileIn { .. } => "WriteFileIn",
        Action::RenameIn { .. } => "RenameIn",
        Action::RemoveFileIn { .. } => "RemoveFileIn",
        Action::MakeDirIn { .. } => "MakeDirIn",
        Action::SymlinkIn { .. } => "SymlinkIn",
        Action::VerifyManifest { .. } => "VerifyManifest",
        Action::CanaryWait { .. } => "CanaryWait",
    }
}

fn source_name(s: &Source) -> &'static str {
    match s {
        Source::Dir(_) => "Dir",
        Source::Tar(_) => "Tar",
        Source::Cmd(_) => "Cmd",
        Source::Bundle(_) => "Bundle",
    }
}

/// The record kind's name in the spec's section 5 and its tag; exhaustive.
fn record_kind(r: &Record) -> (&'static str, u8) {
    let name = match r {
        Record::Begin(_) => "Begin",
        Record::StepIntent(_) => "StepIntent",
        Record::StepDone(_) => "StepDone",
        Record::Abort(_) => "Abort",
        Record::CompIntent(_) => "CompIntent",
        Record::CompDone(_) => "CompDone",
        Record::Commit(_) => "Commit",
        Record::End(_) => "End",
        Record::Summary(_) => "Summary",
        Record::StepIntents(_) => "StepIntents",
        Record::StepDones(_) => "StepDones",
    };
    (name, r.tag())
}

/// `make-dir` -> `MakeDir`.
fn camel(kebab: &str) -> String {
    kebab
        .split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// What the stored vector files hold: action, source and outcome variants
/// and record kinds by name, each with the first vector that holds it.
fn held_by_vectors() -> BTreeMap<String, String> {
    let mut seen = BTreeMap::new();
    for f in vector_files() {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let Ok(scan) = frame::scan(&std::fs::read(&f).unwrap(), Kind::of(&f).magic()) else {
            continue;
        };
        let mut note = |what: String| {
            seen.entry(what).or_insert_with(|| name.clone());
        };
        for (_, record) in &scan.records {
            note(format!("record {}", record_kind(record).0));
            let outcome = match record {
                Record::End(e) => Some(e.outcome),
                Record::Summary(s) => Some(s.outcome),
                _ => None,
            };
            if let Some(o) = outcome {
                note(format!("outcome {}", o.as_str()));
            }
            let Record::Begin(b) = record else { continue };
            for a in b
                .plan
                .steps
                .iter()
                .map(|s| &s.action)
                .chain(&b.plan.bystanders)
            {
                note(format!("action {}", action_name(a)));
                if let Action::Populate { source, .. } = a {
                    note(format!("source {}", source_name(source)));
                }
            }
        }
    }
    seen
}

/// Every variant of `Action`, `Source` and `Outcome`, and every record kind,
/// as the code has them: encoded at the index (or tag) the spec's table
/// gives it, and held by some vector. Fails naming what is missing.
#[test]
fn every_variant_and_record_kind_has_its_spec_row_and_a_vector() {
    let spec = spec_text();
    let held = held_by_vectors();
    let mut missing = Vec::new();
    let mut check = |what: String, row: String, encoded: u8, index: usize| {
        if usize::from(encoded) != index {
            missing.push(format!(
                "{what} is encoded as {encoded} but declared at {index}: variants were inserted or reordered (new ones go at the end)"
            ));
        }
        if !spec.contains(&row) {
            missing.push(format!(
                "{what}: journal-format/README.md has no row `{row}`"
            ));
        }
        if !held.contains_key(&what) {
            missing.push(format!(
                "{what}: no vector holds it (add it to a vector plan in tests/journal_vectors.rs, bless, and list it in journal-format/vectors/README.md)"
            ));
        }
    };

    let actions = support::variants::variants_of::<Action>();
    for (index, kebab) in actions.iter().enumerate() {
        let name = camel(kebab);
        let example = action_example(&name);
        // Fewer than 128 variants: the index is one varint byte.
        let encoded = postcard::to_stdvec(&example).unwrap()[0];
        check(
            format!("action {name}"),
            format!("| {index} | {name} |"),
            encoded,
            index,
        );
    }
    let sources = support::variants::variants_of::<Source>();
    for (index, kebab) in sources.iter().enumerate() {
        let name = camel(kebab);
        let example = [
            Source::Dir("/d".into()),
            Source::Tar("/t".into()),
            Source::Cmd("c".into()),
            Source::Bundle(jailtx::plan::BundleSource {
                file: "/b".into(),
                id: "i".into(),
                keys: Vec::new(),
                require_signature: false,
                staged_manifest: None,
            }),
        ]
        .into_iter()
        .find(|s| source_name(s) == name)
        .unwrap_or_else(|| panic!("no example of Source::{name}"));
        let encoded = postcard::to_stdvec(&example).unwrap()[0];
        check(
            format!("source {name}"),
            format!("| {index} | {name} |"),
            encoded,
            index,
        );
    }
    for (index, kebab) in support::variants::variants_of::<Outcome>()
        .iter()
        .enumerate()
    {
        let example = [Outcome::Committed, Outcome::RolledBack]
            .into_iter()
            .find(|o| o.as_str() == *kebab)
            .unwrap_or_else(|| panic!("no example of Outcome {kebab}"));
        let encoded = postcard::to_stdvec(&example).unwrap()[0];
        check(
            format!("outcome {kebab}"),
            format!("index {index} `{kebab}`"),
            encoded,
            index,
        );
    }
    let kinds = support::variants::variants_of::<Record>();
    for kebab in &kinds {
        let name = camel(kebab);
        let example = record_examples()
            .into_iter()
            .find(|r| record_kind(r).0 == name)
            .unwrap_or_else(|| panic!("no example of Record::{name} in record_examples"));
        let tag = example.tag();
        // A record's number is its tag, not its position: check the tag's row.
        check(
            format!("record {name}"),
            format!("| {tag} | {name} |"),
            tag,
            usize::from(tag),
        );
    }
    assert!(
        missing.is_empty(),
        "the spec or the vectors lag behind the code:\n  {}",
        missing.join("\n  ")
    );
    // And no row for a variant the code does not have.
    let next = format!("| {} | ", actions.len());
    assert!(
        !spec.contains(&next),
        "journal-format/README.md documents an Action variant {} that the code does not have",
        actions.len()
    );
}

fn record_examples() -> Vec<Record> {
    let m = StepMark { tx: 1, step: 0 };
    let range = StepRange {
        tx: 1,
        first: 0,
        last: 1,
    };
    vec![
        Record::Begin(Begin {
            tx: 1,
            started_ms: 0,
            plan: plan_of(vec![]),
        }),
        Record::StepIntent(m),
        Record::StepDone(m),
        Record::Abort(Abort {
            tx: 1,
            step: None,
            reason: String::new(),
        }),
        Record::CompIntent(m),
        Record::CompDone(m),
        Record::Commit(Commit { tx: 1 }),
        Record::End(end(1, Outcome::Committed)),
        Record::Summary(Summary {
            tx: 1,
            op: "init".into(),
            summary: String::new(),
            started_ms: 0,
            ended_ms: 0,
            outcome: Outcome::Committed,
            steps: 0,
            reason: None,
            notes: BTreeMap::new(),
        }),
        Record::StepIntents(range),
        Record::StepDones(range),
    ]
}

fn plan_of(actions: Vec<Action>) -> Plan {
    Plan {
        op: "test".into(),
        summary: "every action".into(),
        commit: actions.len() as u32,
        steps: actions
            .into_iter()
            .enumerate()
            .map(|(i, action)| Step {
                name: format!("step-{i}"),
                action,
            })
            .collect(),
        notes: BTreeMap::from([("b".into(), "2".into()), ("a".into(), "1".into())]),
        bystanders: vec![action_example("Mount")],
    }
}

fn end(tx: u64, outcome: Outcome) -> End {
    End {
        tx,
        ended_ms: -1,
        outcome,
        reason: Some("why".into()),
        notes: BTreeMap::new(),
    }
}

fn write_image(path: &Path, magic: [u8; 8], records: &[Record]) {
    let mut bytes = frame::header(magic).to_vec();
    for r in records {
        bytes.extend(frame::encode(r).unwrap());
    }
    std::fs::write(path, bytes).unwrap();
}

/// A journal whose plan holds the example of every action and source
/// variant, the code's own list: a spec row whose fields disagree with the
/// code's layout makes the reference misread it.
#[test]
fn reference_decodes_every_variant_the_code_has() {
    let tmp = tempfile::tempdir().unwrap();
    let mut actions: Vec<Action> = support::variants::variants_of::<Action>()
        .iter()
        .map(|k| action_example(&camel(k)))
        .collect();
    for source in [Source::Dir("/d".into()), Source::Tar("/t.txz".into())] {
        actions.push(Action::Populate {
            source,
            to: "/x".into(),
        });
    }
    let j = tmp.path().join("every.journal");
    write_image(
        &j,
        JOURNAL_MAGIC,
        &[
            Record::Begin(Begin {
                tx: 3,
                started_ms: -5,
                plan: plan_of(actions),
            }),
            Record::End(end(3, Outcome::RolledBack)),
        ],
    );
    let h = tmp.path().join("every.history");
    let kinds: Vec<Record> = record_examples()
        .into_iter()
        .filter(|r| matches!(r, Record::Summary(_)))
        .collect();
    write_image(&h, HISTORY_MAGIC, &kinds);
    let readings = agree(&[j.clone(), h]);
    assert_eq!(readings[&j]["verdict"], "clean", "{}", readings[&j]);
}

/// A file holding one frame of `tag` around `payload`, whatever it is.
fn raw_frame_file(path: &Path, tag: u8, payload: &[u8]) {
    let mut bytes = frame::header(JOURNAL_MAGIC).to_vec();
    bytes.extend((payload.len() as u32).to_le_bytes());
    bytes.push(tag);
    bytes.extend(frame::checksum(payload.len() as u32, tag, payload).to_le_bytes());
    bytes.extend(payload);
    std::fs::write(path, bytes).unwrap();
}

/// Section 6.1's reading rules for what jailtx never writes: non-minimal
/// varints within the type's width are read, longer or wider ones are not;
/// map keys out of order or repeated are read, the last duplicate winning.
#[test]
fn both_readers_apply_the_postcard_rules_of_section_6_1() {
    let tmp = tempfile::tempdir().unwrap();
    let good = |b: &mut Vec<u8>, s: &str| {
        b.push(s.len() as u8);
        b.extend(s.as_bytes());
    };
    // A Begin: tx 7 as `87 00`, started_ms 0, plan "o"/"s", no steps,
    // commit 0 as five bytes, notes {b: 1, a: 2, b: 3}, no bystanders.
    let mut begin = vec![0x87, 0x00, 0x00];
    good(&mut begin, "o");
    good(&mut begin, "s");
    begin.extend([0x00, 0x80, 0x80, 0x80, 0x80, 0x00, 0x03]);
    for (k, v) in [("b", "1"), ("a", "2"), ("b", "3")] {
        good(&mut begin, k);
        good(&mut begin, v);
    }
    begin.push(0x00);
    let cases: Vec<(&str, u8, Vec<u8>, &str)> = vec![
        ("lenient", 1, begin, "clean"),
        // StepMark tx = 0 in ten bytes, step = u32::MAX in five.
        (
            "widest",
            2,
            [&[0x80; 9][..], &[0x00], &[0xff, 0xff, 0xff, 0xff, 0x0f]].concat(),
            "clean",
        ),
        // A u32 whose fifth byte carries a bit past 32; a u64 in eleven bytes.
        (
            "u32-too-wide",
            2,
            vec![0x01, 0xff, 0xff, 0xff, 0xff, 0x1f],
            "undecodable",
        ),
        (
            "u64-too-long",
            2,
            [&[0x80; 10][..], &[0x00, 0x01]].concat(),
            "undecodable",
        ),
        // An Abort whose step has an Option prefix of 02.
        ("bad-option", 4, vec![0x01, 0x02, 0x00, 0x00], "undecodable"),
        ("left-over", 2, vec![0x01, 0x00, 0x00], "undecodable"),
    ];
    let mut files = Vec::new();
    for (name, tag, payload, _) in &cases {
        let f = tmp.path().join(format!("{name}.journal"));
        raw_frame_file(&f, *tag, payload);
        files.push(f);
    }
    let readings = agree(&files);
    for (f, (name, _, _, verdict)) in files.iter().zip(&cases) {
        let v = &readings[f];
        // A lone StepMark has no Begin: read, then refused by section 8.
        let got = match v["verdict"].as_str().unwrap() {
            "sequence" => "clean",
            other => other,
        };
        assert_eq!(got, *verdict, "{name}: {v}");
    }
    let lenient = &readings[&files[0]]["records"][0]["record"]["begin"];
    assert_eq!(lenient["tx"], 7);
    assert_eq!(lenient["plan"]["notes"], json!({"a": "2", "b": "3"}));
    assert_eq!(
        readings[&files[1]]["records"][0]["record"]["step-intent"]["step"],
        u32::MAX
    );
}

// ------------------------------------------------------------ section 8

/// One journal per sequencing rule of section 8, each refused with the
/// spec's message at the record that breaks it, by both readers.
#[test]
fn every_sequencing_rule_is_refused_with_the_spec_message_by_both_readers() {
    let tmp = tempfile::tempdir().unwrap();
    let begin = |tx| {
        Record::Begin(Begin {
            tx,
            started_ms: 0,
            plan: plan_of(vec![action_example("MakeDir"), action_example("Mount")]),
        })
    };
    let m = |step| StepMark { tx: 5, step };
    let r = |first, last| StepRange { tx: 5, first, last };
    let abort = Record::Abort(Abort {
        tx: 5,
        step: Some(0),
        reason: "x".into(),
    });
    let summary = record_examples().remove(8);
    let cases: Vec<(&str, Vec<Record>)> = vec![
        (
            "a transaction begins before the previous one ended",
            vec![begin(5), begin(6)],
        ),
        (
            "transaction numbers go backwards",
            vec![begin(5), Record::End(end(5, Outcome::Committed)), begin(5)],
        ),
        (
            "a record before any transaction began",
            vec![Record::StepIntent(m(0))],
        ),
        (
            "a record names a transaction other than the open one",
            vec![begin(5), Record::Commit(Commit { tx: 4 })],
        ),
        (
            "a record after the transaction ended",
            vec![
                begin(5),
                Record::End(end(5, Outcome::Committed)),
                Record::Commit(Commit { tx: 5 }),
            ],
        ),
        (
            "a step number beyond the plan",
            vec![begin(5), Record::StepIntent(m(2))],
        ),
        (
            "a step number beyond the plan",
            vec![begin(5), Record::StepIntents(r(2, 1))],
        ),
        (
            "a step range that runs backwards",
            vec![begin(5), Record::StepIntents(r(1, 0))],
        ),
        (
            "a step intent after the rollback began",
            vec![begin(5), abort.clone(), Record::StepIntent(m(0))],
        ),
        (
            "a step intent after the rollback began",
            vec![begin(5), abort.clone(), Record::StepIntents(r(0, 1))],
        ),
        (
            "a step done without its intent",
            vec![begin(5), Record::StepDone(m(0))],
        ),
        (
            "a step done without its intent",
            vec![
                begin(5),
                Record::StepIntent(m(0)),
                Record::StepDones(r(0, 1)),
            ],
        ),
        (
            "a rollback after the commit",
            vec![begin(5), Record::Commit(Commit { tx: 5 }), abort.clone()],
        ),
        (
            "a compensation before the rollback began",
            vec![begin(5), Record::CompIntent(m(0))],
        ),
        (
            "a compensation done without its intent",
            vec![begin(5), abort.clone(), Record::CompDone(m(0))],
        ),
        (
            "a commit after the rollback began",
            vec![begin(5), abort, Record::Commit(Commit { tx: 5 })],
        ),
        // Named as a summary wherever it stands (checked first).
        (
            "a history summary inside the journal",
            vec![summary.clone()],
        ),
        (
            "a history summary inside the journal",
            vec![begin(5), summary],
        ),
    ];
    let mut files = Vec::new();
    let mut want = Vec::new();
    for (i, (what, records)) in cases.into_iter().enumerate() {
        let f = tmp.path().join(format!("case{i}.journal"));
        write_image(&f, JOURNAL_MAGIC, &records);
        let offset = frame::scan(&std::fs::read(&f).unwrap(), JOURNAL_MAGIC)
            .unwrap()
            .records
            .last()
            .unwrap()
            .0;
        want.push(format!("record at offset {offset}: {what}"));
        files.push(f);
    }
    let readings = agree(&files);
    for (f, want) in files.iter().zip(want) {
        let v = &readings[f];
        assert_eq!(v["verdict"], "sequence", "{}: {v}", f.display());
        assert_eq!(v["error"], want, "{}", f.display());
    }
}

/// A journal record in `history` is refused (exit 2, nothing changed),
/// not skipped: `history` once listed the summaries around it and took the
/// last record's number, whatever it was, as the last filed transaction.
#[test]
fn a_journal_record_in_history_is_refused() {
    let r = Root::fresh();
    let h = r.history_file();
    let summary = record_examples().remove(8);
    write_image(
        &h,
        HISTORY_MAGIC,
        &[summary, Record::Commit(Commit { tx: 40 })],
    );
    let before = std::fs::read(&h).unwrap();
    let at = frame::scan(&before, HISTORY_MAGIC).unwrap().records[1].0;
    let out = r.run(&["history"]);
    let msg = out.one_line_error(2, "history over a journal record in history");
    assert!(
        msg.contains(&format!(
            "record at offset {at}: a journal record inside the history"
        )),
        "{msg}"
    );
    let out = r.run(&["init"]);
    let msg = out.one_line_error(2, "init over a journal record in history");
    assert!(msg.contains("a journal record inside the history"), "{msg}");
    assert_eq!(std::fs::read(&h).unwrap(), before, "history was changed");
    let readings = agree(std::slice::from_ref(&h));
    assert_eq!(readings[&h]["verdict"], "sequence");
}

// ------------------------------------------------------------ real journals

/// Copies of the journal and history as each moment of a run left them.
struct Keep {
    dir: PathBuf,
    n: usize,
    files: Vec<PathBuf>,
    /// For each kept moment: its journal and history copies, and what
    /// `recover --dry-run --json` and `history --json` said then.
    views: Vec<(PathBuf, PathBuf, Value, Value)>,
}

impl Keep {
    fn new(dir: PathBuf) -> Keep {
        Keep {
            dir,
            n: 0,
            files: Vec::new(),
            views: Vec::new(),
        }
    }

    fn take(&mut self, r: &Root, label: &str) {
        self.n += 1;
        let mut kept = Vec::new();
        for (src, name) in [(r.journal(), "journal"), (r.history_file(), "history")] {
            let dst = self.dir.join(format!("{name}-{:02}-{label}", self.n));
            std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
            self.files.push(dst.clone());
            kept.push(dst);
        }
        let pending = r.json(&["recover", "--dry-run"])["pending"].clone();
        let history = r.history()["transactions"].clone();
        self.views
            .push((kept[0].clone(), kept[1].clone(), pending, history));
    }

    /// Both readers agree on every kept file, and the reference's reading
    /// agrees with what the CLI showed at that moment: the pending
    /// transaction (number, committed, rolling back) and the filed history.
    fn check(&self) -> BTreeMap<PathBuf, Value> {
        let readings = agree(&self.files);
        for (journal, history, pending, shown) in &self.views {
            let txs = readings[journal]["transactions"].as_array().unwrap();
            let open = txs.iter().find(|t| t["status"] != "ended");
            let want = open.map_or(json!(null), |t| {
                json!({"tx": t["tx"], "committed": t["status"] == "committed",
                       "rolling_back": t["status"] == "rolling-back"})
            });
            let got = if pending.is_null() {
                json!(null)
            } else {
                json!({"tx": pending["tx"], "committed": pending["committed"],
                       "rolling_back": pending["rolling_back"]})
            };
            assert_eq!(got, want, "{}: recover --dry-run", journal.display());
            let filed: Vec<Value> = readings[history]["records"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["record"]["summary"].clone())
                .collect();
            assert_eq!(
                shown,
                &Value::from(filed),
                "{}: history --json",
                history.display()
            );
        }
        readings
    }
}

/// Runs `args` killed at `fault`, keeps what it left, then `recover`s (with
/// `rollback` or not) and keeps that too.
fn crash(r: &Root, keep: &mut Keep, args: &[&str], fault: &str, rollback: bool) {
    let words: Vec<&str> = args
        .iter()
        .take(2)
        .filter(|a| !a.contains('/'))
        .copied()
        .collect();
    let label = format!("{}-{}", words.join("-"), fault.replace([':', '/'], "_"));
    r.run_env(args, &[("JAILTX_FAULT", fault)])
        .assert_killed(&format!("{args:?} at {fault}"));
    keep.take(r, &label);
    let rec: &[&str] = if rollback {
        &["recover", "--rollback"]
    } else {
        &["recover"]
    };
    r.ok(rec);
    keep.take(r, &format!("{label}-recovered"));
}

/// Every op, upgrade and rollback included, killed at points inside it and
/// recovered both ways: each journal and history it leaves is read the same
/// by both readers, and the set holds every action the ops plan.
#[test]
fn reference_reads_the_journals_real_ops_leave_as_jailtx_does() {
    if !in_private_ns("reference_reads_the_journals_real_ops_leave_as_jailtx_does") {
        return;
    }
    let worlds = Worlds::new();
    let jails = fleet(&[("ns", RunState::Running), ("www", RunState::Running)]);
    let r = Root::new(None);
    let mut keep = Keep::new(r.scratch.join("kept"));
    std::fs::create_dir(&keep.dir).unwrap();
    keep.take(&r, "init");
    let w1 = worlds.get(1);
    let w1 = w1.to_str().unwrap();
    crash(
        &r,
        &mut keep,
        &["template", "build", "--from-dir", w1],
        "after-effect:0",
        true,
    );
    r.template(Path::new(w1));
    keep.take(&r, "template");
    for j in &jails {
        let args = j.create_args();
        crash(&r, &mut keep, &args, "after-intent:1", true);
        r.ok(&args);
        keep.take(&r, &format!("create-{}", j.name));
    }
    crash(&r, &mut keep, &["stop", "ns"], "after-intent:0", false);
    crash(&r, &mut keep, &["stop", "www"], "after-effect:0", true);
    crash(&r, &mut keep, &["start", "ns"], "after-intent:0", true);
    r.ok(&["start"]);
    keep.take(&r, "start");

    let w2 = worlds.get(2);
    let w2 = w2.to_str().unwrap();
    let plan = r.dry_run_plan(&["upgrade", "--from-dir", w2]);
    let names = step_names(&plan);
    let window = names.iter().position(|n| n.starts_with("mount-")).unwrap();
    // The staged-template check, rolled back; then the window, resumed.
    crash(
        &r,
        &mut keep,
        &["upgrade", "--from-dir", w2],
        "after-done:verify-staged",
        true,
    );
    crash(
        &r,
        &mut keep,
        &["upgrade", "--from-dir", w2],
        &format!("after-intent:{window}"),
        false,
    );
    crash(&r, &mut keep, &["rollback"], "after-effect:1", false);
    crash(
        &r,
        &mut keep,
        &["jail", "destroy", "www"],
        "after-done:0",
        true,
    );
    r.ok(&["jail", "destroy", "www"]);
    keep.take(&r, "destroy");

    let readings = keep.check();
    let mut ops = BTreeSet::new();
    let mut actions = BTreeSet::new();
    for v in readings.values() {
        for rec in v["records"].as_array().into_iter().flatten() {
            if let Some(b) = rec["record"].get("begin") {
                ops.insert(b["plan"]["op"].as_str().unwrap().to_owned());
                for s in b["plan"]["steps"].as_array().unwrap() {
                    actions.extend(s["action"].as_object().unwrap().keys().cloned());
                }
            }
        }
    }
    println!("{} files, ops {ops:?}, actions {actions:?}", readings.len());
    for action in [
        "verify-manifest",
        "populate",
        "shape",
        "write-manifest",
        "stop-jail",
        "health-check",
    ] {
        assert!(
            actions.contains(action),
            "no kept journal holds {action}: {actions:?}"
        );
    }
    for op in [
        "template-build",
        "jail-create",
        "stop",
        "start",
        "upgrade",
        "rollback",
        "jail-destroy",
    ] {
        assert!(
            ops.contains(op),
            "no kept journal holds a {op} transaction: {ops:?}"
        );
    }
}

/// The crash matrix's journals (tests/crash_matrix.rs): its representative
/// plan (every filesystem action) killed at every forward instant of every
/// step, and its failing plan killed at every compensation instant, each
/// recovered forwards or backwards; every journal and history read the same
/// by both readers.
#[test]
fn reference_reads_the_journals_the_crash_matrix_leaves_as_jailtx_does() {
    let tmp = tempfile::tempdir().unwrap();
    let mut keep = Keep::new(tmp.path().to_owned());
    for fail in [None, Some(Fail::WriteIntoMissingDir)] {
        let probe = representative_plan(Path::new("/probe"), fail);
        let commit = probe.commit as usize;
        let points: Vec<(usize, &str)> = match fail {
            None => (0..probe.steps.len())
                .flat_map(|i| FORWARD.map(|x| (i, x)))
                .collect(),
            // Every step before the commit point is compensated.
            Some(_) => (0..commit)
                .flat_map(|i| COMPENSATION.map(|x| (i, x)))
                .collect(),
        };
        for (i, instant) in points {
            let r = Root::fresh();
            make_fixture(&r.root);
            let file = r.plan_file("plan", &representative_plan(&r.root, fail));
            let rollback = i < commit && i % 2 == 0;
            let args = ["run-plan", file.to_str().unwrap()];
            crash(&r, &mut keep, &args, &format!("{instant}:{i}"), rollback);
        }
    }
    let readings = keep.check();
    let statuses: BTreeSet<String> = readings
        .values()
        .flat_map(|v| v["transactions"].as_array().cloned().unwrap_or_default())
        .map(|t| t["status"].as_str().unwrap().to_owned())
        .collect();
    for s in ["in-flight", "committed", "rolling-back"] {
        assert!(statuses.contains(s), "no kept journal is {s}: {statuses:?}");
    }
}

/// The reference's BLAKE3 against b3sum (the peer scripts/test installs),
/// over lengths around every block, chunk and tree boundary it has.
#[test]
fn reference_blake3_agrees_with_b3sum() {
    let tmp = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for len in [
        0, 1, 63, 64, 65, 1023, 1024, 1025, 2047, 2048, 2049, 3072, 4096, 5121, 8193, 70_000,
    ] {
        let f = tmp.path().join(format!("b{len}"));
        let bytes: Vec<u8> = (0..len)
            .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&f, bytes).unwrap();
        files.push(f);
    }
    let run = |cmd: &mut Command| {
        let out = cmd.args(&files).output().expect("run the hasher");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let ours = run(Command::new("python3").arg(repo().join("journal-format/reference/blake3.py")));
    let peer = run(&mut Command::new("b3sum"));
    assert_eq!(ours, peer);
    assert_eq!(ours.lines().count(), files.len());
}
