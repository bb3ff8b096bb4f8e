//! nftables trace messages (`NFT_MSG_TRACE` on the `NFNLGRP_NFTRACE`
//! netlink group), parsed from their bytes: which table, chain and rule a
//! packet matched and the verdict, with the packet's tuple at that point.
//! They name the rule behind a `NETFILTER_DROP` and the rule that
//! translated a packet; [`VerdictLog`] keeps recent ones to match paths
//! against. Sans-IO: the caller reads the netlink socket.
//!
//! # Examples
//!
//! ```
//! use kindling_flow::packets::nftrace::parse_messages;
//!
//! // a netlink message of another kind is skipped
//! let mut msg = vec![20, 0, 0, 0, 3, 0, 0, 0];
//! msg.extend([0u8; 12]);
//! assert!(parse_messages(&msg).is_empty());
//! ```

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// `(NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_TRACE`.
const NFT_TRACE_MSG_TYPE: u16 = (10 << 8) | 17;
const NLA_TYPE_MASK: u16 = 0x3fff;

mod attr {
    pub const TABLE: u16 = 1;
    pub const CHAIN: u16 = 2;
    pub const RULE_HANDLE: u16 = 3;
    pub const TYPE: u16 = 4;
    pub const VERDICT: u16 = 5;
    pub const NETWORK_HEADER: u16 = 8;
    pub const TRANSPORT_HEADER: u16 = 9;
    pub const IIF: u16 = 10;
    pub const OIF: u16 = 12;
    pub const NFPROTO: u16 = 15;
    pub const VERDICT_CODE: u16 = 1;
    pub const VERDICT_CHAIN: u16 = 2;
}

/// What a rule (or a chain's policy) decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// `drop`.
    Drop,
    /// `accept` (also what a NAT statement ends with).
    Accept,
    /// `continue`: the rule matched, evaluation goes on.
    Continue,
    /// `jump CHAIN` / `goto CHAIN`.
    Jump(String),
    /// `return`.
    Return,
    /// Another code (`queue`, `stolen`, …).
    Other(i32),
}

impl Verdict {
    fn from_code(code: i32, chain: Option<String>) -> Self {
        match code {
            0 => Verdict::Drop,
            1 => Verdict::Accept,
            -1 => Verdict::Continue,
            -3 | -4 => Verdict::Jump(chain.unwrap_or_default()),
            -5 => Verdict::Return,
            c => Verdict::Other(c),
        }
    }

    /// As nft prints it.
    pub fn name(&self) -> String {
        match self {
            Verdict::Drop => "drop".to_owned(),
            Verdict::Accept => "accept".to_owned(),
            Verdict::Continue => "continue".to_owned(),
            Verdict::Jump(c) => format!("jump {c}"),
            Verdict::Return => "return".to_owned(),
            Verdict::Other(c) => format!("verdict {c}"),
        }
    }
}

/// One trace message: a rule or a chain's policy that decided about a
/// packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NftTrace {
    /// Table family (`ip`, `ip6`, `inet`, `bridge`, …).
    pub family: &'static str,
    /// Table name.
    pub table: String,
    /// Chain name.
    pub chain: String,
    /// The rule's handle (`nft -a list ruleset` shows it); `None` when the
    /// chain's policy decided.
    pub rule_handle: Option<u64>,
    /// The verdict.
    pub verdict: Verdict,
    /// The packet's tuple at that point: protocol, source, destination.
    pub tuple: Option<(u8, SocketAddr, SocketAddr)>,
    /// Input and output interface indexes, when known.
    pub iif: Option<u32>,
    /// (see `iif`)
    pub oif: Option<u32>,
}

fn family_name(f: u8) -> &'static str {
    match f {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "unknown",
    }
}

/// The netlink attributes of `buf`: (type, payload).
fn attributes(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > buf.len() {
            return None;
        }
        let payload = &buf[4..len];
        let next = (len + 3) & !3;
        buf = buf.get(next..).unwrap_or(&[]);
        Some((kind, payload))
    })
}

