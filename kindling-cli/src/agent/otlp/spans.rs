//! Exchanges as OTLP spans: a client or server span per exchange, with the
//! attributes the JSON output carries, the phases as span events, and an
//! error status when the exchange failed.

use std::collections::BTreeMap;

use kindling_flow::{ErrorKind, Exchange, ProtocolId, Role};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{status::StatusCode, Span, Status};

use super::{int_kv, string_kv};

/// Who a span belongs to: the traced process, and what enrichers said of
/// it. Spans of one process share one OTLP resource.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Owner {
    /// Process id.
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// Resource attributes from enrichers (`container.id`, …).
    pub resource: BTreeMap<&'static str, String>,
}

/// A span and its owner, as queued for export.
#[derive(Debug)]
pub struct Item {
    /// Whose span.
    pub owner: Owner,
    /// The span.
    pub span: Span,
}

/// Attributes whose values are integers in OpenTelemetry's conventions.
const INTEGER_KEYS: [&str; 7] = [
    "http.response.status_code",
    "http.request.body.size",
    "http.response.body.size",
    "db.response.returned_rows",
    "db.response.affected_rows",
    "server.port",
    "client.port",
];

/// Unique enough ids without a random-number crate: splitmix64 over a
/// seed from the kernel.
#[derive(Debug)]
pub struct Ids(u64);

impl Ids {
    /// Seeded from `/dev/urandom` (the clock and pid if it cannot be read).
    pub fn new() -> Self {
        let mut seed = [0u8; 8];
        let read = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed));
        let seed = match read {
            Ok(()) => u64::from_le_bytes(seed),
            Err(_) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                now ^ u64::from(std::process::id()) << 32
            }
        };
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        // zero is the invalid id
        (z ^ (z >> 31)).max(1)
    }

    fn trace_id(&mut self) -> Vec<u8> {
        let mut id = self.next().to_be_bytes().to_vec();
        id.extend_from_slice(&self.next().to_be_bytes());
        id
    }

    fn span_id(&mut self) -> Vec<u8> {
        self.next().to_be_bytes().to_vec()
    }
}

/// The span of an answered or failed exchange. Each is a trace of its own:
/// the kernel does not see the caller's trace context to join.
pub fn span(x: &Exchange, ids: &mut Ids) -> Item {
    let start = u64::try_from(x.ts).unwrap_or(0);
    let end = start.saturating_add(x.duration_ns);
    let mut attributes = Vec::with_capacity(x.attributes.len() + 12);
    for (k, v) in x.attributes.iter() {
        attributes.push(typed_kv(k, v));
    }
    let (peer, local) = match x.role {
        Role::Server => (x.src, x.dst),
        Role::Client => (x.dst, x.src),
    };
    if !x.attributes.contains_key("server.address") {
        attributes.push(string_kv("server.address", &x.dst.ip().to_string()));
    }
    attributes.push(int_kv("server.port", i64::from(x.dst.port())));
    attributes.push(string_kv("client.address", &x.src.ip().to_string()));
    attributes.push(int_kv("client.port", i64::from(x.src.port())));
    attributes.push(string_kv("network.peer.address", &peer.ip().to_string()));
    attributes.push(int_kv("network.peer.port", i64::from(peer.port())));
    attributes.push(string_kv("network.local.address", &local.ip().to_string()));
    attributes.push(string_kv("network.transport", x.transport));
    attributes.push(string_kv("kindling.protocol", x.protocol.as_str()));
    attributes.push(int_kv("kindling.request.bytes", clamp(x.request_bytes)));
    attributes.push(int_kv("kindling.response.bytes", clamp(x.response_bytes)));
    attributes.push(int_kv("thread.id", i64::from(x.tid)));
    // the other end's names (Kubernetes): no convention has keys for a
    // peer's pod, so they are the resource keys under `kindling.peer.`
    for (k, v) in &x.peer {
        attributes.push(string_kv(&format!("kindling.peer.{k}"), v));
    }
    for (flag, key) in [
        (x.slow, "kindling.slow"),
        (x.partial, "kindling.partial"),
        (x.cancelled, "kindling.cancelled"),
    ] {
        if flag {
            attributes.push(KeyValue {
                key: key.to_owned(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::BoolValue(true)),
                }),
                ..Default::default()
            });
        }
    }
    if let Some(n) = x.network {
        attributes.push(int_kv("kindling.network.srtt_us", i64::from(n.srtt_us)));
        attributes.push(int_kv(
            "kindling.network.retransmits",
            i64::from(n.retransmits),
        ));
    }
    // where the packet tracer saw the connection's packet die
    if let Some(c) = &x.drop_cause {
        attributes.push(string_kv("kindling.network.drop.reason", &c.reason));
        if let Some(device) = &c.device {
            attributes.push(string_kv("kindling.network.drop.device", device));
        }
        attributes.push(int_kv("kindling.network.drop.netns", i64::from(c.netns)));
        if let Some(rule) = &c.rule {
            attributes.push(string_kv("kindling.network.drop.rule", rule));
        }
    }
    let status = match x.error {
        Some(e) => {
            attributes.push(string_kv("error.type", e.as_str()));
            // a server that answered 4xx did its job: OpenTelemetry leaves
            // such server spans unset
            let server_fine = x.role == Role::Server && e == ErrorKind::ClientError;
            (!server_fine).then(|| Status {
                code: StatusCode::Error as i32,
                message: e.as_str().to_owned(),
            })
        }
        None => None,
    };
    Item {
        owner: Owner {
            pid: x.pid,
            comm: x.comm.to_string(),
            resource: x.resource.clone(),
        },
        span: Span {
            trace_id: ids.trace_id(),
            span_id: ids.span_id(),
            name: name(x),
            kind: match x.role {
                Role::Server => SpanKind::Server,
                Role::Client => SpanKind::Client,
            } as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: end,
            attributes,
            events: phase_events(x, start),
            status,
            ..Default::default()
        },
    }
}

