//! Issue 12, items 3 and 4 (Linux backend): mounts land only on directories
//! jailtx made, and a jail's root cannot reach the host. Before the fix a
//! template whose `s` was a symlink got `js/NAME` bind-mounted read-write on
//! the symlink's target (and `recover` did it again after a reboot), an
//! admin-made symlink at `js/NAME` was followed, and jails kept every
//! capability inside a plain chroot: the classic chroot escape wrote on the
//! host, `mount`, `mknod`, `unshare -m` and /proc/sys writes worked, and a
//! device node shipped in a world opened as a device.
//!
//! Every test re-runs itself in a private mount namespace and checks that
//! the decoy host tree is byte for byte as it was.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::decoy::Decoy;
use support::{JailDef, Root, RunState, in_private_ns, mounts_under, processes_under};

/// What `jail create` of `j` leaves unchanged when it is refused: the whole
/// root, state dir included (no history row, no journal record).
fn refused_create(r: &Root, j: &JailDef, decoy: &Decoy, what: &str) {
    let before = r.everything();
    let out = r.run(&j.create_args());
    let line = out.one_line_error(2, what);
    assert!(line.contains("symlink"), "{what}: {line}");
    support::assert_same(what, &r.everything(), &before);
    decoy.assert_untouched(what);
    assert_eq!(mounts_under(&decoy.dir), Vec::<PathBuf>::new(), "{what}");
    assert_eq!(processes_under(r.dir()), Vec::new(), "{what}");
}

/// Replaces the directory `p` (empty) by a symlink to `target`.
fn plant_link(p: &Path, target: &Path) {
    std::fs::remove_dir(p).unwrap();
    std::os::unix::fs::symlink(target, p).unwrap();
}

#[test]
fn issue12_template_s_symlink_is_not_mounted_through() {
    if !in_private_ns("issue12_template_s_symlink_is_not_mounted_through") {
        return;
    }
    let worlds = support::Worlds::new();
    let r = Root::new(None);
    r.template(&worlds.get(1));
    let decoy = Decoy::new();
    // The world passed validation; the link appears in the built template.
    plant_link(&r.j().join("mroot/s"), &decoy.path("srv"));
    let ns = JailDef::new("ns", RunState::Running);
    refused_create(&r, &ns, &decoy, "create with mroot/s a symlink");
    assert!(!r.j().join("ns").exists());
    assert!(!r.js().join("ns").exists());
}

#[test]
fn issue12_js_symlink_is_refused() {
    if !in_private_ns("issue12_js_symlink_is_refused") {
        return;
    }
    let worlds = support::Worlds::new();
    let r = Root::new(None);
    r.template(&worlds.get(1));
    let decoy = Decoy::new();
    // An admin-made link at js/NAME: a create that would reuse it.
    std::os::unix::fs::symlink(decoy.path("srv"), r.js().join("ns")).unwrap();
    let ns = JailDef::new("ns", RunState::Running);
    refused_create(&r, &ns, &decoy, "create over a js/ns symlink");

    // And a jail that exists: stopped and unmounted, its data replaced by a
    // link; `start` refuses it.
    let www = JailDef::new("www", RunState::Stopped);
    r.ok(&www.create_args());
    let root = r.j().join("www");
    nix::mount::umount(&root.join("s")).unwrap();
    nix::mount::umount(&root).unwrap();
    std::fs::rename(r.js().join("www"), r.path("www-data")).unwrap();
    std::os::unix::fs::symlink(decoy.path("srv"), r.js().join("www")).unwrap();
    let before = r.everything();
    let out = r.run(&["start", "www"]);
    let line = out.one_line_error(2, "start over a js/www symlink");
    assert!(line.contains("symlink"), "{line}");
    support::assert_same("start refused", &r.everything(), &before);
    decoy.assert_untouched("start over a js/www symlink");
    assert_eq!(mounts_under(r.dir()), Vec::<PathBuf>::new());
    assert_eq!(mounts_under(&decoy.dir), Vec::<PathBuf>::new());
}

