//! One direction of a connection as a state machine: bytes go in a syscall
//! at a time, whole messages come out.
//!
//! ```text
//!              ┌──────── message read whole ───────┐
//!              ▼                                   │
//!   ──► Reading ── too large / cut / a request ──► Following ── ends ──► Reading
//!          │  ▲                                        │
//!  lost or │  │ resync finds                           │ framing lost
//! unreadable  │ a message start                        ▼
//!          └─►  Lost  ◄────────────────────────────────┘
//! ```
//!
//! A syscall's payload is an [`Input`]. While nothing is buffered in this
//! direction its messages are read straight from the payload (no copy);
//! what is left (a message's start, bytes to resynchronise on) is buffered
//! and read from there, the same way. [`Stream::next`] is the one entry
//! point: each call yields the next [`Item`] or says the input is used up.
//!
//! Large messages are re-read at doubling sizes rather than at every
//! syscall ([`Retry`]), so their cost stays linear.

use kindling_proto::{Direction, ProtocolId, SummaryOptions};

use crate::buffer::{Buffer, Span};
use crate::protocol::{Follow, ParseError, Parsed, Proto};
use crate::record::Attributes;
use crate::stats::Stats;

/// Buffers smaller than this are parsed at every syscall; from this size a
/// message is followed instead of buffered whole.
pub(crate) const RETRY_FROM: usize = 8 << 10;

/// What a stream is doing with the bytes that come.
#[derive(Debug, Default)]
enum Mode {
    /// Reading whole messages.
    #[default]
    Reading,
    /// Reading a message chunk by chunk past the buffer (a large body or
    /// reply, one cut by the capture length, a request's body).
    Following(Box<Follow>),
    /// Bytes were lost: the next message must be found with `resync`.
    Lost,
}

/// When a partial message is worth parsing again.
#[derive(Debug, Default)]
struct Retry {
    /// Only once this many bytes are buffered (0: at every syscall).
    at: usize,
    /// At the next chance, whatever `at` says (a sign the message may be
    /// complete: a shorter syscall, the other direction speaking, a tick,
    /// the close).
    force: bool,
    /// Size of the last syscall's payload.
    last_chunk: usize,
}

/// Bytes given up on (lost, or unreadable), with when they came: the
/// timing and size of a response that could not be read, and what its head
/// said when it was read before its framing was lost.
#[derive(Debug, Default)]
struct Gap {
    span: Option<Span>,
    bytes: u64,
    head: Option<Parsed>,
}

/// A message that could not be read to its end: what its head said (if it
/// was read), when its bytes came, and how many there were.
#[derive(Debug)]
pub(crate) struct Unread {
    pub(crate) head: Option<Parsed>,
    pub(crate) span: Span,
    pub(crate) bytes: u64,
}

/// What the close of its connection left of a message in this direction.
#[derive(Debug)]
pub(crate) enum Closed {
    /// The close ended it properly (a body delimited by the close).
    Ended(Item),
    /// It was cut short: its framing said more was to come.
    Cut(Unread),
    /// Its framing was lost earlier: whether it was complete is unknown.
    Unframed(Unread),
}

/// One direction of a connection.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    buf: Buffer,
    mode: Mode,
    retry: Retry,
    gap: Gap,
    /// Times bytes were given up on: messages may have gone unseen.
    losses: u32,
}

/// What a stream borrows from the pipeline while it reads.
pub(crate) struct StreamCx<'a> {
    /// The connection's protocol.
    pub(crate) proto: &'a mut Proto,
    /// Which way this stream's messages go.
    pub(crate) dir: Direction,
    pub(crate) options: &'a SummaryOptions,
    pub(crate) stats: &'a mut Stats,
    /// Attribute sets to write messages' attributes into.
    pub(crate) spare: &'a mut Vec<Attributes>,
    /// Most bytes buffered.
    pub(crate) max_buffer: usize,
}

/// Where an [`Input`] is being read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Straight from the payload.
    InPlace,
    /// Not read yet; to be copied into the buffer and read from there.
    ToBuffer,
    /// From the buffer (the payload's rest was copied into it).
    Buffered,
    /// Used up.
    Done,
}

