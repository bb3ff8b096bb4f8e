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

use std::collections::hash_map::Entry;
use std::collections::HashSet;
use std::hash::{BuildHasher, Hash};
use std::net::SocketAddr;

use ahash::AHashMap;
use kindling_proto::ProtocolId;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rustc_hash::FxHashMap;

use crate::record::{Comm, Exchange, Output, Role, TcpEventKind, TcpRecord};
use crate::stats::Stats;

/// The value of every label of the one series that takes what the caps
/// refuse.
pub const OVERFLOW: &str = "__overflow__";

/// The request content of every exchange past
/// [`MetricsConfig::max_request_contents`] on one port.
pub const OTHER: &str = "__other__";

/// Cardinality limits.
#[derive(Clone, Copy, Debug)]
pub struct MetricsConfig {
    /// Most label sets per metric family.
    pub max_series: usize,
    /// Most distinct `request_content` values per server (protocol, port).
    pub max_request_contents: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            max_series: 10_000,
            max_request_contents: 100,
        }
    }
}

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

/// Reads one counter of [`Stats`].
type StatField = fn(&Stats) -> u64;

/// Duration histograms: 100 µs to 26 s, ×4 per bucket.
type LatencyFamily = Family<LatencyLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(1e-4, 4.0, 10))
}

/// A metric family with the label sets admitted so far (the DNS series;
/// entity and topology series are capped by their handle caches).
struct Capped<S> {
    family: Family<S, Counter>,
    seen: HashSet<S>,
}

impl<S: Clone + Hash + Eq + EncodeLabelSet + std::fmt::Debug + Send + Sync + 'static> Capped<S> {
    fn new() -> Self {
        Self {
            family: Family::default(),
            seen: HashSet::new(),
        }
    }
}

/// Admits `labels` under the cap, or returns the overflow set.
fn admit<S: Clone + Hash + Eq>(
    seen: &mut HashSet<S>,
    cap: usize,
    labels: S,
    overflow: S,
    n: &mut u64,
) -> S {
    if seen.contains(&labels) {
        return labels;
    }
    if seen.len() < cap {
        seen.insert(labels.clone());
        return labels;
    }
    *n += 1;
    overflow
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
    config: MetricsConfig,
    registry: Registry,
    entity_requests: Family<EntityLabels, Counter>,
    entity_duration: Family<EntityLabels, Counter>,
    entity_send_bytes: Family<EntityLabels, Counter>,
    entity_receive_bytes: Family<EntityLabels, Counter>,
    entity_latency: LatencyFamily,
    topology_requests: Family<TopologyLabels, Counter>,
    topology_duration: Family<TopologyLabels, Counter>,
    topology_request_bytes: Family<TopologyLabels, Counter>,
    topology_response_bytes: Family<TopologyLabels, Counter>,
    topology_latency: LatencyFamily,
    tcp_families: TcpFamilies,
    tcp_cache: FxHashMap<TcpKey, TcpSeries>,
    tcp_overflow: Option<TcpSeries>,
    dns_requests: Capped<DnsLabels>,
    dns_duration: Family<DnsLabels, Counter>,
    /// Distinct request contents per (protocol, port).
    // keyed by strings that come from traffic: a keyed (DoS-resistant) hash
    contents: AHashMap<(ProtocolId, u16), AHashMap<String, u32>>,
    strings: Strings,
    scratch: String,
    /// Fingerprints of raw values → series: what most exchanges cost.
    memo: FxHashMap<u128, Memo>,
    fingerprints: Fingerprints,
    entity_cache: FxHashMap<EntityKey, Series>,
    entity_overflow: Option<Series>,
    topology_cache: FxHashMap<TopologyKey, Series>,
    topology_overflow: Option<Series>,
    overflow: Counter,
    overflowed: u64,
    self_counters: Vec<(Counter, StatField)>,
    connections: Gauge,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("entity_series", &self.entity_cache.len())
            .field("topology_series", &self.topology_cache.len())
            .field("tcp_series", &self.tcp_cache.len())
            .field("dns_series", &self.dns_requests.seen.len())
            .field("overflowed", &self.overflowed)
            .finish()
    }
}

