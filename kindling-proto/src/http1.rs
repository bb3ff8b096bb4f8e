//! HTTP/1.0 and HTTP/1.1 (RFC 9112).
//!
//! ```text
//! request  = method SP request-target SP HTTP-version CRLF *( field-line CRLF ) CRLF [ body ]
//! response = HTTP-version SP status-code SP [ reason ] CRLF *( field-line CRLF ) CRLF [ body ]
//! chunked  = *( chunk-size [ ;ext ] CRLF data CRLF ) "0" [ ;ext ] CRLF *( trailer CRLF ) CRLF
//! ```
//!
//! Message length (RFC 9112 §6.3), in order: responses to HEAD, 1xx, 204 and
//! 304 have no body; a 2xx answer to CONNECT and a 101 switch the connection
//! to another protocol; Transfer-Encoding ending in `chunked` is chunked;
//! otherwise a valid Content-Length; otherwise a request has no body and a
//! response runs until the connection closes.
//!
//! The head is parsed by `httparse`; headers stay a borrowed block that is
//! re-split on demand, so a parse allocates nothing.

use std::fmt;

use crate::{
    AttributeSink, Detect, Direction, Failure, Follower, Protocol, ProtocolId, Status, Summarize,
    Summary, SummaryOptions,
};

/// Most header lines accepted in one head.
pub const MAX_HEADERS: usize = 96;
/// Pipelined requests remembered per connection for response framing.
pub const MAX_PIPELINE: usize = 32;

/// The HTTP/1 protocol; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Http1;

/// Why bytes are not a valid HTTP/1 message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The start line or a header line is malformed.
    #[error("malformed http/1 head")]
    BadHead,
    /// More than [`MAX_HEADERS`] header lines.
    #[error("too many header lines")]
    TooManyHeaders,
    /// Content-Length is not a number, or several disagree.
    #[error("invalid content-length")]
    BadContentLength,
    /// A request with a Transfer-Encoding other than chunked (RFC 9112 §6.3).
    #[error("invalid transfer-encoding")]
    BadTransferEncoding,
    /// A chunk-size line or chunk terminator is malformed.
    #[error("malformed chunked body")]
    BadChunk,
    /// The connection switched protocols (101, CONNECT): no HTTP/1 follows.
    #[error("connection switched protocols")]
    Upgraded,
}

/// How a message's body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked; `data` is the decoded size, `encoded` the bytes on the wire.
    Chunked {
        /// Sum of chunk sizes.
        data: u64,
        /// Bytes from the end of the head to the end of the trailers.
        encoded: u64,
    },
    /// Until the connection closes (responses only); `consumed` counted every
    /// byte given so far as body.
    UntilClose,
}

/// Header lines of a message, borrowed from the input.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Headers<'a> {
    block: &'a [u8],
    /// The headers attributes come from, found while the head was split
    /// into lines, so that reading them scans nothing again.
    known: Known<'a>,
}

/// First values of the headers every message's attributes read.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Known<'a> {
    host: Option<&'a [u8]>,
    user_agent: Option<&'a [u8]>,
    content_type: Option<&'a [u8]>,
}

impl<'a> Known<'a> {
    /// From `(name, value)` lines; names compared by length first, so
    /// most lines cost one comparison.
    fn of(lines: impl Iterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut known = Self::default();
        for (name, value) in lines {
            known.note(name, value);
        }
        known
    }

    /// Keeps `value` if `name` is one of these, seen first.
    #[inline]
    fn note(&mut self, name: &str, value: &'a [u8]) {
        let slot = match name.len() {
            4 if name.eq_ignore_ascii_case("host") => &mut self.host,
            10 if name.eq_ignore_ascii_case("user-agent") => &mut self.user_agent,
            12 if name.eq_ignore_ascii_case("content-type") => &mut self.content_type,
            _ => return,
        };
        if slot.is_none() {
            *slot = Some(trim(value));
        }
    }

    /// The value of `name` (lower case) if it is one of these.
    fn get(&self, name: &str) -> Option<Option<&'a [u8]>> {
        match name {
            "host" => Some(self.host),
            "user-agent" => Some(self.user_agent),
            "content-type" => Some(self.content_type),
            _ => None,
        }
    }
}

impl<'a> Headers<'a> {
    /// The header lines of `block`.
    fn new(block: &'a [u8]) -> Self {
        let mut headers = Self {
            block,
            known: Known::default(),
        };
        headers.known = Known::of(headers.iter());
        headers
    }

    /// The header lines of `block`, which httparse split into `lines`.
    fn parsed(block: &'a [u8], lines: &[httparse::Header<'a>]) -> Self {
        Self {
            block,
            known: Known::of(lines.iter().map(|h| (h.name, h.value))),
        }
    }

    /// The header lines of `block`, with the values [`framing`] found.
    fn framed(block: &'a [u8], known: Known<'a>) -> Self {
        Self { block, known }
    }

    /// Iterates `(name, value)` pairs in order, value trimmed.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a [u8])> + 'a {
        lines(self.block).filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            let name = std::str::from_utf8(&line[..colon]).ok()?;
            Some((name, trim(&line[colon + 1..])))
        })
    }

    /// The first value of a header, by case-insensitive name.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        if let Some(value) = self.known.get(name) {
            return value;
        }
        // names are tokens right before the colon (RFC 9112 §5.1): compare
        // bytes in place, without splitting every line into name and value
        let name = name.as_bytes();
        lines(self.block).find_map(|line| {
            let (n, rest) = line.split_at_checked(name.len())?;
            let value = rest.strip_prefix(b":")?;
            n.eq_ignore_ascii_case(name)
                .then(|| trim(value.strip_suffix(b"\r").unwrap_or(value)))
        })
    }

    /// The first values of several headers in one pass over the block.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::http1::{Http1, Message};
    /// use kindling_proto::{Direction, Status};
    ///
    /// let raw = b"GET / HTTP/1.1\r\nHost: a\r\nUser-Agent: b\r\n\r\n";
    /// let Ok(Status::Complete(Message::Request(r))) =
    ///     Http1::parse_head(&mut Default::default(), Direction::Request, raw)
    /// else {
    ///     unreachable!()
    /// };
    /// let [host, ua, ct] = r.headers.get_many(["host", "user-agent", "content-type"]);
    /// assert_eq!((host, ua, ct), (Some(&b"a"[..]), Some(&b"b"[..]), None));
    /// ```
    pub fn get_many<const N: usize>(&self, names: [&str; N]) -> [Option<&'a [u8]>; N] {
        let mut out = [None; N];
        for line in lines(self.block) {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            for (slot, want) in out.iter_mut().zip(names) {
                if slot.is_none() && name.eq_ignore_ascii_case(want.as_bytes()) {
                    *slot = Some(trim(value));
                }
            }
        }
        out
    }

    /// Number of header lines.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

