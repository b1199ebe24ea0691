//! etcupdate's post-merge steps (issue 14): after the `/etc` merge changes
//! `master.passwd`, `login.conf`, `services`, `mail/aliases`, or moves a
//! jail with a copied `localtime` to a new world, the databases derived
//! from them are rebuilt **inside the jail** (`jexec NAME …`): at once when
//! it runs, after the command that next starts it when it is stopped; never
//! on the host. The FreeBSD side runs on the simulated host (golden
//! transcript under `tests/golden/etc-derived/`, `JAILTX_BLESS=1` rewrites
//! it); the Linux side is the same hook with nothing to run.

mod support;

use std::path::{Path, PathBuf};

use jailtx::engine::transcript;
use jailtx::host::freebsd_sim::{SimFreeBsd, is_query};
use jailtx::ops::jail::{self as jails};
use jailtx::ops::{init, template, upgrade};
use jailtx::plan::JailName;
use jailtx::world::Source;
use support::freebsd::SimHost as Scene;
use support::{JailDef, Root, RunState, in_private_ns, mkworld};

const DATE: &str = "20060601";

const PASSWD: &str = "root:*:0:0::0:0:Charlie &:/root:/bin/sh\n";
const NEW_USER: &str =
    "_jailtx:*:990:990::0:0:added by the new world:/nonexistent:/usr/sbin/nologin\n";
const LOGIN_CONF: &str = "default:\\\n\t:path=/sbin /bin /usr/sbin /usr/bin:\n";

/// A FreeBSD-shaped world of `version` (2 adds a user and changes
/// login.conf; services and aliases stay), with the programs the
/// derived-file steps run inside a jail.
fn make_world(dir: &Path, version: u32) {
    for d in [
        "bin", "dev", "etc/mail", "root", "tmp", "usr/bin", "usr/sbin", "var/db",
    ] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    let passwd = if version == 1 {
        PASSWD.to_owned()
    } else {
        format!("{PASSWD}{NEW_USER}")
    };
    let login = LOGIN_CONF.replace("/usr/bin:", &format!("/usr/bin:\\\n\t:umask={version}22:"));
    for (f, text) in [
        ("bin/sh", "#!/fake/sh\n"),
        ("etc/rc", "#!/bin/sh\n"),
        ("etc/rc.shutdown", "#!/bin/sh\n"),
        ("etc/master.passwd", passwd.as_str()),
        ("etc/login.conf", login.as_str()),
        ("etc/services", "ssh\t22/tcp\n"),
        ("etc/mail/aliases", "root: you\n"),
        ("usr/sbin/pwd_mkdb", "#!/fake\n"),
        ("usr/bin/cap_mkdb", "#!/fake\n"),
        ("usr/sbin/services_mkdb", "#!/fake\n"),
        ("usr/bin/newaliases", "#!/fake\n"),
        ("usr/sbin/tzsetup", "#!/fake\n"),
    ] {
        std::fs::write(dir.join(f), text).unwrap();
    }
}

impl Scene {
    fn new() -> Scene {
        let s = Scene::on("usr/home", SimFreeBsd::new());
        s.apply_steps(&init::plan(&s.layout));
        s
    }

    /// The commands the simulated host ran since the last call (queries left out).
    fn ran(&self) -> Vec<String> {
        self.sim
            .take_log()
            .into_iter()
            .filter(|a| !is_query(a))
            .map(|a| a.join(" "))
            .collect()
    }

    fn due(&self, name: &str) -> PathBuf {
        self.layout
            .state
            .join("etc-merge")
            .join(format!("{name}.due.toml"))
    }
}

fn golden(rel: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/etc-derived")
        .join(rel);
    if std::env::var_os("JAILTX_BLESS").is_some_and(|v| v == "1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        expected,
        actual,
        "{} differs (JAILTX_BLESS=1 rewrites it if the change is meant)",
        path.display()
    );
}

