//! Decoding raw probe records (the hot path of every consumer), against a
//! baseline that only walks the same records without decoding them.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use kindling_benches::{fixture_records, ring_like, LOOPBACK_KCAP};
use kindling_probe::abi::{self, Event};
use kindling_probe::capture::CaptureReader;

fn decode(c: &mut Criterion) {
    let records = fixture_records();
    let (buf, spans) = ring_like(&records, 64);
    let mut g = c.benchmark_group("decode");
    g.throughput(Throughput::Elements(spans.len() as u64));

    // Baseline: touch each record's header word, no decoding.
    g.bench_function("baseline_walk_records", |b| {
        b.iter(|| {
            let mut sum = 0u64;
            for &(off, len) in &spans {
                sum += u64::from(buf[off]) + len as u64;
            }
            black_box(sum)
        })
    });

    g.bench_function("abi_decode_mixed", |b| {
        b.iter(|| {
            let mut n = 0u64;
            for &(off, len) in &spans {
                match abi::decode(black_box(&buf[off..off + len])) {
                    Ok(Event::Data(d)) => {
                        n += d.payload.len() as u64 + u64::from(d.raw.hdr.pid.get())
                    }
                    Ok(e) => n += u64::from(e.header().pid.get()),
                    Err(_) => n += 1,
                }
            }
            black_box(n)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("capture");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("read_and_decode_fixture", |b| {
        b.iter(|| {
            let mut r = CaptureReader::new(black_box(LOOPBACK_KCAP)).unwrap();
            let mut n = 0u64;
            while let Some(rec) = r.next_record().unwrap() {
                n += u64::from(abi::decode(rec).is_ok());
            }
            black_box(n)
        })
    });
    g.finish();
}

/// `criterion_group!` makes an undocumented public fn; keep it private.
mod group {
    criterion::criterion_group!(benches, super::decode);
}
use group::benches;
criterion_main!(benches);
