//! A DNS response with 4 answers: Kindling's validating parse plus reading
//! every answer, against hickory-proto's `Message::from_bytes` (which
//! decodes everything into owned values) on the same bytes.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use hickory_proto::op::Message as HickoryMessage;
use hickory_proto::serialize::binary::BinDecodable;
use kindling_proto::dns::{Message, RData};

/// `www.example.test A` answered with a CNAME chain and three addresses,
/// names compressed, plus an EDNS OPT record: the shape of a typical
/// recursive-resolver answer.
fn response() -> Vec<u8> {
    let mut m: Vec<u8> = [0x9d33u16, 0x8180, 1, 4, 0, 1]
        .iter()
        .flat_map(|v| v.to_be_bytes())
        .collect();
    for l in ["www", "example", "test"] {
        m.push(l.len() as u8);
        m.extend(l.as_bytes());
    }
    m.extend([0, 0, 1, 0, 1]);
    // CNAME www.example.test -> edge.example.test (compressed)
    m.extend([0xc0, 12, 0, 5, 0, 1, 0, 0, 0x0e, 0x10, 0, 7, 4]);
    m.extend(b"edge");
    m.extend([0xc0, 16]);
    let edge = 12 + 18 + 4 + 12;
    for last in [10u8, 11, 12] {
        m.extend([
            0xc0, edge as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, last,
        ]);
    }
    m.extend([0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
    m
}

fn dns(c: &mut Criterion) {
    let bytes = response();
    assert_eq!(
        HickoryMessage::from_bytes(&bytes).unwrap().answers().len(),
        4
    );
    assert_eq!(Message::parse(&bytes).unwrap().answers().count(), 4);
    let mut g = c.benchmark_group("dns_response_4_answers");
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function("baseline_hickory_from_bytes", |b| {
        b.iter(|| black_box(HickoryMessage::from_bytes(black_box(&bytes)).unwrap()))
    });
    g.bench_function("kindling_parse_and_read_answers", |b| {
        b.iter(|| {
            let m = Message::parse(black_box(&bytes)).unwrap();
            let mut n = 0u32;
            for r in m.answers() {
                if let RData::A(a) = r.data {
                    n += u32::from(a.octets()[3]);
                }
            }
            black_box((m.header.id(), n))
        })
    });
    g.finish();
}

/// `criterion_group!` makes an undocumented public fn; keep it private.
mod group {
    criterion::criterion_group!(benches, super::dns);
}
use group::benches;
criterion_main!(benches);
