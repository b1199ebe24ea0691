//! The FreeBSD backend proven by transcripts (issue 6): the Handbook's
//! scenario — base `/usr/home`, jails `ns`, `mail`, `www` — planned by the
//! library, turned into the exact commands and files, and compared with the
//! golden files under `tests/golden/freebsd/` that an administrator reads
//! line by line. `JAILTX_BLESS=1 cargo test --test freebsd_golden` rewrites
//! them on purpose.
//!
//! The plans are made against a scratch root that mirrors a FreeBSD host
//! (`ROOT/usr/home`, `ROOT/var/db/jailtx`, `ROOT/etc`), and every step is
//! carried out: file work for real under ROOT, mounts and jails on a
//! simulated FreeBSD host (`host::freebsd_sim`) that refuses what FreeBSD
//! refuses. So each plan is made from the state the previous one left, the
//! commands the backend ran are checked against the transcript step by step,
//! and the transcripts are printed with ROOT taken off every path.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use jailtx::engine::transcript::{self, Transcript};
use jailtx::engine::{Action, Plan, action};
use jailtx::host::freebsd::{parse_fstab, parse_jls, parse_mount_p};
use jailtx::host::freebsd_sim::{SimFreeBsd, is_query};
use jailtx::ops::jail::{self as jails};
use jailtx::ops::{init, template, upgrade};
use jailtx::plan::JailName;
use jailtx::world::Source;
use support::freebsd::SimHost as Scene;

/// The archive date of the upgrade and the rollback: fixed, so the
/// transcripts never depend on the day they are made.
const DATE: &str = "20060601";
const JAILS: [(&str, &str, &str); 3] = [
    ("ns", "ns.example.org", "192.168.3.17"),
    ("mail", "mail.example.org", "192.168.3.18"),
    ("www", "www.example.org", "62.123.43.14"),
];
const INSTALLWORLD: &str = "make -C /usr/src installworld DESTDIR={dest}";

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/freebsd")
}

