//! The connection table's entries.

use std::collections::VecDeque;

use rustc_hash::FxHashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use crate::buffer::Span;
use crate::protocol::Proto;
use crate::record::Role;
use crate::stream::Stream;

/// A connection as one process holds it: the same socket in two processes
/// (a forked server) is two entries; two fds of one socket (`dup`) are one;
/// a reused fd holds a new socket, so a new entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct ConnKey {
    pub(crate) pid: u32,
    /// Kernel socket address, stable while the socket lives.
    pub(crate) sock: u64,
}

/// Protocol recognition progress.
#[derive(Debug)]
pub(crate) enum Recognition {
    Pending,
    Known(Proto),
    /// Nothing recognised: the bytes are ignored from now on.
    Unrecognised,
}

/// A request waiting for its response.
#[derive(Clone, Debug)]
pub(crate) struct PendingRequest {
    pub(crate) key: Option<u64>,
    pub(crate) attrs: crate::record::Attributes,
    pub(crate) span: Span,
    pub(crate) bytes: u64,
    /// For datagrams: the peer it went to (an unconnected socket talks to
    /// many).
    pub(crate) peer: SocketAddr,
    /// Connect time, for a connection's first exchange.
    pub(crate) connect_ns: Option<u64>,
    /// The connection's retransmit count when the request was read.
    pub(crate) retransmits: u32,
    /// Reported as still waiting (past the response timeout) already.
    pub(crate) reported: bool,
    /// Only its whole lines were read (the capture length cut it).
    pub(crate) cut: bool,
    /// Bytes given up on in the connection's two streams when it was read
    /// ([`InFlight::losses`]): if more were since, its answer may have
    /// been among them.
    pub(crate) losses: u32,
}

/// Parsing state that exists only while something is in flight; dropped
/// when the connection goes idle, so an idle connection stays small.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    pub(crate) sent: Stream,
    pub(crate) received: Stream,
    pub(crate) pending: VecDeque<PendingRequest>,
}

impl InFlight {
    /// Empties it for reuse, keeping modest buffer capacities.
    pub(crate) fn reset(&mut self) {
        self.sent.reset();
        self.received.reset();
        self.pending.clear();
    }

    /// Times bytes were given up on in either direction.
    pub(crate) fn losses(&self) -> u32 {
        self.sent.losses().wrapping_add(self.received.losses())
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.sent.is_quiet() && self.received.is_quiet() && self.pending.is_empty()
    }
}

/// Both ends of a connection, compactly (two `SocketAddr`s take 64 bytes).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ends {
    local_ip: [u8; 16],
    peer_ip: [u8; 16],
    local_port: u16,
    peer_port: u16,
    v6: bool,
}

impl Ends {
    fn new(local: SocketAddr, peer: SocketAddr) -> Self {
        let bytes = |a: SocketAddr| match a.ip() {
            IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
            IpAddr::V6(v6) => v6.octets(),
        };
        Self {
            local_ip: bytes(local),
            peer_ip: bytes(peer),
            local_port: local.port(),
            peer_port: peer.port(),
            v6: local.is_ipv6(),
        }
    }

    fn addr(&self, ip: [u8; 16], port: u16) -> SocketAddr {
        let v6 = Ipv6Addr::from(ip);
        let ip = match v6.to_ipv4_mapped() {
            Some(v4) if !self.v6 => IpAddr::V4(v4),
            _ => IpAddr::V6(v6),
        };
        SocketAddr::new(ip, port)
    }
}

/// One tracked connection.
#[derive(Debug)]
pub(crate) struct Conn {
    ends: Ends,
    /// The process holding it.
    pub(crate) pid: u32,
    pub(crate) udp: bool,
    pub(crate) comm: [u8; 16],
    pub(crate) role: Option<Role>,
    pub(crate) proto: Recognition,
    pub(crate) flight: Option<Box<InFlight>>,
    pub(crate) last_seen_ns: u64,
    /// How long the connect took, until the first exchange takes it.
    pub(crate) connect_ns: Option<u64>,
    /// A reset was sent or received.
    pub(crate) reset: bool,
    /// Times its bytes were not recognised (see `pipeline::read`).
    pub(crate) detect_attempts: u8,
    /// Its role was guessed from bytes that read alike both ways (RESP
    /// arrays: a command, or a reply joined half-way): a "request" left
    /// unanswered at the close may have been no request.
    pub(crate) role_unsure: bool,
    /// The other end closed its side first (a read saw the end of the
    /// stream, or TCP went to CLOSE_WAIT): who closed first tells a request
    /// the client gave up on from one the server left unanswered.
    pub(crate) peer_closed: bool,
    /// Latest smoothed RTT the kernel reported for the socket, µs (0: none).
    pub(crate) srtt_us: u32,
    /// Segments the socket retransmitted so far, as last reported.
    pub(crate) retransmits: u32,
}

