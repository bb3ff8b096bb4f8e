//! Self-metrics: what went in, what came out, what was lost and why.

use serde::Serialize;

/// Counters kept by the pipeline; every event it cannot use is counted in
/// one of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Stats {
    /// Probe records fed in.
    pub events: u64,
    /// Records the probe reported lost (ring full, read failures), as told
    /// by [`crate::Pipeline::note_lost`].
    pub events_lost: u64,
    /// Exchanges emitted.
    pub exchanges: u64,
    /// TCP records emitted.
    pub tcp_records: u64,
    /// Connections currently tracked.
    pub connections: u64,
    /// Connections whose protocol was not recognised (given up after 8
    /// messages that were not a beginning).
    pub unrecognised_connections: u64,
    /// Bytes that could not be parsed (the stream then resynchronises).
    pub parse_errors: u64,
    /// Times a stream skipped bytes to find the next message again.
    pub resyncs: u64,
    /// Messages whose bytes were partly beyond the capture length.
    pub truncated_messages: u64,
    /// Requests dropped without an exchange: their stream lost bytes, or
    /// too many waited at once.
    pub requests_dropped: u64,
    /// Exchanges reported with a response that could not be read.
    pub partial_exchanges: u64,
    /// Responses with no request to pair with (counted, not invented).
    pub unpaired_responses: u64,
    /// Messages pushed to clients unasked: pub/sub messages, MONITOR's
    /// stream, RESP3 pushes (not exchanges, not errors).
    pub messages_delivered: u64,
    /// Buffers dropped for exceeding the cap.
    pub buffer_overflows: u64,
    /// Connections evicted for the connection cap.
    pub evictions: u64,
    /// Connections forgotten after the idle timeout.
    pub idle_expired: u64,
    /// TCP state changes seen, by the state entered (the kernel's numbers,
    /// `include/net/tcp_states.h`: 1 ESTABLISHED … 12 NEW_SYN_RECV).
    pub tcp_states: [u64; 13],
}
