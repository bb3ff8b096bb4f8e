//! The Kubernetes enricher: names the traced process's pod, workload,
//! container and node, as OpenTelemetry resource attributes
//! (`k8s.namespace.name`, `k8s.pod.name`, `k8s.deployment.name`, …), from
//! the store the watchers fill.
//!
//! The process is found by its pod UID (from its cgroup, which the
//! process enricher reads first) — the only way for a host-network pod,
//! whose address is its node's — and otherwise by its own end's address.

use std::net::SocketAddr;
use std::sync::{Arc, PoisonError, RwLock};

use rustc_hash::FxHashMap;

use kindling_flow::enrich::Enricher;
use kindling_flow::{Output, Role};

use crate::store::{Container, Entity, Store};
use crate::ProcessEnricher;

/// Finds the address a TCP connection was translated to (a ClusterIP's
/// backend): [`crate::conntrack::Conntrack`] on a node, a table in tests.
pub trait Translations: Send {
    /// The destination `dst` of the TCP connection `src` → `dst` was
    /// translated to, when it was (`None`: not translated, or unknown).
    fn translated(&mut self, src: SocketAddr, dst: SocketAddr) -> Option<SocketAddr>;
}

/// Most connections whose translation is remembered (then forgotten all at
/// once: a lookup is cheap, the memo only spares repeats).
const MEMO_CAP: usize = 4096;

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
    /// Reads this host's procfs; none when replaying another's recording.
    process: Option<ProcessEnricher>,
    store: Arc<RwLock<Store>>,
    node: String,
    translations: Option<Box<dyn Translations>>,
    /// (client, service address) → backend.
    memo: FxHashMap<(SocketAddr, SocketAddr), Option<SocketAddr>>,
}

impl std::fmt::Debug for dyn Translations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Translations")
    }
}

impl KubernetesEnricher {
    /// Names processes on `node` from `store` (shared with its watchers).
    pub fn new(process: ProcessEnricher, store: Arc<RwLock<Store>>, node: &str) -> Self {
        Self {
            process: Some(process),
            store,
            node: node.to_owned(),
            translations: None,
            memo: FxHashMap::default(),
        }
    }

    /// Names by `store` alone, reading nothing of this host: for a replay
    /// of a recording made elsewhere, with the metadata saved with it.
    pub fn offline(store: Store, node: &str) -> Self {
        Self {
            process: None,
            ..Self::new(ProcessEnricher::new(), Arc::new(RwLock::new(store)), node)
        }
    }

    /// Names the backend pod of a connection to a service address, found
    /// in `translations` (conntrack), along with the service.
    #[must_use]
    pub fn with_translations(mut self, translations: Box<dyn Translations>) -> Self {
        self.translations = Some(translations);
        self
    }

    /// The backend of the connection `client` → `service`, remembered.
    fn backend(&mut self, client: SocketAddr, service: SocketAddr) -> Option<SocketAddr> {
        let t = self.translations.as_mut()?;
        if self.memo.len() >= MEMO_CAP {
            self.memo.clear();
        }
        *self
            .memo
            .entry((client, service))
            .or_insert_with(|| t.translated(client, service))
    }
}

/// The metric labels of Kubernetes names, as (label, attribute key) pairs
/// for [`kindling_flow::MetricsConfig::identity`]: on entity series
/// `namespace`, `workload_kind`, …; on topology series `src_namespace`, …,
/// `dst_node`.
pub const METRIC_LABELS: &[(&str, &str)] = &[
    ("namespace", "k8s.namespace.name"),
    ("workload_kind", WORKLOAD_KIND),
    ("workload_name", WORKLOAD_NAME),
    ("service", "k8s.service.name"),
    ("pod", "k8s.pod.name"),
    ("container", "k8s.container.name"),
    ("node", "k8s.node.name"),
];

/// The attribute naming a pod's workload kind (`deployment`, …): no
/// OpenTelemetry convention has one key for every kind.
pub const WORKLOAD_KIND: &str = "kindling.k8s.workload.kind";
/// The attribute naming a pod's workload (alongside the convention's
/// `k8s.deployment.name` and the like).
pub const WORKLOAD_NAME: &str = "kindling.k8s.workload.name";

type Attributes = std::collections::BTreeMap<&'static str, String>;