impl Metrics {
    /// An empty model with these limits.
    pub fn new(config: MetricsConfig) -> Self {
        let mut registry = Registry::default();
        let latency = || Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let m = Self {
            config,
            entity_requests: Family::default(),
            entity_duration: Family::default(),
            entity_send_bytes: Family::default(),
            entity_receive_bytes: Family::default(),
            entity_latency: latency(),
            topology_requests: Family::default(),
            topology_duration: Family::default(),
            topology_request_bytes: Family::default(),
            topology_response_bytes: Family::default(),
            topology_latency: latency(),
            tcp_families: TcpFamilies::default(),
            tcp_cache: FxHashMap::default(),
            tcp_overflow: None,
            dns_requests: Capped::new(),
            dns_duration: Family::default(),
            contents: AHashMap::new(),
            strings: Strings::default(),
            scratch: String::new(),
            memo: FxHashMap::default(),
            fingerprints: Fingerprints::default(),
            entity_cache: FxHashMap::default(),
            entity_overflow: None,
            topology_cache: FxHashMap::default(),
            topology_overflow: None,
            overflow: Counter::default(),
            overflowed: 0,
            self_counters: Vec::new(),
            connections: Gauge::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "kindling_entity_request",
            "Requests a server answered",
            m.entity_requests.clone(),
        );
        r.register(
            "kindling_entity_request_duration_nanoseconds",
            "Total time servers took to answer, nanoseconds",
            m.entity_duration.clone(),
        );
        r.register(
            "kindling_entity_request_send_bytes",
            "Bytes servers sent in responses",
            m.entity_send_bytes.clone(),
        );
        r.register(
            "kindling_entity_request_receive_bytes",
            "Bytes servers received in requests",
            m.entity_receive_bytes.clone(),
        );
        r.register(
            "kindling_entity_request_duration_seconds",
            "Distribution of server answer times, seconds",
            m.entity_latency.clone(),
        );
        r.register(
            "kindling_topology_request",
            "Requests along a client-server edge",
            m.topology_requests.clone(),
        );
        r.register(
            "kindling_topology_request_duration_nanoseconds",
            "Total time clients waited, nanoseconds",
            m.topology_duration.clone(),
        );
        r.register(
            "kindling_topology_request_request_bytes",
            "Bytes clients sent in requests",
            m.topology_request_bytes.clone(),
        );
        r.register(
            "kindling_topology_request_response_bytes",
            "Bytes clients received in responses",
            m.topology_response_bytes.clone(),
        );
        r.register(
            "kindling_topology_request_duration_seconds",
            "Distribution of client wait times, seconds",
            m.topology_latency.clone(),
        );
        r.register(
            "kindling_tcp_srtt_microseconds",
            "Latest smoothed round-trip time, microseconds",
            m.tcp_families.srtt.clone(),
        );
        r.register(
            "kindling_tcp_retransmit",
            "Retransmitted segments",
            m.tcp_families.retransmits.clone(),
        );
        r.register(
            "kindling_tcp_packet_loss",
            "Packets the kernel dropped for a reason that means loss",
            m.tcp_families.packet_loss.clone(),
        );
        r.register(
            "kindling_tcp_reset",
            "TCP resets sent or received",
            m.tcp_families.resets.clone(),
        );
        r.register(
            "kindling_tcp_state_change",
            "TCP state changes, by the state entered",
            m.tcp_families.states.clone(),
        );
        r.register(
            "kindling_tcp_drop",
            "Packets the kernel freed as dropped, by reason",
            m.tcp_families.drops.clone(),
        );
        r.register(
            "kindling_tcp_connect",
            "Completed TCP connects",
            m.tcp_families.connects.clone(),
        );
        r.register(
            "kindling_tcp_connect_duration_nanoseconds",
            "Total TCP handshake time, nanoseconds",
            m.tcp_families.connect_duration.clone(),
        );
        r.register(
            "kindling_tcp_connect_failure",
            "Failed TCP connects",
            m.tcp_families.connect_failures.clone(),
        );
        r.register(
            "kindling_dns_request",
            "DNS queries by domain, process and answer",
            m.dns_requests.family.clone(),
        );
        r.register(
            "kindling_dns_request_duration_nanoseconds",
            "Total DNS answer time, nanoseconds",
            m.dns_duration.clone(),
        );
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
        let mut m = m;
        let counters: [(&str, &str, StatField); 12] = [
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
        for (name, help, get) in counters {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            m.self_counters.push((c, get));
        }
        m.registry = registry;
        m
    }

    /// Label sets refused by the caps so far.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Takes one output into the series.
    pub fn observe(&mut self, output: &Output) {
        match output {
            Output::Exchange(x) => self.exchange(x),
            Output::Tcp(t) => self.tcp(t),
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
        for (state, &n) in stats.tcp_states.iter().enumerate().skip(1) {
            if n == 0 {
                continue;
            }
            let name = kindling_probe::abi::tcp_state_name(state as u8).to_owned();
            let c = self
                .tcp_families
                .states
                .get_or_create(&StateLabels { state: name });
            if n > c.get() {
                c.inc_by(n - c.get());
            }
        }
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
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
        let fingerprint = self.fingerprints.of(&RawKey::of(x));
        let memo = match self.memo.get(&fingerprint) {
            Some(memo) => memo,
            None => {
                let memo = if server {
                    self.entity_series(x)
                } else {
                    self.topology_series(x)
                };
                if self.memo.len() >= MEMO_CAP {
                    self.memo.clear();
                }
                self.memo.entry(fingerprint).or_insert(memo)
            }
        };
        if memo.overflow {
            self.overflowed += 1;
            self.overflow.inc();
        }
        if server {
            // a server sends the response and receives the request
            memo.series
                .add(x.duration_ns, x.response_bytes, x.request_bytes);
        } else {
            // a client sends the request and receives the response
            memo.series
                .add(x.duration_ns, x.request_bytes, x.response_bytes);
            if x.protocol == ProtocolId::Dns {
                self.dns(x);
            }
        }
    }

    /// The server series of `x`, found or made under the caps.
    fn entity_series(&mut self, x: &Exchange) -> Memo {
        let content = self.request_content(x);
        let response = self.strings.intern(response_content(x));
        let key = EntityKey {
            protocol: x.protocol,
            comm: x.comm,
            port: x.dst.port(),
            content,
            response,
            error: x.error.is_some(),
            slow: x.slow,
        };
        if let Some(series) = self.entity_cache.get(&key) {
            return Memo::of(series);
        }
        let made = self.new_entity_series(&key);
        remember(
            &mut self.entity_cache,
            key,
            made,
            self.entity_overflow.as_ref(),
        )
    }

    /// The series of a label set seen for the first time; `None` beyond the
    /// cap (the overflow series, made here once, takes it).
    fn new_entity_series(&mut self, key: &EntityKey) -> Option<Series> {
        let over = self.entity_cache.len() >= self.config.max_series;
        if over && self.entity_overflow.is_some() {
            return None;
        }
        let labels = if over {
            EntityLabels {
                protocol: OVERFLOW.into(),
                comm: OVERFLOW.into(),
                port: 0,
                request_content: OVERFLOW.into(),
                response_content: OVERFLOW.into(),
                is_error: false,
                is_slow: false,
            }
        } else {
            EntityLabels {
                protocol: key.protocol.as_str().to_owned(),
                comm: key.comm.to_string(),
                port: key.port,
                request_content: self.strings.get(key.content).to_owned(),
                response_content: self.strings.get(key.response).to_owned(),
                is_error: key.error,
                is_slow: key.slow,
            }
        };
        let latency = LatencyLabels {
            protocol: labels.protocol.clone(),
            comm: labels.comm.clone(),
            port: labels.port,
        };
        let series = Series {
            requests: self.entity_requests.get_or_create(&labels).clone(),
            duration: self.entity_duration.get_or_create(&labels).clone(),
            send: self.entity_send_bytes.get_or_create(&labels).clone(),
            receive: self.entity_receive_bytes.get_or_create(&labels).clone(),
            latency: self.entity_latency.get_or_create(&latency).clone(),
        };
        if over {
            self.entity_overflow = Some(series);
            return None;
        }
        Some(series)
    }

    /// The client → server series of `x`, found or made under the caps.
    fn topology_series(&mut self, x: &Exchange) -> Memo {
        let name = self
            .strings
            .intern(x.attributes.get("server.address").unwrap_or_default());
        let key = TopologyKey {
            protocol: x.protocol,
            comm: x.comm,
            dst: x.dst.ip(),
            port: x.dst.port(),
            name,
            error: x.error.is_some(),
            slow: x.slow,
        };
        if let Some(series) = self.topology_cache.get(&key) {
            return Memo::of(series);
        }
        let made = self.new_topology_series(&key);
        remember(
            &mut self.topology_cache,
            key,
            made,
            self.topology_overflow.as_ref(),
        )
    }

    fn new_topology_series(&mut self, key: &TopologyKey) -> Option<Series> {
        let over = self.topology_cache.len() >= self.config.max_series;
        if over && self.topology_overflow.is_some() {
            return None;
        }
        let labels = if over {
            TopologyLabels {
                protocol: OVERFLOW.into(),
                src_comm: OVERFLOW.into(),
                dst_ip: OVERFLOW.into(),
                dst_port: 0,
                dst_name: OVERFLOW.into(),
                is_error: false,
                is_slow: false,
            }
        } else {
            TopologyLabels {
                protocol: key.protocol.as_str().to_owned(),
                src_comm: key.comm.to_string(),
                dst_ip: key.dst.to_string(),
                dst_port: key.port,
                dst_name: self.strings.get(key.name).to_owned(),
                is_error: key.error,
                is_slow: key.slow,
            }
        };
        let latency = LatencyLabels {
            protocol: labels.protocol.clone(),
            comm: labels.src_comm.clone(),
            port: labels.dst_port,
        };
        let series = Series {
            requests: self.topology_requests.get_or_create(&labels).clone(),
            duration: self.topology_duration.get_or_create(&labels).clone(),
            send: self.topology_request_bytes.get_or_create(&labels).clone(),
            receive: self.topology_response_bytes.get_or_create(&labels).clone(),
            latency: self.topology_latency.get_or_create(&latency).clone(),
        };
        if over {
            self.topology_overflow = Some(series);
            return None;
        }
        Some(series)
    }

    /// DNS series describe the asking process (client side).
    fn dns(&mut self, x: &Exchange) {
        let labels = DnsLabels {
            comm: x.comm.to_string(),
            domain: x
                .attributes
                .get("dns.question.name")
                .unwrap_or_default()
                .to_owned(),
            rcode: match x.error {
                Some(crate::ErrorKind::NoResponse) => "TIMEOUT".to_owned(),
                _ => x
                    .attributes
                    .get("dns.response.code")
                    .unwrap_or_default()
                    .to_owned(),
            },
        };
        let overflow = DnsLabels {
            comm: OVERFLOW.into(),
            domain: OVERFLOW.into(),
            rcode: OVERFLOW.into(),
        };
        let before = self.overflowed;
        let labels = admit(
            &mut self.dns_requests.seen,
            self.config.max_series,
            labels,
            overflow,
            &mut self.overflowed,
        );
        if self.overflowed > before {
            self.overflow.inc();
        }
        self.dns_requests.family.get_or_create(&labels).inc();
        self.dns_duration
            .get_or_create(&labels)
            .inc_by(x.duration_ns);
    }

    fn tcp(&mut self, t: &TcpRecord) {
        let key = TcpKey {
            src: t.src.ip(),
            dst: t.dst.ip(),
            port: t.dst.port(),
        };
        let f = &self.tcp_families;
        let admitted = self.tcp_cache.len();
        let series = match self.tcp_cache.entry(key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) if admitted < self.config.max_series => {
                e.insert(TcpSeries::new(tcp_labels(t.src, t.dst)))
            }
            Entry::Vacant(_) => {
                self.overflowed += 1;
                self.overflow.inc();
                self.tcp_overflow.get_or_insert_with(|| {
                    TcpSeries::new(TcpLabels {
                        src_ip: OVERFLOW.into(),
                        dst_ip: OVERFLOW.into(),
                        dst_port: 0,
                    })
                })
            }
        };
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

    /// The interned request content of a server exchange: at most
    /// `max_request_contents` distinct ones per (protocol, port), then
    /// [`OTHER`]. A content seen before costs one lookup.
    fn request_content(&mut self, x: &Exchange) -> u32 {
        let [first, second] = content_parts(x);
        let out = &mut self.scratch;
        out.clear();
        match x.protocol {
            ProtocolId::Http => {
                out.push_str(first);
                out.push(' ');
                template_path_into(out, second);
            }
            _ if second.is_empty() => out.push_str(first),
            _ => {
                out.push_str(first);
                out.push(' ');
                out.push_str(second);
            }
        }
        let seen = self.contents.entry((x.protocol, x.dst.port())).or_default();
        if let Some(&id) = seen.get(out.as_str()) {
            return id;
        }
        if seen.len() < self.config.max_request_contents {
            let id = self.strings.intern(out);
            seen.insert(out.clone(), id);
            id
        } else {
            self.strings.intern(OTHER)
        }
    }
}

/// Keeps a series just made for `key` in `cache`; `None` (refused by the
/// cap) gives the overflow series.
fn remember<K: Hash + Eq>(
    cache: &mut FxHashMap<K, Series>,
    key: K,
    made: Option<Series>,
    overflow: Option<&Series>,
) -> Memo {
    match made {
        Some(series) => {
            let memo = Memo::of(&series);
            cache.insert(key, series);
            memo
        }
        None => Memo::overflow(overflow),
    }
}

/// The attributes a server series' request content is made of: HTTP
/// method and path (templated later), SQL operation and table, Redis
/// command, DNS question type.
fn content_parts(x: &Exchange) -> [&str; 2] {
    x.protocol.request_keys().map(|k| match k {
        "" => "",
        k => x.attributes.get(k).unwrap_or(""),
    })
}

/// Most raw value combinations remembered; the memo starts over when full.
const MEMO_CAP: usize = 8192;

/// The series an exchange's raw values lead to.
#[derive(Clone, Debug)]
struct Memo {
    series: Series,
    /// The caps refused a series of its own: counted as overflow each time.
    overflow: bool,
}

impl Memo {
    fn of(series: &Series) -> Self {
        Self {
            series: series.clone(),
            overflow: false,
        }
    }

    fn overflow(series: Option<&Series>) -> Self {
        Self {
            series: series.expect("made with the first refusal").clone(),
            overflow: true,
        }
    }
}

/// Everything that chooses an exchange's series, borrowed from it.
#[derive(Clone, Copy, Debug)]
struct RawKey<'a> {
    server: bool,
    protocol: ProtocolId,
    comm: Comm,
    /// Topology only (an entity is its port).
    dst: Option<std::net::IpAddr>,
    port: u16,
    error: bool,
    slow: bool,
    /// Entity: request content parts and response content; topology: the
    /// server's name.
    parts: [&'a str; 3],
}

impl<'a> RawKey<'a> {
    fn of(x: &'a Exchange) -> Self {
        let server = x.role == Role::Server;
        let parts = if server {
            let [first, second] = content_parts(x);
            [first, second, response_content(x)]
        } else {
            let name = x.attributes.get("server.address").unwrap_or_default();
            [name, "", ""]
        };
        Self {
            server,
            protocol: x.protocol,
            comm: x.comm,
            dst: (!server).then(|| x.dst.ip()),
            port: x.dst.port(),
            error: x.error.is_some(),
            slow: x.slow,
            parts,
        }
    }
}

// Few, wide writes: the hasher's cost is per write.
impl Hash for RawKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let (family, ip) = match self.dst {
            None => (0, 0),
            Some(std::net::IpAddr::V4(ip)) => (1, u128::from(ip.to_bits())),
            Some(std::net::IpAddr::V6(ip)) => (2, ip.to_bits()),
        };
        let flags = u64::from(self.server)
            | u64::from(self.error) << 1
            | u64::from(self.slow) << 2
            | family << 3
            | u64::from(self.port) << 8
            | (self.protocol as u64) << 24;
        h.write_u64(flags);
        h.write_u128(u128::from_ne_bytes(self.comm.to_raw()));
        h.write_u128(ip);
        for part in self.parts {
            h.write_usize(part.len());
            h.write(part.as_bytes());
        }
    }
}