/// A crash inside `jail create --start` after the root was mounted, a
/// reboot, then the template's `s` swapped for a link: `recover` must not
/// mount through it (the planner's check is long past; the mount's own
/// check refuses, and the transaction rolls back).
#[test]
fn issue12_recover_does_not_mount_through_a_symlink() {
    if !in_private_ns("issue12_recover_does_not_mount_through_a_symlink") {
        return;
    }
    let worlds = support::Worlds::new();
    let r = Root::new(None);
    r.template(&worlds.get(1));
    let decoy = Decoy::new();
    let ns = JailDef::new("ns", RunState::Running);
    let out = r.run_env(
        &ns.create_args(),
        &[("JAILTX_FAULT", "after-done:mount-s-ns")],
    );
    out.assert_killed("create killed after mounting s");
    r.simulate_reboot();
    plant_link(&r.j().join("mroot/s"), &decoy.path("srv"));
    // Before the fix recover mounted js/ns on the decoy, started the jail
    // and rolled back when its exec.start failed: only the reason it gives
    // shows what it did. Now it stops at the mount and says why.
    let out = r.run(&["recover"]);
    assert_ne!(out.code(), Some(0), "recover mounted through a symlink");
    assert!(
        out.stderr.contains("mount-s-ns") && out.stderr.contains("is a symlink"),
        "{}",
        out.stderr
    );
    decoy.assert_untouched("recover after a reboot");
    assert_eq!(mounts_under(&decoy.dir), Vec::<PathBuf>::new());
    assert!(
        !mounts_under(r.dir()).contains(&r.j().join("ns/s")),
        "j/ns/s mounted"
    );
    // Going back needs no mount: it finishes.
    r.ok(&["recover", "--rollback"]);
    decoy.assert_untouched("recover --rollback");
    assert_eq!(mounts_under(r.dir()), Vec::<PathBuf>::new());
    support::kill_processes_under(r.dir());
}

