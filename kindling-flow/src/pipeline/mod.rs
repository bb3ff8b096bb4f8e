//! The pipeline: events in, exchanges and TCP records out.

use std::net::IpAddr;

use rustc_hash::FxHashMap;

use kindling_probe::abi::{kind, Event, RawConn, RawData, RawTcp, Transport};
use kindling_proto::{AttributeSink, Direction, ProtocolId};

use crate::buffer::{DirBuf, Span, RETRY_FROM};
use crate::config::Config;
use crate::conn::{Conn, ConnKey, ConnTable, InFlight, PendingRequest, Recognition};
use crate::protocol::{self, Detected, Follow, ParseError, Parsed, Proto};
use crate::record::{
    Attributes, Comm, ErrorKind, Exchange, Network, Output, Phases, Role, TcpEventKind, TcpRecord,
};
use crate::stats::Stats;

const EINPROGRESS: i64 = 115;
/// Bytes seen without recognising a protocol before giving up on it.
const DETECT_LIMIT: usize = 4096;
/// TCP states (`include/net/tcp_states.h`).
const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_SENT: u8 = 2;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;

/// State the per-connection steps update.
#[derive(Debug, Default)]
struct Shared {
    stats: Stats,
    names: Names,
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

/// Addresses that DNS answers seen by the pipeline resolved, with the name
/// asked: the name of a peer that has no other (bounded; the older
/// generation is forgotten when the newer fills).
#[derive(Debug, Default)]
struct Names {
    // addresses from DNS answers (traffic): a keyed, fast hash
    now: ahash::AHashMap<IpAddr, String>,
    before: ahash::AHashMap<IpAddr, String>,
}

/// Most addresses remembered per generation.
const MAX_NAMES: usize = 4096;

impl Names {
    fn learn(&mut self, name: &str, addrs: &[IpAddr]) {
        for a in addrs {
            if self.now.len() >= MAX_NAMES {
                self.before = std::mem::take(&mut self.now);
            }
            self.now.insert(*a, name.to_owned());
        }
    }

    fn get(&self, addr: &IpAddr) -> Option<&String> {
        self.now.get(addr).or_else(|| self.before.get(addr))
    }

    /// Gives a client's exchange the name its server was resolved from,
    /// unless the protocol named it already (HTTP's Host).
    fn name_peer(&self, x: &mut Exchange) {
        if x.role == Role::Client && !x.attributes.contains_key("server.address") {
            if let Some(name) = self.get(&x.dst.ip()) {
                x.attributes.put("server.address", name);
            }
        }
    }
}

/// A TCP connect seen from its SYN.
#[derive(Clone, Copy, Debug)]
struct Attempt {
    start_ns: u64,
    pid: u32,
    comm: [u8; 16],
    /// Handshake time, once established (until connect() returns).
    took_ns: Option<u64>,
    /// The peer answered with a reset.
    reset: bool,
    /// Reported as failed already.
    failed: bool,
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
        Self {
            config,
            conns: ConnTable::default(),
            attempts: FxHashMap::default(),
            shared: Shared::default(),
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

    /// Payload bytes held in reassembly buffers right now (bounded by
    /// connections × 2 × [`Config::max_buffer`]).
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
            self.shared.stats.requests_dropped += f.pending.len() as u64;
            f.pending.clear();
            for b in [&mut f.sent, &mut f.received] {
                if !b.is_empty() || b.follow.is_some() {
                    b.clear_lost(0);
                    b.take_lost();
                    b.lost = true;
                }
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
                self.data(d.raw, d.payload, out);
            }
            Event::Conn(c) => {
                self.last_ns = self.last_ns.max(c.raw.hdr.ts_ns.get());
                self.conn_event(c.raw, out);
            }
            Event::Tcp(t) => self.tcp_event(t.raw, out),
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
        let timeout = self.config.response_timeout_ns;
        let idle = self.config.idle_timeout_ns;
        let mut expired = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            settle_partials(&self.config, &mut self.shared, &key, conn, out);
            while let Some(p) = conn.flight.as_mut().and_then(|f| {
                f.pending
                    .front()
                    .is_some_and(|p| now_ns.saturating_sub(p.span.last_ns) > timeout)
                    .then(|| f.pending.pop_front())
                    .flatten()
            }) {
                out.push(Output::Exchange(unanswered(
                    &self.config,
                    &key,
                    conn,
                    p,
                    false,
                    now_ns,
                )));
            }
            if now_ns.saturating_sub(conn.last_seen_ns) > idle {
                expired.push(key);
            }
        }
        for key in expired {
            self.shared.stats.idle_expired += 1;
            self.close(key, out, false, now_ns);
        }
        self.count(&out[before..]);
    }