impl Conn {
    pub(crate) fn new(
        pid: u32,
        local: SocketAddr,
        peer: SocketAddr,
        udp: bool,
        comm: [u8; 16],
    ) -> Self {
        Self {
            ends: Ends::new(local, peer),
            pid,
            udp,
            comm,
            role: None,
            proto: Recognition::Pending,
            flight: None,
            last_seen_ns: 0,
            connect_ns: None,
            reset: false,
            detect_attempts: 0,
            role_unsure: false,
            peer_closed: false,
            srtt_us: 0,
            retransmits: 0,
        }
    }

    /// This end.
    pub(crate) fn local(&self) -> SocketAddr {
        self.ends.addr(self.ends.local_ip, self.ends.local_port)
    }

    /// The other end.
    pub(crate) fn peer(&self) -> SocketAddr {
        self.ends.addr(self.ends.peer_ip, self.ends.peer_port)
    }

    pub(crate) fn flight(&mut self) -> &mut InFlight {
        self.flight.get_or_insert_with(Box::default)
    }

    /// Gives back the in-flight state once nothing is in flight.
    pub(crate) fn settle(&mut self) -> Option<Box<InFlight>> {
        if self.flight.as_ref().is_some_and(|f| f.is_idle()) {
            self.flight.take()
        } else {
            None
        }
    }
}

/// The connection table. Almost every socket is held by one process, so
/// entries are keyed by socket alone, and TCP events (which know only the
/// socket) find their connection directly; a second process on the same
/// socket (after a fork) gets an entry in a small side table.
#[derive(Debug, Default)]
pub(crate) struct ConnTable {
    // socket addresses are kernel pointers, not attacker-chosen keys: a
    // fast hash is safe here
    by_sock: FxHashMap<u64, Conn>,
    shared: FxHashMap<ConnKey, Conn>,
}

impl ConnTable {
    pub(crate) fn len(&self) -> usize {
        self.by_sock.len() + self.shared.len()
    }

    pub(crate) fn get_mut(&mut self, key: &ConnKey) -> Option<&mut Conn> {
        match self.by_sock.get_mut(&key.sock) {
            Some(c) if c.pid == key.pid => Some(c),
            _ => self.shared.get_mut(key),
        }
    }

    pub(crate) fn contains(&self, key: &ConnKey) -> bool {
        match self.by_sock.get(&key.sock) {
            Some(c) if c.pid == key.pid => true,
            _ => self.shared.contains_key(key),
        }
    }

    /// The connection of a socket (its first process).
    pub(crate) fn by_sock_mut(&mut self, sock: u64) -> Option<&mut Conn> {
        self.by_sock.get_mut(&sock)
    }

    /// Inserts a connection not in the table yet (its `pid` is the key's).
    pub(crate) fn insert(&mut self, sock: u64, conn: Conn) {
        match self.by_sock.entry(sock) {
            std::collections::hash_map::Entry::Occupied(_) => {
                let key = ConnKey {
                    pid: conn.pid,
                    sock,
                };
                self.shared.insert(key, conn);
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(conn);
            }
        }
    }

    pub(crate) fn remove(&mut self, key: &ConnKey) -> Option<Conn> {
        match self.by_sock.get(&key.sock) {
            Some(c) if c.pid == key.pid => self.by_sock.remove(&key.sock),
            _ => self.shared.remove(key),
        }
    }

    /// Every entry of a socket, whichever process holds it.
    pub(crate) fn keys_of_sock(&self, sock: u64) -> Vec<ConnKey> {
        let mut keys: Vec<ConnKey> = self
            .shared
            .keys()
            .filter(|k| k.sock == sock)
            .copied()
            .collect();
        if let Some(c) = self.by_sock.get(&sock) {
            keys.push(ConnKey { pid: c.pid, sock });
        }
        keys
    }

    /// Some key, to evict.
    pub(crate) fn any_key(&self) -> Option<ConnKey> {
        self.iter().next().map(|(k, _)| k)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (ConnKey, &Conn)> {
        self.by_sock
            .iter()
            .map(|(&sock, c)| (ConnKey { pid: c.pid, sock }, c))
            .chain(self.shared.iter().map(|(k, c)| (*k, c)))
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (ConnKey, &mut Conn)> {
        self.by_sock
            .iter_mut()
            .map(|(&sock, c)| (ConnKey { pid: c.pid, sock }, c))
            .chain(self.shared.iter_mut().map(|(k, c)| (*k, c)))
    }

    pub(crate) fn capacity(&self) -> usize {
        self.by_sock.capacity() + self.shared.capacity()
    }
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes() {
        eprintln!(
            "Conn {} ConnKey {} http1::Session {} redis {} mysql {} Recognition {} SocketAddr {}",
            size_of::<super::Conn>(),
            size_of::<super::ConnKey>(),
            size_of::<kindling_proto::http1::Session>(),
            size_of::<kindling_proto::redis::Session>(),
            size_of::<kindling_proto::mysql::Session>(),
            size_of::<super::Recognition>(),
            size_of::<std::net::SocketAddr>(),
        );
    }
}
