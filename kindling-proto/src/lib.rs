//! # kindling-proto
//!
//! Pure protocol parsers for the bytes Kindling sees on sockets, detected by
//! content and parsed without copying. No I/O, no unsafe; usable on bytes from
//! anywhere (a probe, a pcap, a proxy, a test).
//!
//! ```text
//!  first bytes ──detect()──► Match / NoMatch / NeedMore
//!  stream bytes ──parse(session, dir, buf)──► Complete((Message<'buf>, consumed)) | Partial
//!                                              │ borrowed view, no allocation
//!                                              └─► .to_record() ─► owned, serde, redacted
//! ```
//!
//! Every protocol implements [`Protocol`]; a caller keeps one
//! [`Protocol::Session`] per connection (state such as pipelined HEAD requests
//! or MySQL capabilities) and walks a stream by `consumed` bytes. Missing bytes
//! are never an error: [`Status::Partial`] asks for more.
//!
//! ## Status
//! * [`http1`]: HTTP/1.0 and 1.1: detection, heads, framing (Content-Length,
//!   chunked with extensions and trailers, until-close, bodiless responses),
//!   pipelining, `100 Continue`, `Upgrade`, trace context, redaction.
//! * [`redis`]: RESP2, RESP3 (every type) and inline commands: command,
//!   two-word subcommand, first key, sanitised query text, error codes,
//!   pushes and pub/sub messages.
//! * [`dns`]: DNS over UDP and TCP: header, every section, compression with
//!   loop and length limits, A, AAAA, CNAME, NS, PTR, MX, TXT, SRV, SOA, OPT,
//!   unknown types raw.
//! * [`trace`]: W3C, B3, Jaeger and SkyWalking trace context.
//! * [`mysql`]: MySQL/MariaDB: handshake, login, SSLRequest (marks the
//!   connection encrypted), COM_QUERY with query attributes, prepared
//!   statements (EXECUTE reports the prepared SQL), whole result sets with
//!   and without `CLIENT_DEPRECATE_EOF`, COM_FIELD_LIST, OK/ERR/EOF;
//!   compression detected. Connections joined mid-way are detected from
//!   any common command, their capabilities inferred.
//! * [`sql`]: SQL literals to `?`, operation and table.
//!
//! ## What a monitor keeps of a message
//!
//! [`Summarize`] turns any protocol's message into a [`Summary`] (how it
//! pairs, whether it reports a [`Failure`]) and OpenTelemetry attributes;
//! [`Follower`] reads a message too large to buffer chunk by chunk; a
//! [`ProtocolId`] names the protocol. A pipeline built on these three knows
//! nothing else about any protocol.
//!
//! ## Adding a protocol
//!
//! 1. A module here, shaped like the others: the specification's layout
//!    quoted at its top, a session type, borrowed messages, and
//!    [`Protocol`] (`detect` by content, `parse`, `resync`).
//! 2. [`Summarize`] for it (pairing key, failure, attributes named by the
//!    OpenTelemetry conventions, redaction on by default), and a
//!    [`Follower`] if its messages can outgrow a buffer.
//! 3. A [`ProtocolId`] variant with its name, request keys and status key.
//! 4. In `kindling-flow`, one variant of the session enum and one entry in
//!    the detection list (`protocol.rs`), and its slow threshold.
//! 5. Fixtures recorded from a real peer, a fuzz target and a bench.
//!
//! # Examples
//!
//! ```
//! use kindling_proto::http1::{Http1, Message};
//! use kindling_proto::{Direction, Protocol, Status};
//!
//! let mut session = Default::default();
//! let bytes = b"GET /users/42 HTTP/1.1\r\nHost: example.test\r\n\r\n";
//! let Ok(Status::Complete((Message::Request(req), used))) =
//!     Http1::parse(&mut session, Direction::Request, bytes)
//! else {
//!     panic!("a complete request")
//! };
//! assert_eq!((req.method, req.path(), used), ("GET", "/users/42", bytes.len()));
//! ```

#![forbid(unsafe_code)]

pub mod dns;
pub mod http1;
mod id;
pub mod mysql;
pub mod redis;
pub mod sql;
mod summary;
pub mod trace;

