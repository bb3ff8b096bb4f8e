//! The packet tracer's model: drops by device, namespace and reason, and
//! the latency of each hop, from [`PacketPath`]s.
//!
//! ```text
//! kindling_net_packets_traced_total                 packets followed to their end
//! kindling_net_packets_translated_total             of which NAT rewrote
//! kindling_net_drop_total{device,netns,reason}      where traced packets died
//! kindling_net_retransmits_caused_total{device,netns,reason}
//!                                                   TCP retransmits after a traced drop
//! kindling_net_hop_latency_seconds{from,to}         histogram per hop transition
//! kindling_net_trace_hops_lost_total{reason}        hops the tracer could not write
//! ```
//!
//! Devices and namespaces come from the node (a veth per pod), so both
//! label families pass a cap like every other family.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use super::cardinality::Cap;
use crate::packets::{End, Hop, PacketPath};
use crate::record::DropCause;

/// Labels of the drop counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NetDropLabels {
    /// Device the packet was last on (`?` when the kernel no longer named
    /// one).
    pub device: String,
    /// Its network namespace: `host`, or the inode number.
    pub netns: String,
    /// The kernel's drop reason.
    pub reason: String,
}

/// Labels of the hop latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HopLabels {
    /// Where the transition starts (`queue eth0`).
    pub from: String,
    /// Where it ends (`receive pa`).
    pub to: String,
}

/// Labels of the lost-hops counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LostLabels {
    reason: &'static str,
}

type HopFamily = Family<HopLabels, Histogram, fn() -> Histogram>;

fn hop_histogram() -> Histogram {
    // 1 µs to 0.26 s
    Histogram::new(exponential_buckets(1e-6, 4.0, 10))
}

/// The packet tracer's series; see the [module](self) docs.
///
/// # Examples
///
/// ```
/// use kindling_flow::metrics::NetMetrics;
///
/// let m = NetMetrics::new(100, None);
/// assert!(m.encode().contains("kindling_net_packets_traced_total 0"));
/// ```
pub struct NetMetrics {
    registry: Registry,
    host_netns: Option<u32>,
    traced: Counter,
    translated: Counter,
    drops: Family<NetDropLabels, Counter>,
    drop_cap: Cap<NetDropLabels, ()>,
    caused: Family<NetDropLabels, Counter>,
    hops: HopFamily,
    hop_cap: Cap<HopLabels, ()>,
    lost: Family<LostLabels, Counter>,
    overflow: Counter,
}

impl std::fmt::Debug for NetMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetMetrics")
            .field("drops", &self.drop_cap)
            .field("hops", &self.hop_cap)
            .finish_non_exhaustive()
    }
}

const OVERFLOW: &str = "__overflow__";

impl NetMetrics {
    /// At most `max_series` label sets per family; `host_netns` is named
    /// `host` in the `netns` label.
    pub fn new(max_series: usize, host_netns: Option<u32>) -> Self {
        let mut m = Self {
            registry: Registry::default(),
            host_netns,
            traced: Counter::default(),
            translated: Counter::default(),
            drops: Family::default(),
            drop_cap: Cap::new(max_series),
            caused: Family::default(),
            hops: Family::new_with_constructor(hop_histogram as fn() -> Histogram),
            hop_cap: Cap::new(max_series),
            lost: Family::default(),
            overflow: Counter::default(),
        };
        let r = &mut m.registry;
        r.register(
            "kindling_net_packets_traced",
            "Packets the packet tracer followed to their end",
            m.traced.clone(),
        );
        r.register(
            "kindling_net_packets_translated",
            "Traced packets whose addresses or ports NAT rewrote",
            m.translated.clone(),
        );
        r.register(
            "kindling_net_drop",
            "Traced packets dropped, by the device and network namespace they were last on and the kernel's reason",
            m.drops.clone(),
        );
        r.register(
            "kindling_net_retransmits_caused",
            "TCP retransmits linked to a traced drop of their connection, by the drop's device, network namespace and reason",
            m.caused.clone(),
        );
        r.register(
            "kindling_net_hop_latency_seconds",
            "Time between two successive hops of a traced packet",
            m.hops.clone(),
        );
        r.register(
            "kindling_net_trace_hops_lost",
            "Hops the packet tracer could not write, by reason",
            m.lost.clone(),
        );
        r.register(
            "kindling_net_series_overflow",
            "Observations folded into an overflow label set by the series cap",
            m.overflow.clone(),
        );
        m
    }

    fn netns_label(&self, inode: u32) -> String {
        match inode {
            0 => "?".to_owned(),
            n if Some(n) == self.host_netns => "host".to_owned(),
            n => n.to_string(),
        }
    }

