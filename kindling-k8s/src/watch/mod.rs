//! Watchers that fill a [`Store`] from the Kubernetes API: list + watch of
//! Pods, Services, EndpointSlices, Nodes, and the metadata of ReplicaSets
//! and Jobs (to reach a pod's Deployment or CronJob).
//!
//! kube-rs's `watcher` does the protocol: a paged list, then a watch from
//! its `resourceVersion` with bookmarks, a new list after `410 Gone`, and
//! resumption after dropped connections; errors back off exponentially
//! (0.8 s to 30 s). No API object is kept: each event is turned into the
//! store's compact shape at once, so memory is the store's. After each
//! (re-)list, the objects the list no longer holds are deleted from the
//! store, which keeps them resolvable for its grace period.
//!
//! The watchers run on a thread of their own (a single-threaded tokio
//! runtime) and take the store's write lock once per event.

mod convert;
mod remote;

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::PartialObjectMeta;
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

pub use convert::parse_cidr;

use crate::store::{Service, Store};

/// Where the API server is and how to reach it.
#[derive(Clone, Debug, Default)]
pub struct WatchConfig {
    /// A kubeconfig file; without one, the in-cluster service account
    /// (`KUBERNETES_SERVICE_HOST` and the token files), then `$KUBECONFIG`
    /// and `~/.kube/config`.
    pub kubeconfig: Option<PathBuf>,
    /// Ranges that are the cluster's besides the nodes' pod ranges
    /// (typically the service range), for `NOT_FOUND_INTERNAL`.
    pub cluster_ranges: Vec<(IpAddr, u8)>,
    /// Node-local mode: pods in full only on this node (a field
    /// selector); elsewhere their metadata only, with the addresses their
    /// EndpointSlices give (a remote pod no service selects stays
    /// unnamed). Less for the API server to send in a large cluster.
    pub node_local: Option<String>,
}

/// The kinds watched, in the order of [`WatchStatus::kinds`]
/// (`PodMetadata`: every pod's metadata, in node-local mode only).
pub const KINDS: [&str; 7] = [
    "Pod",
    "Service",
    "EndpointSlice",
    "Node",
    "ReplicaSet",
    "Job",
    "PodMetadata",
];

/// Progress of one kind's watcher.
#[derive(Debug, Default)]
pub struct KindStatus {
    synced: AtomicBool,
    events: AtomicU64,
    errors: AtomicU64,
    lists: AtomicU64,
}

impl KindStatus {
    /// Its first list has been applied.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }
    /// Objects applied or deleted.
    pub fn events(&self) -> u64 {
        self.events.load(Ordering::Relaxed)
    }
    /// Errors from the API (each one retried after a back-off).
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }
    /// Complete lists (the first, and each after `410 Gone` or a watch
    /// that could not resume).
    pub fn lists(&self) -> u64 {
        self.lists.load(Ordering::Relaxed)
    }
}

/// What the watchers have done, shared with whoever reports it.
#[derive(Debug, Default)]
pub struct WatchStatus {
    kinds: [KindStatus; 7],
}

impl WatchStatus {
    /// Each kind's progress, named as in [`KINDS`].
    pub fn kinds(&self) -> impl Iterator<Item = (&'static str, &KindStatus)> {
        KINDS.into_iter().zip(&self.kinds)
    }

    /// Every kind has been listed once.
    pub fn all_synced(&self) -> bool {
        self.kinds.iter().all(KindStatus::synced)
    }

