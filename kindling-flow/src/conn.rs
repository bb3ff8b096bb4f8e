//! The connection table's entries.

use std::collections::VecDeque;
use std::net::SocketAddr;

use crate::buffer::{DirBuf, Span};
use crate::protocol::Proto;
use crate::record::Role;

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
#[derive(Debug)]
pub(crate) struct PendingRequest {
    pub(crate) key: Option<u16>,
    pub(crate) attrs: Vec<(&'static str, String)>,
    pub(crate) span: Span,
    pub(crate) bytes: u64,
    /// For datagrams: the peer it went to (an unconnected socket talks to
    /// many).
    pub(crate) peer: SocketAddr,
    /// Connect time, for a connection's first exchange.
    pub(crate) connect_ns: Option<u64>,
}

/// Parsing state that exists only while something is in flight; dropped
/// when the connection goes idle, so an idle connection stays small.
#[derive(Debug, Default)]
pub(crate) struct InFlight {
    pub(crate) sent: DirBuf,
    pub(crate) received: DirBuf,
    pub(crate) pending: VecDeque<PendingRequest>,
}

impl InFlight {
    pub(crate) fn is_idle(&self) -> bool {
        let quiet = |d: &DirBuf| d.bytes.is_empty() && d.skip == 0 && !d.lost;
        quiet(&self.sent) && quiet(&self.received) && self.pending.is_empty()
    }
}

/// One tracked connection.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
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
}

impl Conn {
    pub(crate) fn new(local: SocketAddr, peer: SocketAddr, udp: bool, comm: [u8; 16]) -> Self {
        Self {
            local,
            peer,
            udp,
            comm,
            role: None,
            proto: Recognition::Pending,
            flight: None,
            last_seen_ns: 0,
            connect_ns: None,
            reset: false,
        }
    }

    pub(crate) fn flight(&mut self) -> &mut InFlight {
        self.flight.get_or_insert_with(Box::default)
    }

    /// Frees the in-flight state once nothing is in flight.
    pub(crate) fn settle(&mut self) {
        if self.flight.as_ref().is_some_and(|f| f.is_idle()) {
            self.flight = None;
        }
    }
}

/// Process name from a NUL-padded `comm`.
pub(crate) fn comm_str(comm: &[u8; 16]) -> String {
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..end]).into_owned()
}
