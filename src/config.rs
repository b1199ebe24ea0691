//! The configuration file (`jailtx.toml`) and the layout it resolves to: every
//! path jailtx touches, computed once and validated before any step runs.

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::fs::statefile::{self, Kind};

/// Where the config file is looked for when neither `--config` nor `--root` says.
pub const DEFAULT_CONFIG: &str = "/usr/local/etc/jailtx.toml";

/// `[jail] stop_timeout_secs`, in seconds: 0 (no grace: the jail's
/// processes are killed at once, as jail(8) does with `stop.timeout = 0`)
/// to an hour. Also the range `__jail-init --stop-timeout` takes, and what a
/// plan read back from the journal is clamped to.
pub const STOP_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 0..=3600;
/// `[health] timeout_secs`, in seconds: 0 (a second) to an hour. It runs
/// inside the downtime window; a plan from the journal is clamped to it.
pub const HEALTH_TIMEOUT_SECS: std::ops::RangeInclusive<u64> = 0..=3600;
/// `[upgrade] parallel`: jails switched at once inside a batch of the
/// downtime window; 1 switches them one by one, 0 (the default) one per CPU.
pub const UPGRADE_PARALLEL: std::ops::RangeInclusive<u32> = 0..=256;
/// `upgrade --canary-wait`, in seconds: 0 to a day. The canaries' soak
/// before the rest of the jails switch; a plan from the journal is clamped
/// to it.
pub const CANARY_WAIT_SECS: std::ops::RangeInclusive<u64> = 0..=86_400;
/// The end of [`CANARY_WAIT_SECS`].
pub const CANARY_WAIT_MAX: u64 = *CANARY_WAIT_SECS.end();
/// `keep_archives` and `prune --keep`: archived templates kept.
pub const KEEP_ARCHIVES: std::ops::RangeInclusive<u32> = 0..=1000;

/// How long a jail's processes get between SIGTERM and SIGKILL for a stop
/// timeout of `secs`, at most [`STOP_TIMEOUT_SECS`]'s end. Zero means what
/// it means to jail(8) (command.c `term_procs`): no SIGTERM, the jail's
/// processes are killed at once. Clamped rather than trusted, because a
/// plan read back from the journal may carry any value and recovery must
/// finish on it; the FreeBSD backend writes the clamped value too.
pub fn stop_grace(secs: u64) -> std::time::Duration {
    std::time::Duration::from_secs(secs.min(*STOP_TIMEOUT_SECS.end()))
}

/// The health check's time limit for `secs`, clamped to
/// [`HEALTH_TIMEOUT_SECS`] (0 means a second).
pub fn health_timeout(secs: u64) -> std::time::Duration {
    std::time::Duration::from_secs(secs.clamp(1, *HEALTH_TIMEOUT_SECS.end()))
}

/// `[freebsd] interface`: empty (no `interface` line), or a name jail(8)
/// can hand to ifconfig(8): 1 to 15 bytes (the kernel's IFNAMSIZ is 16 with
/// the NUL), a letter first, then letters, digits, `_`, `.` and `-` (`em0`,
/// `vtnet0`, `lagg0.100`, `bridge0`). Renamed interfaces may use more than
/// that; jailtx takes only names that need no quoting anywhere.
pub fn freebsd_interface(name: &str) -> Result<(), String> {
    let first_letter = name.bytes().next().is_some_and(|b| b.is_ascii_alphabetic());
    let chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if name.is_empty() || (first_letter && chars && name.len() <= 15) {
        return Ok(());
    }
    Err(format!(
        "freebsd.interface {name:?} is not an interface name: use 1 to 15 of A-Z a-z 0-9 _ . -, starting with a letter (e.g. \"em0\")"
    ))
}

/// `value` if `range` holds it, else the error naming `key` and the range.
pub fn in_range<T>(key: &str, value: T, range: &std::ops::RangeInclusive<T>) -> Result<T, String>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(format!(
            "{key} = {value} is out of range: use {} to {}",
            range.start(),
            range.end()
        ))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// BASE: holds `j/` and `js/`. Stored as its physical path.
    pub base: PathBuf,
    /// The state dir: journal, history, lock, manifests, jail records.
    pub state_dir: PathBuf,
    /// `linux` or `freebsd`; empty means the host's own.
    pub backend: String,
    /// Paths (relative to a template) that move from the old template to the new at each upgrade.
    pub carry_over: Vec<PathBuf>,
    /// Archived templates `prune` keeps by default.
    pub keep_archives: u32,
    pub jail: JailDefaults,
    pub health: Health,
    pub upgrade: Upgrade,
    pub freebsd: FreeBsd,
    pub trust: Trust,
}

