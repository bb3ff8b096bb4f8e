//! # kindling-flow
//!
//! The sans-IO pipeline that turns [`kindling_probe`] events into request /
//! response exchanges with timing phases, and TCP health records. It is
//! fed events and the current time and returns outputs; it never reads a
//! clock or a socket itself, so a replay gives the same answer every time.
//!
//! ```text
//! Event ─► connection table ─► per-direction buffers ─► detect (sticky)
//!   (pid, fd, socket)            (bounded, timed)        ─► parse (kindling-proto)
//!                                                        ─► pair ─► Exchange
//! TCP / drop events ─────────────────────────────────────────────► TcpRecord
//! ```
//!
//! - **Connections** are keyed by process, fd and kernel socket; the role
//!   comes from connect/accept, or for connections already open, from who
//!   sends the first request.
//! - **Reassembly**: bytes are buffered per direction up to a cap, with the
//!   time of each syscall so that phases are timed by first and last byte.
//!   A message cut by the capture length is framed by its declared length
//!   (HTTP/1); bytes that cannot be read make the stream resynchronise at
//!   the next recognisable message ([`kindling_proto::Protocol::resync`]).
//!   Nothing is invented: every loss is counted in [`Stats`].
//! - **Pairing**: first in, first out for HTTP/1, Redis and MySQL; by id for
//!   DNS. Redis pushes, HTTP interim responses, MySQL handshakes are not
//!   exchanges.
//!
//! - **Metrics**: [`Metrics`] aggregates outputs into Kindling's
//!   Prometheus series with bounded cardinality.
//! - **Enrichment**: an [`enrich::Enricher`] adds resource attributes;
//!   [`enrich::ProcessEnricher`] names the process and its container.

#![forbid(unsafe_code)]

mod buffer;
mod config;
mod conn;
pub mod enrich;
pub mod metrics;
mod pipeline;
mod protocol;
mod record;
mod stats;

pub use config::{Config, SlowThresholds};
pub use kindling_probe::abi::Event;
pub use metrics::{Metrics, MetricsConfig};
pub use pipeline::Pipeline;
pub use record::{
    is_packet_loss, Attributes, Comm, ErrorKind, Exchange, Network, Output, Phases, Role,
    TcpEventKind, TcpRecord,
};
pub use stats::Stats;
