//! Redis serialization protocol, RESP2 and RESP3, and inline commands.
//!
//! ```text
//! +<string>\r\n        simple string      _\r\n                 null (RESP3)
//! -<error>\r\n         error              #t\r\n / #f\r\n       boolean
//! :<integer>\r\n       integer            ,<double>\r\n         double
//! $<len>\r\n<bytes>\r\n bulk ($-1: null)   (<big number>\r\n     big number
//! *<n>\r\n<n values>   array (*-1: null)  !<len>\r\n<bytes>\r\n bulk error
//!                                         =<len>\r\n<fmt>:<text>\r\n verbatim
//! %<n>\r\n<2n values>  map                ~<n>\r\n<n values>    set
//! |<n>\r\n<2n values>  attribute (precedes a reply)   ><n>\r\n<n values> push
//! ```
//!
//! A command is an array of bulk strings (`*3\r\n$3\r\nSET\r\n…`) or, from
//! a terminal, an inline line (`PING\r\n`). Parsing walks a value without
//! building it: a command keeps its name, subcommand and first key; a reply
//! its type, error text and size. Nesting depth and aggregate sizes are
//! bounded, so hostile bytes cannot exhaust the stack or loop forever.

use crate::{
    AttributeSink, Detect, Direction, Failure, Follower, Protocol, ProtocolId, Status, Summarize,
    Summary, SummaryOptions,
};
use std::fmt;

/// Deepest nesting of aggregates accepted.
pub const MAX_DEPTH: usize = 32;
/// Largest bulk string accepted (Redis' own `proto-max-bulk-len` default).
pub const MAX_BULK: i64 = 512 << 20;
/// Most elements in one aggregate.
pub const MAX_ELEMENTS: i64 = 1 << 24;
/// Longest inline command line.
pub const MAX_INLINE: usize = 64 << 10;

/// The Redis protocol; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Redis;

/// Why bytes are not valid RESP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A type byte RESP does not define.
    #[error("unknown resp type byte")]
    BadType,
    /// A length or count is not a number or out of range.
    #[error("invalid resp length")]
    BadLength,
    /// A bulk payload is not followed by CRLF.
    #[error("bulk string without terminator")]
    BadTerminator,
    /// Aggregates nested deeper than [`MAX_DEPTH`].
    #[error("resp nesting too deep")]
    TooDeep,
    /// A command that is neither an array of bulk strings nor an inline line.
    #[error("malformed redis command")]
    BadCommand,
}

/// Type of a reply's top-level value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// `+`
    SimpleString,
    /// `-`
    Error,
    /// `:`
    Integer,
    /// `$`
    BulkString,
    /// `*`
    Array,
    /// `_`, `$-1`, `*-1`
    Null,
    /// `#`
    Boolean,
    /// `,`
    Double,
    /// `(`
    BigNumber,
    /// `!`
    BulkError,
    /// `=`
    Verbatim,
    /// `%`
    Map,
    /// `~`
    Set,
    /// `>`
    Push,
}

/// A client command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Command<'a> {
    /// Command name as sent (`get`, `SET`, `CLIENT`).
    pub name: &'a [u8],
    /// Second word of container commands (`CLIENT SETNAME`, `CONFIG GET`).
    pub subcommand: Option<&'a [u8]>,
    /// The first key, for commands that take keys.
    pub key: Option<&'a [u8]>,
    /// Arguments after the name (and subcommand).
    pub args: u32,
    /// Sent as an inline line rather than a RESP array.
    pub inline: bool,
}

/// A server reply (or push).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reply<'a> {
    /// Top-level type.
    pub kind: Kind,
    /// Error text for `-` and `!` replies (`ERR unknown command …`).
    pub error: Option<&'a [u8]>,
    /// Elements of an aggregate, or bytes of a string.
    pub size: i64,
    /// Preceded by an attribute (`|`), which was skipped.
    pub attributed: bool,
    /// Out-of-band data, not the answer to a command: RESP3 pushes and
    /// RESP2 pub/sub messages on a subscribed connection.
    pub push: bool,
    /// What it is in pub/sub terms (a RESP3 push, or a RESP2 array on a
    /// subscribed connection), when it is either.
    pub pubsub: Option<PubSub>,
}

/// A pub/sub reply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PubSub {
    /// A message published to a channel or pattern the client subscribed
    /// to (`message`, `pmessage`, `smessage`).
    Message,
    /// The server confirming one channel of a (un)subscription
    /// (`subscribe`, `punsubscribe`, …): one per channel named.
    Subscription,
}

/// A RESP message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// From the client.
    Command(Command<'a>),
    /// From the server.
    Reply(Reply<'a>),
}

/// Per-connection state.
#[derive(Clone, Debug, Default)]
pub struct Session {
    /// The client issued SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE: RESP2 arrays headed
    /// `message`/`pmessage`/`smessage` are pushes from then on.
    pub subscribed: bool,
    /// Subscription confirmations still due, one entry per (un)subscribe
    /// command: how many more, and whether the first (the one that answers
    /// the command) came.
    /// (Boxed: a connection that never subscribes, nearly all, keeps a
    /// pointer's worth.)
    #[expect(
        clippy::box_collection,
        reason = "a pointer, not a VecDeque's three words, in every Redis session"
    )]
    confirmations: Option<Box<std::collections::VecDeque<(u32, bool)>>>,
    /// MONITOR's progress: after its `+OK`, every command the server runs
    /// is streamed to the client.
    monitor: Monitor,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Monitor {
    #[default]
    Off,
    Asked,
    On,
}