/// `[trust]`: whose templates this host installs (SPEC section 2).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Trust {
    /// minisign public keys: each the key's base64 line (the second line
    /// of the `.pub` file `minisign -G` writes, `RW…`), or the path of
    /// such a `.pub` file. Parsed by `trust::keys`, where a bad one is
    /// refused naming it.
    pub keys: Vec<String>,
    /// Every template-changing command refuses input no trusted key
    /// signed: only `--from-bundle` with a verifying `FILE.minisig`.
    pub require_signature: bool,
}

/// `[upgrade]`: how the downtime window runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Upgrade {
    /// Jails stopped, and started, at once ([`UPGRADE_PARALLEL`]): each
    /// jail's own chain (stop, unmount `s`, unmount the root; mount the
    /// root, mount `s`, start) runs on one of this many threads. Also every
    /// other batch of mounts and jails (`start`, `stop`, `recover`).
    /// 0: one per CPU ([`Upgrade::threads`]).
    pub parallel: u32,
}

impl Upgrade {
    /// The threads a batch's chains run on. A jail's switch is mostly CPU
    /// (fork, exec, namespaces, its rc): measured at 100 jails on 2 cores
    /// (docs/benchmarks.md), more chains than CPUs shortens the window a
    /// little and lengthens every jail's own downtime a lot (2: 2.1x one
    /// jail's stop+start; 16: 19x), so the default is one per CPU.
    pub fn threads(&self) -> usize {
        match self.parallel {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n as usize,
        }
    }
}

/// `[freebsd]`: where the FreeBSD backend writes the files that let `jail(8)`,
/// `service jail` and `mount -a -F` manage a jail without jailtx.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FreeBsd {
    /// Holds `NAME.conf`, one jail.conf(5) file per jail.
    pub jail_conf_dir: PathBuf,
    /// Holds `fstab.NAME`, the jail's two nullfs lines in fstab(5) form.
    pub fstab_dir: PathBuf,
    /// When set, `interface = "..."` in each jail's config, so jail(8) adds
    /// the jail's address to that interface (else rc.conf aliases, as the Handbook does).
    pub interface: String,
}

impl Default for FreeBsd {
    fn default() -> Self {
        FreeBsd {
            jail_conf_dir: "/etc/jail.conf.d".into(),
            fstab_dir: "/etc".into(),
            interface: String::new(),
        }
    }
}

/// The upgrade's health check, after the jails start on the new template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Health {
    /// Run on the host for every started jail (JAIL_NAME, JAIL_IP, JAIL_JID,
    /// JAIL_HOSTNAME in its environment); empty: only check the jail runs.
    pub command: String,
    /// Per-jail commands, replacing `command` for that jail.
    pub jails: std::collections::BTreeMap<String, String>,
    pub timeout_secs: u64,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            command: String::new(),
            jails: Default::default(),
            timeout_secs: 30,
        }
    }
}

