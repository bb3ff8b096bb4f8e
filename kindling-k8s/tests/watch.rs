//! The watchers against a local API server that speaks the real list/watch
//! protocol (checked with kubectl): they converge, follow changes, and
//! recover from 500s, dropped connections and `410 Gone`.

#![cfg(feature = "watch")]

#[path = "support/apiserver.rs"]
mod apiserver;
#[path = "support/objects.rs"]
mod objects;

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use apiserver::ApiServer;
use kindling_k8s::store::{Entity, Store, WorkloadKind};
use kindling_k8s::watch::{WatchConfig, Watchers};

const NODE: &str = "n1";

fn cluster(server: &ApiServer) {
    server.put(objects::node(NODE, "192.168.1.11", "10.244.1.0/24"));
    server.put(objects::replica_set("shop", "web-5d8f7c", "web"));
    server.put(objects::pod(
        "shop",
        "web-5d8f7c-x2x9q",
        Some(("ReplicaSet", "web-5d8f7c")),
        NODE,
        "10.244.1.5",
        "app",
        8080,
    ));
    server.put(objects::pod(
        "shop",
        "redis-0",
        Some(("StatefulSet", "redis")),
        NODE,
        "10.244.1.6",
        "redis",
        6379,
    ));
    server.put(objects::job("ops", "backup-28911", "backup"));
    server.put(objects::pod(
        "ops",
        "backup-28911-abcde",
        Some(("Job", "backup-28911")),
        NODE,
        "10.244.1.7",
        "backup",
        9000,
    ));
    server.put(objects::service("shop", "redis", "10.96.0.10", 6379, None));
    server.put(objects::endpoint_slice(
        "shop",
        "redis",
        &[("redis-0", "10.244.1.6")],
        6379,
    ));
    server.put(objects::service(
        "shop",
        "web",
        "10.96.0.20",
        80,
        Some(30080),
    ));
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// Waits up to 10 s for `check` on the store to hold.
fn eventually(store: &RwLock<Store>, what: &str, check: impl Fn(&Store) -> bool) {
    let until = Instant::now() + Duration::from_secs(10);
    while !check(&store.read().unwrap()) {
        assert!(Instant::now() < until, "never: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn labels(store: &Store, a: &str) -> [String; 7] {
    store
        .resolve(addr(a), NODE, now())
        .labels()
        .map(str::to_owned)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kindling-k8s-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Watchers of `server` filling a fresh store (deleted pods forgotten at
/// once), synced; the scratch directory holding its kubeconfig.
fn watch(
    server: &ApiServer,
    name: &str,
    cluster_ranges: Vec<(std::net::IpAddr, u8)>,
    node_local: Option<&str>,
) -> (Arc<RwLock<Store>>, Watchers, std::path::PathBuf) {
    let dir = scratch(name);
    let kubeconfig = dir.join("config");
    server.write_kubeconfig(&kubeconfig);
    let store = Arc::new(RwLock::new(Store::new(0)));
    let config = WatchConfig {
        kubeconfig: Some(kubeconfig),
        cluster_ranges,
        node_local: node_local.map(str::to_owned),
    };
    let watchers = Watchers::start(&config, Arc::clone(&store)).unwrap();
    assert!(
        watchers.wait_synced(Duration::from_secs(15)),
        "not synced: {:?}",
        watchers.status()
    );
    (store, watchers, dir)
}

#[test]
fn kubectl_reads_the_test_api_server() {
    let server = ApiServer::start();
    cluster(&server);
    let dir = scratch("kubectl");
    let kubeconfig = dir.join("config");
    server.write_kubeconfig(&kubeconfig);
    let kubectl = |args: &[&str]| {
        std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .args(args)
            .output()
    };
    let out = match kubectl(&["get", "pods", "-A", "-o", "json"]) {
        Ok(out) => out,
        Err(e) if std::env::var_os("CI").is_none() => {
            eprintln!("skipped: kubectl cannot run here ({e}); install kubernetes-client");
            return;
        }
        Err(e) => panic!("kubectl: {e}"),
    };
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["backup-28911-abcde", "redis-0", "web-5d8f7c-x2x9q"]);
    // the other kinds, by name, one namespace, and with paging
    let out = kubectl(&[
        "get",
        "services,endpointslices,replicasets,jobs",
        "-n",
        "shop",
        "-o",
        "name",
        "--chunk-size",
        "1",
    ])
    .unwrap();
    assert!(
        out.status.success(),
        "kubectl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    for name in [
        "service/redis",
        "service/web",
        "endpointslice.discovery.k8s.io/redis-x7k2p",
        "replicaset.apps/web-5d8f7c",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    assert!(
        !text.contains("job.batch/backup"),
        "another namespace's job listed:\n{text}"
    );
    let out = kubectl(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.addresses[0].address}",
    ])
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "192.168.1.11");
    assert!(server.count("services", "list") >= 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn watchers_converge_follow_changes_and_recover_from_faults() {
    let server = ApiServer::start();
    cluster(&server);
    let (store, watchers, dir) = watch(
        &server,
        "watch",
        vec![("10.96.0.0".parse().unwrap(), 12)],
        None,
    );

    // every rule, from the listed objects
    {
        let s = store.read().unwrap();
        assert_eq!(
            labels(&s, "10.244.1.5:8080"),
            [
                "shop",
                "deployment",
                "web",
                "",
                "web-5d8f7c-x2x9q",
                "app",
                NODE
            ]
        );
        assert_eq!(
            labels(&s, "10.244.1.6:6379"),
            [
                "shop",
                "statefulset",
                "redis",
                "redis",
                "redis-0",
                "redis",
                NODE
            ]
        );
        assert_eq!(
            labels(&s, "10.244.1.7:9000")[..3],
            ["ops", "cronjob", "backup"]
        );
        assert!(
            matches!(s.resolve(addr("10.96.0.10:6379"), NODE, now()), Entity::Service(svc) if svc.name == "redis")
        );
        assert!(
            matches!(s.resolve(addr("192.168.1.11:30080"), NODE, now()), Entity::Service(svc) if svc.name == "web")
        );
        assert!(
            matches!(s.resolve(addr("192.168.1.11:22"), NODE, now()), Entity::Node(n) if n.name == NODE)
        );
        // the node's pod range and the configured service range are the cluster's
        assert_eq!(
            s.resolve(addr("10.244.1.99:80"), NODE, now()),
            Entity::NotFoundInternal
        );
        assert_eq!(
            s.resolve(addr("10.100.0.1:80"), NODE, now()),
            Entity::NotFoundInternal
        );
        assert_eq!(s.resolve(addr("8.8.8.8:53"), NODE, now()), Entity::External);
        let web = s
            .pod_by_uid(&objects::pod_uid("shop", "web-5d8f7c-x2x9q"))
            .unwrap();
        assert_eq!(s.workload(web).kind, WorkloadKind::Deployment);
        assert_eq!(
            web.containers[0].id.as_deref(),
            Some("ab".repeat(32).as_str())
        );
    }

    // changes: a new pod, a pod moving address, a deleted pod
    server.put(objects::pod(
        "shop",
        "web-5d8f7c-k8m2z",
        Some(("ReplicaSet", "web-5d8f7c")),
        NODE,
        "10.244.1.8",
        "app",
        8080,
    ));
    server.put(objects::pod(
        "shop",
        "redis-0",
        Some(("StatefulSet", "redis")),
        NODE,
        "10.244.1.16",
        "redis",
        6379,
    ));
    server.delete("Pod", "ops", "backup-28911-abcde");
    eventually(&store, "changes applied", |s| {
        labels(s, "10.244.1.8:8080")[4] == "web-5d8f7c-k8m2z"
            && labels(s, "10.244.1.16:6379")[4] == "redis-0"
            && labels(s, "10.244.1.6:6379")[0] == "NOT_FOUND_INTERNAL"
            && labels(s, "10.244.1.7:9000")[0] == "NOT_FOUND_INTERNAL"
    });
    // a service's backends follow its EndpointSlice
    server.put(objects::endpoint_slice(
        "shop",
        "web",
        &[("web-5d8f7c-x2x9q", "10.244.1.5")],
        8080,
    ));
    eventually(&store, "web's backends", |s| {
        labels(s, "10.244.1.5:8080")[3] == "web"
    });
    // the watchers ask for bookmarks, and take them without listing again
    let lists = watchers
        .status()
        .kinds()
        .map(|(_, k)| k.lists())
        .sum::<u64>();
    eventually(&store, "bookmarks sent", |_| {
        server.count("pods", "bookmark") >= 2
    });
    assert_eq!(
        lists,
        watchers
            .status()
            .kinds()
            .map(|(_, k)| k.lists())
            .sum::<u64>()
    );

    // 500s and dropped connections: retried, and what changed meanwhile arrives
    let errors = watchers
        .status()
        .kinds()
        .find(|(k, _)| *k == "Pod")
        .unwrap()
        .1
        .errors();
    server.fail_next("pods", 2);
    server.drop_watches();
    server.put(objects::pod(
        "shop",
        "web-5d8f7c-p4q7r",
        Some(("ReplicaSet", "web-5d8f7c")),
        NODE,
        "10.244.1.9",
        "app",
        8080,
    ));
    eventually(&store, "a pod added across faults", |s| {
        labels(s, "10.244.1.9:8080")[4] == "web-5d8f7c-p4q7r"
    });
    let pods = watchers
        .status()
        .kinds()
        .find(|(k, _)| *k == "Pod")
        .unwrap()
        .1;
    assert!(pods.errors() > errors, "the 500s were not seen: {pods:?}");
    assert_eq!(server.count("pods", "500"), 2);

    // 410 Gone: the history is compacted while the watch is down, so the
    // watcher lists again; a pod deleted meanwhile is removed by that list
    let lists = pods.lists();
    server.drop_watches();
    server.delete("Pod", "shop", "web-5d8f7c-k8m2z");
    server.compact();
    server.drop_watches();
    eventually(&store, "a pod deleted before a re-list", |s| {
        labels(s, "10.244.1.8:8080")[0] == "NOT_FOUND_INTERNAL"
    });
    assert!(
        server.count("pods", "gone") >= 1,
        "no watch was refused with 410"
    );
    let pods = watchers
        .status()
        .kinds()
        .find(|(k, _)| *k == "Pod")
        .unwrap()
        .1;
    assert!(pods.lists() > lists, "no re-list after 410: {pods:?}");
    // the rest survived the re-list
    assert_eq!(
        labels(&store.read().unwrap(), "10.244.1.9:8080")[4],
        "web-5d8f7c-p4q7r"
    );

    // the status renders as Prometheus text
    let text = watchers.status().encode_prometheus();
    assert!(
        text.contains("kindling_k8s_watch_synced{kind=\"EndpointSlice\"} 1"),
        "{text}"
    );
    drop(watchers);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Two services selecting one pod: both addresses resolve to their own
/// service, and a call to the pod to the service of the port called.
#[test]
fn two_services_of_one_pod() {
    let server = ApiServer::start();
    server.put(objects::node(NODE, "192.168.1.11", "10.244.1.0/24"));
    server.put(objects::pod(
        "shop",
        "api-0",
        Some(("StatefulSet", "api")),
        NODE,
        "10.244.1.6",
        "server",
        8080,
    ));
    server.put(objects::service("shop", "api", "10.96.0.10", 80, None));
    server.put(objects::endpoint_slice(
        "shop",
        "api",
        &[("api-0", "10.244.1.6")],
        8080,
    ));
    server.put(objects::service("shop", "cache", "10.96.0.11", 6379, None));
    server.put(objects::endpoint_slice(
        "shop",
        "cache",
        &[("api-0", "10.244.1.6")],
        6379,
    ));
    let (store, watchers, dir) = watch(&server, "two-services", vec![], None);
    let s = store.read().unwrap();
    assert!(
        matches!(s.resolve(addr("10.96.0.10:80"), NODE, now()), Entity::Service(svc) if svc.name == "api"),
        "{:?}",
        s.resolve(addr("10.96.0.10:80"), NODE, now())
    );
    assert!(
        matches!(s.resolve(addr("10.96.0.11:6379"), NODE, now()), Entity::Service(svc) if svc.name == "cache"),
        "{:?}",
        s.resolve(addr("10.96.0.11:6379"), NODE, now())
    );
    // the pod itself: the service whose endpoints serve the port called
    assert_eq!(labels(&s, "10.244.1.6:8080")[3], "api");
    assert_eq!(labels(&s, "10.244.1.6:6379")[3], "cache");
    drop(s);
    drop(watchers);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Node-local mode: this node's pods listed in full through a field
/// selector; a pod elsewhere named from its metadata and its
/// EndpointSlice; one elsewhere that no service selects stays unnamed.
#[test]
fn node_local_mode_names_remote_pods_from_metadata_and_slices() {
    let server = ApiServer::start();
    server.put(objects::node(NODE, "192.168.1.11", "10.244.1.0/24"));
    server.put(objects::node("n2", "192.168.1.12", "10.244.2.0/24"));
    server.put(objects::replica_set("shop", "web-5d8f7c", "web"));
    server.put(objects::pod(
        "shop",
        "web-5d8f7c-x2x9q",
        Some(("ReplicaSet", "web-5d8f7c")),
        NODE,
        "10.244.1.5",
        "app",
        8080,
    ));
    server.put(objects::pod(
        "shop",
        "redis-0",
        Some(("StatefulSet", "redis")),
        "n2",
        "10.244.2.6",
        "redis",
        6379,
    ));
    server.put(objects::pod(
        "shop",
        "lonely-0",
        Some(("StatefulSet", "lonely")),
        "n2",
        "10.244.2.7",
        "x",
        9000,
    ));
    server.put(objects::service("shop", "redis", "10.96.0.10", 6379, None));
    let mut slice = objects::endpoint_slice("shop", "redis", &[("redis-0", "10.244.2.6")], 6379);
    slice["endpoints"][0]["nodeName"] = serde_json::json!("n2");
    server.put(slice);
    let (store, watchers, dir) = watch(&server, "node-local", vec![], Some(NODE));
    eventually(&store, "the remote pod", |s| {
        labels(s, "10.244.2.6:6379")[4] == "redis-0"
    });
    {
        let s = store.read().unwrap();
        // this node's pod in full: its container by port
        assert_eq!(
            labels(&s, "10.244.1.5:8080"),
            [
                "shop",
                "deployment",
                "web",
                "",
                "web-5d8f7c-x2x9q",
                "app",
                NODE
            ]
        );
        // the remote one: workload and service from metadata and slice, no containers
        assert_eq!(
            labels(&s, "10.244.2.6:6379"),
            ["shop", "statefulset", "redis", "redis", "redis-0", "", "n2"]
        );
        assert_eq!(labels(&s, "10.244.2.7:9000")[0], "NOT_FOUND_INTERNAL");
    }
    assert!(
        server.count("pods", "field_selector") >= 2,
        "no field selector on the pod list and watch"
    );
    // the remote pod deleted: gone from the store
    server.delete("Pod", "shop", "redis-0");
    eventually(&store, "the remote pod deleted", |s| {
        labels(s, "10.244.2.6:6379")[0] == "NOT_FOUND_INTERNAL"
    });
    let text = watchers.status().encode_prometheus();
    assert!(
        text.contains("kindling_k8s_watch_synced{kind=\"PodMetadata\"} 1"),
        "{text}"
    );
    drop(watchers);
    std::fs::remove_dir_all(dir).unwrap();
}