/// Most (un)subscribe commands awaiting confirmations remembered.
const MAX_CONFIRMATIONS: usize = 64;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// `Ok(None)` = need more bytes.
type Step<T> = Result<Option<T>, Error>;

impl<'a> Cursor<'a> {
    /// The rest of a line, without CRLF.
    fn line(&mut self) -> Step<&'a [u8]> {
        let rest = &self.buf[self.pos..];
        let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = rest[..nl].strip_suffix(b"\r").unwrap_or(&rest[..nl]);
        self.pos += nl + 1;
        Ok(Some(line))
    }

    fn number(&mut self) -> Step<i64> {
        let Some(line) = self.line()? else {
            return Ok(None);
        };
        parse_int(line).map(Some).ok_or(Error::BadLength)
    }

    fn bytes(&mut self, len: usize) -> Step<&'a [u8]> {
        let end = self.pos.checked_add(len).ok_or(Error::BadLength)?;
        let Some(data) = self.buf.get(self.pos..end) else {
            return Ok(None);
        };
        match self.buf.get(end..end + 2) {
            None if self.buf.len() < end + 2 => return Ok(None),
            Some(b"\r\n") => {}
            _ => return Err(Error::BadTerminator),
        }
        self.pos = end + 2;
        Ok(Some(data))
    }

    /// A length-prefixed payload (`$`, `!`, `=`); `None` inside = null.
    fn blob(&mut self) -> Step<Option<&'a [u8]>> {
        let Some(n) = self.number()? else {
            return Ok(None);
        };
        if n == -1 {
            return Ok(Some(None));
        }
        if !(0..=MAX_BULK).contains(&n) {
            return Err(Error::BadLength);
        }
        Ok(self.bytes(n as usize)?.map(Some))
    }

    fn count(&mut self) -> Step<i64> {
        let Some(n) = self.number()? else {
            return Ok(None);
        };
        if !(-1..=MAX_ELEMENTS).contains(&n) {
            return Err(Error::BadLength);
        }
        Ok(Some(n))
    }

    /// Skips one value; returns its kind, size and (for errors) text.
    fn value(&mut self, depth: usize) -> Step<(Kind, i64, Option<&'a [u8]>)> {
        if depth > MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        let Some(&t) = self.buf.get(self.pos) else {
            return Ok(None);
        };
        self.pos += 1;
        let simple = |c: &mut Self, kind| Ok(c.line()?.map(|l| (kind, l.len() as i64, None)));
        match t {
            b'+' => simple(self, Kind::SimpleString),
            b'-' => Ok(self.line()?.map(|l| (Kind::Error, l.len() as i64, Some(l)))),
            b':' => Ok(self.number()?.map(|n| (Kind::Integer, n, None))),
            b'_' => simple(self, Kind::Null),
            b'#' => simple(self, Kind::Boolean),
            b',' => simple(self, Kind::Double),
            b'(' => simple(self, Kind::BigNumber),
            b'$' | b'!' | b'=' => Ok(self.blob()?.map(|b| match (t, b) {
                (_, None) => (Kind::Null, 0, None),
                (b'!', Some(b)) => (Kind::BulkError, b.len() as i64, Some(b)),
                (b'=', Some(b)) => (Kind::Verbatim, b.len() as i64, None),
                (_, Some(b)) => (Kind::BulkString, b.len() as i64, None),
            })),
            b'*' | b'~' | b'>' | b'%' | b'|' => {
                let Some(n) = self.count()? else {
                    return Ok(None);
                };
                if n == -1 {
                    return Ok(Some((Kind::Null, 0, None)));
                }
                let per = if matches!(t, b'%' | b'|') { 2 } else { 1 };
                for _ in 0..n * per {
                    if self.value(depth + 1)?.is_none() {
                        return Ok(None);
                    }
                }
                if t == b'|' {
                    // An attribute annotates the value that follows.
                    return self.value(depth + 1);
                }
                let kind = match t {
                    b'*' => Kind::Array,
                    b'~' => Kind::Set,
                    b'>' => Kind::Push,
                    _ => Kind::Map,
                };
                Ok(Some((kind, n, None)))
            }
            _ => Err(Error::BadType),
        }
    }
}

/// A decimal `i64` with an optional sign, nothing else (RESP lengths and
/// integers); `None` on any other byte or on overflow.
fn parse_int(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, s),
    };
    if digits.is_empty() || digits.len() > 19 {
        return None;
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(i64::from(d - b'0'))?;
    }
    Some(if negative { -v } else { v })
}

#[cfg(test)]
mod parse_int_tests {
    use super::parse_int;

    #[test]
    fn matches_the_standard_parser() {
        for s in [
            "0",
            "-1",
            "+7",
            "42",
            "9223372036854775807",
            "-9223372036854775807",
        ] {
            assert_eq!(parse_int(s.as_bytes()), s.parse().ok(), "{s}");
        }
        for s in [
            "",
            "-",
            "1a",
            " 1",
            "99999999999999999999",
            "--1",
            "9223372036854775808",
        ] {
            assert_eq!(parse_int(s.as_bytes()), None, "{s}");
        }
    }
}

/// How a command's first words are laid out.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `NAME key …`
    Keyed,
    /// No key (`PING`, `AUTH …`, `SELECT 2`).
    Keyless,
    /// `NAME SUBCOMMAND …` (`CLIENT SETNAME`, `CONFIG GET`).
    Container,
    /// Starts pub/sub mode on the connection.
    Subscribe,
}