    /// The watchers' counters in OpenMetrics text (`kindling_k8s_*`).
    pub fn encode_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        type Family = (
            &'static str,
            &'static str,
            &'static str,
            fn(&KindStatus) -> u64,
        );
        let families: [Family; 4] = [
            (
                "kindling_k8s_watch_synced",
                "gauge",
                "1 once the kind's first list is applied",
                |k| u64::from(k.synced()),
            ),
            (
                "kindling_k8s_watch_events_total",
                "counter",
                "Objects applied or deleted from the Kubernetes API",
                KindStatus::events,
            ),
            (
                "kindling_k8s_watch_errors_total",
                "counter",
                "Errors watching the Kubernetes API (each retried after a back-off)",
                KindStatus::errors,
            ),
            (
                "kindling_k8s_watch_lists_total",
                "counter",
                "Complete lists of a kind (the first, and after 410 Gone)",
                KindStatus::lists,
            ),
        ];
        for (name, kind, help, value) in families {
            // OpenMetrics names a counter's family without its `_total`
            let family = name.strip_suffix("_total").unwrap_or(name);
            let _ = writeln!(out, "# HELP {family} {help}\n# TYPE {family} {kind}");
            for (k, s) in self.kinds() {
                let _ = writeln!(out, "{name}{{kind=\"{k}\"}} {}", value(s));
            }
        }
        out
    }
}