impl Health {
    /// The command for jail `name`, if any.
    pub fn command_for(&self, name: &str) -> Option<String> {
        let c = self.jails.get(name).unwrap_or(&self.command);
        Some(c.clone()).filter(|c| !c.trim().is_empty())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JailDefaults {
    pub exec_start: String,
    pub exec_stop: String,
    pub stop_timeout_secs: u64,
    /// Linux backend: `NAME.log` rotates into `NAME.log.1` and `.2` when it
    /// would grow past this many bytes ([`LOG_MAX_BYTES_RANGE`]).
    pub log_max_bytes: u64,
}

/// Where `[jail] log_max_bytes` may lie: 64 KiB to 1 GiB.
pub const LOG_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = (64 << 10)..=(1 << 30);

impl Default for JailDefaults {
    fn default() -> Self {
        JailDefaults {
            exec_start: "/bin/sh /etc/rc".into(),
            // jail(8)'s own example: the argument tells rc.shutdown it stops a jail.
            exec_stop: "/bin/sh /etc/rc.shutdown jail".into(),
            stop_timeout_secs: 10,
            log_max_bytes: 4 << 20,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            base: "/home".into(),
            state_dir: "/var/db/jailtx".into(),
            backend: String::new(),
            carry_over: vec!["usr/ports".into()],
            keep_archives: 2,
            jail: JailDefaults::default(),
            health: Health::default(),
            upgrade: Upgrade::default(),
            freebsd: FreeBsd::default(),
            trust: Trust::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: {0}")]
    Invalid(String),
    #[error("resolve {path}: {source}")]
    Resolve {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The config file is a symlink, a fifo, another user's, huge, …
    #[error(transparent)]
    Unsafe(#[from] crate::fs::statefile::StateFileError),
}

/// Where the configuration comes from, as the global options say.
#[derive(Debug, Clone, Default)]
pub struct Sources {
    pub root: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

impl Config {
    /// Parses a config file's text; `path` is for messages only.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            // toml's messages span several lines; an operator gets one.
            message: e.message().replace('\n', " "),
        })?;
        // Every refusal names the file it is about.
        cfg.check().map_err(|e| match e {
            ConfigError::Invalid(message) => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            e => e,
        })?;
        Ok(cfg)
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !self.base.is_absolute() {
            return Err(ConfigError::Invalid(format!(
                "base {} must be an absolute path",
                self.base.display()
            )));
        }
        if !self.state_dir.is_absolute() {
            return Err(ConfigError::Invalid(format!(
                "state_dir {} must be an absolute path",
                self.state_dir.display()
            )));
        }
        for p in &self.carry_over {
            let plain = p.components().all(|c| matches!(c, Component::Normal(_)));
            if !plain || p.as_os_str().is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "carry_over path {:?} must be relative to the template, without `..`",
                    p
                )));
            }
        }
        for (key, p) in [
            ("freebsd.jail_conf_dir", &self.freebsd.jail_conf_dir),
            ("freebsd.fstab_dir", &self.freebsd.fstab_dir),
        ] {
            if !p.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "{key} {} must be an absolute path",
                    p.display()
                )));
            }
        }
        self.no_control_characters()?;
        freebsd_interface(&self.freebsd.interface).map_err(ConfigError::Invalid)?;
        let ranges = [
            in_range(
                "jail.stop_timeout_secs",
                self.jail.stop_timeout_secs,
                &STOP_TIMEOUT_SECS,
            )
            .map(drop),
            in_range(
                "health.timeout_secs",
                self.health.timeout_secs,
                &HEALTH_TIMEOUT_SECS,
            )
            .map(drop),
            in_range("keep_archives", self.keep_archives, &KEEP_ARCHIVES).map(drop),
            in_range("upgrade.parallel", self.upgrade.parallel, &UPGRADE_PARALLEL).map(drop),
            in_range(
                "jail.log_max_bytes",
                self.jail.log_max_bytes,
                &LOG_MAX_BYTES_RANGE,
            )
            .map(drop),
        ];
        for r in ranges {
            r.map_err(ConfigError::Invalid)?;
        }
        if !self.backend.is_empty() && crate::plan::Backend::parse(&self.backend).is_err() {
            return Err(ConfigError::Invalid(format!(
                "backend {:?} is not one of linux, freebsd",
                self.backend
            )));
        }
        Ok(())
    }

    /// These paths go into generated files (the `#` comment lines of
    /// NAME.conf and fstab.NAME, where a newline would end the comment and
    /// hand the rest to jail(8)'s parser) and are read back from text
    /// (`mount -p`, one mount per line): no control character has a way in.
    fn no_control_characters(&self) -> Result<(), ConfigError> {
        for (key, p) in [
            ("base", &self.base),
            ("state_dir", &self.state_dir),
            ("freebsd.jail_conf_dir", &self.freebsd.jail_conf_dir),
            ("freebsd.fstab_dir", &self.freebsd.fstab_dir),
        ] {
            if p.as_os_str()
                .as_encoded_bytes()
                .iter()
                .any(u8::is_ascii_control)
            {
                return Err(ConfigError::Invalid(format!(
                    "{key} {p:?} holds a control character (a newline, a tab…); use a path without one"
                )));
            }
        }
        Ok(())
    }

    /// Loads the config the global options point at, then applies `--root`.
    pub fn load(src: &Sources) -> Result<Config, ConfigError> {
        // --config must exist; the file beside --root and the default one may not.
        let (path, required) = match (&src.config, &src.root) {
            (Some(c), _) => (c.clone(), true),
            (None, Some(r)) => (r.join("jailtx.toml"), false),
            (None, None) => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let mut cfg = match statefile::read_to_string(&path, Kind::Config)? {
            Some(text) => Config::parse(&text, &path)?,
            None if required => {
                return Err(ConfigError::Read {
                    path,
                    source: std::io::ErrorKind::NotFound.into(),
                });
            }
            None => Config::default(),
        };
        if let Some(root) = &src.root {
            // --root puts everything under one folder, whatever the file says.
            let root = absolute(root)?;
            cfg.base = root.clone();
            cfg.state_dir = root.join(".jailtx");
            cfg.freebsd.jail_conf_dir = root.join("etc/jail.conf.d");
            cfg.freebsd.fstab_dir = root.join("etc");
            cfg.no_control_characters()?;
        }
        Ok(cfg)
    }
}

