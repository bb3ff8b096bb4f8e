//! The replay pipeline (decode → track → parse → pair) and the metrics
//! model on the captures the kindling-flow tests replay (nginx + curl,
//! redis-server + redis-cli/benchmark, mariadb, dnsmasq + dig, failures,
//! nginx under wrk with pipelining),
//! concatenated: a mixed workload, through the same `Driver` as `kindling
//! replay` (a tick per second of capture time). Baseline in the same run:
//! decoding the same records without the pipeline.

mod common;

use std::hint::black_box;

use common::{decode_only, records};
use criterion::{criterion_main, Criterion, Throughput};
use kindling_flow::{Config, Driver, Metrics, MetricsConfig};
use kindling_probe::abi;

fn run_pipeline(records: &[Vec<u8>]) -> usize {
    let mut d = Driver::replay(Config::default());
    let mut out = Vec::with_capacity(1024);
    for r in records {
        d.push(&abi::decode(black_box(r)).unwrap(), &mut out);
    }
    d.finish(&mut out);
    out.len()
}

fn flow(c: &mut Criterion) {
    let mixed = records(&["http1", "redis", "mysql", "dns", "failures", "wrk"]);
    let mut g = c.benchmark_group("flow");
    g.throughput(Throughput::Elements(mixed.len() as u64));
    g.bench_function("baseline_decode_only", |b| {
        b.iter(|| black_box(decode_only(&mixed)))
    });
    g.bench_function("pipeline_mixed", |b| {
        b.iter(|| black_box(run_pipeline(&mixed)))
    });
    // the metrics model lives as long as the agent: its series exist after
    // the first pass, as in steady state
    let mut m = Metrics::new(MetricsConfig::default());
    g.bench_function("pipeline_and_metrics_mixed", |b| {
        b.iter(|| {
            let mut d = Driver::replay(Config::default());
            let mut out = Vec::with_capacity(1024);
            for r in &mixed {
                d.push(&abi::decode(black_box(r)).unwrap(), &mut out);
                // as `kindling replay -o prometheus` consumes them
                out.iter().for_each(|o| m.observe(o));
                d.reuse(&mut out);
            }
            d.finish(&mut out);
            out.iter().for_each(|o| m.observe(o));
            black_box(m.overflowed())
        })
    });
    // one workload at a time: where the time goes
    for name in ["http1", "redis", "mysql", "dns", "wrk"] {
        let one = records(&[name]);
        g.throughput(Throughput::Elements(one.len() as u64));
        g.bench_function(format!("pipeline_{name}"), |b| {
            b.iter(|| black_box(run_pipeline(&one)))
        });
    }
    g.finish();
}

/// `criterion_group!` makes an undocumented public fn; keep it private.
mod group {
    criterion::criterion_group!(benches, super::flow);
}
use group::benches;
criterion_main!(benches);