/// Names a [`RawKey`] by two 64-bit hashes of the same writes: a keyed one
/// (random per process) and a fast unkeyed one. The memo keeps these 16
/// bytes instead of the strings: its lookups then touch no memory but the
/// table's. Two keys share a fingerprint by chance with probability ~2^-128
/// per pair; traffic shaped against the unkeyed half still has to collide
/// the keyed 64 bits, ~2^-64 per pair, without knowing the key. (The
/// writes themselves never coincide for different keys: every variable
/// part is written with its length, the address with its family.)
#[derive(Debug, Default)]
struct Fingerprints {
    keyed: ahash::RandomState,
}

impl Fingerprints {
    fn of(&self, key: &RawKey<'_>) -> u128 {
        let fast = rustc_hash::FxBuildHasher.hash_one(key);
        u128::from(self.keyed.hash_one(key)) << 64 | u128::from(fast)
    }
}

fn response_content(x: &Exchange) -> &str {
    x.attributes
        .get(x.protocol.status_key())
        .unwrap_or(match x.error {
            Some(crate::ErrorKind::NoResponse) => "NoResponse",
            Some(crate::ErrorKind::Reset) => "Reset",
            Some(crate::ErrorKind::Incomplete) => "Incomplete",
            Some(_) => "error",
            None => "ok",
        })
}

