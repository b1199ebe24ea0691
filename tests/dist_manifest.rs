//! Issue 16, item 4: `--from-tar base.txz --dist-manifest MANIFEST` checks
//! the archive against FreeBSD's release MANIFEST (the SHA-256 list
//! bsdinstall checks) before reading it. An archive the MANIFEST vouches
//! for builds and upgrades (and the plan notes its checksum); one whose
//! SHA-256 differs, one the MANIFEST does not list (looked up by file
//! name), and a MANIFEST that is not one (a field missing, a checksum that
//! is not hex, a control character, a symlink) are each refused: exit 2,
//! one line naming the file and what to do, nothing changed, no history
//! row.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::Digest as _;
use support::minisign::{Key, trust_config};
use support::{Root, assert_same, mkworld};

/// `world` as `NAME` (a .txz) in `dir`, and a MANIFEST listing it as
/// make-manifest.sh does, beside a kernel line.
fn release(dir: &Path, world: &Path, name: &str) -> (PathBuf, PathBuf) {
    let archive = dir.join(name);
    let st = Command::new("tar")
        .arg("-C")
        .arg(world)
        .arg("-cJf")
        .arg(&archive)
        .arg(".")
        .status()
        .unwrap();
    assert!(st.success(), "tar");
    let manifest = dir.join("MANIFEST");
    std::fs::write(&manifest, manifest_line(&archive, name)).unwrap();
    (archive, manifest)
}