/// The command name upper-cased into `buf`, if it fits.
fn upper<'b>(name: &[u8], buf: &'b mut [u8; 24]) -> Option<&'b [u8]> {
    let out = buf.get_mut(..name.len())?;
    for (o, i) in out.iter_mut().zip(name) {
        *o = i.to_ascii_uppercase();
    }
    Some(out)
}

/// One `match` on the upper-cased name: cheaper than scanning lists.
fn shape(name: &[u8]) -> Shape {
    let mut buf = [0u8; 24];
    let Some(up) = upper(name, &mut buf) else {
        return Shape::Keyed;
    };
    match up {
        b"ACL" | b"CLIENT" | b"CLUSTER" | b"COMMAND" | b"CONFIG" | b"DEBUG" | b"FUNCTION"
        | b"LATENCY" | b"MEMORY" | b"MODULE" | b"OBJECT" | b"PUBSUB" | b"SCRIPT" | b"SLOWLOG"
        | b"XGROUP" | b"XINFO" => Shape::Container,
        b"SUBSCRIBE" | b"PSUBSCRIBE" | b"SSUBSCRIBE" => Shape::Subscribe,
        b"AUTH" | b"BGREWRITEAOF" | b"BGSAVE" | b"DBSIZE" | b"DISCARD" | b"ECHO" | b"EVAL"
        | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"EXEC" | b"FCALL" | b"FCALL_RO"
        | b"FLUSHALL" | b"FLUSHDB" | b"HELLO" | b"INFO" | b"LASTSAVE" | b"MONITOR" | b"MULTI"
        | b"PING" | b"PUBLISH" | b"PUNSUBSCRIBE" | b"QUIT" | b"RANDOMKEY" | b"READONLY"
        | b"READWRITE" | b"RESET" | b"SAVE" | b"SCAN" | b"SELECT" | b"SHUTDOWN" | b"SPUBLISH"
        | b"SUNSUBSCRIBE" | b"SWAPDB" | b"SYNC" | b"TIME" | b"UNSUBSCRIBE" | b"UNWATCH"
        | b"WAIT" => Shape::Keyless,
        _ => Shape::Keyed,
    }
}

/// Container subcommands whose next argument is a key.
fn keyed_subcommand(sub: &[u8]) -> bool {
    let mut buf = [0u8; 24];
    matches!(
        upper(sub, &mut buf),
        Some(
            b"ENCODING"
                | b"FREQ"
                | b"IDLETIME"
                | b"REFCOUNT"
                | b"USAGE"
                | b"STREAM"
                | b"GROUPS"
                | b"CONSUMERS"
                | b"CREATE"
                | b"DESTROY"
                | b"SETID"
                | b"CREATECONSUMER"
                | b"DELCONSUMER"
        )
    )
}

fn is_one_of(word: &[u8], set: &[&str]) -> bool {
    set.iter().any(|s| word.eq_ignore_ascii_case(s.as_bytes()))
}

fn command_from_words<'a>(
    words: [Option<&'a [u8]>; 3],
    count: u32,
    inline: bool,
) -> Option<Command<'a>> {
    let name = words[0]?;
    if name.is_empty() {
        return None;
    }
    let (subcommand, key, args) = match shape(name) {
        Shape::Container => {
            let sub = words[1];
            let key = sub.filter(|s| keyed_subcommand(s)).and(words[2]);
            (sub, key, count.saturating_sub(2))
        }
        Shape::Keyless | Shape::Subscribe => (None, None, count.saturating_sub(1)),
        Shape::Keyed => (None, words[1], count.saturating_sub(1)),
    };
    Some(Command {
        name,
        subcommand,
        key,
        args,
        inline,
    })
}

/// Reads one command the way redis-server does (`processMultibulkBuffer`
/// and `processInlineBuffer` in its networking.c): empty inline lines and
/// multibulk headers with a count of zero or less are consumed without a
/// command (the server does not answer them), and any other line that does
/// not start with `*` is an inline command, whatever its first word.
fn parse_command<'a>(c: &mut Cursor<'a>) -> Step<Command<'a>> {
    loop {
        match c.buf.get(c.pos) {
            None => return Ok(None),
            Some(b'*') => {
                c.pos += 1;
                let Some(n) = c.number()? else {
                    return Ok(None);
                };
                if n <= 0 {
                    continue;
                }
                if n > MAX_ELEMENTS {
                    return Err(Error::BadLength);
                }
                return parse_multibulk(c, n);
            }
            Some(_) => {
                let Some(line) = c.line()? else {
                    return if c.buf.len() - c.pos > MAX_INLINE {
                        Err(Error::BadCommand)
                    } else {
                        Ok(None)
                    };
                };
                if let Some(cmd) = parse_inline(line) {
                    return Ok(Some(cmd));
                }
            }
        }
    }
}

fn parse_multibulk<'a>(c: &mut Cursor<'a>, n: i64) -> Step<Command<'a>> {
    let mut words: [Option<&[u8]>; 3] = [None; 3];
    for i in 0..n {
        match c.buf.get(c.pos) {
            None => return Ok(None),
            Some(b'$') => c.pos += 1,
            Some(_) => return Err(Error::BadCommand),
        }
        let Some(arg) = c.blob()? else {
            return Ok(None);
        };
        let arg = arg.ok_or(Error::BadCommand)?;
        if let Some(w) = words.get_mut(i as usize) {
            *w = Some(arg);
        }
    }
    command_from_words(words, n as u32, false)
        .map(Some)
        .ok_or(Error::BadCommand)
}

