//! The periodic(8) security scripts (issue 14, item 4):
//! `contrib/periodic/security/480.jailtx-audit` (quick, daily) and
//! `481.jailtx-audit-full` (full, weekly), run here by dash and busybox sh
//! against a scratch `--root`, with a stand-in `/etc/defaults/periodic.conf`
//! and an operator's `/etc/periodic.conf` bind-mounted on `/etc` in a
//! private mount namespace (the scripts read those fixed paths, as
//! FreeBSD's own do). They must stay silent with exit 0 on a clean
//! template, report a changed file with exit 1, stay silent when their knob
//! is off or the period is not theirs, and exit 2 or 3 (periodic's "bad
//! config" and "never masked") when they cannot audit. With
//! `security_status_jailtx_metrics_file` (issue 17) each audit refreshes
//! that `jailtx metrics` file for node_exporter.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::Root;

const QUICK: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/periodic/security/480.jailtx-audit"
);
const FULL: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/contrib/periodic/security/481.jailtx-audit-full"
);

/// The part of FreeBSD's /etc/defaults/periodic.conf the scripts use, as
/// periodic.conf(5) describes it: `source_periodic_confs` reads the files in
/// `periodic_conf_files`; `check_yesno_period KNOB_enable` is true when the
/// knob says YES and `KNOB_period` names the run in `$PERIODIC` ("security
/// daily" from the daily run...), or for any period but NO when the security
/// run is started directly, or always when the script is run by hand.
const DEFAULTS: &str = r#"
periodic_conf_files="/etc/periodic.conf"
security_show_success="YES"
security_show_info="YES"
security_show_badconfig="NO"
source_periodic_confs() {
	for f in $periodic_conf_files; do
		[ -r "$f" ] && . "$f"
	done
}
check_yesno_period() {
	eval value=\"\$$1\"
	case "$value" in [Yy][Ee][Ss]) ;; *) return 1 ;; esac
	eval period=\"\$${1%enable}period\"
	case "$PERIODIC" in
	"security daily"|"security weekly"|"security monthly")
		[ "$period" = "${PERIODIC#security }" ] ;;
	security) [ "$period" != "NO" ] ;;
	"") return 0 ;;
	*) echo "unexpected PERIODIC '$PERIODIC'" >&2; exit 127 ;;
	esac
}
"#;

/// A root with a template built from a small world, and the stand-in /etc.
struct Setup {
    root: Root,
    etc: PathBuf,
}

impl Setup {
    fn new() -> Setup {
        let root = Root::fresh();
        let world = root.scratch.join("world");
        for d in [
            "bin",
            "etc",
            "usr/bin",
            "usr/share/misc",
            "var",
            "tmp",
            "root",
        ] {
            std::fs::create_dir_all(world.join(d)).unwrap();
        }
        std::fs::write(world.join("bin/sh"), b"shell\n").unwrap();
        std::fs::write(world.join("usr/bin/env"), b"env binary\n").unwrap();
        std::fs::write(world.join("usr/share/misc/version"), b"world 1\n").unwrap();
        root.template(&world);
        let etc = root.scratch.join("etc");
        std::fs::create_dir_all(etc.join("defaults")).unwrap();
        std::fs::write(etc.join("defaults/periodic.conf"), DEFAULTS).unwrap();
        Setup { root, etc }
    }

    /// The operator's /etc/periodic.conf: `knobs`, and the flags that point
    /// the scripts at this root.
    fn conf(&self, program: &str, knobs: &str) {
        let text = format!(
            "security_status_jailtx_program=\"{program}\"\n\
             security_status_jailtx_flags=\"--root {}\"\n{knobs}",
            self.root.root.display()
        );
        std::fs::write(self.etc.join("periodic.conf"), text).unwrap();
    }

    /// Changes one byte of a template file (its size stays the same).
    fn tamper(&self) {
        std::fs::write(self.root.path("j/mroot/usr/bin/env"), b"env binarY\n").unwrap();
    }
}

