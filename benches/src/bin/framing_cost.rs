//! What the framing budget costs: the probe traces one process that serves
//! and downloads chunked HTTP responses over loopback (both ends traced),
//! with the budget on and off in alternating rounds, and reports per
//! response the BPF time (from `kernel.bpf_stats_enabled`), the records and
//! the ring bytes it took, and whether the body's framing was kept.
//!
//! ```text
//! sudo target/release/framing_cost [ROUNDS] [RESPONSES]
//! ```
//!
//! Root only. Results go to stdout as a Markdown table (medians of the
//! rounds), for BENCHMARKS.md.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use kindling_probe::abi::Event;
use kindling_probe::ProbeBuilder;

/// Response bodies measured: 100 kB, 1 MB (the bar) and 20 MB (past the budget).
const SIZES: [usize; 3] = [100 << 10, 1 << 20, 20 << 20];
/// Budgets compared: off, and the default.
const BUDGETS: [u32; 2] = [0, 2 << 20];

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(5);
    let responses: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    set_bpf_stats(true);
    let mut rows = Vec::new();
    for &size in &SIZES {
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); BUDGETS.len()];
        for _ in 0..rounds {
            for (i, &budget) in BUDGETS.iter().enumerate() {
                samples[i].push(measure(budget, size, responses));
            }
        }
        for (i, &budget) in BUDGETS.iter().enumerate() {
            rows.push((size, budget, median(&samples[i])));
        }
    }
    set_bpf_stats(false);
    println!("| body | budget | BPF µs/response | records/response | ring KiB/response | payload captured |");
    println!("|---:|---:|---:|---:|---:|---:|");
    for (size, budget, m) in rows {
        println!(
            "| {} KiB | {} KiB | {:.1} | {:.0} | {:.0} | {:.1}% |",
            size >> 10,
            budget >> 10,
            m.bpf_ns / 1e3,
            m.records,
            m.ring_bytes / 1024.0,
            100.0 * m.captured_share,
        );
    }
}

#[derive(Clone, Copy, Default)]
struct Sample {
    bpf_ns: f64,
    records: f64,
    ring_bytes: f64,
    captured_share: f64,
}

/// Medians of each field over the rounds.
fn median(samples: &[Sample]) -> Sample {
    let pick = |f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Sample {
        bpf_ns: pick(|s| s.bpf_ns),
        records: pick(|s| s.records),
        ring_bytes: pick(|s| s.ring_bytes),
        captured_share: pick(|s| s.captured_share),
    }
}

/// One round: `responses` downloads of a chunked body of `size` bytes (4 kB
/// chunks) on one keep-alive connection, read 16 KiB at a time (curl's
/// buffer), under a probe with `budget`.
fn measure(budget: u32, size: usize, responses: usize) -> Sample {
    let mut probe = ProbeBuilder::new()
        .trace_self(true)
        .pid(std::process::id())
        .framing_budget(budget)
        .load()
        .unwrap_or_else(|e| panic!("loading the probe: {e}"));
    let ids = probe.program_ids();
    let before = bpf_run_ns(&ids);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || serve(listener, size));
    let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut records, mut ring_bytes, mut payload, mut moved) = (0u64, 0u64, 0u64, 0u64);
    let mut count = |probe: &mut kindling_probe::Probe, wait: Duration| {
        probe
            .poll(wait, |e| {
                records += 1;
                ring_bytes += u64::from(e.header().size.get());
                if let Event::Data(d) = e {
                    payload += u64::from(d.raw.cap_len.get());
                    moved += u64::from(d.raw.len.get());
                }
            })
            .unwrap();
    };
    let mut buf = vec![0u8; 16 << 10];
    for _ in 0..responses {
        client
            .write_all(b"GET /download HTTP/1.1\r\nHost: bench\r\n\r\n")
            .unwrap();
        read_response(&mut client, &mut buf);
        count(&mut probe, Duration::ZERO);
    }
    drop(client);
    server.join().unwrap();
    let spent = bpf_run_ns(&ids) - before;
    count(&mut probe, Duration::from_millis(100));
    let n = responses as f64;
    Sample {
        bpf_ns: spent as f64 / n,
        records: records as f64 / n,
        ring_bytes: ring_bytes as f64 / n,
        captured_share: payload as f64 / moved.max(1) as f64,
    }
}

/// Answers every request with a chunked body of `size` bytes, 4 kB chunks.
fn serve(listener: TcpListener, size: usize) {
    let (conn, _) = listener.accept().unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut conn = conn;
    let chunk = vec![b'x'; 4096];
    let mut line = String::new();
    loop {
        // the request: lines up to the blank one
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
        }
        conn.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        for _ in 0..size / chunk.len() {
            write!(conn, "{:x}\r\n", chunk.len()).unwrap();
            conn.write_all(&chunk).unwrap();
            conn.write_all(b"\r\n").unwrap();
        }
        conn.write_all(b"0\r\n\r\n").unwrap();
    }
}

/// Reads one response to the end of its chunked body (the terminating
/// `0\r\n\r\n`, which no 4 kB chunk of `x` contains).
fn read_response(conn: &mut TcpStream, buf: &mut [u8]) {
    let mut tail = Vec::new();
    loop {
        let n = conn.read(buf).unwrap();
        assert!(n > 0, "the server closed early");
        tail.extend_from_slice(&buf[..n]);
        if tail.ends_with(b"\r\n0\r\n\r\n") {
            return;
        }
        let keep = tail.len().saturating_sub(8);
        tail.drain(..keep);
    }
}

/// Total BPF run time of the programs, from `bpftool prog show`.
fn bpf_run_ns(ids: &[u32]) -> u64 {
    ids.iter()
        .map(|id| {
            let out = Command::new("bpftool")
                .args(["prog", "show", "id", &id.to_string(), "-j"])
                .output()
                .expect("bpftool runs");
            let text = String::from_utf8_lossy(&out.stdout);
            // a flat JSON object: take the number after "run_time_ns":
            text.split("\"run_time_ns\":")
                .nth(1)
                .and_then(|rest| {
                    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().ok()
                })
                .unwrap_or(0)
        })
        .sum()
}

fn set_bpf_stats(on: bool) {
    std::fs::write(
        "/proc/sys/kernel/bpf_stats_enabled",
        if on { "1" } else { "0" },
    )
    .expect("setting kernel.bpf_stats_enabled (root)");
}
