//! MySQL COM_QUERY packet parse (issue 3: ≤ 100 ns) and detection, with a
//! baseline that only reads the packet header.

use std::hint::black_box;

use criterion::{criterion_main, Criterion, Throughput};
use kindling_proto::mysql::{Command, Message, MySql, Session};
use kindling_proto::{Direction, Protocol, Status};

const QUERY: &[u8] = b"\x2e\x00\x00\x00\x03SELECT id, name FROM users WHERE name = 'ann'";

fn mysql(c: &mut Criterion) {
    let mut g = c.benchmark_group("mysql_com_query");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_read_header", |b| {
        b.iter(|| {
            let h = black_box(QUERY);
            black_box(usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16)
        })
    });
    g.bench_function("kindling_mysql_parse", |b| {
        b.iter(|| {
            let mut s = Session::in_command_phase();
            match MySql::parse(&mut s, Direction::Request, black_box(QUERY)) {
                Ok(Status::Complete((Message::Command(Command::Query(q)), used))) => {
                    black_box((q.len(), used))
                }
                _ => unreachable!(),
            };
        })
    });
    g.bench_function("detect_request", |b| {
        b.iter(|| MySql::detect(black_box(QUERY), Direction::Request))
    });
    g.finish();
}

/// `criterion_group!` makes an undocumented public fn; keep it private.
mod group {
    criterion::criterion_group!(benches, super::mysql);
}
use group::benches;
criterion_main!(benches);