impl fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(self.iter().map(|(n, v)| (n, String::from_utf8_lossy(v))))
            .finish()
    }
}

/// The lines of a header block (as `split` on `\n` gives them), found with
/// a vectorised search: headers are looked up in every message, and a
/// byte-at-a-time split was the largest part of that.
fn lines(block: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(block);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b'\n', r) {
            Some(end) => {
                rest = Some(&r[end + 1..]);
                Some(&r[..end])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &v[start..end]
}

/// A request head and its framing.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// Method, any token (`GET`, `PATCH`, `PROPFIND`, …).
    pub method: &'a str,
    /// Request target as sent (`/path?query`, `*`, `host:port`, absolute URL).
    pub target: &'a str,
    /// Minor version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version: u8,
    /// Header lines.
    pub headers: Headers<'a>,
    /// Body framing.
    pub body: Body,
    /// Bytes of the head (start line to the blank line).
    pub head_len: usize,
}

/// A response head and its framing.
#[derive(Clone, Copy, Debug)]
pub struct Response<'a> {
    /// Status code.
    pub status: u16,
    /// Reason phrase.
    pub reason: &'a str,
    /// Minor version.
    pub version: u8,
    /// Header lines.
    pub headers: Headers<'a>,
    /// Body framing.
    pub body: Body,
    /// Bytes of the head.
    pub head_len: usize,
}

/// An HTTP/1 message.
#[derive(Clone, Copy, Debug)]
pub enum Message<'a> {
    /// Client to server.
    Request(Request<'a>),
    /// Server to client.
    Response(Response<'a>),
}

/// What a request needs remembered until its response arrives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Pending {
    #[default]
    Plain,
    Head,
    Connect,
}

/// Per-connection state: the methods of requests still awaiting their
/// response (pipelining), and whether the connection left HTTP/1.
#[derive(Clone, Debug, Default)]
pub struct Session {
    pending: [Pending; MAX_PIPELINE],
    first: usize,
    len: usize,
    /// Requests whose method was forgotten because more than
    /// [`MAX_PIPELINE`] were in flight (their responses are framed as GET's).
    pub pipeline_overflow: u64,
    upgraded: bool,
}

impl Session {
    fn push(&mut self, p: Pending) {
        if self.len == MAX_PIPELINE {
            self.pipeline_overflow += 1;
            return;
        }
        self.pending[(self.first + self.len) % MAX_PIPELINE] = p;
        self.len += 1;
    }

    fn front(&self) -> Pending {
        if self.len == 0 {
            Pending::Plain
        } else {
            self.pending[self.first]
        }
    }

    fn pop(&mut self) {
        if self.len > 0 {
            self.first = (self.first + 1) % MAX_PIPELINE;
            self.len -= 1;
        }
    }

    /// Whether the connection switched protocols (no more HTTP/1 on it).
    pub fn is_upgraded(&self) -> bool {
        self.upgraded
    }