/// Label values, each stored once and named by a number.
#[derive(Debug, Default)]
struct Strings {
    // strings from traffic: a keyed (DoS-resistant) hash
    ids: AHashMap<String, u32>,
    names: Vec<String>,
}

/// Most distinct label values kept; beyond, new values read [`OVERFLOW`].
const MAX_STRINGS: usize = 1 << 16;

impl Strings {
    fn intern(&mut self, s: &str) -> u32 {
        if let Some(&id) = self.ids.get(s) {
            return id;
        }
        if self.names.len() >= MAX_STRINGS {
            return self.intern_overflow();
        }
        let id = self.names.len() as u32;
        self.names.push(s.to_owned());
        self.ids.insert(s.to_owned(), id);
        id
    }

    fn get(&self, id: u32) -> &str {
        &self.names[id as usize]
    }

    /// The id of [`OVERFLOW`], made on first use (past the cap: one more).
    fn intern_overflow(&mut self) -> u32 {
        if let Some(&id) = self.ids.get(OVERFLOW) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(OVERFLOW.to_owned());
        self.ids.insert(OVERFLOW.to_owned(), id);
        id
    }
}

/// What tells one server series from another, without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct EntityKey {
    protocol: ProtocolId,
    comm: Comm,
    port: u16,
    content: u32,
    response: u32,
    error: bool,
    slow: bool,
}