fn manifest_line(archive: &Path, name: &str) -> String {
    let sum = sha2::Sha256::digest(std::fs::read(archive).unwrap());
    let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{name}\t{hex}\t42\tbase\t\"Base system (MANDATORY)\"\ton\n\
         kernel.txz\t{}\t7\tkernel\t\"Kernel (MANDATORY)\"\ton\n",
        "ab".repeat(32)
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Runs `args`, which must be refused: exit 2, one line holding `names`,
/// nothing changed under the root, no history row. Returns the line.
#[track_caller]
fn refused(root: &Root, args: &[&str], names: &[&str]) -> String {
    let before = root.everything();
    let history = root.transactions().len();
    let out = root.run(args);
    let line = out.one_line_error(2, &format!("{args:?}")).to_owned();
    for n in names {
        assert!(line.contains(n), "the error names {n}: {line}");
    }
    assert_same(&format!("{args:?}"), &root.everything(), &before);
    assert_eq!(root.transactions().len(), history, "no history row");
    line
}

#[test]
fn issue16_a_listed_archive_builds_and_upgrades() {
    let r = Root::fresh();
    let (w1, w2) = (r.scratch.join("w1"), r.scratch.join("w2"));
    mkworld(&w1, 1);
    mkworld(&w2, 2);
    let rel1 = r.scratch.join("rel1");
    let rel2 = r.scratch.join("rel2");
    std::fs::create_dir(&rel1).unwrap();
    std::fs::create_dir(&rel2).unwrap();
    let (a1, m1) = release(&rel1, &w1, "base.txz");
    let (a2, m2) = release(&rel2, &w2, "base.txz");

    let build = [
        "template",
        "build",
        "--from-tar",
        s(&a1),
        "--dist-manifest",
        s(&m1),
    ];
    let plan = r.dry_run_plan(&build);
    let note = plan["notes"]["sha256"].as_str().unwrap_or_default();
    assert!(note.ends_with("(base.txz in MANIFEST)"), "{plan}");
    r.ok(&build);
    assert_eq!(r.version_in("mroot").as_deref(), Some("world 1"));
    r.ok(&["upgrade", "--from-tar", s(&a2), "--dist-manifest", s(&m2)]);
    assert_eq!(r.version_in("mroot").as_deref(), Some("world 2"));
    // `history` shows what the MANIFEST vouched for.
    let noted: Vec<String> = r
        .transactions()
        .iter()
        .filter_map(|t| Some(format!("{} {}", t["op"], t["notes"]["sha256"].as_str()?)))
        .collect();
    assert_eq!(noted.len(), 2, "{noted:?}");
    assert!(noted[0].starts_with("\"template-build\" "), "{noted:?}");
    assert!(noted[1].starts_with("\"upgrade\" "), "{noted:?}");
}

#[test]
fn issue16_a_changed_or_unlisted_archive_is_refused() {
    let r = Root::fresh();
    let w = r.scratch.join("w");
    mkworld(&w, 1);
    let (archive, manifest) = release(&r.scratch, &w, "base.txz");

    // One byte changed: the xz stream may still decompress, the checksum
    // does not match.
    let mut bytes = std::fs::read(&archive).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    let bad = r.scratch.join("bad");
    std::fs::create_dir(&bad).unwrap();
    let changed = bad.join("base.txz");
    std::fs::write(&changed, &bytes).unwrap();
    let build = |a: &Path, m: &Path| {
        [
            "template".to_owned(),
            "build".into(),
            "--from-tar".into(),
            s(a).into(),
            "--dist-manifest".into(),
            s(m).into(),
        ]
    };
    let args = build(&changed, &manifest);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let line = refused(
        &r,
        &args,
        &[s(&changed), "SHA-256", s(&manifest), "download"],
    );
    assert!(!line.contains("\t"), "{line}");
    // Under --dry-run too.
    let mut dry = args.clone();
    dry.push("--dry-run");
    refused(&r, &dry, &["SHA-256"]);

    // The same bytes under a name the MANIFEST does not list.
    let renamed = r.scratch.join("base-14.txz");
    std::fs::copy(&archive, &renamed).unwrap();
    let args = build(&renamed, &manifest);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    refused(&r, &args, &["\"base-14.txz\" is not listed", s(&manifest)]);

    // A first template, then an upgrade from a changed archive: refused
    // the same way, the template as it was.
    r.ok(&[
        "template",
        "build",
        "--from-tar",
        s(&archive),
        "--dist-manifest",
        s(&manifest),
    ]);
    refused(
        &r,
        &[
            "upgrade",
            "--from-tar",
            s(&changed),
            "--dist-manifest",
            s(&manifest),
        ],
        &["SHA-256", "download"],
    );
}

#[test]
fn issue16_a_malformed_manifest_is_refused() {
    let r = Root::fresh();
    let w = r.scratch.join("w");
    mkworld(&w, 1);
    let (archive, manifest) = release(&r.scratch, &w, "base.txz");
    let good = std::fs::read_to_string(&manifest).unwrap();
    let first = good.lines().next().unwrap().to_owned();
    let fields: Vec<&str> = first.split('\t').collect();
    let cases = [
        (
            "five fields",
            fields[..5].join("\t"),
            "5 tab-separated fields",
        ),
        (
            "not hex",
            first.replacen(fields[1], &format!("{}zz", &fields[1][..62]), 1),
            "not 64 hex digits",
        ),
        (
            "a control character",
            first.replacen("Base system", "Base\x1b[2J", 1),
            "control character 0x1b",
        ),
        ("CRLF", good.replace('\n', "\r\n"), "control character 0x0d"),
    ];
    let bad = r.scratch.join("MANIFEST.bad");
    for (what, text, why) in cases {
        std::fs::write(&bad, format!("{text}\n")).unwrap();
        let line = refused(
            &r,
            &[
                "template",
                "build",
                "--from-tar",
                s(&archive),
                "--dist-manifest",
                s(&bad),
            ],
            &[s(&bad), why, "line 1"],
        );
        assert!(!line.contains('\x1b'), "{what}: {line}");
    }
    // A symlink to the real MANIFEST is not followed.
    let link = r.scratch.join("MANIFEST.link");
    std::os::unix::fs::symlink(&manifest, &link).unwrap();
    refused(
        &r,
        &[
            "template",
            "build",
            "--from-tar",
            s(&archive),
            "--dist-manifest",
            s(&link),
        ],
        &[s(&link), "symlink"],
    );
    // Only with --from-tar.
    refused(
        &r,
        &[
            "template",
            "build",
            "--from-dir",
            s(&w),
            "--dist-manifest",
            s(&manifest),
        ],
        &["--from-tar"],
    );
}

/// Under `[trust] require_signature`, a release archive gets in only with a
/// MANIFEST that a trusted key signed (`MANIFEST.minisig`, made by the real
/// `minisign`); without `--dist-manifest`, with an unsigned MANIFEST or one
/// signed by another key, it is exit 2 with nothing changed.
#[test]
fn issue16_a_signed_manifest_admits_a_release_archive_under_require_signature() {
    let r = Root::fresh();
    let w1 = r.scratch.join("w1");
    mkworld(&w1, 1);
    let rel = r.scratch.join("rel");
    std::fs::create_dir(&rel).unwrap();
    let (archive, manifest) = release(&rel, &w1, "base.txz");
    let trusted = Key::new(&r.scratch, "trusted");
    let other = Key::new(&r.scratch, "other");
    r.write("jailtx.toml", &trust_config(&[trusted.line()], true));
    let plain = ["template", "build", "--from-tar", s(&archive)];
    refused(&r, &plain, &["--from-tar", "require_signature"]);
    let vouched = [
        "template",
        "build",
        "--from-tar",
        s(&archive),
        "--dist-manifest",
        s(&manifest),
    ];
    refused(&r, &vouched, &["MANIFEST", "require_signature"]);
    other.sign(&manifest, "someone else");
    refused(&r, &vouched, &["MANIFEST"]);
    trusted.sign(&manifest, "FreeBSD release");
    r.ok(&vouched);
    assert_eq!(r.version_in("mroot").as_deref(), Some("world 1"));
}