/// The command on one inline line; `None` for a blank line.
fn parse_inline(line: &[u8]) -> Option<Command<'_>> {
    let mut words: [Option<&[u8]>; 3] = [None; 3];
    let mut count = 0u32;
    for w in line
        .split(|b| b.is_ascii_whitespace())
        .filter(|w| !w.is_empty())
    {
        if let Some(slot) = words.get_mut(count as usize) {
            *slot = Some(w);
        }
        count += 1;
    }
    command_from_words(words, count, true)
}

/// What a RESP2 array or RESP3 push is in pub/sub terms, from its first
/// element.
fn pubsub_kind(buf: &[u8]) -> Option<PubSub> {
    // "*3\r\n$7\r\nmessage\r\n…" / ">4\r\n$8\r\npmessage\r\n…" / "*3\r\n$9\r\nsubscribe…"
    let mut c = Cursor { buf, pos: 1 };
    if !matches!(c.count(), Ok(Some(3 | 4))) || c.buf.get(c.pos) != Some(&b'$') {
        return None;
    }
    c.pos += 1;
    let Ok(Some(Some(word))) = c.blob() else {
        return None;
    };
    if is_one_of(word, &["message", "pmessage", "smessage"]) {
        Some(PubSub::Message)
    } else if is_one_of(
        word,
        &[
            "subscribe",
            "psubscribe",
            "ssubscribe",
            "unsubscribe",
            "punsubscribe",
            "sunsubscribe",
        ],
    ) {
        Some(PubSub::Subscription)
    } else {
        None
    }
}

/// Whether a command is answered by one subscription confirmation per
/// channel named.
fn confirmed_per_channel(name: &[u8]) -> bool {
    is_one_of(
        name,
        &[
            "SUBSCRIBE",
            "PSUBSCRIBE",
            "SSUBSCRIBE",
            "UNSUBSCRIBE",
            "PUNSUBSCRIBE",
            "SUNSUBSCRIBE",
        ],
    )
}

const REPLY_TYPES: &[u8] = b"+-:$*_#,(!=%~|>";

impl Protocol for Redis {
    type Session = Session;
    type Message<'a> = Message<'a>;
    type Error = Error;

    /// # Examples
    ///
    /// ```
    /// use kindling_proto::{redis::Redis, Detect, Direction, Protocol};
    ///
    /// assert_eq!(Redis::detect(b"*1\r\n$4\r\nPING\r\n", Direction::Request), Detect::Match);
    /// assert_eq!(Redis::detect(b"+PONG\r\n", Direction::Response), Detect::Match);
    /// assert_eq!(Redis::detect(b"GET / HTTP/1.1\r\n", Direction::Request), Detect::NoMatch);
    /// ```
    fn detect(head: &[u8], dir: Direction) -> Detect {
        let Some(&first) = head.first() else {
            return Detect::NeedMore;
        };
        match dir {
            Direction::Request if first == b'*' => match head.get(1) {
                None => Detect::NeedMore,
                Some(b) if b.is_ascii_digit() => Detect::Match,
                Some(_) => Detect::NoMatch,
            },
            Direction::Request => {
                // Inline commands: a known word alone on a line, never HTTP.
                let Some(nl) = head.iter().position(|&b| b == b'\n') else {
                    let plausible = head.len() < 64
                        && head
                            .iter()
                            .all(|b| b.is_ascii_graphic() || *b == b' ' || *b == b'\r');
                    return if plausible {
                        Detect::NeedMore
                    } else {
                        Detect::NoMatch
                    };
                };
                let line = &head[..nl];
                if line.windows(6).any(|w| w == b"HTTP/1") {
                    return Detect::NoMatch;
                }
                let word = line
                    .split(|b| b.is_ascii_whitespace())
                    .next()
                    .unwrap_or(b"");
                let known = [
                    "PING", "INFO", "QUIT", "ECHO", "GET", "SET", "DEL", "KEYS", "SELECT", "AUTH",
                    "HELLO", "MONITOR", "DBSIZE", "FLUSHALL", "CONFIG", "CLIENT",
                ];
                if known
                    .iter()
                    .any(|k| word.eq_ignore_ascii_case(k.as_bytes()))
                {
                    Detect::Match
                } else {
                    Detect::NoMatch
                }
            }
            Direction::Response => {
                if !REPLY_TYPES.contains(&first) {
                    return Detect::NoMatch;
                }
                let Some(nl) = head.iter().position(|&b| b == b'\n') else {
                    return if head.len() > 512 {
                        Detect::NoMatch
                    } else {
                        Detect::NeedMore
                    };
                };
                let line = head[1..nl].strip_suffix(b"\r");
                let Some(line) = line else {
                    return Detect::NoMatch;
                };
                let ok = match first {
                    b'+' | b'-' => line.iter().all(|b| !b.is_ascii_control()),
                    b':' | b'$' | b'*' | b'!' | b'=' | b'%' | b'~' | b'|' | b'>' => {
                        parse_int(line).is_some()
                    }
                    b'_' => line.is_empty(),
                    b'#' => line == b"t" || line == b"f",
                    _ => !line.is_empty() && line.iter().all(|b| b.is_ascii_graphic()),
                };
                if ok {
                    Detect::Match
                } else {
                    Detect::NoMatch
                }
            }
        }
    }