    /// Ends the input: requests still waiting are reported as unanswered
    /// if they waited longer than the response timeout, else dropped
    /// (counted), since the capture ended before their answer could come.
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        self.tick(self.last_ns, out);
        for (_, conn) in self.conns.iter_mut() {
            if let Some(f) = conn.flight.take() {
                self.shared.stats.requests_dropped += f.pending.len() as u64;
            }
        }
    }

    fn count(&mut self, new: &[Output]) {
        for o in new {
            match o {
                Output::Exchange(_) => self.shared.stats.exchanges += 1,
                Output::Tcp(_) => self.shared.stats.tcp_records += 1,
            }
        }
    }

    /// Tracks a new connection. `fresh` when connect or accept made its
    /// socket just now: an entry left at the same kernel address belongs to
    /// a socket that is gone (its process exited without a close).
    fn insert(&mut self, key: ConnKey, conn: Conn, fresh: bool, out: &mut Vec<Output>) {
        let stale = if fresh {
            self.conns.keys_of_sock(key.sock)
        } else {
            self.conns
                .contains(&key)
                .then_some(key)
                .into_iter()
                .collect()
        };
        for old in stale {
            self.close(old, out, false, 0);
        }
        if self.conns.len() >= self.config.max_connections {
            if let Some(victim) = self.conns.any_key() {
                self.shared.stats.evictions += 1;
                self.close(victim, out, false, 0);
            }
        }
        self.conns.insert(key.sock, conn);
    }

    /// Forgets a connection, reporting what still waited for an answer.
    fn close(&mut self, key: ConnKey, out: &mut Vec<Output>, closed: bool, now_ns: u64) {
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
        settle_partials(&self.config, &mut self.shared, &key, &mut conn, out);
        let Some(mut f) = conn.flight.take() else {
            return;
        };
        // The oldest request may have part of its answer: report what came.
        let client = conn.role == Some(Role::Client);
        let answers = if client { &mut f.received } else { &mut f.sent };
        let seen = answers
            .span(answers.bytes().len())
            .map(|s| (s, answers.bytes().len() as u64 + answers.lost_bytes))
            .or_else(|| answers.take_lost());
        let request = if seen.is_some() {
            f.pending.pop_front()
        } else {
            None
        };
        if let Some(((span, bytes), request)) = seen.zip(request) {
            let protocol = conn_protocol(&conn);
            let request_done = request.span.last_ns;
            let mut x = exchange(&self.config, &key, &conn, protocol, request);
            finish_exchange(&self.config, &mut x, request_done, span, bytes);
            x.partial = true;
            x.error = Some(if conn.reset {
                ErrorKind::Reset
            } else {
                ErrorKind::Incomplete
            });
            self.shared.stats.partial_exchanges += 1;
            out.push(Output::Exchange(x));
        }
        for p in f.pending {
            if closed || conn.reset {
                out.push(Output::Exchange(unanswered(
                    &self.config,
                    &key,
                    &conn,
                    p,
                    conn.reset,
                    now_ns,
                )));
            } else {
                self.shared.stats.requests_dropped += 1;
            }
        }
    }

    fn conn_event(&mut self, c: &RawConn, out: &mut Vec<Output>) {
        let ret = c.ret.get();
        let pid = c.hdr.pid.get();
        let sock = c.sk.sock.get();
        let tcp = c.sk.transport() == Transport::Tcp;
        match c.hdr.kind.get() {
            kind::CONNECT => {
                let attempt = self.attempts.get(&sock).copied();
                if ret < 0 && ret != -EINPROGRESS {
                    self.attempts.remove(&sock);
                    // a failure the TCP states already told is not told twice
                    if tcp && !attempt.is_some_and(|a| a.failed) {
                        let errno = i32::try_from(ret.unsigned_abs()).unwrap_or(i32::MAX);
                        let start = c.ts_enter_ns.get();
                        let took = c.hdr.ts_ns.get().saturating_sub(start);
                        self.failed_connect(
                            out,
                            pid,
                            c.hdr.tid.get(),
                            c.hdr.comm,
                            c.sk.local(),
                            c.sk.peer(),
                            start,
                            took,
                            errno,
                        );
                        self.emit_tcp(
                            out,
                            TcpEventKind::ConnectFailed,
                            &c.hdr,
                            c.sk.local(),
                            c.sk.peer(),
                            |t| {
                                t.errno = Some(errno);
                            },
                        );
                    }
                    return;
                }
                let key = ConnKey { pid, sock };
                let mut conn = Conn::new(pid, c.sk.local(), c.sk.peer(), !tcp, c.hdr.comm);
                conn.role = Some(Role::Client);
                conn.last_seen_ns = c.hdr.ts_ns.get();
                // on loopback the handshake is over before connect returns
                if let Some(took) = attempt.and_then(|a| a.took_ns) {
                    self.attempts.remove(&sock);
                    conn.connect_ns = Some(took);
                }
                self.insert(key, conn, true, out);
            }
            kind::ACCEPT => {
                if ret < 0 {
                    return;
                }
                if tcp {
                    self.shared.listening.insert(c.sk.sport.get());
                }
                let key = ConnKey { pid, sock };
                let mut conn = Conn::new(pid, c.sk.local(), c.sk.peer(), !tcp, c.hdr.comm);
                conn.role = Some(Role::Server);
                conn.last_seen_ns = c.hdr.ts_ns.get();
                self.insert(key, conn, true, out);
            }
            kind::CLOSE => {
                self.attempts.remove(&sock);
                let key = ConnKey { pid, sock };
                self.close(key, out, true, c.hdr.ts_ns.get());
            }
            _ => {}
        }
    }

    fn tcp_event(&mut self, t: &RawTcp, out: &mut Vec<Output>) {
        let sock = t.sk.sock.get();
        let (local, peer) = (t.sk.local(), t.sk.peer());
        let now = t.hdr.ts_ns.get();
        // every TCP record carries the socket's RTT and retransmit count
        if let Some(conn) = self.conns.by_sock_mut(sock) {
            if t.srtt_us.get() > 0 {
                conn.srtt_us = t.srtt_us.get();
            }
            conn.retransmits = conn.retransmits.max(t.total_retrans.get());
        }
        if t.hdr.kind.get() == kind::TCP_STATE {
            if let Some(n) = self
                .shared
                .stats
                .tcp_states
                .get_mut(usize::from(t.new_state))
            {
                *n += 1;
            }
            if t.new_state == TCP_LISTEN {
                self.shared.listening.insert(t.sk.sport.get());
            }
        }
        match t.hdr.kind.get() {
            kind::TCP_STATE => match (t.old_state, t.new_state) {
                // the SYN leaves from inside connect(): pid and comm are right
                (TCP_CLOSE, TCP_SYN_SENT) if self.attempts.len() < self.config.max_connections => {
                    self.attempts.insert(
                        sock,
                        Attempt {
                            start_ns: now,
                            pid: t.hdr.pid.get(),
                            comm: t.hdr.comm,
                            took_ns: None,
                            reset: false,
                            failed: false,
                        },
                    );
                }
                (TCP_SYN_SENT, TCP_ESTABLISHED) => {
                    let Some(a) = self.attempts.get_mut(&sock) else {
                        return;
                    };
                    let took = now.saturating_sub(a.start_ns);
                    let (pid, comm) = (a.pid, a.comm);
                    match self.conns.by_sock_mut(sock) {
                        Some(conn) => {
                            conn.connect_ns = Some(took);
                            self.attempts.remove(&sock);
                        }
                        None => a.took_ns = Some(took), // connect() has not returned yet
                    }
                    self.emit_tcp(out, TcpEventKind::Connect, &t.hdr, local, peer, |r| {
                        r.duration_ns = Some(took);
                        r.pid = pid;
                        r.comm = Comm::from_raw(comm);
                    });
                }
                (TCP_SYN_SENT, TCP_CLOSE) => {
                    let Some(a) = self.attempts.get_mut(&sock) else {
                        return;
                    };
                    a.failed = true;
                    // refused if the peer answered with a reset, else timed out
                    let errno = if a.reset { 111 } else { 110 };
                    let (pid, comm, took) = (a.pid, a.comm, now.saturating_sub(a.start_ns));
                    let start = a.start_ns;
                    self.failed_connect(out, pid, pid, comm, local, peer, start, took, errno);
                    self.emit_tcp(out, TcpEventKind::ConnectFailed, &t.hdr, local, peer, |r| {
                        r.errno = Some(errno);
                        r.duration_ns = Some(took);
                        r.pid = pid;
                        r.comm = Comm::from_raw(comm);
                    });
                }
                // the socket is gone (closed, reset, or into TIME_WAIT): so
                // are its connections, even if no close() was seen (a
                // process that exits closes its sockets without one)
                (_, TCP_CLOSE) => {
                    for key in self.conns.keys_of_sock(sock) {
                        self.close(key, out, true, now);
                    }
                }
                _ => {}
            },
            kind::TCP_RETRANSMIT => {
                self.emit_tcp(out, TcpEventKind::Retransmit, &t.hdr, local, peer, |r| {
                    r.retransmits = Some(t.total_retrans.get());
                    r.srtt_us = Some(t.srtt_us.get());
                });
            }
            kind::TCP_RESET => {
                if let Some(conn) = self.conns.by_sock_mut(sock) {
                    conn.reset = true;
                }
                if let Some(a) = self.attempts.get_mut(&sock) {
                    a.reset = true;
                }
                let what = if t.reset_dir == 1 {
                    TcpEventKind::ResetSent
                } else {
                    TcpEventKind::ResetReceived
                };
                self.emit_tcp(out, what, &t.hdr, local, peer, |_| {});
            }
            kind::TCP_RTT if self.config.rtt_records => {
                self.emit_tcp(out, TcpEventKind::Rtt, &t.hdr, local, peer, |r| {
                    r.srtt_us = Some(t.srtt_us.get());
                    r.retransmits = Some(t.total_retrans.get());
                });
            }
            _ => {}
        }
    }

    /// A connect that failed, as a failed exchange of the client (protocol
    /// `tcp`): the service map shows who could not reach whom.
    #[expect(clippy::too_many_arguments, reason = "one record's fields")]
    fn failed_connect(
        &self,
        out: &mut Vec<Output>,
        pid: u32,
        tid: u32,
        comm: [u8; 16],
        src: std::net::SocketAddr,
        dst: std::net::SocketAddr,
        start_ns: u64,
        took: u64,
        errno: i32,
    ) {
        let mut attributes = Attributes::default();
        let name = match errno {
            111 => "ECONNREFUSED",
            110 => "ETIMEDOUT",
            113 => "EHOSTUNREACH",
            101 => "ENETUNREACH",
            _ => "",
        };
        if name.is_empty() {
            attributes.put_fmt("error.type", format_args!("errno {errno}"));
        } else {
            attributes.put("error.type", name);
        }
        out.push(Output::Exchange(Exchange {
            kind: "exchange",
            protocol: ProtocolId::Tcp,
            role: Role::Client,
            transport: "tcp",
            pid,
            tid,
            comm: Comm::from_raw(comm),
            src,
            dst,
            ts: unix(&self.config, start_ns),
            duration_ns: took,
            phases: Phases {
                connect: Some(took),
                ..Phases::default()
            },
            request_bytes: 0,
            response_bytes: 0,
            error: Some(ErrorKind::ConnectFailed),
            network: None,
            slow: false,
            partial: false,
            attributes,
            resource: Default::default(),
        }));
    }

    fn emit_tcp(
        &self,
        out: &mut Vec<Output>,
        event: TcpEventKind,
        hdr: &kindling_probe::abi::RecordHeader,
        src: std::net::SocketAddr,
        dst: std::net::SocketAddr,
        fill: impl FnOnce(&mut TcpRecord),
    ) {
        let mut r = TcpRecord {
            kind: "tcp",
            event,
            pid: hdr.pid.get(),
            comm: Comm::from_raw(hdr.comm),
            src,
            dst,
            ts: unix(&self.config, hdr.ts_ns.get()),
            duration_ns: None,
            errno: None,
            srtt_us: None,
            retransmits: None,
            reason: None,
            reason_name: None,
            resource: Default::default(),
        };
        fill(&mut r);
        out.push(Output::Tcp(r));
    }

    fn data(&mut self, d: &RawData, payload: &[u8], out: &mut Vec<Output>) {
        let ret = d.ret.get();
        if ret <= 0 {
            return; // an error or end of file: no bytes moved
        }
        let key = ConnKey {
            pid: d.hdr.pid.get(),
            sock: d.sk.sock.get(),
        };
        let udp = d.sk.transport() == Transport::Udp;
        if !self.conns.contains(&key) {
            let conn = Conn::new(key.pid, d.sk.local(), d.sk.peer(), udp, d.hdr.comm);
            self.insert(key, conn, false, out);
        }
        let config = &self.config;
        let shared = &mut self.shared;
        let Some(conn) = self.conns.get_mut(&key) else {
            return;
        };
        let sent = d.direction == 0;
        let now = d.hdr.ts_ns.get();
        conn.last_seen_ns = now;
        if matches!(conn.proto, Recognition::Unrecognised) {
            return;
        }
        // a send starts when the syscall is entered, a receive when it returns
        let first = if sent { d.ts_enter_ns.get() } else { now };
        let mut missing = u64::from(d.len.get().saturating_sub(d.cap_len.get()));
        let peer = d.sk.peer();
        let tid = d.hdr.tid.get();
        if conn.flight.is_none() {
            conn.flight = Some(shared.pool.pop().unwrap_or_default());
        }
        // the other direction speaking ends what this one was sending
        let other = {
            let f = conn.flight();
            let b = if sent { &mut f.received } else { &mut f.sent };
            b.force = b.retry_at > 0;
            b.force
        };
        if other {
            parse(config, shared, &key, conn, !sent, 0, conn.peer(), out);
        }
        // Zero copy: with nothing buffered in this direction, messages are
        // read straight from the payload; only a remainder is copied.
        let span = Span {
            first_ns: first,
            last_ns: now,
            tid,
        };
        let whole = payload.len();
        let payload = if missing == 0 && !udp {
            let used = parse_in_place(config, shared, &key, conn, sent, payload, span, peer, out);
            &payload[used..]
        } else {
            payload
        };
        {
            let f = conn.flight();
            let buf = if sent { &mut f.sent } else { &mut f.received };
            if udp {
                // one datagram, one message: nothing carries over
                buf.clear();
                buf.follow = None;
                buf.lost = false;
            }
            // a syscall shorter than the one before often ends a message
            buf.force |= whole < buf.last_chunk || missing > 0;
            buf.last_chunk = whole;
            if !buf.push(payload, first, now, tid, config.max_buffer) {
                shared.stats.buffer_overflows += 1;
                buf.lost_bytes += missing;
                missing = 0;
            }
        }
        parse(config, shared, &key, conn, sent, missing, peer, out);
        if udp {
            let f = conn.flight();
            let buf = if sent { &mut f.sent } else { &mut f.received };
            buf.consume(usize::MAX);
            buf.lost = false;
        }
        if let Some(f) = conn.settle() {
            shared.recycle(f);
        }
    }
}

