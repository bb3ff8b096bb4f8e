//! RESP: the smallest common command and detection (issue 3: `SET key
//! value` ≤ 100 ns, detection ≤ 20 ns), with a baseline that only finds the
//! command's CRLFs.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use kindling_probe::abi::{self, Direction as Flow, Event};
use kindling_probe::capture::CaptureReader;
use kindling_proto::redis::{Message, Redis, Skipper};
use kindling_proto::{Direction, Follower, Protocol, Status};

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

/// The first reply redis-cli received in the recorded capture: the
/// 172 kB `COMMAND DOCS` reply (nested arrays of ~25k short strings), in
/// the chunks its reads returned.
fn command_docs_reply() -> Vec<Vec<u8>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../kindling-flow/tests/data/redis.kcap"
    );
    let bytes = std::fs::read(path).expect("capture");
    let mut r = CaptureReader::new(&bytes[..]).expect("header");
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut sock = None;
    while let Some(rec) = r.next_record().expect("records") {
        let Ok(Event::Data(d)) = abi::decode(rec) else {
            continue;
        };
        let this = d.raw.sk.sock.get();
        if d.raw.hdr.comm() != b"redis-cli"
            || d.direction() != Flow::Ingress
            || sock.is_some_and(|s| s != this)
        {
            continue;
        }
        sock = Some(this);
        chunks.push(d.payload.to_vec());
        if chunks.iter().map(Vec::len).sum::<usize>() >= 172_298 {
            break;
        }
    }
    chunks
}

/// Walks a large reply without keeping it, as the pipeline does for
/// replies too large to buffer; baseline: finding its CRLFs.
fn skipper(c: &mut Criterion) {
    let chunks = command_docs_reply();
    let total: usize = chunks.iter().map(Vec::len).sum();
    let mut g = c.benchmark_group("resp_command_docs_reply");
    g.throughput(Throughput::Bytes(total as u64));
    g.bench_function("baseline_count_crlf", |b| {
        b.iter(|| {
            let crlf = |c: &Vec<u8>| c.windows(2).filter(|w| w == b"\r\n").count();
            black_box(&chunks).iter().map(crlf).sum::<usize>()
        })
    });
    g.bench_function("kindling_skipper", |b| {
        b.iter(|| {
            let mut s = Skipper::new();
            for chunk in black_box(&chunks) {
                if let Some(end) = s.feed(chunk).expect("valid RESP") {
                    return end;
                }
            }
            unreachable!("the reply ends in its chunks")
        })
    });
    g.finish();
}

/// `criterion_group!` makes an undocumented public fn; keep it private.
mod group {
    criterion::criterion_group!(benches, super::resp, super::skipper);
}
use group::benches;
criterion_main!(benches);