    /// Responses were lost (not captured, or unreadable): which requests
    /// they answered is unknown, so what was remembered of the requests
    /// waiting then (HEAD, CONNECT) is forgotten; requests sent from now
    /// on frame their responses again.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::http1::{Body, Http1, Message, Session};
    /// use kindling_proto::{Direction, Status};
    ///
    /// let mut s = Session::default();
    /// let _ = Http1::parse_head(&mut s, Direction::Request, b"GET /a HTTP/1.1\r\n\r\n");
    /// // the GET's response is lost; then a HEAD
    /// s.forget_pending();
    /// let _ = Http1::parse_head(&mut s, Direction::Request, b"HEAD /b HTTP/1.1\r\n\r\n");
    /// let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    /// let Ok(Status::Complete(Message::Response(r))) =
    ///     Http1::parse_head(&mut s, Direction::Response, head)
    /// else {
    ///     panic!("a response head")
    /// };
    /// assert_eq!(r.body, Body::None, "a HEAD's response has no body");
    /// ```
    pub fn forget_pending(&mut self) {
        self.first = 0;
        self.len = 0;
    }
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn detect_request(head: &[u8]) -> Detect {
    // Known methods decide at once; others need the whole start line.
    for m in METHODS {
        let n = m.len().min(head.len());
        if head[..n] == m[..n] {
            return if n == m.len() {
                Detect::Match
            } else {
                Detect::NeedMore
            };
        }
    }
    let token = head.iter().take_while(|&&b| is_tchar(b)).count();
    if token == 0 || token > 24 {
        return Detect::NoMatch;
    }
    let Some(line_end) = head.iter().position(|&b| b == b'\n') else {
        return if head.len() > 2048 || head[token..].first().is_some_and(|&b| b != b' ') {
            Detect::NoMatch
        } else {
            Detect::NeedMore
        };
    };
    let line = head[..line_end]
        .strip_suffix(b"\r")
        .unwrap_or(&head[..line_end]);
    if head.get(token) == Some(&b' ')
        && (line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0"))
    {
        Detect::Match
    } else {
        Detect::NoMatch
    }
}

/// Where a request starts in a whole line ending in ` HTTP/1.x`: the
/// longest known method ending just before the target, or else the token.
fn request_in_line(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let rest = line
        .strip_suffix(b" HTTP/1.1")
        .or_else(|| line.strip_suffix(b" HTTP/1.0"))?;
    let target_at = rest.iter().rposition(|&b| b == b' ')?;
    let before = &rest[..=target_at]; // "...METHOD "
    if let Some(m) = METHODS
        .iter()
        .filter(|m| before.ends_with(m))
        .max_by_key(|m| m.len())
    {
        return Some(before.len() - m.len());
    }
    let token = before[..target_at]
        .iter()
        .rev()
        .take_while(|&&b| is_tchar(b))
        .count();
    (token > 0).then_some(target_at - token)
}

fn detect_response(head: &[u8]) -> Detect {
    const PREFIX: &[u8] = b"HTTP/1.";
    let n = PREFIX.len().min(head.len());
    if head[..n] != PREFIX[..n] {
        return Detect::NoMatch;
    }
    // "HTTP/1.x ddd"
    let rest = &head[n..];
    let shape: [fn(u8) -> bool; 5] = [
        |b| b == b'0' || b == b'1',
        |b| b == b' ',
        |b| b.is_ascii_digit(),
        |b| b.is_ascii_digit(),
        |b| b.is_ascii_digit(),
    ];
    for (i, ok) in shape.iter().enumerate() {
        match rest.get(i) {
            None => return Detect::NeedMore,
            Some(&b) if !ok(b) => return Detect::NoMatch,
            Some(_) => {}
        }
    }
    Detect::Match
}

fn parse_content_length(v: &[u8]) -> Option<u64> {
    // A list of identical values is allowed (RFC 9110 §8.6).
    let mut out: Option<u64> = None;
    for part in v.split(|&b| b == b',') {
        let part = trim(part);
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = std::str::from_utf8(part).ok()?.parse().ok()?;
        match out {
            Some(prev) if prev != n => return None,
            _ => out = Some(n),
        }
    }
    out
}

/// Whether a comma-separated header value contains `token`, case-insensitively.
pub fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
}

fn last_token_is_chunked(te: &[u8]) -> bool {
    te.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|t| trim(t).eq_ignore_ascii_case(b"chunked"))
}

/// Framing from headers; `None` = request without body / response until close.
fn framing<'h>(
    headers: impl Iterator<Item = (&'h str, &'h [u8])>,
    is_request: bool,
    known: &mut Known<'h>,
) -> Result<Option<Body>, Error> {
    let mut te: Option<&[u8]> = None;
    let mut cl: Option<u64> = None;
    // (the attributes' headers are noted in the same pass)
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("transfer-encoding") {
            te = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let n = parse_content_length(value).ok_or(Error::BadContentLength)?;
            if cl.is_some_and(|prev| prev != n) {
                return Err(Error::BadContentLength);
            }
            cl = Some(n);
        } else {
            known.note(name, value);
        }
    }
    if let Some(te) = te {
        if last_token_is_chunked(te) {
            return Ok(Some(Body::Chunked {
                data: 0,
                encoded: 0,
            }));
        }
        return if is_request {
            Err(Error::BadTransferEncoding)
        } else {
            Ok(None)
        };
    }
    Ok(cl.map(|n| if n == 0 { Body::None } else { Body::Length(n) }))
}

/// Walks a chunked body at the start of `buf`: `(data bytes, wire bytes)`.
fn chunked_len(buf: &[u8]) -> Result<Status<(u64, usize)>, Error> {
    let mut at = 0usize;
    let mut data = 0u64;
    loop {
        let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') else {
            return if buf.len() - at > 1024 {
                Err(Error::BadChunk)
            } else {
                Ok(Status::Partial)
            };
        };
        let line = &buf[at..at + nl];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let size_part = line.split(|&b| b == b';').next().unwrap_or(b"");
        let size_part = trim(size_part);
        if size_part.is_empty()
            || size_part.len() > 16
            || !size_part.iter().all(u8::is_ascii_hexdigit)
        {
            return Err(Error::BadChunk);
        }
        let size = u64::from_str_radix(
            std::str::from_utf8(size_part).map_err(|_| Error::BadChunk)?,
            16,
        )
        .map_err(|_| Error::BadChunk)?;
        at += nl + 1;
        if size == 0 {
            // trailers, then an empty line
            loop {
                let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') else {
                    return if buf.len() - at > 8192 {
                        Err(Error::BadChunk)
                    } else {
                        Ok(Status::Partial)
                    };
                };
                let empty = nl == 0 || (nl == 1 && buf[at] == b'\r');
                at += nl + 1;
                if empty {
                    return Ok(Status::Complete((data, at)));
                }
            }
        }
        data = data.checked_add(size).ok_or(Error::BadChunk)?;
        let size = usize::try_from(size).map_err(|_| Error::BadChunk)?;
        let end = at.checked_add(size).ok_or(Error::BadChunk)?;
        match buf.get(end..end + 2) {
            None if buf.len() < end + 2 => return Ok(Status::Partial),
            Some(b"\r\n") => at = end + 2,
            _ => match buf.get(end) {
                // tolerate a bare LF terminator
                Some(b'\n') => at = end + 1,
                _ => return Err(Error::BadChunk),
            },
        }
    }
}