/// The phases, each an event at its start with its duration.
fn phase_events(x: &Exchange, start: u64) -> Vec<Event> {
    let p = &x.phases;
    let mut events = Vec::with_capacity(4);
    let mut at = start;
    let phases = [
        ("connect", p.connect),
        ("send", Some(p.send)),
        ("wait", Some(p.wait)),
        ("download", Some(p.download)),
    ];
    for (phase, ns) in phases {
        let Some(ns) = ns else { continue };
        events.push(Event {
            time_unix_nano: at,
            name: phase.to_owned(),
            attributes: vec![int_kv("kindling.phase.duration_ns", clamp(ns))],
            ..Default::default()
        });
        at = at.saturating_add(ns);
    }
    events
}

/// A low-cardinality span name in OpenTelemetry's manner: `GET /users/{id}`,
/// `SELECT orders`, `GET` (Redis), `DNS A`.
fn name(x: &Exchange) -> String {
    let a = |k: &str| x.attributes.get(k);
    let joined = |first: Option<&str>, second: Option<&str>| match (first, second) {
        (Some(f), Some(s)) if !s.is_empty() => format!("{f} {s}"),
        (Some(f), _) => f.to_owned(),
        (None, _) => x.protocol.as_str().to_owned(),
    };
    match x.protocol {
        ProtocolId::Http => joined(
            a("http.request.method"),
            a("url.path")
                .map(kindling_flow::metrics::template_path)
                .as_deref(),
        ),
        ProtocolId::MySql | ProtocolId::Redis => {
            joined(a("db.operation.name"), a("db.collection.name"))
        }
        ProtocolId::Dns => joined(Some("DNS"), a("dns.question.type")),
        _ => format!("connect {}", x.dst),
    }
}

/// An attribute typed as OpenTelemetry's conventions want it.
fn typed_kv(key: &str, value: &str) -> KeyValue {
    if INTEGER_KEYS.contains(&key) {
        if let Ok(n) = value.parse::<i64>() {
            return int_kv(key, n);
        }
    }
    string_kv(key, value)
}

fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kindling_flow::{Attributes, Comm, Phases};
    use kindling_proto::AttributeSink;

    fn exchange(role: Role, error: Option<ErrorKind>) -> Exchange {
        let mut attributes = Attributes::default();
        attributes.put("http.request.method", "GET");
        attributes.put("url.path", "/users/42");
        attributes.put("http.response.status_code", "404");
        Exchange {
            pid: 7,
            tid: 8,
            comm: Comm::from_raw(*b"curl\0\0\0\0\0\0\0\0\0\0\0\0"),
            ts: 1_000,
            duration_ns: 60,
            phases: Phases {
                connect: Some(10),
                send: 5,
                wait: 40,
                download: 5,
            },
            request_bytes: 100,
            response_bytes: 200,
            error,
            attributes,
            ..Exchange::new(
                ProtocolId::Http,
                role,
                "127.0.0.1:40000".parse().unwrap(),
                "127.0.0.1:8080".parse().unwrap(),
            )
        }
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
    }

    #[test]
    fn a_client_exchange_becomes_a_client_span_with_its_phases() {
        let mut ids = Ids::new();
        let item = span(
            &exchange(Role::Client, Some(ErrorKind::ClientError)),
            &mut ids,
        );
        let s = &item.span;
        assert_eq!(s.name, "GET /users/{id}");
        assert_eq!(s.kind, SpanKind::Client as i32);
        assert_eq!(
            (s.start_time_unix_nano, s.end_time_unix_nano),
            (1_000, 1_060)
        );
        assert_eq!(s.trace_id.len(), 16);
        assert_eq!(s.span_id.len(), 8);
        assert_eq!(
            attr(s, "http.response.status_code"),
            Some(&any_value::Value::IntValue(404))
        );
        assert_eq!(
            attr(s, "url.path"),
            Some(&any_value::Value::StringValue("/users/42".into()))
        );
        assert_eq!(
            attr(s, "error.type"),
            Some(&any_value::Value::StringValue("client_error".into()))
        );
        assert_eq!(s.status.as_ref().unwrap().code, StatusCode::Error as i32);
        let events: Vec<(&str, u64)> = s
            .events
            .iter()
            .map(|e| (e.name.as_str(), e.time_unix_nano))
            .collect();
        assert_eq!(
            events,
            [
                ("connect", 1_000),
                ("send", 1_010),
                ("wait", 1_015),
                ("download", 1_055)
            ]
        );
        assert_eq!(item.owner.comm, "curl");
        assert_eq!(attr(s, "kindling.peer.k8s.pod.name"), None);
        let mut named = exchange(Role::Client, None);
        named.peer.insert("k8s.pod.name", "redis-0".into());
        assert_eq!(
            attr(&span(&named, &mut ids).span, "kindling.peer.k8s.pod.name"),
            Some(&any_value::Value::StringValue("redis-0".into()))
        );
        let other = span(&exchange(Role::Client, None), &mut ids);
        assert_ne!(other.span.trace_id, s.trace_id);
        assert!(other.span.status.is_none());
        assert_eq!(attr(&other.span, "kindling.network.drop.reason"), None);
    }

    #[test]
    fn a_traced_drop_behind_retransmits_is_named_on_the_span() {
        let mut x = exchange(Role::Client, None);
        x.drop_cause = Some(Box::new(kindling_flow::DropCause {
            reason: "NETFILTER_DROP".into(),
            device: Some("br0".into()),
            netns: 4_026_532_369,
            rule: Some("inet filter forward handle 4: tcp dport 8081 drop".into()),
            ts: 1_005,
            trace_id: 20,
            drops: 1,
        }));
        let s = span(&x, &mut Ids::new()).span;
        let text = |v: &str| Some(any_value::Value::StringValue(v.into()));
        assert_eq!(
            attr(&s, "kindling.network.drop.reason").cloned(),
            text("NETFILTER_DROP")
        );
        assert_eq!(
            attr(&s, "kindling.network.drop.device").cloned(),
            text("br0")
        );
        assert_eq!(
            attr(&s, "kindling.network.drop.netns"),
            Some(&any_value::Value::IntValue(4_026_532_369))
        );
        assert!(attr(&s, "kindling.network.drop.rule").is_some());
    }

    #[test]
    fn a_server_answering_4xx_is_no_error_but_5xx_is() {
        let mut ids = Ids::new();
        let fine = span(
            &exchange(Role::Server, Some(ErrorKind::ClientError)),
            &mut ids,
        );
        assert_eq!(fine.span.kind, SpanKind::Server as i32);
        assert!(fine.span.status.is_none());
        let failed = span(
            &exchange(Role::Server, Some(ErrorKind::ServerError)),
            &mut ids,
        );
        assert_eq!(failed.span.status.unwrap().code, StatusCode::Error as i32);
    }
}
