//! The event ABI: Rust mirrors of the records defined in `bpf/kindling.h`, and
//! a zero-copy decoder.
//!
//! Every record starts with a [`RecordHeader`]; its `size` covers the whole
//! record. Fields are native-endian and declared with zerocopy's unaligned
//! integer types, so a record can be viewed in place over ring-buffer memory or
//! over any byte offset of a capture file. [`decode`] never allocates and never
//! panics: malformed bytes give a [`DecodeError`].
//!
//! ```text
//! ke_header (48) ─┬─ ke_data (144) + cap_len payload bytes   KE_DATA
//!                 ├─ ke_conn (136)                           KE_CONNECT / KE_ACCEPT / KE_CLOSE
//!                 ├─ ke_tcp  (128)                           KE_TCP_STATE / _RETRANSMIT / _RESET / _RTT
//!                 ├─ ke_drop (120)                           KE_SKB_DROP
//!                 └─ ke_lost (112)                           KE_LOST (written by the recorder)
//!
//! Every body starts with the header and a ke_sock (56) naming the socket.
//! ```

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use zerocopy::byteorder::native_endian::{I32, I64, U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Version of the record layouts; equals `KINDLING_ABI_VERSION` in `kindling.h`.
pub const ABI_VERSION: u16 = 2;
/// Size of [`SockTuple`] in ABI 1, before it carried the network namespace:
/// captures of that version are upgraded as they are read
/// ([`crate::capture::CaptureReader`]).
pub const ABI1_SOCK_SIZE: usize = 48;
/// Largest payload the kernel side captures per syscall message.
pub const MAX_SNAPLEN: u32 = 16384;
/// Parts one syscall's payload is split into at most when it is captured in
/// full under the framing budget (`KINDLING_MAX_PARTS`).
pub const MAX_PARTS: u32 = 16;

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Record kinds, as in `enum ke_kind`.
pub mod kind {
    /// Payload of a socket read or write.
    pub const DATA: u16 = 1;
    /// `connect(2)` returned.
    pub const CONNECT: u16 = 2;
    /// `accept(2)`/`accept4(2)` returned a new socket.
    pub const ACCEPT: u16 = 3;
    /// `close(2)` on a socket returned.
    pub const CLOSE: u16 = 4;
    /// TCP state transition.
    pub const TCP_STATE: u16 = 5;
    /// TCP segment retransmitted.
    pub const TCP_RETRANSMIT: u16 = 6;
    /// TCP reset sent or received.
    pub const TCP_RESET: u16 = 7;
    /// Rate-limited smoothed-RTT sample.
    pub const TCP_RTT: u16 = 8;
    /// TCP/UDP packet freed with a drop reason.
    pub const SKB_DROP: u16 = 9;
    /// Records lost before this point (written by the recorder).
    pub const LOST: u16 = 10;
    /// One hop of a traced packet (the packet tracer's ring, see
    /// [`super::decode_packet`]).
    pub const PACKET: u16 = 11;
}

/// Header flags, as the `KF_*` defines.
pub mod flags {
    /// The payload is longer than the captured bytes.
    pub const TRUNCATED: u16 = 1 << 0;
    /// User memory could not be read; the payload is missing or partial.
    pub const READ_FAILED: u16 = 1 << 1;
    /// The peer address came from the syscall's sockaddr argument.
    pub const PEER_FROM_ADDR: u16 = 1 << 2;
    /// No socket: the tuple was parsed from packet headers.
    pub const NO_SOCK: u16 = 1 << 3;
    /// The syscall's payload goes on in the next data record of the same
    /// thread: a TCP syscall captured in full under the framing budget is
    /// split into parts of at most [`super::MAX_SNAPLEN`] bytes, each with
    /// its own `len` (and the syscall's `ret`).
    pub const CONTINUED: u16 = 1 << 4;
}

/// The fixed header of every record (`struct ke_header`).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RecordHeader {
    /// Record kind, see [`kind`].
    pub kind: U16,
    /// Bit set of [`flags`].
    pub flags: U16,
    /// Whole record size in bytes, header and payload included.
    pub size: U32,
    /// `CLOCK_BOOTTIME` nanoseconds (syscall exit for syscall records).
    pub ts_ns: U64,
    /// Thread-group id (the process id).
    pub pid: U32,
    /// Thread id.
    pub tid: U32,
    /// cgroup v2 id of the task.
    pub cgroup_id: U64,
    /// Task name, NUL padded.
    pub comm: [u8; 16],
}

