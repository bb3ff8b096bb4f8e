//! `kindling dump`'s cost: the mixed captures the flow bench replays
//! (nginx + curl, redis, mariadb, dnsmasq + dig, failures, nginx under
//! wrk), decoded and drawn as packets into a pcapng file in memory.
//! Baseline in the same run: decoding the same records alone.

mod common;

use std::hint::black_box;

use common::{decode_only, records};
use criterion::{criterion_main, Criterion, Throughput};
use kindling_flow::pcapng::{PcapngWriter, Synthesizer};
use kindling_probe::abi;

fn pcapng(c: &mut Criterion) {
    let mixed = records(&["http1", "redis", "mysql", "dns", "failures", "wrk"]);
    let mut g = c.benchmark_group("pcapng");
    g.throughput(Throughput::Elements(mixed.len() as u64));
    g.bench_function("baseline_decode_only", |b| {
        b.iter(|| black_box(decode_only(&mixed)))
    });
    g.bench_function("dump_mixed", |b| {
        b.iter(|| {
            let mut synth = Synthesizer::new(0);
            let mut file = PcapngWriter::new(Vec::with_capacity(4 << 20)).unwrap();
            let mut packets = Vec::new();
            for r in &mixed {
                synth.push(&abi::decode(black_box(r)).unwrap(), &mut packets);
                for p in packets.drain(..) {
                    file.write(&p).unwrap();
                }
            }
            black_box(file.into_inner().unwrap().len())
        })
    });
    g.finish();
}

/// `criterion_group!` makes an undocumented public fn; keep it private.
mod group {
    criterion::criterion_group!(benches, super::pcapng);
}
use group::benches;
criterion_main!(benches);
