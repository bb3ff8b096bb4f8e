//! The cluster's metadata as the resolver needs it — pods, services, nodes,
//! and the ReplicaSets and Jobs that lead from a pod to its workload — and
//! the resolution of an address into the Kubernetes entity behind it.
//!
//! Watchers fill the store; resolution is a pure function of it, so every
//! rule tests without a cluster. Deleted objects stay resolvable for a
//! grace period (events about a connection can arrive after its pod is
//! gone), but a live object always wins over a deleted one with the same
//! address (pod IPs are reused).

use std::collections::HashMap as StdHashMap;

/// Fx hashing: the keys are addresses, ports and names from the API
/// server, looked up for every exchange; no input inserts keys a peer
/// chooses (lookups of arbitrary addresses only miss).
type HashMap<K, V> = StdHashMap<K, V, rustc_hash::FxBuildHasher>;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// What runs a pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WorkloadKind {
    /// Through a ReplicaSet it owns.
    Deployment,
    /// A ReplicaSet no Deployment owns.
    ReplicaSet,
    /// Itself.
    StatefulSet,
    /// Itself.
    DaemonSet,
    /// Through a Job it owns.
    CronJob,
    /// A Job no CronJob owns.
    Job,
    /// Nothing: a bare pod (or one owned by a kind this crate does not
    /// follow), named by itself.
    Pod,
}

impl WorkloadKind {
    /// Its name in metric labels (`workload_kind`).
    pub const fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "deployment",
            WorkloadKind::ReplicaSet => "replicaset",
            WorkloadKind::StatefulSet => "statefulset",
            WorkloadKind::DaemonSet => "daemonset",
            WorkloadKind::CronJob => "cronjob",
            WorkloadKind::Job => "job",
            WorkloadKind::Pod => "pod",
        }
    }

    /// The OpenTelemetry resource attribute naming a workload of this kind
    /// (`k8s.deployment.name`, …).
    pub const fn otel_key(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "k8s.deployment.name",
            WorkloadKind::ReplicaSet => "k8s.replicaset.name",
            WorkloadKind::StatefulSet => "k8s.statefulset.name",
            WorkloadKind::DaemonSet => "k8s.daemonset.name",
            WorkloadKind::CronJob => "k8s.cronjob.name",
            WorkloadKind::Job => "k8s.job.name",
            WorkloadKind::Pod => "k8s.pod.name",
        }
    }
}

/// An object's controller, from its `ownerReferences`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Owner {
    /// `ReplicaSet`, `StatefulSet`, `DaemonSet`, `Job`, `Deployment`,
    /// `CronJob`, …
    pub kind: String,
    /// Its name (same namespace).
    pub name: String,
}

/// One container of a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Container {
    /// Its name in the pod spec.
    pub name: String,
    /// The runtime's id (64 hex digits, the `containerd://` prefix gone),
    /// once the pod status reports it.
    pub id: Option<String>,
    /// Declared `containerPort`s.
    pub ports: Vec<u16>,
    /// Declared `hostPort`s (reachable at the node's address).
    pub host_ports: Vec<u16>,
}

