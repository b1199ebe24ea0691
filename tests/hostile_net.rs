//! Issue 12, items 4b and 9 (first half), on the Linux backend: a jail's
//! network is its own address, and its console log is bounded.
//!
//! What broke: jails shared the host's network stack, so a jail's root could
//! bind another jail's address or any host address and reach services on the
//! host's 127.0.0.1; and a jail writing to stderr in a loop filled
//! `.jailtx/jails/NAME.log` with 91 MB in 3 s, through a symlink if one was
//! planted there. Every test re-runs itself in a private mount namespace
//! (the network namespace is the host's, as for an operator) and leaves no
//! process, mount, interface or route behind.

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use support::decoy::Decoy;
use support::{Root, Worlds, http_get, in_private_ns, two_running};

/// Runs a shell command inside jail `name`: all its namespaces, network too.
fn in_jail(r: &Root, name: &str, script: &str) -> Output {
    let jid = r.jids()[name].expect("jail running").to_string();
    Command::new("nsenter")
        .args([
            "-t", &jid, "-m", "-u", "-i", "-n", "-p", "-r", "-w", "--", "/bin/sh", "-c", script,
        ])
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The host's routes and links naming `what` (an address or an interface).
fn host_net_mentions(what: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for args in [
        &["-4", "-o", "route", "show", "table", "all"][..],
        &["-o", "link", "show"][..],
    ] {
        let o = Command::new("ip")
            .args(args)
            .output()
            .expect("run ip (iproute2)");
        assert!(o.status.success(), "ip {args:?}: {}", text(&o));
        for line in String::from_utf8_lossy(&o.stdout).lines() {
            let words: Vec<&str> = line
                .split(|c: char| c.is_whitespace() || c == '@' || c == ':')
                .collect();
            if what.iter().any(|w| words.contains(&w.as_str())) {
                out.push(line.to_owned());
            }
        }
    }
    out
}

/// Waits (the kernel tears a network namespace down asynchronously) until
/// the host has no route or link naming `what`.
fn assert_host_net_clean(what: &[String], when: &str) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let left = host_net_mentions(what);
        if left.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "{when}: left on the host: {left:#?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host-side interface of each running jail (named after its JID).
fn host_ifs(r: &Root) -> Vec<String> {
    r.jids()
        .values()
        .flatten()
        .map(|jid| format!("jtx{jid}"))
        .collect()
}

#[test]
fn a_jail_binds_and_reaches_only_its_own_address() {
    if !in_private_ns("a_jail_binds_and_reaches_only_its_own_address") {
        return;
    }
    let worlds = Worlds::new();
    let jails = two_running();
    let r = Root::with_jails(None, &worlds.get(1), &jails);
    let (ns, www) = (&jails[0], &jails[1]);
    // A listener on the host's own loopback address, which no jail may reach.
    let host = TcpListener::bind("127.0.0.1:0").unwrap();
    host.set_nonblocking(true).unwrap();
    let port = host.local_addr().unwrap().port();

    // Binding: the jail's own address works; another jail's address and a
    // host address (every 127.x is the host's own on Linux) do not.
    let own = in_jail(&r, "www", &format!("httpd -p {}:8081 -h /tmp", www.ip));
    assert!(own.status.success(), "bind own address: {}", text(&own));
    for (what, addr) in [
        ("another jail's address", ns.ip.as_str()),
        ("a host address", "127.0.0.5"),
        ("the host's address as jails see it", "127.255.255.254"),
    ] {
        let o = in_jail(&r, "www", &format!("httpd -p {addr}:8082 -h /tmp"));
        assert!(
            !o.status.success(),
            "www bound {what} {addr}:8082: {}",
            text(&o)
        );
    }
    // The hijack the issue describes: while ns runs, its port is not www's.
    let o = in_jail(&r, "www", &format!("httpd -p {}:8080 -h /tmp", ns.ip));
    assert!(!o.status.success(), "www took ns's service address");

    // Connecting to the host's 127.0.0.1 reaches the jail's own loopback.
    let o = in_jail(
        &r,
        "www",
        &format!("echo hello | busybox nc -w 2 127.0.0.1 {port}"),
    );
    std::thread::sleep(Duration::from_millis(200));
    match host.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!(
            "a jail reached the host's 127.0.0.1:{port} from {peer}: {}",
            text(&o)
        ),
        Err(e) => panic!("accept: {e}"),
    }
    assert!(!o.status.success(), "nc to 127.0.0.1:{port}: {}", text(&o));

    // The services stay reachable: from the host, and from the other jail.
    assert_eq!(http_get(&ns.ip).unwrap(), "ns.example.org world 1");
    assert_eq!(http_get(&www.ip).unwrap(), "www.example.org world 1");
    let o = in_jail(
        &r,
        "www",
        &format!("busybox wget -q -O - http://{}:8080/", ns.ip),
    );
    assert_eq!(text(&o).trim(), "ns.example.org world 1", "www -> ns");

    // Stopping leaves no interface or route behind.
    let mut names = host_ifs(&r);
    names.extend(jails.iter().map(|j| j.ip.clone()));
    r.ok(&["stop"]);
    assert_host_net_clean(&names, "after stop");
}

