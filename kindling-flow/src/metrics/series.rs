//! Exchange series, written once for both kinds:
//!
//! - **entity** series describe a server (role `server` exchanges): what
//!   it was asked and how it answered;
//! - **topology** series describe a client → server edge (role `client`):
//!   the service map.
//!
//! Both count requests, total duration, bytes each way and a duration
//! histogram, and are found the same way: an exchange gives a compact
//! [`Key`] (label strings interned), the key is admitted under the series
//! cap, and only a key seen for the first time makes label strings. A
//! [`Kind`] says what differs: which values tell series apart beyond
//! protocol, process, port and verdict, and how they become labels.

use std::fmt::Debug;
use std::hash::Hash;
use std::net::IpAddr;

use kindling_proto::ProtocolId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::cardinality::{Admit, Cap};
use super::content::response_content;
use super::memo::Memo;
use super::schema::{
    latency_family, register, EntityLabels, LatencyFamily, LatencyLabels, Name, Render, Rendered,
    TopologyLabels,
};
use super::text::escape;
use super::values::Values;
use super::OVERFLOW;
use crate::record::{Comm, Exchange};

/// What one kind of exchange series is told apart and labelled by.
pub(super) trait Kind {
    /// What, beyond protocol, process, port and verdict, tells one series
    /// of this kind from another (label strings interned).
    type Peer: Copy + Hash + Eq;
    /// The label set of its counters.
    type Labels: Clone + Hash + Eq + Render + Debug + Send + Sync + 'static;
    /// Name and help of its families, in the order registered: requests,
    /// total duration, bytes the traced end sent, bytes it received,
    /// duration histogram.
    const FAMILIES: [Name; 5];
    /// The identity labels' prefixes, one per end named: the traced end's
    /// (its `resource`), then the peer's (its `peer`).
    const END_PREFIXES: &'static [&'static str];

    /// The [`Kind::Peer`] of `x`.
    fn peer(x: &Exchange, values: &mut Values) -> Self::Peer;

    /// The two label values a peer stands for.
    fn peer_labels(peer: Self::Peer, values: &Values) -> [String; 2];

    /// The label set of these values.
    fn labels(values: LabelValues) -> Self::Labels;
}

/// What tells one series from another, without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) struct Key<P> {
    protocol: ProtocolId,
    /// Serving (entity) or calling (topology) process.
    comm: Comm,
    /// The server's port.
    port: u16,
    error: bool,
    slow: bool,
    peer: P,
    /// Per end named (see [`Kind::END_PREFIXES`]), its identity values
    /// joined and interned ([`NO_IDENTITY`] when the model has none).
    ends: [u32; 2],
}

/// The `ends` of a key when the model has no identity labels.
const NO_IDENTITY: u32 = u32::MAX;

/// Joins one end's identity values (a byte no label value holds).
const JOIN: char = '\u{1f}';

/// The label values of one series, whatever its kind.
#[derive(Debug)]
pub(super) struct LabelValues {
    protocol: String,
    comm: String,
    port: u16,
    /// The [`Kind::peer_labels`].
    peer: [String; 2],
    is_error: bool,
    is_slow: bool,
}

impl LabelValues {
    fn of<K: Kind>(key: &Key<K::Peer>, values: &Values) -> Self {
        Self {
            protocol: key.protocol.as_str().to_owned(),
            comm: escape(&key.comm.as_str()),
            port: key.port,
            peer: K::peer_labels(key.peer, values).map(|v| escape(&v)),
            is_error: key.error,
            is_slow: key.slow,
        }
    }

    /// Those of the series that takes what the cap refuses.
    fn overflow() -> Self {
        Self {
            protocol: OVERFLOW.into(),
            comm: OVERFLOW.into(),
            port: 0,
            peer: [OVERFLOW.into(), OVERFLOW.into()],
            is_error: false,
            is_slow: false,
        }
    }

    /// The histogram's (fewer) labels.
    fn latency(&self) -> LatencyLabels {
        LatencyLabels {
            protocol: self.protocol.clone(),
            comm: self.comm.clone(),
            port: self.port,
        }
    }
}

/// Server series: a server is its process and port; its series are told
/// apart by request and response content (`[request, response]`).
#[derive(Debug)]
pub(super) enum Entity {}