/// Socket identity and addresses from the process' side (`struct ke_sock`).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct SockTuple {
    /// Kernel address of the `struct sock`: stable while the socket lives.
    pub sock: U64,
    /// Local address, IPv4 in the first four bytes.
    pub saddr: [u8; 16],
    /// Remote address.
    pub daddr: [u8; 16],
    /// Local port.
    pub sport: U16,
    /// Remote port.
    pub dport: U16,
    /// `AF_INET` (2) or `AF_INET6` (10).
    pub family: U16,
    /// `IPPROTO_TCP` (6) or `IPPROTO_UDP` (17).
    pub protocol: u8,
    /// Kernel `sk_state` when the record was made.
    pub state: u8,
    /// Inode of the socket's network namespace (as `/proc/PID/ns/net`
    /// names it); for a packet without a socket, its device's. 0 when
    /// unknown, and in captures of ABI 1.
    pub netns: U32,
    /// Padding.
    pub pad: U32,
}

/// Body of a [`kind::DATA`] record (`struct ke_data`); the payload follows.
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawData {
    /// Common header.
    pub hdr: RecordHeader,
    /// Socket.
    pub sk: SockTuple,
    /// Syscall entry time, `CLOCK_BOOTTIME` ns. Since probe v2 data
    /// syscalls are captured at their exit alone (their arguments read
    /// from the saved user registers), and this equals `hdr.ts_ns`;
    /// captures from earlier probes hold the real entry time.
    pub ts_enter_ns: U64,
    /// Syscall return value.
    pub ret: I64,
    /// Socket inode number.
    pub ino: U64,
    /// True payload length of this message.
    pub len: U32,
    /// Captured payload bytes following the body.
    pub cap_len: U32,
    /// File descriptor.
    pub fd: I32,
    /// Syscall number in Kindling's numbering, see [`Syscall`].
    pub syscall: u8,
    /// 0 = egress (sent), 1 = ingress (received).
    pub direction: u8,
    /// Index of the message within `sendmmsg`/`recvmmsg`, else 0.
    pub msg_index: U16,
}

/// Body of connect, accept and close records (`struct ke_conn`).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawConn {
    /// Common header.
    pub hdr: RecordHeader,
    /// Socket (for accept: the new connection).
    pub sk: SockTuple,
    /// Syscall entry time for connect and close; for accept (captured at
    /// its exit alone since probe v2) equal to `hdr.ts_ns`.
    pub ts_enter_ns: U64,
    /// Return value (accept: the new fd).
    pub ret: I64,
    /// Socket inode number.
    pub ino: U64,
    /// The socket's fd (accept: the listening fd).
    pub fd: I32,
    /// Syscall, see [`Syscall`].
    pub syscall: u8,
    /// Padding.
    pub pad: [u8; 3],
}

/// Body of TCP state, retransmit, reset and RTT records (`struct ke_tcp`).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawTcp {
    /// Common header; pid/comm are whoever was on the CPU (often softirq).
    pub hdr: RecordHeader,
    /// Socket.
    pub sk: SockTuple,
    /// Smoothed RTT, microseconds.
    pub srtt_us: U32,
    /// RTT mean deviation, microseconds.
    pub rttvar_us: U32,
    /// Retransmitted segments over the connection's life.
    pub total_retrans: U32,
    /// Congestion window, segments.
    pub snd_cwnd: U32,
    /// Previous state (state change), else the current state.
    pub old_state: u8,
    /// New state (state change), else the current state.
    pub new_state: u8,
    /// 1 = reset sent, 2 = reset received, else 0.
    pub reset_dir: u8,
    /// Padding.
    pub pad: [u8; 5],
}

/// Body of a packet drop record (`struct ke_drop`).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawDrop {
    /// Common header.
    pub hdr: RecordHeader,
    /// Socket, or the packet's tuple seen as received when `NO_SOCK` is set.
    pub sk: SockTuple,
    /// Kernel text address that dropped the packet.
    pub location: U64,
    /// `enum skb_drop_reason` value.
    pub reason: U32,
    /// Padding.
    pub pad: U32,
}