/// Completes a message whose head is `head_len` bytes: adds the body.
fn with_body(buf: &[u8], head_len: usize, body: Body) -> Result<Status<(Body, usize)>, Error> {
    match body {
        Body::None => Ok(Status::Complete((Body::None, head_len))),
        Body::Length(n) => {
            let end = usize::try_from(n)
                .ok()
                .and_then(|n| head_len.checked_add(n));
            match end {
                Some(end) if end <= buf.len() => Ok(Status::Complete((body, end))),
                _ => Ok(Status::Partial),
            }
        }
        Body::Chunked { .. } => match chunked_len(&buf[head_len..])? {
            Status::Complete((data, wire)) => Ok(Status::Complete((
                Body::Chunked {
                    data,
                    encoded: wire as u64,
                },
                head_len + wire,
            ))),
            Status::Partial => Ok(Status::Partial),
        },
        Body::UntilClose => Ok(Status::Complete((Body::UntilClose, buf.len()))),
    }
}

fn map_httparse(e: httparse::Error) -> Error {
    match e {
        httparse::Error::TooManyHeaders => Error::TooManyHeaders,
        _ => Error::BadHead,
    }
}

/// The header block between the start line and the blank line: it starts at
/// the first header name httparse found (no second scan of the start line).
fn header_block<'a>(
    buf: &'a [u8],
    head_len: usize,
    first: Option<&httparse::Header<'a>>,
) -> &'a [u8] {
    let start = first.map_or(head_len, |h| {
        (h.name.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize)
    });
    buf.get(start.min(head_len)..head_len).unwrap_or(&[])
}

impl Http1 {
    /// The complete lines of a head cut short (by a capture length): its
    /// start line and every header line that ends before the cut. `None`
    /// when the start line itself is cut or is not HTTP/1. The body's
    /// framing is unknown ([`Body::None`]); `head_len` counts the complete
    /// lines.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::http1::{Http1, Message};
    /// use kindling_proto::Direction;
    ///
    /// let cut = b"GET /api/users?id=7 HTTP/1.1\r\nHost: shop.test\r\nCookie: a=aaaaaaaa";
    /// let Some(Message::Request(r)) = Http1::parse_cut_head(Direction::Request, cut) else {
    ///     panic!("the request line is whole")
    /// };
    /// assert_eq!((r.method, r.path()), ("GET", "/api/users"));
    /// assert_eq!(r.headers.get("host"), Some(&b"shop.test"[..]));
    /// assert_eq!(r.headers.get("cookie"), None, "its line was cut");
    /// ```
    pub fn parse_cut_head(dir: Direction, buf: &[u8]) -> Option<Message<'_>> {
        let complete = &buf[..buf.iter().rposition(|&b| b == b'\n')? + 1];
        let start_end = complete.iter().position(|&b| b == b'\n')? + 1;
        let start = std::str::from_utf8(&complete[..start_end]).ok()?.trim_end();
        let headers = Headers::new(&complete[start_end..]);
        let version = |v: &str| match v {
            "HTTP/1.0" => Some(0),
            "HTTP/1.1" => Some(1),
            _ => None,
        };
        let mut words = start.splitn(3, ' ');
        let (first, second, third) = (words.next()?, words.next()?, words.next().unwrap_or(""));
        match dir {
            Direction::Request => {
                let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
                if first.is_empty() || !first.bytes().all(token) || second.is_empty() {
                    return None;
                }
                Some(Message::Request(Request {
                    method: first,
                    target: second,
                    version: version(third)?,
                    headers,
                    body: Body::None,
                    head_len: complete.len(),
                }))
            }
            Direction::Response => {
                let status = (second.len() == 3)
                    .then(|| second.parse::<u16>().ok())
                    .flatten()
                    .filter(|s| (100..=999).contains(s))?;
                Some(Message::Response(Response {
                    status,
                    reason: third,
                    version: version(first)?,
                    headers,
                    body: Body::None,
                    head_len: complete.len(),
                }))
            }
        }
    }

    /// Parses only the head; the body framing is returned but the body bytes
    /// are not required (for callers that skip uncaptured bodies by length).
    pub fn parse_head<'a>(
        session: &mut Session,
        dir: Direction,
        buf: &'a [u8],
    ) -> Result<Status<Message<'a>>, Error> {
        if session.upgraded {
            return Err(Error::Upgraded);
        }
        // Uninitialised slots: initialising ~3 KiB of headers per call would
        // cost more than parsing a typical head.
        let mut lines =
            [const { std::mem::MaybeUninit::<httparse::Header<'a>>::uninit() }; MAX_HEADERS];
        match dir {
            Direction::Request => {
                let mut req = httparse::Request::new(&mut []);
                let head_len = match req
                    .parse_with_uninit_headers(buf, &mut lines)
                    .map_err(map_httparse)?
                {
                    httparse::Status::Complete(n) => n,
                    httparse::Status::Partial => return Ok(Status::Partial),
                };
                let (Some(method), Some(target), Some(version)) =
                    (req.method, req.path, req.version)
                else {
                    return Err(Error::BadHead);
                };
                let block = header_block(buf, head_len, req.headers.first());
                // Frame from httparse's already split lines, not a second pass.
                let lines = req.headers.iter().map(|h| (h.name, h.value));
                let mut known = Known::default();
                let body = framing(lines, true, &mut known)?.unwrap_or(Body::None);
                let headers = Headers::framed(block, known);
                session.push(match method {
                    "HEAD" => Pending::Head,
                    "CONNECT" => Pending::Connect,
                    _ => Pending::Plain,
                });
                Ok(Status::Complete(Message::Request(Request {
                    method,
                    target,
                    version,
                    headers,
                    body,
                    head_len,
                })))
            }
            Direction::Response => {
                let mut resp = httparse::Response::new(&mut []);
                let head_len = match httparse::ParserConfig::default()
                    .parse_response_with_uninit_headers(&mut resp, buf, &mut lines)
                    .map_err(map_httparse)?
                {
                    httparse::Status::Complete(n) => n,
                    httparse::Status::Partial => return Ok(Status::Partial),
                };
                let (Some(status), Some(version)) = (resp.code, resp.version) else {
                    return Err(Error::BadHead);
                };
                let reason = resp.reason.unwrap_or("");
                let block = header_block(buf, head_len, resp.headers.first());
                let request = session.front();
                let (body, headers) = if status == 101
                    || (request == Pending::Connect && (200..300).contains(&status))
                {
                    session.upgraded = true;
                    (Body::None, Headers::parsed(block, resp.headers))
                } else if (100..200).contains(&status)
                    || status == 204
                    || status == 304
                    || request == Pending::Head
                {
                    (Body::None, Headers::parsed(block, resp.headers))
                } else {
                    let lines = resp.headers.iter().map(|h| (h.name, h.value));
                    let mut known = Known::default();
                    let body = framing(lines, false, &mut known)?.unwrap_or(Body::UntilClose);
                    (body, Headers::framed(block, known))
                };
                // An interim response (100 Continue, 103) leaves the request pending.
                if !(100..200).contains(&status) || status == 101 {
                    session.pop();
                }
                Ok(Status::Complete(Message::Response(Response {
                    status,
                    reason,
                    version,
                    headers,
                    body,
                    head_len,
                })))
            }
        }
    }
}