impl Kind for Entity {
    type Peer = [u32; 2];
    type Labels = EntityLabels;
    const FAMILIES: [Name; 5] = [
        ("kindling_entity_request", "Requests a server answered"),
        (
            "kindling_entity_request_duration_nanoseconds",
            "Total time servers took to answer, nanoseconds",
        ),
        (
            "kindling_entity_request_send_bytes",
            "Bytes servers sent in responses",
        ),
        (
            "kindling_entity_request_receive_bytes",
            "Bytes servers received in requests",
        ),
        (
            "kindling_entity_request_duration_seconds",
            "Distribution of server answer times, seconds",
        ),
    ];
    const END_PREFIXES: &'static [&'static str] = &[""];

    fn peer(x: &Exchange, values: &mut Values) -> [u32; 2] {
        let request = values.request_content(x);
        [request, values.intern(response_content(x))]
    }

    fn peer_labels(contents: [u32; 2], values: &Values) -> [String; 2] {
        contents.map(|id| values.get(id).to_owned())
    }

    fn labels(v: LabelValues) -> EntityLabels {
        let [request_content, response_content] = v.peer;
        EntityLabels {
            protocol: v.protocol,
            comm: v.comm,
            port: v.port,
            request_content,
            response_content,
            is_error: v.is_error,
            is_slow: v.is_slow,
        }
    }
}

/// Client → server edge series: told apart by the server's address and
/// the name the client resolved for it (`(address, name)`).
#[derive(Debug)]
pub(super) enum Topology {}

impl Kind for Topology {
    type Peer = (IpAddr, u32);
    type Labels = TopologyLabels;
    const FAMILIES: [Name; 5] = [
        (
            "kindling_topology_request",
            "Requests along a client-server edge",
        ),
        (
            "kindling_topology_request_duration_nanoseconds",
            "Total time clients waited, nanoseconds",
        ),
        (
            "kindling_topology_request_request_bytes",
            "Bytes clients sent in requests",
        ),
        (
            "kindling_topology_request_response_bytes",
            "Bytes clients received in responses",
        ),
        (
            "kindling_topology_request_duration_seconds",
            "Distribution of client wait times, seconds",
        ),
    ];
    const END_PREFIXES: &'static [&'static str] = &["src_", "dst_"];

    fn peer(x: &Exchange, values: &mut Values) -> (IpAddr, u32) {
        let name = x.attributes.get("server.address").unwrap_or_default();
        (x.dst.ip(), values.intern(name))
    }

    fn peer_labels((ip, name): (IpAddr, u32), values: &Values) -> [String; 2] {
        [ip.to_string(), values.get(name).to_owned()]
    }

    fn labels(v: LabelValues) -> TopologyLabels {
        let [dst_ip, dst_name] = v.peer;
        TopologyLabels {
            protocol: v.protocol,
            src_comm: v.comm,
            dst_ip,
            dst_port: v.port,
            dst_name,
            is_error: v.is_error,
            is_slow: v.is_slow,
        }
    }
}

/// Handles on one label set's metrics (they share the registry's values).
#[derive(Clone, Debug)]
pub(super) struct Series {
    requests: Counter,
    duration: Counter,
    send: Counter,
    receive: Counter,
    latency: Histogram,
}

impl Series {
    /// One exchange of `duration_ns` that sent and received these bytes.
    pub(super) fn add(&self, duration_ns: u64, sent: u64, received: u64) {
        self.requests.inc();
        self.duration.inc_by(duration_ns);
        self.send.inc_by(sent);
        self.receive.inc_by(received);
        self.latency.observe(duration_ns as f64 / 1e9);
    }
}

/// The families of one kind (their label sets rendered once).
#[derive(Debug)]
struct Families {
    requests: Family<Rendered, Counter>,
    duration: Family<Rendered, Counter>,
    send: Family<Rendered, Counter>,
    receive: Family<Rendered, Counter>,
    latency: LatencyFamily,
}

/// Every series of one kind, under the series cap.
#[derive(Debug)]
pub(super) struct ExchangeSeries<K: Kind> {
    families: Families,
    cap: Cap<Key<K::Peer>, Series>,
    /// The model's own labels, rendered (`cluster="…",node="…",`): the
    /// counters' label sets start with them.
    prefix: Box<str>,
    /// (label, attribute key) of the identity labels, but those whose
    /// unprefixed name is one of the model's own (an entity's `node` is
    /// the agent's own `node`: one label set cannot hold both).
    identity: Box<[(&'static str, &'static str)]>,
}

impl<K: Kind> ExchangeSeries<K> {
    /// No series yet; at most `max_series` label sets, each after
    /// `prefix`.
    pub(super) fn new(
        max_series: usize,
        (prefix, own): (&str, &[&str]),
        identity: &'static [(&'static str, &'static str)],
    ) -> Self {
        let clashes = |label: &str| K::END_PREFIXES.contains(&"") && own.contains(&label);
        let identity = identity
            .iter()
            .filter(|(label, _)| !clashes(label))
            .copied()
            .collect();
        Self {
            families: Families {
                requests: Family::default(),
                duration: Family::default(),
                send: Family::default(),
                receive: Family::default(),
                latency: latency_family(),
            },
            cap: Cap::new(max_series),
            prefix: prefix.into(),
            identity,
        }
    }

