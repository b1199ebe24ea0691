//! The FreeBSD backend against what FreeBSD's own code does (issue 14):
//! `mount -p` prints names raw, a jail that dies on its own leaves its devfs
//! mounted, rc.d/jail's stop-all branch at shutdown, and the names, addresses
//! and config values jail(8) and the kernel refuse. Mounts and jails run on
//! the simulated host (`host::freebsd_sim`), which reproduces each behaviour.

mod support;

use std::path::{Path, PathBuf};

use jailtx::host::Host;
use jailtx::host::freebsd_sim::SimFreeBsd;
use jailtx::ops::jail::{self as jails};
use jailtx::ops::{init, template};
use jailtx::plan::JailName;
use jailtx::world::Source;
use support::freebsd::SimHost as Scene;
use support::{Root, run_bin};

/// A scratch FreeBSD host whose BASE has a space in it (`ROOT/usr/my jails`).
fn make_world(dir: &Path) {
    for d in ["bin", "dev", "etc", "root", "tmp", "var/log", "usr/bin"] {
        std::fs::create_dir_all(dir.join(d)).unwrap();
    }
    for f in ["bin/sh", "etc/rc", "etc/rc.shutdown"] {
        std::fs::write(dir.join(f), "#!/bin/sh\n").unwrap();
    }
}

impl Scene {
    fn new() -> Scene {
        let s = Scene::on("usr/my jails", SimFreeBsd::new());
        s.apply_steps(&init::plan(&s.layout));
        let world = s.root.join("world");
        make_world(&world);
        s.apply_steps(&template::plan_build(&s.layout, Source::Dir(world), &[]).unwrap());
        s
    }

    fn create(&self, name: &str, ip: &str) {
        let hostname = format!("{name}.example.org");
        self.apply_steps(
            &jails::plan_create(&self.site(), &jname(name), &hostname, ip, true).unwrap(),
        );
    }
}

/// Mismatch 3: with a BASE holding a space, `mount -p`'s raw names must
/// still say what is mounted where, or every check is "not mounted": a
/// second nullfs mount stacks, an unmount is skipped.
#[test]
fn a_base_with_a_space_is_seen_mounted() {
    let s = Scene::new();
    s.create("ns", "192.168.3.17");
    let root = s.layout.j.join("ns");
    assert!(
        s.host.is_mounted(&root).unwrap(),
        "{:?}",
        s.sim.mount_points()
    );
    assert!(s.host.is_mounted(&root.join("s")).unwrap());
    assert!(s.host.is_mounted(&root.join("dev")).unwrap());
    // A repeat is a no-op, not a second mount on the first.
    s.host.mount(&s.layout.mroot, &root, true).unwrap();
    assert_eq!(s.sim.mounts_on(&root), ["nullfs"]);
    // Stopping and unmounting leaves nothing mounted under the jail.
    s.apply_steps(&jails::plan_stop(&s.site(), &[]).unwrap());
    s.apply_steps(&jails::plan_destroy(&s.site(), &jname("ns"), false).unwrap());
    let left: Vec<PathBuf> = s
        .sim
        .mount_points()
        .into_iter()
        .filter(|p| p.starts_with(&s.layout.base))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// Mismatch 4: a jail that dies on its own leaves `PATH/dev` mounted (only
/// `jail -r` unmounts it). `stop` must take it off although jls no longer
/// lists the jail, the next start must not stack a second devfs, and a
/// destroy must be able to unmount the jail's root.
#[test]
fn the_devfs_of_a_jail_that_died_is_unmounted() {
    let s = Scene::new();
    s.create("ns", "192.168.3.17");
    s.create("mail", "192.168.3.18");
    let dev = s.layout.j.join("ns/dev");
    assert_eq!(s.sim.mounts_on(&dev), ["devfs"]);

    s.sim.jail_dies("ns");
    assert_eq!(s.sim.jail_names(), ["mail"]);
    assert_eq!(s.sim.mounts_on(&dev), ["devfs"], "the sim models the leak");
    let plan = jails::plan_stop(&s.site(), &[jname("ns")]).unwrap();
    assert!(
        plan.steps.iter().any(|st| st.name == "stop-ns"),
        "stop must handle the devfs left behind: {:?}",
        plan.steps
    );
    s.apply_steps(&plan);
    assert!(
        s.sim.mounts_on(&dev).is_empty(),
        "{:?}",
        s.sim.mounts_on(&dev)
    );

    // Died again, then started without a stop in between: one devfs.
    s.apply_steps(&jails::plan_start(&s.site(), &[]).unwrap());
    s.sim.jail_dies("ns");
    s.apply_steps(&jails::plan_start(&s.site(), &[]).unwrap());
    assert_eq!(s.sim.jail_names(), ["mail", "ns"]);
    assert_eq!(s.sim.mounts_on(&dev), ["devfs"], "no second devfs stacked");

    // Died, then destroyed: the root's unmount is not "Device busy".
    s.sim.jail_dies("ns");
    s.apply_steps(&jails::plan_destroy(&s.site(), &jname("ns"), false).unwrap());
    assert!(s.sim.mounts_on(&dev).is_empty());
    assert!(s.sim.mounts_on(&s.layout.j.join("ns")).is_empty());
    assert_eq!(s.sim.jail_names(), ["mail"], "mail is left alone");
    assert_eq!(s.sim.mounts_on(&s.layout.j.join("mail/dev")), ["devfs"]);
}

/// Mismatch 8: an `/etc/jail.NAME.conf` shadows jailtx's
/// `/etc/jail.conf.d/NAME.conf` for `service jail start NAME`
/// (rc.d/jail's parse_options reads it first): jail create finds it.
#[test]
fn a_shadowing_jail_name_conf_is_found() {
    let s = Scene::new();
    let cfg = &s.cfg.freebsd;
    assert_eq!(jailtx::host::freebsd_conf::shadowing_conf(cfg, "ns"), None);
    let old = s.root.join("etc/jail.ns.conf");
    std::fs::write(&old, "ns { path = /old; }\n").unwrap();
    assert_eq!(
        jailtx::host::freebsd_conf::shadowing_conf(cfg, "ns"),
        Some(old)
    );
}

/// The header lines rcorder(8) reads from an rc.d script.
struct RcHeader {
    provide: Vec<String>,
    require: Vec<String>,
    before: Vec<String>,
    keyword: Vec<String>,
}

fn words(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

fn rc_header(text: &str) -> RcHeader {
    let field = |key: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(&format!("# {key}:")))
            .flat_map(|v| v.split_whitespace().map(str::to_owned))
            .collect()
    };
    RcHeader {
        provide: field("PROVIDE"),
        require: field("REQUIRE"),
        before: field("BEFORE"),
        keyword: field("KEYWORD"),
    }
}