/// A pod, as resolution needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pod {
    /// `metadata.uid`.
    pub uid: String,
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.nodeName`.
    pub node: String,
    /// `status.podIPs` (the node's when `host_network`).
    pub ips: Vec<IpAddr>,
    /// `spec.hostNetwork`: the pod shares its node's addresses.
    pub host_network: bool,
    /// Its controller.
    pub owner: Option<Owner>,
    /// Its containers.
    pub containers: Vec<Container>,
}

/// A service, as resolution needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Service {
    /// `metadata.namespace`.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
    /// `spec.clusterIPs` (none for a headless service).
    pub cluster_ips: Vec<IpAddr>,
    /// `spec.ports[].port`.
    pub ports: Vec<u16>,
    /// `spec.ports[].nodePort`, reachable at every node's address.
    pub node_ports: Vec<u16>,
    /// Endpoints (from EndpointSlices): the pods behind it, by UID.
    pub backends: Vec<String>,
    /// The ports its endpoints serve on (from EndpointSlices): which of a
    /// pod's services a call to one of its ports belongs to.
    #[serde(default)]
    pub target_ports: Vec<u16>,
}

/// A node.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Node {
    /// `metadata.name`.
    pub name: String,
    /// `status.addresses` of type InternalIP and ExternalIP.
    pub ips: Vec<IpAddr>,
}

/// The workload a pod belongs to (borrowed from the store).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Workload<'a> {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its name.
    pub name: &'a str,
}

/// What an address resolved to, borrowed from the store: resolving
/// allocates nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity<'a> {
    /// A pod (and the container whose port it is, when one declares it).
    Pod {
        /// The pod.
        pod: &'a Pod,
        /// Index into `pod.containers`.
        container: Option<usize>,
        /// The workload it belongs to.
        workload: Workload<'a>,
        /// A service that selects it, when one is known.
        service: Option<&'a Service>,
    },
    /// A service's virtual address (ClusterIP:port or NodeIP:NodePort):
    /// the translated backend is known only from conntrack.
    Service(&'a Service),
    /// A node's own address (no pod declares the port).
    Node(&'a Node),
    /// An address in no known object, inside the cluster's ranges.
    NotFoundInternal,
    /// An address outside the cluster.
    External,
}

impl Entity<'_> {
    /// The labels metrics carry for it, in the order of `LABELS`:
    /// namespace, workload kind, workload name, service, pod, container,
    /// node. `NOT_FOUND_INTERNAL` / `NOT_FOUND_EXTERNAL` where nothing
    /// matched.
    pub fn labels(&self) -> [&str; 7] {
        match self {
            Entity::Pod {
                pod,
                container,
                workload,
                service,
            } => [
                &pod.namespace,
                workload.kind.as_str(),
                workload.name,
                service.map_or("", |s| s.name.as_str()),
                &pod.name,
                container
                    .and_then(|i| pod.containers.get(i))
                    .map_or("", |c| c.name.as_str()),
                &pod.node,
            ],
            Entity::Service(s) => [&s.namespace, "", "", &s.name, "", "", ""],
            Entity::Node(n) => ["", "", "", "", "", "", &n.name],
            Entity::NotFoundInternal => [NOT_FOUND_INTERNAL, "", "", "", "", "", ""],
            Entity::External => [NOT_FOUND_EXTERNAL, "", "", "", "", "", ""],
        }
    }
}

/// Label names of [`Entity::labels`] (topology series prefix them with
/// `src_` and `dst_`).
pub const LABELS: [&str; 7] = [
    "namespace",
    "workload_kind",
    "workload_name",
    "service",
    "pod",
    "container",
    "node",
];

/// The namespace label of an in-cluster address no object has.
pub const NOT_FOUND_INTERNAL: &str = "NOT_FOUND_INTERNAL";

/// The namespace label of an address outside the cluster.
pub const NOT_FOUND_EXTERNAL: &str = "NOT_FOUND_EXTERNAL";

/// An object and, once deleted, until when it stays resolvable.
#[derive(Debug)]
struct Entry<T> {
    object: Arc<T>,
    /// Deleted at this time plus the grace period (nanoseconds, the
    /// caller's clock: Unix nanoseconds, as exchanges' `ts`); `None`
    /// while live.
    expires: Option<u64>,
}

impl<T> Entry<T> {
    fn usable(&self, now: u64) -> bool {
        self.expires.is_none_or(|e| now < e)
    }
}

/// Entries found by one key: the live one first.
type Candidates<T> = Vec<Entry<T>>;

fn best<T>(c: Option<&Candidates<T>>, now: u64) -> Option<&Arc<T>> {
    let c = c?;
    c.iter()
        .find(|e| e.expires.is_none())
        .or_else(|| c.iter().filter(|e| e.usable(now)).max_by_key(|e| e.expires))
        .map(|e| &e.object)
}

/// What a [`Store`] holds, in a form to save and load (JSON with serde):
/// the metadata a recording was made with.
///
/// # Examples
///
/// ```
/// use kindling_k8s::store::{Node, Store};
///
/// let mut store = Store::new(0);
/// store.upsert_node(Node { name: "n1".into(), ips: vec!["192.168.1.11".parse()?] });
/// let saved = serde_json::to_string(&store.snapshot())?;
/// let loaded = Store::from_snapshot(serde_json::from_str(&saved)?, 0);
/// assert_eq!(loaded.snapshot(), store.snapshot());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Snapshot {
    /// Live pods.
    pub pods: Vec<Pod>,
    /// Deleted pods, with the time (Unix ns) until which they resolve.
    pub deleted_pods: Vec<(Pod, u64)>,
    /// Services, with their backends.
    pub services: Vec<Service>,
    /// Nodes.
    pub nodes: Vec<Node>,
    /// (namespace, ReplicaSet or Job name, its owner).
    pub owners: Vec<(String, String, Owner)>,
    /// The cluster's address ranges.
    pub cluster_ranges: Vec<(IpAddr, u8)>,
}