/// The merge after an upgrade makes pwd_mkdb and cap_mkdb due in both
/// jails (and tzsetup -r where localtime is a copy); the running jail gets
/// them at once through jexec, the stopped one after its next start; no
/// derived-file command ever runs on the host.
#[test]
fn freebsd_merge_runs_etcupdates_steps_inside_the_jails() {
    let s = Scene::new();
    let w1 = s.root.join("world1");
    let w2 = s.root.join("world2");
    make_world(&w1, 1);
    make_world(&w2, 2);
    s.apply_steps(&template::plan_build(&s.layout, Source::Dir(w1), &s.cfg.carry_over).unwrap());
    s.apply_steps(
        &jails::plan_create(
            &s.site(),
            &name("ns"),
            "ns.example.org",
            "192.168.3.17",
            true,
        )
        .unwrap(),
    );
    s.apply_steps(
        &jails::plan_create(
            &s.site(),
            &name("mail"),
            "mail.example.org",
            "192.168.3.18",
            false,
        )
        .unwrap(),
    );
    // ns keeps a copy of its zone file (tzsetup's way, which names the zone
    // in var/db/zoneinfo), mail a link.
    std::fs::write(s.layout.js.join("ns/etc/localtime"), "TZif\n").unwrap();
    std::fs::write(s.layout.js.join("ns/var/db/zoneinfo"), "Europe/Berlin\n").unwrap();
    std::os::unix::fs::symlink(
        "/usr/share/zoneinfo/UTC",
        s.layout.js.join("mail/etc/localtime"),
    )
    .unwrap();
    let (plan, _) = upgrade::plan_upgrade_on(
        &s.site(),
        Source::Dir(w2),
        &upgrade::Canary::default(),
        DATE,
    )
    .unwrap();
    s.apply_steps(&plan);
    assert_eq!(s.sim.jail_names(), ["ns"]);
    s.ran();

    let (merge, report) = jailtx::etcmerge::plan(&s.site(), &[]).unwrap();
    let ns = report.targets.iter().find(|t| t.target == "ns").unwrap();
    assert_eq!(
        ns.updated,
        ["etc/login.conf", "etc/master.passwd"],
        "{ns:?}"
    );
    let t = transcript::of_plan(&merge, &s.cfg.freebsd);
    let text = t.to_string().replace(&s.root.display().to_string(), "");
    let inodes = regex_free_inodes(&text);
    golden("etc-merge.txt", &inodes);
    let after: Vec<&str> = t.after.iter().map(|e| e.line.as_str()).collect();
    assert_eq!(
        after,
        [
            "jexec mail /usr/sbin/pwd_mkdb -p /etc/master.passwd",
            "jexec mail /usr/bin/cap_mkdb /etc/login.conf",
            "jexec ns /usr/sbin/pwd_mkdb -p /etc/master.passwd",
            "jexec ns /usr/bin/cap_mkdb /etc/login.conf",
            "jexec ns /usr/sbin/tzsetup -r",
        ]
    );
    s.apply_steps(&merge);
    assert!(s.ran().is_empty(), "the merge itself runs no command");
    assert!(s.due("ns").is_file() && s.due("mail").is_file());

    // After the commit: the running jail, inside it; the stopped one waits.
    let ran = jailtx::etcmerge::derived::run_due(&s.site()).unwrap();
    assert_eq!(ran.len(), 1, "{ran:?}");
    assert_eq!(
        s.ran(),
        [
            "jexec ns /usr/sbin/pwd_mkdb -p /etc/master.passwd",
            "jexec ns /usr/bin/cap_mkdb /etc/login.conf",
            "jexec ns /usr/sbin/tzsetup -r",
        ]
    );
    assert!(!s.due("ns").exists(), "done in ns");
    assert!(
        s.due("mail").is_file(),
        "mail is stopped: kept for its start"
    );
    assert!(
        jailtx::etcmerge::derived::run_due(&s.site())
            .unwrap()
            .is_empty()
    );
    assert!(s.ran().is_empty(), "nothing twice");

    // mail's next start.
    s.apply_steps(&jails::plan_start(&s.site(), &[name("mail")]).unwrap());
    s.ran();
    jailtx::etcmerge::derived::run_due(&s.site()).unwrap();
    assert_eq!(
        s.ran(),
        [
            "jexec mail /usr/sbin/pwd_mkdb -p /etc/master.passwd",
            "jexec mail /usr/bin/cap_mkdb /etc/login.conf",
        ]
    );
    assert!(!s.due("mail").exists());
    // The skel never runs: a jail created from its merged copy gets its steps.
    assert!(s.due("skel").is_file());
    let create = jails::plan_create(
        &s.site(),
        &name("www"),
        "www.example.org",
        "62.123.43.14",
        true,
    )
    .unwrap();
    assert!(create.steps.iter().any(|st| st.name == "due-www"));
    s.apply_steps(&create);
    s.ran();
    jailtx::etcmerge::derived::run_due(&s.site()).unwrap();
    assert_eq!(
        s.ran(),
        [
            "jexec www /usr/sbin/pwd_mkdb -p /etc/master.passwd",
            "jexec www /usr/bin/cap_mkdb /etc/login.conf",
        ]
    );
    // Another merge with nothing new makes nothing due.
    let (again, _) = jailtx::etcmerge::plan(&s.site(), &[]).unwrap();
    assert!(
        !again.steps.iter().any(|st| st.name.starts_with("due-")),
        "{again:?}"
    );
}

