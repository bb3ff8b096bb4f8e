//! Aggregation of exchanges and TCP records into Prometheus series with
//! Kindling's metric names, with bounded cardinality.
//!
//! - **entity** series describe a server (role `server` exchanges): what it
//!   was asked and how it answered;
//! - **topology** series describe a client → server edge (role `client`):
//!   the service map;
//! - **tcp** series describe the network under an edge; **dns** series each
//!   domain a process resolved.
//!
//! Label values are bounded before they reach a series: URL paths are
//! templated (`/users/42` → `/users/{id}`), SQL becomes operation + table,
//! at most [`MetricsConfig::max_request_contents`] distinct request contents
//! per server port (the rest share `__other__`), and at most
//! [`MetricsConfig::max_series`] label sets per metric family (the rest share
//! one `__overflow__` set and are counted in
//! `kindling_metrics_overflow_total`).
//!
//! Inside: [`Metrics`] routes each output; `series` holds the exchange
//! series (entity and topology, one code), `tcp` and `dns` theirs; every
//! bound is a `cardinality::Cap`; `values` interns and bounds label strings
//! from traffic, `content` says what a request and a response contain;
//! `memo` makes a repeated exchange cost one lookup; `schema` holds the
//! label sets.

mod cardinality;
mod content;
mod dns;
mod memo;
mod net;
mod schema;
mod series;
mod tcp;
mod text;
mod values;

use std::borrow::Cow;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use content::template_path;
pub use net::{HopLabels, NetDropLabels, NetMetrics};
pub use schema::{
    DnsLabels, DropLabels, EntityLabels, LatencyLabels, ResetLabels, StateLabels, TcpLabels,
    TopologyLabels,
};
pub use text::{escape as escape_label_value, relabel};

use crate::record::{Exchange, Output, Role};
use crate::stats::Stats;
use kindling_proto::ProtocolId;
use memo::Memos;
use schema::{StatField, FLOW_COUNTERS};
use series::{Entity, ExchangeSeries, Topology};

/// The value of every label of the one series that takes what the caps
/// refuse.
pub const OVERFLOW: &str = "__overflow__";

/// The request content of every exchange past
/// [`MetricsConfig::max_request_contents`] on one port.
pub const OTHER: &str = "__other__";

/// Cardinality limits, and the identity labels of exchange series.
#[derive(Clone, Copy, Debug)]
pub struct MetricsConfig {
    /// Most label sets per metric family.
    pub max_series: usize,
    /// Most distinct `request_content` values per server (protocol, port).
    pub max_request_contents: usize,
    /// Labels naming who is at each end, as (label, attribute key) pairs:
    /// entity series carry `label` = the server's `resource[key]`;
    /// topology series `src_label` = the client's `resource[key]` and
    /// `dst_label` = its `peer[key]` (empty when absent). Kubernetes names
    /// come this way (`kindling_k8s::METRIC_LABELS`); empty by default.
    pub identity: &'static [(&'static str, &'static str)],
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_series: 10_000,
            max_request_contents: 100,
            identity: &[],
        }
    }
}

/// The Prometheus model: feed it every [`Output`], encode it when scraped.
///
/// # Examples
///
/// ```
/// use kindling_flow::{Metrics, MetricsConfig, Stats};
///
/// let mut m = Metrics::new(MetricsConfig::default());
/// m.update_stats(&Stats::default());
/// let text = m.encode();
/// assert!(text.contains("kindling_flow_events_total 0"));
/// ```
pub struct Metrics {
    registry: Registry,
    entity: ExchangeSeries<Entity>,
    topology: ExchangeSeries<Topology>,
    tcp: tcp::Tcp,
    dns: dns::Dns,
    /// Label values of exchange series.
    values: values::Values,
    /// Fingerprints of raw values → series: what most exchanges cost.
    memo: Memos,
    /// Brought up to the caps' refusals when encoded.
    overflow: Counter,
    self_counters: Vec<(Counter, StatField)>,
    connections: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("entity_series", &self.entity.admitted())
            .field("topology_series", &self.topology.admitted())
            .field("tcp_series", &self.tcp.admitted())
            .field("dns_series", &self.dns.admitted())
            .field("overflowed", &self.overflowed())
            .finish()
    }
}

impl Metrics {
    /// An empty model with these limits.
    pub fn new(config: MetricsConfig) -> Self {
        Self::with_labels(config, &[])
    }