/// One hop of a packet the packet tracer follows (`struct ke_packet`).
///
/// The tuple is the packet's at this hop: `sk.saddr`/`sk.sport` its
/// source, `sk.daddr`/`sk.dport` its destination; `sk.netns` the
/// namespace of the device (of the socket, for [`Point::Deliver`]).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawPacket {
    /// Common header: `pid`/`comm` of the task on the CPU (the reading
    /// process for [`Point::Deliver`]; often softirq or none otherwise).
    pub hdr: RecordHeader,
    /// The packet's tuple (`sock` is 0).
    pub sk: SockTuple,
    /// Kernel address of the `sk_buff`.
    pub skb: U64,
    /// The same at every hop of one packet.
    pub trace_id: U64,
    /// [`Point::Drop`]: kernel text address that freed it.
    pub location: U64,
    /// Device at this hop (in `sk.netns`).
    pub ifindex: U32,
    /// `skb->len`.
    pub len: U32,
    /// [`Point::Drop`]: `enum skb_drop_reason` of the running kernel (0
    /// before 5.17).
    pub reason: U32,
    /// TCP sequence number.
    pub tcp_seq: U32,
    /// IPv4 identification.
    pub ip_id: U16,
    /// Where, see [`Point`].
    pub point: u8,
    /// TCP flags (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10).
    pub tcp_flags: u8,
    /// [`packet_flags`].
    pub pflags: U16,
    /// Padding.
    pub pad: [u8; 2],
    /// Device name, NUL padded.
    pub ifname: [u8; 16],
}

/// `ke_packet.pflags`, as the `KPF_*` defines.
pub mod packet_flags {
    /// The tuple differs from the previous hop's: NAT rewrote it.
    pub const TRANSLATED: u16 = 1 << 0;
    /// No device at this point.
    pub const NO_DEVICE: u16 = 1 << 1;
}

/// Where on its way a traced packet was seen (`enum ke_point`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Point {
    /// Queued for transmission on a device.
    Queue,
    /// Received by a device.
    Receive,
    /// Freed as a drop, with its reason.
    Drop,
    /// Freed after use.
    Consume,
    /// Its bytes copied to a process.
    Deliver,
    /// A value this version does not know.
    Unknown,
}

impl Point {
    /// Maps the ABI number.
    pub fn from_raw(n: u8) -> Self {
        match n {
            1 => Point::Queue,
            2 => Point::Receive,
            3 => Point::Drop,
            4 => Point::Consume,
            5 => Point::Deliver,
            _ => Point::Unknown,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Point::Queue => "queue",
            Point::Receive => "receive",
            Point::Drop => "drop",
            Point::Consume => "consume",
            Point::Deliver => "deliver",
            Point::Unknown => "unknown",
        }
    }

    /// Whether the packet's way ends here.
    pub fn is_end(self) -> bool {
        matches!(self, Point::Drop | Point::Consume | Point::Deliver)
    }
}

impl RawPacket {
    /// Where it was seen.
    pub fn point(&self) -> Point {
        Point::from_raw(self.point)
    }

    /// The device name, if the hop had a device.
    pub fn device(&self) -> Option<&str> {
        if self.pflags.get() & packet_flags::NO_DEVICE != 0 {
            return None;
        }
        let end = self.ifname.iter().position(|&b| b == 0).unwrap_or(16);
        std::str::from_utf8(&self.ifname[..end]).ok()
    }

    /// Whether NAT rewrote the tuple since the previous hop.
    pub fn translated(&self) -> bool {
        self.pflags.get() & packet_flags::TRANSLATED != 0
    }
}

/// Decodes one packet-tracer record.
///
/// # Examples
///
/// ```
/// use kindling_probe::abi::{decode_packet, DecodeError};
///
/// assert!(matches!(decode_packet(&[0u8; 8]), Err(DecodeError::TooShort { .. })));
/// ```
pub fn decode_packet(bytes: &[u8]) -> Result<&RawPacket, DecodeError> {
    let (hdr, _) = RecordHeader::ref_from_prefix(bytes).map_err(|_| DecodeError::TooShort {
        have: bytes.len(),
        need: size_of::<RecordHeader>(),
    })?;
    if hdr.kind.get() != kind::PACKET {
        return Err(DecodeError::UnknownKind(hdr.kind.get()));
    }
    let size = hdr.size.get();
    let record = usize::try_from(size)
        .ok()
        .and_then(|s| bytes.get(..s))
        .ok_or(DecodeError::BadSize {
            size,
            have: bytes.len(),
        })?;
    exact::<RawPacket>(record)
}