fn fixture(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/freebsd")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// A tiny FreeBSD-shaped world: what `jail -c` needs (`/bin/sh`, `/etc/rc`,
/// `/dev`) and the read-write directories the shaping moves.
fn make_world(dir: &Path, version: &str) {
    for d in [
        "bin",
        "dev",
        "etc",
        "lib",
        "libexec",
        "root",
        "tmp",
        "usr/bin",
        "usr/lib",
        "usr/share/misc",
        "var/empty",
        "var/log",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    for (f, text) in [
        ("bin/sh", "#!/fake/sh\n"),
        ("etc/rc", "#!/bin/sh\n"),
        ("etc/rc.shutdown", "#!/bin/sh\n"),
        ("lib/libc.so.7", "libc\n"),
        ("usr/share/misc/world-version", version),
    ] {
        std::fs::write(dir.join(f), text).unwrap();
    }
}

/// `base.txz` holding [`make_world`]'s world.
fn make_base_txz(to: &Path) {
    let src = tempfile::tempdir().unwrap();
    make_world(src.path(), "14.0-RELEASE\n");
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    let file = std::fs::File::create(to).unwrap();
    let xz = xz2::write::XzEncoder::new(file, 1);
    let mut tar = tar::Builder::new(xz);
    tar.append_dir_all(".", src.path()).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

impl Scene {
    fn new() -> Scene {
        // `make installworld DESTDIR=…` on the simulated host.
        let hook = Arc::new(|cmd: &str, env: &BTreeMap<String, String>| {
            let dest = env.get("DESTDIR").ok_or("no DESTDIR")?;
            // The destination is never pasted into the line (issue 12): the
            // line names "${DEST}", and DEST is the side dir.
            let quoted = cmd.ends_with("DESTDIR=\"${DEST}\"");
            if !cmd.contains("installworld") || !quoted || env.get("DEST") != Some(dest) {
                return Err(format!("unexpected command {cmd}"));
            }
            make_world(Path::new(dest), "14.1-RELEASE\n");
            Ok(())
        });
        let scene = Scene::on("usr/home", SimFreeBsd::new().with_hook(hook));
        make_base_txz(&scene.root.join("usr/freebsd-dist/base.txz"));
        scene.apply(&init::plan(&scene.layout));
        scene
    }

    /// `text` with the scratch root taken off every path.
    fn unroot(&self, text: &str) -> String {
        text.replace(&self.root.display().to_string(), "")
    }

    fn transcript(&self, plan: &Plan) -> Transcript {
        transcript::of_plan(plan, &self.cfg.freebsd)
    }

    /// Carries out every step, checking that the commands the backend ran
    /// for it are the transcript's, in order.
    fn apply(&self, plan: &Plan) {
        plan.validate().unwrap();
        let t = self.transcript(plan);
        self.sim.take_log();
        for (i, step) in plan.steps.iter().enumerate() {
            let mut expected: Vec<Vec<String>> = t
                .commands()
                .filter(|e| e.step == i && !is_query(&e.argv))
                .map(|e| e.argv.clone())
                .collect();
            if let Action::ClearFlags { path } = &step.action
                && std::fs::symlink_metadata(path).is_err()
            {
                expected.clear();
            }
            action::apply(&step.action, &self.host)
                .unwrap_or_else(|e| panic!("{} step {i} {}: {e}", plan.op, step.name));
            let ran: Vec<Vec<String>> = self
                .sim
                .take_log()
                .into_iter()
                .filter(|a| !is_query(a))
                .collect();
            assert_eq!(ran, expected, "{} step {i} {}", plan.op, step.name);
        }
    }
}

/// Collects golden comparisons; blesses or reports them all at once.
struct Goldens {
    bless: bool,
    failed: Vec<String>,
    seen: Vec<PathBuf>,
}

impl Goldens {
    fn new() -> Self {
        Goldens {
            bless: std::env::var_os("JAILTX_BLESS").is_some_and(|v| v == "1"),
            failed: Vec::new(),
            seen: Vec::new(),
        }
    }

    fn check(&mut self, rel: &str, actual: &str) {
        let path = golden_dir().join(rel);
        self.seen.push(path.clone());
        if self.bless {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, actual).unwrap();
            return;
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        if expected != actual {
            let (n, (e, a)) = expected
                .lines()
                .chain(std::iter::repeat("<end of file>"))
                .zip(actual.lines().chain(std::iter::repeat("<end of file>")))
                .enumerate()
                .find(|(_, (e, a))| e != a)
                .unwrap_or((0, ("", "")));
            self.failed.push(format!(
                "{rel}: line {}:\n  golden: {e}\n  now:    {a}",
                n + 1
            ));
        }
    }

    fn finish(self) {
        if self.bless {
            return;
        }
        assert!(
            self.failed.is_empty(),
            "golden transcripts differ (JAILTX_BLESS=1 rewrites them if the change is meant):\n{}",
            self.failed.join("\n")
        );
        // A golden file no scenario produces any more is stale.
        let mut on_disk = Vec::new();
        let mut todo = vec![golden_dir()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                if e.path().is_dir() {
                    todo.push(e.path());
                } else {
                    on_disk.push(e.path());
                }
            }
        }
        for p in on_disk {
            assert!(
                self.seen.contains(&p),
                "{} is produced by no scenario",
                p.display()
            );
        }
    }
}

/// The position of the first entry of `t` whose line is `line`.
fn at(t: &[String], line: &str) -> usize {
    t.iter()
        .position(|l| l == line)
        .unwrap_or_else(|| panic!("no `{line}` in\n{}", t.join("\n")))
}

/// The window's order: the template renames (`renames`) first, while the
/// jails run on the old template under its archive name; then for every
/// jail on its own `jail -r`, `umount …/s`, `umount` of the root,
/// `mount -t nullfs -o ro`, `mount -t nullfs -o rw`, `jail -c`.
fn assert_window_order(t: &Transcript, renames: &[String]) {
    let lines: Vec<String> = t.entries.iter().map(|e| e.line.clone()).collect();
    let last_rename = renames.iter().map(|r| at(&lines, r)).max().unwrap();
    for (name, ..) in JAILS {
        let conf = format!("/etc/jail.conf.d/{name}.conf");
        let root = format!("/usr/home/j/{name}");
        let stop = at(&lines, &format!("jail -f {conf} -r -- {name}"));
        let umount_s = at(&lines, &format!("umount {root}/s"));
        let umount_root = at(&lines, &format!("umount {root}"));
        let mount_ro = at(
            &lines,
            &format!("mount -t nullfs -o ro /usr/home/j/mroot {root}"),
        );
        let mount_rw = at(
            &lines,
            &format!("mount -t nullfs -o rw /usr/home/js/{name} {root}/s"),
        );
        let start = at(&lines, &format!("jail -f {conf} -c -- {name}"));
        let order = [
            last_rename,
            stop,
            umount_s,
            umount_root,
            mount_ro,
            mount_rw,
            start,
        ];
        assert!(
            order.is_sorted(),
            "{name}: renames, stop, umount s, umount root, mount ro, mount rw, start: {order:?}"
        );
    }
}

#[test]
fn handbook_scenario_matches_the_golden_transcripts() {
    let s = Scene::new();
    let mut g = Goldens::new();
    let text = |t: &Transcript| s.unroot(&t.to_string());

    // The first template, from the release's base.txz.
    let base_txz = s.root.join("usr/freebsd-dist/base.txz");
    let plan = template::plan_build(&s.layout, Source::Tar(base_txz), &s.cfg.carry_over).unwrap();
    g.check("01-template-build.txt", &text(&s.transcript(&plan)));
    s.apply(&plan);
    // The Handbook's next step, outside jailtx: the ports tree into the template.
    std::fs::create_dir_all(s.layout.mroot.join("usr/ports")).unwrap();
    std::fs::write(s.layout.mroot.join("usr/ports/Makefile"), "# ports\n").unwrap();

    for (i, (name, hostname, ip)) in JAILS.iter().enumerate() {
        let plan = jails::plan_create(&s.site(), &jail(name), hostname, ip, false).unwrap();
        let t = s.transcript(&plan);
        g.check(&format!("0{}-create-{name}.txt", i + 2), &text(&t));
        s.apply(&plan);
        for file in [
            format!("etc/jail.conf.d/{name}.conf"),
            format!("etc/fstab.{name}"),
        ] {
            let written = std::fs::read_to_string(s.root.join(&file)).unwrap();
            g.check(&file, &s.unroot(&written));
        }
    }
    assert_eq!(s.sim.jail_names(), Vec::<String>::new());

    let plan = jails::plan_start(&s.site(), &[]).unwrap();
    g.check("05-start.txt", &text(&s.transcript(&plan)));
    s.apply(&plan);
    assert_eq!(s.sim.jail_names(), ["mail", "ns", "www"]);

    let (plan, _) = upgrade::plan_upgrade_on(
        &s.site(),
        Source::Cmd(INSTALLWORLD.into()),
        &upgrade::Canary::default(),
        DATE,
    )
    .unwrap();
    let t = s.transcript(&plan);
    g.check("06-upgrade.txt", &text(&t));
    let json = serde_json::to_string_pretty(&t.to_json()).unwrap() + "\n";
    g.check("06-upgrade.json", &s.unroot(&json));
    let unrooted: Transcript = {
        let mut u = t.clone();
        u.entries
            .iter_mut()
            .for_each(|e| e.line = s.unroot(&e.line));
        u
    };
    assert_window_order(
        &unrooted,
        &[
            "mv /usr/home/j/mroot /usr/home/j/mroot.20060601".into(),
            "mv /usr/home/j/mroot2 /usr/home/j/mroot".into(),
            "mv /usr/home/j/mroot.20060601/usr/ports /usr/home/j/mroot/usr/ports".into(),
        ],
    );
    // Every chflags before the shaping that removes what they guard.
    let lines: Vec<&str> = unrooted.entries.iter().map(|e| e.line.as_str()).collect();
    let shape_rm = lines
        .iter()
        .position(|l| l.starts_with("rm -rf /usr/home/j/mroot2/etc"))
        .unwrap();
    let chflags: Vec<usize> = (0..lines.len())
        .filter(|i| lines[*i].starts_with("chflags -R 0"))
        .collect();
    assert!(chflags.contains(&at(
        &lines.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        "chflags -R 0 /usr/home/j/mroot2/var"
    )));
    assert!(
        chflags.iter().all(|c| *c < shape_rm),
        "{chflags:?} < {shape_rm}"
    );
    s.apply(&plan);
    assert_eq!(s.sim.jail_names(), ["mail", "ns", "www"]);
    assert_eq!(
        std::fs::read_to_string(s.layout.mroot.join("usr/share/misc/world-version")).unwrap(),
        "14.1-RELEASE\n"
    );

    // The mirror: back to the archive the upgrade made, which is archived in turn.
    let (plan, _) = upgrade::plan_rollback_on(&s.site(), None, DATE).unwrap();
    let t = s.transcript(&plan);
    g.check("07-rollback.txt", &text(&t));
    let mut unrooted = t.clone();
    unrooted
        .entries
        .iter_mut()
        .for_each(|e| e.line = s.unroot(&e.line));
    assert_window_order(
        &unrooted,
        &[
            "mv /usr/home/j/mroot /usr/home/j/mroot.20060601.1".into(),
            "mv /usr/home/j/mroot.20060601 /usr/home/j/mroot".into(),
            "mv /usr/home/j/mroot.20060601.1/usr/ports /usr/home/j/mroot/usr/ports".into(),
        ],
    );
    s.apply(&plan);
    assert_eq!(
        std::fs::read_to_string(s.layout.mroot.join("usr/share/misc/world-version")).unwrap(),
        "14.0-RELEASE\n"
    );
    assert!(s.layout.mroot.join("usr/ports/Makefile").is_file());

    let plan = jails::plan_destroy(&s.site(), &jail("www"), false).unwrap();
    g.check("08-destroy-www.txt", &text(&s.transcript(&plan)));
    s.apply(&plan);
    assert_eq!(s.sim.jail_names(), ["mail", "ns"]);
    assert!(!s.root.join("etc/jail.conf.d/www.conf").exists());
    assert!(!s.root.join("etc/fstab.www").exists());
    assert!(
        s.layout.js.join("www/etc/rc").is_file(),
        "www's own data is kept"
    );
    let mounted: Vec<String> = s
        .sim
        .mount_points()
        .iter()
        .map(|p| s.unroot(&p.display().to_string()))
        .collect();
    assert!(
        !mounted.iter().any(|m| m.starts_with("/usr/home/j/www")),
        "{mounted:?}"
    );

    // --purge: the data goes too, its flags cleared first (skel's
    // var/empty is schg on FreeBSD).
    let plan = jails::plan_destroy(&s.site(), &jail("mail"), true).unwrap();
    g.check("09-destroy-purge-mail.txt", &text(&s.transcript(&plan)));
    s.apply(&plan);
    assert_eq!(s.sim.jail_names(), ["ns"]);
    assert!(!s.layout.js.join("mail").exists(), "mail's data is purged");
    assert!(!s.layout.js.join("mail.jailtx-destroyed").exists());

    g.finish();
}

/// The generated files say what jail(8) and fstab(5) need, by address family.
#[test]
fn generated_files_follow_jail_conf_and_fstab() {
    let s = Scene::new();
    let base_txz = s.root.join("usr/freebsd-dist/base.txz");
    s.apply(&template::plan_build(&s.layout, Source::Tar(base_txz), &s.cfg.carry_over).unwrap());
    let plan = jails::plan_create(
        &s.site(),
        &jail("v6"),
        "v6.example.org",
        "2001:db8::17",
        true,
    )
    .unwrap();
    s.apply(&plan);
    let conf = std::fs::read_to_string(s.root.join("etc/jail.conf.d/v6.conf")).unwrap();
    let params = jailtx::host::freebsd_conf::parse_conf(&conf, "v6").unwrap();
    assert_eq!(params["ip6.addr"], "2001:db8::17");
    assert!(!params.contains_key("ip4.addr"));
    assert_eq!(params["path"], s.layout.j.join("v6").display().to_string());
    for key in ["mount.devfs", "exec.clean"] {
        assert_eq!(params[key], "", "{key} is a bare boolean");
    }
    assert_eq!(params["exec.start"], "/bin/sh /etc/rc");
    assert_eq!(params["exec.stop"], "/bin/sh /etc/rc.shutdown jail");
    assert!(
        !params.contains_key("mount.fstab"),
        "jailtx mounts them itself"
    );
    let fstab = std::fs::read_to_string(s.root.join("etc/fstab.v6")).unwrap();
    let lines = parse_fstab(&fstab);
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0].dst.clone(), lines[0].options.as_str()),
        (s.layout.j.join("v6"), "ro")
    );
    assert_eq!(
        (lines[1].dst.clone(), lines[1].options.as_str()),
        (s.layout.j.join("v6/s"), "rw")
    );
    for l in fstab.lines().filter(|l| !l.starts_with('#')) {
        assert!(l.ends_with("\t0\t0"), "dump and pass 0: {l}");
    }
    // A file in the way is refused before anything changes.
    std::fs::write(s.root.join("etc/jail.conf.d/other.conf"), "# mine\n").unwrap();
    let e = jails::plan_create(
        &s.site(),
        &jail("other"),
        "o.example.org",
        "10.0.0.9",
        false,
    )
    .unwrap_err();
    let e = e.to_string();
    assert!(e.contains("other.conf already exists"), "{e}");
}

