//! Checks the journal test vectors in `journal-format/vectors/` (decode, JSON, canonical re-encode); `JAILTX_BLESS=1` rewrites them.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use jailtx::engine::{Action, Plan, Step, summary_of};
use jailtx::etcmerge::Blob;
use jailtx::host::JailSpec;
use jailtx::journal::frame::{self, HEADER_LEN, ScanError};
use jailtx::journal::state::{TxStatus, fold};
use jailtx::journal::{
    Abort, Begin, Commit, End, HISTORY_MAGIC, JOURNAL_MAGIC, Outcome, Record, StepMark, StepRange,
    Summary,
};
use jailtx::plan::BundleSource;
use jailtx::world::Source;
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

fn jail(name: &str, ip: &str) -> JailSpec {
    JailSpec {
        name: name.into(),
        path: format!("/home/j/{name}").into(),
        hostname: format!("{name}.example.org"),
        ip: ip.into(),
        exec_start: "/bin/sh /etc/rc".into(),
        exec_stop: "/bin/sh /etc/rc.shutdown".into(),
        stop_timeout_secs: 10,
    }
}

fn mount(src: &str, dst: &str, read_only: bool) -> Action {
    Action::Mount {
        src: src.into(),
        dst: dst.into(),
        read_only,
    }
}

/// The shape of `jailtx upgrade` with one jail: every `Action` variant that
/// `create_plan` does not use, a commit point before the cleanup.
fn upgrade_plan() -> Plan {
    let www = jail("www", "10.0.0.2");
    Plan {
        op: "upgrade".into(),
        summary: "new template from /tmp/base.txz".into(),
        steps: vec![
            step(
                "populate",
                Action::Populate {
                    source: Source::Tar("/tmp/base.txz".into()),
                    to: "/home/j/mroot2".into(),
                },
            ),
            step(
                "shape",
                Action::Shape {
                    template: "/home/j/mroot2".into(),
                    skel: None,
                    carry_over: vec!["usr/ports".into()],
                },
            ),
            step(
                "manifest",
                Action::WriteManifest {
                    template: "/home/j/mroot2".into(),
                    to: "/var/db/jailtx/manifests/mroot2".into(),
                    exclude: vec!["usr/ports".into()],
                },
            ),
            step("stop-www", Action::StopJail { jail: www.clone() }),
            step(
                "unmount-www-s",
                Action::Unmount {
                    src: "/home/js/www".into(),
                    dst: "/home/j/www/s".into(),
                    read_only: false,
                },
            ),
            step(
                "unmount-www",
                Action::Unmount {
                    src: "/home/j/mroot".into(),
                    dst: "/home/j/www".into(),
                    read_only: true,
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
                "switch-mroot",
                Action::Rename {
                    from: "/home/j/mroot2".into(),
                    to: "/home/j/mroot".into(),
                },
            ),
            step("mount-www", mount("/home/j/mroot", "/home/j/www", true)),
            step("mount-www-s", mount("/home/js/www", "/home/j/www/s", false)),
            step("start-www", Action::StartJail { jail: www.clone() }),
            step(
                "health",
                Action::HealthCheck {
                    jails: vec![
                        (www, Some("nc -z 10.0.0.2 80".into())),
                        (jail("db", "10.0.0.3"), None),
                    ],
                    timeout_secs: 30,
                },
            ),
            // After the commit: the /etc merge in the jail, then pruning.
            step(
                "etc-keep-old",
                Action::RenameIn {
                    root: "/home/js/www".into(),
                    from: "etc/motd".into(),
                    to: "etc/motd.jailtx-old".into(),
                    expect: Some(
                        "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262".into(),
                    ),
                },
            ),
            step(
                "etc-write",
                Action::WriteFileIn {
                    root: "/home/js/www".into(),
                    rel: "etc/motd".into(),
                    contents: Blob(b"FreeBSD 15.0\n\xff".to_vec()),
                    mode: 0o644,
                    uid: 0,
                    gid: 0,
                },
            ),
            step(
                "etc-mkdir",
                Action::MakeDirIn {
                    root: "/home/js/www".into(),
                    rel: "etc/rc.conf.d".into(),
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                },
            ),
            step(
                "etc-link",
                Action::SymlinkIn {
                    root: "/home/js/www".into(),
                    rel: "etc/localtime".into(),
                    target: "/usr/share/zoneinfo/UTC".into(),
                },
            ),
            step(
                "etc-remove",
                Action::RemoveFileIn {
                    root: "/home/js/www".into(),
                    rel: "etc/motd.jailtx-old".into(),
                },
            ),
            step(
                "unflag-old",
                Action::ClearFlags {
                    path: "/home/j/mroot.20251201".into(),
                },
            ),
            step(
                "prune-old",
                Action::RemoveTree {
                    path: "/home/j/mroot.20251201".into(),
                },
            ),
        ],
        commit: 12,
        notes: notes(&[("from", "mroot.20251201"), ("to", "mroot")]),
        bystanders: Vec::new(),
    }
}

/// The shape of `jailtx jail create www --start`, with a running jail `db`
/// that the plan does not touch as its bystander.
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
                "write-fstab",
                Action::WriteFile {
                    path: "/var/db/jailtx/jails/fstab.www".into(),
                    contents: "/home/j/mroot /home/j/www nullfs ro 0 0\n\
                               /home/js/www /home/j/www/s nullfs rw 0 0\n"
                        .into(),
                    mode: 0o644,
                },
            ),
            step(
                "link-conf",
                Action::Symlink {
                    target: "/var/db/jailtx/jails/www.conf".into(),
                    link: "/etc/jail.conf.d/www.conf".into(),
                },
            ),
            step("mount-root", mount("/home/j/mroot", "/home/j/www", true)),
            step("mount-s", mount("/home/js/www", "/home/j/www/s", false)),
            step(
                "start",
                Action::StartJail {
                    jail: jail("www", "10.0.0.2"),
                },
            ),
        ],
        commit: 7,
        notes: BTreeMap::new(),
        bystanders: vec![
            mount("/home/j/mroot", "/home/j/db", true),
            mount("/home/js/db", "/home/j/db/s", false),
            Action::StartJail {
                jail: jail("db", "10.0.0.3"),
            },
        ],
    }
}

