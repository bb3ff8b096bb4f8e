//! One synthetic packet: IP and TCP or UDP headers (checksums right) and
//! the payload the capture holds.

use std::net::{IpAddr, SocketAddr};

use etherparse::PacketBuilder;

/// A packet to write: raw IP, its time and the process it is from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Unix time, nanoseconds.
    pub ts_ns: u64,
    /// IPv4 or IPv6 header onwards.
    pub bytes: Vec<u8>,
    /// Its length on the wire: more than `bytes` for a datagram the
    /// capture cut short.
    pub original_len: u32,
    /// Who sent or received it (pid, comm, thread, syscall, cgroup).
    pub comment: String,
    /// Inode of the network namespace it was seen in (its socket's), 0
    /// when the capture does not say: [`super::PcapngWriter`] gives each
    /// namespace an interface of its own.
    pub netns: u32,
}

/// A TCP segment to draw.
#[derive(Clone, Debug)]
pub struct Segment<'a> {
    /// Source.
    pub from: SocketAddr,
    /// Destination.
    pub to: SocketAddr,
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (the ACK flag with it).
    pub ack: Option<u32>,
    /// SYN flag.
    pub syn: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// Payload.
    pub payload: &'a [u8],
    /// Unix time, nanoseconds.
    pub ts_ns: u64,
    /// Who it is from.
    pub comment: String,
}

/// A window wide enough never to look like a stall.
const WINDOW: u16 = 65_535;
const TTL: u8 = 64;

/// The IP layer of a packet from `from` to `to` (IPv6 when either is).
fn ip(from: SocketAddr, to: SocketAddr) -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    match (from.ip(), to.ip()) {
        (IpAddr::V4(a), IpAddr::V4(b)) => PacketBuilder::ipv4(a.octets(), b.octets(), TTL),
        (a, b) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                IpAddr::V6(v6) => v6.octets(),
            };
            PacketBuilder::ipv6(v6(a), v6(b), TTL)
        }
    }
}

impl Segment<'_> {
    /// A segment without payload or flags but ACK (when `ack` is given).
    pub fn control(
        from: SocketAddr,
        to: SocketAddr,
        seq: u32,
        ack: Option<u32>,
        ts_ns: u64,
        comment: String,
    ) -> Self {
        Segment {
            from,
            to,
            seq,
            ack,
            syn: false,
            fin: false,
            rst: false,
            payload: &[],
            ts_ns,
            comment,
        }
    }

    /// This segment changed by `f` (to set a flag).
    #[must_use]
    pub fn with(mut self, f: impl FnOnce(&mut Self)) -> Self {
        f(&mut self);
        self
    }

    /// The packet.
    pub fn packet(&self) -> Packet {
        let mut b = ip(self.from, self.to).tcp(self.from.port(), self.to.port(), self.seq, WINDOW);
        if let Some(ack) = self.ack {
            b = b.ack(ack);
        }
        if self.syn {
            b = b.syn();
        }
        if self.fin {
            b = b.fin();
        }
        if self.rst {
            b = b.rst();
        }
        if !self.payload.is_empty() {
            b = b.psh();
        }
        let mut bytes = Vec::with_capacity(b.size(self.payload.len()));
        // writing to a Vec fails only for a payload too large for IP,
        // which a capture record (at most 16 KiB) never is
        b.write(&mut bytes, self.payload)
            .expect("a capture record's payload fits an IP packet");
        Packet {
            ts_ns: self.ts_ns,
            original_len: bytes.len() as u32,
            bytes,
            comment: self.comment.clone(),
            netns: 0,
        }
    }
}

impl Packet {
    /// A UDP datagram of `len` payload bytes, of which the capture holds
    /// `payload`: the headers say `len`, the packet holds what was
    /// captured (a snaplen-limited packet, as tcpdump's).
    pub fn udp(
        from: SocketAddr,
        to: SocketAddr,
        payload: &[u8],
        len: u32,
        ts_ns: u64,
        comment: String,
    ) -> Self {
        let b = ip(from, to).udp(from.port(), to.port());
        let whole = len as usize;
        // the headers are computed over the whole datagram: the missing
        // bytes are zeros there, and cut off below
        let mut full = payload.to_vec();
        full.resize(whole.max(payload.len()).min(65_000), 0);
        let mut bytes = Vec::with_capacity(b.size(full.len()));
        b.write(&mut bytes, &full)
            .expect("a datagram of at most 65,000 bytes fits an IP packet");
        let original_len = bytes.len() as u32;
        let headers = bytes.len() - full.len();
        bytes.truncate(headers + payload.len().min(full.len()));
        Packet {
            ts_ns,
            bytes,
            original_len,
            comment,
            netns: 0,
        }
    }
}