impl Protocol for Http1 {
    type Session = Session;
    type Message<'a> = Message<'a>;
    type Error = Error;

    /// # Examples
    ///
    /// ```
    /// use kindling_proto::{http1::Http1, Detect, Direction, Protocol};
    ///
    /// assert_eq!(Http1::detect(b"PATCH /x HTTP/1.1\r\n", Direction::Request), Detect::Match);
    /// assert_eq!(Http1::detect(b"HTTP/1.1 204", Direction::Response), Detect::Match);
    /// assert_eq!(Http1::detect(b"HTT", Direction::Response), Detect::NeedMore);
    /// assert_eq!(Http1::detect(b"*1\r\n$4\r\nPING\r\n", Direction::Request), Detect::NoMatch);
    /// ```
    fn detect(head: &[u8], dir: Direction) -> Detect {
        if head.is_empty() {
            return Detect::NeedMore;
        }
        match dir {
            Direction::Request => detect_request(head),
            Direction::Response => detect_response(head),
        }
    }

    /// Finds a start line: `HTTP/1.x ddd` for a response, `METHOD target
    /// HTTP/1.x` for a request. A message need not start at a line start (a
    /// body rarely ends in a newline), so a response is any `HTTP/1.x ddd`
    /// and a request is the known method (or else the token) just before the
    /// target on a line that ends in the version.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::{http1::Http1, Direction, Protocol};
    ///
    /// let lost_head = b"...end of a body}HTTP/1.1 200 OK\r\n\r\n";
    /// assert_eq!(Http1::resync(lost_head, Direction::Response), Some(17));
    /// let lost_body = b"a=1&b=2GET /next HTTP/1.1\r\n\r\n";
    /// assert_eq!(Http1::resync(lost_body, Direction::Request), Some(7));
    /// ```
    fn resync(buf: &[u8], dir: Direction) -> Option<usize> {
        match dir {
            Direction::Response => (0..buf.len().saturating_sub(6))
                .find(|&at| buf[at] == b'H' && detect_response(&buf[at..]) == Detect::Match),
            Direction::Request => {
                let mut line_start = 0;
                for line in buf.split_inclusive(|&b| b == b'\n') {
                    if let Some(at) = request_in_line(line) {
                        return Some(line_start + at);
                    }
                    line_start += line.len();
                }
                None
            }
        }
    }

    fn parse<'a>(
        session: &mut Session,
        dir: Direction,
        buf: &'a [u8],
    ) -> Result<Status<(Message<'a>, usize)>, Error> {
        // Parse the head on a copy of the session: a Partial body must not
        // commit the pipeline bookkeeping twice when the caller retries.
        let mut trial = session.clone();
        let msg = match Self::parse_head(&mut trial, dir, buf)? {
            Status::Complete(m) => m,
            Status::Partial => return Ok(Status::Partial),
        };
        let (head_len, body) = match &msg {
            Message::Request(r) => (r.head_len, r.body),
            Message::Response(r) => (r.head_len, r.body),
        };
        match with_body(buf, head_len, body)? {
            Status::Complete((body, used)) => {
                *session = trial;
                let msg = match msg {
                    Message::Request(r) => Message::Request(Request { body, ..r }),
                    Message::Response(r) => Message::Response(Response { body, ..r }),
                };
                Ok(Status::Complete((msg, used)))
            }
            Status::Partial => Ok(Status::Partial),
        }
    }
}

