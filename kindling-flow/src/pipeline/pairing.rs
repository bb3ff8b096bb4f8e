//! Requests wait in a queue per connection; responses take theirs out
//! (first in, first out, or by key for DNS) and become exchanges.

use kindling_proto::ProtocolId;

use super::exchange::{answered, from_request};
use super::Cx;
use crate::buffer::Span;
use crate::conn::{Conn, PendingRequest};
use crate::protocol::Parsed;
use crate::record::{Output, Role};
use crate::stream::Unread;

/// How a message came: when, its size on the wire, and whether only its
/// whole lines could be read (the capture length cut it).
pub(super) struct Arrival {
    pub(super) span: Span,
    pub(super) wire: u64,
    pub(super) cut: bool,
}

/// Queues a request, or pairs a response with its request.
pub(super) fn deliver(
    cx: &mut Cx<'_>,
    conn: &mut Conn,
    protocol: ProtocolId,
    parsed: Parsed,
    arrival: Arrival,
) {
    let Arrival { span, wire, cut } = arrival;
    match parsed {
        Parsed::Ignore => {}
        Parsed::Delivered => cx.shared.stats.messages_delivered += 1,
        Parsed::Request {
            answered: false, ..
        } => {}
        Parsed::Request { key: id, attrs, .. } => {
            if id.is_none() {
                report_unread_answer(cx, conn, protocol);
            }
            if protocol == ProtocolId::Dns {
                if let Some(name) = attrs.get("dns.question.name") {
                    let role = conn.role.unwrap_or(Role::Client);
                    let client = cx.peer.ip();
                    let (config, pid) = (cx.config, cx.key.pid);
                    cx.shared
                        .searches
                        .asked(config, role, pid, client, name, cx.out);
                }
            }
            let connect_ns = conn.connect_ns.take();
            let retransmits = conn.retransmits;
            let f = conn.flight();
            let losses = f.losses();
            if f.pending.len() >= cx.config.max_pending {
                if let Some(dropped) = f.pending.pop_front() {
                    cx.shared.give_back(dropped.attrs);
                }
                cx.shared.stats.requests_dropped += 1;
            }
            f.pending.push_back(PendingRequest {
                key: id,
                attrs,
                span,
                bytes: wire,
                peer: cx.peer,
                connect_ns,
                retransmits,
                reported: false,
                cut,
                losses,
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
                cx.shared.names.learn(&name, &addrs);
            }
            let f = conn.flight();
            let at = match id {
                Some(id) => f.pending.iter().position(|p| p.key == Some(id)),
                None => (!f.pending.is_empty()).then_some(0),
            };
            let request = match at.and_then(|i| f.pending.remove(i)) {
                Some(request) => request,
                // a refusal sent instead of a MySQL greeting (ERR 1040 too
                // many connections) answers the connection itself: it is
                // the exchange of a request the connection's opening stands
                // for, with no bytes and the time of the answer
                None if refuses_connection(protocol, &attrs) => PendingRequest {
                    key: None,
                    attrs: crate::record::Attributes::default(),
                    span: Span {
                        first_ns: span.first_ns,
                        last_ns: span.first_ns,
                        tid: span.tid,
                    },
                    bytes: 0,
                    peer: cx.peer,
                    connect_ns: conn.connect_ns.take(),
                    retransmits: conn.retransmits,
                    reported: false,
                    cut: false,
                    losses: 0,
                },
                None => {
                    cx.shared.stats.unpaired_responses += 1;
                    cx.shared.give_back(attrs);
                    return;
                }
            };
            let request_done = request.span.last_ns;
            let mut x = from_request(cx.config, &cx.key, conn, protocol, request);
            answered(cx.config, &mut x, request_done, span, wire);
            x.error = error;
            x.partial |= cut;
            x.attributes.extend_from(&attrs);
            cx.shared.give_back(attrs);
            cx.shared.names.name_peer(&mut x);
            if protocol != ProtocolId::Dns {
                cx.out.push(Output::Exchange(x));
            } else if let Some(x) = cx.shared.searches.hold(cx.config, x, span.last_ns, cx.out) {
                // (a DNS answer may wait to tell a search-list expansion)
                cx.out.push(Output::Exchange(x));
            }
        }
    }
}

/// Gives an exchange whose answer could not be read to its end what the
/// answer's head said (its attributes); returns the error it reported.
pub(super) fn with_head(
    shared: &mut super::Shared,
    x: &mut crate::record::Exchange,
    head: Option<Parsed>,
) -> Option<crate::record::ErrorKind> {
    let Some(Parsed::Response { attrs, error, .. }) = head else {
        return None;
    };
    x.attributes.extend_from(&attrs);
    shared.give_back(attrs);
    error
}

/// A new request while the answer to an older one could not be read: that
/// answer is over (a client waits for it), so the older request is
/// reported with what was seen of its answer, and the next answer is read
/// from a message boundary.
fn report_unread_answer(cx: &mut Cx<'_>, conn: &mut Conn, protocol: ProtocolId) {
    let client = conn.role == Some(Role::Client);
    let f = conn.flight();
    let answers = if client { &mut f.received } else { &mut f.sent };
    if !answers.is_lost() {
        return;
    }
    if let Some(unread) = answers.take_gap() {
        report_unread(cx, conn, protocol, unread);
    }
}

/// An answer that could not be read to its end (what was seen of it:
/// `unread`) answered the oldest request: it is reported partial, with its
/// head's attributes when its head was read. How many more answers the
/// unread bytes held is unknown, so the other requests waiting then are
/// dropped (counted) rather than paired with answers that may not be
/// theirs.
pub(super) fn report_unread(
    cx: &mut Cx<'_>,
    conn: &mut Conn,
    protocol: ProtocolId,
    unread: Unread,
) {
    // bytes of nobody knows how many answers, none of which was read:
    // they are nobody's in particular
    let f = conn.flight();
    let request = if unread.head.is_none() && f.pending.len() > 1 {
        None
    } else {
        f.pending.pop_front()
    };
    let Some(request) = request else {
        if let Some(Parsed::Response { attrs, .. }) = unread.head {
            cx.shared.give_back(attrs);
        }
        drop_waiting(cx, conn);
        return;
    };
    cx.shared.stats.partial_exchanges += 1;
    let request_done = request.span.last_ns;
    let mut x = from_request(cx.config, &cx.key, conn, protocol, request);
    answered(cx.config, &mut x, request_done, unread.span, unread.bytes);
    x.partial = true;
    x.error = with_head(cx.shared, &mut x, unread.head);
    cx.shared.names.name_peer(&mut x);
    cx.out.push(Output::Exchange(x));
    drop_waiting(cx, conn);
}

/// Drops every request waiting on the connection (counted).
fn drop_waiting(cx: &mut Cx<'_>, conn: &mut Conn) {
    let f = conn.flight();
    cx.shared.stats.requests_dropped += super::unreported(&f.pending);
    for p in f.pending.drain(..) {
        cx.shared.give_back(p.attrs);
    }
}

/// A response that answers no request but the connection's opening: the
/// summary names it `CONNECT` (MySQL's ERR sent instead of its greeting).
fn refuses_connection(protocol: ProtocolId, attrs: &crate::record::Attributes) -> bool {
    protocol == ProtocolId::MySql && attrs.get("db.operation.name") == Some("CONNECT")
}
