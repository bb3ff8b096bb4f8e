//! What Prometheus sees, apart from the metric names each part registers:
//! the label set of every family, the duration histograms' buckets, and
//! the pipeline's own counters.
//!
//! Label sets are what dashboards query by: names and meanings change only
//! on purpose (see `DESIGN.md`, Outputs).

use prometheus_client::encoding::{EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Metric, Registry};

use crate::stats::Stats;

/// Labels of a server-side series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntityLabels {
    /// `http`, `mysql`, `redis`, `dns`.
    pub protocol: String,
    /// The serving process.
    pub comm: String,
    /// The port it serves on.
    pub port: u16,
    /// Templated request: `GET /users/{id}`, `SELECT users`, `HGETALL`.
    pub request_content: String,
    /// Status: HTTP code, database error code or `ok`, DNS rcode.
    pub response_content: String,
    /// An error (see `error` in the exchange).
    pub is_error: bool,
    /// Over the protocol's slow threshold.
    pub is_slow: bool,
}

/// Labels of a client → server edge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopologyLabels {
    /// Protocol.
    pub protocol: String,
    /// The calling process.
    pub src_comm: String,
    /// Server address.
    pub dst_ip: String,
    /// Server port.
    pub dst_port: u16,
    /// The name the client resolved for `dst_ip`, when the pipeline saw it.
    pub dst_name: String,
    /// An error.
    pub is_error: bool,
    /// Slow.
    pub is_slow: bool,
}

/// A label set rendered once, when its series is made, so that every
/// encoding copies it instead of writing each label through
/// `prometheus-client`'s encoder (seven labels cost some thirty small
/// writes a sample, most of the encoding's time). It is handed to that
/// encoder as one label whose "name" is everything up to the last label's
/// name and whose value is the last value: the text is the same,
/// `k1="v1",…,kN="vN"`. Values must already be escaped (see `escape`).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub(super) struct Rendered {
    /// `k1="v1",…,kN`
    head: Box<str>,
    /// `vN`
    last: Box<str>,
}

impl Rendered {
    /// The label set of `prefix` (`k="v",` pairs, already rendered: the
    /// model's own labels) and these (name, value) pairs, in order.
    fn of(prefix: &str, pairs: &[(&str, &str)]) -> Self {
        use std::fmt::Write as _;
        let mut head = String::with_capacity(
            prefix.len()
                + pairs
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 4)
                    .sum::<usize>(),
        );
        head.push_str(prefix);
        let (last, rest) = pairs.split_last().expect("a label set has labels");
        for (k, v) in rest {
            let _ = write!(head, "{k}=\"{v}\",");
        }
        head.push_str(last.0);
        Self {
            head: head.into(),
            last: last.1.into(),
        }
    }
}

impl EncodeLabelSet for Rendered {
    fn encode(&self, mut encoder: LabelSetEncoder<'_>) -> std::fmt::Result {
        use std::fmt::Write as _;
        let mut label = encoder.encode_label();
        let mut key = label.encode_label_key()?;
        key.write_str(&self.head)?;
        let mut value = key.encode_label_value()?;
        value.write_str(&self.last)?;
        value.finish()
    }
}

/// Label sets that many series share: rendered once per series.
pub(super) trait Render {
    /// The rendered label set, after `prefix` (see [`Rendered::of`]).
    fn render(&self, prefix: &str) -> Rendered;
}

impl Render for EntityLabels {
    fn render(&self, prefix: &str) -> Rendered {
        let port = self.port.to_string();
        Rendered::of(
            prefix,
            &[
                ("protocol", self.protocol.as_str()),
                ("comm", self.comm.as_str()),
                ("port", port.as_str()),
                ("request_content", self.request_content.as_str()),
                ("response_content", self.response_content.as_str()),
                ("is_error", if self.is_error { "true" } else { "false" }),
                ("is_slow", if self.is_slow { "true" } else { "false" }),
            ],
        )
    }
}

