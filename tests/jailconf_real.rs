//! Every jail.conf(5) file jailtx writes, read by FreeBSD's own parser
//! (issue 14): `jailconf-parse` is usr.sbin/jail's lexer, grammar,
//! `config.c` and `state.c` built on Linux from `../shared/tools/` by
//! `scripts/test`, which exports its path as `JAILTX_TEST_JAILCONF_PARSE`.
//! Each conf must load with exactly the parameters jailtx meant, and
//! `jail -f CONF -c NAME` / `-r NAME` must run the command sequence in the
//! golden files under `tests/golden/jailconf/` (`JAILTX_BLESS=1` rewrites
//! them on purpose). A missing tool fails every test here: never a skip.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use jailtx::config::Config;

/// The parser `scripts/test` built; else the copy a previous run left in
/// `target/`. Missing: a failure that says how to get it.
fn tool() -> PathBuf {
    let p = std::env::var_os("JAILTX_TEST_JAILCONF_PARSE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/jailconf-parse/jailconf-parse")
        });
    assert!(
        p.is_file(),
        "{} is missing: run the tests through scripts/test, which builds FreeBSD's jail.conf \
         parser from ../shared/tools/jailconf-parse (needs byacc, flex, libbsd-dev)",
        p.display()
    );
    p
}

/// One parameter as jail(8) loaded it: its name, its flags (`[kernel]`,
/// `[internal,bool]`, …) and its values (`None`: a bare boolean).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Param {
    name: String,
    flags: String,
    values: Option<Vec<String>>,
}

fn param(name: &str, flags: &str, value: Option<&str>) -> Param {
    Param {
        name: name.to_owned(),
        flags: flags.to_owned(),
        values: value.map(|v| vec![v.to_owned()]),
    }
}

/// Reads one `"..."` of the tool's output (C escapes, as its
/// `dump_string` writes them) from the front of `s`; returns it and the rest.
fn dump_string(s: &[u8]) -> (Vec<u8>, &[u8]) {
    assert_eq!(s.first(), Some(&b'"'), "{}", String::from_utf8_lossy(s));
    let mut out = Vec::new();
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'"' => return (out, &s[i + 1..]),
            b'\\' => {
                i += 1;
                match s[i] {
                    b'n' => out.push(b'\n'),
                    b't' => out.push(b'\t'),
                    b'0'..=b'7' => {
                        let oct = std::str::from_utf8(&s[i..i + 3]).unwrap();
                        out.push(u8::from_str_radix(oct, 8).unwrap());
                        i += 2;
                    }
                    c => out.push(c),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    panic!("unterminated string in {}", String::from_utf8_lossy(s));
}

/// `jailconf-parse FILE`: each jail's name and parameters, in file order;
/// fails the test when jail(8) would refuse the file.
fn load(conf: &Path) -> Vec<(String, Vec<Param>)> {
    let out = Command::new(tool()).arg(conf).output().unwrap();
    assert!(
        out.status.success(),
        "jail(8) refuses {}: {}{}",
        conf.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("FAILED") && !text.contains("BAD"), "{text}");
    let mut jails: Vec<(String, Vec<Param>)> = Vec::new();
    for line in out.stdout.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix(b"jail ") {
            let (name, _) = dump_string(rest);
            jails.push((String::from_utf8(name).unwrap(), Vec::new()));
            continue;
        }
        let line = line.strip_prefix(b"  ").expect("a parameter line");
        let name_end = line.iter().position(|b| *b == b' ').unwrap();
        let name = String::from_utf8(line[..name_end].to_vec()).unwrap();
        let mut rest = &line[name_end + 1..];
        let mut flags = String::new();
        if rest.starts_with(b"[") {
            let end = rest.iter().position(|b| *b == b']').unwrap();
            flags = String::from_utf8(rest[..=end].to_vec()).unwrap();
            rest = &rest[end + 1..];
        }
        let values = if rest == b" (no value)" {
            None
        } else {
            rest = rest.strip_prefix(b" =").expect("` = ` or ` (no value)`");
            let mut vals = Vec::new();
            while let Some(r) = rest.strip_prefix(b" ") {
                let (v, r) = dump_string(r);
                vals.push(String::from_utf8_lossy(&v).into_owned());
                rest = r.strip_prefix(b",").unwrap_or(r);
            }
            assert!(rest.is_empty(), "{}", String::from_utf8_lossy(rest));
            Some(vals)
        };
        jails.last_mut().unwrap().1.push(Param {
            name,
            flags,
            values,
        });
    }
    jails
}

/// What jailtx means to write for one jail: the parameters, in order.
struct Intent<'a> {
    name: &'a str,
    path: String,
    hostname: &'a str,
    ip: &'a str,
    interface: &'a str,
    exec_start: &'a str,
    exec_stop: &'a str,
    stop_timeout: u64,
}