impl<'a> Request<'a> {
    /// The path, without query or fragment (`/users/42`); for absolute-form
    /// targets the path part of the URL.
    pub fn path(&self) -> &'a str {
        let t = self.target;
        // origin form (`/a/b?q`), nearly every request: no scheme to strip,
        // even if `://` appears later in the query
        let t = if t.starts_with('/') {
            t
        } else {
            match t.find("://") {
                Some(scheme_end) => t[scheme_end + 3..]
                    .find('/')
                    .map_or("/", |p| &t[scheme_end + 3 + p..]),
                None => t,
            }
        };
        // (bytes: a set of chars is matched char by char, and a vectorised
        // search costs more to start than a path is long)
        let end = t
            .bytes()
            .position(|b| b == b'?' || b == b'#')
            .unwrap_or(t.len());
        &t[..end]
    }

    /// The query string without `?`, if any.
    pub fn query(&self) -> Option<&'a str> {
        let t = self.target;
        let q = &t[t.find('?')? + 1..];
        Some(&q[..q.find('#').unwrap_or(q.len())])
    }

    /// `Upgrade` protocol requested (`websocket`, `h2c`) with `Connection: upgrade`.
    pub fn upgrade(&self) -> Option<&'a [u8]> {
        let conn = self.headers.get("connection")?;
        has_token(conn, "upgrade")
            .then(|| self.headers.get("upgrade"))
            .flatten()
    }

    /// Whether the client waits for `100 Continue` before sending the body.
    pub fn expects_continue(&self) -> bool {
        self.headers
            .get("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"))
    }
}

impl Response<'_> {
    /// 1xx other than 101: an interim response; the final one follows.
    pub fn is_interim(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

/// Headers whose values are secrets; redacted in records by default.
pub const SENSITIVE_HEADERS: [&str; 4] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
];

/// The text that replaces a redacted value.
pub const REDACTED: &str = "[REDACTED]";

/// What records hide. The default hides credential headers and query
/// values.
///
/// # Examples
///
/// ```
/// use kindling_proto::http1::{Http1, Message, Redaction};
/// use kindling_proto::{Direction, Protocol, Status};
///
/// let keep_page = Redaction {
///     keep_query_values: vec!["page".into()],
///     ..Redaction::default()
/// };
/// let raw = b"GET /a?page=2&token=x HTTP/1.1\r\n\r\n";
/// let Ok(Status::Complete((Message::Request(req), _))) =
///     Http1::parse(&mut Default::default(), Direction::Request, raw)
/// else {
///     unreachable!()
/// };
/// let rec = req.to_record(&keep_page);
/// assert_eq!(rec.target.as_deref(), Some("/a?page=2&token=?"));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Redaction {
    /// Replace the values of [`SENSITIVE_HEADERS`].
    pub credentials: bool,
    /// Replace every query parameter value (`?id=42&q=x` → `?id=?&q=?`):
    /// on by default, since queries carry tokens (`?api_key=…`) as often
    /// as page numbers.
    pub query_values: bool,
    /// Query parameters whose values are kept when `query_values` redacts
    /// the others (an allow-list: `page`, `lang`), compared exactly.
    pub keep_query_values: Vec<String>,
}

impl Default for Redaction {
    fn default() -> Self {
        Self {
            credentials: true,
            query_values: true,
            keep_query_values: Vec::new(),
        }
    }
}

/// An owned, serialisable, redacted record of one HTTP/1 message.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct HttpRecord {
    /// Request method (requests only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Request target, query values redacted if configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Status code (responses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `1.0` or `1.1`.
    pub version: String,
    /// Header lines in order, sensitive values redacted.
    pub headers: Vec<(String, String)>,
    /// Body size: declared (Content-Length) or decoded (chunked); none for
    /// bodiless messages and bodies that run until close.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_bytes: Option<u64>,
    /// Whether the body was chunked.
    pub chunked: bool,
    /// Trace context found in the headers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace: Option<OwnedTrace>,
}

/// An owned [`crate::trace::TraceContext`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct OwnedTrace {
    /// Format.
    pub format: crate::trace::TraceFormat,
    /// Trace id as sent.
    pub trace_id: String,
    /// Span id as sent.
    pub span_id: String,
}

fn redact_query(target: &str, keep: &[String]) -> String {
    let Some(q) = target.find('?') else {
        return target.to_owned();
    };
    let (path, query) = target.split_at(q + 1);
    let redacted: Vec<String> = query
        .split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) if !keep.iter().any(|kept| kept == k) => format!("{k}=?"),
            Some(_) => kv.to_owned(),
            None => kv.to_owned(),
        })
        .collect();
    format!("{path}{}", redacted.join("&"))
}

fn record_headers(headers: &Headers<'_>, r: &Redaction) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(n, v)| {
            let secret =
                r.credentials && SENSITIVE_HEADERS.iter().any(|s| n.eq_ignore_ascii_case(s));
            let value = if secret {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(v).into_owned()
            };
            (n.to_owned(), value)
        })
        .collect()
}

fn body_bytes(b: Body) -> (Option<u64>, bool) {
    match b {
        Body::None => (None, false),
        Body::Length(n) => (Some(n), false),
        // a head read alone (its body followed later) does not know it
        Body::Chunked { encoded: 0, .. } => (None, true),
        Body::Chunked { data, .. } => (Some(data), true),
        Body::UntilClose => (None, false),
    }
}

impl<'a> Headers<'a> {
    /// The trace context these headers carry, if any.
    pub fn trace_context(&self) -> Option<crate::trace::TraceContext<'a>> {
        let headers = *self;
        crate::trace::trace_context(move |n| headers.get(n))
    }
}

fn owned_trace(h: &Headers<'_>) -> Option<OwnedTrace> {
    h.trace_context().map(|t| OwnedTrace {
        format: t.format,
        trace_id: t.trace_id.to_owned(),
        span_id: t.span_id.to_owned(),
    })
}

