//! Issue 15 (the jails' own start cost): a jail's network is set up over
//! rtnetlink (`host::netlink`) instead of `ip` processes. These tests check
//! the requests against a real kernel, read back with `ip` itself: the veth
//! pair, the addresses and the routes must be exactly what the `ip` commands
//! made before (scopes, the `onlink` default route, the /32 in table
//! `local`), and each failure is one line saying which request failed.
//!
//! Every test works on a thread in a network namespace of its own, with a
//! child process in another standing in for the jail's init, so nothing is
//! made in the host's namespace and everything goes when the thread ends.

mod support;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jailtx::host::linux_net;
use jailtx::host::netlink::Rtnl;
use support::{JailDef, Root, RunState, Worlds, in_private_ns};

/// Runs `f` on a thread inside a new network namespace with `lo` up (as
/// the host's is: `127.255.255.254`, the jails' gateway, is local there).
fn in_fresh_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare the netns");
            ip(&["link", "set", "lo", "up"]);
            f()
        })
        .join()
        .expect("the test thread panicked")
    })
}

/// `ip ARGS` in the calling thread's namespace; its stdout, words joined by
/// single spaces (ip pads with runs of them), lines kept.
fn ip(args: &[&str]) -> String {
    let o = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        o.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    squeeze(&String::from_utf8_lossy(&o.stdout))
}