/// The cluster's metadata, indexed for resolution.
///
/// # Examples
///
/// ```
/// use kindling_k8s::store::{Container, Entity, Node, Owner, Pod, Store};
///
/// let mut store = Store::new(60_000_000_000);
/// store.upsert_node(Node { name: "n1".into(), ips: vec!["192.168.1.11".parse()?] });
/// store.set_owner("shop", "web-5d8f", Some(Owner { kind: "Deployment".into(), name: "web".into() }));
/// store.upsert_pod(Pod {
///     uid: "u1".into(),
///     namespace: "shop".into(),
///     name: "web-5d8f-x2x".into(),
///     node: "n1".into(),
///     ips: vec!["10.244.1.5".parse()?],
///     owner: Some(Owner { kind: "ReplicaSet".into(), name: "web-5d8f".into() }),
///     containers: vec![Container { name: "app".into(), ports: vec![8080], ..Default::default() }],
///     ..Default::default()
/// });
/// let who = store.resolve("10.244.1.5:8080".parse()?, "n1", 0);
/// assert_eq!(who.labels(), ["shop", "deployment", "web", "", "web-5d8f-x2x", "app", "n1"]);
/// assert!(matches!(store.resolve("192.168.1.11:22".parse()?, "n1", 0), Entity::Node(_)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct Store {
    /// How long a deleted object stays resolvable, nanoseconds.
    grace_ns: u64,
    pods: HashMap<String, Arc<Pod>>,
    deleted_pods: HashMap<String, (Arc<Pod>, u64)>,
    /// Pod IP → pods (not host-network ones).
    pod_ips: HashMap<IpAddr, Candidates<Pod>>,
    /// (node name, port) → host-network pods declaring the port, and pods
    /// declaring a hostPort.
    host_ports: HashMap<String, HashMap<u16, Candidates<Pod>>>,
    services: HashMap<(String, String), Arc<Service>>,
    /// (cluster IP, port) → services.
    cluster_ips: HashMap<(IpAddr, u16), Candidates<Service>>,
    /// Node port → services.
    node_ports: HashMap<u16, Candidates<Service>>,
    /// Pod UID → a service selecting it.
    service_of_pod: HashMap<String, Vec<Arc<Service>>>,
    nodes: HashMap<String, Arc<Node>>,
    node_ips: HashMap<IpAddr, Candidates<Node>>,
    /// Namespace → ReplicaSet or Job name → its owner.
    owners: HashMap<String, HashMap<String, Owner>>,
    /// The cluster's pod and service ranges: an address inside them that
    /// no object has is `NotFoundInternal`.
    cluster_ranges: Vec<(IpAddr, u8)>,
}

impl Store {
    /// An empty store keeping deleted objects for `grace_ns`.
    pub fn new(grace_ns: u64) -> Self {
        Self {
            grace_ns,
            ..Self::default()
        }
    }

    /// Addresses in these CIDRs (`10.244.0.0`, 16) are the cluster's.
    pub fn set_cluster_ranges(&mut self, ranges: Vec<(IpAddr, u8)>) {
        self.cluster_ranges = ranges;
    }

    /// Adds or replaces a ReplicaSet's or Job's owner.
    pub fn set_owner(&mut self, namespace: &str, name: &str, owner: Option<Owner>) {
        match owner {
            Some(o) => {
                self.owners
                    .entry(namespace.to_owned())
                    .or_default()
                    .insert(name.to_owned(), o);
            }
            None => {
                if let Some(names) = self.owners.get_mut(namespace) {
                    names.remove(name);
                    if names.is_empty() {
                        self.owners.remove(namespace);
                    }
                }
            }
        }
    }

    /// Adds or replaces a pod.
    pub fn upsert_pod(&mut self, pod: Pod) {
        if let Some(old) = self.pods.remove(&pod.uid) {
            self.unindex(&old);
        }
        if let Some((old, _)) = self.deleted_pods.remove(&pod.uid) {
            self.unindex(&old);
        }
        let pod = Arc::new(pod);
        self.index_pod(&pod, None);
        self.pods.insert(pod.uid.clone(), pod);
    }

    /// Removes a pod; it stays resolvable for the grace period after `now`.
    pub fn delete_pod(&mut self, uid: &str, now: u64) {
        let Some(pod) = self.pods.remove(uid) else {
            return;
        };
        let expires = now.saturating_add(self.grace_ns);
        self.unindex(&pod);
        self.index_pod(&pod, Some(expires));
        self.deleted_pods.insert(uid.to_owned(), (pod, expires));
    }