/// Runs `script` with `shell` as periodic would (`PERIODIC` set, stdin
/// closed), with `etc` mounted on /etc in a mount namespace of its own:
/// the exit code and everything it printed.
fn run(shell: &str, script: &str, etc: &Path, periodic: &str) -> (i32, String) {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(r#"mount --bind "$1" /etc && shift && exec "$@" 2>&1"#)
        .arg("sh")
        .arg(etc)
        .args(shell.split(' '))
        .arg(script)
        .env("PERIODIC", periodic)
        .env_remove("JAILTX_ROOT")
        .env_remove("JAILTX_FAULT")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run unshare (util-linux)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = out
        .status
        .code()
        .unwrap_or_else(|| panic!("{script} killed: {text}"));
    (code, text)
}

const SHELLS: [&str; 2] = ["dash", "busybox sh"];
const BOTH_ON: &str = "security_status_jailtx_audit_enable=\"YES\"\n\
                       security_status_jailtx_audit_full_enable=\"YES\"\n";

#[test]
fn both_scripts_are_valid_sh() {
    for shell in SHELLS {
        for script in [QUICK, FULL] {
            let mut args: Vec<&str> = shell.split(' ').collect();
            args.push("-n");
            let st = Command::new(args[0])
                .args(&args[1..])
                .arg(script)
                .status()
                .unwrap_or_else(|e| panic!("run {shell}: {e}"));
            assert!(st.success(), "{shell} -n {script}");
        }
    }
}

#[test]
fn clean_is_silent_and_a_changed_byte_is_reported_with_exit_1() {
    let s = Setup::new();
    s.conf(support::BIN, BOTH_ON);
    for shell in SHELLS {
        for (script, period) in [(QUICK, "security daily"), (FULL, "security weekly")] {
            let (code, out) = run(shell, script, &s.etc, period);
            assert_eq!(
                (code, out.as_str()),
                (0, ""),
                "{shell} {script} on a clean template"
            );
        }
    }
    s.tamper();
    for shell in SHELLS {
        for (script, period, what) in [
            (QUICK, "security daily", "jailtx audit --quick --all"),
            (FULL, "security weekly", "jailtx audit --all"),
        ] {
            let (code, out) = run(shell, script, &s.etc, period);
            assert_eq!(code, 1, "{shell} {script}: {out}");
            assert!(
                out.starts_with(&format!(
                    "\njailtx templates that differ from their manifests ({what}):\n"
                )),
                "{shell} {script}: {out}"
            );
            assert!(out.contains("/usr/bin/env"), "{shell} {script}: {out}");
            assert!(out.contains("content"), "{shell} {script}: {out}");
        }
    }
}

#[test]
fn knob_off_or_another_period_is_silent_even_with_drift() {
    let s = Setup::new();
    s.tamper();
    for knobs in [
        "",
        "security_status_jailtx_audit_enable=\"NO\"\nsecurity_status_jailtx_audit_full_enable=\"no\"\n",
    ] {
        s.conf(support::BIN, knobs);
        for (script, period) in [
            (QUICK, "security daily"),
            (FULL, "security weekly"),
            (QUICK, ""),
        ] {
            let (code, out) = run("dash", script, &s.etc, period);
            assert_eq!((code, out.as_str()), (0, ""), "{script} with {knobs:?}");
        }
    }
    // On, but the daily script in the weekly run and the reverse: not theirs.
    s.conf(support::BIN, BOTH_ON);
    for (script, period) in [(QUICK, "security weekly"), (FULL, "security daily")] {
        let (code, out) = run("dash", script, &s.etc, period);
        assert_eq!((code, out.as_str()), (0, ""), "{script} in {period:?}");
    }
    // A period moved by the operator is followed.
    s.conf(
        support::BIN,
        &format!("{BOTH_ON}security_status_jailtx_audit_period=\"weekly\"\n"),
    );
    let (code, out) = run("dash", QUICK, &s.etc, "security weekly");
    assert_eq!(code, 1, "{out}");
}

#[test]
fn a_missing_binary_is_bad_config_and_a_failed_audit_is_never_masked() {
    let s = Setup::new();
    s.conf("/nonexistent/bin/jailtx", BOTH_ON);
    let (code, out) = run("dash", QUICK, &s.etc, "security daily");
    assert_eq!(code, 2, "{out}");
    assert!(
        out.contains("/nonexistent/bin/jailtx") && out.contains("security_status_jailtx_program"),
        "{out}"
    );
    // A corrupt manifest: jailtx exits 2, the script 3 (periodic never masks it).
    s.conf(support::BIN, BOTH_ON);
    let manifest = s.root.manifests_dir().join("mroot.manifest");
    std::fs::write(&manifest, b"not a manifest").unwrap();
    for (script, period) in [(QUICK, "security daily"), (FULL, "security weekly")] {
        let (code, out) = run("dash", script, &s.etc, period);
        assert_eq!(code, 3, "{script}: {out}");
        assert!(out.contains("jailtx audit could not run"), "{out}");
        assert!(out.contains("exit 2"), "{out}");
        assert!(out.contains("mroot.manifest"), "{out}");
    }
}

#[test]
fn installed_scripts_find_the_installed_binary() {
    let s = Setup::new();
    let dest = s.root.scratch.join("dest");
    support::install_into(&dest);
    let dir = dest.join("usr/local/etc/periodic/security");
    for name in ["480.jailtx-audit", "481.jailtx-audit-full"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &dir.join(name).metadata().unwrap().permissions(),
        );
        assert_eq!(mode & 0o7777, 0o555, "{name}");
    }
    // No program knob: PREFIX/bin/jailtx beside the script's PREFIX.
    std::fs::write(
        s.etc.join("periodic.conf"),
        format!(
            "{BOTH_ON}security_status_jailtx_flags=\"--root {}\"\n",
            s.root.root.display()
        ),
    )
    .unwrap();
    s.tamper();
    for (name, period) in [
        ("480.jailtx-audit", "security daily"),
        ("481.jailtx-audit-full", "security weekly"),
    ] {
        let script = dir.join(name);
        let (code, out) = run("dash", script.to_str().unwrap(), &s.etc, period);
        assert_eq!(code, 1, "{name}: {out}");
        assert!(out.contains("/usr/bin/env"), "{name}: {out}");
    }
}