/// Mismatch 8: rc.shutdown runs the `shutdown` scripts in reverse rcorder
/// order, and rc.d/jail's stop (with `jail_list` empty) runs `jail -r` on
/// every running jail, jailtx's too, with none of their exec.stop and no
/// devfs unmount. So the script that stops jailtx's jails must come after
/// rc.d/jail at boot (it then stops first), and the script that recovers
/// must still come before it. rc.d/jail's header is FreeBSD's own.
#[test]
fn at_shutdown_jailtx_stops_its_jails_before_rc_d_jail() {
    let contrib = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/rc.d");
    let jail = RcHeader {
        provide: words(&["jail"]),
        require: words(&["LOGIN", "FILESYSTEMS"]),
        before: words(&["securelevel"]),
        keyword: words(&["nojail", "shutdown"]),
    };
    let mut scripts: Vec<(String, String, RcHeader)> = vec![("jail".into(), String::new(), jail)];
    for e in std::fs::read_dir(&contrib).unwrap().flatten() {
        let sh = std::process::Command::new("sh")
            .arg("-n")
            .arg(e.path())
            .status()
            .unwrap();
        assert!(sh.success(), "sh -n {}", e.path().display());
        let text = std::fs::read_to_string(e.path()).unwrap();
        let header = rc_header(&text);
        scripts.push((e.file_name().to_string_lossy().into_owned(), text, header));
    }
    // rcorder: a script runs after everything it REQUIREs and before what
    // it names in BEFORE; a topological order by repeated passes.
    let must_precede = |a: &RcHeader, b: &RcHeader| -> bool {
        a.before.iter().any(|x| b.provide.contains(x))
            || b.require.iter().any(|x| a.provide.contains(x))
    };
    let mut order: Vec<usize> = Vec::new();
    while order.len() < scripts.len() {
        let next = (0..scripts.len())
            .find(|&n| {
                !order.contains(&n)
                    && (0..scripts.len()).all(|m| {
                        m == n || order.contains(&m) || !must_precede(&scripts[m].2, &scripts[n].2)
                    })
            })
            .expect("a cycle in the rc.d headers");
        order.push(next);
    }
    let names: Vec<&str> = order.iter().map(|&i| scripts[i].0.as_str()).collect();
    let at = |i: usize| order.iter().position(|&x| x == i).unwrap();
    // Boot: recovery before any jail starts.
    let recovers: Vec<usize> = (1..scripts.len())
        .filter(|&i| scripts[i].1.contains("recover --auto-recover"))
        .collect();
    assert!(!recovers.is_empty());
    for i in recovers {
        assert!(at(i) < at(0), "boot order {names:?}");
    }
    // Shutdown: the reverse of the boot order, `shutdown` scripts only.
    let shutdown: Vec<usize> = order
        .iter()
        .rev()
        .copied()
        .filter(|&i| scripts[i].2.keyword.iter().any(|k| k == "shutdown"))
        .collect();
    let down: Vec<&str> = shutdown.iter().map(|&i| scripts[i].0.as_str()).collect();
    let jail_at = shutdown.iter().position(|&i| i == 0).unwrap();
    let stoppers: Vec<usize> = (1..scripts.len())
        .filter(|&i| scripts[i].1.contains("${jailtx_flags} stop"))
        .collect();
    assert!(!stoppers.is_empty(), "some script stops jailtx's jails");
    for i in stoppers {
        let s_at = shutdown.iter().position(|&x| x == i);
        assert!(
            s_at.is_some_and(|s| s < jail_at),
            "{} must stop jailtx's jails before rc.d/jail's stop-all: shutdown order {down:?}",
            scripts[i].0
        );
    }
}

