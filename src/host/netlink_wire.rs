//! The rtnetlink wire format for [`super::netlink`]: the kernel's constants,
//! requests built as bytes (header, fixed struct, attributes, nests), and
//! answers read back (attributes, acks with their extended-ack text, routes).

use std::net::Ipv4Addr;

use nix::libc;

// linux/netlink.h, linux/rtnetlink.h, linux/if_link.h, linux/veth.h,
// linux/if_addr.h: stable kernel ABI, spelled as the headers spell them.
pub(super) const NLMSG_ERROR: u16 = 2;
pub(super) const NLMSG_DONE: u16 = 3;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_MULTI: u16 = 0x2;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_DUMP: u16 = 0x300;
pub(super) const NLM_F_EXCL: u16 = 0x200;
pub(super) const NLM_F_CREATE: u16 = 0x400;
pub(super) const NLM_F_DUMP_INTR: u16 = 0x10;
/// In an ack: the request is not echoed back.
pub(super) const NLM_F_CAPPED: u16 = 0x100;
/// In an ack: TLVs (the extended-ack message) follow.
pub(super) const NLM_F_ACK_TLVS: u16 = 0x200;
pub(super) const NLMSGERR_ATTR_MSG: u16 = 1;
pub(super) const SOL_NETLINK: libc::c_int = 270;
pub(super) const NETLINK_EXT_ACK: libc::c_int = 11;

pub(super) const RTM_NEWLINK: u16 = 16;
pub(super) const RTM_DELLINK: u16 = 17;
pub(super) const RTM_GETLINK: u16 = 18;
pub(super) const RTM_NEWADDR: u16 = 20;
pub(super) const RTM_DELADDR: u16 = 21;
pub(super) const RTM_NEWROUTE: u16 = 24;
pub(super) const RTM_DELROUTE: u16 = 25;
pub(super) const RTM_GETROUTE: u16 = 26;

pub(super) const IFLA_IFNAME: u16 = 3;
pub(super) const IFLA_LINKINFO: u16 = 18;
pub(super) const IFLA_NET_NS_PID: u16 = 19;
pub(super) const IFLA_INFO_KIND: u16 = 1;
pub(super) const IFLA_INFO_DATA: u16 = 2;
pub(super) const VETH_INFO_PEER: u16 = 1;
pub(super) const IFA_ADDRESS: u16 = 1;
pub(super) const IFA_LOCAL: u16 = 2;
pub(super) const RTA_DST: u16 = 1;
pub(super) const RTA_OIF: u16 = 4;
pub(super) const RTA_GATEWAY: u16 = 5;
pub(super) const RTA_PREFSRC: u16 = 7;
pub(super) const RTA_TABLE: u16 = 15;

pub const RT_TABLE_MAIN: u8 = 254;
pub const RT_TABLE_LOCAL: u8 = 255;
pub(super) const RTPROT_BOOT: u8 = 3;
pub const RT_SCOPE_UNIVERSE: u8 = 0;
pub const RT_SCOPE_LINK: u8 = 253;
pub const RT_SCOPE_HOST: u8 = 254;
pub(super) const RT_SCOPE_NOWHERE: u8 = 255;
pub(super) const RTN_UNICAST: u8 = 1;
pub(super) const RTNH_F_ONLINK: u32 = 4;
pub(super) const IFF_UP: u32 = 1;

pub(super) const NLMSG_HDRLEN: usize = 16;

/// A request the kernel refused: its errno and extended-ack text.
#[derive(Debug)]
pub struct Refusal {
    pub errno: nix::errno::Errno,
    pub message: Option<String>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            Some(m) => write!(f, "{m} ({})", self.errno.desc()),
            None => f.write_str(self.errno.desc()),
        }
    }
}

impl std::error::Error for Refusal {}

impl From<nix::errno::Errno> for Refusal {
    fn from(errno: nix::errno::Errno) -> Self {
        Refusal {
            errno,
            message: None,
        }
    }
}

