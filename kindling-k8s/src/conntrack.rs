//! Where a connection to a service address really went: the kernel's
//! connection tracking table, read over netlink (`NETLINK_NETFILTER`,
//! `IPCTNL_MSG_CT_GET`, as `conntrack -G` does). A socket connected to a
//! ClusterIP keeps that address; kube-proxy's (or any) DNAT rewrote the
//! packets to a backend pod, and conntrack's reply tuple says which.

use std::io;
use std::net::SocketAddr;

use crate::Translations;

use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoTuple, Protocol, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr as NetlinkAddr};

/// The kernel's conntrack table, in the network namespace the agent runs
/// in (the node's, for a host-network agent).
#[derive(Debug)]
pub struct Conntrack {
    socket: Socket,
    sequence: u32,
    buf: Vec<u8>,
    /// Lookups that failed for another reason than "no such entry".
    errors: u64,
}

impl Conntrack {
    /// A netlink socket to conntrack (needs `CAP_NET_ADMIN`).
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind_auto()?;
        socket.connect(&NetlinkAddr::new(0, 0))?;
        Ok(Self {
            socket,
            sequence: 0,
            buf: vec![0; 8192],
            errors: 0,
        })
    }

    /// Lookups that failed (permission, a netlink error), not counting
    /// connections conntrack does not know.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The entry of the TCP connection `src` → `dst`, as conntrack saw its
    /// first packet: its reply tuple's source is the translated
    /// destination.
    pub fn lookup(&mut self, src: SocketAddr, dst: SocketAddr) -> io::Result<Option<SocketAddr>> {
        let family = if src.is_ipv4() {
            NetfilterProtoFamily::IPv4
        } else {
            NetfilterProtoFamily::IPv6
        };
        let original = vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(src.ip()),
                IPTuple::DestinationAddress(dst.ip()),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::Tcp),
                ProtoTuple::SourcePort(src.port()),
                ProtoTuple::DestinationPort(dst.port()),
            ]),
        ];
        let request = NetfilterMessage::new(
            NetfilterHeader::new(family, 0, 0),
            ConntrackMessage::Get(vec![ConntrackAttribute::CtaTupleOrig(original)]),
        );
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        header.sequence_number = self.sequence;
        let mut message = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(request));
        message.finalize();
        let mut out = vec![0; message.buffer_len()];
        message.serialize(&mut out);
        self.socket.send(&out, 0)?;
        // the kernel answers a GET before send returns: an entry or an error
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], libc::MSG_DONTWAIT)?;
            let answer = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[..n])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if answer.header.sequence_number != self.sequence {
                // an answer to an earlier lookup that gave up: skip it
                continue;
            }
            return match answer.payload {
                NetlinkPayload::InnerMessage(NetfilterMessage {
                    inner: NetfilterMessageInner::Conntrack(ConntrackMessage::New(attributes)),
                    ..
                }) => Ok(reply_source(&attributes)),
                NetlinkPayload::Error(e) if e.raw_code() == -libc::ENOENT => Ok(None),
                NetlinkPayload::Error(e) => Err(e.to_io()),
                _ => Ok(None),
            };
        }
    }
}

/// The source of the reply tuple: who answers the connection.
fn reply_source(attributes: &[ConntrackAttribute]) -> Option<SocketAddr> {
    let reply = attributes.iter().find_map(|a| match a {
        ConntrackAttribute::CtaTupleReply(t) => Some(t),
        _ => None,
    })?;
    let ip = reply.iter().find_map(|t| match t {
        Tuple::Ip(ips) => ips.iter().find_map(|i| match i {
            IPTuple::SourceAddress(a) => Some(*a),
            _ => None,
        }),
        _ => None,
    })?;
    let port = reply.iter().find_map(|t| match t {
        Tuple::Proto(p) => p.iter().find_map(|p| match p {
            ProtoTuple::SourcePort(port) => Some(*port),
            _ => None,
        }),
        _ => None,
    })?;
    Some(SocketAddr::new(ip, port))
}

impl Translations for Conntrack {
    fn translated(&mut self, src: SocketAddr, dst: SocketAddr) -> Option<SocketAddr> {
        match self.lookup(src, dst) {
            Ok(to) => to.filter(|to| *to != dst),
            Err(e) => {
                self.errors += 1;
                if self.errors == 1 {
                    tracing::warn!(error = %e, "reading conntrack: a service's backend pods will not be named");
                }
                None
            }
        }
    }
}
