//! A fixed-rate HTTP/1.1 load generator for the agent benchmark
//! (`benches/agent/run.sh`): `fixed_rate PORT RATE SECONDS [CONNECTIONS]`.
//!
//! Each connection (keep-alive, one thread each) sends GET / on its own
//! schedule, RATE/CONNECTIONS requests per second, and measures each
//! request's latency from the time it was *scheduled* to the end of its
//! response, so that a stalled server shows as latency instead of as
//! fewer requests (no coordinated omission). Prints one line:
//! `sent N ok N errors N late N p50_us X p99_us Y max_us Z`, where `late`
//! counts requests sent more than 1 ms after their slot.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: fixed_rate PORT RATE SECONDS [CONNECTIONS]";
    let port: u16 = args.get(1).and_then(|a| a.parse().ok()).expect(usage);
    let rate: f64 = args.get(2).and_then(|a| a.parse().ok()).expect(usage);
    let secs: f64 = args.get(3).and_then(|a| a.parse().ok()).expect(usage);
    let conns: usize = args.get(4).and_then(|a| a.parse().ok()).unwrap_or(16);
    let interval = Duration::from_secs_f64(conns as f64 / rate);
    let start = Instant::now() + Duration::from_millis(50);
    let end = start + Duration::from_secs_f64(secs);
    let workers: Vec<_> = (0..conns)
        .map(|i| {
            // spread the connections' schedules over one interval
            let first = start + interval.mul_f64(i as f64 / conns as f64);
            std::thread::spawn(move || run(port, first, interval, end))
        })
        .collect();
    let mut all = Stats::default();
    for w in workers {
        let s = w.join().expect("a worker");
        all.latencies_us.extend(s.latencies_us);
        all.errors += s.errors;
        all.late += s.late;
    }
    all.latencies_us.sort_unstable();
    let pct = |p: f64| {
        let v = &all.latencies_us;
        if v.is_empty() {
            0
        } else {
            v[((v.len() - 1) as f64 * p) as usize]
        }
    };
    println!(
        "sent {} ok {} errors {} late {} p50_us {} p99_us {} max_us {}",
        all.latencies_us.len() as u64 + all.errors,
        all.latencies_us.len(),
        all.errors,
        all.late,
        pct(0.5),
        pct(0.99),
        all.latencies_us.last().copied().unwrap_or(0)
    );
}

#[derive(Default)]
struct Stats {
    latencies_us: Vec<u64>,
    errors: u64,
    late: u64,
}

fn run(port: u16, first: Instant, interval: Duration, end: Instant) -> Stats {
    let mut stats = Stats::default();
    let mut conn: Option<(TcpStream, BufReader<TcpStream>)> = None;
    let mut slot = first;
    while slot < end {
        let now = Instant::now();
        if slot > now {
            std::thread::sleep(slot - now);
        } else if now - slot > Duration::from_millis(1) {
            stats.late += 1;
        }
        if conn.is_none() {
            conn = TcpStream::connect(("127.0.0.1", port)).ok().map(|s| {
                let _ = s.set_nodelay(true);
                let r = BufReader::new(s.try_clone().expect("a socket clone"));
                (s, r)
            });
        }
        match conn.as_mut().map(|(w, r)| request(w, r)) {
            Some(true) => stats.latencies_us.push(slot.elapsed().as_micros() as u64),
            _ => {
                stats.errors += 1;
                conn = None;
            }
        }
        slot += interval;
    }
    stats
}

/// One GET and its response (Content-Length framed, as nginx answers).
fn request(w: &mut TcpStream, r: &mut BufReader<TcpStream>) -> bool {
    if w.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: fixed_rate\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut length = 0usize;
    let mut status_ok = false;
    let mut first = true;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return false;
        }
        if first {
            status_ok = line.starts_with("HTTP/1.1 200");
            first = false;
        } else if line == "\r\n" {
            break;
        } else if let Some(v) = line
            .to_ascii_lowercase()
            .strip_prefix("content-length:")
            .map(|v| v.trim().to_owned())
        {
            length = v.parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).is_ok() && status_ok
}