/// A static probe for what the jail's root tries (C, built with gcc
/// -static: the world has no compiler and busybox has no chroot loop).
const PROBE_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static int say(const char *what, int r) {
    printf("%s=%s\n", what, r == 0 ? "ok" : strerror(errno));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return 2;
    const char *c = argv[1];
    if (!strcmp(c, "escape") && argc == 3) {
        mkdir("x", 0755);
        if (chroot("x") != 0) return say("escape", -1);
        for (int i = 0; i < 100; i++) chdir("..");
        if (chroot(".") != 0) return say("escape", -1);
        int fd = open(argv[2], O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (fd < 0) return say("escape", -1);
        write(fd, "escaped\n", 8);
        return say("escape", close(fd));
    }
    if (!strcmp(c, "mount"))
        return say("mount", mount("none", "/s/m", "tmpfs", 0, 0));
    if (!strcmp(c, "mknod"))
        return say("mknod", mknod("/s/disk", S_IFBLK | 0600, makedev(8, 0)));
    if (!strcmp(c, "unshare")) return say("unshare", unshare(CLONE_NEWNS));
    if (!strcmp(c, "userns")) return say("userns", unshare(CLONE_NEWUSER | CLONE_NEWNS));
    if (!strcmp(c, "hostname")) {
        int fd = open("/proc/sys/kernel/hostname", O_WRONLY);
        if (fd < 0) return say("hostname", -1);
        int r = write(fd, "evil\n", 5) == 5 ? 0 : -1;
        return say("hostname", r);
    }
    if (!strcmp(c, "dev") && argc == 3) {
        int fd = open(argv[2], O_RDWR);
        return say("dev", fd < 0 ? -1 : 0);
    }
    return 2;
}
"#;

/// The jail's boot script: every probe, its results into `/s/probe.out`
/// (the jail's data, read from the host), then the usual service.
const RC: &str = r#"#!/bin/sh
out=/s/probe.out
cd /s
mkdir -p m
{
  /bin/probe escape "$DECOY/srv/escaped"
  /bin/probe mount
  if mount -t tmpfs none /s/m 2>/dev/null; then echo "mount-cmd=ok"; else echo "mount-cmd=refused"; fi
  /bin/probe mknod
  /bin/probe unshare
  /bin/probe userns
  # The bounding set: what any process of the jail, setuid or not, can ever
  # hold. (Loading a module cannot be tried here: this kernel has no module
  # support, so finit_module says ENOSYS with or without sys_module.)
  echo "capbnd=$(sed -n 's/^CapBnd:[[:space:]]*//p' /proc/self/status)"
  /bin/probe hostname
  /bin/probe dev /usr/share/devnull
  /bin/probe dev /s/devnull
  # /bin/su by path: busybox sh runs a bare `su` as its own applet through
  # /proc/self/exe, the busybox that is not setuid.
  echo "su=$(/bin/su nobody -c 'id -u; /bin/su -c "id -u" root' </dev/null 2>&1 | tr '\n' ' ')"
} > $out 2>&1
exec httpd -p "${JAIL_IP:-127.0.0.1}:8080" -h /var/empty
"#;

/// A world from scripts/mkworld plus the probe, a setuid busybox `su`, a
/// `nobody` user and a root without a password (so `su` back to root needs
/// no terminal).
fn probe_world(dir: &Path, decoy: &Decoy) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let w = dir.join("world");
    support::mkworld(&w, 1);
    let src = dir.join("probe.c");
    std::fs::write(&src, PROBE_C).unwrap();
    let st = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(w.join("bin/probe"))
        .arg(&src)
        .status()
        .expect("gcc");
    assert!(st.success(), "gcc -static probe.c");
    std::fs::copy(w.join("bin/busybox"), w.join("bin/su")).unwrap();
    std::fs::set_permissions(w.join("bin/su"), std::fs::Permissions::from_mode(0o4755)).unwrap();
    std::fs::write(
        w.join("etc/passwd"),
        "root::0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(w.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    let rc = RC.replace("$DECOY", &decoy.dir.display().to_string());
    std::fs::write(w.join("etc/rc"), rc).unwrap();
    for tool in ["tr", "id"] {
        let _ = std::os::unix::fs::symlink("busybox", w.join("bin").join(tool));
    }
    w
}

/// `mknod PATH c 1 3`: a copy of /dev/null's numbers.
fn devnull_at(p: &Path) {
    nix::sys::stat::mknod(
        p,
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::from_bits_truncate(0o666),
        nix::sys::stat::makedev(1, 3),
    )
    .unwrap();
}

#[test]
fn issue12_jail_root_cannot_reach_the_host() {
    if !in_private_ns("issue12_jail_root_cannot_reach_the_host") {
        return;
    }
    let decoy = Decoy::new();
    let r = Root::new(None);
    let w = probe_world(&r.scratch, &decoy);
    r.template(&w);
    assert_eq!(
        std::os::unix::fs::MetadataExt::mode(
            &std::fs::metadata(r.j().join("mroot/bin/su")).unwrap()
        ) & 0o7777,
        0o4755,
        "the template keeps su setuid"
    );
    // Device nodes shipped in the template and in the jail's data.
    devnull_at(&r.j().join("mroot/usr/share/devnull"));
    let ns = JailDef::new("ns", RunState::Stopped);
    r.ok(&ns.create_args());
    devnull_at(&r.js().join("ns/devnull"));
    r.ok(&["start", "ns"]);
    let out = std::fs::read_to_string(r.js().join("ns/probe.out")).unwrap();
    let results: std::collections::BTreeMap<&str, &str> =
        out.lines().filter_map(|l| l.split_once('=')).collect();
    let refused = |k: &str| {
        let v = results.get(k).copied();
        assert!(
            v.is_some() && v != Some("ok"),
            "{k} worked inside the jail: {v:?}\n{out}"
        );
    };
    for k in ["escape", "mount", "mknod", "unshare", "userns", "hostname"] {
        refused(k);
    }
    assert_eq!(results.get("mount-cmd"), Some(&"refused"), "{out}");
    let bnd = results
        .get("capbnd")
        .and_then(|h| u64::from_str_radix(h, 16).ok())
        .unwrap_or_else(|| panic!("no CapBnd: {out}"));
    // sys_module 16, sys_rawio 17, sys_ptrace 19, sys_admin 21, sys_boot 22,
    // sys_time 25, mknod 27, net_admin 12, net_raw 13: gone; setuid 7,
    // setgid 6, sys_chroot 18, net_bind_service 10: kept.
    for gone in [12, 13, 16, 17, 19, 21, 22, 25, 27] {
        assert_eq!(bnd & (1 << gone), 0, "capability {gone} kept: {bnd:#x}");
    }
    for kept in [6, 7, 10, 18] {
        assert_ne!(bnd & (1 << kept), 0, "capability {kept} dropped: {bnd:#x}");
    }
    let devs: Vec<&str> = out.lines().filter(|l| l.starts_with("dev=")).collect();
    assert_eq!(devs.len(), 2, "{out}");
    assert!(
        devs.iter().all(|l| *l != "dev=ok"),
        "a shipped device node opened: {out}"
    );
    // setuid still works: root -> nobody -> root.
    assert_eq!(
        results.get("su").map(|s| s.trim()),
        Some("65534 0"),
        "{out}"
    );
    decoy.assert_untouched("the jail's root tried to escape");
    assert!(!decoy.path("srv/escaped").exists());

    // exec.stop runs the jail's own (rewritable) rc.shutdown: with the
    // jail's confinement too, not with the host's capabilities.
    let shutdown = format!(
        "#!/bin/sh\ncd /s\n{{ /bin/probe escape {d}/srv/escaped-at-stop; /bin/probe mount; /bin/probe mknod; /bin/probe unshare; /bin/probe userns; }} > /s/stop.out 2>&1\nexit 0\n",
        d = decoy.dir.display()
    );
    std::fs::write(r.js().join("ns/etc/rc.shutdown"), shutdown).unwrap();
    r.ok(&["stop", "ns"]);
    assert_eq!(processes_under(r.dir()), Vec::new());
    let out = std::fs::read_to_string(r.js().join("ns/stop.out")).unwrap();
    let results: std::collections::BTreeMap<&str, &str> =
        out.lines().filter_map(|l| l.split_once('=')).collect();
    for k in ["escape", "mount", "mknod", "unshare", "userns"] {
        let v = results.get(k).copied();
        assert!(
            v.is_some() && v != Some("ok"),
            "{k} worked in exec.stop: {v:?}\n{out}"
        );
    }
    decoy.assert_untouched("exec.stop tried to escape");
}
