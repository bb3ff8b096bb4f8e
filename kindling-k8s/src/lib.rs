//! # kindling-k8s
//!
//! Resolves who a record belongs to: process → container (from its cgroup) →
//! pod, workload, service and node, and IP:port → Kubernetes entity. Lookups
//! are pure functions over stores filled by watchers, so they test without a
//! cluster.
//!
//! **Status:** only the container-id extraction from a cgroup path exists so
//! far (it lives in [`kindling_flow::enrich`], whose default enricher uses
//! it); the Kubernetes [`Enricher`](kindling_flow::enrich::Enricher) comes
//! with a later issue.

#![forbid(unsafe_code)]

pub use kindling_flow::enrich::container_id_from_cgroup;
