//! # kindling-k8s
//!
//! Resolves who a record belongs to: process → container (from its cgroup) →
//! pod, workload, service and node, and IP:port → Kubernetes entity. Lookups
//! are pure functions over stores filled by watchers, so they test without a
//! cluster.
//!
//! **Status:** only the container-id extraction from a cgroup path exists so
//! far; Kubernetes metadata comes with a later issue.

#![forbid(unsafe_code)]

/// Extracts a 64-hex-digit container id from a cgroup path, as written by
/// Docker, containerd, CRI-O and Podman (`…/docker-<id>.scope`,
/// `…/cri-containerd-<id>.scope`, `…/<id>`).
///
/// # Examples
///
/// ```
/// use kindling_k8s::container_id_from_cgroup;
///
/// let id = "3f1c2d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e";
/// let path = format!("/kubepods.slice/kubepods-pod1.slice/cri-containerd-{id}.scope");
/// assert_eq!(container_id_from_cgroup(&path), Some(id));
/// assert_eq!(container_id_from_cgroup("/user.slice/session-1.scope"), None);
/// ```
pub fn container_id_from_cgroup(path: &str) -> Option<&str> {
    path.rsplit('/').find_map(|segment| {
        let segment = segment.strip_suffix(".scope").unwrap_or(segment);
        let id = segment.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    })
}