    /// The keys a pod is found by: its own addresses (not a host-network
    /// pod's: they are its node's), and (node, port) for the ports it
    /// serves at its node's addresses.
    fn pod_keys(pod: &Pod) -> (Vec<IpAddr>, Vec<(String, u16)>) {
        let mut host = Vec::new();
        for c in &pod.containers {
            // a host-network pod serves its container ports at the node's
            // addresses too
            let own: &[u16] = if pod.host_network { &c.ports } else { &[] };
            let at_node = c.host_ports.iter().chain(own);
            host.extend(at_node.map(|port| (pod.node.clone(), *port)));
        }
        let ips = if pod.host_network {
            Vec::new()
        } else {
            pod.ips.clone()
        };
        (ips, host)
    }

    fn index_pod(&mut self, pod: &Arc<Pod>, expires: Option<u64>) {
        let (ips, host) = Self::pod_keys(pod);
        for ip in ips {
            self.pod_ips.entry(ip).or_default().push(Entry {
                object: Arc::clone(pod),
                expires,
            });
        }
        for (node, port) in host {
            self.host_ports
                .entry(node)
                .or_default()
                .entry(port)
                .or_default()
                .push(Entry {
                    object: Arc::clone(pod),
                    expires,
                });
        }
    }

    fn unindex(&mut self, pod: &Arc<Pod>) {
        let (ips, host) = Self::pod_keys(pod);
        for ip in ips {
            remove_from(&mut self.pod_ips, &ip, pod);
        }
        for (node, port) in host {
            if let Some(ports) = self.host_ports.get_mut(&node) {
                remove_from(ports, &port, pod);
                if ports.is_empty() {
                    self.host_ports.remove(&node);
                }
            }
        }
    }

    /// Adds or replaces a service.
    pub fn upsert_service(&mut self, service: Service) {
        let key = (service.namespace.clone(), service.name.clone());
        if let Some(old) = self.services.remove(&key) {
            self.unindex_service(&old);
        }
        let s = Arc::new(service);
        for ip in &s.cluster_ips {
            for port in &s.ports {
                self.cluster_ips
                    .entry((*ip, *port))
                    .or_default()
                    .push(Entry {
                        object: Arc::clone(&s),
                        expires: None,
                    });
            }
        }
        for port in &s.node_ports {
            self.node_ports.entry(*port).or_default().push(Entry {
                object: Arc::clone(&s),
                expires: None,
            });
        }
        for uid in &s.backends {
            self.service_of_pod
                .entry(uid.clone())
                .or_default()
                .push(Arc::clone(&s));
        }
        self.services.insert(key, s);
    }

    /// Removes a service.
    pub fn delete_service(&mut self, namespace: &str, name: &str) {
        if let Some(old) = self
            .services
            .remove(&(namespace.to_owned(), name.to_owned()))
        {
            self.unindex_service(&old);
        }
    }

    fn unindex_service(&mut self, s: &Arc<Service>) {
        for ip in &s.cluster_ips {
            for port in &s.ports {
                remove_from(&mut self.cluster_ips, &(*ip, *port), s);
            }
        }
        for port in &s.node_ports {
            remove_from(&mut self.node_ports, port, s);
        }
        self.service_of_pod.retain(|_, services| {
            services.retain(|v| !Arc::ptr_eq(v, s));
            !services.is_empty()
        });
    }

    /// Adds or replaces a node.
    pub fn upsert_node(&mut self, node: Node) {
        if let Some(old) = self.nodes.remove(&node.name) {
            for ip in &old.ips {
                remove_from(&mut self.node_ips, ip, &old);
            }
        }
        let n = Arc::new(node);
        for ip in &n.ips {
            self.node_ips.entry(*ip).or_default().push(Entry {
                object: Arc::clone(&n),
                expires: None,
            });
        }
        self.nodes.insert(n.name.clone(), n);
    }

    /// Removes a node.
    pub fn delete_node(&mut self, name: &str) {
        if let Some(old) = self.nodes.remove(name) {
            for ip in &old.ips {
                remove_from(&mut self.node_ips, ip, &old);
            }
        }
    }

    /// Forgets deleted objects whose grace period is over.
    pub fn expire(&mut self, now: u64) {
        self.deleted_pods.retain(|_, (_, until)| now < *until);
        let usable = |c: &mut Candidates<Pod>| {
            c.retain(|e| e.usable(now));
            !c.is_empty()
        };
        self.pod_ips.retain(|_, c| usable(c));
        self.host_ports.retain(|_, ports| {
            ports.retain(|_, c| usable(c));
            !ports.is_empty()
        });
    }

    /// Pods known, live and deleted-but-resolvable.
    pub fn pod_count(&self) -> usize {
        self.pods.len() + self.deleted_pods.len()
    }