/// The shape of `jailtx init`: small enough to decode by hand (section 6.3).
fn init_plan() -> Plan {
    let mkdir = |path: &str, mode| Action::MakeDir {
        path: path.into(),
        mode,
    };
    Plan {
        op: "init".into(),
        summary: "create the layout under /home".into(),
        steps: vec![
            step("mkdir-j", mkdir("/home/j", 0o755)),
            step("mkdir-js", mkdir("/home/js", 0o755)),
            step("mkdir-manifests", mkdir("/var/db/jailtx/manifests", 0o700)),
        ],
        commit: 3,
        notes: BTreeMap::new(),
        bystanders: Vec::new(),
    }
}

/// The intent record of steps `first..=last`: one step alone, or a batch
/// (the engine batches consecutive mount/unmount/start/stop steps).
fn intents(tx: u64, (first, last): (u32, u32)) -> Record {
    if first == last {
        Record::StepIntent(mark(tx, first))
    } else {
        Record::StepIntents(StepRange { tx, first, last })
    }
}

fn dones(tx: u64, (first, last): (u32, u32)) -> Record {
    if first == last {
        Record::StepDone(mark(tx, first))
    } else {
        Record::StepDones(StepRange { tx, first, last })
    }
}

fn committed() -> Image {
    let tx = 7;
    let plan = upgrade_plan();
    let commit = plan.commit;
    let mut img = Image::new(JOURNAL_MAGIC).push(Record::Begin(Begin {
        tx,
        started_ms: T0,
        plan,
    }));
    // Steps 3-5 (stop, unmount ×2) and 8-10 (mount ×2, start) are batches.
    let runs = [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 5),
        (6, 6),
        (7, 7),
        (8, 10),
        (11, 11),
    ]
    .into_iter()
    .chain((12..19).map(|i| (i, i)));
    for run in runs {
        if run.0 == commit {
            img = img.push(Record::Commit(Commit { tx }));
        }
        img = img.push(intents(tx, run)).push(dones(tx, run));
    }
    img.push(Record::End(End {
        tx,
        ended_ms: T0 + 61_500,
        outcome: Outcome::Committed,
        reason: None,
        notes: notes(&[("downtime_ms", "4200")]),
    }))
}

