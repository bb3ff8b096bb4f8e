//! DNS messages (RFC 1035, EDNS RFC 6891) over UDP and TCP.
//!
//! ```text
//!                                 1  1  1  1  1  1
//!   0  1  2  3  4  5  6  7  8  9  0  1  2  3  4  5
//! +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//! |                      ID                       |
//! |QR|   Opcode  |AA|TC|RD|RA| Z|AD|CD|   RCODE   |
//! |                    QDCOUNT                    |
//! |                    ANCOUNT                    |
//! |                    NSCOUNT                    |
//! |                    ARCOUNT                    |
//! +--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+--+
//! question: QNAME QTYPE(16) QCLASS(16)
//! resource: NAME TYPE(16) CLASS(16) TTL(32) RDLENGTH(16) RDATA
//! over TCP every message is preceded by its length (16 bits).
//! ```
//!
//! In the style of smoltcp's `wire`: [`Packet`] checks the length once and
//! then reads header fields infallibly; [`Message`] validates every section
//! on parse (names, compression pointers, record lengths), after which its
//! iterators only decode. Compression pointers must point backwards, which
//! rules out loops; names are limited to 255 bytes.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::{
    AttributeSink, Detect, Direction, Failure, Protocol, ProtocolId, Status, Summarize, Summary,
    SummaryOptions,
};

/// Header field offsets.
pub mod field {
    use std::ops::Range;
    /// Identifier.
    pub const ID: Range<usize> = 0..2;
    /// Flags: QR, opcode, AA, TC, RD, RA, Z, AD, CD, rcode.
    pub const FLAGS: Range<usize> = 2..4;
    /// Question count.
    pub const QDCOUNT: Range<usize> = 4..6;
    /// Answer count.
    pub const ANCOUNT: Range<usize> = 6..8;
    /// Authority count.
    pub const NSCOUNT: Range<usize> = 8..10;
    /// Additional count.
    pub const ARCOUNT: Range<usize> = 10..12;
    /// Header length.
    pub const HEADER_LEN: usize = 12;
}

/// Longest encoded name.
pub const MAX_NAME: usize = 255;

/// Why bytes are not a valid DNS message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Shorter than its header or than its sections say.
    #[error("dns message truncated")]
    Truncated,
    /// A label or compression pointer is malformed.
    #[error("invalid dns name")]
    BadName,
    /// A record's data does not fit its type.
    #[error("invalid dns record data")]
    BadRecord,
}

/// A DNS header over a buffer, fields read on demand.
#[derive(Clone, Copy, Debug)]
pub struct Packet<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Wraps a buffer after checking it holds a whole header.
    pub fn new_checked(buffer: T) -> Result<Self, Error> {
        if buffer.as_ref().len() < field::HEADER_LEN {
            return Err(Error::Truncated);
        }
        Ok(Self { buffer })
    }
    fn word(&self, r: std::ops::Range<usize>) -> u16 {
        be16(self.buffer.as_ref(), r.start)
    }
    /// Identifier.
    pub fn id(&self) -> u16 {
        self.word(field::ID)
    }
    /// Raw flags word.
    pub fn flags(&self) -> u16 {
        self.word(field::FLAGS)
    }
    /// QR: a response.
    pub fn is_response(&self) -> bool {
        self.flags() & 0x8000 != 0
    }
    /// Opcode (0 query, 1 inverse, 2 status, 4 notify, 5 update, 6 DSO).
    pub fn opcode(&self) -> u8 {
        ((self.flags() >> 11) & 0xf) as u8
    }
    /// Truncated (TC): the answer did not fit the datagram.
    pub fn is_truncated(&self) -> bool {
        self.flags() & 0x0200 != 0
    }
    /// Recursion desired.
    pub fn recursion_desired(&self) -> bool {
        self.flags() & 0x0100 != 0
    }
    /// Response code in the header (without the EDNS extension bits).
    pub fn rcode(&self) -> u8 {
        (self.flags() & 0xf) as u8
    }
    /// Question count.
    pub fn question_count(&self) -> u16 {
        self.word(field::QDCOUNT)
    }
    /// Answer count.
    pub fn answer_count(&self) -> u16 {
        self.word(field::ANCOUNT)
    }
    /// Authority count.
    pub fn authority_count(&self) -> u16 {
        self.word(field::NSCOUNT)
    }
    /// Additional count.
    pub fn additional_count(&self) -> u16 {
        self.word(field::ARCOUNT)
    }
}