/// One syscall's bytes (or none: a nudge to parse what is buffered).
#[derive(Debug)]
pub(crate) struct Input<'p> {
    payload: &'p [u8],
    /// Bytes of `payload` read in place so far.
    at: usize,
    span: Span,
    /// Bytes the syscall moved past the captured payload.
    missing: u64,
    phase: Phase,
}

impl<'p> Input<'p> {
    /// A syscall's captured `payload`, `missing` more bytes it moved, when
    /// it ran; `in_place` lets whole messages be read without a copy.
    pub(crate) fn new(payload: &'p [u8], missing: u64, span: Span, in_place: bool) -> Self {
        Self {
            payload,
            at: 0,
            span,
            missing,
            phase: if in_place {
                Phase::InPlace
            } else {
                Phase::ToBuffer
            },
        }
    }

    /// Bytes the syscall moved past the captured payload, not accounted
    /// for yet.
    pub(crate) fn missing(&self) -> u64 {
        self.missing
    }

    /// Whether all of it was read.
    pub(crate) fn is_used_up(&self) -> bool {
        self.phase == Phase::Done
    }

    /// No new bytes: read what is buffered.
    pub(crate) fn none() -> Input<'static> {
        Input {
            payload: &[],
            at: 0,
            span: Span::default(),
            missing: 0,
            phase: Phase::Buffered,
        }
    }
}

/// What reading a stream yields.
#[derive(Debug)]
pub(crate) enum Item {
    /// A message, when its bytes came, and its size on the wire; `cut`:
    /// only its whole lines were read (the capture length cut it).
    Message {
        parsed: Parsed,
        span: Span,
        wire: u64,
        cut: bool,
    },
    /// The body of a request delivered from its head ended: its last byte
    /// and whole size.
    BodyEnded { last_ns: u64, wire: u64 },
    /// Nothing more can be read on this connection.
    Opaque(ProtocolId),
    /// A message whose head was read but whose framing was lost ended
    /// before the message the stream resynchronised at: what was seen of
    /// it.
    Unread(Unread),
}

impl Item {
    /// A message read whole.
    fn whole(parsed: Parsed, span: Span, wire: u64) -> Self {
        Item::Message {
            parsed,
            span,
            wire,
            cut: false,
        }
    }
}

