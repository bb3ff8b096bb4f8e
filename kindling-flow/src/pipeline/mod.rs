//! The pipeline: events in, exchanges and TCP records out.
//!
//! ```text
//! push(event) ─┬─ data ──► read: recognise, stream (per direction) ─► pairing ─► exchange
//!              ├─ conn ──► lifecycle: connect / accept / close
//!              ├─ tcp ───► tcp_health: connects, resets, retransmits, RTT
//!              └─ lost ──► what was in flight is dropped (counted)
//! tick(now) ───► retries, timeouts, idle connections
//! ```

mod dns_search;
mod exchange;
mod lifecycle;
mod names;
mod pairing;
mod read;
mod tcp_health;

use std::net::SocketAddr;

use rustc_hash::FxHashMap;

use kindling_probe::abi::{DataEvent, Direction, Event, Transport};

use crate::config::Config;
use crate::conn::{Conn, ConnKey, ConnTable, InFlight, Recognition};
use crate::record::{Attributes, Output, Role, TcpEventKind};
use crate::stats::Stats;
use exchange::still_waiting;
use names::Names;
use tcp_health::Attempt;

/// State the per-connection steps update.
#[derive(Debug, Default)]
struct Shared {
    stats: Stats,
    /// What summaries keep and hide (from the configuration).
    summary: kindling_proto::SummaryOptions,
    names: Names,
    /// NXDOMAIN answers that may be search-list expansions.
    searches: dns_search::Searches,
    /// Local TCP ports something on this host listens on (from LISTEN
    /// states and accepts): a connection already open when tracing began
    /// is the server's end if its local port is one of them.
    listening: rustc_hash::FxHashSet<u16>,
    /// In-flight states of connections gone idle, kept for reuse with
    /// their buffers' capacity: a keep-alive exchange then allocates no
    /// buffers.
    #[expect(
        clippy::vec_box,
        reason = "the boxes move into connections as they are"
    )]
    pool: Vec<Box<InFlight>>,
    /// Attribute sets emptied after use (a response's once its exchange
    /// took a copy, an exchange's when the caller hands it back): the next
    /// messages write into them instead of allocating.
    spare_attrs: Vec<Attributes>,
}

/// Most spare attribute sets kept, and the most room each may hold.
const SPARE_ATTRS: usize = 256;
const SPARE_ATTR_BYTES: usize = 4096;

/// Most in-flight states kept for reuse.
const POOL: usize = 256;

impl Shared {
    /// Keeps an emptied attribute set for the next message.
    fn give_back(&mut self, mut attrs: Attributes) {
        // a set that once held a huge value is not worth its room
        if self.spare_attrs.len() < SPARE_ATTRS && attrs.capacity_bytes() <= SPARE_ATTR_BYTES {
            attrs.clear();
            self.spare_attrs.push(attrs);
        }
    }

    fn recycle(&mut self, mut f: Box<InFlight>) {
        if self.pool.len() < POOL {
            f.reset();
            self.pool.push(f);
        }
    }
}

/// What handling one connection's event borrows from the pipeline.
pub(super) struct Cx<'a> {
    config: &'a Config,
    shared: &'a mut Shared,
    out: &'a mut Vec<Output>,
    key: ConnKey,
    /// The peer of the bytes being read (a datagram's own).
    peer: SocketAddr,
}

/// The sans-IO pipeline: feed it probe events in order with [`push`], call
/// [`tick`] now and then with the current boot time, and [`finish`] at the
/// end of the input.
///
/// [`push`]: Pipeline::push
/// [`tick`]: Pipeline::tick
/// [`finish`]: Pipeline::finish
///
/// # Examples
///
/// ```
/// use kindling_flow::{Config, Pipeline};
///
/// let mut pipeline = Pipeline::new(Config::default());
/// let mut out = Vec::new();
/// // for each decoded probe event: pipeline.push(&event, &mut out);
/// pipeline.finish(&mut out);
/// assert!(out.is_empty());
/// assert_eq!(pipeline.stats().events, 0);
/// ```
#[derive(Debug)]
pub struct Pipeline {
    config: Config,
    conns: ConnTable,
    /// Connects in progress or just done, by kernel socket.
    attempts: FxHashMap<u64, Attempt>,
    shared: Shared,
    last_ns: u64,
}

impl Pipeline {
    /// A pipeline with these settings.
    pub fn new(config: Config) -> Self {
        let shared = Shared {
            summary: kindling_proto::SummaryOptions {
                redaction: config.redaction.clone(),
                detail: config.detail,
            },
            ..Shared::default()
        };
        Self {
            config,
            conns: ConnTable::default(),
            attempts: FxHashMap::default(),
            shared,
            last_ns: 0,
        }
    }