/// A domain name inside a message, decoded on demand (compression
/// pointers followed, already validated).
#[derive(Clone, Copy)]
pub struct Name<'a> {
    msg: &'a [u8],
    at: usize,
}

/// Validates the name at `at`; returns where the name ends in place.
fn check_name(msg: &[u8], at: usize) -> Result<usize, Error> {
    let mut pos = at;
    let mut end = None;
    let mut len = 0usize;
    // Pointers must go strictly backwards: at most `msg.len()` jumps.
    let mut floor = at;
    loop {
        let &b = msg.get(pos).ok_or(Error::Truncated)?;
        match b & 0xc0 {
            0x00 if b == 0 => return Ok(end.unwrap_or(pos + 1)),
            0x00 => {
                let l = usize::from(b);
                len += l + 1;
                if len > MAX_NAME {
                    return Err(Error::BadName);
                }
                if pos + 1 + l > msg.len() {
                    return Err(Error::Truncated);
                }
                pos += 1 + l;
            }
            0xc0 => {
                let &lo = msg.get(pos + 1).ok_or(Error::Truncated)?;
                let target = usize::from(u16::from_be_bytes([b & 0x3f, lo]));
                if target >= floor {
                    return Err(Error::BadName);
                }
                end.get_or_insert(pos + 2);
                floor = target;
                pos = target;
            }
            _ => return Err(Error::BadName),
        }
    }
}

impl<'a> Name<'a> {
    /// Labels in order, as raw bytes.
    pub fn labels(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let msg = self.msg;
        let mut pos = self.at;
        std::iter::from_fn(move || loop {
            let &b = msg.get(pos)?;
            if b == 0 {
                return None;
            }
            if b & 0xc0 == 0xc0 {
                pos = usize::from(u16::from_be_bytes([b & 0x3f, *msg.get(pos + 1)?]));
                continue;
            }
            let l = usize::from(b);
            let label = msg.get(pos + 1..pos + 1 + l)?;
            pos += 1 + l;
            return Some(label);
        })
    }