/// The role of a connection seen without its connect or accept, from the
/// ports this host listens on: its local port (the server's end), or on
/// loopback its peer's (the client's end). `None` when neither says.
fn listening_role(listening: &rustc_hash::FxHashSet<u16>, conn: &Conn) -> Option<Role> {
    let (local, peer) = (conn.local(), conn.peer());
    if listening.contains(&local.port()) {
        Some(Role::Server)
    } else if peer.ip().is_loopback() && listening.contains(&peer.port()) {
        Some(Role::Client)
    } else {
        None
    }
}

/// Reads whole messages (and a followed message's continuation) straight
/// from a syscall's payload while nothing is buffered in its direction;
/// returns the bytes used. What is left (a partial message, an error) goes
/// through the buffer and [`parse`] as usual.
#[expect(clippy::too_many_arguments, reason = "the pipeline's split borrows")]
fn parse_in_place(
    config: &Config,
    shared: &mut Shared,
    key: &ConnKey,
    conn: &mut Conn,
    sent: bool,
    payload: &[u8],
    span: Span,
    peer: std::net::SocketAddr,
    out: &mut Vec<Output>,
) -> usize {
    let Some(role) = conn.role else { return 0 };
    let dir = if sent == (role == Role::Client) {
        Direction::Request
    } else {
        Direction::Response
    };
    let mut at = 0;
    while at < payload.len() {
        let Recognition::Known(proto) = &mut conn.proto else {
            return at;
        };
        let name = proto.id();
        let Some(f) = conn.flight.as_mut() else {
            return at;
        };
        let buf = if sent { &mut f.sent } else { &mut f.received };
        if !buf.is_empty() || buf.lost {
            return at;
        }
        if let Some(follow) = buf.follow.as_mut() {
            match follow.feed(&payload[at..]) {
                Ok(Some(used)) => {
                    follow.last_ns = span.last_ns;
                    follow.wire += used as u64;
                    at += used;
                    let follow = buf.follow.take().expect("followed");
                    finish_follow(config, shared, key, conn, name, dir, *follow, peer, out);
                    continue;
                }
                Ok(None) => {
                    follow.last_ns = span.last_ns;
                    follow.wire += (payload.len() - at) as u64;
                    return payload.len();
                }
                // the buffered path reports it and resynchronises
                Err(_) => return at,
            }
        }
        // A large Redis reply is walked once: a skipper tells whether it
        // ends in this payload before any full parse is tried.
        if dir == Direction::Response
            && matches!(proto, Proto::Redis(_))
            && payload.len() - at >= RETRY_FROM
        {
            if let Some(follow) = Follow::unfinished_redis_reply(&payload[at..]) {
                buf.follow = Some(follow.started(span, (payload.len() - at) as u64));
                return payload.len();
            }
        }
        match proto.next(
            dir,
            &payload[at..],
            &config.redaction,
            &mut shared.spare_attrs,
        ) {
            Ok(Some(msg)) => {
                at += msg.used;
                deliver(
                    config, shared, key, conn, name, msg.parsed, span, msg.wire, peer, out,
                );
            }
            // a large message or a request's body: follow it from here
            Ok(None)
                if payload.len() - at >= RETRY_FROM
                    || (dir == Direction::Request && matches!(proto, Proto::Http(_))) =>
            {
                let Some((follow, head, now)) =
                    proto.follow(dir, &payload[at..], &config.redaction)
                else {
                    return at;
                };
                at += head;
                buf.follow = Some(follow.started(span, head as u64));
                if let Some((parsed, size)) = now {
                    deliver(
                        config, shared, key, conn, name, parsed, span, size, peer, out,
                    );
                }
            }
            _ => return at,
        }
    }
    at
}

