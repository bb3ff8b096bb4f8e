//! The protocols the pipeline understands, behind one closed enum, and what
//! it keeps of each message: owned attributes, pairing key and error.

use kindling_proto::http1::{self, Http1, Redaction};
use kindling_proto::{
    dns, mysql, redis, AttributeSink, Detect, Direction, Protocol, ProtocolId, Status,
};

use crate::record::{Attributes, ErrorKind};

/// What pairs a DNS answer with its query: the id and the question (a
/// response repeats it), so that a reused id cannot mismatch them.
fn dns_key(m: &dns::Message<'_>) -> u64 {
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

/// Attributes written by a protocol's `write_attributes` into a spare set
/// when there is one: a response's set comes back once the exchange took a
/// copy, a request's once the caller is done with the exchange (see
/// [`crate::Pipeline::reuse`]), so that steady traffic allocates none.
fn written(spare: &mut Vec<Attributes>, write: impl FnOnce(&mut Attributes)) -> Attributes {
    let mut a = spare
        .pop()
        .unwrap_or_else(|| Attributes::with_capacity(8, 160));
    write(&mut a);
    a
}

/// Per-connection parser state of the recognised protocol.
#[derive(Debug)]
pub(crate) enum Proto {
    Http(Box<http1::Session>),
    Redis(redis::Session),
    MySql {
        session: Box<mysql::Session>,
        /// Between the login and the server's verdict on it.
        authenticating: bool,
    },
    Dns(dns::Session),
    /// Recognised, but nothing more can be read (TLS, compression, an
    /// upgraded HTTP connection).
    Opaque(ProtocolId),
}

/// A protocol's `detect`.
type Sniff = fn(&[u8], Direction) -> Detect;

/// What detection says about a connection's first bytes.
pub(crate) enum Detected {
    /// This protocol; the bytes were a request if `request`.
    Found(Proto, bool),
    /// Not enough bytes yet to tell.
    NeedMore,
    /// None of the protocols.
    NoMatch,
}

/// The part of a message the pipeline keeps.
#[derive(Debug)]
pub(crate) enum Parsed {
    Request {
        /// DNS id and question; FIFO for the others.
        key: Option<u64>,
        attrs: Attributes,
        /// False for messages never answered (MySQL COM_QUIT).
        answered: bool,
    },
    Response {
        key: Option<u64>,
        attrs: Attributes,
        error: Option<ErrorKind>,
        /// DNS: the name asked about and the addresses it resolved to.
        resolved: Option<Box<(String, Vec<std::net::IpAddr>)>>,
    },
    /// Handshakes, authentication, pushes, interim responses.
    Ignore,
}

/// One parsed message.
#[derive(Debug)]
pub(crate) struct Msg {
    pub(crate) parsed: Parsed,
    /// Buffered bytes it used.
    pub(crate) used: usize,
    /// Its size on the wire (uncaptured body included).
    pub(crate) wire: u64,
}

/// Why the next message could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ParseError {
    /// Not this protocol's bytes, or bytes were lost: resynchronise.
    Malformed,
    /// Nothing more can be read on this connection.
    Opaque(ProtocolId),
}

/// Detects a protocol from the first bytes seen in one direction; `sent`
/// says whether the traced process sent them, `role_known` restricts the
/// guess to what its role allows (`Some(true)` = it is the client).
pub(crate) fn detect(head: &[u8], sent: bool, client: Option<bool>, udp: bool) -> Detected {
    let mut need_more = false;
    for request in [true, false] {
        // a client sends requests, a server receives them
        let plausible = client.is_none_or(|c| c == (sent == request));
        if !plausible {
            continue;
        }
        let dir = if request {
            Direction::Request
        } else {
            Direction::Response
        };
        let candidates: [(Sniff, fn() -> Proto); 4] = [
            (Http1::detect, || Proto::Http(Box::default())),
            (redis::Redis::detect, || {
                Proto::Redis(redis::Session::default())
            }),
            (mysql::MySql::detect, || Proto::MySql {
                session: Box::default(),
                authenticating: false,
            }),
            (dns::Dns::detect, || Proto::Dns(dns::Session::default())),
        ];
        for (i, (detect, make)) in candidates.iter().enumerate() {
            // DNS is the only protocol here over UDP; over TCP it comes
            // last, with its length prefix (`Session::tcp`)
            let is_dns = i == 3;
            if udp && !is_dns {
                continue;
            }
            match detect(head, dir) {
                Detect::Match => {
                    let mut proto = make();
                    if is_dns && !udp {
                        proto = Proto::Dns(dns::Session::tcp());
                    }
                    return Detected::Found(proto, request);
                }
                Detect::NeedMore => need_more = true,
                Detect::NoMatch => {}
            }
        }
    }
    if need_more {
        Detected::NeedMore
    } else {
        Detected::NoMatch
    }
}

