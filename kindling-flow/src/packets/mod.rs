//! Packet paths from the packet tracer's hops: where each packet went, how
//! long each hop took, and where and why it ended.
//!
//! [`PathAssembler`] groups [`RawPacket`] hops by their trace id into a
//! [`PacketPath`]: the hops in time order (device, namespace, the tuple as
//! seen there, NAT marked) and its [`End`] — delivered to a process, freed
//! after use, dropped (reason, device, namespace), or last seen when the
//! kernel gave no end. [`PathSummary`] adds paths up per flow: packets,
//! drops by (device, reason), latency percentiles of each hop transition.
//! Sans-IO like the rest of the crate: times come from the hops and from
//! [`PathAssembler::tick`]'s argument.
//!
//! # Examples
//!
//! ```
//! use kindling_flow::packets::PathAssembler;
//!
//! let mut paths = PathAssembler::new(Default::default());
//! let mut done = Vec::new();
//! // for each hop the tracer reports: paths.push(&hop, &mut done);
//! paths.finish(&mut done);
//! assert!(done.is_empty());
//! assert_eq!(paths.stats().paths, 0);
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use kindling_probe::abi::{Point, RawPacket};
use rustc_hash::FxHashMap;
use serde::Serialize;

mod links;
pub mod nftrace;
mod summary;

pub use links::{DropLinks, LinkStats};
pub use summary::{DropCount, DropPlace, FlowSummary, HopLatency, HopPlace, PathSummary};

/// Most hops kept per packet; more are counted in
/// [`PathStats::hops_truncated`].
pub const MAX_HOPS: usize = 64;
/// Most packets followed at once; beyond, the oldest is closed early
/// ([`PathStats::evicted`]).
pub const MAX_OPEN: usize = 65_536;
/// A delivered packet is closed this long after its delivery if no free
/// follows (TCP frees read segments without a tracepoint).
const DELIVER_GRACE_NS: u64 = 100_000_000;
/// A packet with no hop for this long ends as last seen.
const IDLE_NS: u64 = 2_000_000_000;

/// One place a packet was seen.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Hop {
    /// `CLOCK_BOOTTIME` ns.
    #[serde(skip)]
    pub boot_ns: u64,
    /// Since the packet's first hop, ns.
    pub offset_ns: u64,
    /// Where.
    pub point: Point,
    /// Device name (none for frees and deliveries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Device index in its namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ifindex: Option<u32>,
    /// Network namespace inode (0: unknown).
    pub netns: u32,
    /// The namespace's name, when the caller named it (`kindling
    /// trace-packets`: `host` and the names of `ip netns`); shared, as
    /// every hop in a namespace has the same.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub netns_name: Option<Arc<str>>,
    /// Source as seen here.
    pub src: SocketAddr,
    /// Destination as seen here.
    pub dst: SocketAddr,
    /// NAT rewrote the tuple since the previous hop.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub translated: bool,
    /// Bytes of the packet at this point (`skb->len`).
    pub len: u32,
}

/// How a packet's way ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum End {
    /// Its bytes were copied to a process.
    Delivered {
        /// The reading process.
        pid: u32,
        /// Its name.
        comm: String,
    },
    /// Freed after use (a control segment, a datagram consumed).
    Consumed,
    /// Dropped.
    Dropped {
        /// The kernel's reason (`NETFILTER_DROP`, `NO_SOCKET`, …), or
        /// `UNKNOWN` before 5.17.
        reason: String,
        /// Whether the reason is packet loss; false for a socket's queue
        /// freed at close and the like ([`is_path_loss`]).
        loss: bool,
        /// Device it was last on, if the kernel still named one.
        #[serde(skip_serializing_if = "Option::is_none")]
        device: Option<String>,
        /// Namespace of that device (0: unknown).
        netns: u32,
        /// Kernel text address that dropped it.
        location: u64,
        /// Its symbol (`nft_do_chain+0x46f`), when the caller resolved it.
        #[serde(skip_serializing_if = "Option::is_none")]
        symbol: Option<String>,
    },
    /// No end was reported (the kernel freed it without a tracepoint, or
    /// the trace stopped first).
    LastSeen,
}