    /// Requests only: a line `*<count>` followed by `$`, the start of every
    /// command a client library sends. Replies cannot be told from the
    /// contents of a bulk string, so they never resynchronise.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::{redis::Redis, Direction, Protocol};
    ///
    /// let lost = b"lue\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
    /// assert_eq!(Redis::resync(lost, Direction::Request), Some(5));
    /// assert_eq!(Redis::resync(b"+OK\r\n", Direction::Response), None);
    /// ```
    fn resync(buf: &[u8], dir: Direction) -> Option<usize> {
        if dir == Direction::Response {
            return None;
        }
        crate::line_starts(buf).find(|&at| {
            let rest = &buf[at..];
            let digits = rest
                .iter()
                .skip(1)
                .take_while(|b| b.is_ascii_digit())
                .count();
            rest.first() == Some(&b'*')
                && (1..=7).contains(&digits)
                && rest[1 + digits..].starts_with(b"\r\n$")
        })
    }

    fn parse<'a>(
        session: &mut Session,
        dir: Direction,
        buf: &'a [u8],
    ) -> Result<Status<(Message<'a>, usize)>, Error> {
        let mut c = Cursor { buf, pos: 0 };
        match dir {
            Direction::Request => {
                let Some(cmd) = parse_command(&mut c)? else {
                    return Ok(Status::Partial);
                };
                if cmd.subcommand.is_none() && shape(cmd.name) == Shape::Subscribe {
                    session.subscribed = true;
                } else if cmd.name.eq_ignore_ascii_case(b"RESET") {
                    session.subscribed = false;
                }
                Ok(Status::Complete((Message::Command(cmd), c.pos)))
            }
            Direction::Response => {
                let attributed = buf.first() == Some(&b'|');
                let Some((kind, size, error)) = c.value(0)? else {
                    return Ok(Status::Partial);
                };
                let pubsub = match kind {
                    _ if attributed => None,
                    Kind::Push => pubsub_kind(buf),
                    Kind::Array if session.subscribed => pubsub_kind(buf),
                    _ => None,
                };
                let push = kind == Kind::Push || pubsub == Some(PubSub::Message);
                Ok(Status::Complete((
                    Message::Reply(Reply {
                        kind,
                        error,
                        size,
                        attributed,
                        push,
                        pubsub,
                    }),
                    c.pos,
                )))
            }
        }
    }
}

impl<'a> Command<'a> {
    /// Upper-case operation name, two words for container commands
    /// (`GET`, `CLIENT SETNAME`): OpenTelemetry's `db.operation.name`.
    pub fn operation(&self) -> String {
        Operation(self).to_string()
    }

    /// Sanitised command text for `db.query.text`: operation and key, every
    /// other argument as `?` (so AUTH and HELLO credentials never appear).
    pub fn query_text(&self) -> String {
        QueryText(self).to_string()
    }

    /// OpenTelemetry attributes.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut a = Vec::new();
        self.write_attributes(&mut a);
        a
    }

    /// [`Command::attributes`] into any sink, without allocating per value.
    pub fn write_attributes(&self, a: &mut impl AttributeSink) {
        a.put("db.system.name", "redis");
        // the query text starts with the operation: write both at once
        // when they are plain and short (nearly always), else through fmt
        let mut buf = [0u8; 256];
        match self.short_query_text(&mut buf) {
            Some((text, operation)) => {
                a.put("db.query.text", text);
                a.put("db.operation.name", &text[..operation]);
            }
            None => {
                a.put_fmt("db.query.text", format_args!("{}", QueryText(self)));
                a.put_fmt("db.operation.name", format_args!("{}", Operation(self)));
            }
        }
        if let Some(k) = self.key {
            a.put_bytes("db.collection.name", k);
        }
    }

    /// [`Command::query_text`] in `buf` and the length of its operation
    /// part, when the name and subcommand are ASCII, the key valid UTF-8
    /// and the whole fits; `None` otherwise.
    fn short_query_text<'b>(&self, buf: &'b mut [u8; 256]) -> Option<(&'b str, usize)> {
        if !self.name.is_ascii() || !self.subcommand.is_none_or(|s| s.is_ascii()) {
            return None;
        }
        let mut out = TextBuf { buf, len: 0 };
        out.push(self.name, true)?;
        if let Some(sub) = self.subcommand {
            out.push(b" ", false)?;
            out.push(sub, true)?;
        }
        let operation = out.len;
        let mut rest = self.args;
        if let Some(k) = self.key {
            std::str::from_utf8(k).ok()?;
            out.push(b" ", false)?;
            out.push(k, false)?;
            rest = rest.saturating_sub(1);
        }
        for _ in 0..rest.min(16) {
            out.push(b" ?", false)?;
        }
        if rest > 16 {
            out.push(" …".as_bytes(), false)?;
        }
        // ASCII and whole UTF-8 pieces only
        let text = std::str::from_utf8(&out.buf[..out.len]).ok()?;
        Some((text, operation))
    }
}

/// Bytes appended to a fixed buffer; `None` once full.
struct TextBuf<'b> {
    buf: &'b mut [u8],
    len: usize,
}

impl TextBuf<'_> {
    fn push(&mut self, bytes: &[u8], upper: bool) -> Option<()> {
        let to = self.buf.get_mut(self.len..self.len + bytes.len())?;
        to.copy_from_slice(bytes);
        if upper {
            to.make_ascii_uppercase();
        }
        self.len += bytes.len();
        Some(())
    }
}

