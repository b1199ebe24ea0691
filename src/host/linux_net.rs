//! A Linux jail's network: a veth pair into the jail's own network namespace,
//! holding only the jail's IPv4 address, with a host route to it.
//!
//! The jail's side (`eth0` in its namespace): `lo` with `127.0.0.1/32` only
//! (not the usual /8, so other 127.x addresses leave through `eth0`), the
//! jail's address as a /32 on `eth0`, and a default route via
//! [`HOST_GATEWAY`]. The host's side (`jtxPID`, named after the init's host
//! PID, the JID, so that it fits the 15-byte limit whatever the jail's name):
//! a /32 route to the jail's address in the `local` table, which beats the
//! `127.0.0.0/8` local route there, with [`HOST_GATEWAY`] as its source, so a
//! reply to the host never lands on the jail's own `127.0.0.1`.
//! `route_localnet` on both ends lets 127.x addresses cross a non-loopback
//! link; per-interface forwarding on the host's end lets jails reach each
//! other through the host's routes, without turning on `ip_forward`.
//!
//! Nothing here needs cleaning up: the pair dies with the jail's namespace
//! (when its last process exits), and the route goes with the interface.
//! The kernel tears a namespace down asynchronously, so a stop drops the
//! route at once ([`unroute`]), and a pair whose namespace is not gone yet
//! is deleted before its address is routed again.
//!
//! Everything is asked of the kernel over rtnetlink ([`super::netlink`]),
//! not through `ip` processes.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;

use super::netlink::{self, NewRoute, Rtnl};

/// The host's address as a jail sees it: its default gateway, and the source
/// address of the host's connections to it. It must be a local address of
/// the host other than `127.0.0.1` (which is the jail's own loopback) and
/// no jail's: a jail may not use it.
pub const HOST_GATEWAY: Ipv4Addr = Ipv4Addr::new(127, 255, 255, 254);

/// The jail's end of the pair, inside its namespace.
pub const JAIL_IF: &str = "eth0";

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error(
        "{ip} is an IPv6 address; the linux backend gives a jail an IPv4 address only: \
         use an IPv4 address (loopback ones such as 127.0.3.17 work)"
    )]
    Ipv6 { ip: String },
    #[error("{ip} is not an IP address")]
    NotAnAddress { ip: String },
    #[error("{ip} is reserved on the linux backend ({why}); use another address")]
    Reserved { ip: Ipv4Addr, why: &'static str },
    #[error("{ip} is already in use on this host (route: {route}); use another address")]
    InUse { ip: Ipv4Addr, route: String },
    #[error("open the network namespace of init {pid}: {source}")]
    Netns { pid: u32, source: std::io::Error },
    #[error("enter the network namespace of init {pid}: {source}")]
    Setns { pid: u32, source: nix::Error },
    #[error("set {path}: {source}")]
    Sysctl {
        path: String,
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        source: super::netlink::Refusal,
    },
    #[error("set up the network of init {pid}: the setup thread panicked")]
    Thread { pid: u32 },
}

/// The jail's address, if the linux backend can give it to a jail.
pub fn jail_addr(ip: &str) -> Result<Ipv4Addr, NetError> {
    let addr: IpAddr = ip
        .parse()
        .map_err(|_| NetError::NotAnAddress { ip: ip.into() })?;
    let v4 = match addr {
        IpAddr::V4(v4) => v4,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4,
            None => return Err(NetError::Ipv6 { ip: ip.into() }),
        },
    };
    let reserved = |why| Err(NetError::Reserved { ip: v4, why });
    if v4 == Ipv4Addr::LOCALHOST {
        return reserved("it is every jail's own loopback address");
    }
    if v4 == HOST_GATEWAY {
        return reserved("it is the host's address as the jails see it");
    }
    if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() {
        return reserved("not a unicast address");
    }
    Ok(v4)
}