/// One packet's way through the host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PacketPath {
    /// Always `"packet"` (as exchanges say `"exchange"`).
    pub kind: &'static str,
    /// The tracer's id for it.
    pub trace_id: u64,
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// First hop, `CLOCK_BOOTTIME` ns.
    #[serde(skip)]
    pub start_boot_ns: u64,
    /// First hop, Unix ns.
    pub ts: u64,
    /// The tuple at its first hop.
    pub src: SocketAddr,
    /// The destination at its first hop.
    pub dst: SocketAddr,
    /// TCP flags of the segment (`SYN`, `ACK`, …), empty for UDP.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tcp_flags: String,
    /// Hops in time order.
    pub hops: Vec<Hop>,
    /// How it ended.
    pub end: End,
    /// Hops past [`MAX_HOPS`] that were not kept.
    #[serde(skip_serializing_if = "is_zero")]
    pub hops_dropped: u32,
    /// The nftables rule that dropped it, when nftables tracing named one
    /// (`inet filter forward handle 4: udp dport 9999 drop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_rule: Option<String>,
    /// The nftables rule that translated it (first packets of a
    /// connection only: conntrack translates the rest without rules).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nat_rule: Option<String>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl PacketPath {
    /// Time from the first hop to the last, ns.
    pub fn duration_ns(&self) -> u64 {
        self.hops.last().map_or(0, |h| h.offset_ns)
    }

    /// Whether it was lost: dropped for a reason that is packet loss.
    pub fn lost(&self) -> bool {
        matches!(self.end, End::Dropped { loss: true, .. })
    }

    /// Every tuple it had on its way, as (protocol, source, destination).
    pub fn tuples(&self) -> Vec<(u8, SocketAddr, SocketAddr)> {
        let proto = if self.protocol == "tcp" { 6 } else { 17 };
        let mut out: Vec<(u8, SocketAddr, SocketAddr)> = Vec::new();
        for h in &self.hops {
            if !out.contains(&(proto, h.src, h.dst)) {
                out.push((proto, h.src, h.dst));
            }
        }
        out
    }

    /// The hop where NAT rewrote its tuple, if any.
    pub fn translation(&self) -> Option<(&Hop, &Hop)> {
        self.hops
            .windows(2)
            .find(|w| w[1].translated)
            .map(|w| (&w[0], &w[1]))
    }
}

/// What the assembler did (every hop is accounted for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PathStats {
    /// Hops pushed.
    pub hops: u64,
    /// Paths completed.
    pub paths: u64,
    /// Hops past [`MAX_HOPS`] of one packet, not kept.
    pub hops_truncated: u64,
    /// Packets closed early because [`MAX_OPEN`] were open.
    pub evicted: u64,
    /// Ends (free, delivery) of packets already closed: nothing to add.
    pub late_ends: u64,
}

/// Settings of a [`PathAssembler`].
#[derive(Clone, Debug, Default)]
pub struct PathConfig {
    /// Add to a hop's boot time for Unix time.
    pub boottime_to_unix_ns: i64,
    /// Names of the running kernel's drop reasons
    /// ([`kindling_probe::drop_reason_names`]).
    pub drop_reasons: BTreeMap<u32, String>,
}

#[derive(Debug)]
struct Open {
    path: PacketPath,
    last_boot_ns: u64,
    delivered_at: Option<u64>,
}

/// Groups hops into packet paths; see the [module](self) docs.
#[derive(Debug)]
pub struct PathAssembler {
    config: PathConfig,
    open: FxHashMap<u64, Open>,
    /// Recently closed ids, so a trailing free is not taken for a packet.
    closed: FxHashMap<u64, u64>,
    /// When `closed` was last pruned.
    pruned_ns: u64,
    /// When open packets were last looked at.
    ticked_ns: u64,
    stats: PathStats,
}

fn flags_text(flags: u8) -> String {
    const NAMES: [(u8, &str); 5] = [
        (0x02, "SYN"),
        (0x10, "ACK"),
        (0x08, "PSH"),
        (0x01, "FIN"),
        (0x04, "RST"),
    ];
    let names: Vec<&str> = NAMES
        .iter()
        .filter(|(bit, _)| flags & bit != 0)
        .map(|(_, n)| *n)
        .collect();
    names.join(",")
}

fn comm_of(raw: &RawPacket) -> String {
    String::from_utf8_lossy(raw.hdr.comm()).into_owned()
}

impl PathAssembler {
    /// An assembler with `config`.
    pub fn new(config: PathConfig) -> Self {
        Self {
            config,
            open: FxHashMap::default(),
            closed: FxHashMap::default(),
            pruned_ns: 0,
            ticked_ns: 0,
            stats: PathStats::default(),
        }
    }