impl Request<'_> {
    /// An owned, redacted record.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::http1::{Http1, Message, Redaction};
    /// use kindling_proto::{Direction, Protocol, Status};
    ///
    /// let raw = b"GET /a?token=xyz HTTP/1.1\r\nAuthorization: Basic Zm9vOmJhcg==\r\n\r\n";
    /// let Ok(Status::Complete((Message::Request(req), _))) =
    ///     Http1::parse(&mut Default::default(), Direction::Request, raw)
    /// else {
    ///     unreachable!()
    /// };
    /// let rec = req.to_record(&Redaction { query_values: true, ..Default::default() });
    /// assert_eq!(rec.target.as_deref(), Some("/a?token=?"));
    /// assert_eq!(rec.headers[0].1, "[REDACTED]");
    /// ```
    pub fn to_record(&self, r: &Redaction) -> HttpRecord {
        let (body_bytes, chunked) = body_bytes(self.body);
        HttpRecord {
            method: Some(self.method.to_owned()),
            target: Some(if r.query_values {
                redact_query(self.target, &r.keep_query_values)
            } else {
                self.target.to_owned()
            }),
            status: None,
            version: format!("1.{}", self.version),
            headers: record_headers(&self.headers, r),
            body_bytes,
            chunked,
            trace: owned_trace(&self.headers),
        }
    }

    /// OpenTelemetry semantic-convention attributes of the request.
    pub fn attributes(&self, r: &Redaction) -> Vec<(&'static str, String)> {
        let mut a = Vec::new();
        self.write_attributes(r, &mut a);
        a
    }

    /// The attributes metrics are labelled by: method, path and the
    /// `Host` header's `server.address`.
    pub fn write_essential_attributes(&self, a: &mut impl AttributeSink) {
        a.put("http.request.method", self.method);
        a.put("url.path", self.path());
        if let Some(host) = self.headers.get("host") {
            a.put_bytes("server.address", host);
        }
    }

    /// [`Request::attributes`] into any sink, without allocating per value.
    pub fn write_attributes(&self, r: &Redaction, a: &mut impl AttributeSink) {
        a.put("http.request.method", self.method);
        a.put("url.path", self.path());
        a.put("network.protocol.name", "http");
        a.put(
            "network.protocol.version",
            if self.version == 0 { "1.0" } else { "1.1" },
        );
        if let Some(q) = self.query() {
            if r.query_values {
                a.put(
                    "url.query",
                    &redact_query(&format!("?{q}"), &r.keep_query_values)[1..],
                );
            } else {
                a.put("url.query", q);
            }
        }
        let known = &self.headers.known;
        let found = [known.host, known.user_agent, known.content_type];
        let keys = [
            "server.address",
            "user_agent.original",
            "http.request.header.content-type",
        ];
        for (key, value) in keys.into_iter().zip(found) {
            if let Some(v) = value {
                a.put_bytes(key, v);
            }
        }
        if let (Some(n), _) = body_bytes(self.body) {
            a.put_u64("http.request.body.size", n);
        }
    }
}

impl Response<'_> {
    /// An owned, redacted record.
    pub fn to_record(&self, r: &Redaction) -> HttpRecord {
        let (body_bytes, chunked) = body_bytes(self.body);
        HttpRecord {
            method: None,
            target: None,
            status: Some(self.status),
            version: format!("1.{}", self.version),
            headers: record_headers(&self.headers, r),
            body_bytes,
            chunked,
            trace: owned_trace(&self.headers),
        }
    }

    /// OpenTelemetry semantic-convention attributes of the response.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut a = Vec::new();
        self.write_attributes(&mut a);
        a
    }

    /// [`Response::attributes`] into any sink, without allocating per value.
    pub fn write_attributes(&self, a: &mut impl AttributeSink) {
        a.put_u64("http.response.status_code", u64::from(self.status));
        if let Some(ct) = self.headers.get("content-type") {
            a.put_bytes("http.response.header.content-type", ct);
        }
        if let (Some(n), _) = body_bytes(self.body) {
            a.put_u64("http.response.body.size", n);
        }
    }
}

/// Follows a message body chunk by chunk without keeping it: for bodies
/// too large to buffer, or partly uncaptured. Built from the [`Body`] that
/// [`Http1::parse_head`] returned.
///
/// # Examples
///
/// ```
/// use kindling_proto::http1::{Body, BodyReader};
/// use kindling_proto::Follower;
///
/// let mut r = BodyReader::new(Body::Chunked { data: 0, encoded: 0 });
/// assert_eq!(r.feed(b"5\r\nhel").unwrap(), None);
/// assert_eq!(r.feed(b"lo\r\n0\r\n\r\nGET /next").unwrap(), Some(9));
/// assert_eq!(r.data(), 5);
/// ```
#[derive(Clone, Debug)]
pub struct BodyReader {
    state: BodyState,
    /// Decoded body bytes so far.
    data: u64,
    /// Whether the head did not tell the body's size (chunked, or until
    /// the close): the reader does, once the body ended.
    tells_size: bool,
    /// Bytes of the current chunk-size or trailer line.
    line: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BodyState {
    /// This many body bytes to go.
    Length(u64),
    /// Until the connection closes.
    Unbounded,
    /// A chunk-size line.
    ChunkSize,
    /// This many chunk bytes to go.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    /// Trailer lines, until an empty one.
    Trailers,
    Done,
}

/// Longest chunk-size line, and most trailer bytes, accepted.
const MAX_CHUNK_LINE: usize = 1024;
const MAX_TRAILERS: usize = 8192;

impl BodyReader {
    /// A reader for a body framed as `body` says.
    pub fn new(body: Body) -> Self {
        let state = match body {
            Body::None | Body::Length(0) => BodyState::Done,
            Body::Length(n) => BodyState::Length(n),
            Body::Chunked { .. } => BodyState::ChunkSize,
            Body::UntilClose => BodyState::Unbounded,
        };
        Self {
            state,
            data: 0,
            tells_size: matches!(body, Body::Chunked { .. } | Body::UntilClose),
            line: Vec::new(),
        }
    }

