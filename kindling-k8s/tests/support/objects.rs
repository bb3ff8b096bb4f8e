//! Kubernetes objects in the shapes a real cluster (containerd, kubelet,
//! the endpoint-slice controller) returns them, trimmed of fields nothing
//! reads.

#![allow(dead_code, reason = "each test uses part of it")]

use serde_json::{json, Value};

fn uid(name: &str) -> String {
    // stable and UUID-shaped
    let h = name
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    format!(
        "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
        h as u32,
        (h >> 32) as u16,
        (h >> 48) & 0xfff,
        h & 0xfff,
        h & 0xffff_ffff_ffff
    )
}

pub fn node(name: &str, ip: &str, pod_cidr: &str) -> Value {
    json!({
        "kind": "Node", "apiVersion": "v1",
        "metadata": {"name": name, "uid": uid(name), "labels": {"kubernetes.io/hostname": name}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
        "status": {"addresses": [
            {"type": "InternalIP", "address": ip},
            {"type": "Hostname", "address": name}]}
    })
}

/// A pod of `owner` = (kind, name), running on `node` at `ip`, one
/// container `container` serving `port`.
pub fn pod(
    ns: &str,
    name: &str,
    owner: Option<(&str, &str)>,
    node: &str,
    ip: &str,
    container: &str,
    port: u16,
) -> Value {
    let mut p = json!({
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "uid": uid(&format!("{ns}/{name}")),
            "labels": {"app": name.split('-').next().unwrap()}},
        "spec": {"nodeName": node, "containers": [
            {"name": container, "image": "example/app:1", "ports": [{"containerPort": port, "protocol": "TCP"}]}]},
        "status": {"phase": "Running", "hostIP": "192.168.1.11", "podIP": ip, "podIPs": [{"ip": ip}],
            "containerStatuses": [{"name": container, "ready": true, "restartCount": 0,
                "image": "example/app:1", "imageID": "example/app@sha256:00",
                "containerID": format!("containerd://{}", "ab".repeat(32))}]}
    });
    if let Some((kind, owner)) = owner {
        let api = if kind == "Job" { "batch/v1" } else { "apps/v1" };
        p["metadata"]["ownerReferences"] = json!([{"apiVersion": api, "kind": kind, "name": owner,
            "uid": uid(owner), "controller": true, "blockOwnerDeletion": true}]);
    }
    p
}

pub fn pod_uid(ns: &str, name: &str) -> String {
    uid(&format!("{ns}/{name}"))
}

pub fn replica_set(ns: &str, name: &str, deployment: &str) -> Value {
    json!({
        "kind": "ReplicaSet", "apiVersion": "apps/v1",
        "metadata": {"name": name, "namespace": ns, "uid": uid(name),
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                "uid": uid(deployment), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": deployment}}}
    })
}

pub fn job(ns: &str, name: &str, cron_job: &str) -> Value {
    json!({
        "kind": "Job", "apiVersion": "batch/v1",
        "metadata": {"name": name, "namespace": ns, "uid": uid(name),
            "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": cron_job,
                "uid": uid(cron_job), "controller": true, "blockOwnerDeletion": true}]},
        "spec": {"template": {"spec": {"containers": []}}}
    })
}

pub fn service(ns: &str, name: &str, cluster_ip: &str, port: u16, node_port: Option<u16>) -> Value {
    let mut port = json!({"name": "main", "protocol": "TCP", "port": port, "targetPort": port});
    if let Some(np) = node_port {
        port["nodePort"] = json!(np);
    }
    json!({
        "kind": "Service", "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "uid": uid(&format!("svc/{ns}/{name}"))},
        "spec": {"type": if node_port.is_some() { "NodePort" } else { "ClusterIP" },
            "clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": [port],
            "selector": {"app": name}, "ipFamilies": ["IPv4"]}
    })
}

/// An EndpointSlice of service `service` listing these (pod name, ip).
pub fn endpoint_slice(ns: &str, service: &str, pods: &[(&str, &str)], port: u16) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|(name, ip)| {
            json!({"addresses": [ip], "conditions": {"ready": true},
            "targetRef": {"kind": "Pod", "namespace": ns, "name": name, "uid": pod_uid(ns, name)}})
        })
        .collect();
    json!({
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": format!("{service}-x7k2p"), "namespace": ns,
            "labels": {"kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4", "endpoints": endpoints,
        "ports": [{"name": "main", "port": port, "protocol": "TCP"}]
    })
}