/// Parses what waits for a retry in either direction (see
/// `DirBuf::retry_at`): at a tick and before a close.
fn settle_partials(
    config: &Config,
    shared: &mut Shared,
    key: &ConnKey,
    conn: &mut Conn,
    out: &mut Vec<Output>,
) {
    for sent in [true, false] {
        let Some(f) = conn.flight.as_mut() else {
            return;
        };
        let b = if sent { &mut f.sent } else { &mut f.received };
        if b.retry_at > 0 {
            b.force = true;
            let peer = conn.peer();
            parse(config, shared, key, conn, sent, 0, peer, out);
        }
    }
}

/// Reads every complete message buffered in one direction and pairs them.
#[expect(clippy::too_many_arguments, reason = "the pipeline's split borrows")]
fn parse(
    config: &Config,
    shared: &mut Shared,
    key: &ConnKey,
    conn: &mut Conn,
    sent: bool,
    mut missing: u64,
    peer: std::net::SocketAddr,
    out: &mut Vec<Output>,
) {
    if matches!(conn.proto, Recognition::Pending) {
        if conn.role.is_none() && !conn.udp {
            conn.role = listening_role(&shared.listening, conn);
        }
        let client = conn.role.map(|r| r == Role::Client);
        let udp = conn.udp;
        let f = conn.flight();
        let head = if sent {
            f.sent.bytes()
        } else {
            f.received.bytes()
        };
        match protocol::detect(head, sent, client, udp) {
            Detected::Found(p, request) => {
                conn.proto = Recognition::Known(p);
                if conn.role.is_none() {
                    conn.role = Some(if sent == request {
                        Role::Client
                    } else {
                        Role::Server
                    });
                }
            }
            Detected::NeedMore if head.len() < DETECT_LIMIT && missing == 0 => return,
            _ => {
                shared.stats.unrecognised_connections += 1;
                conn.proto = Recognition::Unrecognised;
                conn.flight = None;
                return;
            }
        }
    }
    let client = conn.role == Some(Role::Client);
    let dir = if sent == client {
        Direction::Request
    } else {
        Direction::Response
    };
    loop {
        let Recognition::Known(proto) = &mut conn.proto else {
            return;
        };
        let f = conn.flight.get_or_insert_with(Box::default);
        let buf = if sent { &mut f.sent } else { &mut f.received };
        // a message followed past the buffer takes the bytes first
        if buf.follow.is_some() {
            match follow_step(shared, buf, &mut missing) {
                Step::Done(follow) => {
                    let name = proto.id();
                    finish_follow(config, shared, key, conn, name, dir, *follow, peer, out);
                    continue;
                }
                Step::Wait => return,
            }
        }
        if buf.is_empty() {
            if missing > 0 {
                buf.clear_lost(missing);
            }
            return;
        }
        if missing == 0 && !buf.due() {
            return;
        }
        if buf.lost {
            match proto.resync(buf.bytes(), dir) {
                Some(at) => {
                    buf.consume(at);
                    buf.lost = false;
                    shared.stats.resyncs += 1;
                }
                None => {
                    buf.clear_lost(missing);
                    return;
                }
            }
        }
        // A large Redis reply, or one cut by the capture length, is walked
        // once by a skipper before any full parse is tried (as in
        // `parse_in_place`).
        if dir == Direction::Response
            && matches!(proto, Proto::Redis(_))
            && (missing > 0 || buf.bytes().len() >= RETRY_FROM)
        {
            if let Some(follow) = Follow::unfinished_redis_reply(buf.bytes()) {
                let n = buf.bytes().len();
                start_following(buf, follow, n);
                continue;
            }
        }
        match proto.next(dir, buf.bytes(), &config.redaction, &mut shared.spare_attrs) {
            Ok(Some(msg)) => {
                buf.retry_at = 0;
                buf.force = false;
                let span = buf.span(msg.used).unwrap_or(Span {
                    first_ns: 0,
                    last_ns: 0,
                    tid: 0,
                });
                buf.consume(msg.used);
                let name = proto.id();
                deliver(
                    config, shared, key, conn, name, msg.parsed, span, msg.wire, peer, out,
                );
            }
            Ok(None) => {
                // Not all there. Follow it instead of buffering it when it is
                // large, cut by the capture length, or a request (its head
                // is enough to pair it).
                let follow_now = missing > 0
                    || buf.bytes().len() >= RETRY_FROM
                    || (dir == Direction::Request && matches!(proto, Proto::Http(_)));
                let started = if follow_now {
                    proto.follow(dir, buf.bytes(), &config.redaction)
                } else {
                    None
                };
                let Some((follow, head, now)) = started else {
                    if missing > 0 {
                        shared.stats.parse_errors += 1;
                        buf.clear_lost(missing);
                    } else {
                        buf.wait_for_more();
                    }
                    return;
                };
                let span = start_following(buf, follow, head);
                if let Some((parsed, size)) = now {
                    let name = proto.id();
                    deliver(
                        config, shared, key, conn, name, parsed, span, size, peer, out,
                    );
                }
            }
            Err(ParseError::Malformed) => {
                shared.stats.parse_errors += 1;
                buf.clear_lost(missing);
                return;
            }
            Err(ParseError::Opaque(name)) => {
                conn.proto = Recognition::Known(Proto::Opaque(name));
                if let Some(f) = conn.flight.take() {
                    shared.stats.requests_dropped += f.pending.len() as u64;
                }
                return;
            }
        }
    }
}