    /// Decoded body bytes so far.
    pub fn data(&self) -> u64 {
        self.data
    }
}

impl Summarize for Http1 {
    const ID: ProtocolId = ProtocolId::Http;

    fn summarize(
        _: &mut Session,
        message: &Message<'_>,
        options: &SummaryOptions,
        attributes: &mut impl AttributeSink,
    ) -> Summary {
        match message {
            Message::Request(r) => {
                if options.detail == crate::Detail::Essential {
                    r.write_essential_attributes(attributes);
                } else {
                    r.write_attributes(&options.redaction, attributes);
                }
                Summary::Request {
                    key: None,
                    answered: true,
                }
            }
            Message::Response(r) if r.is_interim() => Summary::Ignore,
            Message::Response(r) => {
                if options.detail == crate::Detail::Essential {
                    attributes.put_u64("http.response.status_code", u64::from(r.status));
                } else {
                    r.write_attributes(attributes);
                }
                Summary::Response {
                    key: None,
                    failure: match r.status {
                        400..=499 => Some(Failure::Client),
                        500..=599 => Some(Failure::Server),
                        _ => None,
                    },
                }
            }
        }
    }
}

impl Follower for BodyReader {
    type Error = Error;

    /// The decoded size of a chunked (or until-close) body, which its head
    /// could not tell.
    fn write_attributes(&self, dir: Direction, attributes: &mut impl AttributeSink) {
        let ended = matches!(self.state, BodyState::Done | BodyState::Unbounded);
        if self.tells_size && ended {
            let key = match dir {
                Direction::Request => "http.request.body.size",
                Direction::Response => "http.response.body.size",
            };
            attributes.put_u64(key, self.data);
        }
    }

    /// A body without a length or chunks ends with the connection.
    fn ends_with_close(&self) -> bool {
        self.state == BodyState::Unbounded
    }

    /// Whether the body is complete.
    fn is_done(&self) -> bool {
        self.state == BodyState::Done
    }

    /// Reads the next bytes of the body: `Some(n)` when it ended after the
    /// first `n` bytes of `input` (the rest is the next message), `None`
    /// when all of `input` belonged to it.
    fn feed(&mut self, input: &[u8]) -> Result<Option<usize>, Error> {
        let mut at = 0;
        loop {
            let rest = &input[at..];
            match self.state {
                BodyState::Done => return Ok(Some(at)),
                BodyState::Unbounded => {
                    self.data += rest.len() as u64;
                    return Ok(None);
                }
                BodyState::Length(left) | BodyState::ChunkData(left) => {
                    let n = left.min(rest.len() as u64);
                    self.data += n;
                    at += n as usize;
                    let left = left - n;
                    self.state = match (self.state, left) {
                        (BodyState::Length(_), 0) => BodyState::Done,
                        (BodyState::Length(_), _) => BodyState::Length(left),
                        (_, 0) => BodyState::ChunkEnd,
                        _ => BodyState::ChunkData(left),
                    };
                    if left > 0 {
                        return Ok(None);
                    }
                }
                BodyState::ChunkEnd => match rest.first() {
                    None => return Ok(None),
                    Some(b'\r') => at += 1,
                    Some(b'\n') => {
                        at += 1;
                        self.state = BodyState::ChunkSize;
                    }
                    Some(_) => return Err(Error::BadChunk),
                },
                BodyState::ChunkSize | BodyState::Trailers => {
                    let limit = if self.state == BodyState::ChunkSize {
                        MAX_CHUNK_LINE
                    } else {
                        MAX_TRAILERS
                    };
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if self.line.len() + rest.len() > limit {
                            return Err(Error::BadChunk);
                        }
                        self.line.extend_from_slice(rest);
                        return Ok(None);
                    };
                    if self.line.len() + nl > limit {
                        return Err(Error::BadChunk);
                    }
                    self.line.extend_from_slice(&rest[..nl]);
                    at += nl + 1;
                    let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
                    if self.state == BodyState::Trailers {
                        if line.is_empty() {
                            self.state = BodyState::Done;
                        }
                        self.line.clear();
                        continue;
                    }
                    let size_part = trim(line.split(|&b| b == b';').next().unwrap_or(b""));
                    if size_part.is_empty()
                        || size_part.len() > 16
                        || !size_part.iter().all(u8::is_ascii_hexdigit)
                    {
                        return Err(Error::BadChunk);
                    }
                    let size = size_part.iter().fold(0u64, |v, &d| {
                        v << 4 | u64::from((d as char).to_digit(16).unwrap_or(0))
                    });
                    self.line.clear();
                    self.state = if size == 0 {
                        BodyState::Trailers
                    } else {
                        BodyState::ChunkData(size)
                    };
                }
            }
        }
    }

    /// `n` body bytes were sent but not captured. Fine inside data of a
    /// known length; an error where the framing itself was not seen.
    fn skip_unseen(&mut self, n: u64) -> Result<u64, Error> {
        let used = match self.state {
            BodyState::Unbounded => n,
            // a body of known length ends at a known offset, seen or not
            BodyState::Length(left) => {
                self.state = if n >= left {
                    BodyState::Done
                } else {
                    BodyState::Length(left - n)
                };
                n.min(left)
            }
            BodyState::ChunkData(left) if n <= left => {
                self.state = if n == left {
                    BodyState::ChunkEnd
                } else {
                    BodyState::ChunkData(left - n)
                };
                n
            }
            _ if n == 0 => 0,
            _ => return Err(Error::BadChunk),
        };
        self.data += used;
        Ok(used)
    }
}
