//! The bytes of one direction not parsed yet, and when each of them was
//! sent or received, so a message's first and last byte can be timed
//! however the syscalls cut it.

use std::collections::VecDeque;

/// A syscall's worth of bytes: where it ends in the buffer and its times.
#[derive(Clone, Copy, Debug)]
struct Segment {
    /// Offset just past its last byte, relative to the buffer's start.
    end: usize,
    span: Span,
}

/// When a message (or a syscall's bytes) moved, and the thread that moved
/// its first byte.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) first_ns: u64,
    pub(crate) last_ns: u64,
    pub(crate) tid: u32,
}

/// Bytes of one direction waiting to be parsed, with their times.
#[derive(Debug, Default)]
pub(crate) struct Buffer {
    /// Bytes received so far; the unparsed ones start at `start` (consumed
    /// bytes are dropped in bulk, not moved at every message).
    data: Vec<u8>,
    start: usize,
    /// Segment ends are offsets into `data`.
    segments: VecDeque<Segment>,
}

/// Consumed bytes are moved out only past this much, and when they are the
/// larger part of the buffer.
const COMPACT_FROM: usize = 16 << 10;

impl Buffer {
    /// The unparsed bytes.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.data[self.start..]
    }

    /// Nothing unparsed.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.data.len()
    }

    /// Appends one syscall's captured bytes.
    pub(crate) fn push(&mut self, data: &[u8], span: Span) {
        if data.is_empty() {
            return;
        }
        self.data.extend_from_slice(data);
        self.segments.push_back(Segment {
            end: self.data.len(),
            span,
        });
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
            first_ns: first.span.first_ns,
            last_ns: last.span.last_ns,
            tid: first.span.tid,
        })
    }

    /// Drops the first `n` unparsed bytes (clamped to what is buffered).
    pub(crate) fn consume(&mut self, n: usize) {
        self.start += n.min(self.bytes().len());
        while self.segments.front().is_some_and(|s| s.end <= self.start) {
            self.segments.pop_front();
        }
        if self.is_empty() {
            self.clear();
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
        if self.data.capacity() <= 16 << 10 {
            self.clear();
        } else {
            *self = Buffer::default();
        }
    }

    /// Forgets everything unparsed, keeping the allocation.
    pub(crate) fn clear(&mut self) {
        self.data.clear();
        self.start = 0;
        self.segments.clear();
    }

    /// Forgets everything unparsed and gives its room back (after a loss
    /// the next message may be small).
    pub(crate) fn forget(&mut self) {
        self.data = Vec::new();
        self.start = 0;
        self.segments.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_follow_the_syscalls_a_message_used() {
        let mut b = Buffer::default();
        let at = |t: u64, tid: u32| Span {
            first_ns: t,
            last_ns: t + 1,
            tid,
        };
        b.push(b"GET / HT", at(10, 7));
        b.push(b"TP/1.1\r\n\r\nGET", at(20, 8));
        let span = b.span(18).unwrap();
        assert_eq!((span.first_ns, span.last_ns, span.tid), (10, 21, 7));
        b.consume(18);
        assert_eq!(b.bytes(), b"GET");
        assert_eq!(b.span(3).unwrap().first_ns, 20);
        b.forget();
        assert!(b.is_empty() && b.span(0).is_none());
    }
}
