//! # kindling-proto
//!
//! Pure protocol parsers for the bytes Kindling sees on sockets: HTTP/1.x,
//! MySQL, Redis and DNS, detected by content and parsed without copying.
//! No I/O, no unsafe; usable on bytes from anywhere (a probe, a pcap, a proxy).
//!
//! **Status:** the parsers are not written yet (tracked as issue 3). This
//! crate currently only defines the vocabulary shared by every parser.

#![forbid(unsafe_code)]

/// Which side of an exchange a message belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server.
    Request,
    /// Server to client.
    Response,
}

/// Outcome of sniffing the first bytes of a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Detect {
    /// The bytes are this protocol.
    Match,
    /// The bytes are not this protocol.
    NoMatch,
    /// Too few bytes to tell.
    NeedMore,
}
