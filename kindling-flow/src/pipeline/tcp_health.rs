//! TCP health: connects (their time, their failures), retransmits, resets,
//! RTT samples and drops, as TCP records; and the RTT and retransmit
//! counts each connection carries into its exchanges.

use std::net::SocketAddr;

use kindling_probe::abi::{RawTcp, RecordHeader, ResetDirection, TcpEvent, TcpKind};
use kindling_proto::{AttributeSink, ProtocolId};

use super::exchange::unix;
use super::Pipeline;
use crate::record::{
    Attributes, Comm, ErrorKind, Exchange, Output, Phases, Role, TcpEventKind, TcpRecord,
};

/// TCP states (`include/net/tcp_states.h`).
const TCP_ESTABLISHED: u8 = 1;
const TCP_SYN_SENT: u8 = 2;
const TCP_CLOSE: u8 = 7;
const TCP_CLOSE_WAIT: u8 = 8;
pub(super) const TCP_LISTEN: u8 = 10;

/// `ECONNREFUSED` and `ETIMEDOUT`.
const ECONNREFUSED: i32 = 111;
const ETIMEDOUT: i32 = 110;

/// A TCP connect seen from its SYN.
#[derive(Clone, Copy, Debug)]
pub(super) struct Attempt {
    start_ns: u64,
    pid: u32,
    comm: [u8; 16],
    /// Handshake time, once established (until connect() returns).
    pub(super) took_ns: Option<u64>,
    /// The peer answered with a reset.
    reset: bool,
    /// Reported as failed already.
    pub(super) failed: bool,
}

/// A connect that failed, as the client's failed exchange of protocol
/// `tcp`: the service map shows who could not reach whom.
pub(super) struct FailedConnect {
    pub(super) pid: u32,
    pub(super) tid: u32,
    pub(super) comm: [u8; 16],
    pub(super) src: SocketAddr,
    pub(super) dst: SocketAddr,
    pub(super) start_ns: u64,
    pub(super) took_ns: u64,
    pub(super) errno: i32,
}

impl Pipeline {
    pub(super) fn tcp_event(&mut self, e: &TcpEvent<'_>, out: &mut Vec<Output>) {
        let t = e.raw;
        let sock = t.sk.sock.get();
        let (local, peer) = (t.sk.local(), t.sk.peer());
        // every TCP record carries the socket's RTT and retransmit count
        if let Some(conn) = self.conns.by_sock_mut(sock) {
            if t.srtt_us.get() > 0 {
                conn.srtt_us = t.srtt_us.get();
            }
            conn.retransmits = conn.retransmits.max(t.total_retrans.get());
        }
        match e.kind {
            TcpKind::State => {
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
                self.state_change(t, out);
            }
            TcpKind::Retransmit => {
                self.emit_tcp(out, TcpEventKind::Retransmit, &t.hdr, local, peer, |r| {
                    r.retransmits = Some(t.total_retrans.get());
                    r.srtt_us = Some(t.srtt_us.get());
                });
            }
            TcpKind::Reset => {
                if let Some(conn) = self.conns.by_sock_mut(sock) {
                    conn.reset = true;
                }
                if let Some(a) = self.attempts.get_mut(&sock) {
                    a.reset = true;
                }
                let what = match e.reset() {
                    Some(ResetDirection::Sent) => TcpEventKind::ResetSent,
                    _ => TcpEventKind::ResetReceived,
                };
                self.emit_tcp(out, what, &t.hdr, local, peer, |_| {});
            }
            TcpKind::Rtt if self.config.rtt_records => {
                self.emit_tcp(out, TcpEventKind::Rtt, &t.hdr, local, peer, |r| {
                    r.srtt_us = Some(t.srtt_us.get());
                    r.retransmits = Some(t.total_retrans.get());
                });
            }
            TcpKind::Rtt => {}
        }
    }

