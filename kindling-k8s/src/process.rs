//! Process and container identity from procfs: the default [`Enricher`],
//! so a bare host is useful.

use std::collections::HashMap;
use std::path::PathBuf;

use kindling_flow::enrich::Enricher;
use kindling_flow::Output;

/// Most processes whose container is remembered.
const MAX_PROCESSES: usize = 16_384;

/// The default enricher: `process.pid`, `process.executable.name` and,
/// from `/proc/<pid>/cgroup`, `container.id`. A process that has exited
/// (a replay of an old capture) gets no container id.
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
    containers: HashMap<u32, Option<String>>,
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

    fn container(&mut self, pid: u32) -> Option<String> {
        if let Some(c) = self.containers.get(&pid) {
            return c.clone();
        }
        let path = self.proc_root.join(pid.to_string()).join("cgroup");
        let id = std::fs::read_to_string(path).ok().and_then(|text| {
            text.lines()
                .filter_map(|l| l.splitn(3, ':').nth(2))
                .find_map(container_id_from_cgroup)
                .map(str::to_owned)
        });
        if self.containers.len() >= MAX_PROCESSES {
            self.containers.clear();
        }
        self.containers.insert(pid, id.clone());
        id
    }
}

impl Enricher for ProcessEnricher {
    fn enrich(&mut self, output: &mut Output) {
        let (pid, comm, resource) = match output {
            Output::Exchange(x) => (x.pid, &x.comm, &mut x.resource),
            Output::Tcp(t) => (t.pid, &t.comm, &mut t.resource),
        };
        resource.insert("process.pid", pid.to_string());
        resource.insert("process.executable.name", comm.to_string());
        if let Some(id) = self.container(pid) {
            resource.insert("container.id", id);
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
    path.rsplit('/').find_map(|segment| {
        let segment = segment.strip_suffix(".scope").unwrap_or(segment);
        let id = segment.rsplit(['-', ':']).next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
    })
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
        let mut e = ProcessEnricher::with_proc_root(&root);
        assert_eq!(e.container(42), Some(id));
        assert_eq!(e.container(43), None, "no such process");
        std::fs::remove_dir_all(root).unwrap();
    }
}