/// A route as a dump reports it (IPv4 only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    pub dst: Ipv4Addr,
    pub dst_len: u8,
    pub table: u32,
    pub kind: u8,
    pub scope: u8,
    pub oif: Option<u32>,
    pub prefsrc: Option<Ipv4Addr>,
}

impl RouteInfo {
    /// The route as `ip route` words it, with the interface's name (`ifN`
    /// when it has none any more), for messages.
    pub fn describe(&self, dev: &str) -> String {
        let kind = match self.kind {
            RTN_UNICAST => String::new(),
            2 => "local ".into(),
            3 => "broadcast ".into(),
            k => format!("type {k} "),
        };
        let scope = match self.scope {
            RT_SCOPE_UNIVERSE => String::new(),
            RT_SCOPE_LINK => " scope link".into(),
            RT_SCOPE_HOST => " scope host".into(),
            s => format!(" scope {s}"),
        };
        let src = self
            .prefsrc
            .map(|s| format!(" src {s}"))
            .unwrap_or_default();
        format!("{kind}{}/{} dev {dev}{scope}{src}", self.dst, self.dst_len)
    }
}

/// One request: header, fixed struct, attributes (nests by start offset).
pub(super) struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    pub(super) fn new(ty: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; NLMSG_HDRLEN];
        buf[4..6].copy_from_slice(&ty.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Msg { buf }
    }

    pub(super) fn bytes(mut self, b: &[u8]) -> Msg {
        self.buf.extend_from_slice(b);
        self.align();
        self
    }

    fn align(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    pub(super) fn attr(mut self, ty: u16, payload: &[u8]) -> Msg {
        let len = u16::try_from(4 + payload.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.align();
        self
    }

    pub(super) fn attr_u32(self, ty: u16, v: u32) -> Msg {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// A NUL-terminated string attribute, as the kernel's `NLA_STRING`s are sent.
    pub(super) fn attr_str(self, ty: u16, s: &str) -> Msg {
        let mut b = s.as_bytes().to_vec();
        b.push(0);
        self.attr(ty, &b)
    }

    /// Opens a nested attribute; [`Msg::end`] with the offset closes it.
    pub(super) fn begin(mut self, ty: u16) -> (Msg, usize) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&[0, 0]);
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        (self, at)
    }

    pub(super) fn end(mut self, at: usize) -> Msg {
        let len = u16::try_from(self.buf.len() - at).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        self
    }

    pub(super) fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// `struct ifinfomsg`: family, type, index, flags, change.
pub(super) fn ifinfomsg(index: u32, flags: u32, change: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b[8..12].copy_from_slice(&flags.to_ne_bytes());
    b[12..16].copy_from_slice(&change.to_ne_bytes());
    b
}

/// `struct ifaddrmsg`: AF_INET, prefix length, flags, scope, index.
pub(super) fn ifaddrmsg(prefix: u8, scope: u8, index: u32) -> [u8; 8] {
    let mut b = [libc::AF_INET as u8, prefix, 0, scope, 0, 0, 0, 0];
    b[4..8].copy_from_slice(&index.to_ne_bytes());
    b
}

/// The attributes in `body`: (type without the nested/byte-order bits, payload).
pub(super) fn attrs(body: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.len() < 4 {
            return None;
        }
        let len = usize::from(u16::from_ne_bytes([rest[0], rest[1]]));
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            return None;
        }
        let payload = &rest[4..len];
        rest = rest.get(len.div_ceil(4) * 4..).unwrap_or_default();
        Some((ty, payload))
    })
}

pub(super) fn ipv4(payload: &[u8]) -> Option<Ipv4Addr> {
    <[u8; 4]>::try_from(payload).ok().map(Ipv4Addr::from)
}

pub(super) fn u32_of(payload: &[u8]) -> Option<u32> {
    <[u8; 4]>::try_from(payload).ok().map(u32::from_ne_bytes)
}