const FAILURE: &str = "start jail www: exec.start exited with status 1";

/// The start of jail www (the last step of a batch of three) fails: every
/// step with an intent is compensated, newest first.
fn rolled_back() -> Image {
    let tx = 8;
    let mut img = Image::new(JOURNAL_MAGIC).push(Record::Begin(Begin {
        tx,
        started_ms: T0 + 120_000,
        plan: create_plan(),
    }));
    for i in 0..4 {
        img = img.push(intents(tx, (i, i))).push(dones(tx, (i, i)));
    }
    img = img.push(intents(tx, (4, 6))).push(Record::Abort(Abort {
        tx,
        step: Some(6),
        reason: FAILURE.into(),
    }));
    for i in (0..7).rev() {
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

/// `init` as transaction `tx`, stopped after the intent of step 1.
fn init_stopped(tx: u64, started_ms: i64) -> Image {
    Image::new(JOURNAL_MAGIC)
        .push(Record::Begin(Begin {
            tx,
            started_ms,
            plan: init_plan(),
        }))
        .push(Record::StepIntent(mark(tx, 0)))
        .push(Record::StepDone(mark(tx, 0)))
        .push(Record::StepIntent(mark(tx, 1)))
}

const DRIFT: &str = "/home/j/mroot2 changed after its manifest was written (2 differences); \
                     remove it and start again";

/// The build half of an upgrade (populate, shape, manifest, then the check
/// that the staged tree is still what was hashed, right before the window):
/// the check finds drift, so nothing was stopped and the build is undone.
fn drift_plan() -> Plan {
    let mut plan = upgrade_plan();
    plan.steps.truncate(3);
    plan.steps.push(step(
        "verify-staged",
        Action::VerifyManifest {
            template: "/home/j/mroot2".into(),
            manifest: "/var/db/jailtx/manifests/mroot2".into(),
        },
    ));
    plan.commit = 4;
    plan
}

/// Transaction 11: the staged template changed between its manifest and the
/// window; step 3 (VerifyManifest) fails, steps 3 … 0 are compensated.
fn verify_drift() -> Image {
    let tx = 11;
    let mut img = Image::new(JOURNAL_MAGIC).push(Record::Begin(Begin {
        tx,
        started_ms: T0 + 300_000,
        plan: drift_plan(),
    }));
    for i in 0..3 {
        img = img.push(intents(tx, (i, i))).push(dones(tx, (i, i)));
    }
    img = img.push(intents(tx, (3, 3))).push(Record::Abort(Abort {
        tx,
        step: Some(3),
        reason: DRIFT.into(),
    }));
    for i in (0..4).rev() {
        img = img
            .push(Record::CompIntent(mark(tx, i)))
            .push(Record::CompDone(mark(tx, i)));
    }
    img.push(Record::End(End {
        tx,
        ended_ms: T0 + 301_750,
        outcome: Outcome::RolledBack,
        reason: Some(DRIFT.into()),
        notes: BTreeMap::new(),
    }))
}

/// `jailtx template build --from-dir` (the world's read-write dirs go to
/// skel), as transaction 12, ended; then an upgrade whose world comes from
/// a command, transaction 13, stopped after its first intent: a journal
/// holding more than one transaction (section 8), and the `Source` variants
/// the other vectors do not use.
fn two_transactions() -> Image {
    let build = Plan {
        op: "template-build".into(),
        summary: "first template from /usr/obj/world".into(),
        steps: vec![
            step(
                "populate",
                Action::Populate {
                    source: Source::Dir("/usr/obj/world".into()),
                    to: "/home/j/mroot".into(),
                },
            ),
            step(
                "shape",
                Action::Shape {
                    template: "/home/j/mroot".into(),
                    skel: Some("/home/j/skel".into()),
                    carry_over: Vec::new(),
                },
            ),
            step(
                "manifest",
                Action::WriteManifest {
                    template: "/home/j/mroot".into(),
                    to: "/var/db/jailtx/manifests/mroot".into(),
                    exclude: Vec::new(),
                },
            ),
        ],
        commit: 3,
        notes: notes(&[("to", "mroot")]),
        bystanders: Vec::new(),
    };
    let mut upgrade = drift_plan();
    upgrade.summary = "new template from make installworld".into();
    upgrade.steps[0].action = Action::Populate {
        source: Source::Cmd("make -C /usr/src installworld DESTDIR={dest}".into()),
        to: "/home/j/mroot2".into(),
    };
    let mut img = Image::new(JOURNAL_MAGIC).push(Record::Begin(Begin {
        tx: 12,
        started_ms: T0 + 360_000,
        plan: build,
    }));
    for i in 0..3 {
        img = img.push(intents(12, (i, i))).push(dones(12, (i, i)));
    }
    img.push(Record::Commit(Commit { tx: 12 }))
        .push(Record::End(End {
            tx: 12,
            ended_ms: T0 + 362_000,
            outcome: Outcome::Committed,
            reason: None,
            notes: BTreeMap::new(),
        }))
        .push(Record::Begin(Begin {
            tx: 13,
            started_ms: T0 + 420_000,
            plan: upgrade,
        }))
        .push(intents(13, (0, 0)))
}

/// `jailtx upgrade --from-bundle` (issue 16) as transaction 14, stopped
/// after the intent of its first step: the populate from `Source::Bundle`
/// (a struct value: file, template id, trusted keys, require_signature),
/// then the manifest, the origin file and the check before the window.
fn bundle_upgrade() -> Image {
    let mut plan = drift_plan();
    plan.summary = "upgrade to a new template from bundle /srv/base-14.2.jtxb".into();
    plan.steps.remove(1);
    plan.steps[0].action = Action::Populate {
        source: Source::Bundle(BundleSource {
            file: "/srv/base-14.2.jtxb".into(),
            id: "5e1f0c0ffee0d15ea5e0000000000000000000000000000000000000000000ab".into(),
            keys: vec!["RWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3".into()],
            require_signature: true,
            staged_manifest: Some("/var/db/jailtx/manifests/mroot2.manifest".into()),
        }),
        to: "/home/j/mroot2".into(),
    };
    plan.steps.insert(
        2,
        step(
            "origin",
            Action::WriteFile {
                path: "/var/db/jailtx/manifests/mroot2.origin".into(),
                contents: "{\"source\": \"bundle /srv/base-14.2.jtxb\"}".into(),
                mode: 0o600,
            },
        ),
    );
    plan.commit = plan.steps.len() as u32;
    plan.notes = notes(&[
        ("signer_key_id", "E7620F1842B4E81F"),
        (
            "trusted_comment",
            "timestamp:1767225600\tfile:base-14.2.jtxb",
        ),
    ]);
    Image::new(JOURNAL_MAGIC)
        .push(Record::Begin(Begin {
            tx: 14,
            started_ms: T0 + 480_000,
            plan,
        }))
        .push(intents(14, (0, 0)))
}

fn summaries() -> Image {
    Image::new(HISTORY_MAGIC)
        .push(Record::Summary(Summary {
            tx: 7,
            op: "upgrade".into(),
            summary: "new template from /tmp/base.txz".into(),
            started_ms: T0,
            ended_ms: T0 + 61_500,
            outcome: Outcome::Committed,
            steps: 19,
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
            steps: 7,
            reason: Some(FAILURE.into()),
            notes: BTreeMap::new(),
        }))
}

/// Transaction 15: an upgrade with a canary (`ns`): the templates renamed
/// while the jails ran, `ns` switched on its own and health-checked, then
/// killed during its soak (the intent of `canary-wait`, step 9, without its
/// done); `www` never stopped.
fn canary_wait() -> Image {
    let tx = 15;
    let (ns, www) = (jail("ns", "10.0.0.4"), jail("www", "10.0.0.2"));
    let chain = |j: &JailSpec, name: &str| {
        vec![
            step(
                &format!("stop-{name}"),
                Action::StopJail { jail: j.clone() },
            ),
            step(
                &format!("unmount-s-{name}"),
                Action::Unmount {
                    src: format!("/home/js/{name}").into(),
                    dst: format!("/home/j/{name}/s").into(),
                    read_only: false,
                },
            ),
            step(
                &format!("unmount-root-{name}"),
                Action::Unmount {
                    src: "/home/j/mroot.20260101".into(),
                    dst: format!("/home/j/{name}").into(),
                    read_only: true,
                },
            ),
            step(
                &format!("mount-root-{name}"),
                mount("/home/j/mroot", &format!("/home/j/{name}"), true),
            ),
            step(
                &format!("mount-s-{name}"),
                mount(
                    &format!("/home/js/{name}"),
                    &format!("/home/j/{name}/s"),
                    false,
                ),
            ),
            step(
                &format!("start-{name}"),
                Action::StartJail { jail: j.clone() },
            ),
        ]
    };
    let canaries = vec![(ns.clone(), Some("nc -z 10.0.0.4 53".into()))];
    let mut steps = vec![
        step(
            "archive-mroot",
            Action::Rename {
                from: "/home/j/mroot".into(),
                to: "/home/j/mroot.20260101".into(),
            },
        ),
        step(
            "switch-mroot",
            Action::Rename {
                from: "/home/j/mroot2".into(),
                to: "/home/j/mroot".into(),
            },
        ),
    ];
    steps.extend(chain(&ns, "ns"));
    steps.push(step(
        "health-check-canary",
        Action::HealthCheck {
            jails: canaries.clone(),
            timeout_secs: 30,
        },
    ));
    steps.push(step(
        "canary-wait",
        Action::CanaryWait {
            jails: canaries.clone(),
            wait_secs: 300,
            timeout_secs: 30,
        },
    ));
    steps.extend(chain(&www, "www"));
    let mut all = canaries;
    all.push((www, None));
    steps.push(step(
        "health-check",
        Action::HealthCheck {
            jails: all,
            timeout_secs: 30,
        },
    ));
    let plan = Plan {
        op: "upgrade".into(),
        summary: "upgrade to a new template from /tmp/base.txz".into(),
        commit: steps.len() as u32,
        steps,
        notes: notes(&[("archive", "mroot.20260101")]),
        bystanders: Vec::new(),
    };
    let mut img = Image::new(JOURNAL_MAGIC).push(Record::Begin(Begin {
        tx,
        started_ms: T0 + 360_000,
        plan,
    }));
    for i in 0..2 {
        img = img.push(intents(tx, (i, i))).push(dones(tx, (i, i)));
    }
    img.push(intents(tx, (2, 8)))
        .push(dones(tx, (2, 8)))
        .push(intents(tx, (9, 9)))
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
        ("interrupted.journal", init_stopped(9, T0 + 180_000)),
        ("verify-drift.journal", verify_drift()),
        ("two-transactions.journal", two_transactions()),
        ("bundle-upgrade.journal", bundle_upgrade()),
        ("canary-wait.journal", canary_wait()),
        ("history.history", summaries()),
    ] {
        add(name, &img, img.bytes.clone(), img.expect(0));
    }

    // The abort of transaction 10 was being appended when the power went:
    // its header and half its payload reached the disk.
    let base = init_stopped(10, T0 + 240_000);
    let abort = frame::encode(&Record::Abort(Abort {
        tx: 10,
        step: Some(1),
        reason: "mkdir /home/js: No space left on device (os error 28)".into(),
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
    // (written by a newer jailtx): refused, never skipped. Tags are assigned
    // upwards from 1, so 255 will be the last to mean anything.
    let (tag, payload) = (255u8, [10u8, 0]);
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
    let i = status(init_stopped(9, T0 + 180_000));
    assert_eq!(i.status(), TxStatus::InFlight);
    assert_eq!(i.first_not_done(), 1);
    assert!(i.intent[1]);
    let d = status(verify_drift());
    assert_eq!(d.status(), TxStatus::Ended);
    assert!(!d.committed);
    assert_eq!(d.comp_done, d.intent);

    let b = status(bundle_upgrade());
    assert_eq!(b.status(), TxStatus::InFlight);
    assert_eq!(b.first_not_done(), 0);

    let txs = fold(path, &two_transactions().records).unwrap();
    assert_eq!(txs.len(), 2);
    assert_eq!(txs[0].status(), TxStatus::Ended);
    assert_eq!(txs[1].status(), TxStatus::InFlight);
    assert_eq!(txs[1].first_not_done(), 0);

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

/// Every `Action` variant, in the order serde's derive lists them, which is
/// the declaration order and so the index postcard encodes: taken from the
/// code, so a variant added to `Action` is seen here without anyone editing
/// this test.
fn action_variants() -> Vec<&'static str> {
    support::variants::variants_of::<Action>()
}

/// The index each variant was released with and the name the format README
/// gives it. The match is exhaustive, so a new variant does not compile until
/// it is given its index here; the indices of released variants never change
/// (postcard encodes a variant as its index: one inserted or moved anywhere
/// but the end changes what every stored journal means).
fn released_index(action: &Action) -> (usize, &'static str) {
    match action {
        Action::MakeDir { .. } => (0, "MakeDir"),
        Action::Rename { .. } => (1, "Rename"),
        Action::WriteFile { .. } => (2, "WriteFile"),
        Action::Symlink { .. } => (3, "Symlink"),
        Action::RemoveTree { .. } => (4, "RemoveTree"),
        Action::CopyTree { .. } => (5, "CopyTree"),
        Action::Mount { .. } => (6, "Mount"),
        Action::Unmount { .. } => (7, "Unmount"),
        Action::StartJail { .. } => (8, "StartJail"),
        Action::StopJail { .. } => (9, "StopJail"),
        Action::Populate { .. } => (10, "Populate"),
        Action::HealthCheck { .. } => (11, "HealthCheck"),
        Action::Shape { .. } => (12, "Shape"),
        Action::WriteManifest { .. } => (13, "WriteManifest"),
        Action::ClearFlags { .. } => (14, "ClearFlags"),
        Action::WriteFileIn { .. } => (15, "WriteFileIn"),
        Action::RenameIn { .. } => (16, "RenameIn"),
        Action::RemoveFileIn { .. } => (17, "RemoveFileIn"),
        Action::MakeDirIn { .. } => (18, "MakeDirIn"),
        Action::SymlinkIn { .. } => (19, "SymlinkIn"),
        Action::VerifyManifest { .. } => (20, "VerifyManifest"),
        Action::CanaryWait { .. } => (21, "CanaryWait"),
    }
}

/// `make-dir` -> `MakeDir`: serde's kebab-case name back to the Rust one.
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

#[test]
fn action_variants_keep_their_indices_and_are_documented() {
    let readme = std::fs::read_to_string(dir().join("../README.md")).unwrap();
    let variants = action_variants();
    // Every action any vector holds, as stored: a variant counts as covered
    // only if a vector file carries it.
    let mut seen = BTreeMap::new();
    for v in vectors() {
        let Ok(scan) = frame::scan(&v.bytes, v.magic) else {
            continue;
        };
        for (_, record) in &scan.records {
            let Record::Begin(begin) = record else {
                continue;
            };
            let plan = &begin.plan;
            for action in plan.steps.iter().map(|s| &s.action).chain(&plan.bystanders) {
                let bytes = postcard::to_stdvec(action).unwrap();
                // Fewer than 128 variants: the index is one varint byte.
                assert!(variants.len() < 128);
                let index = usize::from(bytes[0]);
                let (released, name) = released_index(action);
                assert_eq!(
                    index, released,
                    "Action::{name} is encoded as variant {index} but was released as \
                     {released}: variants were inserted or reordered (new ones go at the end)"
                );
                assert_eq!(camel(variants[index]), name, "variant {index}");
                seen.entry(index).or_insert(v.name);
            }
        }
    }
    for (index, kebab) in variants.iter().enumerate() {
        let name = camel(kebab);
        assert!(
            seen.contains_key(&index),
            "no vector holds Action::{name} (variant {index}): add it to a vector plan \
             and describe it in journal-format/vectors/README.md"
        );
        let row = format!("| {index} | {name} |");
        assert!(
            readme.contains(&row),
            "journal-format/README.md has no row `{row}` in its Action table (section 6.2)"
        );
    }
    let last = variants.len();
    assert!(
        !readme.contains(&format!("| {last} | ")),
        "journal-format/README.md documents a variant {last} that Action does not have"
    );
}
