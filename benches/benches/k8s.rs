//! Kubernetes resolution (issue 14: ≤ 100 ns per endpoint; the metadata of
//! a 5,000-pod / 1,000-service cluster in ≤ 50 MiB): a store of 100 nodes,
//! 5,000 pods (Deployments through ReplicaSets, two containers each) and
//! 1,000 ClusterIP services, resolving a pod address, a service address, a
//! node address and an external one. Baseline in the same run: one
//! `HashMap` lookup of an address. The store's heap is counted by a global
//! allocator that tallies live bytes.
//!
//! Then the same cluster as API objects, served by the tests' Kubernetes
//! API server (`kindling-k8s/tests/support`): the watchers list it into a
//! store; the time to sync and the heap the watchers and their store hold
//! afterwards (the agent's whole metadata cost) are printed.

#[path = "../../kindling-k8s/tests/support/apiserver.rs"]
mod apiserver;
#[path = "../../kindling-k8s/tests/support/objects.rs"]
mod objects;

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicIsize, Ordering};

use criterion::{criterion_main, Criterion};
use kindling_k8s::store::{Container, Node, Owner, Pod, Service, Store};

/// Counts the bytes live on the heap.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn cluster() -> Store {
    let mut s = Store::new(60_000_000_000);
    s.set_cluster_ranges(vec![(v4(10, 244, 0, 0), 16), (v4(10, 96, 0, 0), 12)]);
    for n in 0..100u8 {
        s.upsert_node(Node {
            name: format!("node-{n}"),
            ips: vec![v4(192, 168, 1, n)],
        });
    }
    for d in 0..1000u32 {
        let ns = format!("team-{}", d % 50);
        let rs = format!("svc-{d}-5d8f9c7b6");
        s.set_owner(
            &ns,
            &rs,
            Some(Owner {
                kind: "Deployment".into(),
                name: format!("svc-{d}"),
            }),
        );
        let mut backends = Vec::new();
        for r in 0..5u32 {
            let i = d * 5 + r;
            let uid = format!("{:08x}-0000-4000-8000-{:012x}", i, i);
            backends.push(uid.clone());
            s.upsert_pod(Pod {
                uid,
                namespace: ns.clone(),
                name: format!("{rs}-{r:05}"),
                node: format!("node-{}", i % 100),
                ips: vec![v4(10, 244, (i >> 8) as u8, i as u8)],
                host_network: false,
                owner: Some(Owner {
                    kind: "ReplicaSet".into(),
                    name: rs.clone(),
                }),
                containers: vec![
                    Container {
                        name: "app".into(),
                        id: Some(format!("{:064x}", i)),
                        ports: vec![8080],
                        host_ports: vec![],
                    },
                    Container {
                        name: "proxy".into(),
                        id: Some(format!("{:064x}", i + 1_000_000)),
                        ports: vec![15001],
                        host_ports: vec![],
                    },
                ],
            });
        }
        s.upsert_service(Service {
            namespace: ns,
            name: format!("svc-{d}"),
            cluster_ips: vec![v4(10, 96, (d >> 8) as u8, d as u8)],
            ports: vec![80],
            node_ports: vec![],
            backends,
            target_ports: vec![8080],
        });
    }
    s
}

/// The cluster of `cluster()` as API objects, listed by real watchers.
fn watched() {
    let server = apiserver::ApiServer::start();
    for n in 0..100u8 {
        server.put(objects::node(
            &format!("node-{n}"),
            &format!("192.168.1.{n}"),
            "10.244.0.0/16",
        ));
    }
    for d in 0..1000u32 {
        let ns = format!("team-{}", d % 50);
        let rs = format!("svc-{d}-5d8f9c7b6");
        server.put(objects::replica_set(&ns, &rs, &format!("svc-{d}")));
        let mut pods = Vec::new();
        for r in 0..5u32 {
            let i = d * 5 + r;
            let name = format!("{rs}-{r:05}");
            let ip = format!("10.244.{}.{}", (i >> 8) as u8, i as u8);
            server.put(objects::pod(
                &ns,
                &name,
                Some(("ReplicaSet", &rs)),
                &format!("node-{}", i % 100),
                &ip,
                "app",
                8080,
            ));
            pods.push((name, ip));
        }
        let svc = format!("svc-{d}");
        server.put(objects::service(
            &ns,
            &svc,
            &format!("10.96.{}.{}", (d >> 8) as u8, d as u8),
            80,
            None,
        ));
        let pods: Vec<(&str, &str)> = pods.iter().map(|(n, i)| (n.as_str(), i.as_str())).collect();
        server.put(objects::endpoint_slice(&ns, &svc, &pods, 8080));
    }
    let dir = std::env::temp_dir().join(format!("kindling-bench-k8s-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("config");
    server.write_kubeconfig(&kubeconfig);
    let config = kindling_k8s::watch::WatchConfig {
        kubeconfig: Some(kubeconfig),
        cluster_ranges: Vec::new(),
        node_local: None,
    };
    let before = LIVE.load(Ordering::Relaxed);
    let started = std::time::Instant::now();
    let store = std::sync::Arc::new(std::sync::RwLock::new(Store::new(60_000_000_000)));
    let watchers =
        kindling_k8s::watch::Watchers::start(&config, std::sync::Arc::clone(&store)).unwrap();
    assert!(
        watchers.wait_synced(std::time::Duration::from_secs(120)),
        "not synced"
    );
    let took = started.elapsed();
    // what the watchers hold once the lists' buffers are gone
    std::thread::sleep(std::time::Duration::from_secs(1));
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    eprintln!(
        "watchers: {} pods, 1,000 services, 100 nodes listed in {:.2} s; the watchers and their store hold {:.1} MiB",
        store.read().unwrap().pod_count(),
        took.as_secs_f64(),
        bytes as f64 / (1 << 20) as f64
    );
    drop(watchers);
    std::fs::remove_dir_all(dir).unwrap();
}

fn k8s(c: &mut Criterion) {
    let before = LIVE.load(Ordering::Relaxed);
    let store = cluster();
    let bytes = LIVE.load(Ordering::Relaxed) - before;
    eprintln!(
        "store of {} pods, 1,000 services, 100 nodes: {:.1} MiB on the heap",
        store.pod_count(),
        bytes as f64 / (1 << 20) as f64
    );
    // after the store's count: the test server's threads free memory as
    // they end
    watched();
    let pod: SocketAddr = "10.244.7.3:8080".parse().unwrap();
    let service: SocketAddr = "10.96.2.17:80".parse().unwrap();
    let node: SocketAddr = "192.168.1.42:22".parse().unwrap();
    let external: SocketAddr = "93.184.216.34:443".parse().unwrap();
    let baseline: HashMap<IpAddr, u32> = (0..5000u32)
        .map(|i| (v4(10, 244, (i >> 8) as u8, i as u8), i))
        .collect();
    let mut g = c.benchmark_group("k8s_resolve");
    g.bench_function("baseline_one_hashmap_lookup", |b| {
        b.iter(|| black_box(baseline.get(&black_box(pod).ip())))
    });
    for (name, addr) in [
        ("pod", pod),
        ("service", service),
        ("node", node),
        ("external", external),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                let e = store.resolve(black_box(addr), "node-1", 0);
                black_box(e.labels()[0].len())
            })
        });
    }
    g.finish();
}

/// `criterion_group!` makes an undocumented public fn; keep it private.
mod group {
    criterion::criterion_group!(benches, super::k8s);
}
use group::benches;
criterion_main!(benches);