/// The errno of an `NLMSG_ERROR` body (0: an ack) and, when the kernel
/// gave one, its extended-ack message.
pub(super) fn ack(flags: u16, body: &[u8]) -> Result<(), Refusal> {
    let Some(code) = body.get(..4).and_then(|b| <[u8; 4]>::try_from(b).ok()) else {
        return Err(nix::errno::Errno::EBADMSG.into());
    };
    let code = i32::from_ne_bytes(code);
    if code == 0 {
        return Ok(());
    }
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        // After the errno: the request's header, and the whole request
        // unless capped; then the TLVs.
        let echoed = body
            .get(4..8)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
            .map_or(0, |b| u32::from_ne_bytes(b) as usize);
        let skip = if flags & NLM_F_CAPPED != 0 {
            NLMSG_HDRLEN
        } else {
            echoed.div_ceil(4) * 4
        };
        if let Some(tlvs) = body.get(4 + skip..) {
            message = attrs(tlvs)
                .find(|(ty, _)| *ty == NLMSGERR_ATTR_MSG)
                .map(|(_, p)| {
                    String::from_utf8_lossy(p.split(|b| *b == 0).next().unwrap_or_default())
                        .trim()
                        .to_owned()
                })
                .filter(|m| !m.is_empty());
        }
    }
    Err(Refusal {
        errno: nix::errno::Errno::from_raw(-code),
        message,
    })
}

pub(super) fn parse_route(body: &[u8]) -> Option<RouteInfo> {
    if body.len() < 12 || i32::from(body[0]) != libc::AF_INET {
        return None;
    }
    let mut r = RouteInfo {
        dst: Ipv4Addr::UNSPECIFIED,
        dst_len: body[1],
        table: u32::from(body[4]),
        kind: body[7],
        scope: body[6],
        oif: None,
        prefsrc: None,
    };
    for (ty, p) in attrs(&body[12..]) {
        match ty {
            RTA_DST => r.dst = ipv4(p)?,
            RTA_TABLE => r.table = u32_of(p)?,
            RTA_OIF => r.oif = u32_of(p),
            RTA_PREFSRC => r.prefsrc = ipv4(p),
            _ => {}
        }
    }
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_veth_request_nests_its_peer() {
        let msg = Msg::new(RTM_NEWLINK, NLM_F_ACK)
            .bytes(&ifinfomsg(0, 0, 0))
            .attr_str(IFLA_IFNAME, "jtx7");
        let (msg, info) = msg.begin(IFLA_LINKINFO);
        let msg = msg.attr_str(IFLA_INFO_KIND, "veth").end(info);
        let b = msg.finish(9);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 9);
        let body = &b[NLMSG_HDRLEN + 16..];
        let got: Vec<(u16, Vec<u8>)> = attrs(body).map(|(t, p)| (t, p.to_vec())).collect();
        assert_eq!(got[0], (IFLA_IFNAME, b"jtx7\0".to_vec()));
        assert_eq!(got[1].0, IFLA_LINKINFO);
        let inner: Vec<(u16, Vec<u8>)> = attrs(&got[1].1).map(|(t, p)| (t, p.to_vec())).collect();
        assert_eq!(inner, vec![(IFLA_INFO_KIND, b"veth\0".to_vec())]);
        assert!(b.len().is_multiple_of(4));
    }

    #[test]
    fn an_error_ack_carries_errno_and_message() {
        let mut body = (-17i32).to_ne_bytes().to_vec();
        body.extend_from_slice(&[0u8; NLMSG_HDRLEN]);
        body.extend_from_slice(&12u16.to_ne_bytes());
        body.extend_from_slice(&NLMSGERR_ATTR_MSG.to_ne_bytes());
        body.extend_from_slice(b"taken\0\0\0");
        let e = ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &body).unwrap_err();
        assert_eq!(e.errno, nix::errno::Errno::EEXIST);
        assert_eq!(e.to_string(), "taken (File exists)");
        assert!(ack(0, &0i32.to_ne_bytes()).is_ok());
        assert!(ack(0, &[1, 2]).is_err());
    }
}
