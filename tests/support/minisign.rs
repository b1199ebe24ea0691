//! Keys and signatures made by the real `minisign` CLI (Debian package
//! `minisign`, installed by scripts/test), for the tests of signed input.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A minisign key pair made by the CLI, without a password (`-W`).
pub struct Key {
    pub public: PathBuf,
    pub secret: PathBuf,
}

impl Key {
    /// `minisign -G` into `dir/NAME.pub` and `dir/NAME.key`.
    pub fn new(dir: &Path, name: &str) -> Key {
        let public = dir.join(format!("{name}.pub"));
        let secret = dir.join(format!("{name}.key"));
        let out = Command::new("minisign")
            .args(["-G", "-W", "-p"])
            .arg(&public)
            .arg("-s")
            .arg(&secret)
            .output()
            .expect("run minisign (scripts/test installs it)");
        assert!(out.status.success(), "minisign -G: {out:?}");
        Key { public, secret }
    }

    /// The key's base64 line, as `[trust] keys` takes it.
    pub fn line(&self) -> String {
        std::fs::read_to_string(&self.public)
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .to_owned()
    }

    /// `minisign -S` with its defaults (pre-hashed) and a trusted comment:
    /// `file.minisig` beside `file`.
    pub fn sign(&self, file: &Path, comment: &str) {
        let out = Command::new("minisign")
            .args(["-S", "-s"])
            .arg(&self.secret)
            .args(["-t", comment, "-m"])
            .arg(file)
            .output()
            .unwrap();
        assert!(out.status.success(), "minisign -S: {out:?}");
    }
}

/// `[trust]` with `keys` (base64 lines or paths) and `require_signature`.
pub fn trust_config(keys: &[String], require: bool) -> String {
    let list: Vec<String> = keys.iter().map(|k| format!("{k:?}")).collect();
    format!(
        "[trust]\nkeys = [{}]\nrequire_signature = {require}\n",
        list.join(", ")
    )
}