    /// The workload of a pod: its controller, followed through a
    /// ReplicaSet to its Deployment and through a Job to its CronJob.
    pub fn workload<'a>(&'a self, pod: &'a Pod) -> Workload<'a> {
        let Some(owner) = &pod.owner else {
            return Workload {
                kind: WorkloadKind::Pod,
                name: &pod.name,
            };
        };
        let up = self
            .owners
            .get(&pod.namespace)
            .and_then(|names| names.get(&owner.name))
            .filter(|_| matches!(owner.kind.as_str(), "ReplicaSet" | "Job"));
        let (kind, name) = match (owner.kind.as_str(), up) {
            ("ReplicaSet", Some(o)) if o.kind == "Deployment" => {
                (WorkloadKind::Deployment, &o.name)
            }
            ("Job", Some(o)) if o.kind == "CronJob" => (WorkloadKind::CronJob, &o.name),
            ("ReplicaSet", _) => (WorkloadKind::ReplicaSet, &owner.name),
            ("Job", _) => (WorkloadKind::Job, &owner.name),
            ("StatefulSet", _) => (WorkloadKind::StatefulSet, &owner.name),
            ("DaemonSet", _) => (WorkloadKind::DaemonSet, &owner.name),
            _ => (WorkloadKind::Pod, &pod.name),
        };
        Workload { kind, name }
    }

    /// The entity behind `addr`, in the original Kindling's order:
    /// ClusterIP:port, NodeIP:NodePort → service; pod IP → pod (and the
    /// container declaring the port); a node address with a port a
    /// host-network pod or a hostPort declares → that pod; a node address
    /// → node; loopback → `local_node`; anything else → not found, inside
    /// or outside the cluster's ranges. `now` is the caller's clock, for
    /// the grace period of deleted objects.
    pub fn resolve(&self, addr: SocketAddr, local_node: &str, now: u64) -> Entity<'_> {
        let (ip, port) = (addr.ip(), addr.port());
        if let Some(s) = best(self.cluster_ips.get(&(ip, port)), now) {
            return Entity::Service(s);
        }
        if let Some(pod) = best(self.pod_ips.get(&ip), now) {
            return self.pod_entity(pod, port);
        }
        // a node's address: loopback is the local node's
        let node = best(self.node_ips.get(&ip), now).or_else(|| {
            ip.is_loopback()
                .then(|| self.nodes.get(local_node))
                .flatten()
        });
        if let Some(node) = node {
            if let Some(s) = best(self.node_ports.get(&port), now) {
                return Entity::Service(s);
            }
            let on_node = self.host_ports.get(node.name.as_str());
            if let Some(pod) = best(on_node.and_then(|p| p.get(&port)), now) {
                return self.pod_entity(pod, port);
            }
            return Entity::Node(node);
        }
        if self
            .cluster_ranges
            .iter()
            .any(|&(net, bits)| in_range(ip, net, bits))
        {
            Entity::NotFoundInternal
        } else {
            Entity::External
        }
    }

    /// A pod as an entity, with the container declaring `port`.
    pub fn pod_entity<'a>(&'a self, pod: &'a Pod, port: u16) -> Entity<'a> {
        let container = pod
            .containers
            .iter()
            .position(|c| c.ports.contains(&port) || c.host_ports.contains(&port))
            .or((pod.containers.len() == 1).then_some(0));
        Entity::Pod {
            pod,
            container,
            workload: self.workload(pod),
            service: self.service_of_port(&pod.uid, port),
        }
    }

    /// Everything the store holds (deleted pods still in their grace
    /// period included), to save with a recording.
    pub fn snapshot(&self) -> Snapshot {
        let mut owners = Vec::new();
        for (namespace, names) in &self.owners {
            for (name, owner) in names {
                owners.push((namespace.clone(), name.clone(), owner.clone()));
            }
        }
        owners.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut pods: Vec<Pod> = self.pods.values().map(|p| (**p).clone()).collect();
        pods.sort_by(|a, b| a.uid.cmp(&b.uid));
        let mut deleted: Vec<(Pod, u64)> = self
            .deleted_pods
            .values()
            .map(|(p, until)| ((**p).clone(), *until))
            .collect();
        deleted.sort_by(|a, b| a.0.uid.cmp(&b.0.uid));
        let mut services: Vec<Service> = self.services.values().map(|s| (**s).clone()).collect();
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        let mut nodes: Vec<Node> = self.nodes.values().map(|n| (**n).clone()).collect();
        nodes.sort_by(|a, b| a.name.cmp(&b.name));
        Snapshot {
            pods,
            deleted_pods: deleted,
            services,
            nodes,
            owners,
            cluster_ranges: self.cluster_ranges.clone(),
        }
    }

    /// A store holding what `snapshot` saved; a pod deleted in it stays
    /// resolvable until the time it was due to expire.
    pub fn from_snapshot(snapshot: Snapshot, grace_ns: u64) -> Self {
        let mut store = Self::new(grace_ns);
        store.set_cluster_ranges(snapshot.cluster_ranges);
        for (namespace, name, owner) in snapshot.owners {
            store.set_owner(&namespace, &name, Some(owner));
        }
        for node in snapshot.nodes {
            store.upsert_node(node);
        }
        for service in snapshot.services {
            store.upsert_service(service);
        }
        for (pod, until) in snapshot.deleted_pods {
            let uid = pod.uid.clone();
            store.upsert_pod(pod);
            // deleted so that it expires when it would have
            store.delete_pod(&uid, until.saturating_sub(grace_ns));
        }
        for pod in snapshot.pods {
            store.upsert_pod(pod);
        }
        store
    }

    /// `kindling_k8s_workload_info` in Prometheus text: one series per
    /// live pod on `node`, naming its namespace, workload and pod (the
    /// names a dashboard joins on).
    pub fn encode_workload_info(&self, node: &str) -> String {
        use kindling_flow::metrics::escape_label_value as escape;
        use std::fmt::Write as _;
        let mut out = String::from(
            "# HELP kindling_k8s_workload_info The workload of each pod on this node\n\
             # TYPE kindling_k8s_workload_info gauge\n",
        );
        let mut pods: Vec<&Arc<Pod>> = self.pods.values().filter(|p| p.node == node).collect();
        pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        for pod in pods {
            let w = self.workload(pod);
            let _ = writeln!(
                out,
                "kindling_k8s_workload_info{{namespace=\"{}\",workload_kind=\"{}\",workload_name=\"{}\",pod=\"{}\"}} 1",
                escape(&pod.namespace),
                w.kind.as_str(),
                escape(w.name),
                escape(&pod.name)
            );
        }
        out
    }

    /// The service a call to `port` of pod `uid` belongs to: the one whose
    /// endpoints serve that port, else any that selects the pod.
    fn service_of_port(&self, uid: &str, port: u16) -> Option<&Service> {
        let services = self.service_of_pod.get(uid)?;
        services
            .iter()
            .find(|s| s.target_ports.contains(&port))
            .or_else(|| services.first())
            .map(|s| &**s)
    }

    /// The pod a local process runs in, by its pod UID (from its cgroup):
    /// how a host-network pod's own sockets are named.
    pub fn pod_by_uid(&self, uid: &str) -> Option<&Arc<Pod>> {
        self.pods
            .get(uid)
            .or_else(|| self.deleted_pods.get(uid).map(|(p, _)| p))
    }
}