/// Hands the first `used` buffered bytes (the head of a message, or all of
/// what came of it) to `follow`, which reads the rest of the message from
/// now on. Returns when those bytes came.
fn start_following(buf: &mut DirBuf, follow: Follow, used: usize) -> Span {
    let span = buf.span(used.max(1)).unwrap_or(Span {
        first_ns: 0,
        last_ns: 0,
        tid: 0,
    });
    buf.consume(used);
    buf.retry_at = 0;
    buf.force = false;
    buf.follow = Some(follow.started(span, used as u64));
    span
}

/// How far a followed message got with the bytes buffered.
enum Step {
    /// It ended; the bytes after it are still buffered.
    Done(Box<Follow>),
    /// It continues past what came so far.
    Wait,
}

/// Feeds the buffered bytes (and `missing` uncaptured ones after them) to
/// the message being followed.
fn follow_step(shared: &mut Shared, buf: &mut DirBuf, missing: &mut u64) -> Step {
    let Some(mut follow) = buf.follow.take() else {
        return Step::Wait;
    };
    let n = buf.bytes().len();
    match follow.feed(buf.bytes()) {
        Ok(Some(used)) => {
            if let Some(span) = buf.span(used) {
                follow.last_ns = span.last_ns;
            }
            follow.wire += used as u64;
            buf.consume(used);
            Step::Done(follow)
        }
        Ok(None) => {
            if let Some(span) = buf.span(n) {
                follow.last_ns = span.last_ns;
            }
            follow.wire += n as u64;
            buf.consume(n);
            let mut keep = true;
            if *missing > 0 {
                shared.stats.truncated_messages += 1;
                if follow.skip_unseen(*missing).is_err() {
                    // the framing itself was not captured
                    keep = false;
                    buf.lose_followed(follow.first_ns, follow.last_ns, follow.tid, follow.wire);
                    buf.clear_lost(0);
                }
                *missing = 0;
            }
            if !keep {
                return Step::Wait;
            }
            if follow.is_done() {
                // it ended in the bytes that were not captured
                return Step::Done(follow);
            }
            buf.follow = Some(follow);
            Step::Wait
        }
        Err(_) => {
            shared.stats.parse_errors += 1;
            buf.lose_followed(follow.first_ns, follow.last_ns, follow.tid, follow.wire);
            buf.clear_lost(*missing);
            *missing = 0;
            Step::Wait
        }
    }
}