pub use id::ProtocolId;
pub use summary::{Detail, Failure, Follower, Summarize, Summary, SummaryOptions};

/// Which side of an exchange bytes come from.
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

/// A parse result that may need more bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status<T> {
    /// A whole message, and how many bytes it used.
    Complete(T),
    /// The message continues past the bytes given: call again with more.
    Partial,
}

/// Receives OpenTelemetry attributes as a message is read, so that a
/// caller can store them without an allocation per value (a `Vec` of owned
/// pairs is the simple choice, and implements it).
///
/// # Examples
///
/// ```
/// use kindling_proto::AttributeSink;
///
/// let mut v: Vec<(&'static str, String)> = Vec::new();
/// v.put("http.request.method", "GET");
/// v.put_fmt("http.response.status_code", format_args!("{}", 404));
/// v.put_bytes("url.path", b"/users/42");
/// assert_eq!(v[1], ("http.response.status_code", "404".to_owned()));
/// ```
pub trait AttributeSink {
    /// One attribute.
    fn put(&mut self, key: &'static str, value: &str);

    /// One attribute, formatted.
    fn put_fmt(&mut self, key: &'static str, value: std::fmt::Arguments<'_>) {
        match value.as_str() {
            Some(s) => self.put(key, s),
            None => self.put(key, &value.to_string()),
        }
    }

    /// One attribute from bytes (invalid UTF-8 shown lossily).
    fn put_bytes(&mut self, key: &'static str, value: &[u8]) {
        // `from_utf8` is the fast check; the lossy path walks chunk by chunk
        match std::str::from_utf8(value) {
            Ok(text) => self.put(key, text),
            Err(_) => self.put(key, &String::from_utf8_lossy(value)),
        }
    }

    /// One attribute from an unsigned integer, in decimal, formatted
    /// without the `fmt` machinery (status codes and sizes are on every
    /// exchange).
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::AttributeSink;
    ///
    /// let mut a: Vec<(&'static str, String)> = Vec::new();
    /// a.put_u64("http.response.status_code", 404);
    /// a.put_u64("http.response.body.size", u64::MAX);
    /// assert_eq!(a[0].1, "404");
    /// assert_eq!(a[1].1, "18446744073709551615");
    /// ```
    fn put_u64(&mut self, key: &'static str, value: u64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = value;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // only ASCII digits were written
        self.put(key, std::str::from_utf8(&digits[at..]).unwrap_or_default());
    }
}

impl AttributeSink for Vec<(&'static str, String)> {
    fn put(&mut self, key: &'static str, value: &str) {
        self.push((key, value.to_owned()));
    }

    fn put_fmt(&mut self, key: &'static str, value: std::fmt::Arguments<'_>) {
        self.push((key, value.to_string()));
    }
}

/// The shape every protocol module has.
pub trait Protocol {
    /// Per-connection state, kept by the caller across calls.
    type Session: Default;
    /// A borrowed view of one message.
    type Message<'a>;
    /// Why bytes are not this protocol (small and `Copy`).
    type Error: std::error::Error + Copy;

    /// Cheap sniff of a stream's first bytes, by content, not port.
    fn detect(head: &[u8], dir: Direction) -> Detect;

    /// Parses one message at the start of `buf`; on success also returns the
    /// bytes it used, so a caller can walk pipelined messages.
    fn parse<'a>(
        session: &mut Self::Session,
        dir: Direction,
        buf: &'a [u8],
    ) -> Result<Status<(Self::Message<'a>, usize)>, Self::Error>;

    /// Where the next message plausibly starts in `buf`, for a caller that
    /// lost bytes mid-stream (a capture gap, a dropped event) and must find a
    /// message boundary again. `None` when none is recognisable in `buf`; the
    /// default, for protocols whose boundaries cannot be recognised by
    /// content, never finds one.
    fn resync(buf: &[u8], dir: Direction) -> Option<usize> {
        let _ = (buf, dir);
        None
    }
}

/// Offsets where a line starts in `buf`: 0 and after every `\n`.
pub(crate) fn line_starts(buf: &[u8]) -> impl Iterator<Item = usize> + '_ {
    std::iter::once(0).chain(
        buf.iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .map(|(i, _)| i + 1)
            .filter(move |&i| i < buf.len()),
    )
}
