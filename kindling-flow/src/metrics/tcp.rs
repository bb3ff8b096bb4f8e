//! TCP series: the network under an edge (round-trip time, retransmits,
//! loss, resets, connects), by the connection's two ends; drops by the
//! kernel's reason; state changes by the state entered.

use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::cardinality::Cap;
use super::schema::{register, DropLabels, Name, ResetLabels, StateLabels, TcpLabels};
use super::OVERFLOW;
use crate::record::{TcpEventKind, TcpRecord};
use crate::stats::Stats;

/// Name and help of each family, in the order registered.
const FAMILIES: [Name; 9] = [
    (
        "kindling_tcp_srtt_microseconds",
        "Latest smoothed round-trip time, microseconds",
    ),
    ("kindling_tcp_retransmit", "Retransmitted segments"),
    (
        "kindling_tcp_packet_loss",
        "Packets the kernel dropped for a reason that means loss",
    ),
    ("kindling_tcp_reset", "TCP resets sent or received"),
    (
        "kindling_tcp_state_change",
        "TCP state changes, by the state entered",
    ),
    (
        "kindling_tcp_drop",
        "Packets the kernel freed as dropped, by reason",
    ),
    ("kindling_tcp_connect", "Completed TCP connects"),
    (
        "kindling_tcp_connect_duration_nanoseconds",
        "Total TCP handshake time, nanoseconds",
    ),
    ("kindling_tcp_connect_failure", "Failed TCP connects"),
];

/// Every TCP series, edges under the series cap.
#[derive(Debug)]
pub(super) struct Tcp {
    families: TcpFamilies,
    edges: Cap<TcpKey, TcpSeries>,
}

/// The families of the TCP series (one handle each is kept per edge).
#[derive(Debug, Default)]
struct TcpFamilies {
    srtt: Family<TcpLabels, Gauge>,
    retransmits: Family<TcpLabels, Counter>,
    packet_loss: Family<TcpLabels, Counter>,
    drops: Family<DropLabels, Counter>,
    states: Family<StateLabels, Counter>,
    resets: Family<ResetLabels, Counter>,
    connects: Family<TcpLabels, Counter>,
    connect_duration: Family<TcpLabels, Counter>,
    connect_failures: Family<TcpLabels, Counter>,
}

/// What tells one TCP edge from another, without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TcpKey {
    src: IpAddr,
    dst: IpAddr,
    port: u16,
}

/// One TCP edge's labels and its handles, each made on first use: a record
/// then costs one lookup, not label strings and a family lookup.
#[derive(Debug)]
struct TcpSeries {
    labels: TcpLabels,
    connects: Option<(Counter, Counter)>,
    failures: Option<Counter>,
    retransmits: Option<Counter>,
    packet_loss: Option<Counter>,
    srtt: Option<Gauge>,
    /// Sent, received.
    resets: [Option<Counter>; 2],
}

impl TcpSeries {
    fn new(labels: TcpLabels) -> Self {
        Self {
            labels,
            connects: None,
            failures: None,
            retransmits: None,
            packet_loss: None,
            srtt: None,
            resets: [None, None],
        }
    }
}

impl Tcp {
    /// No series yet; at most `max_series` edges.
    pub(super) fn new(max_series: usize) -> Self {
        Self {
            families: TcpFamilies::default(),
            edges: Cap::new(max_series),
        }
    }

    /// Registers its families.
    pub(super) fn register(&self, r: &mut Registry) {
        let f = &self.families;
        let [srtt, retransmits, loss, resets, states, drops, connects, duration, failures] =
            FAMILIES;
        register(r, srtt, f.srtt.clone());
        register(r, retransmits, f.retransmits.clone());
        register(r, loss, f.packet_loss.clone());
        register(r, resets, f.resets.clone());
        register(r, states, f.states.clone());
        register(r, drops, f.drops.clone());
        register(r, connects, f.connects.clone());
        register(r, duration, f.connect_duration.clone());
        register(r, failures, f.connect_failures.clone());
    }