/// [`Command::operation`], written where it is wanted.
struct Operation<'c, 'a>(&'c Command<'a>);

impl fmt::Display for Operation<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_upper(f, self.0.name)?;
        if let Some(sub) = self.0.subcommand {
            f.write_str(" ")?;
            write_upper(f, sub)?;
        }
        Ok(())
    }
}

/// [`Command::query_text`], written where it is wanted.
struct QueryText<'c, 'a>(&'c Command<'a>);

impl fmt::Display for QueryText<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.0;
        Operation(c).fmt(f)?;
        let mut rest = c.args;
        if let Some(k) = c.key {
            f.write_str(" ")?;
            write_lossy(f, k)?;
            rest = rest.saturating_sub(1);
        }
        for _ in 0..rest.min(16) {
            f.write_str(" ?")?;
        }
        if rest > 16 {
            f.write_str(" …")?;
        }
        Ok(())
    }
}

/// `bytes` as text, ASCII letters upper-cased, invalid UTF-8 as U+FFFD
/// (as `String::from_utf8_lossy(bytes).to_ascii_uppercase()`, without
/// allocating for ASCII).
fn write_upper(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    if bytes.is_ascii() {
        return write_ascii_upper(f, bytes);
    }
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        if valid.is_ascii() {
            write_ascii_upper(f, valid.as_bytes())?;
        } else {
            f.write_str(&valid.to_ascii_uppercase())?;
        }
        if !chunk.invalid().is_empty() {
            f.write_str("\u{FFFD}")?;
        }
    }
    Ok(())
}

/// ASCII `bytes` upper-cased, through a stack buffer.
fn write_ascii_upper(f: &mut fmt::Formatter<'_>, ascii: &[u8]) -> fmt::Result {
    for piece in ascii.chunks(32) {
        let mut upper = [0u8; 32];
        let upper = &mut upper[..piece.len()];
        upper.copy_from_slice(piece);
        upper.make_ascii_uppercase();
        f.write_str(std::str::from_utf8(upper).map_err(|_| fmt::Error)?)?;
    }
    Ok(())
}

/// `bytes` as text, invalid UTF-8 as U+FFFD.
fn write_lossy(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    if let Ok(text) = std::str::from_utf8(bytes) {
        return f.write_str(text);
    }
    for chunk in bytes.utf8_chunks() {
        f.write_str(chunk.valid())?;
        if !chunk.invalid().is_empty() {
            f.write_str("\u{FFFD}")?;
        }
    }
    Ok(())
}

impl Reply<'_> {
    /// Whether the reply is an error (`-` or `!`).
    pub fn is_error(&self) -> bool {
        matches!(self.kind, Kind::Error | Kind::BulkError)
    }

    /// The error prefix (`ERR`, `WRONGTYPE`, `NOAUTH`): OpenTelemetry's
    /// `db.response.status_code`.
    pub fn error_code(&self) -> Option<&str> {
        let e = self.error?;
        let word = e.split(|b| *b == b' ').next()?;
        std::str::from_utf8(word).ok()
    }

    /// The error's text after its prefix (`unknown command 'FOO'`), at
    /// most 512 bytes: `db.response.error_message`.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::redis::{Message, Redis, Session};
    /// use kindling_proto::{Direction, Protocol, Status};
    ///
    /// let mut s = Session::default();
    /// let wire = b"-WRONGTYPE Operation against a key\r\n";
    /// let Ok(Status::Complete((Message::Reply(r), _))) = Redis::parse(&mut s, Direction::Response, wire) else {
    ///     panic!()
    /// };
    /// assert_eq!(r.error_code(), Some("WRONGTYPE"));
    /// assert_eq!(r.error_message(), Some(&b"Operation against a key"[..]));
    /// ```
    pub fn error_message(&self) -> Option<&[u8]> {
        let e = self.error?;
        let at = e.iter().position(|b| *b == b' ')?;
        let m = e[at + 1..].trim_ascii();
        (!m.is_empty()).then(|| &m[..m.len().min(512)])
    }
}

/// A well-formed element wholly at the start of `buf`, read without the
/// general path: how many bytes it takes and how many values it opens.
/// Bulk strings (`$<n>\r\n<payload>\r\n`), integers and simple strings open
/// none; array, set and map headers (`*<n>\r\n`, `~<n>\r\n`, `%<n>\r\n`)
/// open their elements. `None` for anything else, which is left to the
/// general path (it also reports errors).
#[inline]
fn quick_element(buf: &[u8]) -> Option<(usize, i64)> {
    let (&t, rest) = buf.split_first()?;
    match t {
        b'$' | b'*' | b'~' | b'%' => {
            // The next value's position depends on this length: the first
            // digit is taken apart from the loop so that the commonest,
            // one-digit length costs no multiply on that dependency chain.
            let first = rest.first()?.wrapping_sub(b'0');
            if first > 9 {
                return None;
            }
            let mut n = usize::from(first);
            let mut digits = 1;
            while digits < 10 {
                let d = rest.get(digits)?.wrapping_sub(b'0');
                if d > 9 {
                    break;
                }
                n = n * 10 + usize::from(d);
                digits += 1;
            }
            if rest.get(digits..digits + 2)? != b"\r\n" {
                return None;
            }
            let head = 1 + digits + 2;
            match t {
                b'$' if n as i64 <= MAX_BULK => {
                    let end = head + n;
                    (buf.get(end..end + 2)? == b"\r\n").then_some((end + 2, 0))
                }
                b'$' => None,
                _ if n as i64 > MAX_ELEMENTS => None,
                b'%' => Some((head, 2 * n as i64)),
                _ => Some((head, n as i64)),
            }
        }
        b':' | b'+' => {
            let nl = buf.iter().take(64).position(|&b| b == b'\n')?;
            (nl >= 2 && buf[nl - 1] == b'\r').then_some((nl + 1, 0))
        }
        _ => None,
    }
}