/// What tells one edge series from another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct TopologyKey {
    protocol: ProtocolId,
    comm: Comm,
    dst: std::net::IpAddr,
    port: u16,
    name: u32,
    error: bool,
    slow: bool,
}

/// Handles on one label set's metrics (they share the registry's values).
#[derive(Clone, Debug)]
struct Series {
    requests: Counter,
    duration: Counter,
    send: Counter,
    receive: Counter,
    latency: Histogram,
}

impl Series {
    /// One exchange of `duration_ns` that sent and received these bytes.
    fn add(&self, duration_ns: u64, sent: u64, received: u64) {
        self.requests.inc();
        self.duration.inc_by(duration_ns);
        self.send.inc_by(sent);
        self.receive.inc_by(received);
        self.latency.observe(duration_ns as f64 / 1e9);
    }
}

/// The families of the TCP series (one handle each is kept per edge).
#[derive(Default)]
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
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
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

/// Replaces the parts of a URL path that identify one resource by a
/// placeholder, so that `/users/42/orders/9f1c…` becomes
/// `/users/{id}/orders/{hex}`.
///
/// # Examples
///
/// ```
/// use kindling_flow::metrics::template_path;
///
/// assert_eq!(template_path("/users/42"), "/users/{id}");
/// assert_eq!(
///     template_path("/o/123e4567-e89b-12d3-a456-426614174000/items"),
///     "/o/{uuid}/items"
/// );
/// assert_eq!(template_path("/blob/9f1c0a7d3e5b2c4a"), "/blob/{hex}");
/// assert_eq!(template_path("/static/app.js"), "/static/app.js");
/// ```
pub fn template_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    template_path_into(&mut out, path);
    out
}