fn absolute(p: &Path) -> Result<PathBuf, ConfigError> {
    std::path::absolute(p).map_err(|source| ConfigError::Resolve {
        path: p.to_owned(),
        source,
    })
}

/// The physical path of `p`: symlinks in its existing part resolved, the
/// missing rest appended. BASE is stored this way (`/home` -> `/usr/home`):
/// the kernel keeps a jail's resolved path, `jls` reports that one, and
/// jailtx knows a running jail by its name and path.
pub fn physical(p: &Path) -> Result<PathBuf, ConfigError> {
    let p = absolute(p)?;
    let mut existing = p.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(real) => {
                let mut out = real;
                for part in rest.iter().rev() {
                    out.push(part);
                }
                return Ok(out);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let (Some(parent), Some(name)) = (existing.parent(), existing.file_name()) else {
                    return Err(ConfigError::Resolve {
                        path: p.clone(),
                        source: e,
                    });
                };
                rest.push(name.to_owned());
                existing = parent;
            }
            Err(source) => {
                return Err(ConfigError::Resolve {
                    path: p.clone(),
                    source,
                });
            }
        }
    }
}

/// Every path of SPEC section 1, resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Layout {
    pub base: PathBuf,
    pub j: PathBuf,
    pub js: PathBuf,
    pub mroot: PathBuf,
    pub mroot2: PathBuf,
    pub skel: PathBuf,
    pub state: PathBuf,
    pub journal: PathBuf,
    pub history: PathBuf,
    pub lock: PathBuf,
    pub manifests: PathBuf,
    pub jails: PathBuf,
}

