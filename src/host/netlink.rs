//! A minimal rtnetlink client: the few link, address and route requests a
//! jail's network needs, encoded by hand on one `NETLINK_ROUTE` socket of the
//! calling thread's network namespace, each acknowledged or failed with the
//! kernel's errno (and its extended-ack text, when it gives one).
//!
//! It replaces `ip` processes: a jail's start spawned three of them (a route
//! lookup and two `ip -batch`), about 5 ms of fork, exec and dynamic linking
//! each on a loaded machine, for requests that take microseconds.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use nix::libc;

use super::netlink_wire::*;
pub use super::netlink_wire::{
    RT_SCOPE_HOST, RT_SCOPE_LINK, RT_SCOPE_UNIVERSE, RT_TABLE_LOCAL, RT_TABLE_MAIN, Refusal,
    RouteInfo,
};
/// An `NETLINK_ROUTE` socket in the network namespace of the thread that
/// opened it (it stays there whatever that thread does next).
pub struct Rtnl {
    fd: OwnedFd,
    seq: u32,
    buf: Vec<u8>,
}

impl Rtnl {
    pub fn open() -> Result<Rtnl, Refusal> {
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(nix::errno::Errno::last().into());
        }
        // SAFETY: socket returned a new descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads an int of the size passed. Best effort:
        // without extended acks the errno alone is reported.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                SOL_NETLINK,
                NETLINK_EXT_ACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        Ok(Rtnl {
            fd,
            seq: 0,
            buf: vec![0; 64 << 10],
        })
    }

    fn send(&mut self, msg: Msg) -> Result<u32, Refusal> {
        self.seq = self.seq.wrapping_add(1);
        let bytes = msg.finish(self.seq);
        // SAFETY: a zeroed sockaddr_nl is the kernel's address (pid 0).
        let mut to: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        to.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: sendto reads `bytes` and `to`, both of the sizes passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&to as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(nix::errno::Errno::last().into());
        }
        Ok(self.seq)
    }

    /// Receives datagrams until `each` says the answer to `seq` is complete
    /// (Some), skipping anything not from the kernel or for another request.
    fn receive<T>(
        &mut self,
        seq: u32,
        mut each: impl FnMut(u16, u16, &[u8]) -> Result<Option<T>, Refusal>,
    ) -> Result<T, Refusal> {
        loop {
            // SAFETY: a zeroed sockaddr_nl is a valid buffer for the sender.
            let mut from: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
            // SAFETY: recvfrom writes at most `buf.len()` bytes and the
            // sender's address into `from` of the size passed.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    self.buf.as_mut_ptr().cast(),
                    self.buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_nl).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                match nix::errno::Errno::last() {
                    nix::errno::Errno::EINTR => continue,
                    e => return Err(e.into()),
                }
            }
            // Only the kernel answers requests: a process of the same
            // namespace writing to our port is not heard.
            if from.nl_pid != 0 {
                continue;
            }
            let data = self.buf[..n as usize].to_vec();
            let mut rest = &data[..];
            while rest.len() >= NLMSG_HDRLEN {
                let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if len < NLMSG_HDRLEN || len > rest.len() {
                    return Err(nix::errno::Errno::EBADMSG.into());
                }
                let ty = u16::from_ne_bytes([rest[4], rest[5]]);
                let flags = u16::from_ne_bytes([rest[6], rest[7]]);
                let their_seq = u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]);
                let body = &rest[NLMSG_HDRLEN..len];
                rest = rest.get(len.div_ceil(4) * 4..).unwrap_or_default();
                if their_seq != seq {
                    continue;
                }
                if ty == NLMSG_ERROR {
                    return match ack(flags, body) {
                        Ok(()) => each(ty, flags, body)?.ok_or(Refusal {
                            errno: nix::errno::Errno::EBADMSG,
                            message: Some("an ack before the answer".into()),
                        }),
                        Err(e) => Err(e),
                    };
                }
                if let Some(t) = each(ty, flags, body)? {
                    return Ok(t);
                }
            }
        }
    }

    /// Sends a request that changes something and waits for its ack.
    fn change(&mut self, msg: Msg) -> Result<(), Refusal> {
        let seq = self.send(msg)?;
        self.receive(seq, |ty, _, _| Ok((ty == NLMSG_ERROR).then_some(())))
    }

    /// The index of the interface `name`; none when there is none.
    pub fn link_index(&mut self, name: &str) -> Result<Option<u32>, Refusal> {
        let msg = Msg::new(RTM_GETLINK, NLM_F_ACK)
            .bytes(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, name);
        let seq = self.send(msg)?;
        let mut index = None;
        let got = self.receive(seq, |ty, _, body| {
            if ty == RTM_NEWLINK && body.len() >= 16 {
                index = u32_of(&body[4..8]);
            }
            Ok((ty == NLMSG_ERROR).then_some(()))
        });
        match got {
            Ok(()) => Ok(index),
            Err(Refusal {
                errno: nix::errno::Errno::ENODEV,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The name of the interface `index`; none when there is none (a
    /// route may outlive its interface while a namespace is torn down).
    pub fn link_name(&mut self, index: u32) -> Result<Option<String>, Refusal> {
        let msg = Msg::new(RTM_GETLINK, NLM_F_ACK).bytes(&ifinfomsg(index, 0, 0));
        let seq = self.send(msg)?;
        let mut name = None;
        let got = self.receive(seq, |ty, _, body| {
            if ty == RTM_NEWLINK && body.len() >= 16 {
                name = attrs(&body[16..])
                    .find(|(t, _)| *t == IFLA_IFNAME)
                    .map(|(_, p)| {
                        String::from_utf8_lossy(p.split(|b| *b == 0).next().unwrap_or_default())
                            .into_owned()
                    });
            }
            Ok((ty == NLMSG_ERROR).then_some(()))
        });
        match got {
            Ok(()) => Ok(name),
            Err(Refusal {
                errno: nix::errno::Errno::ENODEV,
                ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates the veth pair `name` (here) and `peer`, the peer moved at
    /// once into the network namespace of process `peer_pid`.
    pub fn add_veth(&mut self, name: &str, peer: &str, peer_pid: u32) -> Result<(), Refusal> {
        let msg = Msg::new(RTM_NEWLINK, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
            .bytes(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, name);
        let (msg, info) = msg.begin(IFLA_LINKINFO);
        let msg = msg.attr_str(IFLA_INFO_KIND, "veth");
        let (msg, data) = msg.begin(IFLA_INFO_DATA);
        let (msg, peer_at) = msg.begin(VETH_INFO_PEER);
        let msg = msg
            .bytes(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, peer)
            .attr_u32(IFLA_NET_NS_PID, peer_pid)
            .end(peer_at)
            .end(data)
            .end(info);
        self.change(msg)
    }

    pub fn del_link(&mut self, index: u32) -> Result<(), Refusal> {
        self.change(Msg::new(RTM_DELLINK, NLM_F_ACK).bytes(&ifinfomsg(index, 0, 0)))
    }

    pub fn set_up(&mut self, index: u32) -> Result<(), Refusal> {
        self.change(Msg::new(RTM_NEWLINK, NLM_F_ACK).bytes(&ifinfomsg(index, IFF_UP, IFF_UP)))
    }

    /// Adds (or deletes) `addr/prefix` on interface `index`, with `ip
    /// addr`'s defaults: local and peer address the same, no broadcast.
    pub fn addr(
        &mut self,
        add: bool,
        index: u32,
        addr: Ipv4Addr,
        prefix: u8,
        scope: u8,
    ) -> Result<(), Refusal> {
        let (ty, flags) = if add {
            (RTM_NEWADDR, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL)
        } else {
            (RTM_DELADDR, NLM_F_ACK)
        };
        let msg = Msg::new(ty, flags)
            .bytes(&ifaddrmsg(prefix, scope, index))
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.change(msg)
    }

    /// Adds a unicast IPv4 route `dst/dst_len` out of `oif`, as `ip route
    /// add` makes it (protocol `boot`).
    pub fn add_route(&mut self, r: &NewRoute) -> Result<(), Refusal> {
        let mut rtmsg = [0u8; 12];
        rtmsg[0] = libc::AF_INET as u8;
        rtmsg[1] = r.dst_len;
        rtmsg[4] = r.table;
        rtmsg[5] = RTPROT_BOOT;
        rtmsg[6] = r.scope;
        rtmsg[7] = RTN_UNICAST;
        let flags = if r.onlink { RTNH_F_ONLINK } else { 0 };
        rtmsg[8..12].copy_from_slice(&flags.to_ne_bytes());
        let mut msg = Msg::new(RTM_NEWROUTE, NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL).bytes(&rtmsg);
        if r.dst_len > 0 {
            msg = msg.attr(RTA_DST, &r.dst.octets());
        }
        if let Some(gw) = r.gateway {
            msg = msg.attr(RTA_GATEWAY, &gw.octets());
        }
        msg = msg
            .attr_u32(RTA_OIF, r.oif)
            .attr(RTA_PREFSRC, &r.prefsrc.octets());
        self.change(msg)
    }

    /// Deletes the IPv4 route `dst/dst_len` of table `table` out of `oif`
    /// (only that one: another interface's route to `dst` stays).
    pub fn del_route(
        &mut self,
        table: u8,
        dst: Ipv4Addr,
        dst_len: u8,
        oif: u32,
    ) -> Result<(), Refusal> {
        let mut rtmsg = [0u8; 12];
        rtmsg[0] = libc::AF_INET as u8;
        rtmsg[1] = dst_len;
        rtmsg[4] = table;
        // Any scope (the kernel matches a deletion's scope unless it is
        // RT_SCOPE_NOWHERE), as `ip route del` asks.
        rtmsg[6] = RT_SCOPE_NOWHERE;
        let msg = Msg::new(RTM_DELROUTE, NLM_F_ACK)
            .bytes(&rtmsg)
            .attr(RTA_DST, &dst.octets())
            .attr_u32(RTA_OIF, oif);
        self.change(msg)
    }

    /// The IPv4 routes of table `table` whose destination is exactly
    /// `dst/dst_len`.
    pub fn routes_to(
        &mut self,
        table: u8,
        dst: Ipv4Addr,
        dst_len: u8,
    ) -> Result<Vec<RouteInfo>, Refusal> {
        let mut rtmsg = [0u8; 12];
        rtmsg[0] = libc::AF_INET as u8;
        let seq = self.send(Msg::new(RTM_GETROUTE, NLM_F_DUMP).bytes(&rtmsg))?;
        let mut found = Vec::new();
        let mut interrupted = false;
        self.receive(seq, |ty, flags, body| {
            interrupted |= flags & NLM_F_DUMP_INTR != 0;
            if ty == NLMSG_DONE {
                // Its body is the dump's own errno (0: complete).
                let code = body.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok());
                return match code.map(i32::from_ne_bytes) {
                    Some(c) if c < 0 => Err(nix::errno::Errno::from_raw(-c).into()),
                    _ => Ok(Some(())),
                };
            }
            if flags & NLM_F_MULTI == 0 {
                return Ok(Some(()));
            }
            if ty == RTM_NEWROUTE
                && let Some(r) = parse_route(body)
                && r.table == u32::from(table)
                && r.dst == dst
                && r.dst_len == dst_len
            {
                found.push(r);
            }
            Ok(None)
        })?;
        // The table changed during the dump: what it showed may be torn.
        if interrupted {
            return Err(nix::errno::Errno::EAGAIN.into());
        }
        Ok(found)
    }
}

/// A route [`Rtnl::add_route`] adds.
#[derive(Debug, Clone)]
pub struct NewRoute {
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    pub table: u8,
    pub scope: u8,
    pub oif: u32,
    pub gateway: Option<Ipv4Addr>,
    pub prefsrc: Ipv4Addr,
    pub onlink: bool,
}
