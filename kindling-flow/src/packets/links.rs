//! Retransmits and the drops that caused them.
//!
//! TCP retransmits a segment because it, or its acknowledgement, was lost.
//! When the packet tracer followed the connection and saw one of its
//! packets dropped, [`DropLinks`] names that drop on the retransmit
//! record and on the exchange that suffered the retransmits: reason,
//! device, namespace and, with nftables tracing, the rule.
//!
//! Drops are matched by the connection's endpoints in either direction (a
//! lost acknowledgement makes the other end retransmit) and under every
//! tuple the packet had on its way, so a connection to a ClusterIP is
//! matched on the client's side (the service address) and on the
//! backend's (the pod address). The match ignores namespaces: two
//! namespaces with the same connection (`127.0.0.1` to itself in two
//! pods) at the same moment could be confused.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rustc_hash::FxHashMap;
use serde::Serialize;

use super::{End, PacketPath};
use crate::record::{DropCause, Output, TcpEventKind};

/// How long before a retransmit a drop may have caused it: RTO back-off
/// doubles from 200 ms, so the fifth retransmit comes about 6 s after the
/// loss.
const WINDOW_NS: i64 = 10_000_000_000;
/// An exchange's drops may precede its first byte by this much (the two
/// times come from different programs' clocks reads).
const SLACK_NS: i64 = 1_000_000;
/// Most connections with recent drops remembered; beyond, the one with
/// the oldest drops are forgotten ([`LinkStats::forgotten`]).
const MAX_FLOWS: usize = 16_384;
/// Most drops remembered per connection (the newest are kept).
const PER_FLOW: usize = 16;

/// A connection's endpoints, ordered so both directions meet.
type FlowKey = (SocketAddr, SocketAddr);

fn key(a: SocketAddr, b: SocketAddr) -> FlowKey {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

/// What the links did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct LinkStats {
    /// Lost TCP packets remembered.
    pub drops: u64,
    /// Retransmit records given a cause.
    pub retransmits_linked: u64,
    /// Retransmit records for which no traced drop matched (the flow was
    /// not sampled, or the loss happened off this host).
    pub retransmits_unlinked: u64,
    /// Exchanges with retransmits given a cause.
    pub exchanges_linked: u64,
    /// Drops forgotten early because [`MAX_FLOWS`] connections had some.
    pub forgotten: u64,
}

/// Recent traced drops by connection; see the [module](self) docs.
///
/// # Examples
///
/// ```
/// use kindling_flow::packets::DropLinks;
/// use kindling_flow::{Output, TcpEventKind, TcpRecord};
///
/// let mut links = DropLinks::default();
/// // for each packet path the tracer completes: links.record(&path);
/// let mut retransmit = Output::Tcp(TcpRecord::new(
///     TcpEventKind::Retransmit,
///     "10.0.0.1:40000".parse()?,
///     "10.0.0.2:80".parse()?,
/// ));
/// assert!(links.link(&mut retransmit).is_none());
/// assert_eq!(links.stats().retransmits_unlinked, 1);
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Debug, Default)]
pub struct DropLinks {
    flows: FxHashMap<FlowKey, VecDeque<DropCause>>,
    stats: LinkStats,
}

impl DropLinks {
    /// What it did so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Connections with drops remembered.
    pub fn flows(&self) -> usize {
        self.flows.len()
    }

    /// Remembers `path` if it is a TCP packet lost on its way.
    pub fn record(&mut self, path: &PacketPath) {
        let End::Dropped {
            reason,
            loss: true,
            device,
            netns,
            ..
        } = &path.end
        else {
            return;
        };
        if path.protocol != "tcp" {
            return;
        }
        self.stats.drops += 1;
        let ts = i64::try_from(path.ts.saturating_add(path.duration_ns())).unwrap_or(i64::MAX);
        let cause = DropCause {
            reason: reason.clone(),
            device: device.clone(),
            netns: *netns,
            rule: path.drop_rule.clone(),
            ts,
            trace_id: path.trace_id,
            drops: 1,
        };
        let mut keys: Vec<FlowKey> = path.tuples().iter().map(|t| key(t.1, t.2)).collect();
        keys.dedup();
        for k in keys {
            if !self.flows.contains_key(&k) && self.flows.len() >= MAX_FLOWS {
                self.forget_oldest();
            }
            let drops = self.flows.entry(k).or_default();
            if drops.len() == PER_FLOW {
                drops.pop_front();
            }
            drops.push_back(cause.clone());
        }
    }

