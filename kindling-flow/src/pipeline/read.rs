//! Socket payload: recognising a connection's protocol, then reading each
//! direction's stream and pairing what it yields.

use kindling_probe::abi::{DataEvent, Direction as Way, Transport};
use kindling_proto::Direction;

use super::pairing::{deliver, report_unread, Arrival};
use super::Cx;
use crate::buffer::Span;
use crate::conn::{Conn, Recognition};
use crate::protocol::{self, Detected, Proto};
use crate::record::Role;
use crate::stream::{Closed, Input, Item, Stream, StreamCx, Unread};

/// Bytes seen without recognising a protocol before giving up on them.
const DETECT_LIMIT: usize = 4096;

/// Messages (syscalls' worth of bytes, up to [`DETECT_LIMIT`] each) a
/// connection may show without being recognised before it is given up:
/// one that began before the capture may be first seen mid-answer, and
/// its next request tells.
const DETECT_ATTEMPTS: u8 = 8;

/// One syscall's payload on a tracked connection.
pub(super) fn data(cx: &mut Cx<'_>, conn: &mut Conn, d: &DataEvent<'_>) {
    let raw = d.raw;
    let sent = d.direction() == Way::Egress;
    let now = raw.hdr.ts_ns.get();
    conn.last_seen_ns = now;
    if matches!(conn.proto, Recognition::Unrecognised) {
        return;
    }
    let udp = raw.sk.transport() == Transport::Udp;
    // a send starts when the syscall is entered, a receive when it returns
    let span = Span {
        first_ns: if sent { raw.ts_enter_ns.get() } else { now },
        last_ns: now,
        tid: raw.hdr.tid.get(),
    };
    let missing = u64::from(raw.len.get().saturating_sub(raw.cap_len.get()));
    if conn.flight.is_none() {
        conn.flight = Some(cx.shared.pool.pop().unwrap_or_default());
    }
    // the other direction speaking ends what this one was sending
    if stream(conn, !sent).force_retry() {
        // (the connection's peer, not this datagram's)
        let datagram_peer = std::mem::replace(&mut cx.peer, conn.peer());
        read(cx, conn, !sent, Input::none());
        cx.peer = datagram_peer;
    }
    // Zero copy: with nothing buffered in this direction, messages are read
    // straight from the payload; only a remainder is copied.
    let in_place =
        missing == 0 && !udp && conn.role.is_some() && matches!(conn.proto, Recognition::Known(_));
    let this = stream(conn, sent);
    if udp {
        this.start_datagram();
    }
    this.note_chunk(d.payload.len(), missing);
    read(
        cx,
        conn,
        sent,
        Input::new(d.payload, missing, span, in_place),
    );
    if udp {
        stream(conn, sent).end_datagram();
    }
    if let Some(f) = conn.settle() {
        cx.shared.recycle(f);
    }
}

/// The stream of one direction (`sent`: what the traced process sends).
fn stream(conn: &mut Conn, sent: bool) -> &mut Stream {
    let f = conn.flight();
    if sent {
        &mut f.sent
    } else {
        &mut f.received
    }
}

/// Parses what waits for a retry in either direction: at a tick and
/// before a close.
pub(super) fn settle(cx: &mut Cx<'_>, conn: &mut Conn) {
    for sent in [true, false] {
        let Some(f) = conn.flight.as_mut() else {
            return;
        };
        let s = if sent { &mut f.sent } else { &mut f.received };
        if s.awaits_retry() {
            s.force_retry();
            read(cx, conn, sent, Input::none());
        }
    }
}

/// The connection is going away (`closed`: it really closed): an answer
/// the close ends is delivered; what is left of an unfinished one is
/// returned, with whether its framing said more was to come.
pub(super) fn at_close(cx: &mut Cx<'_>, conn: &mut Conn, closed: bool) -> Option<(Unread, bool)> {
    let Recognition::Known(proto) = &mut conn.proto else {
        return None;
    };
    let id = proto.id();
    // the answers: what a client receives, what a server sends
    let sent = conn.role != Some(Role::Client);
    let f = conn.flight.as_mut()?;
    let stream = if sent { &mut f.sent } else { &mut f.received };
    let mut scx = StreamCx {
        proto,
        dir: Direction::Response,
        options: &cx.shared.summary,
        stats: &mut cx.shared.stats,
        spare: &mut cx.shared.spare_attrs,
        max_buffer: cx.config.max_buffer,
    };
    match stream.close(&mut scx, closed)? {
        Closed::Ended(Item::Message {
            parsed,
            span,
            wire,
            cut,
        }) => {
            deliver(cx, conn, id, parsed, Arrival { span, wire, cut });
            None
        }
        Closed::Ended(_) => None,
        Closed::Cut(unread) => Some((unread, true)),
        Closed::Unframed(unread) => Some((unread, false)),
    }
}

