//! Who a process is, from its cgroup path: the container id, the container
//! runtime and, under Kubernetes, the pod's UID. Covers the layouts the
//! runtimes write under both cgroup drivers (systemd slices and cgroupfs),
//! cgroup v1 and v2, Docker, containerd, CRI-O and Podman (rootful and
//! rootless), and nested kubelets (kind).

/// A container runtime, as its cgroup names tell.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Runtime {
    /// `docker-<id>.scope`, `/docker/<id>`.
    Docker,
    /// `cri-containerd-<id>.scope`, or a bare id under a pod (cgroupfs).
    Containerd,
    /// `crio-<id>.scope` (and `crio-conmon-<id>.scope`, its monitor).
    CriO,
    /// `libpod-<id>.scope` (and `libpod-conmon-<id>.scope`).
    Podman,
}

impl Runtime {
    /// Its name, as OpenTelemetry's `container.runtime` has it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Runtime::Docker => "docker",
            Runtime::Containerd => "containerd",
            Runtime::CriO => "cri-o",
            Runtime::Podman => "podman",
        }
    }
}

/// What a cgroup path says of the process in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIdentity<'a> {
    /// The 64-hex-digit container id.
    pub container_id: Option<&'a str>,
    /// The runtime, when the path names it (a bare id under a cgroupfs pod
    /// is taken as containerd's, the usual runtime there).
    pub runtime: Option<Runtime>,
    /// The pod's UID (`8-4-4-4-12` hex, dashes restored where systemd slice
    /// names carry underscores).
    pub pod_uid: Option<String>,
    /// The process is the runtime's monitor of the container (conmon),
    /// not the container's own.
    pub monitor: bool,
}

/// Reads a cgroup path (one line of `/proc/<pid>/cgroup` after its second
/// colon).
///
/// # Examples
///
/// ```
/// use kindling_k8s::{identity_from_cgroup, Runtime};
///
/// let id = "3f1c2d9e8b7a6f5e4d3c2b1a0f9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e";
/// let path = format!(
///     "/kubepods.slice/kubepods-burstable.slice/\
///      kubepods-burstable-pod0d4ff1a9_7d2c_4f0e_9a4b_1f2e3d4c5b6a.slice/cri-containerd-{id}.scope"
/// );
/// let who = identity_from_cgroup(&path);
/// assert_eq!(who.container_id, Some(id));
/// assert_eq!(who.runtime, Some(Runtime::Containerd));
/// assert_eq!(who.pod_uid.as_deref(), Some("0d4ff1a9-7d2c-4f0e-9a4b-1f2e3d4c5b6a"));
/// assert_eq!(identity_from_cgroup("/user.slice/user-1000.slice/session-2.scope"), Default::default());
/// ```
pub fn identity_from_cgroup(path: &str) -> CgroupIdentity<'_> {
    let mut who = CgroupIdentity::default();
    let mut parent = "";
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if let Some(uid) = pod_uid(segment) {
            who.pod_uid = Some(uid);
        } else if let Some((id, runtime, monitor)) = container(segment) {
            who.container_id = Some(id);
            // cgroup v1 Docker names itself in the parent: `/docker/<id>`
            who.runtime = runtime.or((parent == "docker").then_some(Runtime::Docker));
            who.monitor = monitor;
        }
        parent = segment;
    }
    if who.runtime.is_none() && who.container_id.is_some() && who.pod_uid.is_some() {
        who.runtime = Some(Runtime::Containerd);
    }
    who
}

