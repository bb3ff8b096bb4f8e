//! # kindling-probe
//!
//! The kernel side of Kindling and everything needed to read what it emits:
//!
//! * [`abi`]: Rust mirrors of the records defined in `bpf/kindling.h` and a
//!   zero-copy, allocation-free decoder ([`abi::decode`] → [`abi::Event`]).
//! * [`capture`]: the `.kcap` capture file (record / replay), streaming and
//!   crash tolerant, validated on read.
//! * `ProbeBuilder` / `Probe` (feature `loader`, default): loads the CO-RE
//!   programs with libbpf-rs, attaches them to syscall tracepoints and
//!   `tp_btf` TCP/skb tracepoints, and consumes the ring buffer.
//! * `PacketTracer` (feature `loader`): follows chosen packets hop by hop
//!   through devices, namespaces, NAT and drops (`packets` module).
//!
//! ```text
//!  socket syscalls ─┐
//!  sock/tcp/skb tps ┼─► BPF programs ─► ring buffer ─► Probe::poll ─► Event<'_>
//!                   │   (filters,        (variable     (batched      │
//!                   │    payload copy)    records)      wake-ups)    └─► CaptureWriter ─► .kcap
//! ```
//!
//! ## Features
//! * `loader` (default): the probe itself. Needs clang at build time and root
//!   (or CAP_BPF + CAP_PERFMON) at run time. Without it (`default-features =
//!   false`) only [`abi`] and [`capture`] remain: pure Rust, builds anywhere.
//! * `tokio`: an async event stream over the loader.
//!
//! ## Kernel requirements
//! Linux 6.2 or newer with BTF (`/sys/kernel/btf/vmlinux`), tracefs. Only
//! tracepoints are used — no kprobes, no fentry.

#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod abi;
pub mod capture;
mod config;
pub mod render;

pub use config::ProbeConfig;

#[cfg(feature = "loader")]
mod error;
#[cfg(feature = "loader")]
mod kernel;
#[cfg(feature = "loader")]
mod loader;
#[cfg(feature = "loader")]
pub mod packets;
#[cfg(feature = "loader")]
pub mod preflight;

#[cfg(feature = "loader")]
pub use error::ProbeError;
#[cfg(feature = "loader")]
pub use kernel::{drop_reason_names, drop_reason_names_from};
#[cfg(feature = "loader")]
pub use loader::{LossStats, Probe, ProbeBuilder};
#[cfg(feature = "loader")]
pub use packets::{PacketFilter, PacketLosses, PacketTracer, PacketTracerBuilder};
#[cfg(feature = "tokio")]
mod stream;
#[cfg(feature = "tokio")]
pub use stream::AsyncProbe;