    /// What it did so far.
    pub fn stats(&self) -> PathStats {
        self.stats
    }

    /// Packets being followed.
    pub fn open_paths(&self) -> usize {
        self.open.len()
    }

    /// The name of a drop reason number of the running kernel.
    pub fn reason_name(&self, reason: u32) -> String {
        match self.config.drop_reasons.get(&reason) {
            Some(name) => name.clone(),
            None if self.config.drop_reasons.is_empty() => "UNKNOWN".to_owned(),
            None => format!("REASON_{reason}"),
        }
    }

    /// Adds one hop; completed paths go to `out`.
    pub fn push(&mut self, raw: &RawPacket, out: &mut Vec<PacketPath>) {
        self.stats.hops += 1;
        let id = raw.trace_id.get();
        let now = raw.hdr.ts_ns.get();
        let point = raw.point();
        if !self.open.contains_key(&id) {
            if matches!(point, Point::Consume | Point::Deliver) && self.closed.contains_key(&id) {
                self.stats.late_ends += 1;
                return;
            }
            if self.open.len() >= MAX_OPEN {
                self.evict_oldest(out);
            }
            let protocol = match raw.sk.protocol {
                6 => "tcp",
                _ => "udp",
            };
            let start = Open {
                path: PacketPath {
                    kind: "packet",
                    trace_id: id,
                    protocol,
                    start_boot_ns: now,
                    ts: now.saturating_add_signed(self.config.boottime_to_unix_ns),
                    src: raw.sk.local(),
                    dst: raw.sk.peer(),
                    tcp_flags: if raw.sk.protocol == 6 {
                        flags_text(raw.tcp_flags)
                    } else {
                        String::new()
                    },
                    hops: Vec::new(),
                    end: End::LastSeen,
                    hops_dropped: 0,
                    drop_rule: None,
                    nat_rule: None,
                },
                last_boot_ns: now,
                delivered_at: None,
            };
            self.open.insert(id, start);
        }
        let reason = (point == Point::Drop).then(|| self.reason_name(raw.reason.get()));
        let Some(entry) = self.open.get_mut(&id) else {
            return;
        };
        entry.last_boot_ns = entry.last_boot_ns.max(now);
        let path = &mut entry.path;
        if path.hops.len() < MAX_HOPS {
            path.hops.push(Hop {
                boot_ns: now,
                offset_ns: now.saturating_sub(path.start_boot_ns),
                point,
                device: raw.device().map(str::to_owned),
                ifindex: raw.device().map(|_| raw.ifindex.get()),
                netns: raw.sk.netns.get(),
                netns_name: None,
                src: raw.sk.local(),
                dst: raw.sk.peer(),
                translated: raw.translated(),
                len: raw.len.get(),
            });
        } else {
            path.hops_dropped += 1;
            self.stats.hops_truncated += 1;
        }
        match point {
            Point::Drop => {
                let reason = reason.unwrap_or_default();
                path.end = End::Dropped {
                    loss: is_path_loss(&reason),
                    reason,
                    device: raw.device().map(str::to_owned),
                    netns: raw.sk.netns.get(),
                    location: raw.location.get(),
                    symbol: None,
                };
                self.close(id, out);
            }
            Point::Consume => {
                // a delivered packet keeps its delivery as its end
                if !matches!(path.end, End::Delivered { .. }) {
                    path.end = End::Consumed;
                }
                self.close(id, out);
            }
            Point::Deliver => {
                if !matches!(path.end, End::Delivered { .. }) {
                    path.end = End::Delivered {
                        pid: raw.hdr.pid.get(),
                        comm: comm_of(raw),
                    };
                }
                entry.delivered_at.get_or_insert(now);
            }
            _ => {}
        }
    }

    fn close(&mut self, id: u64, out: &mut Vec<PacketPath>) {
        if let Some(done) = self.open.remove(&id) {
            self.stats.paths += 1;
            if self.closed.len() >= MAX_OPEN {
                self.closed.clear();
            }
            self.closed.insert(id, done.last_boot_ns);
            let mut path = done.path;
            // hops of one packet from several CPUs may arrive out of order
            path.hops.sort_by_key(|h| h.boot_ns);
            let start = path.hops.first().map_or(path.start_boot_ns, |h| h.boot_ns);
            for h in &mut path.hops {
                h.offset_ns = h.boot_ns.saturating_sub(start);
            }
            out.push(path);
        }
    }