fn jail(name: &str) -> JailName {
    JailName::parse(name).unwrap()
}

/// `jls --libxo=json` and `mount -p` as the man pages document them.
#[test]
fn output_parsers_read_the_documented_formats() {
    let v = parse_jls(&fixture("jls-v.json")).unwrap();
    let names: Vec<&str> = v.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["ns", "mail", "www"]);
    assert_eq!(v[2].jid, 3);
    assert_eq!(v[2].path, PathBuf::from("/usr/home/j/www"));
    // Plain `jls --libxo=json` has no name: the jail is known by its JID.
    let plain = parse_jls(&fixture("jls.json")).unwrap();
    assert_eq!((plain[0].name.as_str(), plain[0].jid), ("1", 1));
    assert!(parse_jls(&fixture("jls-none.json")).unwrap().is_empty());
    let m = parse_mount_p(&fixture("mount-p.txt"));
    let nullfs: Vec<(String, String)> = m
        .iter()
        .filter(|e| e.fstype == "nullfs")
        .map(|e| (e.dst.display().to_string(), e.options.clone()))
        .collect();
    assert_eq!(nullfs.len(), 6);
    assert_eq!(nullfs[0], ("/usr/home/j/ns".to_owned(), "ro".to_owned()));
    assert_eq!(nullfs[1], ("/usr/home/j/ns/s".to_owned(), "rw".to_owned()));
    assert!(
        m.iter()
            .any(|e| e.fstype == "devfs" && e.dst == Path::new("/usr/home/j/www/dev"))
    );
}

