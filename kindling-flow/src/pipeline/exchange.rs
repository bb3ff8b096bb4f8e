//! Exchanges built from a request and what came of it: phases, sizes,
//! slowness, the network under them.

use kindling_proto::ProtocolId;

use crate::buffer::Span;
use crate::config::Config;
use crate::conn::{Conn, ConnKey, PendingRequest, Recognition};
use crate::record::{Comm, ErrorKind, Exchange, Network, Phases, Role};

/// Boot time as Unix time.
pub(super) fn unix(config: &Config, boot_ns: u64) -> i64 {
    i64::try_from(boot_ns)
        .unwrap_or(i64::MAX)
        .saturating_add(config.boottime_to_unix_ns)
}

/// An exchange from its request; the response fields are filled by
/// [`answered`] or [`unanswered`].
pub(super) fn from_request(
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
        // a request cut by the capture length lacks attributes too
        partial: p.cut,
        pending: false,
        cancelled: false,
        attributes: p.attrs,
        resource: Default::default(),
        peer: Default::default(),
        drop_cause: None,
    }
}

/// Fills the response side of an exchange whose request was done at
/// `request_done`: its phases, size and slowness.
pub(super) fn answered(
    config: &Config,
    x: &mut Exchange,
    request_done: u64,
    response: Span,
    bytes: u64,
) {
    x.phases.wait = response.first_ns.saturating_sub(request_done);
    x.phases.download = response.last_ns.saturating_sub(response.first_ns);
    x.duration_ns = total(&x.phases);
    x.response_bytes = bytes;
    x.slow = x.duration_ns > config.slow_ns.of(x.protocol);
}

/// The phases added up; timestamps come from the kernel (or a capture
/// file): never trust them to add up without overflowing.
fn total(p: &Phases) -> u64 {
    p.connect
        .unwrap_or(0)
        .saturating_add(p.send)
        .saturating_add(p.wait)
        .saturating_add(p.download)
}

/// An exchange of a request without an answer, as of `until_ns`: it
/// waited from its last byte until then.
fn without_answer(
    config: &Config,
    key: &ConnKey,
    conn: &Conn,
    p: PendingRequest,
    until_ns: u64,
) -> Exchange {
    let request_done = p.span.last_ns;
    let mut x = from_request(config, key, conn, conn_protocol(conn), p);
    x.phases.wait = until_ns.saturating_sub(request_done);
    x.duration_ns = total(&x.phases);
    x
}

/// A request that never got its answer; `until_ns` is when that became
/// known (the close), so the wait is how long it waited.
pub(super) fn unanswered(
    config: &Config,
    key: &ConnKey,
    conn: &Conn,
    p: PendingRequest,
    reset: bool,
    until_ns: u64,
) -> Exchange {
    let mut x = without_answer(config, key, conn, p, until_ns);
    // the side that closed first: the client giving up is no failure
    // (TCP only: a UDP client always "closes" first, even when it gave up
    // because no answer came)
    let client_closed = !conn.udp
        && match conn.role {
            Some(Role::Client) => !conn.peer_closed,
            Some(Role::Server) => conn.peer_closed,
            None => false,
        };
    x.cancelled = client_closed && !reset;
    // A client that gave up after waiting longer than the slow threshold
    // gave up on a server that did not answer in time: still an error. One
    // that let go sooner (a load generator stopping with requests in
    // flight, a user leaving a page) saw no failure.
    let gave_up_early = x.cancelled && x.phases.wait < config.slow_ns.of(x.protocol);
    x.error = if reset {
        Some(ErrorKind::Reset)
    } else if gave_up_early {
        None
    } else {
        Some(ErrorKind::NoResponse)
    };
    x
}

/// A request still waiting for its answer at `now_ns`, reported without
/// an error; the request stays queued for its answer.
pub(super) fn still_waiting(
    config: &Config,
    key: &ConnKey,
    conn: &Conn,
    p: PendingRequest,
    now_ns: u64,
) -> Exchange {
    let mut x = without_answer(config, key, conn, p, now_ns);
    x.pending = true;
    x
}

/// The protocol a connection was recognised as.
pub(super) fn conn_protocol(conn: &Conn) -> ProtocolId {
    match &conn.proto {
        Recognition::Known(proto) => proto.id(),
        // requests wait for answers only on recognised connections
        _ => ProtocolId::Tcp,
    }
}