impl Proto {
    /// The `protocol` field of exchanges.
    pub(crate) fn id(&self) -> ProtocolId {
        match self {
            Proto::Http(_) => ProtocolId::Http,
            Proto::Redis(_) => ProtocolId::Redis,
            Proto::MySql { .. } => ProtocolId::MySql,
            Proto::Dns(_) => ProtocolId::Dns,
            Proto::Opaque(id) => *id,
        }
    }

    /// Where the next message starts after lost bytes.
    pub(crate) fn resync(&self, buf: &[u8], dir: Direction) -> Option<usize> {
        match self {
            Proto::Http(_) => Http1::resync(buf, dir),
            Proto::Redis(_) => redis::Redis::resync(buf, dir),
            Proto::MySql { .. } => mysql::MySql::resync(buf, dir),
            Proto::Dns(_) => dns::Dns::resync(buf, dir),
            Proto::Opaque(_) => None,
        }
    }

    /// Reads the next whole message at the start of `buf`; `Ok(None)` when
    /// it is not all there (see [`Proto::follow`]).
    pub(crate) fn next(
        &mut self,
        dir: Direction,
        buf: &[u8],
        redaction: &Redaction,
        spare: &mut Vec<Attributes>,
    ) -> Result<Option<Msg>, ParseError> {
        match self {
            Proto::Http(session) => http_next(session, dir, buf, redaction, spare),
            Proto::Redis(session) => generic::<redis::Redis>(session, dir, buf, |m, _| match m {
                redis::Message::Command(c) => Parsed::Request {
                    key: None,
                    attrs: written(spare, |a| c.write_attributes(a)),
                    answered: true,
                },
                redis::Message::Reply(r) if r.push => Parsed::Ignore,
                redis::Message::Reply(r) => {
                    let attrs = written(spare, |a| {
                        if let Some(code) = r.error_code() {
                            a.put("db.response.status_code", code);
                        }
                    });
                    Parsed::Response {
                        key: None,
                        attrs,
                        error: r.is_error().then_some(ErrorKind::DbError),
                        resolved: None,
                    }
                }
            })
            .map_err(|_| ParseError::Malformed),
            Proto::MySql {
                session,
                authenticating,
            } => generic::<mysql::MySql>(session, dir, buf, |m, s| {
                mysql_parsed(m, s, authenticating, spare)
            })
            .map_err(|e| match e {
                mysql::Error::Encrypted | mysql::Error::Compressed => {
                    ParseError::Opaque(ProtocolId::MySql)
                }
                _ => ParseError::Malformed,
            }),
            Proto::Dns(session) => generic::<dns::Dns>(session, dir, buf, |m, _| {
                let id = dns_key(m);
                if m.header.is_response() {
                    let attrs = written(spare, |a| {
                        a.put("dns.response.code", &dns::rcode_name(m.rcode()));
                    });
                    let addrs: Vec<std::net::IpAddr> = m
                        .answers()
                        .filter_map(|r| match r.data {
                            dns::RData::A(a) => Some(a.into()),
                            dns::RData::Aaaa(a) => Some(a.into()),
                            _ => None,
                        })
                        .take(16)
                        .collect();
                    let resolved = match m.first_question() {
                        Some(q) if !addrs.is_empty() => Some(Box::new((q.name.to_string(), addrs))),
                        _ => None,
                    };
                    Parsed::Response {
                        key: Some(id),
                        attrs,
                        error: (m.rcode() != 0).then_some(ErrorKind::DnsError),
                        resolved,
                    }
                } else {
                    Parsed::Request {
                        key: Some(id),
                        attrs: written(spare, |a| m.write_attributes(a)),
                        answered: true,
                    }
                }
            })
            .map_err(|_| ParseError::Malformed),
            Proto::Opaque(name) => Err(ParseError::Opaque(*name)),
        }
    }