/// Kindling's syscall numbering (`enum ke_syscall`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[expect(missing_docs, reason = "variants are the syscalls of the same name")]
pub enum Syscall {
    Read,
    Write,
    Readv,
    Writev,
    Sendto,
    Recvfrom,
    Sendmsg,
    Recvmsg,
    Sendmmsg,
    Recvmmsg,
    Connect,
    Accept,
    Accept4,
    Close,
    /// `sendfile(2)`: bytes from a file to the socket, without a user
    /// buffer. Its records carry length and timing only (`cap_len` 0).
    Sendfile,
    /// `splice(2)`: bytes between the socket and a pipe, either way,
    /// without a user buffer. Length and timing only.
    Splice,
    /// `copy_file_range(2)` with the socket at one end (the kernel refuses
    /// it with `EINVAL`; followed in case one ever allows it).
    CopyFileRange,
    /// A number this version does not know.
    Unknown(u8),
}

impl Syscall {
    /// Maps the ABI number.
    pub fn from_raw(n: u8) -> Self {
        use Syscall::*;
        match n {
            1 => Read,
            2 => Write,
            3 => Readv,
            4 => Writev,
            5 => Sendto,
            6 => Recvfrom,
            7 => Sendmsg,
            8 => Recvmsg,
            9 => Sendmmsg,
            10 => Recvmmsg,
            11 => Connect,
            12 => Accept,
            13 => Accept4,
            14 => Close,
            15 => Sendfile,
            16 => Splice,
            17 => CopyFileRange,
            other => Unknown(other),
        }
    }

    /// The syscall's name, as in `man 2`.
    pub fn name(self) -> &'static str {
        use Syscall::*;
        match self {
            Read => "read",
            Write => "write",
            Readv => "readv",
            Writev => "writev",
            Sendto => "sendto",
            Recvfrom => "recvfrom",
            Sendmsg => "sendmsg",
            Recvmsg => "recvmsg",
            Sendmmsg => "sendmmsg",
            Recvmmsg => "recvmmsg",
            Connect => "connect",
            Accept => "accept",
            Accept4 => "accept4",
            Close => "close",
            Sendfile => "sendfile",
            Splice => "splice",
            CopyFileRange => "copy_file_range",
            Unknown(_) => "unknown",
        }
    }
}

/// Which way payload bytes went, from the traced process' side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// The process sent the bytes.
    Egress,
    /// The process received the bytes.
    Ingress,
}

/// Transport protocol of a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// Another IP protocol number.
    Other(u8),
}

impl Transport {
    /// Lower-case name (`tcp`, `udp`, `ip-N`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Other(_) => "other",
        }
    }
}

/// Why a record could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the record header or the kind's fixed body.
    #[error("record too short: {have} bytes, need {need}")]
    TooShort {
        /// Bytes available.
        have: usize,
        /// Bytes the header or body needs.
        need: usize,
    },
    /// The header's size does not fit the bytes or the kind.
    #[error("record size {size} is invalid for {have} available bytes")]
    BadSize {
        /// Size the header claims.
        size: u32,
        /// Bytes available.
        have: usize,
    },
    /// A kind this version does not know.
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
}

/// A decoded record: a borrowed view, no copy of the bytes.
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// Socket payload.
    Data(DataEvent<'a>),
    /// connect, accept or close.
    Conn(ConnEvent<'a>),
    /// TCP state, retransmit, reset or RTT.
    Tcp(TcpEvent<'a>),
    /// Packet drop.
    Drop(DropEvent<'a>),
    /// Records lost before this point (a marker in captures).
    Lost(LostEvent<'a>),
}

/// A socket read or write with its payload.
#[derive(Clone, Copy)]
pub struct DataEvent<'a> {
    /// The fixed part.
    pub raw: &'a RawData,
    /// Captured payload (`cap_len` bytes).
    pub payload: &'a [u8],
}

/// connect, accept or close.
#[derive(Clone, Copy)]
pub struct ConnEvent<'a> {
    /// The record.
    pub raw: &'a RawConn,
    /// Which of the three, from the record's kind.
    pub kind: ConnKind,
}

/// What a [`ConnEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConnKind {
    /// `connect(2)` returned (`ret`: 0, `-EINPROGRESS` or `-errno`).
    Connect,
    /// `accept(2)`/`accept4(2)` returned a new socket (`ret`: its fd).
    Accept,
    /// A socket's fd was closed.
    Close,
}

/// TCP state change, retransmit, reset or RTT sample.
#[derive(Clone, Copy)]
pub struct TcpEvent<'a> {
    /// The record.
    pub raw: &'a RawTcp,
    /// Which of the four, from the record's kind.
    pub kind: TcpKind,
}

