//! RESP: the smallest common command and detection (issue 3: `SET key
//! value` ≤ 100 ns, detection ≤ 20 ns), with a baseline that only finds the
//! command's CRLFs.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use kindling_proto::redis::{Message, Redis};
use kindling_proto::{Direction, Protocol, Status};

const SET: &[u8] = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";

fn resp(c: &mut Criterion) {
    let mut g = c.benchmark_group("resp_set_key_value");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_count_crlf", |b| {
        b.iter(|| black_box(SET).windows(2).filter(|w| w == b"\r\n").count())
    });
    g.bench_function("kindling_redis_parse", |b| {
        b.iter(|| {
            let mut s = Default::default();
            match Redis::parse(&mut s, Direction::Request, black_box(SET)) {
                Ok(Status::Complete((Message::Command(c), used))) => black_box((c.key, used)),
                _ => unreachable!(),
            };
        })
    });
    g.bench_function("detect_request", |b| {
        b.iter(|| Redis::detect(black_box(SET), Direction::Request))
    });
    g.bench_function("detect_response", |b| {
        b.iter(|| Redis::detect(black_box(b"+OK\r\n"), Direction::Response))
    });
    g.finish();
}

/// `criterion_group!` makes an undocumented public fn; keep it private.
mod group {
    criterion::criterion_group!(benches, super::resp);
}
use group::benches;
criterion_main!(benches);
