//! The protocols the pipeline understands, behind one closed enum, and what
//! it keeps of each message: owned attributes, pairing key and error. All
//! it knows of a protocol comes through [`Summarize`] and [`Follower`].

use kindling_proto::http1::{self, Http1};
use kindling_proto::{
    dns, mysql, redis, Detect, Direction, Follower, Protocol, ProtocolId, Status, Summarize,
    Summary, SummaryOptions,
};

use crate::record::{Attributes, ErrorKind};

/// Per-connection parser state of the recognised protocol.
#[derive(Debug)]
pub(crate) enum Proto {
    Http(Box<http1::Session>),
    Redis(redis::Session),
    MySql(Box<mysql::Session>),
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

/// A name and the addresses a DNS answer gave it.
pub(crate) type Resolved = Box<(String, Vec<std::net::IpAddr>)>;

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
        resolved: Option<Resolved>,
    },
    /// Handshakes, authentication, interim responses.
    Ignore,
    /// Pushed to the client unasked (pub/sub messages, MONITOR): counted.
    Delivered,
}

impl Parsed {
    /// What the pipeline keeps of a summary and its attributes; an ignored
    /// message's (empty) set goes back to `spare`.
    fn of(summary: Summary, attrs: Attributes, spare: &mut Vec<Attributes>) -> Self {
        match summary {
            Summary::Request { key, answered } => Parsed::Request {
                key,
                attrs,
                answered,
            },
            Summary::Response { key, failure } => Parsed::Response {
                key,
                attrs,
                error: failure.map(ErrorKind::from),
                resolved: None,
            },
            Summary::Ignore | Summary::Delivered => {
                spare.push(attrs);
                if summary == Summary::Delivered {
                    Parsed::Delivered
                } else {
                    Parsed::Ignore
                }
            }
        }
    }
}

/// An attribute set to write a message's attributes into: a spare one when
/// there is one (a response's set comes back once the exchange took a copy,
/// a request's once the caller is done with the exchange, see
/// [`crate::Pipeline::reuse`]), so that steady traffic allocates none.
fn spare_set(spare: &mut Vec<Attributes>) -> Attributes {
    spare
        .pop()
        .unwrap_or_else(|| Attributes::with_capacity(8, 160))
}

/// What `message` of protocol `P` comes to.
fn summarized<P: Summarize>(
    session: &mut P::Session,
    message: &P::Message<'_>,
    options: &SummaryOptions,
    spare: &mut Vec<Attributes>,
) -> Parsed {
    let mut attrs = spare_set(spare);
    let summary = P::summarize(session, message, options, &mut attrs);
    Parsed::of(summary, attrs, spare)
}

