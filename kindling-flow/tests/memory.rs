//! Memory bounds: table state per idle connection, measured with a
//! counting allocator over 100,000 connections that each served one
//! exchange and went idle (the bar: ≤ 256 bytes each, so 100,000 fit in
//! 64 MiB with room for the rest).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use kindling_flow::{Config, Pipeline};
use kindling_probe::abi::{self, kind, RawConn, RawData};
use zerocopy::byteorder::native_endian::{I64, U16, U64};
use zerocopy::{FromBytes, IntoBytes};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const CONNECTIONS: u32 = 100_000;

/// Records of one server connection: accept, a request, its response.
fn connection(templates: &(RawConn, RawData), i: u32) -> [Vec<u8>; 3] {
    let (accept, data) = templates;
    let sock = 0xffff_8880_0000_0000 + u64::from(i) * 2048;
    let ts = 1_000_000_000 + u64::from(i) * 1000;
    let mut a = *accept;
    a.sk.sock = U64::new(sock);
    a.sk.dport = U16::new((i % 60_000) as u16 + 1024);
    a.sk.daddr[..4].copy_from_slice(&(0x0a00_0000 + i / 60_000).to_be_bytes());
    a.ret = I64::new(7);
    a.hdr.ts_ns = U64::new(ts);
    let data_record = |payload: &[u8], direction: u8, at: u64| {
        let mut d = *data;
        d.hdr.pid = a.hdr.pid;
        d.hdr.tid = a.hdr.tid;
        d.sk = a.sk;
        d.direction = direction;
        d.hdr.ts_ns = U64::new(at);
        d.ts_enter_ns = U64::new(at);
        common::data_record(&d, payload)
    };
    [
        a.as_bytes().to_vec(),
        data_record(b"GET /health HTTP/1.1\r\nHost: svc\r\n\r\n", 1, ts + 10),
        data_record(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0, ts + 20),
    ]
}

/// Resident set size of this process, from `/proc/self/statm`.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// An accept and a data record of a real capture, to stamp connections from.
fn templates() -> (RawConn, RawData) {
    let (records, _) = common::records("http1");
    let accept = records
        .iter()
        .find_map(|r| match abi::decode(r) {
            Ok(abi::Event::Conn(c)) if c.raw.hdr.kind.get() == kind::ACCEPT => Some(*c.raw),
            _ => None,
        })
        .unwrap();
    let (data, _) = records
        .iter()
        .find_map(|r| {
            RawData::read_from_prefix(r)
                .ok()
                .filter(|_| matches!(abi::decode(r), Ok(abi::Event::Data(_))))
        })
        .unwrap();
    (accept, data)
}

#[test]
fn idle_connections_cost_at_most_256_bytes_each() {
    let templates = templates();
    let mut pipeline = Pipeline::new(Config::default());
    let mut out = Vec::new();
    let rss_before = resident_bytes();
    let before = LIVE.load(Ordering::Relaxed);
    let mut exchanges = 0;
    for i in 0..CONNECTIONS {
        for r in connection(&templates, i) {
            pipeline.push(&abi::decode(&r).unwrap(), &mut out);
        }
        exchanges += out.len();
        out.clear();
    }
    let used = LIVE.load(Ordering::Relaxed) - before;
    let rss = resident_bytes().saturating_sub(rss_before);
    eprintln!("resident memory grew by {} MiB", rss >> 20);
    assert!(rss < 64 << 20, "100,000 connections within 64 MiB resident");
    let per = used as f64 / f64::from(CONNECTIONS);
    eprintln!(
        "{CONNECTIONS} idle connections: {used} bytes live, {per:.0} per connection; tables {:?}; {:?}",
        pipeline.table_capacities(),
        pipeline.stats()
    );
    assert_eq!(exchanges, CONNECTIONS as usize, "one exchange each");
    assert_eq!(pipeline.stats().connections, u64::from(CONNECTIONS));
    assert!(per <= 256.0, "{per:.0} bytes per idle connection");
    drop(out);
}

/// Many connections each holding an unfinished request head (a slow or
/// hostile client): past the total budget the largest buffers are given
/// up on at the next tick, counted, and the total is back under it; a
/// connection given up on still reads its next whole request.
#[test]
fn partial_messages_stay_under_the_total_buffer_budget() {
    let templates = templates();
    let budget = 4 << 20;
    let mut pipeline = Pipeline::new(Config {
        max_buffered_total: budget,
        ..Config::default()
    });
    let mut out = Vec::new();
    let head = |i: u32| {
        let mut h = format!("GET /slow/{i} HTTP/1.1\r\nX-Pad: ").into_bytes();
        h.resize(16 << 10, b'a');
        h
    };
    let mut last_ts = 0;
    for i in 0..1_000 {
        let [accept, request, _] = connection(&templates, i);
        let mut partial = RawData::read_from_prefix(&request).unwrap().0;
        partial.ts_enter_ns = partial.hdr.ts_ns;
        last_ts = partial.hdr.ts_ns.get();
        for r in [accept, common::data_record(&partial, &head(i))] {
            pipeline.push(&abi::decode(&r).unwrap(), &mut out);
        }
    }
    assert!(
        pipeline.buffered_bytes() > budget,
        "16 MB of heads buffered before the tick: {}",
        pipeline.buffered_bytes()
    );
    pipeline.tick(last_ts + 1_000, &mut out);
    let buffered = pipeline.buffered_bytes();
    assert!(
        buffered <= budget / 4 * 3,
        "{buffered} bytes buffered after the tick"
    );
    let overflows = pipeline.stats().buffer_overflows;
    assert!(
        overflows >= 750,
        "every buffer given up on counted: {overflows}"
    );
    assert!(
        out.iter().all(|o| match o {
            kindling_flow::Output::Exchange(x) => x.error.is_none(),
            kindling_flow::Output::Tcp(_) => true,
        }),
        "giving up on a buffer is no error"
    );
    // the first connection (given up on) reads its next whole request
    let [_, request, response] = connection(&templates, 0);
    let later = |r: &[u8], at: u64| {
        let mut d = RawData::read_from_prefix(r).unwrap().0;
        d.hdr.ts_ns = U64::new(at);
        d.ts_enter_ns = U64::new(at);
        let payload = &r[size_of::<RawData>()..];
        common::data_record(&d, payload)
    };
    out.clear();
    for r in [
        later(&request, last_ts + 2_000),
        later(&response, last_ts + 3_000),
    ] {
        pipeline.push(&abi::decode(&r).unwrap(), &mut out);
    }
    let paths: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            kindling_flow::Output::Exchange(x) => x.attributes.get("url.path").map(str::to_owned),
            kindling_flow::Output::Tcp(_) => None,
        })
        .collect();
    assert_eq!(paths, ["/health"], "resynchronised on the next request");
}