    /// Clears `outputs`, keeping what they own for the next exchanges
    /// (their attribute sets, emptied): call it instead of `clear()` once
    /// done with a batch, and steady traffic allocates nothing per exchange.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_flow::{Config, Pipeline};
    ///
    /// let mut p = Pipeline::new(Config::default());
    /// let mut out = Vec::new();
    /// // for each event: p.push(&event, &mut out); use `out`, then
    /// p.reuse(&mut out);
    /// assert!(out.is_empty());
    /// ```
    pub fn reuse(&mut self, outputs: &mut Vec<Output>) {
        for o in outputs.iter_mut() {
            if let Output::Exchange(x) = o {
                self.shared.give_back(std::mem::take(&mut x.attributes));
            }
        }
        outputs.clear();
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        Stats {
            connections: self.conns.len() as u64,
            ..self.shared.stats
        }
    }

    /// Gives up on the largest reassembly buffers until what is buffered
    /// in total (`buffered` now) is under ¾ of the budget.
    fn shed_buffers(&mut self, mut buffered: usize) {
        let target = self.config.max_buffered_total / 4 * 3;
        let mut largest: Vec<(usize, ConnKey, bool)> = Vec::new();
        for (key, conn) in self.conns.iter() {
            if let Some(f) = &conn.flight {
                for (sent, n) in [(true, f.sent.buffered()), (false, f.received.buffered())] {
                    if n > 0 {
                        largest.push((n, key, sent));
                    }
                }
            }
        }
        largest.sort_unstable_by_key(|&(n, ..)| std::cmp::Reverse(n));
        for (n, key, sent) in largest {
            if buffered <= target {
                break;
            }
            if let Some(f) = self.conns.get_mut(&key).and_then(|c| c.flight.as_mut()) {
                let stream = if sent { &mut f.sent } else { &mut f.received };
                stream.give_up_buffer(&mut self.shared.stats);
                buffered -= n;
            }
        }
    }

    /// Payload bytes held in reassembly buffers right now (bounded by
    /// [`Config::max_buffered_total`] after each tick, and by
    /// connections × 2 × [`Config::max_buffer`] between ticks).
    pub fn buffered_bytes(&self) -> usize {
        self.conns
            .iter()
            .filter_map(|(_, c)| c.flight.as_ref())
            .map(|f| f.sent.bytes().len() + f.received.bytes().len())
            .sum()
    }

    /// Capacities of the internal tables (connections, socket index,
    /// connect attempts), for memory accounting.
    #[doc(hidden)]
    pub fn table_capacities(&self) -> (usize, usize, usize) {
        (self.conns.capacity(), 0, self.attempts.capacity())
    }

    /// Records the probe reported lost (ring buffer full, …). They may have
    /// belonged to any connection, so nothing in flight is trusted after
    /// them: requests waiting for an answer are dropped (counted in
    /// `requests_dropped`) rather than paired with an answer that may not
    /// be theirs, and streams in the middle of a message resynchronise at
    /// the next one. Never an invented exchange.
    pub fn note_lost(&mut self, n: u64) {
        if n == 0 {
            return;
        }
        // a marker's count comes from a file: saturate rather than overflow
        self.shared.stats.events_lost = self.shared.stats.events_lost.saturating_add(n);
        for (_, conn) in self.conns.iter_mut() {
            let Some(f) = conn.flight.as_mut() else {
                continue;
            };
            self.shared.stats.requests_dropped += unreported(&f.pending);
            f.pending.clear();
            f.sent.lose_all();
            f.received.lose_all();
            if let Recognition::Known(proto) = &mut conn.proto {
                proto.answers_lost();
            }
        }
    }

    /// Feeds one event; outputs it completes are appended to `out`.
    pub fn push(&mut self, event: &Event<'_>, out: &mut Vec<Output>) {
        self.shared.stats.events += 1;
        let before = out.len();
        match event {
            Event::Data(d) => {
                self.last_ns = self.last_ns.max(d.raw.hdr.ts_ns.get());
                self.data(d, out);
            }
            Event::Conn(c) => {
                self.last_ns = self.last_ns.max(c.raw.hdr.ts_ns.get());
                self.conn_event(c, out);
            }
            Event::Tcp(t) => self.tcp_event(t, out),
            Event::Lost(l) => self.note_lost(l.raw.records.get()),
            Event::Drop(d) => {
                let r = d.raw;
                self.emit_tcp(
                    out,
                    TcpEventKind::Drop,
                    &r.hdr,
                    r.sk.local(),
                    r.sk.peer(),
                    |t| {
                        t.reason = Some(r.reason.get());
                        t.reason_name = self.config.drop_reasons.get(&r.reason.get()).cloned();
                    },
                );
            }
        }
        self.count(&out[before..]);
    }