    /// Counts one packet's path.
    pub fn observe(&mut self, p: &PacketPath) {
        self.traced.inc();
        if p.translation().is_some() {
            self.translated.inc();
        }
        if let End::Dropped {
            reason,
            device,
            netns,
            ..
        } = &p.end
        {
            let labels = self.drop_labels(device.as_deref(), *netns, reason);
            self.drops.get_or_create(&labels).inc();
        }
        for w in p.hops.windows(2) {
            let labels = HopLabels {
                from: hop_label(&w[0]),
                to: hop_label(&w[1]),
            };
            let labels = self.capped_hop(labels);
            let seconds = w[1].offset_ns.saturating_sub(w[0].offset_ns) as f64 / 1e9;
            self.hops.get_or_create(&labels).observe(seconds);
        }
    }

    /// Counts one retransmit whose connection's packet was seen dropped
    /// ([`crate::packets::DropLinks`]).
    pub fn observe_retransmit_cause(&mut self, cause: &DropCause) {
        let labels = self.drop_labels(cause.device.as_deref(), cause.netns, &cause.reason);
        self.caused.get_or_create(&labels).inc();
    }

    /// The drop's labels, through the cap.
    fn drop_labels(&mut self, device: Option<&str>, netns: u32, reason: &str) -> NetDropLabels {
        let labels = NetDropLabels {
            device: device.unwrap_or("?").to_owned(),
            netns: self.netns_label(netns),
            reason: reason.to_owned(),
        };
        self.capped_drop(labels)
    }

    fn capped_drop(&mut self, labels: NetDropLabels) -> NetDropLabels {
        let own = matches!(
            self.drop_cap.admit(labels.clone(), |_| ()),
            super::cardinality::Admit::Own(_)
        );
        if own {
            return labels;
        }
        self.overflow.inc();
        NetDropLabels {
            device: OVERFLOW.to_owned(),
            netns: OVERFLOW.to_owned(),
            reason: labels.reason,
        }
    }

    fn capped_hop(&mut self, labels: HopLabels) -> HopLabels {
        let own = matches!(
            self.hop_cap.admit(labels.clone(), |_| ()),
            super::cardinality::Admit::Own(_)
        );
        if own {
            return labels;
        }
        self.overflow.inc();
        HopLabels {
            from: OVERFLOW.to_owned(),
            to: OVERFLOW.to_owned(),
        }
    }

    /// Sets the tracer's lost-hop totals (ring full, over budget,
    /// undecodable).
    pub fn set_lost(&self, ring_full: u64, over_budget: u64, undecodable: u64) {
        for (reason, total) in [
            ("ring_full", ring_full),
            ("over_budget", over_budget),
            ("undecodable", undecodable),
        ] {
            let c = self.lost.get_or_create(&LostLabels { reason });
            let now = c.get();
            if total > now {
                c.inc_by(total - now);
            }
        }
    }

    /// The text exposition (without `# EOF`: it is a part of `/metrics`).
    pub fn encode(&self) -> String {
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        if let Some(cut) = s.rfind("# EOF") {
            s.truncate(cut);
        }
        s
    }
}

fn hop_label(h: &Hop) -> String {
    match &h.device {
        Some(d) => format!("{} {d}", h.point.name()),
        None => h.point.name().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packets::test_path;

    #[test]
    fn drops_and_hops_are_series_and_the_cap_holds() {
        let mut m = NetMetrics::new(2, Some(1));
        m.observe(&test_path("br0", "NETFILTER_DROP"));
        m.observe(&test_path("br0", "NETFILTER_DROP"));
        m.set_lost(0, 5, 0);
        let text = m.encode();
        assert!(
            text.contains(
                "kindling_net_drop_total{device=\"br0\",netns=\"7\",reason=\"NETFILTER_DROP\"} 2"
            ),
            "{text}"
        );
        assert!(text.contains(
            "kindling_net_hop_latency_seconds_count{from=\"queue eth0\",to=\"receive br0\"} 2"
        ));
        assert!(text.contains("kindling_net_trace_hops_lost_total{reason=\"over_budget\"} 5"));
        assert!(!text.contains("# EOF"));
        // more devices than the cap: folded, counted
        for d in ["a", "b", "c"] {
            m.observe(&test_path(d, "NO_SOCKET"));
        }
        let text = m.encode();
        assert!(text.contains("device=\"__overflow__\""), "{text}");
        assert!(
            text.contains("kindling_net_series_overflow_total 4"),
            "{text}"
        );
    }

    #[test]
    fn a_linked_retransmit_counts_under_its_drop() {
        let mut m = NetMetrics::new(10, Some(7));
        let cause = DropCause {
            reason: "NETFILTER_DROP".into(),
            device: Some("br0".into()),
            netns: 7,
            rule: None,
            ts: 0,
            trace_id: 1,
            drops: 1,
        };
        m.observe_retransmit_cause(&cause);
        m.observe_retransmit_cause(&cause);
        let text = m.encode();
        assert!(
            text.contains("kindling_net_retransmits_caused_total{device=\"br0\",netns=\"host\",reason=\"NETFILTER_DROP\"} 2"),
            "{text}"
        );
    }
}