/// Delivers a followed message that ended; for a request delivered from
/// its head, moves its last byte time to the end of its body.
#[expect(clippy::too_many_arguments, reason = "the pipeline's split borrows")]
fn finish_follow(
    config: &Config,
    shared: &mut Shared,
    key: &ConnKey,
    conn: &mut Conn,
    protocol: ProtocolId,
    dir: Direction,
    follow: Follow,
    peer: std::net::SocketAddr,
    out: &mut Vec<Output>,
) {
    let span = Span {
        first_ns: follow.first_ns,
        last_ns: follow.last_ns,
        tid: follow.tid,
    };
    let wire = follow.wire;
    match follow.finish() {
        Some(parsed) => deliver(
            config, shared, key, conn, protocol, parsed, span, wire, peer, out,
        ),
        None if dir == Direction::Request => {
            if let Some(p) = conn.flight().pending.back_mut() {
                p.span.last_ns = span.last_ns;
                p.bytes = p.bytes.max(wire);
            }
        }
        None => {}
    }
}

/// Queues a request or pairs a response with its request.
#[expect(clippy::too_many_arguments, reason = "the pipeline's split borrows")]
fn deliver(
    config: &Config,
    shared: &mut Shared,
    key: &ConnKey,
    conn: &mut Conn,
    protocol: ProtocolId,
    parsed: Parsed,
    span: Span,
    wire: u64,
    peer: std::net::SocketAddr,
    out: &mut Vec<Output>,
) {
    match parsed {
        Parsed::Ignore => {}
        Parsed::Request {
            answered: false, ..
        } => {}
        Parsed::Request { key: id, attrs, .. } => {
            let connect_ns = conn.connect_ns.take();
            let retransmits_now = conn.retransmits;
            let client = conn.role == Some(Role::Client);
            let f = conn.flight();
            // A new request while the answer to an older one could not be
            // read: that answer is over (a client waits for it), so report
            // the older request with what was seen of its answer, and read
            // the next answer from a message boundary.
            let answers = if client { &mut f.received } else { &mut f.sent };
            if id.is_none() && answers.lost {
                let lost = answers.take_lost();
                let request = if lost.is_some() {
                    f.pending.pop_front()
                } else {
                    None
                };
                if let Some(((span, bytes), request)) = lost.zip(request) {
                    shared.stats.partial_exchanges += 1;
                    let request_done = request.span.last_ns;
                    let mut x = exchange(config, key, conn, protocol, request);
                    finish_exchange(config, &mut x, request_done, span, bytes);
                    x.partial = true;
                    shared.names.name_peer(&mut x);
                    out.push(Output::Exchange(x));
                }
            }
            let f = conn.flight();
            if f.pending.len() >= config.max_pending {
                if let Some(dropped) = f.pending.pop_front() {
                    shared.give_back(dropped.attrs);
                }
                shared.stats.requests_dropped += 1;
            }
            f.pending.push_back(PendingRequest {
                key: id,
                attrs,
                span,
                bytes: wire,
                peer,
                connect_ns,
                retransmits: retransmits_now,
            });
        }
        Parsed::Response {
            key: id,
            attrs,
            error,
            resolved,
        } => {
            if let Some(r) = resolved {
                let (name, addrs) = *r;
                shared.names.learn(&name, &addrs);
            }
            let f = conn.flight();
            let at = match id {
                Some(id) => f.pending.iter().position(|p| p.key == Some(id)),
                None => (!f.pending.is_empty()).then_some(0),
            };
            let Some(request) = at.and_then(|i| f.pending.remove(i)) else {
                shared.stats.unpaired_responses += 1;
                shared.give_back(attrs);
                return;
            };
            let request_done = request.span.last_ns;
            let mut x = exchange(config, key, conn, protocol, request);
            finish_exchange(config, &mut x, request_done, span, wire);
            x.error = error;
            x.attributes.extend_from(&attrs);
            shared.give_back(attrs);
            shared.names.name_peer(&mut x);
            out.push(Output::Exchange(x));
        }
    }
}