#[test]
fn crash_reboot_and_failed_starts_leave_no_network_behind() {
    if !in_private_ns("crash_reboot_and_failed_starts_leave_no_network_behind") {
        return;
    }
    let worlds = Worlds::new();
    let jails = two_running();
    let r = Root::with_jails(None, &worlds.get(1), &jails);
    let ips: Vec<String> = jails.iter().map(|j| j.ip.clone()).collect();
    let mut names = host_ifs(&r);
    names.extend(ips.iter().cloned());
    assert!(
        !host_net_mentions(&names).is_empty(),
        "no routes to the jails"
    );

    // A reboot: every process gone; the kernel takes the pairs and routes.
    r.simulate_reboot();
    assert_host_net_clean(&names, "after the reboot");
    support::boot(&r, &jails);
    let mut names = host_ifs(&r);
    names.extend(ips.iter().cloned());
    for j in &jails {
        assert_eq!(
            http_get(&j.ip).unwrap(),
            format!("{}.example.org world 1", j.name)
        );
    }
    // A crash of one jail (its init killed): its address is free again and
    // a start routes it anew.
    let ns_jid = r.jids()["ns"].unwrap();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ns_jid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert_host_net_clean(&[format!("jtx{ns_jid}"), ips[0].clone()], "after a crash");
    r.ok(&["start", "ns"]);
    assert_eq!(http_get(&ips[0]).unwrap(), "ns.example.org world 1");
    names.extend(host_ifs(&r));
    r.ok(&["stop"]);
    assert_host_net_clean(&names, "after stop");

    // A start whose exec.start fails, and one with an IPv6 address (the
    // linux backend refuses those), leave nothing either.
    let bad = Root::new(Some("[jail]\nexec_start = \"exit 3\"\n"));
    bad.template(&worlds.get(1));
    let ip = support::fresh_ip();
    let out = bad.run(&[
        "jail",
        "create",
        "bad",
        "--hostname",
        "bad.org",
        "--ip",
        &ip,
        "--start",
    ]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert_host_net_clean(std::slice::from_ref(&ip), "after a failed start");
    let v6 = Root::new(None);
    v6.template(&worlds.get(1));
    let out = v6.run(&[
        "jail",
        "create",
        "v6",
        "--hostname",
        "v6.org",
        "--ip",
        "fd00::17",
        "--start",
    ]);
    assert_ne!(out.code(), Some(0), "{out}");
    assert!(
        out.stderr.contains("IPv4 address only"),
        "no clear refusal: {out}"
    );
    assert!(v6.jids().values().all(Option::is_none));
}

const CAP: u64 = 64 * 1024;

/// A root whose jails spam their stderr from exec.start on, with a small log cap.
fn spamming_root(worlds: &Worlds) -> Root {
    let config = format!(
        "[jail]\nlog_max_bytes = {CAP}\nexec_start = \"(while :; do echo 0123456789abcdef0123456789abcdef0123456789abcdef >&2; done) & exit 0\"\n"
    );
    let r = Root::new(Some(&config));
    r.template(&worlds.get(1));
    r
}

fn log_files(dir: &Path, name: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(&format!("{name}.log"))
        })
        // While the jail writes, a rotation may rename an entry away
        // between the listing and its stat: it is then not there.
        .filter_map(|e| {
            let m = std::fs::symlink_metadata(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), m.len()))
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_jail_spamming_stderr_fills_at_most_three_capped_files() {
    if !in_private_ns("a_jail_spamming_stderr_fills_at_most_three_capped_files") {
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let worlds = Worlds::new();
    let r = spamming_root(&worlds);
    let ip = support::fresh_ip();
    r.ok(&[
        "jail",
        "create",
        "spam",
        "--hostname",
        "spam.org",
        "--ip",
        &ip,
        "--start",
    ]);
    let jails = r.state().join("jails");
    std::thread::sleep(Duration::from_secs(3));
    // While it writes, a listing may fall between the two renames of a
    // rotation (`.1` -> `.2` done, the live log -> `.1` not yet): never more
    // than three files, none over the cap.
    let files = log_files(&jails, "spam");
    assert!(files.len() <= 3, "{files:?}");
    assert!(files.iter().all(|(_, len)| *len <= CAP), "{files:?}");
    // Once stopped, the rotation is whole: exactly the three files.
    r.ok(&["stop"]);
    let files = log_files(&jails, "spam");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["spam.log", "spam.log.1", "spam.log.2"], "{files:?}");
    assert!(files.iter().all(|(_, len)| *len <= CAP), "{files:?}");
    let mut head = String::new();
    std::fs::File::open(jails.join("spam.log.1"))
        .unwrap()
        .take(200)
        .read_to_string(&mut head)
        .unwrap();
    assert!(head.contains("0123456789abcdef"), "{head:?}");
    let m = std::fs::metadata(jails.join("spam.log")).unwrap();
    assert_eq!((m.uid(), m.permissions().mode() & 0o077), (0, 0));
}

#[test]
fn a_symlink_planted_at_a_jail_log_is_never_written_through() {
    if !in_private_ns("a_symlink_planted_at_a_jail_log_is_never_written_through") {
        return;
    }
    let decoy = Decoy::new();
    let worlds = Worlds::new();
    let r = spamming_root(&worlds);
    let ip = support::fresh_ip();
    r.ok(&[
        "jail",
        "create",
        "spam",
        "--hostname",
        "spam.org",
        "--ip",
        &ip,
    ]);
    let log = r.state().join("jails/spam.log");
    let _ = std::fs::remove_file(&log);
    std::os::unix::fs::symlink(decoy.path("etc/shadow"), &log).unwrap();
    let tree = r.tree();
    let out = r.run(&["start", "spam"]);
    std::thread::sleep(Duration::from_millis(500));
    decoy.assert_untouched("after start with a planted log symlink");
    assert_ne!(out.code(), Some(0), "started through a planted log: {out}");
    assert!(
        out.stderr.contains("spam.log is not a regular file"),
        "{out}"
    );
    assert_eq!(r.jids()["spam"], None);
    support::assert_same("the layout", &r.tree(), &tree);
    assert!(
        std::fs::symlink_metadata(&log)
            .unwrap()
            .file_type()
            .is_symlink()
    );
}
