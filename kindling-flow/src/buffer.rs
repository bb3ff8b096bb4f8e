//! One direction of a connection: the bytes not yet parsed, and when each
//! of them was sent or received, so a message's first and last byte can be
//! timed however the syscalls cut it.

use std::collections::VecDeque;

/// A syscall's worth of bytes: where it ends in the buffer and its times.
#[derive(Clone, Copy, Debug)]
struct Segment {
    /// Offset just past its last byte, relative to the buffer's start.
    end: usize,
    /// When its first byte left or arrived.
    first_ns: u64,
    /// When its last byte left or arrived.
    last_ns: u64,
    /// Thread that moved it.
    tid: u32,
}

/// Bytes of one direction waiting to be parsed.
#[derive(Debug, Default)]
pub(crate) struct DirBuf {
    /// Bytes received so far; the unparsed ones start at `start` (consumed
    /// bytes are dropped in bulk, not moved at every message).
    data: Vec<u8>,
    start: usize,
    /// Segment ends are offsets into `data`.
    segments: VecDeque<Segment>,
    /// A message read chunk by chunk past the buffer (a large body or
    /// reply, or one cut by the capture length).
    pub(crate) follow: Option<Box<crate::protocol::Follow>>,
    /// Bytes were lost: the next message must be found with `resync`.
    pub(crate) lost: bool,
    /// When the bytes given up on were sent or received, and how many:
    /// the timing of a response that could not be read.
    pub(crate) lost_span: Option<Span>,
    pub(crate) lost_bytes: u64,
    /// Parse again only once this many bytes are buffered: a large message
    /// arriving in many syscalls is re-read at doubling sizes, not at every
    /// syscall, so its cost stays linear. 0 = at every syscall.
    pub(crate) retry_at: usize,
    /// Parse at the next chance whatever `retry_at` says (a sign that the
    /// message may be complete: a shorter syscall, the other direction
    /// speaking, a tick, the close).
    pub(crate) force: bool,
    /// Size of the last syscall's payload.
    pub(crate) last_chunk: usize,
}

/// Buffers smaller than this are parsed at every syscall.
pub(crate) const RETRY_FROM: usize = 8 << 10;

/// Consumed bytes are moved out only past this much, and when they are the
/// larger part of the buffer.
const COMPACT_FROM: usize = 16 << 10;

impl DirBuf {
    /// The unparsed bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// Nothing unparsed.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    /// Whether a parse attempt is due.
    pub(crate) fn due(&self) -> bool {
        self.force || self.bytes().len() >= self.retry_at
    }

    /// Notes the outcome of a parse attempt that needed more bytes.
    pub(crate) fn wait_for_more(&mut self) {
        self.retry_at = if self.bytes().len() >= RETRY_FROM {
            self.bytes().len() * 2
        } else {
            0
        };
        self.force = false;
    }
}

/// Times of a parsed message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) first_ns: u64,
    pub(crate) last_ns: u64,
    pub(crate) tid: u32,
}

impl DirBuf {
    /// Appends captured bytes. Returns false if the cap would be exceeded:
    /// then everything buffered and these bytes are given up on (`lost`).
    pub(crate) fn push(
        &mut self,
        data: &[u8],
        first_ns: u64,
        last_ns: u64,
        tid: u32,
        max: usize,
    ) -> bool {
        if data.is_empty() {
            return true;
        }
        if self.bytes().len() + data.len() > max {
            // give up on what is buffered and on these bytes too
            self.clear_lost(data.len() as u64);
            let span = self.lost_span.get_or_insert(Span {
                first_ns,
                last_ns,
                tid,
            });
            span.last_ns = last_ns;
            return false;
        }
        self.data.extend_from_slice(data);
        self.segments.push_back(Segment {
            end: self.data.len(),
            first_ns,
            last_ns,
            tid,
        });
        true
    }

    /// Times of the unparsed bytes `0..len` (the message about to be
    /// consumed).
    pub(crate) fn span(&self, len: usize) -> Option<Span> {
        let first = self.segments.front()?;
        let last_byte = self.start + len.saturating_sub(1);
        let last = self
            .segments
            .iter()
            .find(|s| s.end > last_byte)
            .or(self.segments.back())?;
        Some(Span {
            first_ns: first.first_ns,
            last_ns: last.last_ns,
            tid: first.tid,
        })
    }

    /// Drops the first `n` unparsed bytes (clamped to what is buffered).
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n.min(self.bytes().len());
        while self.segments.front().is_some_and(|s| s.end <= self.start) {
            self.segments.pop_front();
        }
        if self.is_empty() {
            self.data.clear();
            self.start = 0;
            self.segments.clear();
        } else if self.start >= COMPACT_FROM && self.start * 2 >= self.data.len() {
            self.data.drain(..self.start);
            for s in &mut self.segments {
                s.end -= self.start;
            }
            self.start = 0;
        }
    }

    /// Back to new, keeping the allocations unless they grew large.
    pub(crate) fn reset(&mut self) {
        let keep = self.data.capacity() <= 16 << 10;
        *self = if keep {
            let mut data = std::mem::take(&mut self.data);
            let mut segments = std::mem::take(&mut self.segments);
            data.clear();
            segments.clear();
            DirBuf {
                data,
                segments,
                ..DirBuf::default()
            }
        } else {
            DirBuf::default()
        };
    }

    /// Forgets everything unparsed, keeping the allocation.
    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.start = 0;
        self.segments.clear();
    }

    /// Forgets everything buffered (and `missing` uncaptured bytes after
    /// it); the stream must resynchronise.
    pub(crate) fn clear_lost(&mut self, missing: u64) {
        if let Some(span) = self.span(self.bytes().len()) {
            let merged = match self.lost_span {
                Some(old) => Span {
                    first_ns: old.first_ns,
                    ..span
                },
                None => span,
            };
            self.lost_span = Some(merged);
        }
        self.lost_bytes += self.bytes().len() as u64 + missing;
        self.data = Vec::new();
        self.start = 0;
        self.segments.clear();
        self.follow = None;
        self.lost = true;
    }

    /// Gives up on a message followed past the buffer: what was read of it
    /// counts as lost, with its times.
    pub(crate) fn lose_followed(&mut self, first_ns: u64, last_ns: u64, tid: u32, bytes: u64) {
        let span = self.lost_span.get_or_insert(Span {
            first_ns,
            last_ns,
            tid,
        });
        span.first_ns = span.first_ns.min(first_ns);
        span.last_ns = span.last_ns.max(last_ns);
        self.lost_bytes += bytes;
    }

    /// Takes what was given up on, and starts afresh at a message boundary.
    pub(crate) fn take_lost(&mut self) -> Option<(Span, u64)> {
        self.lost = false;
        self.data = Vec::new();
        self.start = 0;
        self.segments.clear();
        let bytes = std::mem::take(&mut self.lost_bytes);
        self.lost_span.take().map(|s| (s, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_the_syscalls_a_message_used() {
        let mut b = DirBuf::default();
        assert!(b.push(b"GET / HT", 10, 11, 7, 100));
        assert!(b.push(b"TP/1.1\r\n\r\nGET", 20, 21, 8, 100));
        let span = b.span(18).unwrap();
        assert_eq!((span.first_ns, span.last_ns, span.tid), (10, 21, 7));
        b.consume(18);
        assert_eq!(b.bytes(), b"GET");
        assert_eq!(b.span(3).unwrap().first_ns, 20);
        assert!(!b.push(&[0; 200], 30, 31, 8, 100), "over the cap");
        assert!(b.lost && b.is_empty());
        assert_eq!(b.lost_bytes, 3 + 200);
    }
}