    /// An empty model whose every sample also carries `labels` (an agent's
    /// `cluster` and `node`; a label with an empty value is left out).
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_flow::{Metrics, MetricsConfig, Stats};
    ///
    /// let mut m = Metrics::with_labels(MetricsConfig::default(), &[("node", "n1"), ("cluster", "")]);
    /// m.update_stats(&Stats::default());
    /// assert!(m.encode().contains("kindling_flow_events_total{node=\"n1\"} 0"));
    /// ```
    pub fn with_labels(config: MetricsConfig, labels: &[(&str, &str)]) -> Self {
        let labels: Vec<(&str, String)> = labels
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, v)| (*k, text::escape(v)))
            .collect();
        // The exchange counters (most of the series) carry the labels in
        // their label sets, rendered once per series; every other family
        // sits in a sub-registry that adds them.
        let prefix: String = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{v}\","))
            .collect();
        let own: Vec<&str> = labels.iter().map(|(k, _)| *k).collect();
        let mut m = Self {
            registry: Registry::default(),
            entity: ExchangeSeries::new(config.max_series, (&prefix, &own), config.identity),
            topology: ExchangeSeries::new(config.max_series, (&prefix, &own), config.identity),
            tcp: tcp::Tcp::new(config.max_series),
            dns: dns::Dns::new(config.max_series),
            values: values::Values::new(config.max_request_contents),
            memo: Memos::new(config.identity),
            overflow: Counter::default(),
            self_counters: Vec::new(),
            connections: Gauge::default(),
        };
        m.entity.register(&mut m.registry);
        m.topology.register(&mut m.registry);
        let r = m.registry.sub_registry_with_labels(
            labels
                .into_iter()
                .map(|(k, v)| (Cow::Owned(k.to_owned()), Cow::Owned(v))),
        );
        m.entity.register_histogram(r);
        m.topology.register_histogram(r);
        m.tcp.register(r);
        m.dns.register(r);
        r.register(
            "kindling_metrics_overflow",
            "Observations folded into an overflow label set by the series cap",
            m.overflow.clone(),
        );
        r.register(
            "kindling_flow_connections",
            "Connections tracked now",
            m.connections.clone(),
        );
        for (name, help, get) in FLOW_COUNTERS {
            let c = Counter::default();
            r.register(name, help, c.clone());
            m.self_counters.push((c, get));
        }
        m
    }

    /// Observations folded into an overflow label set by the caps so far.
    pub fn overflowed(&self) -> u64 {
        self.entity.refused() + self.topology.refused() + self.tcp.refused() + self.dns.refused()
    }

    /// Takes one output into the series. An exchange still waiting for
    /// its answer (`pending`) is not counted: it is counted once answered,
    /// or once its connection closes unanswered.
    pub fn observe(&mut self, output: &Output) {
        match output {
            Output::Exchange(x) if x.pending => {}
            Output::Exchange(x) => self.exchange(x),
            Output::Tcp(t) => self.tcp.observe(t),
        }
    }

    /// Copies the pipeline's self-metrics.
    pub fn update_stats(&mut self, stats: &Stats) {
        for (counter, get) in &self.self_counters {
            let now = get(stats);
            let before = counter.get();
            if now > before {
                counter.inc_by(now - before);
            }
        }
        self.connections
            .set(i64::try_from(stats.connections).unwrap_or(i64::MAX));
        self.tcp.update_states(stats);
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        // the caps count their refusals; the exported counter catches up
        let (now, before) = (self.overflowed(), self.overflow.get());
        if now > before {
            self.overflow.inc_by(now - before);
        }
        let mut s = String::new();
        prometheus_client::encoding::text::encode(&mut s, &self.registry)
            .expect("writing to a String cannot fail");
        s
    }

    /// Counts one exchange in its series. The raw values that choose the
    /// series are looked up once in a memo; only a combination not seen
    /// before templates the request, applies the caps and finds the series.
    fn exchange(&mut self, x: &Exchange) {
        let server = x.role == Role::Server;
        let fingerprint = self.memo.fingerprint(x);
        let memo = match self.memo.get(fingerprint) {
            Some(memo) => {
                if memo.overflow {
                    // the memo answered for the cap: still a refusal
                    if server {
                        self.entity.refuse_again();
                    } else {
                        self.topology.refuse_again();
                    }
                }
                memo
            }
            None => {
                let memo = if server {
                    self.entity.find(x, &mut self.values)
                } else {
                    self.topology.find(x, &mut self.values)
                };
                self.memo.insert(fingerprint, memo)
            }
        };
        if server {
            // a server sends the response and receives the request
            memo.series
                .add(x.duration_ns, x.response_bytes, x.request_bytes);
        } else {
            // a client sends the request and receives the response
            memo.series
                .add(x.duration_ns, x.request_bytes, x.response_bytes);
            if x.protocol == ProtocolId::Dns {
                self.dns.observe(x);
            }
        }
    }
}