fn remove_from<K: std::hash::Hash + Eq, T>(
    map: &mut HashMap<K, Candidates<T>>,
    key: &K,
    object: &Arc<T>,
) {
    if let Some(c) = map.get_mut(key) {
        c.retain(|e| !Arc::ptr_eq(&e.object, object));
        if c.is_empty() {
            map.remove(key);
        }
    }
}

/// Whether `ip` is in `net`/`bits`.
fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(bits.min(32)))
                .unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(bits.min(128)))
                .unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn container(name: &str, ports: &[u16], host_ports: &[u16]) -> Container {
        Container {
            name: name.into(),
            id: None,
            ports: ports.to_vec(),
            host_ports: host_ports.to_vec(),
        }
    }

    fn pod(uid: &str, name: &str, node: &str, ips: &[&str], owner: Option<(&str, &str)>) -> Pod {
        Pod {
            uid: uid.into(),
            namespace: "shop".into(),
            name: name.into(),
            node: node.into(),
            ips: ips.iter().map(|i| ip(i)).collect(),
            host_network: false,
            owner: owner.map(|(kind, name)| Owner {
                kind: kind.into(),
                name: name.into(),
            }),
            containers: vec![
                container("app", &[8080], &[]),
                container("sidecar", &[15000], &[]),
            ],
        }
    }

    /// A small cluster: two nodes; a Deployment's pod behind a ClusterIP
    /// and NodePort service; a StatefulSet's pod; a host-network
    /// DaemonSet pod and a pod with a hostPort on n1; Jobs with and
    /// without a CronJob; a ReplicaSet without a Deployment; a bare pod.
    fn cluster() -> Store {
        let mut s = Store::new(60 * SEC);
        s.set_cluster_ranges(vec![(ip("10.244.0.0"), 16), (ip("10.96.0.0"), 12)]);
        for (name, addr) in [("n1", "192.168.1.11"), ("n2", "192.168.1.12")] {
            s.upsert_node(Node {
                name: name.into(),
                ips: vec![ip(addr)],
            });
        }
        s.set_owner(
            "shop",
            "web-5d8f",
            Some(Owner {
                kind: "Deployment".into(),
                name: "web".into(),
            }),
        );
        s.set_owner(
            "shop",
            "report-28391",
            Some(Owner {
                kind: "CronJob".into(),
                name: "report".into(),
            }),
        );
        s.upsert_pod(pod(
            "u-web",
            "web-5d8f-x2x",
            "n1",
            &["10.244.1.5"],
            Some(("ReplicaSet", "web-5d8f")),
        ));
        s.upsert_pod(pod(
            "u-redis",
            "redis-0",
            "n2",
            &["10.244.2.6"],
            Some(("StatefulSet", "redis")),
        ));
        s.upsert_pod(pod(
            "u-cron",
            "report-28391-abc",
            "n2",
            &["10.244.2.7"],
            Some(("Job", "report-28391")),
        ));
        s.upsert_pod(pod(
            "u-job",
            "migrate-q1",
            "n2",
            &["10.244.2.8"],
            Some(("Job", "migrate")),
        ));
        s.upsert_pod(pod(
            "u-rs",
            "lone-7c-abc",
            "n2",
            &["10.244.2.9"],
            Some(("ReplicaSet", "lone-7c")),
        ));
        s.upsert_pod(pod("u-bare", "debug", "n2", &["10.244.2.10"], None));
        let mut agent = pod(
            "u-agent",
            "kindling-x1",
            "n1",
            &["192.168.1.11"],
            Some(("DaemonSet", "kindling")),
        );
        agent.host_network = true;
        agent.containers = vec![container("agent", &[9500], &[])];
        s.upsert_pod(agent);
        let mut exporter = pod(
            "u-exp",
            "node-exporter-x1",
            "n1",
            &["192.168.1.11"],
            Some(("DaemonSet", "node-exporter")),
        );
        exporter.host_network = true;
        exporter.containers = vec![container("exporter", &[9100], &[])];
        s.upsert_pod(exporter);
        let mut ingress = pod("u-ing", "ingress-abc", "n1", &["10.244.1.20"], None);
        ingress.containers = vec![container("nginx", &[443], &[8443])];
        s.upsert_pod(ingress);
        s.upsert_service(Service {
            namespace: "shop".into(),
            name: "web".into(),
            cluster_ips: vec![ip("10.96.0.10")],
            ports: vec![80],
            node_ports: vec![30080],
            backends: vec!["u-web".into()],
            ..Default::default()
        });
        s
    }

    fn labels(s: &Store, addr: &str, now: u64) -> [String; 7] {
        s.resolve(addr.parse().unwrap(), "n1", now)
            .labels()
            .map(str::to_owned)
    }

    #[test]
    fn every_rule_in_order() {
        let s = cluster();
        let cases: [(&str, [&str; 7]); 16] = [
            // ClusterIP:port → the service
            ("10.96.0.10:80", ["shop", "", "", "web", "", "", ""]),
            // a ClusterIP on a port it does not serve: nobody, inside
            (
                "10.96.0.10:81",
                [NOT_FOUND_INTERNAL, "", "", "", "", "", ""],
            ),
            // pod IP → pod, its workload through the ReplicaSet, the
            // container by port, the service selecting it
            (
                "10.244.1.5:8080",
                [
                    "shop",
                    "deployment",
                    "web",
                    "web",
                    "web-5d8f-x2x",
                    "app",
                    "n1",
                ],
            ),
            (
                "10.244.1.5:15000",
                [
                    "shop",
                    "deployment",
                    "web",
                    "web",
                    "web-5d8f-x2x",
                    "sidecar",
                    "n1",
                ],
            ),
            // an undeclared port: the pod, no container
            (
                "10.244.1.5:9999",
                ["shop", "deployment", "web", "web", "web-5d8f-x2x", "", "n1"],
            ),
            (
                "10.244.2.6:8080",
                ["shop", "statefulset", "redis", "", "redis-0", "app", "n2"],
            ),
            (
                "10.244.2.7:8080",
                [
                    "shop",
                    "cronjob",
                    "report",
                    "",
                    "report-28391-abc",
                    "app",
                    "n2",
                ],
            ),
            (
                "10.244.2.8:8080",
                ["shop", "job", "migrate", "", "migrate-q1", "app", "n2"],
            ),
            (
                "10.244.2.9:8080",
                [
                    "shop",
                    "replicaset",
                    "lone-7c",
                    "",
                    "lone-7c-abc",
                    "app",
                    "n2",
                ],
            ),
            (
                "10.244.2.10:8080",
                ["shop", "pod", "debug", "", "debug", "app", "n2"],
            ),
            // NodeIP:NodePort → the service
            ("192.168.1.12:30080", ["shop", "", "", "web", "", "", ""]),
            // host-network pods share n1's address: told apart by port
            (
                "192.168.1.11:9500",
                [
                    "shop",
                    "daemonset",
                    "kindling",
                    "",
                    "kindling-x1",
                    "agent",
                    "n1",
                ],
            ),
            (
                "192.168.1.11:9100",
                [
                    "shop",
                    "daemonset",
                    "node-exporter",
                    "",
                    "node-exporter-x1",
                    "exporter",
                    "n1",
                ],
            ),
            // a hostPort at the node's address → the pod declaring it
            (
                "192.168.1.11:8443",
                [
                    "shop",
                    "pod",
                    "ingress-abc",
                    "",
                    "ingress-abc",
                    "nginx",
                    "n1",
                ],
            ),
            // the node's address on another port → the node
            ("192.168.1.11:22", ["", "", "", "", "", "", "n1"]),
            // outside the cluster
            (
                "93.184.216.34:443",
                [NOT_FOUND_EXTERNAL, "", "", "", "", "", ""],
            ),
        ];
        for (addr, want) in cases {
            assert_eq!(labels(&s, addr, 0), want.map(str::to_owned), "{addr}");
        }
        // loopback is the local node's: its host-network pods included
        assert_eq!(labels(&s, "127.0.0.1:9500", 0)[4], "kindling-x1");
        assert_eq!(labels(&s, "127.0.0.1:22", 0)[6], "n1");
        // a pod's own process, by the pod UID its cgroup gave
        assert_eq!(s.pod_by_uid("u-agent").unwrap().name, "kindling-x1");
    }

    #[test]
    fn a_deleted_pod_resolves_for_its_grace_period_and_a_reused_ip_goes_to_the_live_pod() {
        let mut s = cluster();
        s.delete_pod("u-redis", 100 * SEC);
        // late events about its connections still name it
        assert_eq!(labels(&s, "10.244.2.6:8080", 120 * SEC)[4], "redis-0");
        // after the grace period, nobody
        assert_eq!(
            labels(&s, "10.244.2.6:8080", 161 * SEC)[0],
            NOT_FOUND_INTERNAL
        );
        // the IP reused by a new pod within the grace period: the live one
        s.delete_pod("u-web", 200 * SEC);
        s.upsert_pod(pod("u-new", "api-1", "n2", &["10.244.1.5"], None));
        assert_eq!(labels(&s, "10.244.1.5:8080", 210 * SEC)[4], "api-1");
        // and once the new one goes too, the most recently deleted
        s.delete_pod("u-new", 220 * SEC);
        assert_eq!(labels(&s, "10.244.1.5:8080", 230 * SEC)[4], "api-1");
        s.expire(300 * SEC);
        assert_eq!(s.pod_count(), 9 - 2);
        assert_eq!(
            labels(&s, "10.244.1.5:8080", 300 * SEC)[0],
            NOT_FOUND_INTERNAL
        );
    }

    #[test]
    fn updates_replace_what_an_object_was_found_by() {
        let mut s = cluster();
        // the pod moves address (a restart with a new sandbox)
        let mut moved = pod(
            "u-redis",
            "redis-0",
            "n2",
            &["10.244.2.60"],
            Some(("StatefulSet", "redis")),
        );
        moved.containers.truncate(1);
        s.upsert_pod(moved);
        assert_eq!(labels(&s, "10.244.2.60:8080", 0)[4], "redis-0");
        assert_eq!(labels(&s, "10.244.2.6:8080", 0)[0], NOT_FOUND_INTERNAL);
        // the service loses its NodePort
        s.upsert_service(Service {
            namespace: "shop".into(),
            name: "web".into(),
            cluster_ips: vec![ip("10.96.0.10")],
            ports: vec![80],
            node_ports: vec![],
            backends: vec![],
            ..Default::default()
        });
        assert_eq!(
            labels(&s, "192.168.1.12:30080", 0)[6],
            "n2",
            "now the node's port"
        );
        assert_eq!(
            labels(&s, "10.244.1.5:8080", 0)[3],
            "",
            "no longer selected"
        );
        s.delete_service("shop", "web");
        assert_eq!(labels(&s, "10.96.0.10:80", 0)[0], NOT_FOUND_INTERNAL);
        // a Deployment's ReplicaSet disowned: the ReplicaSet is the workload
        s.set_owner("shop", "web-5d8f", None);
        assert_eq!(labels(&s, "10.244.1.5:8080", 0)[1], "replicaset");
    }
}
