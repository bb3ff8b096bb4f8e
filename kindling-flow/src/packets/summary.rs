//! Packet paths added up per flow: packets, drops by place and reason,
//! latency percentiles of each hop transition.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use kindling_probe::abi::Point;
use serde::Serialize;

use super::{End, Hop, PacketPath};

/// Where packets were dropped: device, namespace and reason.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct DropPlace {
    /// Device (none when the kernel no longer named one).
    pub device: Option<String>,
    /// Its namespace inode (0: unknown).
    pub netns: u32,
    /// The kernel's reason.
    pub reason: String,
}

/// Drops at one place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DropCount {
    /// Where and why.
    #[serde(flatten)]
    pub place: DropPlace,
    /// How many.
    pub count: u64,
}

/// One end of a hop transition: what happened where.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct HopPlace {
    /// Where on its way.
    pub point: Point,
    /// The device, if the point has one.
    pub device: Option<String>,
    /// Namespace inode (0: unknown).
    pub netns: u32,
}

impl HopPlace {
    fn of(h: &Hop) -> Self {
        Self {
            point: h.point,
            device: h.device.clone(),
            netns: h.netns,
        }
    }
}

/// Latency percentiles of one hop transition, ns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HopLatency {
    /// Where the transition starts.
    pub from: HopPlace,
    /// Where it ends.
    pub to: HopPlace,
    /// Transitions measured.
    pub count: u64,
    /// Median, ns.
    pub p50_ns: u64,
    /// 99th percentile, ns.
    pub p99_ns: u64,
    /// Largest, ns.
    pub max_ns: u64,
}

/// A flow's packets added up.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FlowSummary {
    /// `tcp` or `udp`.
    pub protocol: &'static str,
    /// One end (the first packet's source).
    pub a: Option<SocketAddr>,
    /// The other.
    pub b: Option<SocketAddr>,
    /// Packets seen.
    pub packets: u64,
    /// Of which dropped as packet loss.
    pub dropped: u64,
    /// Of which freed by a drop that is not packet loss (a socket's queue
    /// purged at close, …).
    pub freed: u64,
    /// Of which NAT rewrote.
    pub translated: u64,
    /// Drops by place and reason, most first.
    pub drops: Vec<DropCount>,
    /// Per hop transition, most measured first.
    pub hops: Vec<HopLatency>,
}

/// Most latency samples kept per hop transition (the first ones; a
/// uniform sample of all would need a reservoir).
const MAX_SAMPLES: usize = 10_000;

/// Adds packet paths up per flow.
///
/// # Examples
///
/// ```
/// use kindling_flow::packets::PathSummary;
///
/// let summary = PathSummary::default();
/// // for each path: summary.add(&path);
/// assert!(summary.flows().is_empty());
/// ```
#[derive(Debug, Default)]
pub struct PathSummary {
    flows: BTreeMap<(SocketAddr, SocketAddr, &'static str), FlowAcc>,
}

#[derive(Debug, Default)]
struct FlowAcc {
    summary: FlowSummary,
    drops: BTreeMap<DropPlace, u64>,
    samples: BTreeMap<(HopPlace, HopPlace), Vec<u64>>,
}

fn percentile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl PathSummary {
    /// Adds one path.
    pub fn add(&mut self, p: &PacketPath) {
        // both directions of a flow are one flow
        let (a, b) = if p.src <= p.dst {
            (p.src, p.dst)
        } else {
            (p.dst, p.src)
        };
        let acc = self.flows.entry((a, b, p.protocol)).or_default();
        let s = &mut acc.summary;
        s.protocol = p.protocol;
        s.a.get_or_insert(p.src);
        s.b.get_or_insert(p.dst);
        s.packets += 1;
        if p.translation().is_some() {
            s.translated += 1;
        }
        if let End::Dropped {
            reason,
            device,
            netns,
            loss,
            ..
        } = &p.end
        {
            if *loss {
                s.dropped += 1;
            } else {
                s.freed += 1;
            }
            let place = DropPlace {
                device: device.clone(),
                netns: *netns,
                reason: reason.clone(),
            };
            *acc.drops.entry(place).or_insert(0) += 1;
        }
        for w in p.hops.windows(2) {
            let samples = acc
                .samples
                .entry((HopPlace::of(&w[0]), HopPlace::of(&w[1])))
                .or_default();
            if samples.len() < MAX_SAMPLES {
                samples.push(w[1].offset_ns.saturating_sub(w[0].offset_ns));
            }
        }
    }

    /// The flows so far, busiest first.
    pub fn flows(&self) -> Vec<FlowSummary> {
        let mut out: Vec<FlowSummary> = self.flows.values().map(FlowAcc::summary).collect();
        out.sort_by_key(|f| std::cmp::Reverse(f.packets));
        out
    }
}

impl FlowAcc {
    fn summary(&self) -> FlowSummary {
        let mut s = self.summary.clone();
        s.drops = self
            .drops
            .iter()
            .map(|(place, &count)| DropCount {
                place: place.clone(),
                count,
            })
            .collect();
        s.drops.sort_by_key(|d| std::cmp::Reverse(d.count));
        s.hops = self
            .samples
            .iter()
            .map(|((from, to), v)| {
                let mut v = v.clone();
                v.sort_unstable();
                HopLatency {
                    from: from.clone(),
                    to: to.clone(),
                    count: v.len() as u64,
                    p50_ns: percentile(&v, 0.5),
                    p99_ns: percentile(&v, 0.99),
                    max_ns: v.last().copied().unwrap_or(0),
                }
            })
            .collect();
        s.hops.sort_by_key(|h| std::cmp::Reverse(h.count));
        s
    }
}
