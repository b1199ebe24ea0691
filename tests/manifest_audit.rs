//! Template integrity (issue 4): the manifest written at `template build`,
//! `audit` finding each kind of drift (new setuid files first), `--quick`,
//! refusal of a corrupt manifest (exit 2, never "drift"), and the mtree
//! export checked by Debian's `mtree-netbsd`. Each test drives the real
//! binary on a fresh `--root`.

mod support;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use support::{Out, Root};

/// A small world with every kind of entry the audit distinguishes.
fn make_world(w: &Path) {
    for d in [
        "bin",
        "sbin",
        "etc",
        "usr/bin",
        "usr/lib",
        "usr/share/misc",
        "usr/ports/sysutils/x",
        "var/log",
        "tmp",
        "root",
    ] {
        std::fs::create_dir_all(w.join(d)).unwrap();
    }
    std::fs::write(w.join("bin/sh"), b"#!shell binary\n").unwrap();
    std::fs::hard_link(w.join("bin/sh"), w.join("bin/test")).unwrap();
    std::fs::write(w.join("sbin/init"), b"init").unwrap();
    std::fs::write(w.join("usr/bin/passwd"), b"passwd").unwrap();
    std::fs::set_permissions(
        w.join("usr/bin/passwd"),
        std::fs::Permissions::from_mode(0o4555),
    )
    .unwrap();
    // Large enough to be memory-mapped by the hasher.
    let lib: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(w.join("usr/lib/libc.so.7"), &lib).unwrap();
    symlink("libc.so.7", w.join("usr/lib/libc.so")).unwrap();
    std::fs::write(w.join("usr/share/misc/version"), b"world 1\n").unwrap();
    std::fs::write(w.join("usr/ports/sysutils/x/Makefile"), b"PORTNAME= x\n").unwrap();
    std::fs::write(w.join("etc/rc"), b"#!/bin/sh\n").unwrap();
    nix::unistd::mkfifo(&w.join("usr/lib/fifo"), nix::sys::stat::Mode::S_IRUSR).unwrap();
}

/// A fresh root whose first template (with its manifest) is built.
fn built() -> (Root, PathBuf) {
    let r = Root::fresh();
    let world = r.scratch.join("world");
    make_world(&world);
    let out = r.run(&["template", "build", "--from-dir", world.to_str().unwrap()]);
    assert_eq!(out.code(), Some(0), "template build: {out}");
    let mroot = r.path("j/mroot");
    (r, mroot)
}

fn manifest_file(r: &Root, name: &str) -> PathBuf {
    r.state().join(format!("manifests/{name}.manifest"))
}

fn audit(r: &Root, args: &[&str]) -> (Out, Value) {
    let mut full = vec!["audit", "--json"];
    full.extend_from_slice(args);
    let out = r.run(&full);
    let doc = serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("audit --json is one JSON document ({e}): {out}"));
    (out, doc)
}

