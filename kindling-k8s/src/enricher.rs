//! The Kubernetes enricher: names the traced process's pod, workload,
//! container and node, as OpenTelemetry resource attributes
//! (`k8s.namespace.name`, `k8s.pod.name`, `k8s.deployment.name`, …), from
//! the store the watchers fill.
//!
//! The process is found by its pod UID (from its cgroup, which the
//! process enricher reads first) — the only way for a host-network pod,
//! whose address is its node's — and otherwise by its own end's address.

use std::sync::{Arc, PoisonError, RwLock};

use kindling_flow::enrich::Enricher;
use kindling_flow::{Output, Role};

use crate::store::{Entity, Pod, Store};
use crate::ProcessEnricher;

/// Process identity from procfs, then Kubernetes names from `store`.
///
/// # Examples
///
/// ```
/// use std::sync::{Arc, RwLock};
/// use kindling_k8s::store::Store;
/// use kindling_k8s::{KubernetesEnricher, ProcessEnricher};
///
/// let store = Arc::new(RwLock::new(Store::new(60_000_000_000)));
/// let enricher = KubernetesEnricher::new(ProcessEnricher::new(), store, "node-1");
/// # let _ = enricher;
/// ```
#[derive(Debug)]
pub struct KubernetesEnricher {
    process: ProcessEnricher,
    store: Arc<RwLock<Store>>,
    node: String,
}

impl KubernetesEnricher {
    /// Names processes on `node` from `store` (shared with its watchers).
    pub fn new(process: ProcessEnricher, store: Arc<RwLock<Store>>, node: &str) -> Self {
        Self {
            process,
            store,
            node: node.to_owned(),
        }
    }
}

impl Enricher for KubernetesEnricher {
    fn enrich(&mut self, output: &mut Output) {
        self.process.enrich(output);
        // the store's clock is Unix nanoseconds, as the outputs' `ts`: a
        // pod deleted before this output's time still names it for the
        // grace period
        let (local, ts, resource) = match output {
            Output::Exchange(x) => {
                let local = if x.role == Role::Server { x.dst } else { x.src };
                (local, x.ts, &mut x.resource)
            }
            Output::Tcp(t) => (t.src, t.ts, &mut t.resource),
        };
        let now = u64::try_from(ts).unwrap_or(0);
        let store = self.store.read().unwrap_or_else(PoisonError::into_inner);
        let by_uid = resource
            .get("k8s.pod.uid")
            .and_then(|uid| store.pod_by_uid(uid))
            .map(|p| &**p);
        let pod: Option<(&Pod, Option<usize>)> = match by_uid {
            Some(pod) => Some((pod, None)),
            None => match store.resolve(local, &self.node, now) {
                Entity::Pod { pod, container, .. } => Some((pod, container)),
                _ => None,
            },
        };
        let Some((pod, by_port)) = pod else {
            return;
        };
        // the container by the runtime's id, else by the port it declares
        let container = resource
            .get("container.id")
            .and_then(|id| {
                pod.containers
                    .iter()
                    .position(|c| c.id.as_deref() == Some(id.as_str()))
            })
            .or(by_port)
            .and_then(|i| pod.containers.get(i));
        let workload = store.workload(pod);
        resource.insert("k8s.namespace.name", pod.namespace.clone());
        resource.insert("k8s.pod.name", pod.name.clone());
        resource.insert("k8s.pod.uid", pod.uid.clone());
        resource.insert("k8s.node.name", pod.node.clone());
        resource.insert(workload.kind.otel_key(), workload.name.to_owned());
        if let Some(c) = container {
            resource.insert("k8s.container.name", c.name.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Container, Node, Owner};

    #[test]
    fn names_a_host_network_pod_by_its_cgroup_and_others_by_address() {
        let root = std::env::temp_dir().join(format!("kindling-k8s-enrich-{}", std::process::id()));
        let id = "cd".repeat(32);
        let uid = "5e0c2a4b-7f1d-4e3a-9b8c-6d5e4f3a2b1c";
        std::fs::create_dir_all(root.join("42")).unwrap();
        std::fs::write(
            root.join("42/cgroup"),
            format!(
                "0::/kubepods.slice/kubepods-pod{}.slice/cri-containerd-{id}.scope\n",
                uid.replace('-', "_")
            ),
        )
        .unwrap();
        let mut store = Store::new(0);
        store.upsert_node(Node {
            name: "n1".into(),
            ips: vec!["192.168.1.11".parse().unwrap()],
        });
        store.upsert_pod(Pod {
            uid: uid.into(),
            namespace: "monitoring".into(),
            name: "kindling-x1".into(),
            node: "n1".into(),
            ips: vec!["192.168.1.11".parse().unwrap()],
            host_network: true,
            owner: Some(Owner {
                kind: "DaemonSet".into(),
                name: "kindling".into(),
            }),
            containers: vec![
                Container {
                    name: "init".into(),
                    ..Default::default()
                },
                Container {
                    name: "agent".into(),
                    id: Some(id.clone()),
                    ..Default::default()
                },
            ],
        });
        store.upsert_pod(Pod {
            uid: "u-web".into(),
            namespace: "shop".into(),
            name: "web-1".into(),
            node: "n1".into(),
            ips: vec!["10.244.1.5".parse().unwrap()],
            containers: vec![Container {
                name: "app".into(),
                ports: vec![8080],
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut e = KubernetesEnricher::new(
            ProcessEnricher::with_proc_root(&root),
            Arc::new(RwLock::new(store)),
            "n1",
        );
        let tcp = |pid: u32, src: &str| {
            Output::Tcp(kindling_flow::TcpRecord {
                pid,
                ..kindling_flow::TcpRecord::new(
                    kindling_flow::TcpEventKind::Connect,
                    src.parse().unwrap(),
                    "10.96.0.1:443".parse().unwrap(),
                )
            })
        };
        // the agent: host network, so by its cgroup's pod UID and container id
        let mut agent = tcp(42, "192.168.1.11:40000");
        e.enrich(&mut agent);
        let Output::Tcp(t) = &agent else {
            unreachable!()
        };
        assert_eq!(t.resource["k8s.pod.name"], "kindling-x1");
        assert_eq!(t.resource["k8s.daemonset.name"], "kindling");
        assert_eq!(t.resource["k8s.container.name"], "agent");
        assert_eq!(t.resource["k8s.namespace.name"], "monitoring");
        // a process whose cgroup is unknown here: by its address
        let mut web = tcp(7, "10.244.1.5:8080");
        e.enrich(&mut web);
        let Output::Tcp(t) = &web else { unreachable!() };
        assert_eq!(t.resource["k8s.pod.name"], "web-1");
        assert_eq!(t.resource["k8s.container.name"], "app");
        assert_eq!(t.resource["k8s.pod.name"], "web-1");
        // a host process: no Kubernetes names
        let mut host = tcp(8, "192.168.1.11:50000");
        e.enrich(&mut host);
        let Output::Tcp(t) = &host else {
            unreachable!()
        };
        assert!(!t.resource.contains_key("k8s.pod.name"), "{:?}", t.resource);
        std::fs::remove_dir_all(root).unwrap();
    }
}