/// The running watchers: they stop when this is dropped.
#[derive(Debug)]
pub struct Watchers {
    status: Arc<WatchStatus>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Watchers {
    /// Connects to the API server of `config` and starts watching into
    /// `store`. Fails when no configuration is found or it is unusable; an
    /// unreachable server is not an error here (the watchers retry and
    /// count it).
    pub fn start(config: &WatchConfig, store: Arc<RwLock<Store>>) -> Result<Self, StartError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let client = runtime.block_on(client(config))?;
        let status = Arc::new(WatchStatus::default());
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let shared = Shared {
            store,
            status: Arc::clone(&status),
            extra_ranges: config.cluster_ranges.clone(),
            services: Mutex::default(),
            node_ranges: Mutex::default(),
            node_local: config.node_local.clone(),
            remote: Mutex::default(),
        };
        if shared.node_local.is_none() {
            // not watched: nothing to wait for
            status.kinds[POD_METADATA]
                .synced
                .store(true, Ordering::Relaxed);
        }
        let thread = std::thread::Builder::new()
            .name("kindling-k8s".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = watch_all(client, &shared) => {}
                        _ = stopped => {}
                    }
                });
            })?;
        Ok(Self {
            status,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// What the watchers have done so far.
    pub fn status(&self) -> &Arc<WatchStatus> {
        &self.status
    }

    /// Waits until every kind has been listed once, for at most `timeout`;
    /// says whether they were.
    pub fn wait_synced(&self, timeout: Duration) -> bool {
        let until = Instant::now() + timeout;
        while !self.status.all_synced() {
            if Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }
}

impl Drop for Watchers {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A client from the kubeconfig of `config`, else in-cluster, else the
/// default kubeconfig.
async fn client(config: &WatchConfig) -> Result<Client, StartError> {
    let config = match &config.kubeconfig {
        Some(path) => {
            let file = kube::config::Kubeconfig::read_from(path)?;
            let options = kube::config::KubeConfigOptions::default();
            kube::Config::from_custom_kubeconfig(file, &options).await?
        }
        None => kube::Config::infer().await?,
    };
    Ok(Client::try_from(config)?)
}

/// Why the watchers could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The kubeconfig given could not be read or used.
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    /// No kubeconfig was given and none was found, in the cluster or at home.
    #[error("no Kubernetes configuration (in-cluster or kubeconfig): {0}")]
    Infer(#[from] kube::config::InferConfigError),
    /// The client could not be built (TLS settings, say).
    #[error("Kubernetes client: {0}")]
    Client(#[from] kube::Error),
    /// The runtime or its thread.
    #[error("starting the watchers: {0}")]
    Io(#[from] std::io::Error),
}

/// State the watchers share beyond the store.
#[derive(Debug)]
struct Shared {
    store: Arc<RwLock<Store>>,
    status: Arc<WatchStatus>,
    extra_ranges: Vec<(IpAddr, u8)>,
    /// Services and the pods their EndpointSlices list, merged into the
    /// store's `Service`.
    services: Mutex<ServiceState>,
    /// Node name → its pod ranges.
    node_ranges: Mutex<HashMap<String, Vec<(IpAddr, u8)>>>,
    /// This node, in node-local mode.
    node_local: Option<String>,
    /// Pods of other nodes, in node-local mode.
    remote: Mutex<remote::RemotePods>,
}

/// The status slot of the metadata-only pod watch.
const POD_METADATA: usize = 6;

impl Shared {
    fn remote(&self) -> std::sync::MutexGuard<'_, remote::RemotePods> {
        self.remote.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn services(&self) -> std::sync::MutexGuard<'_, ServiceState> {
        self.services.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn node_ranges(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(IpAddr, u8)>>> {
        self.node_ranges
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn write<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        f(&mut self.store.write().unwrap_or_else(PoisonError::into_inner))
    }

    /// Node-local mode: brings the store's record of these remote pods up
    /// to date.
    fn publish_remote(&self, uids: &[String]) {
        if self.node_local.is_none() {
            return;
        }
        let changes: Vec<(String, remote::Change)> = {
            let mut r = self.remote();
            uids.iter().map(|u| (u.clone(), r.change(u))).collect()
        };
        let now = now_ns();
        self.write(|s| {
            for (uid, change) in changes {
                match change {
                    remote::Change::Upsert(pod) => s.upsert_pod(pod),
                    remote::Change::Delete => s.delete_pod(&uid, now),
                    remote::Change::None => {}
                }
            }
        });
    }
}

/// `(namespace, name)`.
type Key = (String, String);

#[derive(Debug, Default)]
struct ServiceState {
    specs: HashMap<Key, Service>,
    /// `(namespace, slice name)` → (its service's key, its endpoints).
    slices: HashMap<Key, (Key, convert::Endpoints)>,
}

impl ServiceState {
    /// The service `key` with its backends, if its spec is known.
    fn merged(&self, key: &Key) -> Option<Service> {
        let mut s = self.specs.get(key)?.clone();
        for (service, endpoints) in self.slices.values() {
            if service == key {
                s.backends.extend(endpoints.pods.iter().cloned());
                s.target_ports.extend(&endpoints.ports);
            }
        }
        s.target_ports.sort_unstable();
        s.target_ports.dedup();
        Some(s)
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// One kind's way into the store.
trait Apply<K> {
    /// Which status slot, in [`KINDS`].
    const SLOT: usize;
    /// The object's identity (kept to find what a re-list dropped).
    fn key(object: &K) -> String;
    /// Adds or replaces it.
    fn apply(shared: &Shared, object: &K);
    /// Removes what `key` named.
    fn delete(shared: &Shared, key: &str);
}

async fn watch_all(client: Client, shared: &Shared) {
    let config = watcher::Config::default();
    // node-local: full pods of this node, every pod's metadata
    let pods = match &shared.node_local {
        Some(node) => config.clone().fields(&format!("spec.nodeName={node}")),
        None => config.clone(),
    };
    let (meta_client, meta_config) = (client.clone(), config.clone());
    let metadata = async move {
        if shared.node_local.is_some() {
            let api = Api::<PartialObjectMeta<core::Pod>>::all(meta_client);
            run::<PartialObjectMeta<core::Pod>, PodMetadata>(api, meta_config, shared).await;
        }
    };
    futures::join!(
        metadata,
        run::<core::Pod, Pods>(Api::all(client.clone()), pods, shared),
        run::<core::Service, ServiceSpecs>(Api::all(client.clone()), config.clone(), shared),
        run::<EndpointSlice, Slices>(Api::all(client.clone()), config.clone(), shared),
        run::<core::Node, Nodes>(Api::all(client.clone()), config.clone(), shared),
        run::<PartialObjectMeta<ReplicaSet>, Owners<4>>(
            Api::all(client.clone()),
            config.clone(),
            shared
        ),
        run::<PartialObjectMeta<Job>, Owners<5>>(Api::all(client), config, shared),
    );
}

/// Follows one kind for ever, applying its events to the store.
async fn run<K, A>(api: Api<K>, config: watcher::Config, shared: &Shared)
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
    A: Apply<K>,
{
    let status = &shared.status.kinds[A::SLOT];
    let stream = watcher(api, config).default_backoff();
    futures::pin_mut!(stream);
    // what the store holds of this kind, and what the list under way has
    // named so far
    let mut known: HashSet<String> = HashSet::new();
    let mut listed: Option<HashSet<String>> = None;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Init) => listed = Some(HashSet::new()),
            Ok(Event::InitApply(o) | Event::Apply(o)) => {
                let key = A::key(&o);
                A::apply(shared, &o);
                if let Some(listed) = &mut listed {
                    listed.insert(key.clone());
                }
                known.insert(key);
                status.events.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Event::InitDone) => {
                let listed = listed.take().unwrap_or_default();
                for gone in known.difference(&listed) {
                    A::delete(shared, gone);
                    status.events.fetch_add(1, Ordering::Relaxed);
                }
                known = listed;
                status.lists.fetch_add(1, Ordering::Relaxed);
                status.synced.store(true, Ordering::Relaxed);
            }
            Ok(Event::Delete(o)) => {
                let key = A::key(&o);
                A::delete(shared, &key);
                known.remove(&key);
                status.events.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                status.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(kind = KINDS[A::SLOT], error = %e, "watching the Kubernetes API");
            }
        }
    }
}

fn namespaced_key<K: Resource>(o: &K) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

fn split_key(key: &str) -> Key {
    let (ns, name) = key.split_once('/').unwrap_or(("", key));
    (ns.to_owned(), name.to_owned())
}

enum Pods {}

impl Apply<core::Pod> for Pods {
    const SLOT: usize = 0;
    fn key(o: &core::Pod) -> String {
        o.metadata.uid.clone().unwrap_or_default()
    }
    fn apply(shared: &Shared, o: &core::Pod) {
        if convert::pod_is_finished(o) {
            Self::delete(shared, &Self::key(o));
        } else if let Some(pod) = convert::pod(o) {
            if shared.node_local.is_some() {
                let mut r = shared.remote();
                r.local.insert(pod.uid.clone());
                r.published.remove(&pod.uid);
            }
            shared.write(|s| s.upsert_pod(pod));
        }
    }
    fn delete(shared: &Shared, uid: &str) {
        let now = now_ns();
        shared.write(|s| s.delete_pod(uid, now));
        if shared.node_local.is_some() {
            // (a pod that moved away is drawn from the rest again)
            shared.remote().local.remove(uid);
            shared.publish_remote(&[uid.to_owned()]);
        }
    }
}

/// Node-local mode: every pod's metadata (name, namespace, owner).
enum PodMetadata {}

impl Apply<PartialObjectMeta<core::Pod>> for PodMetadata {
    const SLOT: usize = POD_METADATA;
    fn key(o: &PartialObjectMeta<core::Pod>) -> String {
        o.metadata.uid.clone().unwrap_or_default()
    }
    fn apply(shared: &Shared, o: &PartialObjectMeta<core::Pod>) {
        let uid = Self::key(o);
        let meta = (
            o.metadata.namespace.clone().unwrap_or_default(),
            o.metadata.name.clone().unwrap_or_default(),
            convert::owner(&o.metadata),
        );
        shared.remote().meta.insert(uid.clone(), meta);
        shared.publish_remote(&[uid]);
    }
    fn delete(shared: &Shared, uid: &str) {
        shared.remote().meta.remove(uid);
        shared.publish_remote(&[uid.to_owned()]);
    }
}

enum ServiceSpecs {}

impl ServiceSpecs {
    /// Writes the merged service `key` into the store (or removes it).
    fn publish(shared: &Shared, key: &Key) {
        let merged = shared.services().merged(key);
        shared.write(|s| match merged {
            Some(service) => s.upsert_service(service),
            None => s.delete_service(&key.0, &key.1),
        });
    }
}

impl Apply<core::Service> for ServiceSpecs {
    const SLOT: usize = 1;
    fn key(o: &core::Service) -> String {
        namespaced_key(o)
    }
    fn apply(shared: &Shared, o: &core::Service) {
        let service = convert::service(o);
        let key = (service.namespace.clone(), service.name.clone());
        shared.services().specs.insert(key.clone(), service);
        Self::publish(shared, &key);
    }
    fn delete(shared: &Shared, key: &str) {
        let key = split_key(key);
        shared.services().specs.remove(&key);
        Self::publish(shared, &key);
    }
}

enum Slices {}

impl Apply<EndpointSlice> for Slices {
    const SLOT: usize = 2;
    fn key(o: &EndpointSlice) -> String {
        namespaced_key(o)
    }
    fn apply(shared: &Shared, o: &EndpointSlice) {
        let Some((service, endpoints)) = convert::endpoint_slice(o) else {
            return;
        };
        if shared.node_local.is_some() {
            let touched = shared
                .remote()
                .set_slice(&Self::key(o), &endpoints.addresses);
            shared.publish_remote(&touched);
        }
        let old = shared
            .services()
            .slices
            .insert(split_key(&Self::key(o)), (service.clone(), endpoints));
        if let Some((before, _)) = old.filter(|(before, _)| *before != service) {
            ServiceSpecs::publish(shared, &before);
        }
        ServiceSpecs::publish(shared, &service);
    }
    fn delete(shared: &Shared, key: &str) {
        if shared.node_local.is_some() {
            let touched = shared.remote().set_slice(key, &[]);
            shared.publish_remote(&touched);
        }
        let old = shared.services().slices.remove(&split_key(key));
        if let Some((service, _)) = old {
            ServiceSpecs::publish(shared, &service);
        }
    }
}

enum Nodes {}

impl Nodes {
    fn publish_ranges(shared: &Shared) {
        let mut ranges = shared.extra_ranges.clone();
        let nodes = shared.node_ranges();
        ranges.extend(nodes.values().flatten().copied());
        drop(nodes);
        ranges.sort_unstable();
        ranges.dedup();
        shared.write(|s| s.set_cluster_ranges(ranges));
    }
}

impl Apply<core::Node> for Nodes {
    const SLOT: usize = 3;
    fn key(o: &core::Node) -> String {
        o.name_any()
    }
    fn apply(shared: &Shared, o: &core::Node) {
        let (node, ranges) = convert::node(o);
        shared.node_ranges().insert(node.name.clone(), ranges);
        shared.write(|s| s.upsert_node(node));
        Self::publish_ranges(shared);
    }
    fn delete(shared: &Shared, name: &str) {
        shared.node_ranges().remove(name);
        shared.write(|s| s.delete_node(name));
        Self::publish_ranges(shared);
    }
}

/// ReplicaSets (`SLOT` 4) and Jobs (5): only who owns them.
enum Owners<const SLOT: usize> {}

impl<K: Resource, const SLOT: usize> Apply<PartialObjectMeta<K>> for Owners<SLOT>
where
    PartialObjectMeta<K>: Resource,
{
    const SLOT: usize = SLOT;
    fn key(o: &PartialObjectMeta<K>) -> String {
        namespaced_key(o)
    }
    fn apply(shared: &Shared, o: &PartialObjectMeta<K>) {
        let owner = convert::owner(o.meta());
        let (ns, name) = split_key(&Self::key(o));
        shared.write(|s| s.set_owner(&ns, &name, owner));
    }
    fn delete(shared: &Shared, key: &str) {
        let (ns, name) = split_key(key);
        shared.write(|s| s.set_owner(&ns, &name, None));
    }
}