/// One parsed message.
#[derive(Debug)]
pub(crate) struct Msg {
    pub(crate) parsed: Parsed,
    /// Buffered bytes it used.
    pub(crate) used: usize,
    /// Its size on the wire (uncaptured body included).
    pub(crate) wire: u64,
    /// A response whose body runs until the close (no length, no chunks):
    /// what it read of its body so far. Not whole yet: it is followed to
    /// the close.
    pub(crate) open: Option<u64>,
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
/// says whether the traced process sent them, `client` restricts the guess
/// to what its role allows (`Some(true)` = it is the client). `again`:
/// earlier bytes of the connection were not a beginning, so these may be
/// anywhere in a stream; only protocols whose beginnings cannot be taken
/// for the middle of a message are tried (HTTP request and status lines,
/// MySQL's strict checks; not RESP, whose commands look like the arrays
/// inside replies, nor DNS over TCP).
pub(crate) fn detect(
    head: &[u8],
    sent: bool,
    client: Option<bool>,
    udp: bool,
    again: bool,
) -> Detected {
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
            (mysql::MySql::detect, || Proto::MySql(Box::default())),
            (dns::Dns::detect, || Proto::Dns(dns::Session::default())),
        ];
        for (detect, make) in candidates {
            let mut proto = make();
            // DNS is the only protocol here over UDP; over TCP it comes
            // last, with its length prefix (`Session::tcp`)
            let is_dns = matches!(proto, Proto::Dns(_));
            if udp && !is_dns {
                continue;
            }
            if again && !udp && matches!(proto, Proto::Redis(_) | Proto::Dns(_)) {
                continue;
            }
            match detect(head, dir) {
                Detect::Match => {
                    if is_dns && !udp {
                        proto = Proto::Dns(dns::Session::tcp());
                    }
                    // where in the connection its first bytes were
                    if let Proto::MySql(session) = &mut proto {
                        **session = mysql::Session::for_first(head, dir);
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
            Proto::Http(_) => Http1::ID,
            Proto::Redis(_) => redis::Redis::ID,
            Proto::MySql(_) => mysql::MySql::ID,
            Proto::Dns(_) => dns::Dns::ID,
            Proto::Opaque(id) => *id,
        }
    }

    /// Answers were lost: what the session remembered of the requests
    /// waiting for them no longer lines up.
    pub(crate) fn answers_lost(&mut self) {
        if let Proto::Http(session) = self {
            session.forget_pending();
        }
    }

    /// Where the next message starts after lost bytes.
    pub(crate) fn resync(&self, buf: &[u8], dir: Direction) -> Option<usize> {
        match self {
            Proto::Http(_) => Http1::resync(buf, dir),
            Proto::Redis(_) => redis::Redis::resync(buf, dir),
            Proto::MySql(_) => mysql::MySql::resync(buf, dir),
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
        options: &SummaryOptions,
        spare: &mut Vec<Attributes>,
    ) -> Result<Option<Msg>, ParseError> {
        match self {
            Proto::Http(session) => {
                whole::<Http1>(session, dir, buf, options, spare, |_| None, until_close).map_err(
                    |e| match e {
                        http1::Error::Upgraded => ParseError::Opaque(ProtocolId::Http),
                        _ => ParseError::Malformed,
                    },
                )
            }
            Proto::Redis(session) => {
                whole::<redis::Redis>(session, dir, buf, options, spare, |_| None, |_, _| None)
                    .map_err(|_| ParseError::Malformed)
            }
            Proto::MySql(session) => {
                whole::<mysql::MySql>(session, dir, buf, options, spare, |_| None, |_, _| None)
                    .map_err(|e| match e {
                        mysql::Error::Encrypted | mysql::Error::Compressed => {
                            ParseError::Opaque(ProtocolId::MySql)
                        }
                        _ => ParseError::Malformed,
                    })
            }
            Proto::Dns(session) => {
                whole::<dns::Dns>(session, dir, buf, options, spare, resolved, |_, _| None)
                    .map_err(|_| ParseError::Malformed)
            }
            Proto::Opaque(id) => Err(ParseError::Opaque(*id)),
        }
    }

    /// What the whole lines of a message cut by the capture length say
    /// (an HTTP head's start line and complete header lines; a DNS
    /// message's header, question and whole records). `None` when nothing
    /// useful is whole, or for protocols that cannot read a cut message.
    pub(crate) fn cut(
        &mut self,
        dir: Direction,
        buf: &[u8],
        options: &SummaryOptions,
        spare: &mut Vec<Attributes>,
    ) -> Option<Parsed> {
        match self {
            Proto::Http(session) => {
                let m = Http1::parse_cut_head(dir, buf)?;
                Some(summarized::<Http1>(session, &m, options, spare))
            }
            Proto::Dns(session) => {
                let msg = match session.framing {
                    dns::Framing::Udp => buf,
                    dns::Framing::Tcp => buf.get(2..)?,
                };
                let m = dns::Message::parse_cut(msg).ok()?;
                let mut parsed = summarized::<dns::Dns>(session, &m, options, spare);
                if let Parsed::Response { resolved: r, .. } = &mut parsed {
                    *r = resolved(&m);
                }
                Some(parsed)
            }
            _ => None,
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
        options: &SummaryOptions,
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
                let parsed = summarized::<Http1>(session, &m, options, &mut Vec::new());
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
            Proto::Redis(_) if dir == Direction::Response => Some((
                Follow::new(Reader::Redis(redis::Skipper::new()), Some(empty_response())),
                0,
                None,
            )),
            Proto::MySql(session) if dir == Direction::Response => {
                // a result set: its first packet is a column count, not an
                // OK (0x00), ERR (0xff) or EOF (0xfe)
                let first = *buf.get(4)?;
                if !session.is_command_phase()
                    || !session.expects_result_set()
                    || matches!(first, 0x00 | 0xff | 0xfe)
                {
                    return None;
                }
                let reader = mysql::ResultSetReader::new(session.deprecate_eof());
                Some((Follow::new(Reader::MySql(reader), None), 0, None))
            }
            _ => None,
        }
    }
}

/// A response with nothing known of it yet but its end.
fn empty_response() -> Parsed {
    Parsed::Response {
        key: None,
        attrs: Attributes::default(),
        error: None,
        resolved: None,
    }
}

/// Parses one whole message with `P` and keeps what its summary says
/// (and what `extra` adds to a response).
fn whole<P: Summarize>(
    session: &mut P::Session,
    dir: Direction,
    buf: &[u8],
    options: &SummaryOptions,
    spare: &mut Vec<Attributes>,
    extra: fn(&P::Message<'_>) -> Option<Resolved>,
    open: fn(&P::Message<'_>, usize) -> Option<u64>,
) -> Result<Option<Msg>, P::Error> {
    match P::parse(session, dir, buf)? {
        Status::Complete((m, used)) if used > 0 => {
            let mut parsed = summarized::<P>(session, &m, options, spare);
            if let Parsed::Response { resolved, .. } = &mut parsed {
                *resolved = extra(&m);
            }
            Ok(Some(Msg {
                parsed,
                used,
                wire: used as u64,
                open: open(&m, used),
            }))
        }
        _ => Ok(None),
    }
}

/// An HTTP response whose body runs until the close: the body bytes the
/// parser took (all it was given), to go on counting to the close.
fn until_close(m: &http1::Message<'_>, used: usize) -> Option<u64> {
    match m {
        http1::Message::Response(r) if r.body == http1::Body::UntilClose => {
            Some(used.saturating_sub(r.head_len) as u64)
        }
        _ => None,
    }
}

/// The name a DNS answer asked about and the addresses it resolved to: the
/// pipeline names peers by them.
fn resolved(m: &dns::Message<'_>) -> Option<Resolved> {
    if !m.header.is_response() {
        return None;
    }
    let addrs: Vec<std::net::IpAddr> = m
        .answers()
        .filter_map(|r| match r.data {
            dns::RData::A(a) => Some(a.into()),
            dns::RData::Aaaa(a) => Some(a.into()),
            _ => None,
        })
        .take(16)
        .collect();
    match m.first_question() {
        Some(q) if !addrs.is_empty() => Some(Box::new((q.name.to_string(), addrs))),
        _ => None,
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

/// Runs `$body` with `$r` bound to the reader, whichever it is.
macro_rules! with_reader {
    ($reader:expr, $r:ident => $body:expr) => {
        match $reader {
            Reader::Http($r) => $body,
            Reader::Redis($r) => $body,
            Reader::MySql($r) => $body,
        }
    };
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
        with_reader!(&mut self.reader, r => Follower::feed(r, input).map_err(|_| ParseError::Malformed))
    }

    /// A large Redis reply that does not end in `buf` (its first bytes):
    /// walked once, by a skipper, instead of a full parse attempt and then
    /// a follow. `None` when it ends in `buf` (or is not RESP), for the
    /// full parser.
    /// Follows an HTTP response's body to the close, after the `body`
    /// bytes that came with its head; `head` is delivered when it ends.
    pub(crate) fn until_close(head: Parsed, body: u64) -> Self {
        let mut reader = http1::BodyReader::new(http1::Body::UntilClose);
        // counts them: a body that runs to the close takes any bytes
        let _ = reader.skip_unseen(body);
        Self::new(Reader::Http(reader), Some(head))
    }

    pub(crate) fn unfinished_redis_reply(buf: &[u8]) -> Option<Self> {
        let mut skipper = redis::Skipper::new();
        if !matches!(skipper.feed(buf), Ok(None)) {
            return None;
        }
        Some(Self::new(Reader::Redis(skipper), Some(empty_response())))
    }

    /// Whether the message is complete.
    pub(crate) fn is_done(&self) -> bool {
        with_reader!(&self.reader, r => Follower::is_done(r))
    }

    /// Accounts bytes that were sent but not captured.
    /// How many of them belonged to the message (fewer than `n` when it
    /// ended inside them).
    pub(crate) fn skip_unseen(&mut self, n: u64) -> Result<u64, ParseError> {
        let used = with_reader!(&mut self.reader, r => Follower::skip_unseen(r, n).ok());
        // what was given up on counts whole
        self.wire += used.unwrap_or(n);
        used.ok_or(ParseError::Malformed)
    }

    /// Whether the connection closing ends the message properly.
    pub(crate) fn ends_with_close(&self) -> bool {
        with_reader!(&self.reader, r => Follower::ends_with_close(r))
    }

    /// What its head said, if not delivered yet (a response's): all that
    /// is known of a message that will not be read to its end.
    pub(crate) fn take_head(&mut self) -> Option<Parsed> {
        self.parsed.take()
    }

    /// What to deliver now that it ended.
    pub(crate) fn finish(self) -> Option<Parsed> {
        let mut attrs = Attributes::default();
        match with_reader!(&self.reader, r => Follower::summary(r, &mut attrs)) {
            Some(summary) => Some(Parsed::of(summary, attrs, &mut Vec::new())),
            None => {
                let mut parsed = self.parsed;
                // only a response's head waits for its body's end
                if let Some(Parsed::Response { attrs, .. }) = &mut parsed {
                    with_reader!(&self.reader, r => Follower::write_attributes(
                        r,
                        Direction::Response,
                        attrs
                    ));
                }
                parsed
            }
        }
    }
}