/// Fills the response side of an exchange: its phases, size and slowness.
fn finish_exchange(
    config: &Config,
    x: &mut Exchange,
    request_done: u64,
    response: Span,
    bytes: u64,
) {
    x.phases.wait = response.first_ns.saturating_sub(request_done);
    x.phases.download = response.last_ns.saturating_sub(response.first_ns);
    x.duration_ns = x
        .phases
        .connect
        .unwrap_or(0)
        .saturating_add(x.phases.send)
        .saturating_add(x.phases.wait)
        .saturating_add(x.phases.download);
    x.response_bytes = bytes;
    x.slow = x.duration_ns > config.slow_ns.of(x.protocol);
}

fn unix(config: &Config, boot_ns: u64) -> i64 {
    i64::try_from(boot_ns)
        .unwrap_or(i64::MAX)
        .saturating_add(config.boottime_to_unix_ns)
}

/// An exchange from its request; the response fields are filled by the
/// caller.
fn exchange(
    config: &Config,
    key: &ConnKey,
    conn: &Conn,
    protocol: ProtocolId,
    p: PendingRequest,
) -> Exchange {
    let peer = if conn.udp { p.peer } else { conn.peer() };
    let (src, dst) = match conn.role {
        Some(Role::Server) => (peer, conn.local()),
        _ => (conn.local(), peer),
    };
    let start = p.span.first_ns.saturating_sub(p.connect_ns.unwrap_or(0));
    let network = (!conn.udp && (conn.srtt_us > 0 || conn.retransmits > 0)).then(|| Network {
        srtt_us: conn.srtt_us,
        retransmits: conn.retransmits.saturating_sub(p.retransmits),
    });
    Exchange {
        kind: "exchange",
        protocol,
        role: conn.role.unwrap_or(Role::Client),
        transport: if conn.udp { "udp" } else { "tcp" },
        pid: key.pid,
        tid: p.span.tid,
        comm: Comm::from_raw(conn.comm),
        src,
        dst,
        ts: unix(config, start),
        duration_ns: 0,
        phases: Phases {
            connect: p.connect_ns,
            send: p.span.last_ns.saturating_sub(p.span.first_ns),
            wait: 0,
            download: 0,
        },
        request_bytes: p.bytes,
        response_bytes: 0,
        error: None,
        network,
        slow: false,
        partial: false,
        attributes: p.attrs,
        resource: Default::default(),
    }
}

/// A request that never got its answer; `until_ns` is when that became
/// known (the close, the timeout), so the wait is how long it waited.
fn unanswered(
    config: &Config,
    key: &ConnKey,
    conn: &Conn,
    p: PendingRequest,
    reset: bool,
    until_ns: u64,
) -> Exchange {
    let request_done = p.span.last_ns;
    let mut x = exchange(config, key, conn, conn_protocol(conn), p);
    x.phases.wait = until_ns.saturating_sub(request_done);
    // timestamps come from the kernel (or a capture file): never trust them
    // to add up without overflowing
    x.duration_ns = x
        .phases
        .connect
        .unwrap_or(0)
        .saturating_add(x.phases.send)
        .saturating_add(x.phases.wait);
    x.error = Some(if reset {
        ErrorKind::Reset
    } else {
        ErrorKind::NoResponse
    });
    x
}

fn conn_protocol(conn: &Conn) -> ProtocolId {
    match &conn.proto {
        Recognition::Known(proto) => proto.id(),
        // requests wait for answers only on recognised connections
        _ => ProtocolId::Tcp,
    }
}