/// The value of the sample `key` (name and labels as written) in the
/// metrics file `path`.
fn sample(path: &Path, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ').map(str::to_owned))
}

#[test]
fn the_metrics_file_is_refreshed_after_each_audit() {
    let s = Setup::new();
    let dir = s.root.scratch.join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("jailtx.prom");
    // Knob unset: no file.
    s.conf(support::BIN, BOTH_ON);
    let (code, out) = run("dash", QUICK, &s.etc, "security daily");
    assert_eq!((code, out.as_str()), (0, ""));
    assert!(!file.exists(), "written without the knob");

    let knob = format!(
        "{BOTH_ON}security_status_jailtx_metrics_file=\"{}\"\n",
        file.display()
    );
    s.conf(support::BIN, &knob);
    let drift = "jailtx_template_drift_differences{template=\"mroot\"}";
    let full = "jailtx_template_last_audit_full{template=\"mroot\"}";
    for shell in SHELLS {
        let (code, out) = run(shell, QUICK, &s.etc, "security daily");
        assert_eq!((code, out.as_str()), (0, ""), "{shell}: clean, silent");
        assert_eq!(sample(&file, drift).as_deref(), Some("0"), "{shell}");
        assert_eq!(sample(&file, full).as_deref(), Some("0"), "{shell}");
        let mode = std::os::unix::fs::PermissionsExt::mode(&file.metadata().unwrap().permissions());
        assert_eq!(mode & 0o7777, 0o644);
        std::fs::remove_file(&file).unwrap();
    }
    s.tamper();
    let (code, out) = run("dash", QUICK, &s.etc, "security daily");
    assert_eq!(code, 1, "{out}");
    assert_eq!(sample(&file, drift).as_deref(), Some("1"), "{out}");
    assert_eq!(sample(&file, full).as_deref(), Some("0"));
    let (code, out) = run("busybox sh", FULL, &s.etc, "security weekly");
    assert_eq!(code, 1, "{out}");
    assert_eq!(sample(&file, drift).as_deref(), Some("1"), "{out}");
    assert_eq!(
        sample(&file, full).as_deref(),
        Some("1"),
        "the full audit's record"
    );

    // A file that cannot be written: never masked (exit 3), after the
    // audit's own report.
    let nowhere = s.root.scratch.join("nowhere/jailtx.prom");
    s.conf(
        support::BIN,
        &format!(
            "{BOTH_ON}security_status_jailtx_metrics_file=\"{}\"\n",
            nowhere.display()
        ),
    );
    let (code, out) = run("dash", QUICK, &s.etc, "security daily");
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("/usr/bin/env"),
        "the drift report first: {out}"
    );
    assert!(
        out.contains(&format!(
            "jailtx metrics could not write {}",
            nowhere.display()
        )) && out.contains("is not a directory"),
        "{out}"
    );
}
