//! The agent names both ends of live traffic by the Kubernetes objects a
//! (test) API server serves: pods standing on loopback addresses of their
//! own, real HTTP between them, and the Kubernetes labels on `/metrics`.

mod common;

#[path = "../../kindling-k8s/tests/support/apiserver.rs"]
mod apiserver;
#[path = "../../kindling-k8s/tests/support/objects.rs"]
mod objects;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{
    free_port, get, http_server_on, kindling, privileged, temp_dir, terminate, wait_for, Stop,
};

const NODE: &str = "test-node";

/// A test API server serving this node with its pod range, a
/// Deployment's pod `web-5d8f7c-x2x9q` at `client_ip` and the pod
/// `server.1` of StatefulSet `server.0` at `server_ip`, serving `port`;
/// its kubeconfig written into `dir`.
fn two_pods(
    dir: &std::path::Path,
    pod_range: &str,
    client_ip: &str,
    server: (&str, &str),
    server_ip: &str,
    port: u16,
) -> (apiserver::ApiServer, std::path::PathBuf) {
    let api = apiserver::ApiServer::start();
    api.put(objects::node(NODE, "192.168.77.11", pod_range));
    api.put(objects::replica_set("shop", "web-5d8f7c", "web"));
    api.put(objects::pod(
        "shop",
        "web-5d8f7c-x2x9q",
        Some(("ReplicaSet", "web-5d8f7c")),
        NODE,
        client_ip,
        "app",
        9000,
    ));
    let (statefulset, pod) = server;
    api.put(objects::pod(
        "shop",
        pod,
        Some(("StatefulSet", statefulset)),
        NODE,
        server_ip,
        "server",
        port,
    ));
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);
    (api, kubeconfig)
}