    /// Forgets the quarter of the connections whose newest drop is
    /// oldest: one pass for many inserts, so a flood of drops of new
    /// connections costs no scan per drop.
    fn forget_oldest(&mut self) {
        let mut newest: Vec<i64> = self
            .flows
            .values()
            .map(|d| d.back().map_or(i64::MIN, |c| c.ts))
            .collect();
        let cut = newest.len() / 4;
        let (_, &mut cutoff, _) = newest.select_nth_unstable(cut);
        let before = self.flows.len();
        self.flows
            .retain(|_, d| d.back().map_or(i64::MIN, |c| c.ts) > cutoff);
        self.stats.forgotten += (before - self.flows.len()) as u64;
    }

    /// Forgets drops older than the window before `now_unix_ns`.
    pub fn prune(&mut self, now_unix_ns: i64) {
        let horizon = now_unix_ns.saturating_sub(WINDOW_NS);
        self.flows.retain(|_, drops| {
            while drops.front().is_some_and(|c| c.ts < horizon) {
                drops.pop_front();
            }
            !drops.is_empty()
        });
    }

    /// Names the drop behind a retransmit record (the newest of its
    /// connection in the window before it) or behind an exchange with
    /// retransmits (the first while it ran); returns it.
    pub fn link<'a>(&mut self, output: &'a mut Output) -> Option<&'a DropCause> {
        match output {
            Output::Tcp(r) if r.event == TcpEventKind::Retransmit => {
                let found = self.find(r.src, r.dst, r.ts.saturating_sub(WINDOW_NS), r.ts, true);
                match found {
                    Some(_) => self.stats.retransmits_linked += 1,
                    None => self.stats.retransmits_unlinked += 1,
                }
                r.drop_cause = found.map(Box::new);
                r.drop_cause.as_deref()
            }
            Output::Exchange(x)
                if x.transport == "tcp" && x.network.is_some_and(|n| n.retransmits > 0) =>
            {
                let end =
                    x.ts.saturating_add(i64::try_from(x.duration_ns).unwrap_or(i64::MAX));
                let found = self.find(x.src, x.dst, x.ts.saturating_sub(SLACK_NS), end, false);
                if found.is_some() {
                    self.stats.exchanges_linked += 1;
                }
                x.drop_cause = found.map(Box::new);
                x.drop_cause.as_deref()
            }
            _ => None,
        }
    }

    /// The newest (or first) drop of the connection in `from..=to`, with
    /// the count of its drops there.
    fn find(
        &self,
        a: SocketAddr,
        b: SocketAddr,
        from: i64,
        to: i64,
        newest: bool,
    ) -> Option<DropCause> {
        let drops = self.flows.get(&key(a, b))?;
        let within: Vec<&DropCause> = drops
            .iter()
            .filter(|c| (from..=to).contains(&c.ts))
            .collect();
        let chosen = if newest {
            within.last()
        } else {
            within.first()
        }?;
        Some(DropCause {
            drops: u32::try_from(within.len()).unwrap_or(u32::MAX),
            ..(*chosen).clone()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::test_path;
    use crate::record::{Exchange, Network, TcpRecord};
    use crate::{ProtocolId, Role};

    const MS: i64 = 1_000_000;

    fn retransmit(src: &str, dst: &str, ts: i64) -> Output {
        Output::Tcp(TcpRecord {
            ts,
            ..TcpRecord::new(
                TcpEventKind::Retransmit,
                src.parse().unwrap(),
                dst.parse().unwrap(),
            )
        })
    }

    fn dropped_at(ts: i64, reason: &str) -> PacketPath {
        let mut p = test_path("br0", reason);
        p.ts = u64::try_from(ts).unwrap();
        p
    }

    #[test]
    fn a_retransmit_names_the_newest_drop_of_its_connection_either_way() {
        let mut links = DropLinks::default();
        links.record(&dropped_at(1_000 * MS, "NETFILTER_DROP"));
        let mut later = dropped_at(1_100 * MS, "TC_EGRESS");
        later.trace_id = 2;
        links.record(&later);
        // the server's retransmit: the tuple reversed
        let mut r = retransmit("10.0.0.2:80", "10.0.0.1:1000", 1_300 * MS);
        let cause = links.link(&mut r).expect("linked");
        assert_eq!(
            (cause.reason.as_str(), cause.trace_id, cause.drops),
            ("TC_EGRESS", 2, 2)
        );
        assert_eq!(cause.device.as_deref(), Some("br0"));
        // the drop happened 3 µs after the packet's first hop
        assert_eq!(cause.ts, 1_100 * MS + 3_000);
        // another connection, or a drop after the retransmit: nothing
        let mut other = retransmit("10.0.0.1:1001", "10.0.0.2:80", 1_300 * MS);
        assert!(links.link(&mut other).is_none());
        let mut before = retransmit("10.0.0.1:1000", "10.0.0.2:80", 900 * MS);
        assert!(links.link(&mut before).is_none());
        assert_eq!(links.stats().retransmits_linked, 1);
        assert_eq!(links.stats().retransmits_unlinked, 2);
    }

    #[test]
    fn an_exchange_with_retransmits_names_the_first_drop_while_it_ran() {
        let mut links = DropLinks::default();
        links.record(&dropped_at(1_000 * MS, "NETFILTER_DROP"));
        let mut second = dropped_at(1_200 * MS, "NO_SOCKET");
        second.trace_id = 9;
        links.record(&second);
        let exchange = |retransmits: u32| {
            Output::Exchange(Exchange {
                ts: 999 * MS,
                duration_ns: 500_000_000,
                network: Some(Network {
                    srtt_us: 50,
                    retransmits,
                }),
                ..Exchange::new(
                    ProtocolId::Http,
                    Role::Client,
                    "10.0.0.1:1000".parse().unwrap(),
                    "10.0.0.2:80".parse().unwrap(),
                )
            })
        };
        let mut x = exchange(1);
        let cause = links.link(&mut x).expect("linked");
        assert_eq!((cause.reason.as_str(), cause.drops), ("NETFILTER_DROP", 2));
        let Output::Exchange(x) = &x else {
            unreachable!()
        };
        let json = serde_json::to_value(x).unwrap();
        assert_eq!(json["drop_cause"]["reason"], "NETFILTER_DROP");
        assert_eq!(json["drop_cause"]["netns"], 7);
        // without retransmits an exchange claims no drop
        assert!(links.link(&mut exchange(0)).is_none());
    }

    #[test]
    fn only_lost_tcp_packets_are_kept_and_old_ones_are_pruned() {
        let mut links = DropLinks::default();
        let mut udp = dropped_at(1_000 * MS, "NETFILTER_DROP");
        udp.protocol = "udp";
        links.record(&udp);
        let mut purge = dropped_at(1_000 * MS, "QUEUE_PURGE");
        purge.end = End::Dropped {
            reason: "QUEUE_PURGE".into(),
            loss: false,
            device: None,
            netns: 0,
            location: 0,
            symbol: None,
        };
        links.record(&purge);
        assert_eq!(links.flows(), 0);
        links.record(&dropped_at(1_000 * MS, "NETFILTER_DROP"));
        assert_eq!(links.flows(), 1);
        links.prune(1_000 * MS + WINDOW_NS);
        assert_eq!(links.flows(), 1);
        links.prune(1_001 * MS + WINDOW_NS);
        assert_eq!(links.flows(), 0);
    }

    #[test]
    fn memory_stays_bounded() {
        let mut links = DropLinks::default();
        for i in 0..(MAX_FLOWS + 10) {
            let mut p = dropped_at(1_000 * MS + i as i64, "NETFILTER_DROP");
            let port = 1 + (i % 60_000) as u16;
            let host = (i / 60_000) as u8;
            let src: SocketAddr = format!("10.1.{host}.1:{port}").parse().unwrap();
            p.src = src;
            for h in &mut p.hops {
                h.src = src;
            }
            links.record(&p);
            links.record(&p);
        }
        assert!(links.flows() <= MAX_FLOWS);
        let forgotten = links.stats().forgotten as usize;
        assert!(forgotten >= MAX_FLOWS / 4, "{forgotten}");
        assert_eq!(links.flows() + forgotten, MAX_FLOWS + 10);
        let mut one = dropped_at(1_000 * MS, "NETFILTER_DROP");
        for i in 0..(PER_FLOW as i64 + 5) {
            one.ts = u64::try_from(2_000 * MS + i).unwrap();
            links.record(&one);
        }
        let mut r = retransmit("10.0.0.1:1000", "10.0.0.2:80", 2_100 * MS);
        assert_eq!(links.link(&mut r).unwrap().drops as usize, PER_FLOW);
    }
}