/// Writes what `entity` names into `to`. An address no object has is
/// named by its namespace alone, `NOT_FOUND_INTERNAL` or
/// `NOT_FOUND_EXTERNAL`, as Kindling's metrics have it.
fn name(entity: Entity<'_>, container: Option<&Container>, to: &mut Attributes) {
    match entity {
        Entity::Pod {
            pod,
            container: by_port,
            workload,
            service,
        } => {
            to.insert("k8s.namespace.name", pod.namespace.clone());
            to.insert("k8s.pod.name", pod.name.clone());
            to.insert("k8s.pod.uid", pod.uid.clone());
            to.insert("k8s.node.name", pod.node.clone());
            to.insert(workload.kind.otel_key(), workload.name.to_owned());
            to.insert(WORKLOAD_KIND, workload.kind.as_str().to_owned());
            to.insert(WORKLOAD_NAME, workload.name.to_owned());
            if let Some(s) = service {
                to.insert("k8s.service.name", s.name.clone());
            }
            let container = container.or_else(|| by_port.and_then(|i| pod.containers.get(i)));
            if let Some(c) = container {
                to.insert("k8s.container.name", c.name.clone());
            }
        }
        Entity::Service(s) => {
            to.insert("k8s.namespace.name", s.namespace.clone());
            to.insert("k8s.service.name", s.name.clone());
        }
        Entity::Node(n) => {
            to.insert("k8s.node.name", n.name.clone());
        }
        Entity::NotFoundInternal | Entity::External => {
            to.insert("k8s.namespace.name", entity.labels()[0].to_owned());
        }
    }
}

impl Enricher for KubernetesEnricher {
    fn enrich(&mut self, output: &mut Output) {
        if let Some(p) = &mut self.process {
            p.enrich(output);
        }
        // the store's clock is Unix nanoseconds, as the outputs' `ts`: a
        // pod deleted before this output's time still names it for the
        // grace period
        let (local, remote, ts, client) = match output {
            Output::Exchange(x) => {
                let server = x.role == Role::Server;
                let (local, remote) = if server {
                    (x.dst, x.src)
                } else {
                    (x.src, x.dst)
                };
                (local, remote, x.ts, !server)
            }
            // this host's end first, the connecting one for a connect
            Output::Tcp(t) => (t.src, t.dst, t.ts, true),
        };
        let (resource, peer) = match output {
            Output::Exchange(x) => (&mut x.resource, &mut x.peer),
            Output::Tcp(t) => (&mut t.resource, &mut t.peer),
        };
        // a client of a service address: its backend, from conntrack
        // (looked up before the store is locked)
        let service_backend = if client {
            let is_service = matches!(
                self.store
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .resolve(remote, &self.node, u64::try_from(ts).unwrap_or(0)),
                Entity::Service(_)
            );
            is_service.then(|| self.backend(local, remote)).flatten()
        } else {
            None
        };
        let now = u64::try_from(ts).unwrap_or(0);
        let store = self.store.read().unwrap_or_else(PoisonError::into_inner);
        // this end: by the pod UID of its cgroup (the only way for a
        // host-network pod, whose address is its node's), else by address
        let by_uid = resource
            .get("k8s.pod.uid")
            .and_then(|uid| store.pod_by_uid(uid))
            .map(|p| &**p);
        let this = match by_uid {
            Some(pod) => Some(store.pod_entity(pod, local.port())),
            None => match store.resolve(local, &self.node, now) {
                e @ Entity::Pod { .. } => Some(e),
                _ => None,
            },
        };
        if let Some(e @ Entity::Pod { pod, .. }) = this {
            // the container by the runtime's id, before the one declaring the port
            let container = resource.get("container.id").and_then(|id| {
                pod.containers
                    .iter()
                    .find(|c| c.id.as_deref() == Some(id.as_str()))
            });
            name(e, container, resource);
        }
        let remote_entity = store.resolve(remote, &self.node, now);
        let behind = match (remote_entity, service_backend) {
            (Entity::Service(service), Some(backend)) => {
                match store.resolve(backend, &self.node, now) {
                    Entity::Pod {
                        pod,
                        container,
                        workload,
                        ..
                    } => Some(Entity::Pod {
                        pod,
                        container,
                        workload,
                        service: Some(service),
                    }),
                    _ => None,
                }
            }
            _ => None,
        };
        name(behind.unwrap_or(remote_entity), None, peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Node, Owner, Pod};

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
        assert_eq!(t.resource[WORKLOAD_KIND], "daemonset");
        // the peer: an address in no object, outside the cluster's ranges
        assert_eq!(t.peer["k8s.namespace.name"], "NOT_FOUND_EXTERNAL");
        assert_eq!(t.peer.len(), 1, "{:?}", t.peer);
        // a process whose cgroup is unknown here: by its address
        let mut web = tcp(7, "10.244.1.5:8080");
        e.enrich(&mut web);
        let Output::Tcp(t) = &web else { unreachable!() };
        assert_eq!(t.resource["k8s.pod.name"], "web-1");
        assert_eq!(t.resource["k8s.container.name"], "app");
        assert_eq!(t.resource[WORKLOAD_KIND], "pod");
        // a client calling a pod: the peer's names
        let mut call = tcp(7, "10.244.1.5:41000");
        if let Output::Tcp(t) = &mut call {
            t.dst = "192.168.1.11:22".parse().unwrap();
        }
        e.enrich(&mut call);
        let Output::Tcp(t) = &call else {
            unreachable!()
        };
        assert_eq!(t.peer["k8s.node.name"], "n1");
        assert!(!t.peer.contains_key("k8s.pod.name"));
        // a host process: no Kubernetes names
        let mut host = tcp(8, "192.168.1.11:50000");
        e.enrich(&mut host);
        let Output::Tcp(t) = &host else {
            unreachable!()
        };
        assert!(!t.resource.contains_key("k8s.pod.name"), "{:?}", t.resource);
        std::fs::remove_dir_all(root).unwrap();
    }