#[test]
fn metrics_name_the_pods_workloads_and_services_at_both_ends() {
    if !privileged("agent with Kubernetes names") {
        return;
    }
    let dir = temp_dir("k8s-agent");
    // the "pods": a server on 127.0.0.2 (redis-0 of a StatefulSet behind
    // Service redis) and a client calling from 127.0.0.3 (a Deployment's)
    let port = http_server_on("127.0.0.2");
    let (api, kubeconfig) = two_pods(
        &dir,
        "10.244.7.0/24",
        "127.0.0.3",
        ("redis", "redis-0"),
        "127.0.0.2",
        port,
    );
    api.put(objects::service("shop", "redis", "10.96.0.10", port, None));
    api.put(objects::endpoint_slice(
        "shop",
        "redis",
        &[("redis-0", "127.0.0.2")],
        port,
    ));

    let listen = free_port();
    let agent = kindling()
        .arg("agent")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--node", NODE, "--port", &port.to_string()])
        .args(["--cluster-cidr", "10.96.0.0/12"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent starts");
    let agent = Stop(agent);
    wait_for("/readyz", Duration::from_secs(40), || {
        get(listen, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    for _ in 0..5 {
        let status = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--interface", "127.0.0.3"])
            .arg(format!("http://127.0.0.2:{port}/users/42"))
            .status()
            .expect("curl runs");
        assert!(status.success());
    }
    let mut metrics = String::new();
    let curl_series = |metrics: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("kindling_topology_request_total{") && l.contains("src_comm=\"curl\"")
            })
            .map(str::to_owned)
    };
    wait_for(
        "five requests named in /metrics",
        Duration::from_secs(20),
        || {
            metrics = get(listen, "/metrics").map(|(_, b)| b).unwrap_or_default();
            curl_series(&metrics).is_some_and(|l| l.ends_with(" 5"))
        },
    );
    let topology = curl_series(&metrics).unwrap();
    for label in [
        r#"src_namespace="shop""#,
        r#"src_workload_kind="deployment""#,
        r#"src_workload_name="web""#,
        r#"src_pod="web-5d8f7c-x2x9q""#,
        r#"src_node="test-node""#,
        r#"dst_namespace="shop""#,
        r#"dst_workload_kind="statefulset""#,
        r#"dst_workload_name="redis""#,
        r#"dst_service="redis""#,
        r#"dst_pod="redis-0""#,
        r#"dst_container="server""#,
    ] {
        assert!(topology.contains(label), "{label} missing from {topology}");
    }
    let entity = metrics
        .lines()
        .find(|l| {
            l.starts_with("kindling_entity_request_total{")
                && l.contains("request_content=\"GET /users/{id}\"")
        })
        .unwrap_or_else(|| panic!("no entity series:\n{metrics}"));
    for label in [
        r#"namespace="shop""#,
        r#"workload_name="redis""#,
        r#"service="redis""#,
        r#"pod="redis-0""#,
    ] {
        assert!(entity.contains(label), "{label} missing from {entity}");
    }
    assert!(
        metrics.contains(r#"kindling_k8s_watch_synced{node="test-node",kind="Pod"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"kindling_k8s_workload_info{node="test-node",namespace="shop",workload_kind="statefulset",workload_name="redis",pod="redis-0"} 1"#),
        "{metrics}"
    );
    // the exposition parses (promtool, when installed, is the oracle; its
    // lint notes on OpenMetrics counter names are not parse errors)
    let file = dir.join("metrics.txt");
    std::fs::write(&file, &metrics).unwrap();
    let checked = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output();
    match checked {
        Ok(out) => {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(!err.contains("error while linting"), "promtool: {err}");
        }
        Err(e) => assert!(std::env::var_os("CI").is_none(), "promtool: {e}"),
    }
    let err = terminate(agent);
    assert!(err.contains("Kubernetes metadata listed"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// Two network namespaces the test makes stand in for pods on this node
/// (their own addresses, veth pairs to the host, which routes between
/// them); a Service whose ClusterIP is a real nftables DNAT rule.
struct PodNetwork {
    client: String,
    server: String,
    table: String,
}

impl PodNetwork {
    const CLIENT_IP: &'static str = "10.233.1.2";
    const SERVER_IP: &'static str = "10.233.2.2";
    const CLUSTER_IP: &'static str = "10.96.0.10";
    /// The ClusterIP of the Redis service (port 6379 → the server's 6379).
    const CACHE_IP: &'static str = "10.96.0.11";

    fn sh(script: &str) {
        let out = Command::new("sh")
            .args(["-ec", script])
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "{script}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The namespaces, routes through the host (forwarding on their two
    /// host-side interfaces only), and `CLUSTER_IP:80` → `SERVER_IP:port`.
    fn create(port: u16) -> Self {
        let id = std::process::id() % 100_000;
        let net = Self {
            client: format!("kc{id}"),
            server: format!("ks{id}"),
            table: format!("kindling_test_{id}"),
        };
        let (c, s, t) = (&net.client, &net.server, &net.table);
        Self::sh(&format!(
            "ip netns add {c}; ip netns add {s}
             ip link add {c} type veth peer name eth0 netns {c}
             ip link add {s} type veth peer name eth0 netns {s}
             ip addr add 10.233.1.1/24 dev {c}; ip link set {c} up
             ip addr add 10.233.2.1/24 dev {s}; ip link set {s} up
             ip -n {c} addr add {ci}/24 dev eth0; ip -n {c} link set eth0 up; ip -n {c} link set lo up
             ip -n {c} route add default via 10.233.1.1
             ip -n {s} addr add {si}/24 dev eth0; ip -n {s} link set eth0 up; ip -n {s} link set lo up
             ip -n {s} route add default via 10.233.2.1
             sysctl -qw net.ipv4.conf.{c}.forwarding=1 net.ipv4.conf.{s}.forwarding=1
             nft add table ip {t}
             nft add chain ip {t} pre '{{ type nat hook prerouting priority dstnat; }}'
             nft add rule ip {t} pre ip daddr {vip} tcp dport 80 dnat to {si}:{port}
             nft add rule ip {t} pre ip daddr {cache} tcp dport 6379 dnat to {si}:6379",
            ci = Self::CLIENT_IP,
            si = Self::SERVER_IP,
            vip = Self::CLUSTER_IP,
            cache = Self::CACHE_IP,
        ));
        net
    }

    fn exec(ns: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]);
        c
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        let (c, s, t) = (&self.client, &self.server, &self.table);
        let _ = Command::new("sh")
            .args([
                "-c",
                &format!(
                    "nft delete table ip {t}; ip netns pids {s} | xargs -r kill; \
                     ip link del {c}; ip link del {s}; ip netns del {c}; ip netns del {s}"
                ),
            ])
            .status();
    }
}

#[test]
fn a_cluster_ip_is_named_by_its_backend_pod_across_namespaces() {
    if !privileged("agent naming a ClusterIP's backend") {
        return;
    }
    let dir = temp_dir("k8s-netns");
    let port = 8080;
    let net = PodNetwork::create(port);
    let server = PodNetwork::exec(&net.server)
        .args([
            "python3",
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            PodNetwork::SERVER_IP,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 serves HTTP");
    let _server = Stop(server);
    // and Redis in the same pod
    let redis = PodNetwork::exec(&net.server)
        .args([
            "redis-server",
            "--port",
            "6379",
            "--bind",
            PodNetwork::SERVER_IP,
        ])
        .args([
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
        ])
        .arg(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    let _redis = Stop(redis);
    let redis_cli = |host: &str, args: &[&str]| {
        PodNetwork::exec(&net.client)
            .args(["redis-cli", "-h", host, "-p", "6379"])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    wait_for("the redis pod", Duration::from_secs(20), || {
        redis_cli(PodNetwork::SERVER_IP, &["ping"]) == "PONG"
    });
    let curl = |url: &str| {
        PodNetwork::exec(&net.client)
            .args([
                "curl",
                "-s",
                "-m",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                url,
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    };
    let direct = format!("http://{}:{port}/", PodNetwork::SERVER_IP);
    wait_for("the server pod", Duration::from_secs(20), || {
        curl(&direct) == "200"
    });

    let (api, kubeconfig) = two_pods(
        &dir,
        "10.233.0.0/16",
        PodNetwork::CLIENT_IP,
        ("api", "api-0"),
        PodNetwork::SERVER_IP,
        port,
    );
    api.put(objects::service(
        "shop",
        "api",
        PodNetwork::CLUSTER_IP,
        80,
        None,
    ));
    api.put(objects::endpoint_slice(
        "shop",
        "api",
        &[("api-0", PodNetwork::SERVER_IP)],
        port,
    ));
    api.put(objects::service(
        "shop",
        "cache",
        PodNetwork::CACHE_IP,
        6379,
        None,
    ));
    api.put(objects::endpoint_slice(
        "shop",
        "cache",
        &[("api-0", PodNetwork::SERVER_IP)],
        6379,
    ));

    let listen = free_port();
    let agent = kindling()
        .arg("agent")
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--node", NODE, "--port", &format!("80,{port},6379")])
        .args(["--cluster-cidr", "10.96.0.0/12"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("agent starts");
    let agent = Stop(agent);
    wait_for("/readyz", Duration::from_secs(40), || {
        get(listen, "/readyz").is_some_and(|(s, _)| s == 200)
    });
    let via_service = format!("http://{}/", PodNetwork::CLUSTER_IP);
    for i in 0..3 {
        assert_eq!(curl(&via_service), "200", "through the ClusterIP");
        assert_eq!(curl(&direct), "200", "to the pod");
        let key = format!("cart:{i}");
        assert_eq!(redis_cli(PodNetwork::CACHE_IP, &["set", &key, "1"]), "OK");
    }
    let series = |metrics: &str, dst: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("kindling_topology_request_total{")
                    && l.contains("src_comm=\"curl\"")
                    && l.contains(&format!("dst_ip=\"{dst}\""))
            })
            .map(str::to_owned)
    };
    let mut metrics = String::new();
    wait_for("both calls in /metrics", Duration::from_secs(20), || {
        metrics = get(listen, "/metrics").map(|(_, b)| b).unwrap_or_default();
        series(&metrics, PodNetwork::CLUSTER_IP).is_some_and(|l| l.ends_with(" 3"))
            && series(&metrics, PodNetwork::SERVER_IP).is_some_and(|l| l.ends_with(" 3"))
    });
    for dst in [PodNetwork::CLUSTER_IP, PodNetwork::SERVER_IP] {
        let line = series(&metrics, dst).unwrap();
        for label in [
            r#"src_workload_name="web""#,
            r#"src_pod="web-5d8f7c-x2x9q""#,
            r#"dst_namespace="shop""#,
            r#"dst_service="api""#,
            r#"dst_workload_kind="statefulset""#,
            r#"dst_workload_name="api""#,
            r#"dst_pod="api-0""#,
        ] {
            assert!(
                line.contains(label),
                "calls to {dst}: {label} missing from {line}"
            );
        }
    }
    // Redis through its ClusterIP: the backend pod, and the service
    // dialled (a pod behind two services is named by the one called)
    let redis_series = |metrics: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("kindling_topology_request_total{")
                    && l.contains("protocol=\"redis\"")
                    && l.contains(&format!("dst_ip=\"{}\"", PodNetwork::CACHE_IP))
            })
            .map(str::to_owned)
    };
    wait_for(
        "the Redis calls in /metrics",
        Duration::from_secs(20),
        || {
            metrics = get(listen, "/metrics").map(|(_, b)| b).unwrap_or_default();
            redis_series(&metrics).is_some_and(|l| l.ends_with(" 3"))
        },
    );
    let redis = redis_series(&metrics).unwrap();
    for label in [
        r#"src_workload_name="web""#,
        r#"dst_service="cache""#,
        r#"dst_pod="api-0""#,
    ] {
        assert!(redis.contains(label), "{label} missing from {redis}");
    }
    let entity = metrics
        .lines()
        .find(|l| l.starts_with("kindling_entity_request_total{") && l.contains("comm=\"python3\""))
        .unwrap_or_else(|| panic!("no entity series of the server:\n{metrics}"));
    assert!(
        entity.contains(r#"pod="api-0""#) && entity.contains(r#"workload_name="api""#),
        "{entity}"
    );
    let err = terminate(agent);
    assert!(!err.contains("no conntrack"), "{err}");
    drop(net);
    std::fs::remove_dir_all(dir).unwrap();
}

/// `record` saves the metadata it watched beside the capture; `replay`
/// elsewhere (the API server gone, the files moved) names the same pods.
#[test]
fn a_recording_keeps_its_kubernetes_names_for_replay() {
    if !privileged("record with Kubernetes metadata") {
        return;
    }
    let dir = temp_dir("k8s-record");
    let port = http_server_on("127.0.0.4");
    let (api, kubeconfig) = two_pods(
        &dir,
        "10.244.7.0/24",
        "127.0.0.5",
        ("cart", "cart-0"),
        "127.0.0.4",
        port,
    );
    let capture = dir.join("k8s.kcap");
    let record = kindling()
        .arg("record")
        .arg("-o")
        .arg(&capture)
        .arg("--quiet")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["--node", NODE, "--port", &port.to_string()])
        .stderr(Stdio::piped())
        .spawn()
        .expect("record starts");
    let record = Stop(record);
    // the probe is attached once traffic is captured: call until it is
    wait_for("the recording to capture", Duration::from_secs(40), || {
        let ok = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "--interface", "127.0.0.5"])
            .arg(format!("http://127.0.0.4:{port}/cart/7"))
            .status()
            .is_ok_and(|s| s.success());
        ok && std::fs::metadata(&capture).is_ok_and(|m| m.len() > 4096)
    });
    let err = terminate(record);
    assert!(err.contains("saved the Kubernetes metadata"), "{err}");
    drop(api);
    // another machine: only the two files
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::rename(&capture, elsewhere.join("k8s.kcap")).unwrap();
    std::fs::rename(
        dir.join("k8s.kcap.k8s.json"),
        elsewhere.join("k8s.kcap.k8s.json"),
    )
    .unwrap();
    let out = kindling()
        .args(["replay", "-o", "json"])
        .arg(elsewhere.join("k8s.kcap"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v["kind"] == "exchange" && v["role"] == "client")
        .collect();
    assert!(!lines.is_empty(), "no client exchanges replayed");
    for x in &lines {
        assert_eq!(x["resource"]["k8s.pod.name"], "web-5d8f7c-x2x9q", "{x}");
        assert_eq!(x["resource"]["k8s.deployment.name"], "web", "{x}");
        assert_eq!(x["peer"]["k8s.pod.name"], "cart-0", "{x}");
        assert_eq!(x["peer"]["k8s.statefulset.name"], "cart", "{x}");
        // nothing of the replaying host's /proc
        assert!(x["resource"].get("process.pid").is_none(), "{x}");
    }
    let out = kindling()
        .args(["replay", "-o", "prometheus"])
        .arg(elsewhere.join("k8s.kcap"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("kindling_topology_request_total{")
                && l.contains(r#"src_workload_name="web""#)
                && l.contains(r#"dst_pod="cart-0""#)),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