    /// Whether it equals a dotted name, case-insensitively (`example.com`).
    pub fn eq_str(&self, dotted: &str) -> bool {
        let dotted = dotted.strip_suffix('.').unwrap_or(dotted);
        let mut parts = dotted.split('.').filter(|p| !p.is_empty());
        for l in self.labels() {
            match parts.next() {
                Some(p) if p.as_bytes().eq_ignore_ascii_case(l) => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

impl fmt::Display for Name<'_> {
    /// Dotted form without the trailing dot; `.` for the root.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for l in self.labels() {
            if any {
                f.write_str(".")?;
            }
            any = true;
            for &b in l {
                if b.is_ascii_graphic() && b != b'.' && b != b'\\' {
                    write!(f, "{}", b as char)?;
                } else {
                    write!(f, "\\{b:03}")?;
                }
            }
        }
        if !any {
            f.write_str(".")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Name<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A question.
#[derive(Clone, Copy, Debug)]
pub struct Question<'a> {
    /// Name asked about.
    pub name: Name<'a>,
    /// Type (1 A, 28 AAAA, 15 MX, …).
    pub qtype: u16,
    /// Class (1 IN).
    pub qclass: u16,
}

/// A resource record.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// Owner name.
    pub name: Name<'a>,
    /// Type.
    pub rtype: u16,
    /// Class (for OPT: the UDP payload size).
    pub class: u16,
    /// Time to live (for OPT: extended rcode, version, flags).
    pub ttl: u32,
    /// Decoded data.
    pub data: RData<'a>,
}

/// Record data of the types Kindling decodes; others stay raw.
#[derive(Clone, Copy, Debug)]
#[non_exhaustive]
pub enum RData<'a> {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// No data at all: the RDLENGTH 0 records of dynamic UPDATE (RFC 2136
    /// §2.4, §2.5), which name an RRset to test or delete, whatever the type.
    Empty,
    /// Canonical name.
    Cname(Name<'a>),
    /// Name server.
    Ns(Name<'a>),
    /// Pointer (reverse lookups).
    Ptr(Name<'a>),
    /// Mail exchange.
    Mx {
        /// Preference, lower first.
        preference: u16,
        /// Host.
        exchange: Name<'a>,
    },
    /// Text: one or more length-prefixed strings, as on the wire.
    Txt(&'a [u8]),
    /// Service location.
    Srv {
        /// Priority.
        priority: u16,
        /// Weight.
        weight: u16,
        /// Port.
        port: u16,
        /// Host.
        target: Name<'a>,
    },
    /// Start of authority.
    Soa {
        /// Primary server.
        mname: Name<'a>,
        /// Responsible mailbox.
        rname: Name<'a>,
        /// Serial.
        serial: u32,
        /// Negative-caching TTL.
        minimum: u32,
    },
    /// EDNS pseudo-record; `options` as on the wire.
    Opt {
        /// Options (code, length, data)*.
        options: &'a [u8],
    },
    /// Any other type.
    Unknown(&'a [u8]),
}

/// Record type numbers.
pub mod rtype {
    #![allow(missing_docs, reason = "the names are the RFC mnemonics")]
    pub const A: u16 = 1;
    pub const NS: u16 = 2;
    pub const CNAME: u16 = 5;
    pub const SOA: u16 = 6;
    pub const PTR: u16 = 12;
    pub const MX: u16 = 15;
    pub const TXT: u16 = 16;
    pub const AAAA: u16 = 28;
    pub const SRV: u16 = 33;
    pub const OPT: u16 = 41;
}

/// Mnemonic of a type number (`A`, `AAAA`, … or `TYPE65`).
pub fn type_name(t: u16) -> std::borrow::Cow<'static, str> {
    let s = match t {
        1 => "A",
        2 => "NS",
        5 => "CNAME",
        6 => "SOA",
        12 => "PTR",
        15 => "MX",
        16 => "TXT",
        28 => "AAAA",
        33 => "SRV",
        41 => "OPT",
        64 => "SVCB",
        65 => "HTTPS",
        255 => "ANY",
        _ => return format!("TYPE{t}").into(),
    };
    s.into()
}

/// Mnemonic of a response code (`NOERROR`, `NXDOMAIN`, … or `RCODE12`).
pub fn rcode_name(r: u16) -> std::borrow::Cow<'static, str> {
    let s = match r {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        16 => "BADVERS",
        _ => return format!("RCODE{r}").into(),
    };
    s.into()
}

fn rdata<'a>(msg: &'a [u8], rtype: u16, start: usize, len: usize) -> Result<RData<'a>, Error> {
    let data = msg.get(start..start + len).ok_or(Error::Truncated)?;
    let name_at = |at: usize| -> Result<(Name<'a>, usize), Error> {
        if at >= start + len {
            return Err(Error::BadRecord);
        }
        let end = check_name(msg, at)?;
        Ok((Name { msg, at }, end))
    };
    let exact = |end: usize, v: RData<'a>| {
        if end == start + len {
            Ok(v)
        } else {
            Err(Error::BadRecord)
        }
    };
    if len == 0 && rtype != rtype::OPT {
        return Ok(RData::Empty);
    }
    match rtype {
        rtype::A => <[u8; 4]>::try_from(data)
            .map(|a| RData::A(a.into()))
            .map_err(|_| Error::BadRecord),
        rtype::AAAA => <[u8; 16]>::try_from(data)
            .map(|a| RData::Aaaa(a.into()))
            .map_err(|_| Error::BadRecord),
        rtype::CNAME | rtype::NS | rtype::PTR => {
            let (n, end) = name_at(start)?;
            exact(
                end,
                match rtype {
                    rtype::CNAME => RData::Cname(n),
                    rtype::NS => RData::Ns(n),
                    _ => RData::Ptr(n),
                },
            )
        }
        rtype::MX => {
            if len < 3 {
                return Err(Error::BadRecord);
            }
            let (exchange, end) = name_at(start + 2)?;
            exact(
                end,
                RData::Mx {
                    preference: be16(msg, start),
                    exchange,
                },
            )
        }
        rtype::SRV => {
            if len < 7 {
                return Err(Error::BadRecord);
            }
            let (target, end) = name_at(start + 6)?;
            exact(
                end,
                RData::Srv {
                    priority: be16(msg, start),
                    weight: be16(msg, start + 2),
                    port: be16(msg, start + 4),
                    target,
                },
            )
        }
        rtype::SOA => {
            let (mname, e1) = name_at(start)?;
            let (rname, e2) = name_at(e1)?;
            if e2 + 20 != start + len {
                return Err(Error::BadRecord);
            }
            let u32_at =
                |i: usize| u32::from_be_bytes([msg[i], msg[i + 1], msg[i + 2], msg[i + 3]]);
            Ok(RData::Soa {
                mname,
                rname,
                serial: u32_at(e2),
                minimum: u32_at(e2 + 16),
            })
        }
        rtype::TXT => {
            // one or more <len><bytes> strings filling the data exactly
            let mut i = 0;
            while i < data.len() {
                i += 1 + usize::from(data[i]);
            }
            if i == data.len() {
                Ok(RData::Txt(data))
            } else {
                Err(Error::BadRecord)
            }
        }
        rtype::OPT => Ok(RData::Opt { options: data }),
        _ => Ok(RData::Unknown(data)),
    }
}

/// A validated DNS message; sections are decoded while iterating.
#[derive(Clone, Copy)]
pub struct Message<'a> {
    /// The header.
    pub header: Packet<&'a [u8]>,
    msg: &'a [u8],
    /// Offset of the first resource record (after the questions).
    records_at: usize,
}

