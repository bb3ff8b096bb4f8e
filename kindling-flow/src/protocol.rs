//! The protocols the pipeline understands, behind one closed enum, and what
//! it keeps of each message: owned attributes, pairing key and error.

use kindling_proto::http1::{self, Body, Http1, Redaction};
use kindling_proto::{dns, mysql, redis, Detect, Direction, Protocol, Status};

use crate::record::ErrorKind;

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
    Opaque(&'static str),
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
        /// DNS id; FIFO for the others.
        key: Option<u16>,
        attrs: Vec<(&'static str, String)>,
        /// False for messages never answered (MySQL COM_QUIT).
        answered: bool,
    },
    Response {
        key: Option<u16>,
        attrs: Vec<(&'static str, String)>,
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
    Opaque(&'static str),
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
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Proto::Http(_) => "http",
            Proto::Redis(_) => "redis",
            Proto::MySql { .. } => "mysql",
            Proto::Dns(_) => "dns",
            Proto::Opaque(name) => name,
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

    /// Reads the next message at the start of `buf`. `missing` bytes were
    /// sent right after `buf` but not captured: a message whose head is
    /// whole and whose length is declared completes across them.
    /// `Ok(None)` = wait for more bytes; the `u64` is how many bytes after
    /// `buf` still belong to the message (to skip when they arrive).
    pub(crate) fn next(
        &mut self,
        dir: Direction,
        buf: &[u8],
        missing: u64,
        redaction: &Redaction,
    ) -> Result<Option<(Msg, u64)>, ParseError> {
        let msg = match self {
            Proto::Http(session) => return http_next(session, dir, buf, missing, redaction),
            Proto::Redis(session) => generic::<redis::Redis>(session, dir, buf, |m, _| match m {
                redis::Message::Command(c) => Parsed::Request {
                    key: None,
                    attrs: c.attributes(),
                    answered: true,
                },
                redis::Message::Reply(r) if r.push => Parsed::Ignore,
                redis::Message::Reply(r) => {
                    let mut attrs = Vec::new();
                    if let Some(code) = r.error_code() {
                        attrs.push(("db.response.status_code", code.to_owned()));
                    }
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
                mysql_parsed(m, s, authenticating)
            })
            .map_err(|e| match e {
                mysql::Error::Encrypted | mysql::Error::Compressed => ParseError::Opaque("mysql"),
                _ => ParseError::Malformed,
            }),
            Proto::Dns(session) => generic::<dns::Dns>(session, dir, buf, |m, _| {
                let id = m.header.id();
                if m.header.is_response() {
                    let mut attrs = m.attributes();
                    attrs.retain(|(k, _)| *k == "dns.response.code");
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
                        attrs: m.attributes(),
                        answered: true,
                    }
                }
            })
            .map_err(|_| ParseError::Malformed),
            Proto::Opaque(name) => Err(ParseError::Opaque(name)),
        }?;
        match msg {
            Some(m) => Ok(Some((m, 0))),
            // a message cut by the capture length cannot be framed here
            None if missing > 0 => Err(ParseError::Malformed),
            None => Ok(None),
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

fn mysql_parsed(m: &mysql::Message<'_>, s: &mysql::Session, authenticating: &mut bool) -> Parsed {
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
            attrs: c.attributes(s),
            answered: !matches!(c, Command::Quit | Command::Close(_)),
        },
        Message::Response(r) => {
            let mut attrs = Vec::new();
            let mut error = None;
            match r {
                Response::Err { code, .. } => {
                    attrs.push(("db.response.status_code", code.to_string()));
                    error = Some(ErrorKind::DbError);
                }
                Response::ResultSet { rows, .. } => {
                    attrs.push(("db.response.returned_rows", rows.to_string()));
                }
                Response::Ok { affected_rows, .. } => {
                    attrs.push(("db.response.affected_rows", affected_rows.to_string()));
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

/// HTTP/1: a whole message, or, when the capture cut it, its head with the
/// body accounted by its declared length.
fn http_next(
    session: &mut http1::Session,
    dir: Direction,
    buf: &[u8],
    missing: u64,
    redaction: &Redaction,
) -> Result<Option<(Msg, u64)>, ParseError> {
    let map = |e| match e {
        http1::Error::Upgraded => ParseError::Opaque("http"),
        _ => ParseError::Malformed,
    };
    if let Status::Complete((m, used)) = Http1::parse(session, dir, buf).map_err(map)? {
        if used > 0 {
            let parsed = http_parsed(&m, redaction);
            return Ok(Some((
                Msg {
                    parsed,
                    used,
                    wire: used as u64,
                },
                0,
            )));
        }
    }
    if missing == 0 && dir == Direction::Response {
        // a response is timed to its last byte: wait for it
        return Ok(None);
    }
    // The capture stopped inside this message, or it is a request whose
    // body is still coming (a `100 Continue` or an early error may answer
    // it first): frame it by its head and skip the rest by length.
    let mut trial = session.clone();
    let Status::Complete(m) = Http1::parse_head(&mut trial, dir, buf).map_err(map)? else {
        return if missing == 0 {
            Ok(None)
        } else {
            Err(ParseError::Malformed)
        };
    };
    let (head_len, body) = match &m {
        http1::Message::Request(r) => (r.head_len, r.body),
        http1::Message::Response(r) => (r.head_len, r.body),
    };
    let total = match body {
        Body::None => head_len as u64,
        Body::Length(n) => head_len as u64 + n,
        // chunked or until-close bodies cannot be walked blind
        _ if missing == 0 => return Ok(None),
        _ => return Err(ParseError::Malformed),
    };
    let buffered = buf.len() as u64;
    if total < buffered {
        return Err(ParseError::Malformed); // complete in buf: parse said otherwise
    }
    *session = trial;
    let parsed = http_parsed(&m, redaction);
    Ok(Some((
        Msg {
            parsed,
            used: buf.len(),
            wire: total,
        },
        total - buffered,
    )))
}

fn http_parsed(m: &http1::Message<'_>, redaction: &Redaction) -> Parsed {
    match m {
        http1::Message::Request(r) => Parsed::Request {
            key: None,
            attrs: r.attributes(redaction),
            answered: true,
        },
        http1::Message::Response(r) if r.is_interim() => Parsed::Ignore,
        http1::Message::Response(r) => Parsed::Response {
            key: None,
            resolved: None,
            attrs: r.attributes(),
            error: match r.status {
                400..=499 => Some(ErrorKind::ClientError),
                500..=599 => Some(ErrorKind::ServerError),
                _ => None,
            },
        },
    }
}