/// A step that fails inside the jail (its world lacks the program) keeps
/// the record, and says so; it runs again later.
#[test]
fn a_failed_step_is_kept_for_later() {
    let s = Scene::new();
    let w1 = s.root.join("world1");
    let w2 = s.root.join("world2");
    make_world(&w1, 1);
    make_world(&w2, 2);
    std::fs::remove_file(w2.join("usr/bin/cap_mkdb")).unwrap();
    s.apply_steps(&template::plan_build(&s.layout, Source::Dir(w1), &s.cfg.carry_over).unwrap());
    s.apply_steps(
        &jails::plan_create(
            &s.site(),
            &name("ns"),
            "ns.example.org",
            "192.168.3.17",
            true,
        )
        .unwrap(),
    );
    // A copied localtime without var/db/zoneinfo: tzsetup -r could not know
    // the zone, so (as etcupdate) it is not run.
    std::fs::write(s.layout.js.join("ns/etc/localtime"), "TZif\n").unwrap();
    let (plan, _) = upgrade::plan_upgrade_on(
        &s.site(),
        Source::Dir(w2),
        &upgrade::Canary::default(),
        DATE,
    )
    .unwrap();
    s.apply_steps(&plan);
    s.apply_steps(&jailtx::etcmerge::plan(&s.site(), &[]).unwrap().0);
    let due = std::fs::read_to_string(s.due("ns")).unwrap();
    assert!(!due.contains("tzsetup"), "{due}");
    s.ran();
    let ran = jailtx::etcmerge::derived::run_due(&s.site()).unwrap();
    let line = jailtx::etcmerge::derived::describe(&ran[0]).unwrap();
    assert!(
        line.contains("cap_mkdb") && line.contains("runs again"),
        "{line}"
    );
    assert!(s.due("ns").is_file(), "kept");
}

/// The Linux backend: the same hook, with nothing to run in a busybox
/// world (it has no derived databases): the record a merge leaves for a
/// stopped jail goes at its start, silently; a running jail's at once.
#[test]
fn linux_hook_point_has_nothing_to_run() {
    if !in_private_ns("linux_hook_point_has_nothing_to_run") {
        return;
    }
    let r = Root::new(None);
    let world = |v: u32| {
        let w = r.scratch.join(format!("world{v}"));
        mkworld(&w, v);
        make_world_etc(&w.join("etc"), v);
        w
    };
    let (w1, w2) = (world(1), world(2));
    r.template(&w1);
    let ns = JailDef::new("ns", RunState::Stopped);
    let www = JailDef::new("www", RunState::Running);
    r.ok(&ns.create_args());
    r.ok(&www.create_args());
    let doc = r.json(&["upgrade", "--from-dir", w2.to_str().unwrap()]);
    assert_eq!(doc["report"]["outcome"], "committed", "{doc}");
    let due = |n: &str| r.state().join(format!("etc-merge/{n}.due.toml"));
    let text = std::fs::read_to_string(due("ns"))
        .unwrap_or_else(|e| panic!("no due record for the stopped jail ns ({e}): {doc}"));
    assert!(
        text.contains("pwd_mkdb") && text.contains("cap_mkdb"),
        "{text}"
    );
    assert!(!due("www").exists(), "www runs: done at once");
    let out = r.run(&["start", "ns"]);
    assert_eq!(out.code(), Some(0), "{}", out.stderr);
    assert!(!due("ns").exists(), "done at its start");
    assert!(!out.stderr.contains("etcupdate"), "{}", out.stderr);
    r.ok(&["stop"]);
}

fn make_world_etc(etc: &Path, version: u32) {
    let passwd = if version == 1 {
        PASSWD.to_owned()
    } else {
        format!("{PASSWD}{NEW_USER}")
    };
    std::fs::write(etc.join("master.passwd"), passwd).unwrap();
    let login = LOGIN_CONF.replace("/usr/bin:", &format!("/usr/bin:\\\n\t:umask={version}22:"));
    std::fs::write(etc.join("login.conf"), login).unwrap();
}

/// `text` with each `etc_ino = N` (an inode number, different on every
/// run) written as `etc_ino = INO`.
fn regex_free_inodes(text: &str) -> String {
    text.lines()
        .map(|l| match l.split_once("etc_ino = ") {
            Some((head, _)) => format!("{head}etc_ino = INO\n"),
            None => format!("{l}\n"),
        })
        .collect()
}

fn name(n: &str) -> JailName {
    JailName::parse(n).unwrap()
}