/// What a [`TcpEvent`] reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TcpKind {
    /// A state change (`old_state` → `new_state`).
    State,
    /// A segment was retransmitted.
    Retransmit,
    /// A reset was sent or received ([`TcpEvent::reset`]).
    Reset,
    /// A smoothed RTT sample (rate limited in the kernel).
    Rtt,
}

/// Which way a TCP reset went.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResetDirection {
    /// This host sent it.
    Sent,
    /// The peer sent it.
    Received,
}

impl ResetDirection {
    /// `sent` or `received`.
    pub fn name(self) -> &'static str {
        match self {
            ResetDirection::Sent => "sent",
            ResetDirection::Received => "received",
        }
    }
}

/// Packet drop.
#[derive(Clone, Copy)]
pub struct DropEvent<'a> {
    /// The record.
    pub raw: &'a RawDrop,
}

/// Records lost before this point: a marker the recorder writes into
/// captures when the kernel's loss counters grow.
#[derive(Clone, Copy)]
pub struct LostEvent<'a> {
    /// The record.
    pub raw: &'a RawLost,
}

/// Body of a [`kind::LOST`] record (`struct ke_lost`).
#[derive(Clone, Copy, FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub struct RawLost {
    /// Common header (`ts_ns`: when the loss was noticed).
    pub hdr: RecordHeader,
    /// All zero: a loss belongs to no socket.
    pub sk: SockTuple,
    /// How many records were lost.
    pub records: U64,
}

impl RawLost {
    /// A marker for `records` records lost, noticed at boot time `ts_ns`.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_probe::abi::{decode, Event, RawLost};
    /// use zerocopy::IntoBytes;
    ///
    /// let marker = RawLost::new(3, 1_000);
    /// let Ok(Event::Lost(l)) = decode(marker.as_bytes()) else { unreachable!() };
    /// assert_eq!(l.raw.records.get(), 3);
    /// ```
    pub fn new(records: u64, ts_ns: u64) -> Self {
        let mut raw = Self::new_zeroed();
        raw.hdr.kind = U16::new(kind::LOST);
        raw.hdr.size = U32::new(size_of::<Self>() as u32);
        raw.hdr.ts_ns = U64::new(ts_ns);
        raw.records = U64::new(records);
        raw
    }
}

