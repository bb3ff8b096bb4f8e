//! A connection's life: made by connect or accept (or by its first bytes,
//! for one open before tracing began), ended by close, by TCP saying the
//! socket is gone, by eviction or by idleness, with what still waited for
//! an answer reported then.

use kindling_probe::abi::{ConnEvent, ConnKind, Transport};

use super::exchange::{answered, conn_protocol, from_request, unanswered};
use super::pairing::with_head;
use super::read::{at_close, settle};
use super::tcp_health::FailedConnect;
use super::{Cx, Pipeline};
use crate::conn::{Conn, ConnKey};
use crate::record::{ErrorKind, Output, Role, TcpEventKind};

const EINPROGRESS: i64 = 115;

impl Pipeline {
    /// Tracks a new connection. `fresh` when connect or accept made its
    /// socket just now: an entry left at the same kernel address belongs to
    /// a socket that is gone (its process exited without a close).
    pub(super) fn insert(&mut self, key: ConnKey, conn: Conn, fresh: bool, out: &mut Vec<Output>) {
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

    /// Forgets a connection, reporting what still waited for an answer:
    /// as unanswered if it was `closed` (or reset) at `now_ns`, else
    /// dropped (counted).
    pub(super) fn close(&mut self, key: ConnKey, out: &mut Vec<Output>, closed: bool, now_ns: u64) {
        let Some(mut conn) = self.conns.remove(&key) else {
            return;
        };
        let mut cx = Cx {
            config: &self.config,
            shared: &mut self.shared,
            out,
            key,
            peer: conn.peer(),
        };
        settle(&mut cx, &mut conn);
        let left = at_close(&mut cx, &mut conn, closed);
        let Some(mut f) = conn.flight.take() else {
            return;
        };
        // after bytes were given up on in either direction, how many
        // answers came is unknown: a request still waiting may have had its
        // answer among them
        let losses = f.losses();
        // The oldest request may have part of its answer: report what came
        // (unless those bytes may be several answers, none of them read).
        let ambiguous = left
            .as_ref()
            .is_some_and(|(u, cut)| !cut && u.head.is_none() && f.pending.len() > 1);
        let request = if left.is_some() && !ambiguous {
            f.pending.pop_front()
        } else {
            None
        };
        if let Some(((unread, cut), request)) = left.zip(request) {
            let protocol = conn_protocol(&conn);
            let request_done = request.span.last_ns;
            let mut x = from_request(cx.config, &key, &conn, protocol, request);
            answered(cx.config, &mut x, request_done, unread.span, unread.bytes);
            x.partial = true;
            let said = with_head(cx.shared, &mut x, unread.head);
            // a reset is a fact; a cut is one only when the framing said
            // more was to come and the connection really closed
            x.error = if conn.reset {
                Some(ErrorKind::Reset)
            } else if cut && closed {
                said.or(Some(ErrorKind::Incomplete))
            } else {
                said
            };
            cx.shared.stats.partial_exchanges += 1;
            cx.shared.names.name_peer(&mut x);
            cx.out.push(Output::Exchange(x));
        }
        for p in f.pending {
            if (closed || conn.reset) && p.losses == losses && !p.cut && !conn.role_unsure {
                let x = unanswered(cx.config, &key, &conn, p, conn.reset, now_ns);
                cx.out.push(Output::Exchange(x));
            } else if !p.reported {
                cx.shared.stats.requests_dropped += 1;
            }
        }
    }

    /// connect, accept or close.
    pub(super) fn conn_event(&mut self, e: &ConnEvent<'_>, out: &mut Vec<Output>) {
        let c = e.raw;
        let pid = c.hdr.pid.get();
        let sock = c.sk.sock.get();
        let key = ConnKey { pid, sock };
        let tcp = c.sk.transport() == Transport::Tcp;
        match e.kind {
            ConnKind::Connect => {
                let ret = c.ret.get();
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
                            FailedConnect {
                                pid,
                                tid: c.hdr.tid.get(),
                                comm: c.hdr.comm,
                                src: c.sk.local(),
                                dst: c.sk.peer(),
                                start_ns: start,
                                took_ns: took,
                                errno,
                            },
                        );
                        self.emit_tcp(
                            out,
                            TcpEventKind::ConnectFailed,
                            &c.hdr,
                            c.sk.local(),
                            c.sk.peer(),
                            |t| t.errno = Some(errno),
                        );
                    }
                    return;
                }
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
            ConnKind::Accept => {
                if c.ret.get() < 0 {
                    return;
                }
                if tcp {
                    self.shared.listening.insert(c.sk.sport.get());
                }
                let mut conn = Conn::new(pid, c.sk.local(), c.sk.peer(), !tcp, c.hdr.comm);
                conn.role = Some(Role::Server);
                conn.last_seen_ns = c.hdr.ts_ns.get();
                self.insert(key, conn, true, out);
            }
            ConnKind::Close => {
                self.attempts.remove(&sock);
                self.close(key, out, true, c.hdr.ts_ns.get());
            }
        }
    }
}