/// The host's end of the pair of the jail whose init is `pid`.
pub fn host_if(pid: u32) -> String {
    format!("jtx{pid}")
}

/// Writes `value` to `/proc/sys/net/PATH` of the calling thread's network
/// namespace; `optional` ones (IPv6, absent when the kernel lacks it) may
/// be missing.
fn sysctl(path: &str, value: &str, optional: bool) -> Result<(), NetError> {
    let full = format!("/proc/sys/net/{path}");
    match std::fs::write(&full, value) {
        Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r.map_err(|source| NetError::Sysctl { path: full, source }),
    }
}

/// Whether `pid` is alive and runs a jail init (so its interface is in use).
fn is_live_init(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(super::linux::INIT_ARG.as_bytes()))
}

/// How long a start waits for a stopped jail's pair to finish going away.
const TEARDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// A failed request's error, saying what was asked.
fn refused(what: impl Into<String>) -> impl FnOnce(netlink::Refusal) -> NetError {
    let what = what.into();
    move |source| NetError::Netlink { what, source }
}

/// Refuses an address the host already routes locally to something else
/// (one of its own addresses, a live jail), and waits out, or deletes, a
/// dead jail's pair that still holds the route: the kernel tears a network
/// namespace down asynchronously, so right after a stop (or a restart's
/// stop) the old route may still be there, on an interface whose name is
/// already gone.
fn claim(nl: &mut Rtnl, addr: Ipv4Addr) -> Result<(), NetError> {
    let until = std::time::Instant::now() + TEARDOWN_WAIT;
    loop {
        let routes = match nl.routes_to(netlink::RT_TABLE_LOCAL, addr, 32) {
            // The table changed while it was read (other jails starting):
            // read it again, within the same bound as the teardown wait.
            Err(e) if e.errno == nix::errno::Errno::EAGAIN && std::time::Instant::now() < until => {
                continue;
            }
            r => r.map_err(refused(format!("list the host's local routes to {addr}")))?,
        };
        let Some(route) = routes.first() else {
            return Ok(());
        };
        let name = match route.oif {
            Some(i) => nl
                .link_name(i)
                .map_err(refused(format!("look up interface {i}")))?,
            None => None,
        };
        let dead_jail = name
            .as_deref()
            .and_then(|n| n.strip_prefix("jtx"))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|pid| !is_live_init(pid));
        // A route out of an interface that is gone: its namespace is being
        // torn down, and the route goes with it.
        let unnamed = route.oif.is_some() && name.is_none();
        if !(dead_jail || unnamed) || std::time::Instant::now() >= until {
            let dev = match (&name, route.oif) {
                (Some(n), _) => n.clone(),
                (None, Some(i)) => format!("if{i}"),
                (None, None) => "none".into(),
            };
            return Err(NetError::InUse {
                ip: addr,
                route: route.describe(&dev),
            });
        }
        if dead_jail
            && let Some(i) = route.oif
            && nl.del_link(i).is_ok()
        {
            // Deleting one end deletes both, and the route with them, at
            // once: look again without waiting (a restart's common case).
            continue;
        }
        // Gone on its own meanwhile, or an unnamed end the kernel is still
        // tearing down: wait for it.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Runs `f` on a thread inside the network namespace of `pid`: the thread's
/// `/proc/sys/net` and the processes it spawns are the jail's. Setting the
/// namespace of one thread leaves the rest of the process on the host's.
fn in_netns<T: Send>(
    pid: u32,
    f: impl FnOnce() -> Result<T, NetError> + Send,
) -> Result<T, NetError> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(|source| NetError::Netns { pid, source })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|source| NetError::Setns { pid, source })?;
            f()
        })
        .join()
        .unwrap_or(Err(NetError::Thread { pid }))
    })
}

/// The init's verdict when the host gave up setting up its network.
pub const NO_GO: &str = "the host did not set up the jail's network";