/// Decodes one record, which must start at `bytes[0]`; trailing bytes after
/// the record's `size` are ignored.
///
/// # Examples
///
/// ```
/// use kindling_probe::abi::{decode, DecodeError};
///
/// assert!(matches!(decode(&[0u8; 4]), Err(DecodeError::TooShort { .. })));
/// ```
pub fn decode(bytes: &[u8]) -> Result<Event<'_>, DecodeError> {
    let (hdr, _) = RecordHeader::ref_from_prefix(bytes).map_err(|_| DecodeError::TooShort {
        have: bytes.len(),
        need: size_of::<RecordHeader>(),
    })?;
    let size = hdr.size.get();
    let record = usize::try_from(size)
        .ok()
        .and_then(|s| bytes.get(..s))
        .ok_or(DecodeError::BadSize {
            size,
            have: bytes.len(),
        })?;
    match hdr.kind.get() {
        kind::DATA => {
            let (raw, payload) = body::<RawData>(record)?;
            if payload.len() != raw.cap_len.get() as usize {
                return Err(DecodeError::BadSize {
                    size,
                    have: bytes.len(),
                });
            }
            Ok(Event::Data(DataEvent { raw, payload }))
        }
        k @ (kind::CONNECT | kind::ACCEPT | kind::CLOSE) => {
            let kind = match k {
                kind::CONNECT => ConnKind::Connect,
                kind::ACCEPT => ConnKind::Accept,
                _ => ConnKind::Close,
            };
            exact::<RawConn>(record).map(|raw| Event::Conn(ConnEvent { raw, kind }))
        }
        k @ (kind::TCP_STATE | kind::TCP_RETRANSMIT | kind::TCP_RESET | kind::TCP_RTT) => {
            let kind = match k {
                kind::TCP_STATE => TcpKind::State,
                kind::TCP_RETRANSMIT => TcpKind::Retransmit,
                kind::TCP_RESET => TcpKind::Reset,
                _ => TcpKind::Rtt,
            };
            exact::<RawTcp>(record).map(|raw| Event::Tcp(TcpEvent { raw, kind }))
        }
        kind::SKB_DROP => exact::<RawDrop>(record).map(|raw| Event::Drop(DropEvent { raw })),
        kind::LOST => exact::<RawLost>(record).map(|raw| Event::Lost(LostEvent { raw })),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

fn body<T: FromBytes + KnownLayout + Immutable>(record: &[u8]) -> Result<(&T, &[u8]), DecodeError> {
    T::ref_from_prefix(record).map_err(|_| DecodeError::TooShort {
        have: record.len(),
        need: size_of::<T>(),
    })
}

fn exact<T: FromBytes + KnownLayout + Immutable>(record: &[u8]) -> Result<&T, DecodeError> {
    let (raw, rest) = body::<T>(record)?;
    if !rest.is_empty() {
        return Err(DecodeError::BadSize {
            size: record.len() as u32,
            have: record.len(),
        });
    }
    Ok(raw)
}

fn ip(family: u16, addr: &[u8; 16]) -> IpAddr {
    if family == AF_INET {
        IpAddr::V4(Ipv4Addr::new(addr[0], addr[1], addr[2], addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*addr))
    }
}

impl SockTuple {
    /// Local end.
    pub fn local(&self) -> SocketAddr {
        SocketAddr::new(ip(self.family.get(), &self.saddr), self.sport.get())
    }

    /// Remote end.
    pub fn peer(&self) -> SocketAddr {
        SocketAddr::new(ip(self.family.get(), &self.daddr), self.dport.get())
    }

    /// Transport protocol.
    pub fn transport(&self) -> Transport {
        match self.protocol {
            6 => Transport::Tcp,
            17 => Transport::Udp,
            other => Transport::Other(other),
        }
    }

    /// Whether the socket is IPv6 (`AF_INET6`).
    pub fn is_ipv6(&self) -> bool {
        self.family.get() == AF_INET6
    }

    /// Inode of the network namespace, `None` when the record does not
    /// know it (ABI 1 captures, a dropped packet without device).
    pub fn netns(&self) -> Option<u32> {
        Some(self.netns.get()).filter(|&n| n != 0)
    }
}

impl RecordHeader {
    /// Task name without NUL padding (lossy UTF-8 is left to the caller).
    pub fn comm(&self) -> &[u8] {
        let end = self
            .comm
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.comm.len());
        &self.comm[..end]
    }

    /// Whether a [`flags`] bit is set.
    pub fn has_flag(&self, flag: u16) -> bool {
        self.flags.get() & flag != 0
    }
}

impl<'a> Event<'a> {
    /// The common header.
    pub fn header(&self) -> &'a RecordHeader {
        match self {
            Event::Data(e) => &e.raw.hdr,
            Event::Conn(e) => &e.raw.hdr,
            Event::Tcp(e) => &e.raw.hdr,
            Event::Drop(e) => &e.raw.hdr,
            Event::Lost(e) => &e.raw.hdr,
        }
    }

    /// The socket the record is about.
    pub fn sock(&self) -> &'a SockTuple {
        match self {
            Event::Data(e) => &e.raw.sk,
            Event::Conn(e) => &e.raw.sk,
            Event::Tcp(e) => &e.raw.sk,
            Event::Drop(e) => &e.raw.sk,
            Event::Lost(e) => &e.raw.sk,
        }
    }

    /// A short name of the record kind (`data`, `connect`, `tcp_state`, …).
    pub fn kind_name(&self) -> &'static str {
        kind_name(self.header().kind.get())
    }
}