impl Intent<'_> {
    fn params(&self) -> Vec<Param> {
        let family = if self.ip.contains(':') {
            "ip6.addr"
        } else {
            "ip4.addr"
        };
        let mut p = vec![
            param("name", "[immutable,kernel]", Some(self.name)),
            param("path", "[kernel]", Some(&self.path)),
            param("host.hostname", "[kernel]", Some(self.hostname)),
            param(family, "[kernel]", Some(self.ip)),
        ];
        if !self.interface.is_empty() {
            p.push(param("interface", "[internal]", Some(self.interface)));
        }
        p.push(param("mount.devfs", "[internal,bool]", None));
        p.push(param("exec.clean", "[internal,bool]", None));
        p.push(param("exec.start", "[internal]", Some(self.exec_start)));
        p.push(param("exec.stop", "[internal]", Some(self.exec_stop)));
        let t = self.stop_timeout.to_string();
        p.push(param("stop.timeout", "[internal,int]", Some(&t)));
        p
    }
}

/// Collects golden comparisons under `tests/golden/jailconf/DIR`; blesses
/// or reports them all at once, and finds stale files.
struct Goldens {
    dir: PathBuf,
    bless: bool,
    failed: Vec<String>,
    seen: Vec<PathBuf>,
}

impl Goldens {
    fn new(dir: &str) -> Self {
        Goldens {
            dir: Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/golden/jailconf")
                .join(dir),
            bless: std::env::var_os("JAILTX_BLESS").is_some_and(|v| v == "1"),
            failed: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn check(&mut self, rel: &str, actual: &str) {
        let path = self.dir.join(rel);
        self.seen.push(path.clone());
        if self.bless {
            std::fs::create_dir_all(&self.dir).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            self.failed.push(format!(
                "{}:\n--- golden\n{expected}--- now\n{actual}",
                path.display()
            ));
        }
    }

    fn finish(self) {
        if self.bless {
            return;
        }
        assert!(
            self.failed.is_empty(),
            "jail(8)'s command sequence differs (JAILTX_BLESS=1 rewrites the goldens if the change is meant):\n{}",
            self.failed.join("\n")
        );
        for e in std::fs::read_dir(&self.dir).unwrap().flatten() {
            assert!(
                self.seen.contains(&e.path()),
                "{} is produced by no case",
                e.path().display()
            );
        }
    }
}

/// `jail -f CONF -OP NAME` through jail(8)'s own option parsing and jail
/// selection: the kernel parameters and the commands, in order, with
/// `root` (the scratch directory) written as `ROOT`.
fn jail_argv(conf: &Path, op: &str, name: &str, root: &str) -> String {
    let out = Command::new(tool())
        .args(["--argv", "jail", "-f"])
        .arg(conf)
        .args([op, name])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace(root, "ROOT");
    assert!(
        out.status.success() && text.contains("=> exit 0"),
        "jail -f {} {op} {name}: {text}{}",
        conf.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// The Handbook's three golden confs load with exactly the intended
/// parameters, and jail(8) would start and stop each as the goldens say.
#[test]
fn golden_confs_load_as_intended() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/freebsd");
    let mut g = Goldens::new("handbook");
    for (name, hostname, ip) in [
        ("ns", "ns.example.org", "192.168.3.17"),
        ("mail", "mail.example.org", "192.168.3.18"),
        ("www", "www.example.org", "62.123.43.14"),
    ] {
        let conf = dir.join(format!("etc/jail.conf.d/{name}.conf"));
        let intent = Intent {
            name,
            path: format!("/usr/home/j/{name}"),
            hostname,
            ip,
            interface: "",
            exec_start: "/bin/sh /etc/rc",
            exec_stop: "/bin/sh /etc/rc.shutdown jail",
            stop_timeout: 10,
        };
        assert_eq!(load(&conf), [(name.to_owned(), intent.params())]);
        let root = dir.display().to_string();
        for (op, what) in [("-c", "create"), ("-r", "remove")] {
            g.check(
                &format!("{name}-{what}.txt"),
                &jail_argv(&conf, op, name, &root),
            );
        }
    }
    g.finish();
}

/// A scratch host: BASE (any path), a state dir, a conf dir, and a
/// template, so that `jailtx --backend freebsd --dry-run jail create`
/// renders the conf it would write.
struct Host {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    config: PathBuf,
}

impl Host {
    fn new(base_name: &str, tune: impl FnOnce(&mut Config)) -> Host {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().canonicalize().unwrap();
        let mut cfg = Config {
            base: root.join(base_name),
            state_dir: root.join("state"),
            ..Config::default()
        };
        cfg.freebsd.jail_conf_dir = root.join("etc/jail.conf.d");
        cfg.freebsd.fstab_dir = root.join("etc");
        tune(&mut cfg);
        std::fs::create_dir_all(&cfg.base).unwrap();
        let config = root.join("jailtx.toml");
        std::fs::write(&config, toml::to_string(&cfg).unwrap()).unwrap();
        let host = Host {
            _tmp: tmp,
            root,
            config,
        };
        host.ok(&["init"]);
        let world = host.root.join("world");
        for d in ["bin", "etc", "dev", "var", "tmp", "root", "usr/bin"] {
            std::fs::create_dir_all(world.join(d)).unwrap();
        }
        std::fs::write(world.join("bin/sh"), "#!/bin/sh\n").unwrap();
        std::fs::write(world.join("etc/rc"), "#!/bin/sh\n").unwrap();
        host.ok(&["template", "build", "--from-dir", world.to_str().unwrap()]);
        host
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = support::jailtx::<&str>(&[])
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "jailtx {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The `NAME.conf` that `jail create` would write, from the FreeBSD
    /// dry run's JSON transcript; saved under the scratch root.
    fn conf(&self, name: &str, hostname: &str, ip: &str) -> PathBuf {
        let out = self.ok(&[
            "--json",
            "--backend",
            "freebsd",
            "--dry-run",
            "jail",
            "create",
            name,
            "--hostname",
            hostname,
            "--ip",
            ip,
        ]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let step = format!("conf-{name}");
        let text = v["commands"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["kind"] == "file" && c["name"] == step.as_str())
            .and_then(|c| c["contents"].as_str())
            .unwrap_or_else(|| panic!("no {step} file in {out}"))
            .to_owned();
        let path = self.root.join(format!("{name}.conf"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

/// 63 characters, every one a jail name may hold.
fn longest_name() -> String {
    let chars = "Aa0_-Zz9";
    chars.chars().cycle().take(63).collect()
}

/// 253 characters in labels of 63, every letter, digit and inner hyphen.
fn longest_hostname() -> String {
    let alphabet: Vec<char> = ('a'..='z').chain('A'..='Z').chain('0'..='9').collect();
    let mut chars = alphabet.iter().cycle();
    let mut label = |n: usize| -> String {
        let mut l: String = (0..n).map(|_| *chars.next().unwrap()).collect();
        l.replace_range(n / 2..n / 2 + 1, "-");
        l
    };
    let h = format!("{}.{}.{}.{}", label(63), label(63), label(63), label(61));
    assert_eq!(h.len(), 253);
    h
}

/// One extreme: its name, BASE's last component, the config's changes,
/// then the jail's name, hostname and address.
type Case<'a> = (
    &'a str,
    &'a str,
    Box<dyn Fn(&mut Config) + 'a>,
    &'a str,
    &'a str,
    &'a str,
);

/// The extremes `jail create` and the config accept, rendered by jailtx
/// itself, load as intended and run as the goldens say.
#[test]
fn generated_confs_at_the_extremes_load_as_intended() {
    let mut g = Goldens::new("extremes");
    let name = longest_name();
    let hostname = longest_hostname();
    let hostile_exec = "/bin/sh -c 'echo \"$HOME ${HOME}\" \\\\; exit 0' #\ttab";
    let cases: Vec<Case> = vec![
        (
            "longest",
            "base",
            Box::new(|_| {}),
            &name,
            &hostname,
            "10.0.0.1",
        ),
        (
            "hostile-base",
            "b a$s#h\"q'\\${HOME}",
            Box::new(|_| {}),
            "ns",
            "ns.example.org",
            "192.168.3.17",
        ),
        (
            // Control characters in BASE are refused at config load (a
            // newline would break jail.conf's comment lines); what remains
            // beyond ASCII is multi-byte text.
            "unicode-base",
            "b\u{e9}\u{2028}\u{1f600}",
            Box::new(|_| {}),
            "ns",
            "ns.example.org",
            "192.168.3.17",
        ),
        (
            "v6-interface",
            "base",
            Box::new(|c| {
                c.freebsd.interface = "em0".into();
                c.jail.exec_start = hostile_exec.into();
                c.jail.exec_stop = hostile_exec.replace("exit 0", "exit 1");
                c.jail.stop_timeout_secs = 3600;
            }),
            "v6",
            "v6.example.org",
            "2001:db8::17",
        ),
    ];
    for (case, base_name, tune, name, hostname, ip) in cases {
        let mut cfg_seen = Config::default();
        let host = Host::new(base_name, |c| {
            tune(c);
            cfg_seen = c.clone();
        });
        let conf = host.conf(name, hostname, ip);
        let intent = Intent {
            name,
            path: cfg_seen.base.join("j").join(name).display().to_string(),
            hostname,
            ip,
            interface: &cfg_seen.freebsd.interface,
            exec_start: &cfg_seen.jail.exec_start,
            exec_stop: &cfg_seen.jail.exec_stop,
            stop_timeout: cfg_seen.jail.stop_timeout_secs,
        };
        assert_eq!(
            load(&conf),
            [(name.to_owned(), intent.params())],
            "{case}: {}",
            std::fs::read_to_string(&conf).unwrap()
        );
        let root = host.root.display().to_string();
        for (op, what) in [("-c", "create"), ("-r", "remove")] {
            g.check(
                &format!("{case}-{what}.txt"),
                &jail_argv(&conf, op, name, &root),
            );
        }
    }
    g.finish();
}

/// `quote()` against jail(8)'s lexer: every ASCII character, the C1
/// controls and a few multi-byte ones come back byte for byte.
#[test]
fn quoted_values_round_trip_through_the_lexer() {
    let mut values: Vec<String> = (1u8..=0x7f)
        .map(|b| format!("a{}b", char::from(b)))
        .collect();
    values.extend(
        (0x80u32..=0x9f)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b")),
    );
    values.extend(["é ü €", "\u{2028}\u{feff}", "${x}", "$$", "\\\"", "😀"].map(String::from));
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("q.conf");
    let mut text = String::from("q {\n");
    for v in &values {
        text.push_str(&format!(
            "\texec.start += {};\n",
            jailtx::host::freebsd_conf::quote(v)
        ));
    }
    text.push_str("}\n");
    std::fs::write(&conf, &text).unwrap();
    let jails = load(&conf);
    let start = jails[0].1.iter().find(|p| p.name == "exec.start").unwrap();
    assert_eq!(start.values.as_ref().unwrap(), &values, "{text}");
}
