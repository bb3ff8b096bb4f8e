//! `/metrics` rendering (issue 13: 10,000 series in ≤ 5 ms): the flow
//! model's OpenMetrics encoding of `ports` servers × 100 request contents,
//! each label set a series in four counter families (requests, duration,
//! bytes each way) plus a latency histogram per server: 25 ports make
//! 10,000 counter series (10,340 sample lines), 100 ports four times that.
//! With the agent's `cluster` and `node` labels as the model's own
//! (`Metrics::with_labels`), and the older way, a text pass adding them
//! after. Baseline in the same run: copying a text of the same size.

use std::hint::black_box;

use criterion::{criterion_main, Criterion};
use kindling_flow::{
    metrics::relabel, Attributes, Comm, Exchange, Metrics, MetricsConfig, ProtocolId, Role,
};
use kindling_proto::AttributeSink;

/// A server exchange on `port` for `path`.
fn exchange(port: u16, path: &str, status: &str) -> Exchange {
    let mut attributes = Attributes::default();
    attributes.put("http.request.method", "GET");
    attributes.put("url.path", path);
    attributes.put("http.response.status_code", status);
    Exchange {
        pid: 1000 + u32::from(port),
        tid: 1,
        comm: Comm::from_raw(*b"server\0\0\0\0\0\0\0\0\0\0"),
        duration_ns: 1_000_000,
        request_bytes: 100,
        response_bytes: 1000,
        attributes,
        ..Exchange::new(
            ProtocolId::Http,
            Role::Server,
            "127.0.0.1:40000".parse().unwrap(),
            format!("127.0.0.1:{port}").parse().unwrap(),
        )
    }
}

fn exposition(c: &mut Criterion) {
    for ports in [25, 100] {
        series(c, ports);
    }
}

fn series(c: &mut Criterion, ports: u16) {
    let labels = [("cluster", "prod-eu"), ("node", "node-1")];
    let mut m = Metrics::new(MetricsConfig::default());
    let mut labelled = Metrics::with_labels(MetricsConfig::default(), &labels);
    for port in 0..ports {
        for path in 0..100 {
            // a path per content: `/p0/a` … (not templated away)
            let x = kindling_flow::Output::Exchange(exchange(
                8000 + port,
                &format!("/p{path}/a"),
                "200",
            ));
            m.observe(&x);
            labelled.observe(&x);
        }
    }
    let text = m.encode();
    let entity = text
        .lines()
        .filter(|l| l.starts_with("kindling_entity_request_total{"))
        .count();
    assert_eq!(
        entity,
        100 * usize::from(ports),
        "label sets in the request family"
    );
    let lines = text.lines().filter(|l| !l.starts_with('#')).count();
    eprintln!("exposition: {lines} sample lines, {} KiB", text.len() >> 10);
    let mut g = c.benchmark_group(format!(
        "exposition_{}_counter_series",
        400 * u32::from(ports)
    ));
    g.sample_size(20);
    g.bench_function("baseline_copy_text", |b| {
        b.iter(|| black_box(black_box(&text).clone()))
    });
    g.bench_function("encode", |b| b.iter(|| black_box(m.encode())));
    g.bench_function("encode_and_relabel", |b| {
        b.iter(|| black_box(relabel(&[&m.encode()], &labels)))
    });
    g.bench_function("encode_with_labels", |b| {
        b.iter(|| black_box(labelled.encode()))
    });
    g.finish();
}

/// `criterion_group!` makes an undocumented public fn; keep it private.
mod group {
    criterion::criterion_group!(benches, super::exposition);
}
use group::benches;
criterion_main!(benches);
