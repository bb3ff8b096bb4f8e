//! Printing the pipeline's outputs: one JSON object per line, or a table.

use std::io::{self, Write};

use kindling_flow::ProtocolId;
use kindling_flow::{Exchange, Output, Stats, TcpEventKind, TcpRecord};

use crate::Format;

pub const TABLE_HEADER: &str =
    "      TIME  PROTO  ROLE    DURATION  SRC -> DST                                      RESULT  REQUEST";

/// Whether an output is printed: RTT samples only with `rtt`, drops that
/// are not packet loss (by their kernel reason) only with `all_drops`.
pub fn shown(o: &Output, rtt: bool, all_drops: bool) -> bool {
    match o {
        Output::Tcp(t) if t.event == TcpEventKind::Rtt => rtt,
        Output::Tcp(t) if t.event == TcpEventKind::Drop => {
            all_drops
                || t.reason_name
                    .as_deref()
                    .is_none_or(kindling_flow::is_packet_loss)
        }
        _ => true,
    }
}

/// Writes `outputs` (the caller clears or reuses them).
pub fn write_all(
    out: &mut impl Write,
    outputs: &[Output],
    format: Format,
    t0: u64,
    offset: i64,
) -> io::Result<()> {
    for o in outputs.iter() {
        match format {
            Format::Json => {
                serde_json::to_writer(&mut *out, o)?;
                writeln!(out)?;
            }
            Format::Table => writeln!(out, "{}", row(o, t0, offset))?,
        }
    }
    Ok(())
}

fn seconds(ts: i64, t0: u64, offset: i64) -> f64 {
    (ts - offset - t0 as i64) as f64 / 1e9
}

fn row(o: &Output, t0: u64, offset: i64) -> String {
    match o {
        Output::Exchange(x) => exchange_row(x, t0, offset),
        Output::Tcp(t) => tcp_row(t, t0, offset),
    }
}

fn exchange_row(x: &Exchange, t0: u64, offset: i64) -> String {
    let a = |k: &str| x.attributes.get(k).unwrap_or("");
    let (result, request) = match x.protocol {
        ProtocolId::Http => (
            a("http.response.status_code").to_owned(),
            format!("{} {}", a("http.request.method"), a("url.path")),
        ),
        ProtocolId::Dns => (
            a("dns.response.code").to_owned(),
            format!("{} {}", a("dns.question.type"), a("dns.question.name")),
        ),
        _ => (
            if x.error.is_some() {
                a("db.response.status_code").to_owned()
            } else {
                "ok".to_owned()
            },
            match a("db.query.text") {
                "" => a("db.operation.name").to_owned(),
                text => text.to_owned(),
            },
        ),
    };
    let result = match x.error {
        Some(e) if result.is_empty() => format!("{e:?}"),
        None if x.pending => "pending".to_owned(),
        None if x.partial => "partial".to_owned(),
        _ => result,
    };
    format!(
        "{:>10.6}  {:<5}  {:<6}  {:>8}  {:<46}  {:>6}  {}{}",
        seconds(x.ts, t0, offset),
        x.protocol,
        match x.role {
            kindling_flow::Role::Client => "client",
            kindling_flow::Role::Server => "server",
        },
        duration(x.duration_ns),
        format!("{} -> {}", x.src, x.dst),
        result,
        request,
        if x.slow { "  (slow)" } else { "" },
    )
}

fn tcp_row(t: &TcpRecord, t0: u64, offset: i64) -> String {
    let mut detail = format!("{:?}", t.event);
    if let Some(d) = t.duration_ns {
        detail += &format!(" in {}", duration(d));
    }
    if let Some(e) = t.errno {
        detail += &format!(" errno {e}");
    }
    match (&t.reason_name, t.reason) {
        (Some(name), _) => detail += &format!(" {name}"),
        (None, Some(r)) => detail += &format!(" reason {r}"),
        _ => {}
    }
    format!(
        "{:>10.6}  tcp    {:<6}  {:>8}  {:<46}  {detail}",
        seconds(t.ts, t0, offset),
        "",
        "",
        format!("{} -> {}", t.src, t.dst),
    )
}

fn duration(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

/// The pipeline's counters in one line.
pub fn stats_line(s: &Stats) -> String {
    format!(
        "{} events ({} lost by the probe), {} exchanges ({} partial), {} tcp records; \
         {} parse errors, {} resyncs, {} truncated messages, {} requests dropped, \
         {} unpaired responses, {} unrecognised connections, {} buffer overflows, \
         {} evictions, {} idle connections expired",
        s.events,
        s.events_lost,
        s.exchanges,
        s.partial_exchanges,
        s.tcp_records,
        s.parse_errors,
        s.resyncs,
        s.truncated_messages,
        s.requests_dropped,
        s.unpaired_responses,
        s.unrecognised_connections,
        s.buffer_overflows,
        s.evictions,
        s.idle_expired
    )
}

/// A reader that counts the bytes read through it (for progress).
pub struct Counting<R> {
    inner: R,
    read: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl<R> Counting<R> {
    pub fn new(inner: R, read: std::sync::Arc<std::sync::atomic::AtomicU64>) -> Self {
        Self { inner, read }
    }
}

impl<R: io::Read> io::Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

/// A progress line on stderr for large captures, when stderr is a
/// terminal.
pub struct Progress {
    size: u64,
    shown: bool,
    enabled: bool,
}

impl Progress {
    pub fn new(size: u64) -> Self {
        use std::io::IsTerminal;
        Self {
            size,
            shown: false,
            enabled: size > 64 << 20 && io::stderr().is_terminal(),
        }
    }

    pub fn show(&mut self, read: u64) {
        if self.enabled {
            let pct = read as f64 * 100.0 / self.size.max(1) as f64;
            eprint!(
                "\rkindling: {pct:5.1}% of {:.0} MiB",
                self.size as f64 / 1048576.0
            );
            self.shown = true;
        }
    }

    pub fn done(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}