impl Layout {
    pub fn new(cfg: &Config) -> Result<Layout, ConfigError> {
        // The state dir's own name must not be a symlink (resolving it
        // would put the journal and the lock wherever it points); the
        // admin's directories above it may be.
        if std::fs::symlink_metadata(&cfg.state_dir).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(ConfigError::Invalid(format!(
                "state dir {} is a symlink; remove it or make it a root-owned directory with mode 0700",
                cfg.state_dir.display()
            )));
        }
        let base = physical(&cfg.base)?;
        let state = physical(&cfg.state_dir)?;
        let j = base.join("j");
        Ok(Layout {
            mroot: j.join("mroot"),
            mroot2: j.join("mroot2"),
            skel: j.join("skel"),
            js: base.join("js"),
            j,
            base,
            journal: state.join("journal"),
            history: state.join("history"),
            lock: state.join("lock"),
            manifests: state.join("manifests"),
            jails: state.join("jails"),
            state,
        })
    }

    /// The `n`th rotated history file (`history.1` is the newest rotated one).
    pub fn history_rotated(&self, n: u32) -> PathBuf {
        self.state.join(format!("history.{n}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_0_is_one_thread_per_cpu_and_257_is_refused() {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let p = Path::new("jailtx.toml");
        let default = Config::parse("", p).unwrap();
        assert_eq!(default.upgrade.threads(), cpus);
        let three = Config::parse("[upgrade]\nparallel = 3\n", p).unwrap();
        assert_eq!(three.upgrade.threads(), 3);
        let err = Config::parse("[upgrade]\nparallel = 257\n", p).unwrap_err();
        assert!(err.to_string().contains("upgrade.parallel"), "{err}");
    }

    #[test]
    fn a_stop_timeout_of_0_is_no_grace() {
        // jail(8) (command.c term_procs): stop.timeout = 0 sends no SIGTERM
        // and removes the jail at once.
        assert_eq!(stop_grace(0), std::time::Duration::ZERO);
        assert_eq!(stop_grace(10), std::time::Duration::from_secs(10));
        assert_eq!(stop_grace(u64::MAX), std::time::Duration::from_secs(3600));
    }

    #[test]
    fn freebsd_interface_is_checked() {
        for ok in [
            "",
            "em0",
            "vtnet0",
            "lagg0.100",
            "bridge0",
            "epair0a",
            "wg_home",
        ] {
            let text = format!("[freebsd]\ninterface = {ok:?}\n");
            assert!(Config::parse(&text, Path::new("/c.toml")).is_ok(), "{ok}");
        }
        for bad in [
            "em0 up",
            "em0;reboot",
            "-em0",
            "0em",
            "em0\n",
            "a_name_of_16_byt",
            "em0\"",
            "em$0",
        ] {
            let text = format!("[freebsd]\ninterface = {bad:?}\n");
            let e = Config::parse(&text, Path::new("/c.toml")).unwrap_err();
            let msg = e.to_string();
            assert!(msg.contains("freebsd.interface"), "{bad}: {msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn control_characters_in_paths_are_refused() {
        for key in ["base", "state_dir"] {
            let text = format!("{key} = \"/a\\nb\"\n");
            let msg = Config::parse(&text, Path::new("/c.toml"))
                .unwrap_err()
                .to_string();
            assert!(msg.contains(key) && !msg.contains('\n'), "{msg}");
        }
        for key in ["jail_conf_dir", "fstab_dir"] {
            for bad in ["/etc/a\\nb", "/etc/a\\rb", "/etc/\\u0000", "/etc/\\u007f"] {
                let text = format!("[freebsd]\n{key} = \"{bad}\"\n");
                let msg = Config::parse(&text, Path::new("/c.toml"))
                    .unwrap_err()
                    .to_string();
                assert!(msg.contains(key) && !msg.contains('\n'), "{msg}");
            }
        }
        let root = Sources {
            root: Some("/nonexistent-jailtx/a\nb".into()),
            config: None,
        };
        let msg = Config::load(&root).unwrap_err().to_string();
        assert!(msg.contains("control character"), "{msg}");
        let ok = "[freebsd]\njail_conf_dir = \"/etc/jail conf.d\"\n";
        assert!(Config::parse(ok, Path::new("/c.toml")).is_ok());
    }

    #[test]
    fn unknown_key_is_refused_in_one_line() {
        let e = Config::parse("bsae = \"/x\"\n", Path::new("/c.toml")).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("config /c.toml: unknown field `bsae`"),
            "{msg}"
        );
        assert!(!msg.contains('\n'));
    }

    #[test]
    fn carry_over_must_stay_inside_the_template() {
        for bad in ["carry_over = [\"../x\"]", "carry_over = [\"/usr/ports\"]"] {
            assert!(Config::parse(bad, Path::new("c")).is_err(), "{bad}");
        }
        let ok =
            Config::parse("carry_over = [\"usr/ports\", \"usr/src\"]", Path::new("c")).unwrap();
        assert_eq!(ok.carry_over.len(), 2);
    }

    #[test]
    fn physical_resolves_symlinked_prefix_of_missing_path() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("usr-home");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, d.path().join("home")).unwrap();
        let p = physical(&d.path().join("home/j/mroot")).unwrap();
        assert_eq!(p, real.canonicalize().unwrap().join("j/mroot"));
    }

    #[test]
    fn log_max_bytes_has_a_range() {
        let c = |v: &str| Config::parse(&format!("[jail]\nlog_max_bytes = {v}\n"), Path::new("c"));
        assert_eq!(Config::default().jail.log_max_bytes, 4 << 20);
        assert_eq!(c("65536").unwrap().jail.log_max_bytes, 65536);
        assert_eq!(c("1073741824").unwrap().jail.log_max_bytes, 1 << 30);
        for bad in ["0", "65535", "1073741825", "18446744073709551615"] {
            let e = c(bad).unwrap_err().to_string();
            assert!(e.contains("jail.log_max_bytes"), "{bad}: {e}");
        }
    }

    #[test]
    fn root_overrides_base_and_state() {
        let d = tempfile::tempdir().unwrap();
        let cfg = Config::load(&Sources {
            root: Some(d.path().to_owned()),
            config: None,
        })
        .unwrap();
        assert_eq!(cfg.base, d.path());
        assert_eq!(cfg.state_dir, d.path().join(".jailtx"));
    }
}