    /// Expires what waited too long, as of `now_ns` (`CLOCK_BOOTTIME`).
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Output>) {
        let before = out.len();
        let idle = self.config.idle_timeout_ns;
        let mut expired = Vec::new();
        let mut buffered = 0;
        for (key, conn) in self.conns.iter_mut() {
            buffered += conn
                .flight
                .as_ref()
                .map_or(0, |f| f.sent.buffered() + f.received.buffered());
            let peer = conn.peer();
            read::settle(
                &mut Cx {
                    config: &self.config,
                    shared: &mut self.shared,
                    out,
                    key,
                    peer,
                },
                conn,
            );
            report_waiting(&self.config, &key, conn, now_ns, out);
            if now_ns.saturating_sub(conn.last_seen_ns) > idle {
                expired.push(key);
            }
        }
        for key in expired {
            self.shared.stats.idle_expired += 1;
            self.close(key, out, false, now_ns);
        }
        if buffered > self.config.max_buffered_total {
            self.shed_buffers(buffered);
        }
        self.shared.searches.expire(&self.config, now_ns, out);
        self.count(&out[before..]);
    }

    /// Ends the input: requests still waiting are reported as unanswered
    /// if they waited longer than the response timeout, else dropped
    /// (counted), since the capture ended before their answer could come.
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        self.tick(self.last_ns, out);
        let before = out.len();
        self.shared.searches.flush(out);
        self.count(&out[before..]);
        for (_, conn) in self.conns.iter_mut() {
            if let Some(f) = conn.flight.take() {
                self.shared.stats.requests_dropped += unreported(&f.pending);
            }
        }
    }

    /// One syscall's payload: on the connection of its process and
    /// socket, tracked from now on if it was not.
    fn data(&mut self, d: &DataEvent<'_>, out: &mut Vec<Output>) {
        let key = ConnKey {
            pid: d.raw.hdr.pid.get(),
            sock: d.raw.sk.sock.get(),
        };
        if d.raw.ret.get() <= 0 {
            // an error or the end of the stream: no bytes moved
            let eof = d.raw.ret.get() == 0 && d.direction() == Direction::Ingress;
            if let Some(conn) = self.conns.get_mut(&key).filter(|_| eof) {
                conn.peer_closed = true;
            }
            return;
        }
        if !self.conns.contains(&key) {
            let udp = d.raw.sk.transport() == Transport::Udp;
            let (local, peer) = (d.raw.sk.local(), d.raw.sk.peer());
            let conn = Conn::new(key.pid, local, peer, udp, d.raw.hdr.comm);
            self.insert(key, conn, false, out);
        }
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        // a datagram's own peer (an unconnected socket talks to many)
        let peer = d.raw.sk.peer();
        let mut cx = Cx {
            config: &self.config,
            shared: &mut self.shared,
            out,
            key,
            peer,
        };
        read::data(&mut cx, conn, d);
    }

    fn count(&mut self, new: &[Output]) {
        for o in new {
            match o {
                Output::Exchange(_) => self.shared.stats.exchanges += 1,
                Output::Tcp(_) => self.shared.stats.tcp_records += 1,
            }
        }
    }
}

/// Reports, once, each request of `conn` that waited longer than the
/// response timeout, as still waiting (not an error): it stays queued, so a
/// late answer is paired with it, and a close reports it unanswered. The
/// oldest request is not waiting while its answer is arriving (a stream, a
/// long download).
fn report_waiting(
    config: &Config,
    key: &ConnKey,
    conn: &mut Conn,
    now_ns: u64,
    out: &mut Vec<Output>,
) {
    let client = conn.role == Some(Role::Client);
    let Some(f) = conn.flight.as_mut() else {
        return;
    };
    let answers = if client { &f.received } else { &f.sent };
    let answering = !answers.is_quiet() && !answers.is_lost();
    let mut due = Vec::new();
    for (i, p) in f.pending.iter_mut().enumerate() {
        let arriving = i == 0 && answering && p.key.is_none();
        if !p.reported
            && !arriving
            && now_ns.saturating_sub(p.span.last_ns) > config.response_timeout_ns
        {
            p.reported = true;
            due.push(p.clone());
        }
    }
    for p in due {
        out.push(Output::Exchange(still_waiting(
            config, key, conn, p, now_ns,
        )));
    }
}

/// Requests not reported in any exchange yet: dropped if forgotten now.
pub(super) fn unreported(pending: &std::collections::VecDeque<crate::conn::PendingRequest>) -> u64 {
    pending.iter().filter(|p| !p.reported).count() as u64
}
