//! # kindling-flow
//!
//! The sans-IO pipeline that turns [`kindling_probe`] events into request /
//! response exchanges with timing phases, TCP health and bounded metrics. It
//! is fed events and the current time and returns outputs; it never reads a
//! clock or a socket itself, so replays are deterministic.
//!
//! **Status:** not written yet (tracked as issue 4). Today the crate only
//! re-exports the event types it will consume.

#![forbid(unsafe_code)]

pub use kindling_probe::abi::Event;
pub use kindling_proto::Direction;