/// (path, kind) of every difference of the first audited template, in report order.
fn diffs(doc: &Value) -> Vec<(String, String)> {
    doc["audit"][0]["report"]["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_owned(),
                d["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn assert_drift(r: &Root, args: &[&str], want: &[(&str, &str)]) -> Value {
    let (out, doc) = audit(r, args);
    assert_eq!(out.code(), Some(3), "drift exits 3: {out}");
    let got = diffs(&doc);
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(p, k)| (p.to_string(), k.to_string()))
        .collect();
    assert_eq!(got, want, "{out}");
    doc
}

#[test]
fn a_clean_template_audits_clean_full_and_quick() {
    let (r, _) = built();
    let out = r.run(&["audit"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.starts_with("mroot: clean (full audit"), "{out}");
    let (out, doc) = audit(&r, &["--quick"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert_eq!(doc["clean"], true);
    assert_eq!(doc["exit_code"], 0);
    // The build waited out racily clean files: a quick audit of an
    // untouched template hashes nothing.
    assert_eq!(doc["audit"][0]["report"]["hashed_files"], 0, "{out}");
    // The carry-over path is not in the manifest, so changes there are not drift.
    std::fs::write(r.path("j/mroot/usr/ports/sysutils/x/Makefile"), b"other").unwrap();
    assert_eq!(r.run(&["audit"]).code(), Some(0));
    // The template id shown to scripts is the manifest's.
    let id = jailtx::manifest::template_id(&manifest_file(&r, "mroot")).unwrap();
    assert_eq!(doc["audit"][0]["id"], id.as_str());
    assert_eq!(id.len(), 64);
}

/// Locks `file` (shared or exclusive) once it is free. A descriptor this
/// process just closed can still hold the lock for a moment: a test thread
/// that forked a command meanwhile holds a copy until the child's exec
/// closes it (the race `acquire_soon` in the lock's own tests waits out).
fn lock_soon(file: &std::fs::File, shared: bool) {
    for _ in 0..1000 {
        let got = if shared {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match got {
            Ok(()) => return,
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => panic!("lock: {e}"),
        }
    }
    panic!("the state lock stayed held for a second after its holder closed it");
}

/// An upgrade, rollback or prune holds the lock exclusively while it renames
/// and removes templates: an audit then waits for nothing and says so (exit
/// 5, the holder's pid); beside another audit (a shared holder) it runs.
#[test]
fn audit_shares_the_lock_with_audits_not_with_mutating_runs() {
    let (r, _) = built();
    let lock_path = r.state().join("lock");
    let open = || {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_path)
            .unwrap()
    };
    let held = open();
    lock_soon(&held, false);
    std::fs::write(&lock_path, "4242").unwrap();
    let out = r.run(&["audit"]);
    let line = out.one_line_error(5, "audit beside a mutating run");
    assert!(line.contains("pid 4242"), "{line}");
    drop(held);
    let shared = open();
    lock_soon(&shared, true);
    let out = r.run(&["audit", "--quick"]);
    assert_eq!(out.code(), Some(0), "audit beside another audit: {out}");
    // ... and a mutating run waits for the audit.
    let out = r.run(&["prune", "--keep", "1"]);
    out.one_line_error(5, "prune during an audit");
    drop(shared);
    // Free once no forked child still holds a copy of `shared`.
    let probe = open();
    lock_soon(&probe, false);
    drop(probe);
    assert_eq!(r.run(&["prune", "--keep", "1"]).code(), Some(0));
}

#[test]
fn a_new_setuid_file_is_reported_first_and_flagged() {
    let (r, m) = built();
    std::fs::write(m.join("bin/sh"), b"#!shell binary!\n").unwrap();
    std::fs::write(m.join("usr/bin/zz-backdoor"), b"evil").unwrap();
    std::fs::set_permissions(
        m.join("usr/bin/zz-backdoor"),
        std::fs::Permissions::from_mode(0o6755),
    )
    .unwrap();
    let doc = assert_drift(
        &r,
        &[],
        &[
            ("/usr/bin/zz-backdoor", "added"),
            ("/bin/sh", "content"),
            ("/bin/test", "content"),
        ],
    );
    let first = &doc["audit"][0]["report"]["differences"][0];
    assert_eq!(first["new_setid"], true);
    assert_eq!(doc["audit"][0]["new_setid"], 1);
    let human = r.run(&["audit"]);
    assert_eq!(human.code(), Some(3));
    let lines: Vec<&str> = human.stdout.lines().collect();
    assert!(lines[0].contains("1 NEW SETUID/SETGID"), "{human}");
    assert!(
        lines[1].contains("!setid") && lines[1].contains("/usr/bin/zz-backdoor"),
        "{human}"
    );
    assert!(human.one_line_error(3, "drift").contains("drift in mroot"));
}

#[test]
fn a_setuid_bit_added_to_a_known_file_is_flagged_too() {
    let (r, m) = built();
    std::fs::set_permissions(m.join("sbin/init"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    let doc = assert_drift(&r, &[], &[("/sbin/init", "mode")]);
    let d = &doc["audit"][0]["report"]["differences"][0];
    assert_eq!(d["new_setid"], true);
    assert_eq!(d["expected"], "0644");
    assert_eq!(d["actual"], "4755");
}

#[test]
fn a_hard_link_broken_into_a_copy_is_a_link_difference() {
    let (r, m) = built();
    std::fs::remove_file(m.join("bin/test")).unwrap();
    std::fs::copy(m.join("bin/sh"), m.join("bin/test")).unwrap();
    std::fs::set_permissions(m.join("bin/test"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let doc = assert_drift(&r, &[], &[("/bin/test", "link")]);
    let d = &doc["audit"][0]["report"]["differences"][0];
    assert_eq!(d["expected"], "same inode as /bin/sh");
    assert_eq!(d["actual"], "its own inode");
    // Quick sees it too: the new inode misses the stat cache.
    assert_drift(&r, &["--quick"], &[("/bin/test", "link")]);
}

#[test]
fn a_retargeted_symlink_is_a_link_difference() {
    let (r, m) = built();
    std::fs::remove_file(m.join("usr/lib/libc.so")).unwrap();
    symlink("/tmp/evil.so", m.join("usr/lib/libc.so")).unwrap();
    let doc = assert_drift(&r, &["--quick"], &[("/usr/lib/libc.so", "link")]);
    let d = &doc["audit"][0]["report"]["differences"][0];
    assert_eq!(d["expected"], "libc.so.7");
    assert_eq!(d["actual"], "/tmp/evil.so");
}

#[test]
fn a_file_replaced_by_a_directory_is_a_type_difference() {
    let (r, m) = built();
    std::fs::remove_file(m.join("usr/lib/libc.so.7")).unwrap();
    std::fs::create_dir(m.join("usr/lib/libc.so.7")).unwrap();
    std::fs::write(m.join("usr/lib/libc.so.7/inside"), b"x").unwrap();
    assert_drift(
        &r,
        &[],
        &[
            ("/usr/lib/libc.so.7", "type"),
            ("/usr/lib/libc.so.7/inside", "added"),
        ],
    );
}

#[test]
fn content_mode_owner_removed_and_added_are_each_reported() {
    let (r, m) = built();
    std::fs::write(m.join("usr/share/misc/version"), b"world 2\n").unwrap();
    std::fs::set_permissions(m.join("sbin/init"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::lchown(m.join("usr/lib/libc.so.7"), Some(1000), Some(1000)).unwrap();
    std::fs::remove_file(m.join("usr/lib/fifo")).unwrap();
    std::fs::write(m.join("usr/bin/new-tool"), b"new").unwrap();
    let doc = assert_drift(
        &r,
        &[],
        &[
            ("/sbin/init", "mode"),
            ("/usr/bin/new-tool", "added"),
            ("/usr/lib/fifo", "removed"),
            ("/usr/lib/libc.so.7", "owner"),
            ("/usr/share/misc/version", "content"),
        ],
    );
    let counts = &doc["audit"][0]["counts"];
    for (k, n) in [
        ("added", 1),
        ("removed", 1),
        ("content", 1),
        ("mode", 1),
        ("owner", 1),
    ] {
        assert_eq!(counts[k], n, "{k}");
    }
    assert_eq!(counts["type"], 0);
    // Human output: counts per kind in the summary line, sorted by path.
    let out = r.run(&["audit"]);
    assert_eq!(out.code(), Some(3));
    assert!(
        out.stdout
            .contains("5 differences (1 added, 1 removed, 1 content, 1 mode, 1 owner)"),
        "{out}"
    );
    let paths: Vec<&str> = out
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "{out}");
}

#[test]
fn quick_catches_a_same_size_rewrite_with_the_mtime_put_back() {
    let (r, m) = built();
    let f = m.join("usr/share/misc/version");
    let before = std::fs::metadata(&f).unwrap();
    std::fs::write(&f, b"world 9\n").unwrap();
    // Put the old mtime back, as `touch -r` would: the ctime still moves.
    let mtime = filetime(&before);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &f,
        &mtime,
        &mtime,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    assert_eq!(std::fs::metadata(&f).unwrap().len(), before.len());
    let doc = assert_drift(&r, &["--quick"], &[("/usr/share/misc/version", "content")]);
    assert_eq!(
        doc["audit"][0]["report"]["hashed_files"], 1,
        "only the changed file is read"
    );
}

fn filetime(m: &std::fs::Metadata) -> nix::sys::time::TimeSpec {
    use std::os::unix::fs::MetadataExt;
    nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec())
}

#[test]
fn a_corrupt_manifest_is_refused_with_exit_2_not_reported_as_drift() {
    let (r, _) = built();
    let file = manifest_file(&r, "mroot");
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    for args in [
        &["audit"][..],
        &["audit", "--quick"],
        &["manifest", "export"],
    ] {
        let out = r.run(args);
        let line = out.one_line_error(2, "corrupt manifest");
        assert!(
            line.contains(&file.display().to_string())
                && line.contains("is corrupt: checksum mismatch"),
            "{line}"
        );
        assert!(
            out.stdout.is_empty(),
            "no report for a corrupt manifest: {out}"
        );
    }
    // A truncated file and a foreign file are refused the same way.
    std::fs::write(&file, &bytes[..10]).unwrap();
    assert!(
        r.run(&["audit"])
            .one_line_error(2, "truncated")
            .contains("is corrupt")
    );
    std::fs::write(&file, b"not a manifest at all, just text\n").unwrap();
    assert!(
        r.run(&["audit"])
            .one_line_error(2, "foreign")
            .contains("bad magic")
    );
}

#[test]
fn unknown_templates_and_missing_manifests_exit_2() {
    let (r, _) = built();
    let line = r
        .run(&["audit", "skel"])
        .one_line_error(2, "not a template")
        .to_owned();
    assert!(line.contains("unknown template \"skel\""), "{line}");
    r.run(&["audit", "mroot.20260101"])
        .one_line_error(2, "no such archive");
    std::fs::create_dir(r.path("j/mroot.20260101")).unwrap();
    let line = r
        .run(&["audit", "mroot.20260101"])
        .one_line_error(2, "no manifest")
        .to_owned();
    assert!(line.contains("no manifest at"), "{line}");
    r.run(&["audit", "--all", "mroot"])
        .one_line_error(2, "names and --all");
}

#[test]
fn audit_all_covers_archives_that_have_a_manifest() {
    let (r, m) = built();
    // An archive as `upgrade` leaves one: the tree and its manifest, renamed.
    let archive = r.path("j/mroot.20260101");
    let st = Command::new("cp")
        .arg("-a")
        .arg(&m)
        .arg(&archive)
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::copy(
        manifest_file(&r, "mroot"),
        manifest_file(&r, "mroot.20260101"),
    )
    .unwrap();
    let (out, doc) = audit(&r, &["--all"]);
    assert_eq!(out.code(), Some(0), "{out}");
    let names: Vec<&str> = doc["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["template"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mroot", "mroot.20260101"]);
    std::fs::write(archive.join("usr/share/misc/version"), b"tampered").unwrap();
    let (out, doc) = audit(&r, &["--all"]);
    assert_eq!(out.code(), Some(3), "{out}");
    assert_eq!(doc["audit"][0]["clean"], true);
    assert_eq!(doc["audit"][1]["clean"], false);
    assert_eq!(r.run(&["audit"]).code(), Some(0), "mroot alone is clean");
}

fn mtree(dir: &Path, spec: &Path) -> Out {
    let out = Command::new("mtree")
        .arg("-p")
        .arg(dir)
        .arg("-f")
        .arg(spec)
        .output()
        .expect("run mtree (apt-get install mtree-netbsd)");
    Out {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn the_mtree_export_verifies_with_mtree_and_catches_a_modified_file() {
    let (r, m) = built();
    // A name mtree must unescape, and a symlink target with a space.
    std::fs::write(m.join("usr/share/misc/odd name#*[x]"), b"odd").unwrap();
    symlink("odd name#*[x]", m.join("usr/share/misc/odd link")).unwrap();
    // Rebuild the manifest for the changed tree through the library.
    let mf = manifest_file(&r, "mroot");
    std::fs::remove_file(&mf).unwrap();
    let built = jailtx::manifest::build(&m, &["usr/ports".into()]).unwrap();
    jailtx::manifest::write(&mf, &built).unwrap();

    let out = r.run(&["manifest", "export", "--format", "mtree"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(out.stdout.starts_with("#mtree\n"), "{out}");
    assert!(out.stdout.contains("sha256digest="), "{out}");
    let spec = r.scratch.join("mroot.mtree");
    std::fs::write(&spec, &out.stdout).unwrap();
    let check = mtree(&m, &spec);
    assert_eq!(
        check.code(),
        Some(0),
        "mtree verifies the export clean: {check}"
    );
    assert!(check.stdout.trim().is_empty(), "{check}");

    // Same size, new bytes: only the digest can tell.
    std::fs::write(m.join("usr/share/misc/version"), b"world 7\n").unwrap();
    let check = mtree(&m, &spec);
    assert_ne!(
        check.code(),
        Some(0),
        "mtree must report the change: {check}"
    );
    assert!(check.stdout.contains("usr/share/misc/version"), "{check}");
    assert!(check.stdout.contains("sha256"), "{check}");
    // An export of a drifted template is refused: it would vouch for the new bytes.
    let out = r.run(&["manifest", "export"]);
    let line = out.one_line_error(3, "export of a drifted template");
    assert!(line.contains("does not match the manifest"), "{line}");
    assert!(out.stdout.is_empty());
    // Only mtree is offered.
    r.run(&["manifest", "export", "--format", "json"])
        .one_line_error(2, "unknown format");
}

#[test]
fn the_manifest_step_rolls_back_and_resumes_with_the_build() {
    let r = Root::fresh();
    let world = r.scratch.join("world");
    make_world(&world);
    let build = ["template", "build", "--from-dir", world.to_str().unwrap()];
    // Killed right after the manifest is written: rolling back removes it.
    let out = r.run_env(&build, &[("JAILTX_FAULT", "after-effect:manifest")]);
    out.assert_killed("fault after the manifest step");
    assert!(manifest_file(&r, "mroot2").exists());
    let out = r.run(&["recover", "--rollback"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!manifest_file(&r, "mroot2").exists());
    assert!(!manifest_file(&r, "mroot").exists());
    // Killed again there, then resumed: published along with the tree.
    let out = r.run_env(&build, &[("JAILTX_FAULT", "after-effect:manifest")]);
    out.assert_killed("second fault");
    let out = r.run(&["recover"]);
    assert_eq!(out.code(), Some(0), "{out}");
    assert!(!manifest_file(&r, "mroot2").exists());
    assert_eq!(r.run(&["audit"]).code(), Some(0));
    // A first build refuses a stale manifest rather than overwrite it.
    let r2 = Root::fresh();
    std::fs::write(manifest_file(&r2, "mroot"), b"stale").unwrap();
    let line = r2
        .run(&build)
        .one_line_error(2, "stale manifest")
        .to_owned();
    assert!(
        line.contains("mroot.manifest is left from an earlier build"),
        "{line}"
    );
}

#[test]
fn a_filesystem_mounted_inside_the_template_is_reported_not_entered() {
    let (r, m) = built();
    std::fs::write(m.join("s/hidden"), b"under the mount").unwrap();
    // The mount lives only in a private mount namespace that `unshare`
    // makes for this one command line: nothing leaks onto the host.
    let script = format!(
        "mount -t tmpfs -o mode=0755 jailtx-test {s} && echo planted > {s}/evil && \
         exec {bin} --root {root} audit --json",
        s = m.join("s").display(),
        bin = support::BIN,
        root = r.root.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_remove("JAILTX_ROOT")
        .output()
        .expect("run unshare (util-linux)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    let doc: Value = serde_json::from_str(&stdout).unwrap();
    // The mount is reported; what it hides is not read (the file written
    // under it before the mount is invisible, the one on tmpfs never entered).
    assert_eq!(
        diffs(&doc),
        [("/s".to_owned(), "mount".to_owned())],
        "{stdout}"
    );
}