    struct Table(
        Vec<((SocketAddr, SocketAddr), SocketAddr)>,
        Arc<std::sync::atomic::AtomicUsize>,
    );

    impl Translations for Table {
        fn translated(&mut self, src: SocketAddr, dst: SocketAddr) -> Option<SocketAddr> {
            self.1.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.0
                .iter()
                .find(|(k, _)| *k == (src, dst))
                .map(|(_, v)| *v)
        }
    }

    #[test]
    fn a_service_address_is_named_by_its_backend_pod_from_conntrack() {
        use crate::store::Service;
        let mut store = Store::new(0);
        store.upsert_pod(Pod {
            uid: "u-redis".into(),
            namespace: "shop".into(),
            name: "redis-0".into(),
            node: "n1".into(),
            ips: vec!["10.244.1.6".parse().unwrap()],
            owner: Some(Owner {
                kind: "StatefulSet".into(),
                name: "redis".into(),
            }),
            ..Default::default()
        });
        store.upsert_service(Service {
            namespace: "shop".into(),
            name: "cache".into(),
            cluster_ips: vec!["10.96.0.10".parse().unwrap()],
            ports: vec![6379],
            ..Default::default()
        });
        let (client, service) = (
            "10.244.1.5:41000".parse().unwrap(),
            "10.96.0.10:6379".parse().unwrap(),
        );
        let lookups = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let table = Table(
            vec![((client, service), "10.244.1.6:6379".parse().unwrap())],
            Arc::clone(&lookups),
        );
        let mut e = KubernetesEnricher::new(
            ProcessEnricher::with_proc_root("/nonexistent"),
            Arc::new(RwLock::new(store)),
            "n1",
        )
        .with_translations(Box::new(table));
        let x = || {
            Output::Exchange(kindling_flow::Exchange::new(
                kindling_flow::ProtocolId::Redis,
                Role::Client,
                client,
                service,
            ))
        };
        for _ in 0..3 {
            let mut out = x();
            e.enrich(&mut out);
            let Output::Exchange(x) = &out else {
                unreachable!()
            };
            assert_eq!(x.peer["k8s.pod.name"], "redis-0");
            assert_eq!(x.peer["k8s.service.name"], "cache");
            assert_eq!(x.peer[WORKLOAD_NAME], "redis");
        }
        // one lookup, then the memo
        assert_eq!(lookups.load(std::sync::atomic::Ordering::Relaxed), 1);
        // a connection conntrack does not know: the service alone
        let mut other = Output::Exchange(kindling_flow::Exchange::new(
            kindling_flow::ProtocolId::Redis,
            Role::Client,
            "10.244.1.5:41001".parse().unwrap(),
            service,
        ));
        e.enrich(&mut other);
        let Output::Exchange(x) = &other else {
            unreachable!()
        };
        assert_eq!(x.peer["k8s.service.name"], "cache");
        assert!(!x.peer.contains_key("k8s.pod.name"));
    }
}
