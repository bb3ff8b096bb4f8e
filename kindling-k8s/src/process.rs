//! Process and container identity from procfs: the default [`Enricher`],
//! so a bare host is useful.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::cgroup::identity_from_cgroup;
use kindling_flow::enrich::Enricher;
use kindling_flow::Output;

/// Most processes whose container is remembered.
const MAX_PROCESSES: usize = 16_384;

/// The default enricher: `process.pid`, `process.executable.name` and,
/// from `/proc/<pid>/cgroup`, `container.id`, `container.runtime` and
/// `k8s.pod.uid` (see [`identity_from_cgroup`]). A process that has exited
/// (a replay of an old capture) gets none of those three.
///
/// # Examples
///
/// ```
/// use kindling_flow::enrich::Enricher;
/// use kindling_flow::{Config, Driver};
/// use kindling_k8s::ProcessEnricher;
///
/// let mut driver = Driver::live(Config::default());
/// let mut enricher = ProcessEnricher::new();
/// let mut out = Vec::new();
/// // driver.push(&event, &mut out) for each probe event, then:
/// driver.finish(&mut out);
/// for output in &mut out {
///     enricher.enrich(output);
/// }
/// ```
#[derive(Debug)]
pub struct ProcessEnricher {
    proc_root: PathBuf,
    containers: HashMap<u32, Identity>,
}

/// What a process's cgroup said, owned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Identity {
    container_id: Option<String>,
    runtime: Option<&'static str>,
    pod_uid: Option<String>,
}

impl Default for ProcessEnricher {
    fn default() -> Self {
        Self::new()
    }
}

impl ProcessEnricher {
    /// Reads `/proc`.
    ///
    /// # Examples
    ///
    /// ```
    /// let enricher = kindling_k8s::ProcessEnricher::new();
    /// # let _ = enricher;
    /// ```
    pub fn new() -> Self {
        Self::with_proc_root("/proc")
    }

    /// Reads another procfs (a host's `/proc` mounted in a container).
    ///
    /// # Examples
    ///
    /// ```
    /// let enricher = kindling_k8s::ProcessEnricher::with_proc_root("/host/proc");
    /// # let _ = enricher;
    /// ```
    pub fn with_proc_root(root: impl Into<PathBuf>) -> Self {
        Self {
            proc_root: root.into(),
            containers: HashMap::new(),
        }
    }

    fn identity(&mut self, pid: u32) -> Identity {
        if let Some(c) = self.containers.get(&pid) {
            return c.clone();
        }
        let identity = read_identity(&self.proc_root, pid);
        if self.containers.len() >= MAX_PROCESSES {
            self.containers.clear();
        }
        self.containers.insert(pid, identity.clone());
        identity
    }
}

/// The container or pod a process' cgroup names, read from `proc_root`.
fn read_identity(proc_root: &Path, pid: u32) -> Identity {
    let path = proc_root.join(pid.to_string()).join("cgroup");
    // cgroup v1 has a line per hierarchy: the first that names a
    // container or a pod
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| {
            text.lines()
                .filter_map(|l| l.splitn(3, ':').nth(2))
                .map(identity_from_cgroup)
                .find(|who| who.container_id.is_some() || who.pod_uid.is_some())
                .map(|who| Identity {
                    container_id: who.container_id.map(str::to_owned),
                    runtime: who.runtime.map(|r| r.as_str()),
                    pod_uid: who.pod_uid,
                })
        })
        .unwrap_or_default()
}

/// The processes of every container whose id starts with `prefix` (a
/// short id such as Docker's 12 digits, or the whole id), as (pid,
/// container id), in pid order, read from `proc_root`'s cgroup files.
///
/// # Examples
///
/// ```
/// let found = kindling_k8s::container_processes("/proc", "0123456789ab");
/// assert!(found.iter().all(|(_, id)| id.starts_with("0123456789ab")));
/// ```
pub fn container_processes(proc_root: impl AsRef<Path>, prefix: &str) -> Vec<(u32, String)> {
    let root = proc_root.as_ref();
    let Ok(dir) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut found: Vec<(u32, String)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let id = read_identity(root, pid).container_id?;
            id.starts_with(prefix).then_some((pid, id))
        })
        .collect();
    found.sort_unstable();
    found
}

impl Enricher for ProcessEnricher {
    fn enrich(&mut self, output: &mut Output) {
        let (pid, comm, resource) = match output {
            Output::Exchange(x) => (x.pid, &x.comm, &mut x.resource),
            Output::Tcp(t) => (t.pid, &t.comm, &mut t.resource),
        };
        resource.insert("process.pid", pid.to_string());
        resource.insert("process.executable.name", comm.to_string());
        let who = self.identity(pid);
        if let Some(id) = who.container_id {
            resource.insert("container.id", id);
        }
        if let Some(runtime) = who.runtime {
            resource.insert("container.runtime", runtime.to_owned());
        }
        if let Some(uid) = who.pod_uid {
            resource.insert("k8s.pod.uid", uid);
        }
    }
}

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
    identity_from_cgroup(path).container_id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_container_from_a_procfs() {
        let root = std::env::temp_dir().join(format!("kindling-proc-{}", std::process::id()));
        let id = "ab".repeat(32);
        std::fs::create_dir_all(root.join("42")).unwrap();
        std::fs::write(
            root.join("42/cgroup"),
            format!("0::/system.slice/docker-{id}.scope\n"),
        )
        .unwrap();
        // cgroup v1: a line per hierarchy, the pod's in most
        std::fs::create_dir_all(root.join("7")).unwrap();
        let uid = "5e0c2a4b-7f1d-4e3a-9b8c-6d5e4f3a2b1c";
        std::fs::write(
            root.join("7/cgroup"),
            format!(
                "12:devices:/kubepods/burstable/pod{uid}/{id}\n\
                 11:memory:/kubepods/burstable/pod{uid}/{id}\n1:name=systemd:/\n"
            ),
        )
        .unwrap();
        let mut e = ProcessEnricher::with_proc_root(&root);
        let docker = e.identity(42);
        assert_eq!(docker.container_id.as_deref(), Some(id.as_str()));
        assert_eq!(docker.runtime, Some("docker"));
        assert_eq!(docker.pod_uid, None);
        let pod = e.identity(7);
        assert_eq!(pod.pod_uid.as_deref(), Some(uid));
        assert_eq!(pod.runtime, Some("containerd"));
        assert_eq!(e.identity(43), Identity::default(), "no such process");
        // both processes are in the container; a short id finds them
        assert_eq!(
            container_processes(&root, &id[..12]),
            [(7, id.clone()), (42, id.clone())]
        );
        assert!(container_processes(&root, "cd").is_empty());
        std::fs::remove_dir_all(root).unwrap();
    }
}
