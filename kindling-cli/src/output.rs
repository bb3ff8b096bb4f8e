//! What `replay` and `watch` print: probe events, or the pipeline's
//! outputs, one JSON object per line or a table; and the one-line
//! summaries of the pipeline's and the probe's counters on stderr.

use std::io::{self, Write};

use kindling_flow::{Event, ProtocolId};
use kindling_flow::{Exchange, Output, Stats, TcpEventKind, TcpRecord};
use kindling_probe::{render, LossStats};

use crate::args::Format;

/// Creates (or truncates) `path` readable by its owner only: what Kindling
/// writes holds payloads or the cluster's metadata (an existing file
/// keeps its mode).
pub fn create_private(path: &std::path::Path) -> anyhow::Result<std::fs::File> {
    use anyhow::Context as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))
}

/// Column header of the outputs' table.
pub const TABLE_HEADER: &str =
    "      TIME  PROTO  ROLE    PROCESS               DURATION  SRC -> DST                                      RESULT  REQUEST";

/// Writes events or outputs in one format; times print relative to `t0`
/// (the first event's boot time) in a table, as Unix time in JSON.
pub struct Printer<W> {
    out: W,
    format: Format,
    /// Boot-time to Unix-time offset of the events' clock.
    offset: i64,
    /// Show RTT samples.
    rtt: bool,
    /// Show drops that are not packet loss.
    all_drops: bool,
}

impl<W: Write> Printer<W> {
    pub fn new(out: W, format: Format, offset: i64, rtt: bool, all_drops: bool) -> Self {
        Self {
            out,
            format,
            offset,
            rtt,
            all_drops,
        }
    }

    /// The table's column header, of events or of outputs.
    pub fn header(&mut self, events: bool) -> io::Result<()> {
        let header = if events {
            render::TABLE_HEADER
        } else {
            TABLE_HEADER
        };
        writeln!(self.out, "{header}")
    }

    /// One probe event.
    pub fn event(&mut self, ev: &Event<'_>, t0: u64) -> io::Result<()> {
        let line = match self.format {
            Format::Table => render::to_table_row(ev, t0),
            Format::Json => render::to_json(ev, self.offset).to_string(),
        };
        writeln!(self.out, "{line}")
    }

    /// Keeps the outputs that are [`shown`], passes each to `enrich`, and
    /// writes them (the caller clears or reuses them).
    pub fn outputs(
        &mut self,
        outputs: &mut Vec<Output>,
        t0: u64,
        enrich: impl FnMut(&mut Output),
    ) -> io::Result<()> {
        outputs.retain(|o| shown(o, self.rtt, self.all_drops));
        outputs.iter_mut().for_each(enrich);
        write_all(&mut self.out, outputs, self.format, t0, self.offset)
    }

    /// Text as it is (the Prometheus exposition).
    pub fn text(&mut self, text: &str) -> io::Result<()> {
        write!(self.out, "{text}")
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The writer underneath.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }
}

/// Whether an output is printed: RTT samples only with `rtt`, drops that
/// are not packet loss (by their kernel reason) only with `all_drops`.
fn shown(o: &Output, rtt: bool, all_drops: bool) -> bool {
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
fn write_all(
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
    let (result, request) = summary(x);
    format!(
        "{:>10.6}  {:<5}  {:<6}  {:<20}  {:>8}  {:<46}  {:>6}  {}{}",
        seconds(x.ts, t0, offset),
        x.protocol,
        match x.role {
            kindling_flow::Role::Client => "client",
            kindling_flow::Role::Server => "server",
        },
        format!("{}/{}", x.comm, x.pid),
        duration(x.duration_ns),
        format!("{} -> {}", x.src, x.dst),
        result,
        request,
        if x.slow { "  (slow)" } else { "" },
    )
}

/// An exchange's result (status code, `ok`, the error) and request
/// (`GET /path`, the query, `A example.com`), as the table shows them.
pub fn summary(x: &Exchange) -> (String, String) {
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
        None if x.cancelled => "cancelled".to_owned(),
        None if x.partial => "partial".to_owned(),
        _ => result,
    };
    (result, request)
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
        "{:>10.6}  tcp    {:<6}  {:<20}  {:>8}  {:<46}  {detail}",
        seconds(t.ts, t0, offset),
        "",
        format!("{}/{}", t.comm, t.pid),
        "",
        format!("{} -> {}", t.src, t.dst),
    )
}

/// A duration in the unit that reads best (`812ns`, `3.4ms`).
pub fn duration(ns: u64) -> String {
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

/// The probe's loss counters in one line.
pub fn losses_line(l: &LossStats) -> String {
    format!(
        "lost: ring_full={} pending_full={} undecodable={} | read_failed={} truncated={}",
        l.ring_full, l.pending_full, l.undecodable, l.read_failed, l.truncated
    )
}