/// Reads every message `input` (and what is buffered) completes in one
/// direction, and pairs them.
fn read(cx: &mut Cx<'_>, conn: &mut Conn, sent: bool, mut input: Input<'_>) {
    if matches!(conn.proto, Recognition::Pending) && !recognise(cx, conn, sent, &mut input) {
        return;
    }
    let dir = if sent == (conn.role == Some(Role::Client)) {
        Direction::Request
    } else {
        Direction::Response
    };
    while !input.is_used_up() {
        let Recognition::Known(proto) = &mut conn.proto else {
            return;
        };
        let id = proto.id();
        let f = conn.flight.get_or_insert_with(Box::default);
        let stream = if sent { &mut f.sent } else { &mut f.received };
        let mut scx = StreamCx {
            proto,
            dir,
            options: &cx.shared.summary,
            stats: &mut cx.shared.stats,
            spare: &mut cx.shared.spare_attrs,
            max_buffer: cx.config.max_buffer,
        };
        let losses = stream.losses();
        let item = stream.next(&mut input, &mut scx);
        if dir == Direction::Response && stream.losses() != losses {
            if let Recognition::Known(proto) = &mut conn.proto {
                proto.answers_lost();
            }
        }
        let Some(item) = item else {
            return;
        };
        match item {
            Item::Message {
                parsed,
                span,
                wire,
                cut,
            } => deliver(cx, conn, id, parsed, Arrival { span, wire, cut }),
            // a request delivered from its head: it ends with its body
            Item::BodyEnded { last_ns, wire } => {
                if let Some(p) = conn.flight().pending.back_mut() {
                    p.span.last_ns = last_ns;
                    p.bytes = p.bytes.max(wire);
                }
            }
            Item::Unread(unread) => report_unread(cx, conn, id, unread),
            Item::Opaque(id) => {
                conn.proto = Recognition::Known(Proto::Opaque(id));
                if let Some(f) = conn.flight.take() {
                    cx.shared.stats.requests_dropped += super::unreported(&f.pending);
                }
                return;
            }
        }
    }
}

/// Detects the protocol of a connection from the first bytes of one
/// direction (buffering `input` for it); the role too when connect or
/// accept did not tell. False while it cannot tell yet, or never will.
fn recognise(cx: &mut Cx<'_>, conn: &mut Conn, sent: bool, input: &mut Input<'_>) -> bool {
    if conn.role.is_none() && !conn.udp {
        conn.role = listening_role(&cx.shared.listening, conn);
    }
    let client = conn.role.map(|r| r == Role::Client);
    let udp = conn.udp;
    let again = conn.detect_attempts > 0;
    let stream = stream(conn, sent);
    stream.buffer(input, &mut cx.shared.stats, cx.config.max_buffer);
    let head = stream.bytes();
    match protocol::detect(head, sent, client, udp, again) {
        Detected::Found(p, request) => {
            conn.role_unsure = conn.role.is_none() && matches!(p, Proto::Redis(_));
            conn.proto = Recognition::Known(p);
            if request {
                // what the other side sent before a first request (the
                // rest of an earlier answer, on a connection joined
                // mid-way) answers none of what follows
                self::stream(conn, !sent).reset();
            }
            if conn.role.is_none() {
                conn.role = Some(if sent == request {
                    Role::Client
                } else {
                    Role::Server
                });
            }
            true
        }
        Detected::NeedMore if head.len() < DETECT_LIMIT && input.missing() == 0 => false,
        _ if conn.detect_attempts + 1 < DETECT_ATTEMPTS => {
            // not a beginning: look again at the next bytes either way
            conn.detect_attempts += 1;
            if let Some(f) = conn.flight.take() {
                cx.shared.recycle(f);
            }
            false
        }
        _ => {
            cx.shared.stats.unrecognised_connections += 1;
            conn.proto = Recognition::Unrecognised;
            conn.flight = None;
            false
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