impl fmt::Debug for Message<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.header.id())
            .field("response", &self.header.is_response())
            .field("rcode", &self.rcode())
            .field("questions", &self.questions().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn question_at(msg: &[u8], at: usize) -> Result<(Question<'_>, usize), Error> {
    let end = check_name(msg, at)?;
    let fixed = msg.get(end..end + 4).ok_or(Error::Truncated)?;
    let q = Question {
        name: Name { msg, at },
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
    };
    Ok((q, end + 4))
}

fn record_at(msg: &[u8], at: usize) -> Result<(Record<'_>, usize), Error> {
    let end = check_name(msg, at)?;
    let fixed = msg.get(end..end + 10).ok_or(Error::Truncated)?;
    let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
    let class = u16::from_be_bytes([fixed[2], fixed[3]]);
    let ttl = u32::from_be_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]);
    let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
    let data = rdata(msg, rtype, end + 10, len)?;
    Ok((
        Record {
            name: Name { msg, at },
            rtype,
            class,
            ttl,
            data,
        },
        end + 10 + len,
    ))
}

impl<'a> Message<'a> {
    /// Validates a whole message (one UDP datagram, or one TCP message
    /// without its length prefix). Bytes after the last record are ignored.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::dns::Message;
    ///
    /// // id 0x1234, RD, one question: example.com A IN
    /// let q = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\
    ///           \x07example\x03com\x00\x00\x01\x00\x01";
    /// let m = Message::parse(q)?;
    /// let question = m.questions().next().unwrap();
    /// assert_eq!((m.header.id(), question.name.to_string(), question.qtype), (0x1234, "example.com".into(), 1));
    /// # Ok::<(), kindling_proto::dns::Error>(())
    /// ```
    pub fn parse(msg: &'a [u8]) -> Result<Self, Error> {
        let header = Packet::new_checked(msg)?;
        let mut at = field::HEADER_LEN;
        for _ in 0..header.question_count() {
            at = question_at(msg, at)?.1;
        }
        let records_at = at;
        let n = u32::from(header.answer_count())
            + u32::from(header.authority_count())
            + u32::from(header.additional_count());
        for _ in 0..n {
            at = record_at(msg, at)?.1;
        }
        Ok(Self {
            header,
            msg,
            records_at,
        })
    }