    /// Starts following the message at the start of `buf`, which is not all
    /// there (too large to buffer, or cut by the capture length). Returns
    /// the follower, how many bytes of `buf` its head used, and what to
    /// deliver now with its size (an HTTP request is paired from its head,
    /// so that a `100 Continue` or an early error answers it). `None` when
    /// this message cannot be followed.
    pub(crate) fn follow(
        &mut self,
        dir: Direction,
        buf: &[u8],
        redaction: &Redaction,
    ) -> Option<Started> {
        match self {
            Proto::Http(session) => {
                let Ok(Status::Complete(m)) = Http1::parse_head(session, dir, buf) else {
                    return None;
                };
                let (head_len, body) = match &m {
                    http1::Message::Request(r) => (r.head_len, r.body),
                    http1::Message::Response(r) => (r.head_len, r.body),
                };
                // not taken from the spare sets (they come back later all the same)
                let parsed = http_parsed(&m, redaction, &mut Vec::new());
                let reader = Reader::Http(http1::BodyReader::new(body));
                // a request is paired now, with its declared size
                let declared = match body {
                    http1::Body::Length(n) => (head_len as u64).saturating_add(n),
                    _ => head_len as u64,
                };
                Some(match dir {
                    Direction::Request => (
                        Follow::new(reader, None),
                        head_len,
                        Some((parsed, declared)),
                    ),
                    Direction::Response => (Follow::new(reader, Some(parsed)), head_len, None),
                })
            }
            Proto::Redis(_) if dir == Direction::Response => {
                let parsed = Parsed::Response {
                    key: None,
                    attrs: Attributes::default(),
                    error: None,
                    resolved: None,
                };
                Some((
                    Follow::new(Reader::Redis(redis::Skipper::new()), Some(parsed)),
                    0,
                    None,
                ))
            }
            Proto::MySql { session, .. } if dir == Direction::Response => {
                // a result set: its first packet is a column count, not an
                // OK (0x00), ERR (0xff) or EOF (0xfe)
                let first = *buf.get(4)?;
                if !session.is_command_phase() || matches!(first, 0x00 | 0xff | 0xfe) {
                    return None;
                }
                let reader = mysql::ResultSetReader::new(session.deprecate_eof());
                Some((Follow::new(Reader::MySql(reader), None), 0, None))
            }
            _ => None,
        }
    }
}

/// A follower, the bytes its head used, and what to deliver now with its
/// size.
pub(crate) type Started = (Follow, usize, Option<(Parsed, u64)>);

/// What follows a message past the buffer.
#[derive(Debug)]
enum Reader {
    Http(http1::BodyReader),
    Redis(redis::Skipper),
    MySql(mysql::ResultSetReader),
}

/// A message followed chunk by chunk, without buffering it.
#[derive(Debug)]
pub(crate) struct Follow {
    reader: Reader,
    /// Delivered when it ends (`None`: delivered from its head already).
    parsed: Option<Parsed>,
    /// Time of its first byte and the thread that moved it.
    pub(crate) first_ns: u64,
    pub(crate) tid: u32,
    /// Time of the last byte read so far.
    pub(crate) last_ns: u64,
    /// Bytes so far, uncaptured ones included.
    pub(crate) wire: u64,
}

impl Follow {
    /// Boxed, starting with the `wire` bytes that came during `span`.
    pub(crate) fn started(mut self, span: crate::buffer::Span, wire: u64) -> Box<Self> {
        self.first_ns = span.first_ns;
        self.last_ns = span.last_ns;
        self.tid = span.tid;
        self.wire = wire;
        Box::new(self)
    }

    fn new(reader: Reader, parsed: Option<Parsed>) -> Self {
        Self {
            reader,
            parsed,
            first_ns: 0,
            tid: 0,
            last_ns: 0,
            wire: 0,
        }
    }

    /// `Some(n)`: the message ended after `n` bytes of `input`.
    pub(crate) fn feed(&mut self, input: &[u8]) -> Result<Option<usize>, ParseError> {
        let r = match &mut self.reader {
            Reader::Http(r) => r.feed(input).map_err(|_| ()),
            Reader::Redis(r) => r.feed(input).map_err(|_| ()),
            Reader::MySql(r) => r.feed(input).map_err(|_| ()),
        };
        r.map_err(|()| ParseError::Malformed)
    }

    /// A large Redis reply that does not end in `buf` (its first bytes):
    /// walked once, by a skipper, instead of a full parse attempt and then
    /// a follow. `None` when it ends in `buf` (or is not RESP), for the
    /// full parser.
    pub(crate) fn unfinished_redis_reply(buf: &[u8]) -> Option<Self> {
        let mut skipper = redis::Skipper::new();
        if !matches!(skipper.feed(buf), Ok(None)) {
            return None;
        }
        let parsed = Parsed::Response {
            key: None,
            attrs: Attributes::default(),
            error: None,
            resolved: None,
        };
        Some(Self::new(Reader::Redis(skipper), Some(parsed)))
    }

    /// Whether the message is complete.
    pub(crate) fn is_done(&self) -> bool {
        match &self.reader {
            Reader::Http(r) => r.is_done(),
            Reader::Redis(r) => r.is_done(),
            Reader::MySql(r) => r.is_done(),
        }
    }