/// The container id a path segment names: `<runtime>-<id>.scope`,
/// `<runtime>-conmon-<id>.scope`, or a bare id.
fn container(segment: &str) -> Option<(&str, Option<Runtime>, bool)> {
    let name = segment.strip_suffix(".scope").unwrap_or(segment);
    let (prefix, id) = match name.rsplit_once(['-', ':']) {
        Some((prefix, id)) => (prefix, id),
        None => ("", name),
    };
    if !is_container_id(id) {
        return None;
    }
    let (prefix, monitor) = match prefix.strip_suffix("-conmon") {
        Some(p) => (p, true),
        None => (prefix, false),
    };
    let runtime = match prefix {
        "docker" => Some(Runtime::Docker),
        "cri-containerd" => Some(Runtime::Containerd),
        "crio" => Some(Runtime::CriO),
        "libpod" => Some(Runtime::Podman),
        _ => None,
    };
    Some((id, runtime, monitor))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The pod UID a path segment names: `pod<uid>` (cgroupfs) or
/// `kubepods[-<qos>]-pod<uid with underscores>.slice` (systemd), also
/// prefixed `kubelet-` when the kubelet runs in its own slice.
fn pod_uid(segment: &str) -> Option<String> {
    if let Some(uid) = segment.strip_prefix("pod").filter(|u| is_uuid(u)) {
        return Some(uid.to_owned());
    }
    let name = segment.strip_suffix(".slice")?;
    let pod = name.rsplit('-').next()?.strip_prefix("pod")?;
    let uid = pod.replace('_', "-");
    is_uuid(&uid).then_some(uid)
}

/// `8-4-4-4-12` hex digits.
fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "8a7f9c3e1b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a";
    const UID: &str = "5e0c2a4b-7f1d-4e3a-9b8c-6d5e4f3a2b1c";
    const UID_: &str = "5e0c2a4b_7f1d_4e3a_9b8c_6d5e4f3a2b1c";

    /// Path shapes as the runtimes and kubelets write them (cgroup v2
    /// `0::` lines and v1 controller lines alike give these paths).
    #[test]
    fn every_runtime_and_layout() {
        use Runtime::*;
        let cases: Vec<(String, Option<Runtime>, bool, bool)> = vec![
            // Kubernetes, systemd driver (cgroup v2 default), containerd
            (format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{ID}.scope"), Some(Containerd), true, false),
            // guaranteed QoS has no QoS slice
            (format!("/kubepods.slice/kubepods-pod{UID_}.slice/cri-containerd-{ID}.scope"), Some(Containerd), true, false),
            // CRI-O (OpenShift), and its conmon monitor
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{ID}.scope"), Some(CriO), true, false),
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-conmon-{ID}.scope"), Some(CriO), true, true),
            // Kubernetes, cgroupfs driver (cgroup v1 era): a bare id
            (format!("/kubepods/burstable/pod{UID}/{ID}"), Some(Containerd), true, false),
            (format!("/kubepods/pod{UID}/{ID}"), Some(Containerd), true, false),
            // dockershim under systemd
            (format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/docker-{ID}.scope"), Some(Docker), true, false),
            // kind: the kubelet in its own slice inside a node container
            (format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"), Some(Containerd), true, false),
            // plain Docker: v2 systemd, v1 cgroupfs
            (format!("/system.slice/docker-{ID}.scope"), Some(Docker), false, false),
            (format!("/docker/{ID}"), Some(Docker), false, false),
            // Podman, rootful and rootless, and conmon
            (format!("/machine.slice/libpod-{ID}.scope"), Some(Podman), false, false),
            (format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope/container"), Some(Podman), false, false),
            (format!("/machine.slice/libpod-conmon-{ID}.scope"), Some(Podman), false, true),
        ];
        for (path, runtime, in_pod, monitor) in cases {
            let who = identity_from_cgroup(&path);
            assert_eq!(who.container_id, Some(ID), "{path}");
            assert_eq!(who.runtime, runtime, "{path}");
            assert_eq!(who.pod_uid.as_deref(), in_pod.then_some(UID), "{path}");
            assert_eq!(who.monitor, monitor, "{path}");
        }
    }

    #[test]
    fn hosts_processes_and_near_misses_are_nobody() {
        for path in [
            "/",
            "/init.scope",
            "/system.slice/sshd.service",
            "/user.slice/user-1000.slice/session-3.scope",
            // a pod's own slice (the pause process lives in a container)
            "/kubepods.slice/kubepods-podnot_a_uid.slice",
            // 63 hex digits, and a non-hex 64
            "/system.slice/docker-8a7f9c3e1b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4.scope",
            "/system.slice/docker-za7f9c3e1b2d4f6a8c0e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a4c6e8b0d2f4a.scope",
        ] {
            let who = identity_from_cgroup(path);
            assert_eq!(who.container_id, None, "{path}");
            assert_eq!(who.pod_uid, None, "{path}");
        }
        // a pod slice alone still names the pod
        let slice =
            format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
        assert_eq!(identity_from_cgroup(&slice).pod_uid.as_deref(), Some(UID));
    }
}