fn squeeze(text: &str) -> String {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `ip ARGS` inside the network namespace of process `pid`.
fn ip_in(pid: u32, args: &[&str]) -> String {
    let o = Command::new("nsenter")
        .args(["-t", &pid.to_string(), "-n", "ip"])
        .args(args)
        .output()
        .expect("run nsenter");
    assert!(
        o.status.success(),
        "ip {args:?} in {pid}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    squeeze(&String::from_utf8_lossy(&o.stdout))
}

/// A process in a network namespace of its own, as a jail's init is when
/// the host sets up its network. Killed on drop.
struct FakeInit(Child);

impl FakeInit {
    fn start() -> FakeInit {
        let child = Command::new("unshare")
            .args(["--net", "sleep", "60"])
            .stdin(Stdio::null())
            .spawn()
            .expect("run unshare");
        let pid = child.id();
        let ours = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let until = Instant::now() + Duration::from_secs(10);
        while std::fs::read_link(format!("/proc/{pid}/ns/net")).ok() == Some(ours.clone()) {
            assert!(Instant::now() < until, "unshare --net never took effect");
            std::thread::sleep(Duration::from_millis(2));
        }
        FakeInit(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for FakeInit {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What `ip` shows of a jail's network after `setup`: both ends, for a
/// loopback address (scope host, as `ip addr add` gives 127/8) and another
/// (scope global).
#[test]
fn setup_makes_what_the_ip_commands_made() {
    for (addr, scope) in [("127.0.9.1", "host"), ("192.0.2.77", "global")] {
        in_fresh_netns(|| {
            let init = FakeInit::start();
            let pid = init.pid();
            let a: Ipv4Addr = addr.parse().unwrap();
            linux_net::setup(pid, a).unwrap_or_else(|e| panic!("setup {addr}: {e}"));
            let host = linux_net::host_if(pid);

            // The host's end: a veth, up (its peer too), with the /32 route.
            let link = ip(&["-d", "-o", "link", "show", &host]);
            assert!(link.contains("<BROADCAST,MULTICAST,UP,LOWER_UP>"), "{link}");
            assert!(link.contains(" veth "), "{link}");
            assert_eq!(
                ip(&[
                    "-4",
                    "route",
                    "show",
                    "table",
                    "local",
                    &format!("{addr}/32")
                ]),
                format!("{addr} dev {host} scope link src 127.255.255.254"),
            );
            for (key, want) in [("route_localnet", "1"), ("forwarding", "1")] {
                let p = format!("/proc/sys/net/ipv4/conf/{host}/{key}");
                assert_eq!(std::fs::read_to_string(&p).unwrap().trim(), want, "{p}");
            }

            // The jail's end: lo with 127.0.0.1/32 only, the address as a
            // /32 on eth0, a veth, up, and the onlink default route.
            assert_eq!(
                ip_in(pid, &["-4", "-o", "addr", "show"])
                    .lines()
                    .map(|l| l
                        .split(" valid_lft")
                        .next()
                        .unwrap_or(l)
                        .trim_end_matches('\\'))
                    .map(str::trim)
                    .collect::<Vec<_>>(),
                vec![
                    "1: lo inet 127.0.0.1/32 scope host lo".to_owned(),
                    format!("2: eth0 inet {addr}/32 scope {scope} eth0"),
                ],
            );
            let eth = ip_in(pid, &["-d", "-o", "link", "show", "eth0"]);
            assert!(eth.contains("<BROADCAST,MULTICAST,UP,LOWER_UP>"), "{eth}");
            assert!(eth.contains(" veth "), "{eth}");
            assert_eq!(
                ip_in(pid, &["-4", "route", "show"]),
                format!("default via 127.255.255.254 dev eth0 src {addr} onlink"),
            );
        });
    }
}

/// The peer's namespace is gone (its init exited) before the pair is made:
/// one line naming the request, and nothing left on the host's side.
#[test]
fn a_vanished_namespace_is_one_line_and_leaves_nothing() {
    in_fresh_netns(|| {
        let init = FakeInit::start();
        let pid = init.pid();
        drop(init);
        let e = linux_net::setup(pid, "127.0.9.2".parse().unwrap())
            .expect_err("setup into a dead process's namespace")
            .to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(
            e.starts_with(&format!(
                "add the veth pair jtx{pid}/eth0 into the network namespace of init {pid}: "
            )) && e.contains("No such process"),
            "{e}"
        );
        assert_eq!(ip(&["-o", "link", "show"]).lines().count(), 1, "only lo");
        assert_eq!(
            ip(&["-4", "route", "show", "table", "local", "127.0.9.2/32"]),
            ""
        );
    });
}

/// An interface name already taken: the kernel's refusal, in one line,
/// and the interface that held the name untouched.
#[test]
fn an_interface_name_taken_is_one_line() {
    in_fresh_netns(|| {
        let init = FakeInit::start();
        ip(&[
            "link", "add", "jtxtaken", "type", "veth", "peer", "name", "jtxpeer",
        ]);
        let mut nl = Rtnl::open().unwrap();
        let index = nl
            .link_index("jtxtaken")
            .unwrap()
            .expect("the dummy's index");
        let e = nl
            .add_veth("jtxtaken", "eth0", init.pid())
            .expect_err("a second interface of that name")
            .to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        assert!(e.contains("File exists"), "{e}");
        assert_eq!(nl.link_index("jtxtaken").unwrap(), Some(index));
        assert!(ip(&["-o", "link", "show", "jtxtaken"]).contains("jtxtaken@jtxpeer"));
        assert_eq!(nl.link_index("jtxnone").unwrap(), None);
        assert_eq!(nl.link_name(index).unwrap().as_deref(), Some("jtxtaken"));
    });
}

/// Through the binary: a jail whose address the host already has is not
/// started; the route is read over netlink and named in a one-line error,
/// exit 1 (a host failure, rolled back: SPEC section 2).
#[test]
fn an_address_the_host_has_is_refused_in_one_line() {
    if !in_private_ns("an_address_the_host_has_is_refused_in_one_line") {
        return;
    }
    let worlds = Worlds::new();
    let jail = JailDef::new("ns", RunState::Stopped);
    let r = Root::with_jails(None, &worlds.get(1), std::slice::from_ref(&jail));
    let out = in_fresh_netns(|| {
        ip(&["addr", "add", &format!("{}/32", jail.ip), "dev", "lo"]);
        r.run(&["start", "ns"])
    });
    let line = out.one_line_error(1, "start on a taken address");
    assert!(
        line.contains(&format!(
            "{} is already in use on this host (route: local {}/32 dev lo scope host src {})",
            jail.ip, jail.ip, jail.ip
        )),
        "{line}"
    );
    assert_eq!(r.jids()["ns"], None, "{out}");
}

/// A stopped jail's address is unrouted at once, not when the kernel gets
/// round to tearing its network namespace down (asynchronously, later):
/// until then the route sent connections into the dead namespace, where
/// SYNs are dropped (a client retries a second later) instead of refused.
/// The namespace is pinned here, as a slow teardown leaves it.
#[test]
fn a_stopped_jails_address_is_unrouted_at_once() {
    if !in_private_ns("a_stopped_jails_address_is_unrouted_at_once") {
        return;
    }
    let worlds = Worlds::new();
    let jail = JailDef::new("ns", RunState::Running);
    let r = Root::with_jails(None, &worlds.get(1), std::slice::from_ref(&jail));
    let jid = r.jids()["ns"].expect("ns runs");
    let route = || {
        ip(&[
            "-4",
            "route",
            "show",
            "table",
            "local",
            &format!("{}/32", jail.ip),
        ])
    };
    assert!(route().contains(&format!("dev jtx{jid} ")), "{}", route());
    let pin = std::fs::File::open(format!("/proc/{jid}/ns/net")).unwrap();
    r.ok(&["stop", "ns"]);
    assert_eq!(route(), "", "the stopped jail's route is still there");
    // Its pair is still there (pinned); a start takes the address anyway.
    r.ok(&["start", "ns"]);
    let again = r.jids()["ns"].expect("ns runs again");
    assert!(route().contains(&format!("dev jtx{again} ")), "{}", route());
    drop(pin);
}