/// The boot hook: before `jail`, finishing what a crash interrupted.
#[test]
fn rc_script_runs_recover_before_jail() {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/rc.d/jailtx");
    let text = std::fs::read_to_string(&p).unwrap();
    for want in [
        "# PROVIDE: jailtx",
        "# REQUIRE: LOGIN FILESYSTEMS",
        "# BEFORE: jail",
        "# KEYWORD: nojail",
        "recover --auto-recover",
    ] {
        assert!(text.contains(want), "{want:?} missing from {}", p.display());
    }
    let syntax = std::process::Command::new("sh")
        .arg("-n")
        .arg(&p)
        .status()
        .unwrap();
    assert!(syntax.success(), "sh -n {}", p.display());
}

/// `--backend freebsd --dry-run` prints the exact commands and files, as text
/// or one JSON document, and changes nothing.
#[test]
fn cli_dry_run_prints_the_freebsd_commands() {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().canonicalize().unwrap();
    let bin = env!("CARGO_BIN_EXE_jailtx");
    let jailtx = |args: &[&str]| {
        let out = std::process::Command::new(bin)
            .arg("--root")
            .arg(&root)
            .args(args)
            .env_remove("JAILTX_FAULT")
            .output()
            .unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.code(), text(&out.stdout), text(&out.stderr))
    };
    assert_eq!(jailtx(&["init"]).0, Some(0));
    let txz = root.join("base.txz");
    make_base_txz(&txz);
    let txz = txz.display().to_string();
    let (code, out, err) = jailtx(&[
        "--backend",
        "freebsd",
        "--dry-run",
        "template",
        "build",
        "--from-tar",
        &txz,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("# jailtx template-build on FreeBSD"),
        "{out}"
    );
    assert!(out.contains(&format!("tar -xpf {txz} -C ")), "{out}");
    assert!(!root.join("j/mroot").exists(), "a dry run builds nothing");
    assert_eq!(
        jailtx(&["template", "build", "--from-tar", &txz]).0,
        Some(0)
    );
    // The /etc merge too prints its FreeBSD transcript, and writes nothing.
    let (code, out, err) = jailtx(&["--backend", "freebsd", "--dry-run", "etc-merge"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("# jailtx etc-merge on FreeBSD"), "{out}");
    assert!(out.contains("file  "), "{out}");
    assert!(
        !root.join(".jailtx/etc-merge").exists(),
        "a dry run records no merge"
    );

    let create = [
        "--backend",
        "freebsd",
        "--dry-run",
        "jail",
        "create",
        "ns",
        "--hostname",
        "ns.example.org",
        "--ip",
        "192.168.3.17",
        "--start",
    ];
    let (code, out, err) = jailtx(&create);
    assert_eq!(code, Some(0), "{err}");
    let r = root.display();
    for want in [
        format!("run   mount -t nullfs -o ro {r}/j/mroot {r}/j/ns"),
        format!("run   mount -t nullfs -o rw {r}/js/ns {r}/j/ns/s"),
        format!("file  {r}/etc/jail.conf.d/ns.conf"),
        format!("file  {r}/etc/fstab.ns"),
        format!("run   jail -f {r}/etc/jail.conf.d/ns.conf -c -- ns"),
        "| \tip4.addr = \"192.168.3.17\";".to_owned(),
    ] {
        assert!(out.contains(&want), "{want:?} not in\n{out}");
    }
    if !cfg!(target_os = "freebsd") {
        assert!(err.contains("not FreeBSD"), "{err}");
    }
    let mut json_args = create.to_vec();
    json_args.insert(0, "--json");
    let (code, out, _) = jailtx(&json_args);
    assert_eq!(code, Some(0));
    let v: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    let commands = v["commands"].as_array().unwrap();
    let runs: Vec<&str> = commands
        .iter()
        .filter(|c| c["kind"] == "run")
        .map(|c| c["line"].as_str().unwrap())
        .collect();
    assert_eq!(
        runs.last(),
        Some(&format!("jail -f {r}/etc/jail.conf.d/ns.conf -c -- ns").as_str())
    );
    assert!(commands.iter().any(
        |c| c["kind"] == "file" && c["contents"].as_str().unwrap().contains("nullfs\tro\t0\t0")
    ));
    assert!(!root.join("etc").exists(), "a dry run writes no file");
    assert!(!root.join("j/ns").exists());
    // The rc.d hook's command line parses: --auto-recover is a global flag.
    let (code, out, err) = jailtx(&["recover", "--auto-recover"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("nothing to recover"), "{out}");
}

/// A step that fails on the simulated host fails as FreeBSD would, naming it.
#[test]
fn a_failing_command_is_named() {
    let s = Scene::new();
    let base_txz = s.root.join("usr/freebsd-dist/base.txz");
    s.apply(&template::plan_build(&s.layout, Source::Tar(base_txz), &s.cfg.carry_over).unwrap());
    let plan = jails::plan_create(
        &s.site(),
        &jail("ns"),
        "ns.example.org",
        "192.168.3.17",
        true,
    )
    .unwrap();
    s.sim.fail_on(&["jail", "-f"]);
    let mut failed = None;
    for step in &plan.steps {
        if let Err(e) = action::apply(&step.action, &s.host) {
            failed = Some((step.name.clone(), e.to_string()));
            break;
        }
    }
    let (step, e) = failed.expect("the start fails");
    assert_eq!(step, "start-ns");
    assert!(e.starts_with("start jail ns: "), "{e}");
}