    /// A message cut short (by a capture length): its header and questions
    /// must be whole; its records are read as far as they are whole
    /// ([`Message::answers`] and the others stop at the cut).
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::dns::Message;
    ///
    /// // a response to `a.test A`, with its one answer cut in the middle
    /// let mut wire = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0];
    /// wire.extend(b"\x01a\x04test\x00\x00\x01\x00\x01");
    /// wire.extend([0xc0, 0x0c, 0, 1, 0, 1, 0, 0]);
    /// assert!(Message::parse(&wire).is_err());
    /// let cut = Message::parse_cut(&wire).expect("header and question are whole");
    /// assert_eq!(cut.first_question().unwrap().name.to_string(), "a.test");
    /// assert_eq!(cut.answers().count(), 0);
    /// ```
    pub fn parse_cut(msg: &'a [u8]) -> Result<Self, Error> {
        let header = Packet::new_checked(msg)?;
        let mut at = field::HEADER_LEN;
        for _ in 0..header.question_count() {
            at = question_at(msg, at)?.1;
        }
        Ok(Self {
            header,
            msg,
            records_at: at,
        })
    }

    /// Questions, in order.
    pub fn questions(&self) -> impl Iterator<Item = Question<'a>> + 'a {
        let msg = self.msg;
        let mut at = field::HEADER_LEN;
        (0..self.header.question_count()).map_while(move |_| {
            let (q, next) = question_at(msg, at).ok()?;
            at = next;
            Some(q)
        })
    }

    fn section(&self, skip: u32, count: u16) -> impl Iterator<Item = Record<'a>> + 'a {
        let msg = self.msg;
        let mut at = self.records_at;
        let mut i = 0u32;
        std::iter::from_fn(move || {
            while i < skip + u32::from(count) {
                let (r, next) = record_at(msg, at).ok()?;
                at = next;
                i += 1;
                if i > skip {
                    return Some(r);
                }
            }
            None
        })
    }

    /// Answer records.
    pub fn answers(&self) -> impl Iterator<Item = Record<'a>> + 'a {
        self.section(0, self.header.answer_count())
    }

    /// Authority records.
    pub fn authorities(&self) -> impl Iterator<Item = Record<'a>> + 'a {
        self.section(
            u32::from(self.header.answer_count()),
            self.header.authority_count(),
        )
    }

    /// Additional records (EDNS OPT among them).
    pub fn additionals(&self) -> impl Iterator<Item = Record<'a>> + 'a {
        let skip = u32::from(self.header.answer_count()) + u32::from(self.header.authority_count());
        self.section(skip, self.header.additional_count())
    }

    /// Full response code: header bits plus EDNS extended bits.
    pub fn rcode(&self) -> u16 {
        let ext = self
            .additionals()
            .find(|r| r.rtype == rtype::OPT)
            .map_or(0, |opt| (opt.ttl >> 24) as u16);
        (ext << 4) | u16::from(self.header.rcode())
    }

    /// The first question's name and type, the key (with the id) that pairs
    /// a response with its query.
    pub fn first_question(&self) -> Option<Question<'a>> {
        self.questions().next()
    }
}

/// How messages are delimited on the connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// One message per datagram.
    #[default]
    Udp,
    /// A 16-bit length before every message; several may share a segment.
    Tcp,
}

/// Per-connection state: the framing of the transport.
#[derive(Clone, Copy, Debug, Default)]
pub struct Session {
    /// Datagram or length-prefixed stream.
    pub framing: Framing,
}

impl Session {
    /// A session for DNS over TCP.
    pub fn tcp() -> Self {
        Self {
            framing: Framing::Tcp,
        }
    }
}

/// The DNS protocol; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Dns;