    /// Accounts bytes that were sent but not captured.
    pub(crate) fn skip_unseen(&mut self, n: u64) -> Result<(), ParseError> {
        let r = match &mut self.reader {
            Reader::Http(r) => r.skip_unseen(n).map_err(|_| ()),
            Reader::Redis(r) => r.skip_unseen(n).map_err(|_| ()),
            Reader::MySql(r) => r.skip_unseen(n).map_err(|_| ()),
        };
        self.wire += n;
        r.map_err(|()| ParseError::Malformed)
    }

    /// What to deliver now that it ended.
    pub(crate) fn finish(self) -> Option<Parsed> {
        match self.reader {
            Reader::MySql(r) => {
                let mut attrs = Attributes::default();
                let error = r.error().map(|code| {
                    attrs.put_u64("db.response.status_code", u64::from(code));
                    ErrorKind::DbError
                });
                if error.is_none() {
                    attrs.put_u64("db.response.returned_rows", r.rows());
                }
                Some(Parsed::Response {
                    key: None,
                    attrs,
                    error,
                    resolved: None,
                })
            }
            Reader::Redis(r) if r.kind() == Some(redis::Kind::Push) => Some(Parsed::Ignore),
            _ => self.parsed,
        }
    }
}

/// Parses one message with `P` and keeps what `keep` takes of it.
fn generic<P: Protocol>(
    session: &mut P::Session,
    dir: Direction,
    buf: &[u8],
    keep: impl FnOnce(&P::Message<'_>, &P::Session) -> Parsed,
) -> Result<Option<Msg>, P::Error> {
    match P::parse(session, dir, buf)? {
        Status::Complete((m, used)) if used > 0 => Ok(Some(Msg {
            parsed: keep(&m, session),
            used,
            wire: used as u64,
        })),
        _ => Ok(None),
    }
}

fn mysql_parsed(
    m: &mysql::Message<'_>,
    s: &mysql::Session,
    authenticating: &mut bool,
    spare: &mut Vec<Attributes>,
) -> Parsed {
    use mysql::{Command, Handshake, Message, Response};
    match m {
        Message::Handshake(Handshake::Login { .. }) => {
            *authenticating = true;
            Parsed::Ignore
        }
        Message::Handshake(_) | Message::Command(Command::Other(0)) => Parsed::Ignore,
        Message::Response(Response::AuthStep) => Parsed::Ignore,
        Message::Response(Response::Ok { .. } | Response::Err { .. }) if *authenticating => {
            *authenticating = false;
            Parsed::Ignore
        }
        Message::Command(c) => Parsed::Request {
            key: None,
            attrs: written(spare, |a| c.write_attributes(s, a)),
            answered: !matches!(c, Command::Quit | Command::Close(_)),
        },
        Message::Response(r) => {
            let mut attrs = written(spare, |_| {});
            let mut error = None;
            match r {
                Response::Err { code, .. } => {
                    attrs.put_u64("db.response.status_code", u64::from(*code));
                    error = Some(ErrorKind::DbError);
                }
                Response::ResultSet { rows, .. } => {
                    attrs.put_u64("db.response.returned_rows", *rows);
                }
                Response::Ok { affected_rows, .. } => {
                    attrs.put_u64("db.response.affected_rows", *affected_rows);
                }
                _ => {}
            }
            Parsed::Response {
                key: None,
                attrs,
                error,
                resolved: None,
            }
        }
    }
}

/// HTTP/1: a whole message.
fn http_next(
    session: &mut http1::Session,
    dir: Direction,
    buf: &[u8],
    redaction: &Redaction,
    spare: &mut Vec<Attributes>,
) -> Result<Option<Msg>, ParseError> {
    match Http1::parse(session, dir, buf) {
        Ok(Status::Complete((m, used))) if used > 0 => Ok(Some(Msg {
            parsed: http_parsed(&m, redaction, spare),
            used,
            wire: used as u64,
        })),
        Ok(_) => Ok(None),
        Err(http1::Error::Upgraded) => Err(ParseError::Opaque(ProtocolId::Http)),
        Err(_) => Err(ParseError::Malformed),
    }
}

fn http_parsed(
    m: &http1::Message<'_>,
    redaction: &Redaction,
    spare: &mut Vec<Attributes>,
) -> Parsed {
    match m {
        http1::Message::Request(r) => Parsed::Request {
            key: None,
            attrs: written(spare, |a| r.write_attributes(redaction, a)),
            answered: true,
        },
        http1::Message::Response(r) if r.is_interim() => Parsed::Ignore,
        http1::Message::Response(r) => Parsed::Response {
            key: None,
            resolved: None,
            attrs: written(spare, |a| r.write_attributes(a)),
            error: match r.status {
                400..=499 => Some(ErrorKind::ClientError),
                500..=599 => Some(ErrorKind::ServerError),
                _ => None,
            },
        },
    }
}