/// [`template_path`] appended to `out`.
fn template_path_into(out: &mut String, path: &str) {
    for (i, seg) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        out.push_str(template_segment(seg));
    }
}

fn template_segment(seg: &str) -> &str {
    let hex = |c: char| c.is_ascii_hexdigit();
    if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
        "{id}"
    } else if seg.len() == 36
        && seg.char_indices().all(|(i, c)| {
            if [8, 13, 18, 23].contains(&i) {
                c == '-'
            } else {
                hex(c)
            }
        })
    {
        "{uuid}"
    } else if seg.len() >= 12 && seg.chars().all(hex) && seg.bytes().any(|b| b.is_ascii_digit()) {
        "{hex}"
    } else {
        seg
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dst: std::net::IpAddr, parts: [&str; 3]) -> RawKey<'_> {
        RawKey {
            server: false,
            protocol: ProtocolId::Http,
            comm: Comm::from_raw(*b"curl\0\0\0\0\0\0\0\0\0\0\0\0"),
            dst: Some(dst),
            port: 80,
            error: false,
            slow: false,
            parts,
        }
    }

    /// Keys that differ only where an ambiguous encoding could merge them
    /// get different fingerprints.
    #[test]
    fn fingerprints_tell_apart_what_an_encoding_could_merge() {
        let f = Fingerprints::default();
        // an IPv4 address and the IPv6 one whose bits it would equal if the
        // family were folded into the address bits
        let v4: std::net::IpAddr = "10.0.0.1".parse().unwrap();
        let v6 = std::net::IpAddr::V6(std::net::Ipv6Addr::from_bits(
            (1u128 << 64 | 0x0a00_0001) ^ 2,
        ));
        assert_ne!(f.of(&key(v4, ["", "", ""])), f.of(&key(v6, ["", "", ""])));
        // the same bytes split differently between the parts
        assert_ne!(
            f.of(&key(v4, ["ab", "c", ""])),
            f.of(&key(v4, ["a", "bc", ""]))
        );
        assert_eq!(
            f.of(&key(v4, ["a", "b", ""])),
            f.of(&key(v4, ["a", "b", ""]))
        );
    }
}