/// Short name of a record kind number.
pub fn kind_name(kind: u16) -> &'static str {
    match kind {
        kind::DATA => "data",
        kind::CONNECT => "connect",
        kind::ACCEPT => "accept",
        kind::CLOSE => "close",
        kind::TCP_STATE => "tcp_state",
        kind::TCP_RETRANSMIT => "tcp_retransmit",
        kind::TCP_RESET => "tcp_reset",
        kind::TCP_RTT => "tcp_rtt",
        kind::SKB_DROP => "skb_drop",
        kind::LOST => "lost",
        kind::PACKET => "packet",
        _ => "unknown",
    }
}

impl DataEvent<'_> {
    /// The syscall.
    pub fn syscall(&self) -> Syscall {
        Syscall::from_raw(self.raw.syscall)
    }

    /// Direction of the bytes.
    pub fn direction(&self) -> Direction {
        if self.raw.direction == 0 {
            Direction::Egress
        } else {
            Direction::Ingress
        }
    }

    /// Whether fewer bytes were captured than moved.
    pub fn is_truncated(&self) -> bool {
        self.raw.hdr.has_flag(flags::TRUNCATED)
    }

    /// Whether the next data record of this thread carries more of this
    /// syscall's payload (see [`flags::CONTINUED`]).
    pub fn continues(&self) -> bool {
        self.raw.hdr.has_flag(flags::CONTINUED)
    }
}

impl ConnEvent<'_> {
    /// The syscall.
    pub fn syscall(&self) -> Syscall {
        Syscall::from_raw(self.raw.syscall)
    }
}

impl TcpEvent<'_> {
    /// Which way a reset went (`reset_dir`: `KR_SENT` or `KR_RECEIVED`;
    /// `None` when the record names neither).
    pub fn reset(&self) -> Option<ResetDirection> {
        match self.raw.reset_dir {
            0 => None,
            1 => Some(ResetDirection::Sent),
            _ => Some(ResetDirection::Received),
        }
    }
}

/// Name of a kernel TCP state (`ESTABLISHED`, `SYN_SENT`, …).
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

macro_rules! debug_via_header {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let h = &self.raw.hdr;
                f.debug_struct(stringify!($t))
                    .field("kind", &kind_name(h.kind.get()))
                    .field("ts_ns", &h.ts_ns.get())
                    .field("pid", &h.pid.get())
                    .field("local", &self.raw.sk.local())
                    .field("peer", &self.raw.sk.peer())
                    .finish_non_exhaustive()
            }
        }
    )*};
}
debug_via_header!(
    DataEvent<'_>,
    ConnEvent<'_>,
    TcpEvent<'_>,
    DropEvent<'_>,
    LostEvent<'_>
);

macro_rules! debug_raw {
    ($($t:ty),*) => {$(
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($t)).finish_non_exhaustive()
            }
        }
    )*};
}
debug_raw!(
    RecordHeader,
    RawPacket,
    SockTuple,
    RawData,
    RawConn,
    RawTcp,
    RawDrop,
    RawLost
);

// The C layouts are naturally aligned with explicit padding, so these sizes
// are the C sizes; the loader also checks them against the skeleton's types.
const _: () = assert!(size_of::<RecordHeader>() == 48);
const _: () = assert!(size_of::<SockTuple>() == 56);
const _: () = assert!(size_of::<RawData>() == 144);
const _: () = assert!(size_of::<RawConn>() == 136);
const _: () = assert!(size_of::<RawTcp>() == 128);
const _: () = assert!(size_of::<RawDrop>() == 120);
const _: () = assert!(size_of::<RawPacket>() == 168);
// ke_lost is written by user space only, so the skeleton has no type to
// check it against: its C size is asserted here and in the header comment.
const _: () = assert!(size_of::<RawLost>() == 112);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_syscall_number_has_its_own_name() {
        // enum ke_syscall in kindling.h: 1..=17
        let names: Vec<&str> = (1..=17).map(|n| Syscall::from_raw(n).name()).collect();
        assert!(!names.contains(&"unknown"), "{names:?}");
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        assert_eq!(Syscall::from_raw(15), Syscall::Sendfile);
        assert_eq!(Syscall::from_raw(16).name(), "splice");
        assert_eq!(Syscall::from_raw(17).name(), "copy_file_range");
        assert_eq!(Syscall::from_raw(18), Syscall::Unknown(18));
        assert_eq!(Syscall::from_raw(0), Syscall::Unknown(0));
    }
}