    fn evict_oldest(&mut self, out: &mut Vec<PacketPath>) {
        if let Some(id) = self
            .open
            .iter()
            .min_by_key(|(_, o)| o.last_boot_ns)
            .map(|(id, _)| *id)
        {
            self.stats.evicted += 1;
            self.close(id, out);
        }
    }

    /// Closes packets delivered a while ago, or idle, as of boot time
    /// `now_ns` (looking at them a quarter of the delivery grace after the
    /// last look at the earliest: call it as often as convenient).
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<PacketPath>) {
        // Every open packet is looked at: not more often than a fraction
        // of the shortest wait (a busy ring wakes its reader thousands of
        // times a second, and the scan was then most of its time).
        if now_ns.saturating_sub(self.ticked_ns) < DELIVER_GRACE_NS / 4 {
            return;
        }
        self.ticked_ns = now_ns;
        let due: Vec<u64> = self
            .open
            .iter()
            .filter(|(_, o)| {
                o.delivered_at
                    .is_some_and(|d| now_ns.saturating_sub(d) >= DELIVER_GRACE_NS)
                    || now_ns.saturating_sub(o.last_boot_ns) >= IDLE_NS
            })
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            self.close(id, out);
        }
        // (a scan of every recently closed id: once per idle period is
        // enough to keep it bounded, and cheap under load)
        if now_ns.saturating_sub(self.pruned_ns) >= IDLE_NS {
            self.pruned_ns = now_ns;
            self.closed
                .retain(|_, last| now_ns.saturating_sub(*last) < IDLE_NS);
        }
    }

    /// Closes every open packet (the trace ends).
    pub fn finish(&mut self, out: &mut Vec<PacketPath>) {
        let mut ids: Vec<u64> = self.open.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.close(id, out);
        }
    }
}

/// Whether a drop ends a packet's way as a loss. A socket's own
/// housekeeping (its queue purged at close, old or duplicate TCP data) is
/// not; unlike the socket view ([`crate::is_packet_loss`]), a packet to a
/// port nobody listens on (`NO_SOCKET`) and the kernel's unnamed drops
/// (`NOT_SPECIFIED`: a blackhole route, an MTU mismatch on a veth pair) are
/// where a traced packet died, so they are.
///
/// ```
/// use kindling_flow::packets::is_path_loss;
///
/// assert!(is_path_loss("NETFILTER_DROP") && is_path_loss("NOT_SPECIFIED"));
/// assert!(!is_path_loss("QUEUE_PURGE"));
/// ```
pub fn is_path_loss(reason: &str) -> bool {
    !matches!(
        reason,
        "SOCKET_CLOSE"
            | "QUEUE_PURGE"
            | "TCP_CLOSE"
            | "TCP_RESET"
            | "TCP_OLD_DATA"
            | "TCP_OLD_ACK"
            | "TCP_TOO_OLD_ACK"
            | "TCP_OLD_SEQUENCE"
    )
}