impl Stream {
    /// The unparsed bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        self.buf.bytes()
    }

    /// How many times bytes were given up on so far.
    pub(crate) fn losses(&self) -> u32 {
        self.losses
    }

    /// Whether bytes were lost and the stream waits to resynchronise.
    pub(crate) fn is_lost(&self) -> bool {
        matches!(self.mode, Mode::Lost)
    }

    /// Nothing buffered, followed or lost.
    pub(crate) fn is_quiet(&self) -> bool {
        self.buf.is_empty() && matches!(self.mode, Mode::Reading)
    }

    /// Whether a partial message waits for a retry at a later sign (see
    /// [`Stream::force_retry`]).
    pub(crate) fn awaits_retry(&self) -> bool {
        self.retry.at > 0
    }

    /// Parse at the next chance, if a partial message waits for a retry;
    /// returns whether one does.
    pub(crate) fn force_retry(&mut self) -> bool {
        self.retry.force = self.awaits_retry();
        self.retry.force
    }

    /// Notes a syscall's size before reading it: one shorter than the one
    /// before, or cut by the capture length, often ends a message.
    pub(crate) fn note_chunk(&mut self, len: usize, missing: u64) {
        self.retry.force |= len < self.retry.last_chunk || missing > 0;
        self.retry.last_chunk = len;
    }

    /// A datagram starts: nothing carries over from the one before.
    pub(crate) fn start_datagram(&mut self) {
        self.buf.clear();
        self.mode = Mode::Reading;
    }

    /// A datagram was read: whatever is left of it is dropped.
    pub(crate) fn end_datagram(&mut self) {
        self.buf.consume(usize::MAX);
        if self.is_lost() {
            self.mode = Mode::Reading;
        }
    }

    /// Back to new, keeping modest allocations.
    pub(crate) fn reset(&mut self) {
        self.buf.reset();
        self.mode = Mode::Reading;
        self.retry = Retry::default();
        self.gap = Gap::default();
    }

    /// Records were lost somewhere: whatever was buffered or followed is
    /// forgotten, and the stream resynchronises at the next message.
    pub(crate) fn lose_all(&mut self) {
        if !self.buf.is_empty() || matches!(self.mode, Mode::Following(_)) {
            self.clear_lost(0);
            self.take_gap();
            self.mode = Mode::Lost;
        }
    }

    /// Takes what was given up on, and starts afresh at a message boundary.
    pub(crate) fn take_gap(&mut self) -> Option<Unread> {
        if self.is_lost() {
            self.mode = Mode::Reading;
        }
        self.buf.forget();
        let bytes = std::mem::take(&mut self.gap.bytes);
        let head = self.gap.head.take();
        self.gap
            .span
            .take()
            .map(|span| Unread { head, span, bytes })
    }

    /// The connection closed: ends a message the close delimits, or says
    /// what was left of one (after [`Stream::force_retry`] and a last
    /// read).
    /// `closed`: the connection really closed (not forgotten for idleness
    /// or room), so a body delimited by the close ends.
    pub(crate) fn close(&mut self, cx: &mut StreamCx<'_>, closed: bool) -> Option<Closed> {
        // a partial message whose framing is known is followed to the close
        if !self.buf.is_empty() && matches!(self.mode, Mode::Reading) {
            if let Some((follow, head, now)) = cx.proto.follow(cx.dir, self.buf.bytes(), cx.options)
            {
                // (an answer's head is delivered when it ends: `now` is
                // only ever a request's)
                debug_assert!(now.is_none(), "close reads answers");
                self.start_following(follow, head);
            }
        }
        if let Mode::Following(follow) = &mut self.mode {
            if closed && follow.ends_with_close() {
                return self.end_follow(cx.dir).map(Closed::Ended);
            }
            let span = Span {
                first_ns: follow.first_ns,
                last_ns: follow.last_ns,
                tid: follow.tid,
            };
            let seen = self.buf.bytes().len() as u64;
            let unread = Unread {
                head: follow.take_head(),
                span,
                bytes: follow.wire + seen,
            };
            self.mode = Mode::Reading;
            return Some(Closed::Cut(unread));
        }
        let n = self.buf.bytes().len();
        if let Some(span) = self.buf.span(n) {
            let bytes = n as u64 + self.gap.bytes;
            return Some(Closed::Cut(Unread {
                head: self.gap.head.take(),
                span,
                bytes,
            }));
        }
        self.take_gap().map(Closed::Unframed)
    }

    /// Whether a parse attempt is due.
    fn due(&self) -> bool {
        self.retry.force || self.buf.bytes().len() >= self.retry.at
    }

    /// Notes the outcome of a parse attempt that needed more bytes.
    fn wait_for_more(&mut self) {
        let n = self.buf.bytes().len();
        self.retry.at = if n >= RETRY_FROM { n * 2 } else { 0 };
        self.retry.force = false;
    }

    /// A message was read from the buffer: parse at every syscall again.
    fn retry_now(&mut self) {
        self.retry.at = 0;
        self.retry.force = false;
    }

    /// Forgets everything buffered (and `missing` uncaptured bytes after
    /// it); the stream must resynchronise.
    fn clear_lost(&mut self, missing: u64) {
        if let Some(span) = self.buf.span(self.buf.bytes().len()) {
            let merged = match self.gap.span {
                Some(old) => Span {
                    first_ns: old.first_ns,
                    ..span
                },
                None => span,
            };
            self.gap.span = Some(merged);
        }
        self.gap.bytes += self.buf.bytes().len() as u64 + missing;
        self.buf.forget();
        self.mode = Mode::Lost;
        self.losses = self.losses.wrapping_add(1);
        // a retry threshold set for what was given up on would hold back
        // the resynchronisation
        self.retry.at = 0;
        self.retry.force = false;
    }

    /// Gives up on a message followed past the buffer: what was read of it
    /// counts as given up on, with its times.
    fn lose_followed(&mut self, follow: &mut Follow) {
        if self.gap.head.is_none() {
            self.gap.head = follow.take_head();
        }
        let span = self.gap.span.get_or_insert(Span {
            first_ns: follow.first_ns,
            last_ns: follow.last_ns,
            tid: follow.tid,
        });
        span.first_ns = span.first_ns.min(follow.first_ns);
        span.last_ns = span.last_ns.max(follow.last_ns);
        self.gap.bytes += follow.wire;
    }

    /// Bytes buffered now.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.bytes().len()
    }

    /// Gives up on what is buffered (the pipeline's total is over its
    /// budget): counted as an overflow; the stream resynchronises.
    pub(crate) fn give_up_buffer(&mut self, stats: &mut Stats) {
        stats.buffer_overflows += 1;
        self.clear_lost(0);
    }

    /// Appends what the input has left to the buffer; past the cap,
    /// everything buffered and these bytes are given up on (counted).
    fn absorb(&mut self, input: &mut Input<'_>, stats: &mut Stats, max_buffer: usize) {
        if !matches!(input.phase, Phase::InPlace | Phase::ToBuffer) {
            return;
        }
        input.phase = Phase::Buffered;
        let rest = &input.payload[input.at..];
        input.at = input.payload.len();
        if rest.is_empty() {
            return;
        }
        if self.buf.bytes().len() + rest.len() > max_buffer {
            stats.buffer_overflows += 1;
            self.clear_lost(rest.len() as u64);
            let span = self.gap.span.get_or_insert(input.span);
            span.last_ns = input.span.last_ns;
            self.gap.bytes += input.missing;
            input.missing = 0;
            return;
        }
        self.buf.push(rest, input.span);
    }

    /// Copies an input meant to be read from the buffer into it. Called
    /// before the protocol is known, so that detection sees the bytes.
    pub(crate) fn buffer(&mut self, input: &mut Input<'_>, stats: &mut Stats, max_buffer: usize) {
        if input.phase == Phase::ToBuffer {
            self.absorb(input, stats, max_buffer);
        }
    }

    /// The next item of `input` (and of what is buffered); `None` once all
    /// of it is used up or waits for more bytes.
    #[inline(always)]
    pub(crate) fn next(&mut self, input: &mut Input<'_>, cx: &mut StreamCx<'_>) -> Option<Item> {
        loop {
            match input.phase {
                Phase::InPlace => {
                    let item = self.next_in_place(input, cx);
                    // all of it read in place (the common case): nothing is
                    // left for the buffer, which has nothing to say
                    if input.at == input.payload.len()
                        && input.missing == 0
                        && self.buf.is_empty()
                        && matches!(self.mode, Mode::Reading)
                    {
                        input.phase = Phase::Done;
                        return item;
                    }
                    match item {
                        Some(item) => return Some(item),
                        None => self.absorb(input, cx.stats, cx.max_buffer),
                    }
                }
                Phase::ToBuffer => self.absorb(input, cx.stats, cx.max_buffer),
                Phase::Buffered => match self.next_buffered(input, cx) {
                    Some(item) => return Some(item),
                    None => input.phase = Phase::Done,
                },
                Phase::Done => return None,
            }
        }
    }

    /// Reads the next message straight from the payload while nothing is
    /// buffered; `None` when the rest must go through the buffer (a
    /// partial message, an error: reported from there).
    #[inline(always)]
    fn next_in_place(&mut self, input: &mut Input<'_>, cx: &mut StreamCx<'_>) -> Option<Item> {
        let dir = cx.dir;
        let span = input.span;
        while input.at < input.payload.len() {
            if !self.buf.is_empty() || self.is_lost() {
                return None;
            }
            let rest = &input.payload[input.at..];
            if let Mode::Following(follow) = &mut self.mode {
                match follow.feed(rest) {
                    Ok(Some(used)) => {
                        follow.last_ns = span.last_ns;
                        follow.wire += used as u64;
                        input.at += used;
                        match self.end_follow(dir) {
                            Some(item) => return Some(item),
                            None => continue,
                        }
                    }
                    Ok(None) => {
                        follow.last_ns = span.last_ns;
                        follow.wire += rest.len() as u64;
                        input.at = input.payload.len();
                        return None;
                    }
                    // the buffered path reports it and resynchronises
                    Err(_) => return None,
                }
            }
            // A large Redis reply is walked once: a skipper tells whether
            // it ends in this payload before any full parse is tried.
            if Self::skip_first(cx.proto, dir, rest.len()) {
                if let Some(follow) = Follow::unfinished_redis_reply(rest) {
                    self.mode = Mode::Following(follow.started(span, rest.len() as u64));
                    input.at = input.payload.len();
                    return None;
                }
            }
            match cx.proto.next(dir, rest, cx.options, cx.spare) {
                Ok(Some(msg)) => {
                    input.at += msg.used;
                    if let Some(body) = msg.open {
                        let follow = Follow::until_close(msg.parsed, body);
                        self.mode = Mode::Following(follow.started(span, msg.wire));
                        continue;
                    }
                    return Some(Item::whole(msg.parsed, span, msg.wire));
                }
                Ok(None) if Self::follow_partial(cx.proto, dir, rest.len(), 0) => {
                    let (follow, head, now) = cx.proto.follow(dir, rest, cx.options)?;
                    input.at += head;
                    self.mode = Mode::Following(follow.started(span, head as u64));
                    if let Some((parsed, wire)) = now {
                        return Some(Item::whole(parsed, span, wire));
                    }
                }
                _ => return None,
            }
        }
        None
    }

    /// Reads the next message from the buffer (after feeding a followed
    /// message what it can take); `None` when nothing more can be read.
    fn next_buffered(&mut self, input: &mut Input<'_>, cx: &mut StreamCx<'_>) -> Option<Item> {
        let dir = cx.dir;
        loop {
            if matches!(self.mode, Mode::Following(_)) {
                match self.follow_buffered(&mut input.missing, cx.stats) {
                    Some(true) => match self.end_follow(dir) {
                        Some(item) => return Some(item),
                        None => continue,
                    },
                    _ => return None,
                }
            }
            let missing = input.missing;
            if self.buf.is_empty() {
                if missing > 0 {
                    // uncaptured bytes after a message's end: when they
                    // came is this syscall
                    self.clear_lost(missing);
                    let span = self.gap.span.get_or_insert(input.span);
                    span.last_ns = span.last_ns.max(input.span.last_ns);
                }
                return None;
            }
            if missing == 0 && !self.due() {
                return None;
            }
            if self.is_lost() {
                match cx.proto.resync(self.buf.bytes(), dir) {
                    Some(at) => {
                        self.buf.consume(at);
                        self.mode = Mode::Reading;
                        cx.stats.resyncs += 1;
                        // what was lost before this message is over: the
                        // answer(s) it held are reported or dropped first
                        // (lost requests answer nothing: forgotten)
                        let bytes = std::mem::take(&mut self.gap.bytes);
                        let head = self.gap.head.take();
                        let span = self.gap.span.take();
                        if let (Some(span), Direction::Response) = (span, dir) {
                            return Some(Item::Unread(Unread { head, span, bytes }));
                        }
                    }
                    None => {
                        self.clear_lost(missing);
                        return None;
                    }
                }
            }
            // A large Redis reply, or one cut by the capture length, is
            // walked once by a skipper before any full parse is tried.
            let n = self.buf.bytes().len();
            if Self::skip_first(cx.proto, dir, if missing > 0 { usize::MAX } else { n }) {
                if let Some(follow) = Follow::unfinished_redis_reply(self.buf.bytes()) {
                    self.start_following(follow, n);
                    continue;
                }
            }
            match cx.proto.next(dir, self.buf.bytes(), cx.options, cx.spare) {
                Ok(Some(msg)) => {
                    self.retry_now();
                    if let Some(body) = msg.open {
                        self.start_following(Follow::until_close(msg.parsed, body), msg.used);
                        continue;
                    }
                    let span = self.buf.span(msg.used).unwrap_or_default();
                    self.buf.consume(msg.used);
                    return Some(Item::whole(msg.parsed, span, msg.wire));
                }
                Ok(None) => {
                    // Not all there. Follow it instead of buffering it when
                    // it is large, cut by the capture length, or a request
                    // (its head is enough to pair it).
                    let started = if Self::follow_partial(cx.proto, dir, n, missing) {
                        cx.proto.follow(dir, self.buf.bytes(), cx.options)
                    } else {
                        None
                    };
                    let Some((follow, head, now)) = started else {
                        if missing > 0 {
                            return self.give_up_cut(missing, cx);
                        }
                        self.wait_for_more();
                        return None;
                    };
                    let span = self.start_following(follow, head);
                    if let Some((parsed, wire)) = now {
                        return Some(Item::whole(parsed, span, wire));
                    }
                }
                Err(ParseError::Malformed) if missing > 0 => return self.give_up_cut(missing, cx),
                Err(ParseError::Malformed) => {
                    cx.stats.parse_errors += 1;
                    self.clear_lost(missing);
                    return None;
                }
                Err(ParseError::Opaque(id)) => return Some(Item::Opaque(id)),
            }
        }
    }

    /// A message the capture length cut where its framing cannot be
    /// followed: what its whole lines say is used. A request, or an answer
    /// paired by key, is delivered now; an answer paired in order is kept
    /// with the bytes given up on, and reported with them when the next
    /// request or the close ends it. The stream then resynchronises.
    fn give_up_cut(&mut self, missing: u64, cx: &mut StreamCx<'_>) -> Option<Item> {
        let n = self.buf.bytes().len();
        let Some(parsed) = cx.proto.cut(cx.dir, self.buf.bytes(), cx.options, cx.spare) else {
            cx.stats.parse_errors += 1;
            self.clear_lost(missing);
            return None;
        };
        cx.stats.truncated_messages += 1;
        if let Parsed::Response { key: None, .. } = parsed {
            self.clear_lost(missing);
            if self.gap.head.is_none() {
                self.gap.head = Some(parsed);
            }
            return None;
        }
        let span = self.buf.span(n).unwrap_or_default();
        self.buf.forget();
        self.mode = Mode::Lost;
        self.losses = self.losses.wrapping_add(1);
        Some(Item::Message {
            parsed,
            span,
            wire: n as u64 + missing,
            cut: true,
        })
    }

    /// Whether a Redis reply of `len` bytes (`usize::MAX`: cut by the
    /// capture length) is walked by a skipper before a full parse.
    fn skip_first(proto: &Proto, dir: Direction, len: usize) -> bool {
        dir == Direction::Response && matches!(proto, Proto::Redis(_)) && len >= RETRY_FROM
    }

    /// Whether a message that is not all there is followed rather than
    /// buffered: it is large, cut by the capture length, or an HTTP
    /// request (its head is enough to pair it).
    fn follow_partial(proto: &Proto, dir: Direction, len: usize, missing: u64) -> bool {
        missing > 0
            || len >= RETRY_FROM
            || (dir == Direction::Request && matches!(proto, Proto::Http(_)))
    }

    /// Hands the first `used` buffered bytes (the head of a message, or
    /// all of what came of it) to `follow`, which reads the rest of the
    /// message from now on. Returns when those bytes came.
    fn start_following(&mut self, follow: Follow, used: usize) -> Span {
        let span = self.buf.span(used.max(1)).unwrap_or_default();
        self.buf.consume(used);
        self.retry_now();
        self.mode = Mode::Following(follow.started(span, used as u64));
        span
    }

    /// Feeds the buffered bytes (and `missing` uncaptured ones after them)
    /// to the message being followed. `Some(true)`: it ended (the bytes
    /// after it are still buffered); `Some(false)`: it goes on; `None`: it
    /// could not be followed and the stream is lost.
    fn follow_buffered(&mut self, missing: &mut u64, stats: &mut Stats) -> Option<bool> {
        let Mode::Following(follow) = &mut self.mode else {
            return Some(false);
        };
        let n = self.buf.bytes().len();
        match follow.feed(self.buf.bytes()) {
            Ok(Some(used)) => {
                if let Some(span) = self.buf.span(used) {
                    follow.last_ns = span.last_ns;
                }
                follow.wire += used as u64;
                self.buf.consume(used);
                Some(true)
            }
            Ok(None) => {
                if let Some(span) = self.buf.span(n) {
                    follow.last_ns = span.last_ns;
                }
                follow.wire += n as u64;
                self.buf.consume(n);
                if *missing == 0 {
                    return Some(false);
                }
                stats.truncated_messages += 1;
                match follow.skip_unseen(*missing) {
                    // the unseen bytes after its end begin what follows,
                    // whose framing was not seen: given up on next
                    Ok(used) => *missing -= used,
                    Err(_) => {
                        // the framing itself was not captured
                        *missing = 0;
                        self.give_up_follow(0);
                        return None;
                    }
                }
                // it may have ended in the bytes that were not captured
                Some(follow.is_done())
            }
            Err(_) => {
                stats.parse_errors += 1;
                self.give_up_follow(*missing);
                *missing = 0;
                None
            }
        }
    }

    /// Gives up on the followed message and what is buffered (and
    /// `missing` bytes after it).
    fn give_up_follow(&mut self, missing: u64) {
        if let Mode::Following(mut follow) = std::mem::take(&mut self.mode) {
            self.lose_followed(&mut follow);
        }
        self.clear_lost(missing);
    }

    /// The followed message ended: what to deliver, if anything.
    fn end_follow(&mut self, dir: Direction) -> Option<Item> {
        let Mode::Following(follow) = std::mem::take(&mut self.mode) else {
            return None;
        };
        let span = Span {
            first_ns: follow.first_ns,
            last_ns: follow.last_ns,
            tid: follow.tid,
        };
        let wire = follow.wire;
        match follow.finish() {
            Some(parsed) => Some(Item::whole(parsed, span, wire)),
            None if dir == Direction::Request => Some(Item::BodyEnded {
                last_ns: span.last_ns,
                wire,
            }),
            None => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(t: u64) -> Span {
        Span {
            first_ns: t,
            last_ns: t + 1,
            tid: 7,
        }
    }

    struct Harness {
        stats: Stats,
        spare: Vec<Attributes>,
        proto: Proto,
        stream: Stream,
    }

    impl Harness {
        fn http() -> Self {
            Self {
                stats: Stats::default(),
                spare: Vec::new(),
                proto: Proto::Http(Box::default()),
                stream: Stream::default(),
            }
        }

        /// Feeds one syscall; returns what came out.
        fn feed(&mut self, dir: Direction, bytes: &[u8], missing: u64, t: u64) -> Vec<Item> {
            let mut cx = StreamCx {
                proto: &mut self.proto,
                dir,
                options: &SummaryOptions::default(),
                stats: &mut self.stats,
                spare: &mut self.spare,
                max_buffer: 64 << 10,
            };
            self.stream.note_chunk(bytes.len(), missing);
            let in_place = missing == 0;
            let mut input = Input::new(bytes, missing, span(t), in_place);
            let mut items = Vec::new();
            while let Some(item) = self.stream.next(&mut input, &mut cx) {
                items.push(item);
            }
            items
        }
    }

    fn status(item: &Item) -> Option<String> {
        match item {
            Item::Message {
                parsed: Parsed::Response { attrs, .. },
                ..
            } => attrs.get("http.response.status_code").map(str::to_owned),
            _ => None,
        }
    }

    #[test]
    fn whole_messages_come_out_in_place_and_across_syscalls() {
        let mut h = Harness::http();
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 404 No\r\nContent-Length: 0\r\n\r\n";
        let items = h.feed(Direction::Response, two, 0, 10);
        assert_eq!(items.len(), 2);
        assert_eq!(status(&items[1]).as_deref(), Some("404"));
        assert!(h.stream.is_quiet());
        // one message over three syscalls: timed from first to last byte
        let msg = b"HTTP/1.1 500 Oops\r\nContent-Length: 3\r\n\r\nabc";
        assert!(h.feed(Direction::Response, &msg[..10], 0, 20).is_empty());
        assert!(h.feed(Direction::Response, &msg[10..30], 0, 30).is_empty());
        let items = h.feed(Direction::Response, &msg[30..], 0, 40);
        let [Item::Message { span, wire, .. }] = &items[..] else {
            panic!("{items:?}")
        };
        assert_eq!(
            (span.first_ns, span.last_ns, *wire),
            (20, 41, msg.len() as u64)
        );
        assert!(h.stream.is_quiet());
    }

    #[test]
    fn a_large_body_is_followed_not_buffered() {
        let mut h = Harness::http();
        let head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n";
        let mut first = head.to_vec();
        first.extend_from_slice(&[b'x'; 20_000]);
        assert!(h.feed(Direction::Response, &first, 0, 1).is_empty());
        assert!(h.stream.bytes().is_empty(), "nothing buffered");
        // the rest, partly uncaptured
        assert!(h
            .feed(Direction::Response, &[b'x'; 1000], 40_000, 2)
            .is_empty());
        let items = h.feed(Direction::Response, &[b'x'; 39_000], 0, 3);
        let [Item::Message { wire, span, .. }] = &items[..] else {
            panic!("{items:?}")
        };
        assert_eq!(*wire, (head.len() + 100_000) as u64);
        assert_eq!((span.first_ns, span.last_ns), (1, 4));
        assert_eq!(status(&items[0]).as_deref(), Some("200"));
        assert_eq!(h.stats.truncated_messages, 1);
    }

    #[test]
    fn garbage_is_lost_until_a_message_starts_again() {
        let mut h = Harness::http();
        assert!(h
            .feed(Direction::Response, b"\x00\x01garbage\r\n", 0, 1)
            .is_empty());
        assert!(h.stream.is_lost());
        assert_eq!(h.stats.parse_errors, 1);
        let items = h.feed(
            Direction::Response,
            b"HTTP/1.1 204 No Content\r\n\r\n",
            0,
            2,
        );
        assert_eq!(h.stats.resyncs, 1);
        // what was given up on comes first, for the report of its exchange,
        // then the message the stream found again
        let [Item::Unread(gap), Item::Message { .. }] = &items[..] else {
            panic!("{items:?}")
        };
        assert_eq!((gap.span.first_ns, gap.bytes), (1, 11));
        assert!(gap.head.is_none(), "no head was read");
        assert!(h.stream.take_gap().is_none());
    }

    #[test]
    fn lost_request_bytes_answer_nothing() {
        let mut h = Harness::http();
        assert!(h
            .feed(Direction::Request, b"\x00\x01garbage\r\n", 0, 1)
            .is_empty());
        let items = h.feed(Direction::Request, b"GET / HTTP/1.1\r\n\r\n", 0, 2);
        assert!(
            matches!(
                &items[..],
                [Item::Message {
                    parsed: Parsed::Request { .. },
                    ..
                }]
            ),
            "no unread answer for lost request bytes: {items:?}"
        );
    }

    #[test]
    fn a_request_body_ends_after_its_head_was_delivered() {
        let mut h = Harness::http();
        let items = h.feed(
            Direction::Request,
            b"POST /up HTTP/1.1\r\nContent-Length: 5\r\n\r\nab",
            0,
            1,
        );
        assert!(matches!(
            &items[..],
            [Item::Message {
                parsed: Parsed::Request { .. },
                wire: 45,
                ..
            }]
        ));
        let items = h.feed(Direction::Request, b"cde", 0, 5);
        assert!(
            matches!(
                &items[..],
                [Item::BodyEnded {
                    last_ns: 6,
                    wire: 45
                }]
            ),
            "{items:?}"
        );
    }

    #[test]
    fn a_long_head_is_retried_when_a_shorter_syscall_may_end_it() {
        let mut h = Harness::http();
        let mut head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Pad: ".to_vec();
        head.extend_from_slice(&[b'p'; 9000]);
        // no head yet, nothing to follow: buffered, and parsed again only
        // at twice the size or at a sign that it may be complete
        assert!(h.feed(Direction::Response, &head, 0, 1).is_empty());
        assert!(h.stream.awaits_retry());
        assert_eq!(h.stream.bytes().len(), head.len());
        let items = h.feed(Direction::Response, b"\r\n\r\n", 0, 2);
        assert_eq!(items.len(), 1, "a shorter syscall forces a parse");
        assert!(!h.stream.awaits_retry());
        assert!(!h.stream.force_retry(), "nothing waits");
    }
}
