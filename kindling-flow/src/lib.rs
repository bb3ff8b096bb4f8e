//! # kindling-flow
//!
//! The sans-IO pipeline that turns [`kindling_probe`] events into request /
//! response exchanges with timing phases, and TCP health records. It is
//! fed events and the current time and returns outputs; it never reads a
//! clock or a socket itself, so a replay gives the same answer every time.
//!
//! ```text
//! Event ─► connection table ─► per-direction buffers ─► detect (sticky)
//!   (process, socket)            (bounded, timed)        ─► parse / follow (kindling-proto)
//!                                                        ─► pair ─► Exchange ─► Metrics
//! TCP / drop events ─────────────────────────────────────────────► TcpRecord ─►
//! ```
//!
//! - **Connections** are keyed by process and kernel socket (two fds of one
//!   socket are one connection, a reused fd holds a new socket); the role
//!   comes from connect/accept, or for connections already open, from the
//!   ports this host listens on, then from who sends the first request. An
//!   entry ends at `close`, when TCP reports
//!   the socket closed, or when connect/accept reuse its address.
//! - **Reassembly**: with nothing buffered, messages are read straight from
//!   a syscall's payload; otherwise bytes are buffered per direction up to
//!   a cap, with the time of each syscall, so that phases are timed by first
//!   and last byte. A message too large to buffer, or cut by the capture
//!   length, is followed past the buffer by its framing
//!   ([`kindling_proto::http1::BodyReader`], [`kindling_proto::redis::Skipper`],
//!   [`kindling_proto::mysql::ResultSetReader`]), skipping uncaptured payload.
//!   Bytes that cannot be read make the stream resynchronise at the next
//!   recognisable message ([`kindling_proto::Protocol::resync`]); an answer
//!   that could not be read is reported `partial`; records the probe lost
//!   ([`Pipeline::note_lost`], or a loss marker in a capture) drop what was
//!   in flight. Nothing is invented: every loss is counted in [`Stats`].
//! - **Pairing**: first in, first out for HTTP/1 (pipelining, `100
//!   Continue`) and Redis; MySQL's command/response; DNS by id and
//!   question, in any order. Redis pushes, HTTP interim responses, MySQL
//!   handshakes are not exchanges.
//! - **Timing and blame**: connect / send / wait / download phases, a slow
//!   threshold per protocol, error kinds, and the connection's RTT and
//!   retransmits under each exchange ([`Network`]).
//! - **Metrics**: [`Metrics`] aggregates outputs into Kindling's
//!   Prometheus series with bounded cardinality.
//! - **Driving**: a [`Driver`] owns a pipeline and applies the one tick
//!   and loss policy every caller shares (replay: a tick per second of
//!   event time; live: the caller's clock and the probe's loss counter); a
//!   [`Replay`] reads a capture file into one; [`Config::from_capture`]
//!   takes the capture's clock offset and drop reason names.
//! - **Enrichment**: an [`enrich::Enricher`] adds resource attributes
//!   outside the pipeline; `kindling-k8s` implements it for processes,
//!   containers and Kubernetes.

#![forbid(unsafe_code)]

mod buffer;
mod config;
mod conn;
mod driver;
pub mod enrich;
pub mod metrics;
pub mod packets;
pub mod pcapng;
mod pipeline;
mod protocol;
mod record;
mod stats;
mod stream;

pub use config::{search_domains, Config, SlowThresholds};
pub use driver::{Driver, Replay, Step, TICK_INTERVAL_NS};
pub use kindling_probe::abi::Event;
pub use kindling_proto::{Detail, ProtocolId};
pub use metrics::{Metrics, MetricsConfig};
pub use pipeline::Pipeline;
pub use record::{
    is_packet_loss, Attributes, Comm, DropCause, ErrorKind, Exchange, Network, Output, Phases,
    Role, TcpEventKind, TcpRecord,
};
pub use stats::Stats;

/// The workspace README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