    /// Registers its counter families, whose label sets carry the model's
    /// own labels already, in `counters`, and its histogram in `labelled`
    /// (a registry adding them).
    pub(super) fn register(&self, counters: &mut Registry) {
        let f = &self.families;
        let [requests, duration, send, receive, _] = K::FAMILIES;
        register(counters, requests, f.requests.clone());
        register(counters, duration, f.duration.clone());
        register(counters, send, f.send.clone());
        register(counters, receive, f.receive.clone());
    }

    /// Registers its histogram family in `labelled` (a registry adding the
    /// model's own labels).
    pub(super) fn register_histogram(&self, labelled: &mut Registry) {
        register(labelled, K::FAMILIES[4], self.families.latency.clone());
    }

    /// The series of `x`, found or made under the cap.
    pub(super) fn find(&mut self, x: &Exchange, values: &mut Values) -> Memo {
        let key = Key {
            protocol: x.protocol,
            comm: x.comm,
            port: x.dst.port(),
            error: x.error.is_some(),
            slow: x.slow,
            peer: K::peer(x, values),
            ends: self.end_ids(x, values),
        };
        let (f, prefix, identity) = (&self.families, &*self.prefix, &*self.identity);
        let made = self.cap.admit(key, |key| {
            let ends = key.map_or([NO_IDENTITY; 2], |key| key.ends);
            let prefix = identity_prefix::<K>(prefix, identity, ends, values);
            let v = key.map_or_else(LabelValues::overflow, |key| {
                LabelValues::of::<K>(key, values)
            });
            let latency = v.latency();
            let labels = K::labels(v).render(&prefix);
            Series {
                requests: f.requests.get_or_create(&labels).clone(),
                duration: f.duration.get_or_create(&labels).clone(),
                send: f.send.get_or_create(&labels).clone(),
                receive: f.receive.get_or_create(&labels).clone(),
                latency: f.latency.get_or_create(&latency).clone(),
            }
        });
        match made {
            Admit::Own(series) => Memo {
                series: series.clone(),
                overflow: false,
            },
            Admit::Overflow(series) => Memo {
                series: series.clone(),
                overflow: true,
            },
        }
    }

    /// The interned identity of each end `K` names.
    fn end_ids(&self, x: &Exchange, values: &mut Values) -> [u32; 2] {
        let mut ids = [NO_IDENTITY; 2];
        if self.identity.is_empty() {
            return ids;
        }
        let ends = [&x.resource, &x.peer];
        for (id, end) in ids.iter_mut().zip(ends).take(K::END_PREFIXES.len()) {
            let mut joined = String::new();
            for (i, (_, key)) in self.identity.iter().enumerate() {
                if i > 0 {
                    joined.push(JOIN);
                }
                joined.push_str(end.get(key).map_or("", String::as_str));
            }
            *id = values.intern(&joined);
        }
        ids
    }

    /// Counts an exchange the memo folded into the overflow series.
    pub(super) fn refuse_again(&mut self) {
        self.cap.refuse_again();
    }

    /// Label sets admitted.
    pub(super) fn admitted(&self) -> usize {
        self.cap.admitted()
    }

    /// Exchanges folded into the overflow series.
    pub(super) fn refused(&self) -> u64 {
        self.cap.refused()
    }
}

/// `prefix` and the identity labels of `ends` (all [`OVERFLOW`] for the
/// overflow series, whose `ends` are [`NO_IDENTITY`]), rendered.
fn identity_prefix<K: Kind>(
    prefix: &str,
    identity: &[(&str, &str)],
    ends: [u32; 2],
    values: &Values,
) -> String {
    use std::fmt::Write as _;
    let mut out = prefix.to_owned();
    if identity.is_empty() {
        return out;
    }
    for (end_prefix, id) in K::END_PREFIXES.iter().zip(ends) {
        let joined = if id == NO_IDENTITY {
            OVERFLOW
        } else {
            values.get(id)
        };
        let mut parts = joined.split(JOIN);
        // past the string cap an end's values are one `OVERFLOW`
        let whole = joined.matches(JOIN).count() + 1 != identity.len();
        for (label, _) in identity {
            let value = if whole {
                joined
            } else {
                parts.next().unwrap_or("")
            };
            let _ = write!(out, "{end_prefix}{label}=\"{}\",", escape(value));
        }
    }
    out
}
