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

#[test]
fn metrics_name_the_pods_workloads_and_services_at_both_ends() {
    if !privileged("agent with Kubernetes names") {
        return;
    }
    let dir = temp_dir("k8s-agent");
    // the "pods": a server on 127.0.0.2 (redis-0 of a StatefulSet behind
    // Service redis) and a client calling from 127.0.0.3 (a Deployment's)
    let port = http_server_on("127.0.0.2");
    let api = apiserver::ApiServer::start();
    api.put(objects::node(NODE, "192.168.77.11", "10.244.7.0/24"));
    api.put(objects::replica_set("shop", "web-5d8f7c", "web"));
    api.put(objects::pod(
        "shop",
        "web-5d8f7c-x2x9q",
        Some(("ReplicaSet", "web-5d8f7c")),
        NODE,
        "127.0.0.3",
        "app",
        8080,
    ));
    api.put(objects::pod(
        "shop",
        "redis-0",
        Some(("StatefulSet", "redis")),
        NODE,
        "127.0.0.2",
        "server",
        port,
    ));
    api.put(objects::service("shop", "redis", "10.96.0.10", port, None));
    api.put(objects::endpoint_slice(
        "shop",
        "redis",
        &[("redis-0", "127.0.0.2")],
        port,
    ));
    let kubeconfig = dir.join("kubeconfig");
    api.write_kubeconfig(&kubeconfig);

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