/// Mismatches 1 and 2 at the command line: one line, exit 2, nothing made.
#[test]
fn names_jail_8_misreads_are_refused() {
    let r = Root::fresh();
    for name in ["0", "0123", "123", "-x", "-c"] {
        let out = r.run(&[
            "jail",
            "create",
            "--hostname",
            "a.example.org",
            "--ip",
            "192.168.3.17",
            "--",
            name,
        ]);
        let line = out.one_line_error(2, name);
        assert!(line.contains(&format!("{name:?}")), "{line}");
        assert!(!r.j().join(name).exists());
    }
}

/// Mismatches 6 and 7 at the command line: a config whose `interface` or
/// generated-file directories jail(8) would choke on is refused at load.
#[test]
fn freebsd_config_values_are_checked_at_load() {
    for (bad, key) in [
        (
            "[freebsd]\ninterface = \"em0 alias\"\n",
            "freebsd.interface",
        ),
        (
            "[freebsd]\njail_conf_dir = \"/etc/jail.conf.d\\n}\"\n",
            "freebsd.jail_conf_dir",
        ),
        ("[freebsd]\nfstab_dir = \"/etc\\n\"\n", "freebsd.fstab_dir"),
    ] {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("jailtx.toml");
        std::fs::write(&c, bad).unwrap();
        let out = run_bin(&["--config", c.to_str().unwrap(), "status"], &[]);
        let line = out.one_line_error(2, bad);
        assert!(line.contains(key), "{line}");
    }
}

/// Mismatch 5: `stop_timeout_secs = 0` is jail(8)'s `stop.timeout = 0`: no
/// SIGTERM, the jail's processes are killed at once. On the Linux backend a
/// process that would answer SIGTERM (writing a marker) never gets one.
#[test]
fn a_stop_timeout_of_0_sends_no_sigterm_on_linux() {
    if !support::in_private_ns("a_stop_timeout_of_0_sends_no_sigterm_on_linux") {
        return;
    }
    let worlds = support::Worlds::new();
    let r = Root::new(Some("[jail]\nstop_timeout_secs = 0\n"));
    r.template(&worlds.get(1));
    let ns = support::JailDef::new("ns", support::RunState::Stopped);
    r.ok(&ns.create_args());
    r.write(
        "js/ns/etc/rc",
        "#!/bin/sh\n\
         sh -c \"trap 'echo term > /s/tmp/term; exit 0' TERM; \
         sleep 1000 & wait\" </dev/null >/dev/null 2>&1 &\n\
         exit 0\n",
    );
    r.ok(&["start", "ns"]);
    assert!(support::processes_under(r.dir()).len() >= 2);
    r.ok(&["stop", "ns"]);
    assert_eq!(support::processes_under(r.dir()), Vec::new());
    assert!(
        !r.path("js/ns/tmp/term").exists(),
        "the jail's process got a SIGTERM"
    );
}

fn jname(n: &str) -> JailName {
    JailName::parse(n).unwrap()
}