fn be32(b: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

fn string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The tuple from the network and transport headers of a trace.
fn tuple(network: &[u8], transport: Option<&[u8]>) -> Option<(u8, SocketAddr, SocketAddr)> {
    let version = network.first()? >> 4;
    let (proto, src, dst, l4_inline): (u8, IpAddr, IpAddr, Option<&[u8]>) = match version {
        4 => {
            let ihl = usize::from(network.first()? & 0xf) * 4;
            let s: [u8; 4] = network.get(12..16)?.try_into().ok()?;
            let d: [u8; 4] = network.get(16..20)?.try_into().ok()?;
            (
                *network.get(9)?,
                IpAddr::V4(Ipv4Addr::from(s)),
                IpAddr::V4(Ipv4Addr::from(d)),
                network.get(ihl..),
            )
        }
        6 => {
            let s: [u8; 16] = network.get(8..24)?.try_into().ok()?;
            let d: [u8; 16] = network.get(24..40)?.try_into().ok()?;
            (
                *network.get(6)?,
                IpAddr::V6(Ipv6Addr::from(s)),
                IpAddr::V6(Ipv6Addr::from(d)),
                network.get(40..),
            )
        }
        _ => return None,
    };
    // the kernel sends the transport header apart; older ones inline
    let l4 = transport.filter(|t| t.len() >= 4).or(l4_inline)?;
    if l4.len() < 4 || !matches!(proto, 6 | 17) {
        return None;
    }
    let sport = u16::from_be_bytes([l4[0], l4[1]]);
    let dport = u16::from_be_bytes([l4[2], l4[3]]);
    Some((
        proto,
        SocketAddr::new(src, sport),
        SocketAddr::new(dst, dport),
    ))
}

/// Every trace message in a buffer of netlink messages (as one `recv`
/// returns them); other messages and damaged ones are skipped.
pub fn parse_messages(mut buf: &[u8]) -> Vec<NftTrace> {
    let mut out = Vec::new();
    while buf.len() >= 16 {
        let len = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        let kind = u16::from_ne_bytes([buf[4], buf[5]]);
        if len < 16 || len > buf.len() {
            break;
        }
        // nlmsghdr (16) + nfgenmsg (4)
        if kind == NFT_TRACE_MSG_TYPE && len >= 20 {
            if let Some(t) = parse_trace(buf[16], &buf[20..len]) {
                out.push(t);
            }
        }
        buf = buf.get((len + 3) & !3..).unwrap_or(&[]);
    }
    out
}

fn parse_trace(family: u8, attrs: &[u8]) -> Option<NftTrace> {
    let mut t = NftTrace {
        family: family_name(family),
        table: String::new(),
        chain: String::new(),
        rule_handle: None,
        verdict: Verdict::Continue,
        tuple: None,
        iif: None,
        oif: None,
    };
    let (mut network, mut transport) = (None, None);
    for (kind, payload) in attributes(attrs) {
        match kind {
            attr::TABLE => t.table = string(payload),
            attr::CHAIN => t.chain = string(payload),
            attr::RULE_HANDLE => {
                t.rule_handle = payload
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .map(u64::from_be_bytes);
            }
            attr::VERDICT => {
                let (mut code, mut chain) = (None, None);
                for (k, p) in attributes(payload) {
                    match k {
                        attr::VERDICT_CODE => code = be32(p).map(|c| c as i32),
                        attr::VERDICT_CHAIN => chain = Some(string(p)),
                        _ => {}
                    }
                }
                t.verdict = Verdict::from_code(code?, chain);
            }
            attr::NETWORK_HEADER => network = Some(payload),
            attr::TRANSPORT_HEADER => transport = Some(payload),
            attr::IIF => t.iif = be32(payload),
            attr::OIF => t.oif = be32(payload),
            attr::NFPROTO | attr::TYPE => {}
            _ => {}
        }
    }
    t.tuple = network.and_then(|n| tuple(n, transport));
    (!t.table.is_empty()).then_some(t)
}

/// Recent verdicts that matter for paths (drops, and accepts, which end a
/// NAT rule), to name the rule behind a drop or a translation.
#[derive(Debug, Default)]
pub struct VerdictLog {
    recent: VecDeque<NftTrace>,
}

/// Verdicts kept: the matching happens within a poll or two of the drop.
const KEPT: usize = 4096;

impl VerdictLog {
    /// Keeps `t` if its verdict can end or translate a packet.
    pub fn push(&mut self, t: NftTrace) {
        if t.tuple.is_none()
            || t.rule_handle.is_none() && t.verdict != Verdict::Drop
            || !matches!(t.verdict, Verdict::Drop | Verdict::Accept)
        {
            return;
        }
        if self.recent.len() == KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(t);
    }

    /// The latest verdict `wanted` about a packet with this tuple.
    pub fn find(&self, tuple: (u8, SocketAddr, SocketAddr), wanted: &Verdict) -> Option<&NftTrace> {
        self.recent
            .iter()
            .rev()
            .find(|t| t.tuple == Some(tuple) && &t.verdict == wanted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nla(kind: u16, payload: &[u8]) -> Vec<u8> {
        let mut v = ((4 + payload.len()) as u16).to_ne_bytes().to_vec();
        v.extend(kind.to_ne_bytes());
        v.extend(payload);
        while v.len() % 4 != 0 {
            v.push(0);
        }
        v
    }

    /// A trace message as the kernel builds one (nf_tables_trace.c): a
    /// UDP packet 10.10.0.10:40000 → 10.20.0.2:9999 dropped by rule 4 of
    /// `inet kindling_test fw`.
    fn drop_message() -> Vec<u8> {
        let mut ip = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 17, 0, 0];
        ip.extend([10, 10, 0, 10, 10, 20, 0, 2]);
        let udp = [0x9c, 0x40, 0x27, 0x0f, 0, 8, 0, 0];
        let mut verdict = nla(attr::VERDICT_CODE, &0u32.to_be_bytes());
        verdict = nla(attr::VERDICT | 0x8000, &verdict);
        let mut attrs = Vec::new();
        attrs.extend(nla(attr::TABLE, b"kindling_test\0"));
        attrs.extend(nla(attr::CHAIN, b"fw\0"));
        attrs.extend(nla(attr::RULE_HANDLE, &4u64.to_be_bytes()));
        attrs.extend(nla(attr::TYPE, &3u32.to_be_bytes()));
        attrs.extend(verdict);
        attrs.extend(nla(attr::NETWORK_HEADER, &ip));
        attrs.extend(nla(attr::TRANSPORT_HEADER, &udp));
        attrs.extend(nla(attr::IIF, &5u32.to_be_bytes()));
        let mut msg = ((20 + attrs.len()) as u32).to_ne_bytes().to_vec();
        msg.extend(NFT_TRACE_MSG_TYPE.to_ne_bytes());
        msg.extend([0u8; 10]);
        msg.extend([1, 0, 0, 0]); // nfgenmsg: inet
        msg.extend(attrs);
        msg
    }

    #[test]
    fn a_drop_names_table_chain_rule_and_tuple() {
        let mut two = drop_message();
        two.extend(drop_message());
        let traces = parse_messages(&two);
        assert_eq!(traces.len(), 2);
        let t = &traces[0];
        assert_eq!(
            (t.family, t.table.as_str(), t.chain.as_str()),
            ("inet", "kindling_test", "fw")
        );
        assert_eq!(t.rule_handle, Some(4));
        assert_eq!(t.verdict, Verdict::Drop);
        assert_eq!(t.iif, Some(5));
        let tuple = (
            17,
            "10.10.0.10:40000".parse().unwrap(),
            "10.20.0.2:9999".parse().unwrap(),
        );
        assert_eq!(t.tuple, Some(tuple));
        let mut log = VerdictLog::default();
        log.push(t.clone());
        assert!(log.find(tuple, &Verdict::Drop).is_some());
        assert!(log.find(tuple, &Verdict::Accept).is_none());
    }

    #[test]
    fn damaged_messages_never_panic() {
        let msg = drop_message();
        for cut in 0..msg.len() {
            let _ = parse_messages(&msg[..cut]);
        }
        for i in 0..msg.len() {
            let mut m = msg.clone();
            m[i] ^= 0xff;
            let _ = parse_messages(&m);
        }
    }
}
