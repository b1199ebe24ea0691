//! The layering of src/lib.rs holds (scripts/check-layers passes on src/),
//! and the check bites: each planted upward import makes it fail, naming
//! the file and line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn check(src: &Path) -> Output {
    Command::new(repo().join("scripts/check-layers"))
        .env("JAILTX_LAYERS_SRC", src)
        .output()
        .expect("run scripts/check-layers")
}

#[test]
fn every_import_goes_down_the_stack() {
    let out = check(&repo().join("src"));
    assert_eq!(
        out.status.code(),
        Some(0),
        "check-layers on src/:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A copy of src/ with `line` appended to `file`; the script must exit 1
/// and name `file` at the appended line.
fn planted(file: &str, line: &str, why: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let ok = Command::new("cp")
        .arg("-R")
        .arg(repo().join("src"))
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let src = tmp.path().join("src");
    let path = src.join(file);
    let mut text = std::fs::read_to_string(&path).unwrap();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(line);
    text.push('\n');
    let at = text.lines().count();
    std::fs::write(&path, text).unwrap();

    let out = check(&src);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{file} + {line:?}: {stdout}");
    let named = format!("{}:{at}: ", path.display());
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&named) && l.contains(why)),
        "{file} + {line:?}: must name {named} ({why}): {stdout}"
    );
}

#[test]
fn an_upward_import_is_caught() {
    planted(
        "plan/mod.rs",
        "use crate::engine::Engine;",
        "imports crate::engine",
    );
    planted(
        "plan/blob.rs",
        "use crate::fs::FsError;",
        "imports crate::fs",
    );
    planted(
        "journal/record.rs",
        "use crate::engine::Plan;",
        "imports crate::engine",
    );
    planted(
        "host/freebsd_conf.rs",
        "use crate::engine::Action;",
        "imports crate::engine",
    );
    planted(
        "host/mod.rs",
        "use super::world::Source;",
        "imports crate::world",
    );
    planted(
        "fs/mod.rs",
        "pub fn f() -> crate::config::Layout { todo!() }",
        "imports crate::config",
    );
    planted("ops/jail.rs", "use crate::cli::Ctx;", "imports crate::cli");
    planted(
        "world/mod.rs",
        "use crate::etcmerge::PRISTINE;",
        "imports crate::etcmerge",
    );
}

#[test]
fn the_plan_does_no_io_and_groups_are_refused() {
    planted("plan/jail.rs", "use std::fs::File;", "does no I/O");
    planted("plan/jail.rs", "use regex::Regex;", "beyond std, serde");
    planted(
        "engine/mod.rs",
        "use crate::{host::Host, journal::Log};",
        "group",
    );
}

#[test]
fn a_comment_may_name_any_module() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = Command::new("cp")
        .arg("-R")
        .arg(repo().join("src"))
        .arg(tmp.path())
        .status()
        .unwrap();
    assert!(ok.success());
    let path = tmp.path().join("src/plan/mod.rs");
    let text = std::fs::read_to_string(&path).unwrap() + "// see crate::engine::Engine\n";
    std::fs::write(&path, text).unwrap();
    assert_eq!(check(&tmp.path().join("src")).status.code(), Some(0));
}