/// A TCP packet of 10.0.0.1:1000 → 10.0.0.2:80 queued on `eth0` and
/// dropped 3 µs later on `device` (namespace 7) for `reason`.
#[cfg(test)]
pub(crate) fn test_path(device: &str, reason: &str) -> PacketPath {
    let hop = |offset_ns, point, device: &str| Hop {
        boot_ns: offset_ns,
        offset_ns,
        point,
        device: Some(device.to_owned()),
        ifindex: Some(2),
        netns: 7,
        netns_name: None,
        src: "10.0.0.1:1000".parse().unwrap(),
        dst: "10.0.0.2:80".parse().unwrap(),
        translated: false,
        len: 60,
    };
    PacketPath {
        kind: "packet",
        trace_id: 1,
        protocol: "tcp",
        start_boot_ns: 0,
        ts: 0,
        src: "10.0.0.1:1000".parse().unwrap(),
        dst: "10.0.0.2:80".parse().unwrap(),
        tcp_flags: String::new(),
        hops: vec![
            hop(0, Point::Queue, "eth0"),
            hop(3_000, Point::Receive, device),
        ],
        end: End::Dropped {
            reason: reason.to_owned(),
            loss: true,
            device: Some(device.to_owned()),
            netns: 7,
            location: 0,
            symbol: None,
        },
        hops_dropped: 0,
        drop_rule: None,
        nat_rule: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kindling_probe::abi::packet_flags;
    use zerocopy::byteorder::native_endian::{U16, U32, U64};
    use zerocopy::FromZeros;

    fn hop(id: u64, ts: u64, point: u8, dev: &str, dport: u16) -> RawPacket {
        let mut r = RawPacket::new_zeroed();
        r.hdr.kind = U16::new(kindling_probe::abi::kind::PACKET);
        r.hdr.ts_ns = U64::new(ts);
        r.sk.family = U16::new(2);
        r.sk.protocol = 17;
        r.sk.saddr[..4].copy_from_slice(&[10, 0, 0, 1]);
        r.sk.daddr[..4].copy_from_slice(&[10, 0, 0, 2]);
        r.sk.sport = U16::new(40000);
        r.sk.dport = U16::new(dport);
        r.trace_id = U64::new(id);
        r.point = point;
        if dev.is_empty() {
            r.pflags = U16::new(packet_flags::NO_DEVICE);
        } else {
            r.ifname[..dev.len()].copy_from_slice(dev.as_bytes());
        }
        r.reason = U32::new(7);
        r
    }

    #[test]
    fn hops_become_a_path_ending_in_a_named_drop() {
        let mut a = PathAssembler::new(PathConfig {
            drop_reasons: [(7, "NETFILTER_DROP".to_owned())].into(),
            ..PathConfig::default()
        });
        let mut out = Vec::new();
        // out of order across CPUs: sorted when closed
        a.push(&hop(1, 1_000, 2, "pa", 53), &mut out);
        a.push(&hop(1, 500, 1, "eth0", 53), &mut out);
        let mut translated = hop(1, 1_700, 1, "pc", 5353);
        translated.pflags = U16::new(packet_flags::TRANSLATED);
        a.push(&translated, &mut out);
        assert!(out.is_empty());
        a.push(&hop(1, 2_000, 3, "pc", 5353), &mut out);
        assert_eq!(out.len(), 1);
        let p = &out[0];
        let devices: Vec<_> = p.hops.iter().map(|h| h.device.clone().unwrap()).collect();
        assert_eq!(devices, ["eth0", "pa", "pc", "pc"]);
        assert_eq!(p.hops[0].offset_ns, 0);
        assert_eq!(p.duration_ns(), 1_500);
        assert!(matches!(&p.end, End::Dropped { reason, .. } if reason == "NETFILTER_DROP"));
        let (before, after) = p.translation().unwrap();
        assert_eq!((before.dst.port(), after.dst.port()), (53, 5353));
        let mut sum = PathSummary::default();
        sum.add(p);
        let flows = sum.flows();
        assert_eq!(
            (flows[0].packets, flows[0].dropped, flows[0].translated),
            (1, 1, 1)
        );
        assert_eq!(flows[0].drops.iter().map(|d| d.count).sum::<u64>(), 1);
        assert_eq!(flows[0].drops[0].place.reason, "NETFILTER_DROP");
        assert_eq!(flows[0].hops.len(), 3);
    }

    #[test]
    fn deliveries_close_after_a_grace_and_late_frees_are_absorbed() {
        let mut a = PathAssembler::new(PathConfig::default());
        let mut out = Vec::new();
        a.push(&hop(9, 100, 2, "lo", 80), &mut out);
        a.push(&hop(9, 200, 5, "", 80), &mut out);
        a.tick(200 + DELIVER_GRACE_NS - 1, &mut out);
        assert!(out.is_empty());
        // (open packets are looked at every quarter grace at most)
        a.tick(200 + DELIVER_GRACE_NS, &mut out);
        assert!(out.is_empty(), "looked at 1 ns ago");
        a.tick(200 + DELIVER_GRACE_NS + DELIVER_GRACE_NS / 4, &mut out);
        assert_eq!(out.len(), 1);
        assert!(matches!(out[0].end, End::Delivered { .. }));
        a.push(&hop(9, 300, 4, "", 80), &mut out);
        assert_eq!(out.len(), 1, "a free after the delivery starts nothing");
        assert_eq!(a.stats().late_ends, 1);
        // a packet that just stops is last seen
        a.push(&hop(10, 400, 1, "eth0", 80), &mut out);
        a.finish(&mut out);
        assert!(matches!(out[1].end, End::LastSeen));
        assert_eq!(a.stats().paths, 2);
    }
}
