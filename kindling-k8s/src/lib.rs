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
//! **Status:** the process enricher ([`ProcessEnricher`]: procfs, and the
//! container, runtime and pod UID of a cgroup path, [`identity_from_cgroup`]),
//! the metadata store and its resolution rules ([`store`]), and the
//! Kubernetes enricher naming a traced process's pod, workload, container
//! and node ([`KubernetesEnricher`]). Not yet: the watchers that fill the
//! store from the API server, conntrack for a service's backend, the
//! Kubernetes labels on the metrics, the DaemonSet.

#![forbid(unsafe_code)]

mod cgroup;
#[cfg(feature = "conntrack")]
pub mod conntrack;
mod enricher;
mod process;
pub mod store;
#[cfg(feature = "watch")]
pub mod watch;

pub use cgroup::{identity_from_cgroup, CgroupIdentity, Runtime};
pub use enricher::{KubernetesEnricher, Translations, METRIC_LABELS, WORKLOAD_KIND, WORKLOAD_NAME};
pub use process::{container_id_from_cgroup, container_processes, ProcessEnricher};