/// Follows one RESP value chunk by chunk without keeping it: for replies
/// (or commands) too large to buffer, or partly uncaptured. Fed from the
/// value's first byte.
///
/// # Examples
///
/// ```
/// use kindling_proto::redis::{Kind, Skipper};
/// use kindling_proto::Follower;
///
/// let mut s = Skipper::new();
/// assert_eq!(s.feed(b"*2\r\n$5\r\nhel").unwrap(), None);
/// assert_eq!(s.feed(b"lo\r\n:7\r\n+OK\r\n").unwrap(), Some(8));
/// assert_eq!(s.kind(), Some(Kind::Array));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Skipper {
    /// Values still to read at each open level, deepest last.
    stack: Vec<i64>,
    /// The current header line, when split across inputs.
    line: Vec<u8>,
    /// Bulk payload (and its CRLF) still to skip.
    bulk: u64,
    /// Top-level kind and size, once its header was read.
    top: Option<(Kind, i64)>,
    started: bool,
    done: bool,
}

impl Skipper {
    /// A skipper at the start of a value.
    pub fn new() -> Self {
        Self::default()
    }

    /// The top-level value's kind, once its first line was read.
    pub fn kind(&self) -> Option<Kind> {
        self.top.map(|(k, _)| k)
    }

    /// Elements of the top-level aggregate, or bytes of a string.
    pub fn size(&self) -> Option<i64> {
        self.top.map(|(_, n)| n)
    }

    fn header(&mut self, line: &[u8]) -> Result<(), Error> {
        let (&t, rest) = line.split_first().ok_or(Error::BadType)?;
        if let Some(top) = self.stack.last_mut() {
            *top -= 1;
        }
        let kind = match t {
            b'+' => Kind::SimpleString,
            b'-' => Kind::Error,
            b':' => Kind::Integer,
            b'_' => Kind::Null,
            b'#' => Kind::Boolean,
            b',' => Kind::Double,
            b'(' => Kind::BigNumber,
            b'$' => Kind::BulkString,
            b'!' => Kind::BulkError,
            b'=' => Kind::Verbatim,
            b'*' => Kind::Array,
            b'~' => Kind::Set,
            b'>' => Kind::Push,
            b'%' | b'|' => Kind::Map,
            _ => return Err(Error::BadType),
        };
        let count = match t {
            b'$' | b'!' | b'=' | b'*' | b'~' | b'>' | b'%' | b'|' => {
                parse_int(rest).ok_or(Error::BadLength)?
            }
            _ => rest.len() as i64,
        };
        if t != b'|' && self.top.is_none() {
            self.top = Some((kind, count));
        }
        match t {
            b'$' | b'!' | b'=' if count >= 0 => {
                if count > MAX_BULK {
                    return Err(Error::BadLength);
                }
                self.bulk = count as u64 + 2;
            }
            b'*' | b'~' | b'>' | b'%' | b'|' if count > 0 => {
                if count > MAX_ELEMENTS {
                    return Err(Error::BadLength);
                }
                if t == b'|' {
                    // an attribute annotates the value after it
                    if let Some(top) = self.stack.last_mut() {
                        *top += 1;
                    }
                }
                if self.stack.len() > MAX_DEPTH {
                    return Err(Error::TooDeep);
                }
                let per = if matches!(t, b'%' | b'|') { 2 } else { 1 };
                self.stack.push(count * per);
            }
            b'*' | b'~' | b'>' | b'%' | b'$' | b'!' | b'=' if count < -1 => {
                return Err(Error::BadLength)
            }
            _ => {
                if t == b'|' {
                    if let Some(top) = self.stack.last_mut() {
                        *top += 1;
                    }
                }
                self.value_done();
            }
        }
        Ok(())
    }

    /// Reads the elements of open aggregates that are whole in `input`,
    /// from `at`, in one tight loop; returns where it stopped. The values
    /// of a large reply (`COMMAND DOCS`: tens of thousands of short strings
    /// in nested maps) are nearly all read here.
    fn skip_whole(&mut self, input: &[u8], mut at: usize) -> usize {
        // the innermost count lives in a register, not at the stack's top:
        // a store and reload per value was a fifth of the loop's time
        let Some(mut top) = self.stack.pop() else {
            return at;
        };
        while let Some((used, opens)) = quick_element(&input[at..]) {
            // the general path refuses to nest deeper than this
            if opens > 0 && self.stack.len() >= MAX_DEPTH {
                break;
            }
            at += used;
            top -= 1;
            if opens > 0 {
                self.stack.push(top);
                top = opens;
                continue;
            }
            // close every level whose values are all read
            while top == 0 {
                match self.stack.pop() {
                    Some(parent) => top = parent,
                    None => {
                        self.done = true;
                        return at;
                    }
                }
            }
        }
        self.stack.push(top);
        at
    }

    /// Closes every level whose values are all read.
    fn value_done(&mut self) {
        while self.stack.last() == Some(&0) {
            self.stack.pop();
        }
        self.done = self.stack.is_empty();
    }
}