fn plausible(msg: &[u8], dir: Direction) -> Detect {
    let Ok(p) = Packet::new_checked(msg) else {
        return Detect::NeedMore;
    };
    let response = dir == Direction::Response;
    // Opcodes in use (IQUERY is obsolete), the Z bit clear, and one
    // question (one zone for UPDATE); DSO carries none.
    if p.is_response() != response
        || !matches!(p.opcode(), 0 | 2 | 4 | 5 | 6)
        || p.flags() & 0x0040 != 0
    {
        return Detect::NoMatch;
    }
    match (p.opcode(), p.question_count()) {
        (6, 0) => return Detect::Match,
        (6, _) => return Detect::NoMatch,
        (_, 1) => {}
        _ => return Detect::NoMatch,
    }
    match question_at(msg, field::HEADER_LEN) {
        Ok((q, _)) if matches!(q.qclass, 1 | 3 | 4 | 254 | 255) => Detect::Match,
        Err(Error::Truncated) => Detect::NeedMore,
        _ => Detect::NoMatch,
    }
}

impl Protocol for Dns {
    type Session = Session;
    type Message<'a> = Message<'a>;
    type Error = Error;

    /// Sniffs a datagram or, failing that, a length-prefixed TCP message.
    fn detect(head: &[u8], dir: Direction) -> Detect {
        match plausible(head, dir) {
            Detect::Match => Detect::Match,
            udp => {
                let tcp = match head.get(..2) {
                    Some(l) if usize::from(be16(l, 0)) >= field::HEADER_LEN => {
                        plausible(&head[2..], dir)
                    }
                    Some(_) => Detect::NoMatch,
                    None => Detect::NeedMore,
                };
                match (udp, tcp) {
                    (_, Detect::Match) => Detect::Match,
                    (Detect::NeedMore, _) | (_, Detect::NeedMore) => Detect::NeedMore,
                    _ => Detect::NoMatch,
                }
            }
        }
    }

    fn parse<'a>(
        session: &mut Session,
        _dir: Direction,
        buf: &'a [u8],
    ) -> Result<Status<(Message<'a>, usize)>, Error> {
        match session.framing {
            Framing::Udp if buf.is_empty() => Ok(Status::Partial),
            Framing::Udp => Ok(Status::Complete((Message::parse(buf)?, buf.len()))),
            Framing::Tcp => {
                let Some(l) = buf.get(..2) else {
                    return Ok(Status::Partial);
                };
                let len = usize::from(be16(l, 0));
                let Some(msg) = buf.get(2..2 + len) else {
                    return Ok(Status::Partial);
                };
                Ok(Status::Complete((Message::parse(msg)?, 2 + len)))
            }
        }
    }
}

impl Message<'_> {
    /// OpenTelemetry attributes: `dns.question.name`, and for responses
    /// the response code.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut a = Vec::new();
        self.write_attributes(&mut a);
        a
    }

    /// [`Message::attributes`] into any sink.
    pub fn write_attributes(&self, a: &mut impl AttributeSink) {
        if let Some(q) = self.first_question() {
            a.put_fmt("dns.question.name", format_args!("{}", q.name));
            a.put("dns.question.type", &type_name(q.qtype));
        }
        if self.header.is_response() {
            a.put("dns.response.code", &rcode_name(self.rcode()));
        }
    }
}

/// What pairs a DNS answer with its query: the id and the question (a
/// response repeats it), so that a reused id cannot mismatch them.
fn pairing_key(m: &Message<'_>) -> u64 {
    // FNV-1a over the lower-cased name labels and the type
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    };
    if let Some(q) = m.first_question() {
        for label in q.name.labels() {
            label.iter().for_each(|b| eat(b.to_ascii_lowercase()));
            eat(b'.');
        }
        q.qtype.to_be_bytes().into_iter().for_each(&mut eat);
    }
    u64::from(m.header.id()) << 48 | (h & 0xffff_ffff_ffff)
}

impl Summarize for Dns {
    const ID: ProtocolId = ProtocolId::Dns;

    /// Queries and answers pair by id and question, in any order.
    fn summarize(
        _: &mut Session,
        message: &Message<'_>,
        _: &SummaryOptions,
        attributes: &mut impl AttributeSink,
    ) -> Summary {
        let key = Some(pairing_key(message));
        if message.header.is_response() {
            attributes.put("dns.response.code", &rcode_name(message.rcode()));
            Summary::Response {
                key,
                failure: (message.rcode() != 0).then_some(Failure::Dns),
            }
        } else {
            message.write_attributes(attributes);
            Summary::Request {
                key,
                answered: true,
            }
        }
    }
}
