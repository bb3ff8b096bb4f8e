//! HTTP/1 request heads: Kindling's parser (head + framing + session
//! bookkeeping) against httparse alone on the same bytes, plus detection.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use kindling_proto::http1::{Http1, Message};
use kindling_proto::{Direction, Protocol, Status};

/// A browser-like request head: ~700 bytes, 10 header lines.
const HEAD: &[u8] = b"GET /api/v2/orders/1234567/items?expand=product&limit=50 HTTP/1.1\r\n\
Host: shop.example.internal:8443\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36\r\n\
Accept: application/json, text/plain, */*\r\n\
Accept-Language: en-GB,en;q=0.9,de;q=0.8\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Referer: https://shop.example.internal:8443/orders/1234567?tab=items&sort=price\r\n\
Cookie: session=6f1c2d3e4b5a69788796a5b4c3d2e1f0; theme=dark; consent=analytics%2Cmarketing; region=eu-west\r\n\
Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NSIsInJvbGUiOiJjdXN0b21lciJ9.c2lnbmF0dXJl\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
Connection: keep-alive\r\n\r\n";

fn http1(c: &mut Criterion) {
    let mut g = c.benchmark_group("http1_request_head");
    g.throughput(Throughput::Bytes(HEAD.len() as u64));
    g.bench_function("baseline_httparse", |b| {
        b.iter(|| {
            let mut headers = [httparse::EMPTY_HEADER; 16];
            let mut req = httparse::Request::new(&mut headers);
            let n = req.parse(black_box(HEAD)).unwrap();
            black_box((n, req.method, req.path));
        })
    });
    g.bench_function("kindling_http1_parse", |b| {
        b.iter(|| {
            let mut session = Default::default();
            match Http1::parse(&mut session, Direction::Request, black_box(HEAD)) {
                Ok(Status::Complete((Message::Request(r), used))) => {
                    black_box((used, r.method, r.target))
                }
                _ => unreachable!(),
            };
        })
    });
    g.finish();

    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(1));
    g.bench_function("http1_request", |b| {
        b.iter(|| Http1::detect(black_box(HEAD), Direction::Request))
    });
    g.bench_function("http1_response", |b| {
        b.iter(|| Http1::detect(black_box(b"HTTP/1.1 200 OK\r\n"), Direction::Response))
    });
    g.finish();
}

/// `criterion_group!` makes an undocumented public fn; keep it private.
mod group {
    criterion::criterion_group!(benches, super::http1);
}
use group::benches;
criterion_main!(benches);
