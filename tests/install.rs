//! `scripts/install` into a scratch DESTDIR (issue 18): every file lands with
//! its mode, a second run keeps the operator's `jailtx.toml`, the shipped
//! sample config is exactly the built-in defaults (so it cannot drift from
//! the code), and a relative PREFIX is refused with exit 2.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/install");

fn install(destdir: &Path, prefix: &str) -> Output {
    Command::new(SCRIPT)
        .arg(prefix)
        .env("DESTDIR", destdir)
        .env("JAILTX_BIN", env!("CARGO_BIN_EXE_jailtx"))
        .output()
        .expect("run scripts/install")
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{} was not installed: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn install_into_destdir_lays_out_every_file_with_its_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let out = install(tmp.path(), "/usr/local");
    assert!(
        out.status.success(),
        "scripts/install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = |rel: &str| -> PathBuf { tmp.path().join("usr/local").join(rel) };
    let want: &[(&str, u32)] = &[
        ("bin/jailtx", 0o555),
        ("etc/rc.d/jailtx", 0o555),
        ("etc/rc.d/jailtx_jails", 0o555),
        ("etc/jailtx.toml.sample", 0o644),
        ("etc/jailtx.toml", 0o644),
        ("share/doc/jailtx/README.md", 0o444),
        ("share/doc/jailtx/freebsd.md", 0o444),
        ("share/doc/jailtx/etc-merge.md", 0o444),
        ("share/doc/jailtx/journal-format/README.md", 0o444),
    ];
    for (rel, m) in want {
        assert_eq!(mode(&p(rel)), *m, "mode of {rel}");
    }
    for d in ["bin", "etc", "etc/rc.d", "share/doc/jailtx"] {
        assert_eq!(mode(&p(d)), 0o755, "mode of directory {d}");
    }
    // Nothing but PREFIX under DESTDIR, and no temporary name left behind.
    let top: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, vec![std::ffi::OsString::from("usr")]);
    let leftovers = Command::new("find")
        .arg(tmp.path())
        .args(["-name", "*.jailtx-new"])
        .output()
        .unwrap();
    assert!(leftovers.stdout.is_empty(), "temporary files left behind");
    // The installed binary is the one given and runs.
    let v = Command::new(p("bin/jailtx"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(v.status.success() && String::from_utf8_lossy(&v.stdout).contains("jailtx"));
    // The rc.d scripts are valid sh.
    for rc in ["etc/rc.d/jailtx", "etc/rc.d/jailtx_jails"] {
        let n = Command::new("sh").arg("-n").arg(p(rc)).status().unwrap();
        assert!(n.success(), "sh -n {rc}");
    }
}

#[test]
fn reinstall_keeps_the_operators_config() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(install(tmp.path(), "/opt/jx").status.success());
    let conf = tmp.path().join("opt/jx/etc/jailtx.toml");
    std::fs::write(&conf, "keep_archives = 5\n").unwrap();
    let out = install(tmp.path(), "/opt/jx");
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(&conf).unwrap(),
        "keep_archives = 5\n"
    );
    assert_eq!(mode(&tmp.path().join("opt/jx/bin/jailtx")), 0o555);
}

#[test]
fn the_sample_config_is_the_built_in_defaults() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/contrib/etc/jailtx.toml.sample"
    ));
    let text = std::fs::read_to_string(path).unwrap();
    let sample = jailtx::config::Config::parse(&text, path).expect("the sample parses");
    // The one deliberate difference: the sample is for a FreeBSD host.
    let defaults = jailtx::config::Config {
        backend: "freebsd".into(),
        ..Default::default()
    };
    assert_eq!(
        sample, defaults,
        "contrib/etc/jailtx.toml.sample differs from Config::default(): update the sample"
    );
}

#[test]
fn a_relative_prefix_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let out = install(tmp.path(), "usr/local");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("absolute"), "{err}");
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
}