impl Render for TopologyLabels {
    fn render(&self, prefix: &str) -> Rendered {
        let port = self.dst_port.to_string();
        Rendered::of(
            prefix,
            &[
                ("protocol", self.protocol.as_str()),
                ("src_comm", self.src_comm.as_str()),
                ("dst_ip", self.dst_ip.as_str()),
                ("dst_port", port.as_str()),
                ("dst_name", self.dst_name.as_str()),
                ("is_error", if self.is_error { "true" } else { "false" }),
                ("is_slow", if self.is_slow { "true" } else { "false" }),
            ],
        )
    }
}

/// Labels of duration histograms (fewer, to keep buckets affordable).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LatencyLabels {
    /// Protocol.
    pub protocol: String,
    /// Serving (entity) or calling (topology) process.
    pub comm: String,
    /// Server port.
    pub port: u16,
}

/// Labels of TCP series: the connection's two ends.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    /// This host's address.
    pub src_ip: String,
    /// Peer address.
    pub dst_ip: String,
    /// Peer port.
    pub dst_port: u16,
}

/// Labels of the drop counter: the kernel's reason.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `enum skb_drop_reason` name, or its number when the name is unknown.
    pub reason: String,
}

/// Labels of the reset counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResetLabels {
    /// This host's address.
    pub src_ip: String,
    /// Peer address.
    pub dst_ip: String,
    /// Peer port.
    pub dst_port: u16,
    /// `sent` or `received`.
    pub direction: &'static str,
}

/// Labels of the TCP state counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// The state entered (`ESTABLISHED`, `CLOSE_WAIT`, …).
    pub state: String,
}

/// Labels of DNS series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DnsLabels {
    /// The asking process.
    pub comm: String,
    /// The name asked about.
    pub domain: String,
    /// The answer's response code, or `TIMEOUT`.
    pub rcode: String,
}

/// A family's name (a counter's gets `_total` when encoded) and help.
pub(super) type Name = (&'static str, &'static str);

/// Registers `metric` under `name`.
pub(super) fn register(r: &mut Registry, (name, help): Name, metric: impl Metric) {
    r.register(name, help, metric);
}

/// Duration histograms: 100 µs to 26 s, ×4 per bucket.
pub(super) type LatencyFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

/// An empty [`LatencyFamily`].
pub(super) fn latency_family() -> LatencyFamily {
    Family::new_with_constructor(latency_histogram as fn() -> Histogram)
}

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-4, 4.0, 10))
}

/// Reads one counter of [`Stats`].
pub(super) type StatField = fn(&Stats) -> u64;

/// The pipeline's own counters: name, help, and where [`Stats`] keeps it.
pub(super) const FLOW_COUNTERS: [(&str, &str, StatField); 13] = [
    (
        "kindling_flow_events",
        "Probe records fed to the pipeline",
        |s| s.events,
    ),
    (
        "kindling_flow_events_lost",
        "Probe records lost before the pipeline",
        |s| s.events_lost,
    ),
    ("kindling_flow_exchanges", "Exchanges reported", |s| {
        s.exchanges
    }),
    (
        "kindling_flow_parse_errors",
        "Byte runs that could not be parsed",
        |s| s.parse_errors,
    ),
    (
        "kindling_flow_resyncs",
        "Streams resynchronised after lost bytes",
        |s| s.resyncs,
    ),
    (
        "kindling_flow_partial_exchanges",
        "Exchanges with an unreadable response",
        |s| s.partial_exchanges,
    ),
    (
        "kindling_flow_requests_dropped",
        "Requests dropped without an exchange",
        |s| s.requests_dropped,
    ),
    (
        "kindling_flow_unpaired_responses",
        "Responses without a request",
        |s| s.unpaired_responses,
    ),
    (
        "kindling_flow_messages_delivered",
        "Messages pushed to clients unasked (pub/sub, MONITOR)",
        |s| s.messages_delivered,
    ),
    (
        "kindling_flow_unrecognised_connections",
        "Connections of no known protocol",
        |s| s.unrecognised_connections,
    ),
    (
        "kindling_flow_buffer_overflows",
        "Reassembly buffers dropped at the cap",
        |s| s.buffer_overflows,
    ),
    (
        "kindling_flow_evictions",
        "Connections evicted at the cap",
        |s| s.evictions,
    ),
    (
        "kindling_flow_idle_expired",
        "Connections forgotten when idle",
        |s| s.idle_expired,
    ),
];
