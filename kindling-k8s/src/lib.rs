//! # kindling-k8s
//!
//! Resolves who a record belongs to: process → container (from its cgroup) →
//! pod, workload, service and node, and IP:port → Kubernetes entity. Lookups
//! are pure functions over stores filled by watchers, so they test without a
//! cluster. Everything here implements [`kindling_flow`]'s
//! [`Enricher`](kindling_flow::enrich::Enricher) trait and runs outside its
//! sans-IO pipeline, on the outputs.
//!
//! ```text
//! Pipeline ─► Output ─► ProcessEnricher ─► (Kubernetes enricher) ─► sinks
//!                       /proc/<pid>/cgroup
//!                       → process.pid, process.executable.name, container.id
//! ```
//!
//! **Status:** the process enricher ([`ProcessEnricher`], reading procfs)
//! and the container id of a cgroup path ([`container_id_from_cgroup`])
//! exist so far; the Kubernetes enricher comes with a later issue.

#![forbid(unsafe_code)]

mod cgroup;
mod process;
pub mod store;

pub use cgroup::{identity_from_cgroup, CgroupIdentity, Runtime};
pub use process::{container_id_from_cgroup, ProcessEnricher};