/// For the jail's init, in its new network namespace: waits for the host to
/// have set it up (`go` on stdin; EOF when the host gave up), then puts
/// `/dev/null` on stdin so that exec.start does not inherit the pipe.
pub fn await_host() -> Result<(), String> {
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    let null = std::fs::File::open("/dev/null").map_err(|e| format!("open /dev/null: {e}"))?;
    nix::unistd::dup2_stdin(&null).map_err(|e| format!("close the handshake pipe: {e}"))?;
    match line.trim() {
        "go" => Ok(()),
        _ => Err(NO_GO.into()),
    }
}

/// Gives the jail whose init is `pid` (in its own, still empty, network
/// namespace) the address `addr`, reachable from the host and other jails.
/// On failure the jail is not started, and its namespace, with whatever was
/// made in it, dies with the init.
pub fn setup(pid: u32, addr: Ipv4Addr) -> Result<(), NetError> {
    let host = host_if(pid);
    let mut nl = Rtnl::open().map_err(refused("open a netlink socket"))?;
    claim(&mut nl, addr)?;
    // A pair of that name can only be a dead init's (PIDs are unique among
    // live processes) whose namespace is still being torn down.
    if let Some(old) = nl
        .link_index(&host)
        .map_err(refused(format!("look up {host}")))?
    {
        let _ = nl.del_link(old);
    }
    nl.add_veth(&host, JAIL_IF, pid).map_err(refused(format!(
        "add the veth pair {host}/{JAIL_IF} into the network namespace of init {pid}"
    )))?;
    let index = nl
        .link_index(&host)
        .map_err(refused(format!("look up {host}")))?
        .ok_or_else(|| NetError::Netlink {
            what: format!("look up {host}"),
            source: nix::errno::Errno::ENODEV.into(),
        })?;
    nl.set_up(index)
        .map_err(refused(format!("set {host} up")))?;
    sysctl(&format!("ipv4/conf/{host}/route_localnet"), "1", false)?;
    sysctl(&format!("ipv4/conf/{host}/forwarding"), "1", false)?;
    // IPv4 only: no link-local IPv6 path between the jail and the host.
    sysctl(&format!("ipv6/conf/{host}/disable_ipv6"), "1", true)?;
    in_netns(pid, || {
        sysctl(&format!("ipv4/conf/{JAIL_IF}/route_localnet"), "1", false)?;
        sysctl(&format!("ipv6/conf/{JAIL_IF}/disable_ipv6"), "1", true)?;
        // Opened here: a netlink socket acts in the namespace it was made in.
        let mut nl = Rtnl::open().map_err(refused("open a netlink socket in the jail"))?;
        jail_side(&mut nl, addr)
    })?;
    // Routed last, once the jail's end is up with its address: until then
    // a connection to the address is refused at once by the host's own
    // loopback, where a SYN sent into a pair whose far end is not up yet
    // would be dropped and cost the client a one-second retransmission.
    nl.add_route(&NewRoute {
        dst: addr,
        dst_len: 32,
        table: netlink::RT_TABLE_LOCAL,
        scope: netlink::RT_SCOPE_LINK,
        oif: index,
        gateway: None,
        prefsrc: HOST_GATEWAY,
        onlink: false,
    })
    .map_err(refused(format!(
        "route {addr}/32 to {host} in table local, source {HOST_GATEWAY}"
    )))
}

/// The index of the host's end of the pair of the live init `pid`: taken
/// while the init runs (its PID, and so the name, is its own then), for
/// [`unroute`] once it is gone.
pub fn host_end(pid: u32) -> Option<u32> {
    Rtnl::open().ok()?.link_index(&host_if(pid)).ok()?
}