    /// Counts one TCP record in its edge's series.
    pub(super) fn observe(&mut self, t: &TcpRecord) {
        let key = TcpKey {
            src: t.src.ip(),
            dst: t.dst.ip(),
            port: t.dst.port(),
        };
        let f = &self.families;
        let series = self
            .edges
            .admit(key, |admitted| {
                TcpSeries::new(match admitted {
                    Some(_) => tcp_labels(t.src, t.dst),
                    None => TcpLabels {
                        src_ip: OVERFLOW.into(),
                        dst_ip: OVERFLOW.into(),
                        dst_port: 0,
                    },
                })
            })
            .value();
        let labels = &series.labels;
        match t.event {
            TcpEventKind::Connect => {
                let (count, duration) = series.connects.get_or_insert_with(|| {
                    (
                        f.connects.get_or_create(labels).clone(),
                        f.connect_duration.get_or_create(labels).clone(),
                    )
                });
                count.inc();
                duration.inc_by(t.duration_ns.unwrap_or(0));
            }
            TcpEventKind::ConnectFailed => {
                handle(&mut series.failures, &f.connect_failures, labels).inc();
            }
            TcpEventKind::Retransmit => {
                handle(&mut series.retransmits, &f.retransmits, labels).inc();
            }
            TcpEventKind::Drop => {
                let reason = t
                    .reason_name
                    .clone()
                    .or_else(|| t.reason.map(|r| r.to_string()))
                    .unwrap_or_default();
                if crate::is_packet_loss(&reason) {
                    handle(&mut series.packet_loss, &f.packet_loss, labels).inc();
                }
                // reasons are a kernel enum: bounded
                f.drops.get_or_create(&DropLabels { reason }).inc();
            }
            TcpEventKind::Rtt => {
                if let Some(srtt) = t.srtt_us {
                    handle(&mut series.srtt, &f.srtt, labels).set(i64::from(srtt));
                }
            }
            TcpEventKind::ResetSent | TcpEventKind::ResetReceived => {
                let (at, direction) = if t.event == TcpEventKind::ResetSent {
                    (0, "sent")
                } else {
                    (1, "received")
                };
                series.resets[at]
                    .get_or_insert_with(|| {
                        f.resets
                            .get_or_create(&ResetLabels {
                                src_ip: labels.src_ip.clone(),
                                dst_ip: labels.dst_ip.clone(),
                                dst_port: labels.dst_port,
                                direction,
                            })
                            .clone()
                    })
                    .inc();
            }
        }
    }

    /// Brings the state counters up to the pipeline's (a count per state,
    /// states being a kernel enum: bounded).
    pub(super) fn update_states(&self, stats: &Stats) {
        for (state, &n) in stats.tcp_states.iter().enumerate().skip(1) {
            if n == 0 {
                continue;
            }
            let name = kindling_probe::abi::tcp_state_name(state as u8).to_owned();
            let c = self
                .families
                .states
                .get_or_create(&StateLabels { state: name });
            if n > c.get() {
                c.inc_by(n - c.get());
            }
        }
    }

    /// Edges admitted.
    pub(super) fn admitted(&self) -> usize {
        self.edges.admitted()
    }

    /// Records folded into the overflow edge.
    pub(super) fn refused(&self) -> u64 {
        self.edges.refused()
    }
}

/// The handle in `slot`, taken from `family` the first time.
fn handle<'a, L, M>(slot: &'a mut Option<M>, family: &Family<L, M>, labels: &L) -> &'a M
where
    L: Clone + Hash + Eq,
    M: Clone + Default,
{
    slot.get_or_insert_with(|| family.get_or_create(labels).clone())
}

fn tcp_labels(src: SocketAddr, dst: SocketAddr) -> TcpLabels {
    TcpLabels {
        src_ip: src.ip().to_string(),
        dst_ip: dst.ip().to_string(),
        dst_port: dst.port(),
    }
}