impl Summarize for Redis {
    const ID: ProtocolId = ProtocolId::Redis;

    fn summarize(
        session: &mut Session,
        message: &Message<'_>,
        options: &SummaryOptions,
        attributes: &mut impl AttributeSink,
    ) -> Summary {
        match message {
            Message::Command(c) => {
                if options.detail == crate::Detail::Essential {
                    attributes.put_fmt("db.operation.name", format_args!("{}", Operation(c)));
                } else {
                    c.write_attributes(attributes);
                }
                // (most commands are none of these: their length says so)
                let rare = matches!(c.name.len(), 5 | 7 | 9..=12);
                if !rare {
                } else if confirmed_per_channel(c.name) {
                    let due = session.confirmations.get_or_insert_with(Box::default);
                    if due.len() < MAX_CONFIRMATIONS {
                        due.push_back((c.args.max(1), false));
                    }
                } else if is_one_of(c.name, &["MONITOR"]) {
                    session.monitor = Monitor::Asked;
                } else if is_one_of(c.name, &["RESET"]) {
                    session.confirmations = None;
                    session.monitor = Monitor::Off;
                }
                Summary::Request {
                    key: None,
                    answered: true,
                }
            }
            // the first confirmation of a (un)subscription answers it
            Message::Reply(Reply {
                pubsub: Some(PubSub::Subscription),
                ..
            }) => match session.confirmations.as_mut().and_then(|d| d.front_mut()) {
                Some((left, answered)) => {
                    let first = !*answered;
                    *answered = true;
                    *left -= 1;
                    if *left == 0 {
                        session.confirmations.as_mut().map(|d| d.pop_front());
                    }
                    if first {
                        Summary::Response {
                            key: None,
                            failure: None,
                        }
                    } else {
                        Summary::Ignore
                    }
                }
                None => Summary::Ignore,
            },
            Message::Reply(r) if r.push => Summary::Delivered,
            Message::Reply(r) if session.monitor == Monitor::On && r.kind == Kind::SimpleString => {
                Summary::Delivered
            }
            Message::Reply(r) => {
                if session.monitor == Monitor::Asked {
                    session.monitor = if r.is_error() {
                        Monitor::Off
                    } else {
                        Monitor::On
                    };
                }
                if let Some(code) = r.error_code() {
                    attributes.put("db.response.status_code", code);
                }
                if let Some(message) = r.error_message() {
                    attributes.put_bytes("db.response.error_message", message);
                }
                Summary::Response {
                    key: None,
                    failure: r.is_error().then_some(Failure::Database),
                }
            }
        }
    }
}

impl Follower for Skipper {
    type Error = Error;

    /// Whether the value is complete.
    fn is_done(&self) -> bool {
        self.done
    }

    /// Reads the next bytes: `Some(n)` when the value ended after the
    /// first `n` bytes of `input`, `None` when all of it belonged to it.
    fn feed(&mut self, input: &[u8]) -> Result<Option<usize>, Error> {
        if !self.started {
            self.started = true;
            self.stack.push(1);
        }
        let mut at = 0;
        loop {
            if self.done {
                return Ok(Some(at));
            }
            if self.bulk > 0 {
                let n = self.bulk.min((input.len() - at) as u64);
                self.bulk -= n;
                at += n as usize;
                if self.bulk > 0 {
                    return Ok(None);
                }
                self.value_done();
                continue;
            }
            // Fast path for the elements of an open aggregate that are whole
            // in `input`: bulk strings, integers, simple strings, and the
            // headers of nested arrays, sets and maps.
            if self.line.is_empty() && self.top.is_some() {
                let from = at;
                at = self.skip_whole(input, at);
                if at > from {
                    continue;
                }
            }
            let rest = &input[at..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                if self.line.len() + rest.len() > MAX_INLINE {
                    return Err(Error::BadLength);
                }
                self.line.extend_from_slice(rest);
                return Ok(None);
            };
            if self.line.len() + nl > MAX_INLINE {
                return Err(Error::BadLength);
            }
            at += nl + 1;
            if self.line.is_empty() {
                let line = &rest[..nl];
                self.header(line.strip_suffix(b"\r").unwrap_or(line))?;
            } else {
                // the line began in an earlier input; keep its allocation
                let mut carried = std::mem::take(&mut self.line);
                carried.extend_from_slice(&rest[..nl]);
                let r = self.header(carried.strip_suffix(b"\r").unwrap_or(&carried));
                carried.clear();
                self.line = carried;
                r?;
            }
        }
    }

    /// `n` bytes were sent but not captured: fine inside a bulk payload.
    fn skip_unseen(&mut self, n: u64) -> Result<u64, Error> {
        // the payload's CRLF is part of `bulk`: its offset is known
        if n < self.bulk || n == 0 {
            self.bulk -= n;
            return Ok(n);
        }
        if self.bulk == 0 {
            return Err(Error::BadTerminator);
        }
        // the string ends inside the unseen bytes: fine if that ends the
        // whole value, else the next element's header was not seen
        let used = std::mem::take(&mut self.bulk);
        self.value_done();
        if self.done {
            Ok(used)
        } else {
            Err(Error::BadTerminator)
        }
    }

    /// A push is not a reply to anything.
    fn summary(&self, _: &mut impl AttributeSink) -> Option<Summary> {
        (self.kind() == Some(Kind::Push)).then_some(Summary::Delivered)
    }
}