/// Drops the host's route to a stopped jail's address `addr` through its
/// pair `index` at once. The pair itself goes with the jail's namespace,
/// which the kernel tears down later, asynchronously: until then its route
/// would send connections into a dead namespace, where SYNs are dropped
/// (a client waits a second to retry) instead of refused. Deleting the
/// route, not the pair: a pair's deletion waits for RCU grace periods
/// under the lock every jail's network setup takes. Best effort: a start
/// on that address deletes a dead jail's leftovers anyway (see `claim`).
pub fn unroute(index: u32, addr: Ipv4Addr) {
    if let Ok(mut nl) = Rtnl::open() {
        let _ = nl.del_route(netlink::RT_TABLE_LOCAL, addr, 32, index);
    }
}

/// `ip addr`'s default scope: `host` for 127/8, else `global`.
fn scope_of(addr: Ipv4Addr) -> u8 {
    if addr.is_loopback() {
        netlink::RT_SCOPE_HOST
    } else {
        netlink::RT_SCOPE_UNIVERSE
    }
}

/// The jail's side, from inside its namespace: `lo` with `127.0.0.1/32`
/// only, the jail's address on [`JAIL_IF`], the default route via the host.
fn jail_side(nl: &mut Rtnl, addr: Ipv4Addr) -> Result<(), NetError> {
    let index = |nl: &mut Rtnl, name: &str| {
        nl.link_index(name)
            .map_err(refused(format!("look up {name} in the jail")))?
            .ok_or_else(|| NetError::Netlink {
                what: format!("look up {name} in the jail"),
                source: nix::errno::Errno::ENODEV.into(),
            })
    };
    let lo = index(nl, "lo")?;
    let eth = index(nl, JAIL_IF)?;
    let localhost = Ipv4Addr::LOCALHOST;
    nl.set_up(lo).map_err(refused("set lo up in the jail"))?;
    // Bringing lo up gives it 127.0.0.1/8; only 127.0.0.1 is the jail's.
    // (Deleted first: a /32 added beside the /8 would be its secondary,
    // deleted with it.)
    nl.addr(false, lo, localhost, 8, netlink::RT_SCOPE_HOST)
        .map_err(refused("delete 127.0.0.1/8 from lo in the jail"))?;
    nl.addr(true, lo, localhost, 32, netlink::RT_SCOPE_HOST)
        .map_err(refused("add 127.0.0.1/32 to lo in the jail"))?;
    nl.addr(true, eth, addr, 32, scope_of(addr))
        .map_err(refused(format!("add {addr}/32 to {JAIL_IF} in the jail")))?;
    nl.set_up(eth)
        .map_err(refused(format!("set {JAIL_IF} up in the jail")))?;
    nl.add_route(&NewRoute {
        dst: Ipv4Addr::UNSPECIFIED,
        dst_len: 0,
        table: netlink::RT_TABLE_MAIN,
        scope: netlink::RT_SCOPE_UNIVERSE,
        oif: eth,
        gateway: Some(HOST_GATEWAY),
        prefsrc: addr,
        onlink: true,
    })
    .map_err(refused(format!(
        "route default via {HOST_GATEWAY} on {JAIL_IF} in the jail"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unicast_ipv4_other_than_the_reserved_two() {
        assert_eq!(
            jail_addr("127.0.3.17").unwrap(),
            Ipv4Addr::new(127, 0, 3, 17)
        );
        assert_eq!(
            jail_addr("::ffff:127.0.3.17").unwrap(),
            Ipv4Addr::new(127, 0, 3, 17)
        );
        assert_eq!(jail_addr("192.0.2.9").unwrap(), Ipv4Addr::new(192, 0, 2, 9));
        for bad in [
            "127.0.0.1",
            "127.255.255.254",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "fd00::5",
            "x",
        ] {
            assert!(jail_addr(bad).is_err(), "{bad}");
        }
        let e = jail_addr("fd00::5").unwrap_err().to_string();
        assert!(e.contains("IPv4 address only"), "{e}");
    }

    #[test]
    fn host_interface_names_fit_the_kernel_limit() {
        // PIDs go up to 2^22 (pid_max's ceiling): 3 + 7 bytes.
        assert!(host_if(4_194_304).len() <= 15);
    }
}