    /// A socket's TCP state changed: a connect starts, succeeds or fails,
    /// or the socket is gone.
    fn state_change(&mut self, t: &RawTcp, out: &mut Vec<Output>) {
        let hdr = &t.hdr;
        let sock = t.sk.sock.get();
        let (local, peer) = (t.sk.local(), t.sk.peer());
        let now = hdr.ts_ns.get();
        match (t.old_state, t.new_state) {
            // the SYN leaves from inside connect(): pid and comm are right
            (TCP_CLOSE, TCP_SYN_SENT) if self.attempts.len() < self.config.max_connections => {
                self.attempts.insert(
                    sock,
                    Attempt {
                        start_ns: now,
                        pid: hdr.pid.get(),
                        comm: hdr.comm,
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
                self.emit_tcp(out, TcpEventKind::Connect, hdr, local, peer, |r| {
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
                let errno = if a.reset { ECONNREFUSED } else { ETIMEDOUT };
                let (pid, comm, start) = (a.pid, a.comm, a.start_ns);
                let took = now.saturating_sub(start);
                self.failed_connect(
                    out,
                    FailedConnect {
                        pid,
                        tid: pid,
                        comm,
                        src: local,
                        dst: peer,
                        start_ns: start,
                        took_ns: took,
                        errno,
                    },
                );
                self.emit_tcp(out, TcpEventKind::ConnectFailed, hdr, local, peer, |r| {
                    r.errno = Some(errno);
                    r.duration_ns = Some(took);
                    r.pid = pid;
                    r.comm = Comm::from_raw(comm);
                });
            }
            // the peer closed its side first
            (TCP_ESTABLISHED, TCP_CLOSE_WAIT) => {
                for key in self.conns.keys_of_sock(sock) {
                    if let Some(conn) = self.conns.get_mut(&key) {
                        conn.peer_closed = true;
                    }
                }
            }
            // the socket is gone (closed, reset, or into TIME_WAIT): so are
            // its connections, even if no close() was seen (a process that
            // exits closes its sockets without one)
            (_, TCP_CLOSE) => {
                for key in self.conns.keys_of_sock(sock) {
                    self.close(key, out, true, now);
                }
            }
            _ => {}
        }
    }

    /// Reports a failed connect as a failed exchange of the client.
    pub(super) fn failed_connect(&self, out: &mut Vec<Output>, f: FailedConnect) {
        let mut attributes = Attributes::default();
        let name = match f.errno {
            ECONNREFUSED => "ECONNREFUSED",
            ETIMEDOUT => "ETIMEDOUT",
            113 => "EHOSTUNREACH",
            101 => "ENETUNREACH",
            _ => "",
        };
        if name.is_empty() {
            attributes.put_fmt("error.type", format_args!("errno {}", f.errno));
        } else {
            attributes.put("error.type", name);
        }
        out.push(Output::Exchange(Exchange {
            pid: f.pid,
            tid: f.tid,
            comm: Comm::from_raw(f.comm),
            ts: unix(&self.config, f.start_ns),
            duration_ns: f.took_ns,
            phases: Phases {
                connect: Some(f.took_ns),
                ..Phases::default()
            },
            error: Some(ErrorKind::ConnectFailed),
            attributes,
            ..Exchange::new(ProtocolId::Tcp, Role::Client, f.src, f.dst)
        }));
    }

    /// Appends a TCP record of `event`, filled by `fill` beyond the header.
    pub(super) fn emit_tcp(
        &self,
        out: &mut Vec<Output>,
        event: TcpEventKind,
        hdr: &RecordHeader,
        src: SocketAddr,
        dst: SocketAddr,
        fill: impl FnOnce(&mut TcpRecord),
    ) {
        let mut r = TcpRecord {
            pid: hdr.pid.get(),
            comm: Comm::from_raw(hdr.comm),
            ts: unix(&self.config, hdr.ts_ns.get()),
            ..TcpRecord::new(event, src, dst)
        };
        fill(&mut r);
        out.push(Output::Tcp(r));
    }
}
