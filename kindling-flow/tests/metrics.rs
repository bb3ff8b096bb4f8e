//! The Prometheus model over the recorded captures: Kindling's metric names,
//! the series the clients' requests must produce, and the cardinality caps.

mod common;

use common::replay_with;
use kindling_flow::{Config, Metrics, MetricsConfig};

fn metrics_of(names: &[&str], config: MetricsConfig) -> Metrics {
    let mut m = Metrics::new(config);
    for name in names {
        let (out, stats) = replay_with(
            name,
            Config {
                rtt_records: true,
                ..Config::default()
            },
        );
        for o in &out {
            m.observe(o);
        }
        m.update_stats(&stats);
    }
    m
}

fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn series_of_the_recorded_workloads() {
    let m = metrics_of(
        &["http1", "redis", "mysql", "dns", "failures"],
        MetricsConfig::default(),
    );
    let text = m.encode();
    let entity = |labels: &str| value(&text, &format!("kindling_entity_request_total{{{labels}}}"));
    assert_eq!(
        entity(
            r#"protocol="http",comm="nginx",port="18181",request_content="GET /missing",response_content="404",is_error="true",is_slow="false""#
        ),
        Some(1.0)
    );
    assert_eq!(
        entity(
            r#"protocol="http",comm="nginx",port="18181",request_content="GET /index.html",response_content="200",is_error="false",is_slow="false""#
        ),
        Some(2.0)
    );
    // SQL becomes operation + table
    assert_eq!(
        entity(
            r#"protocol="mysql",comm="mariadbd",port="13306",request_content="SELECT no_such_table",response_content="1146",is_error="true",is_slow="false""#
        ),
        Some(1.0),
        "{text}"
    );
    // the slow server of the failure capture
    assert!(text.contains(
        r#"request_content="GET /slow",response_content="200",is_error="false",is_slow="true""#
    ));
    // topology: curl → nginx, every request of the capture
    let curl: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with("kindling_topology_request_total{") && l.contains(r#"src_comm="curl""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(curl, 8.0, "curl made 8 requests");
    // DNS monitor: per asking process and domain, with the answer's code
    assert_eq!(
        value(
            &text,
            r#"kindling_dns_request_total{comm="isc-net-0000",domain="nope.example.test",rcode="NXDOMAIN"}"#
        ),
        Some(1.0)
    );
    // TCP: the refused connect, the handshakes
    assert_eq!(
        value(
            &text,
            r#"kindling_tcp_connect_failure_total{src_ip="127.0.0.1",dst_ip="127.0.0.1",dst_port="18301"}"#
        ),
        Some(1.0)
    );
    assert!(text.contains("kindling_tcp_connect_duration_nanoseconds_total{"));
    // the reset mid-response: received by the client
    assert!(
        text.lines()
            .any(|l| l.starts_with("kindling_tcp_reset_total{")
                && l.contains(r#"dst_port="18303",direction="received""#)),
        "{text}"
    );
    assert!(text.contains("kindling_tcp_srtt_microseconds{"));
    assert!(text.contains("kindling_entity_request_duration_seconds_bucket{"));
    assert_eq!(value(&text, "kindling_metrics_overflow_total"), Some(0.0));
    // sockets closed with data queued: drops, but not packet loss
    assert!(value(&text, r#"kindling_tcp_drop_total{reason="QUEUE_PURGE"}"#).unwrap() > 0.0);
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("kindling_tcp_packet_loss_total{")),
        "no drop in these captures means loss:\n{text}"
    );
    assert!(value(&text, "kindling_flow_events_total").unwrap() > 0.0);
}

#[test]
fn caps_fold_extra_series_into_overflow() {
    let config = MetricsConfig {
        max_series: 3,
        max_request_contents: 2,
        ..MetricsConfig::default()
    };
    let m = metrics_of(&["http1", "redis"], config);
    let text = m.encode();
    let entity_series = text
        .lines()
        .filter(|l| l.starts_with("kindling_entity_request_total{"))
        .count();
    assert!(entity_series <= 3 + 1, "{entity_series} series:\n{text}");
    assert!(m.overflowed() > 0);
    assert!(text.contains(r#"request_content="__other__""#) || text.contains("__overflow__"));
    assert_eq!(
        value(&text, "kindling_metrics_overflow_total"),
        Some(m.overflowed() as f64)
    );
}

/// An agent serving metrics alone asks for the essential attributes only:
/// every recorded workload must give the very same series, and fewer
/// attributes.
#[test]
fn essential_attributes_give_the_same_metrics() {
    let names = ["http1", "redis", "mysql", "dns", "failures", "wrk"];
    let run = |detail: kindling_flow::Detail| {
        let mut m = Metrics::new(MetricsConfig::default());
        let mut attributes = 0;
        for name in names {
            let (out, stats) = replay_with(
                name,
                Config {
                    detail,
                    ..Config::default()
                },
            );
            for o in &out {
                if let kindling_flow::Output::Exchange(x) = o {
                    attributes += x.attributes.len();
                }
                m.observe(o);
            }
            m.update_stats(&stats);
        }
        // (series come out in hash order: compare them sorted)
        let mut lines: Vec<String> = m.encode().lines().map(str::to_owned).collect();
        lines.sort();
        (lines, attributes)
    };
    let (full, full_attributes) = run(kindling_flow::Detail::Full);
    let (essential, essential_attributes) = run(kindling_flow::Detail::Essential);
    let differ: Vec<_> = essential
        .iter()
        .zip(&full)
        .filter(|(e, f)| e != f)
        .take(5)
        .collect();
    assert!(differ.is_empty(), "{differ:#?}");
    assert_eq!(essential.len(), full.len());
    assert!(
        essential_attributes * 2 < full_attributes,
        "{essential_attributes} attributes, against {full_attributes}"
    );
}

/// Label values from traffic may hold quotes, backslashes and newlines (a
/// path, a process name, a DNS name): the exposition escapes them, and
/// Prometheus' own parser (`promtool check metrics`) reads it (its lints,
/// such as counters' HELP names in the OpenMetrics style, are no parse
/// errors).
#[test]
fn hostile_label_values_are_escaped() {
    use kindling_flow::{Attributes, Comm, Exchange, Output, ProtocolId, Role};
    use kindling_proto::AttributeSink;

    let mut m = Metrics::with_labels(MetricsConfig::default(), &[("node", "n\"1")]);
    for (role, protocol, comm) in [
        (
            Role::Server,
            ProtocolId::Http,
            *b"we\"b\\srv\0\0\0\0\0\0\0\0",
        ),
        (
            Role::Client,
            ProtocolId::Http,
            *b"cli\"ent\0\0\0\0\0\0\0\0\0",
        ),
        (Role::Client, ProtocolId::Dns, *b"res\\olver\0\0\0\0\0\0\0"),
    ] {
        let mut attributes = Attributes::default();
        if protocol == ProtocolId::Dns {
            attributes.put("dns.question.name", "a\"b\\c\nd.example");
            attributes.put("dns.question.type", "A");
            attributes.put("dns.response.code", "NOERROR");
        } else {
            attributes.put("http.request.method", "GET");
            attributes.put("url.path", "/q\"uote\\back\nslash");
            attributes.put("server.address", "ho\"st");
            attributes.put("http.response.status_code", "200");
        }
        m.observe(&Output::Exchange(Exchange {
            pid: 1,
            tid: 1,
            comm: Comm::from_raw(comm),
            duration_ns: 1000,
            request_bytes: 1,
            response_bytes: 1,
            attributes,
            ..Exchange::new(
                protocol,
                role,
                "127.0.0.1:40000".parse().unwrap(),
                "127.0.0.1:8080".parse().unwrap(),
            )
        }));
    }
    let text = m.encode();
    assert!(text.contains(r#"comm="we\"b\\srv""#), "{text}");
    assert!(
        text.contains(r#"request_content="GET /q\"uote\\back\nslash""#),
        "{text}"
    );
    assert!(text.contains(r#"domain="a\"b\\c\nd.example""#), "{text}");
    assert!(text.contains(r#"node="n\"1""#), "{text}");
    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .output_with_stdin(text.as_bytes());
    match promtool {
        Some(out) => {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!said.contains("parsing error"), "promtool: {said}\n{text}");
            assert!(said.contains("no help text"), "promtool linted it: {said}");
        }
        None => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "CI needs promtool"
            );
            eprintln!("promtool not installed: the exposition was not checked by it");
        }
    }
}

/// Running a command with `input` on its standard input.
trait WithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> Option<std::process::Output>;
}

impl WithStdin for std::process::Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> Option<std::process::Output> {
        use std::io::Write;
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .ok()?;
        child.stdin.take()?.write_all(input).ok()?;
        child.wait_with_output().ok()
    }
}

/// Identity labels (as the Kubernetes enricher's) come from each end's
/// attributes: entity series name the server, topology series both ends,
/// and exchanges alike but for their peer's identity are told apart (the
/// memo included).
#[test]
fn identity_labels_name_both_ends() {
    const IDENTITY: &[(&str, &str)] =
        &[("namespace", "k8s.namespace.name"), ("pod", "k8s.pod.name")];
    let (out, _) = replay_with("http1", Config::default());
    let mut m = Metrics::new(MetricsConfig {
        identity: IDENTITY,
        ..MetricsConfig::default()
    });
    let mut clients = 0;
    for (i, o) in out.into_iter().enumerate() {
        let kindling_flow::Output::Exchange(mut x) = o else {
            continue;
        };
        x.resource.insert("k8s.namespace.name", "shop".into());
        x.resource.insert("k8s.pod.name", "me".into());
        if x.role == kindling_flow::Role::Client {
            clients += 1;
            // the same request to two different peers, alternately
            let peer = if i % 2 == 0 { "web-a" } else { "web-b" };
            x.peer.insert("k8s.namespace.name", "shop".into());
            x.peer.insert("k8s.pod.name", peer.into());
        }
        m.observe(&kindling_flow::Output::Exchange(x));
    }
    assert!(clients >= 2, "the capture has {clients} client exchanges");
    let text = m.encode();
    let topology: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("kindling_topology_request_total{"))
        .collect();
    assert!(
        topology.iter().any(|l| l
            .contains(r#"src_namespace="shop",src_pod="me",dst_namespace="shop",dst_pod="web-a""#)),
        "{text}"
    );
    assert!(
        topology.iter().any(|l| l.contains(r#"dst_pod="web-b""#)),
        "{text}"
    );
    let entity: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("kindling_entity_request_total{"))
        .collect();
    assert!(!entity.is_empty());
    for l in entity {
        assert!(
            l.starts_with(r#"kindling_entity_request_total{namespace="shop",pod="me",protocol="#),
            "{l}"
        );
        assert!(!l.contains("dst_"), "{l}");
    }
}
