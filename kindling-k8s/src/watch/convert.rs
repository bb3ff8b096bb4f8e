//! API objects → the store's compact shapes. Pure functions: the watchers
//! keep nothing of an API object but what these return.

use std::net::IpAddr;

use k8s_openapi::api::core::v1 as core;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::store::{Container, Node, Owner, Pod, Service};

/// The label naming an EndpointSlice's service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A pod whose phase is `Succeeded` or `Failed` has given its address back:
/// another pod may get it, so the finished one is treated as deleted.
pub(crate) fn pod_is_finished(pod: &core::Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// The controller of an object (`controller: true`), else its first owner.
pub(crate) fn owner(meta: &ObjectMeta) -> Option<Owner> {
    let refs = meta.owner_references.as_deref().unwrap_or_default();
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())
        .map(|r| Owner {
            kind: r.kind.clone(),
            name: r.name.clone(),
        })
}

/// A runtime's container id without its `containerd://` (`cri-o://`,
/// `docker://`) scheme.
fn bare_container_id(id: &str) -> &str {
    id.split_once("://").map_or(id, |(_, bare)| bare)
}

fn port(p: i32) -> Option<u16> {
    u16::try_from(p).ok().filter(|p| *p != 0)
}

/// The store's pod, or `None` for an object missing its UID.
pub(crate) fn pod(pod: &core::Pod) -> Option<Pod> {
    let meta = &pod.metadata;
    let uid = meta.uid.clone()?;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let containers = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(|c| {
            let ports = c.ports.as_deref().unwrap_or_default();
            Container {
                name: c.name.clone(),
                id: statuses
                    .iter()
                    .find(|s| s.name == c.name)
                    .and_then(|s| s.container_id.as_deref())
                    .map(|id| bare_container_id(id).to_owned()),
                ports: ports
                    .iter()
                    .filter_map(|p| port(p.container_port))
                    .collect(),
                host_ports: ports
                    .iter()
                    .filter_map(|p| p.host_port.and_then(port))
                    .collect(),
            }
        })
        .collect();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|ip| ip.ip.parse().ok())
        .collect();
    if ips.is_empty() {
        ips.extend(status.and_then(|s| s.pod_ip.as_deref()?.parse::<IpAddr>().ok()));
    }
    Some(Pod {
        uid,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        ips,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        owner: owner(meta),
        containers,
    })
}

/// The store's service, without its backends (they come from
/// EndpointSlices).
pub(crate) fn service(service: &core::Service) -> Service {
    let meta = &service.metadata;
    let spec = service.spec.as_ref();
    let mut addresses: Vec<&str> = spec
        .and_then(|s| s.cluster_ips.as_deref())
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    if addresses.is_empty() {
        addresses.extend(spec.and_then(|s| s.cluster_ip.as_deref()));
    }
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    Service {
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
        // a headless service's "None" does not parse, and is left out
        cluster_ips: addresses.iter().filter_map(|a| a.parse().ok()).collect(),
        ports: ports.iter().filter_map(|p| port(p.port)).collect(),
        node_ports: ports
            .iter()
            .filter_map(|p| p.node_port.and_then(port))
            .collect(),
        backends: Vec::new(),
        target_ports: Vec::new(),
    }
}

/// What an EndpointSlice says of its service: which pods and ports serve it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Endpoints {
    /// UIDs of the pods listed.
    pub pods: Vec<String>,
    /// The ports they serve on.
    pub ports: Vec<u16>,
    /// (pod UID, address, node) of each endpoint naming a pod.
    pub addresses: Vec<(String, IpAddr, String)>,
}

/// The service an EndpointSlice serves (`namespace`, `name`), and its
/// endpoints.
pub(crate) fn endpoint_slice(slice: &EndpointSlice) -> Option<((String, String), Endpoints)> {
    let meta = &slice.metadata;
    let service = meta.labels.as_ref()?.get(SERVICE_NAME_LABEL)?.clone();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let pods = slice
        .endpoints
        .iter()
        .filter_map(|e| e.target_ref.as_ref())
        .filter(|r| r.kind.as_deref() == Some("Pod"))
        .filter_map(|r| r.uid.clone())
        .collect();
    let addresses = slice
        .endpoints
        .iter()
        .filter_map(|e| {
            let r = e
                .target_ref
                .as_ref()
                .filter(|r| r.kind.as_deref() == Some("Pod"))?;
            let uid = r.uid.clone()?;
            let node = e.node_name.clone().unwrap_or_default();
            Some(
                e.addresses
                    .iter()
                    .filter_map(|a| a.parse().ok())
                    .map(|ip| (uid.clone(), ip, node.clone()))
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect();
    let ports = slice
        .ports
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter_map(|p| p.port.and_then(port))
        .collect();
    Some((
        (namespace, service),
        Endpoints {
            pods,
            ports,
            addresses,
        },
    ))
}

/// The store's node (its internal and external addresses) and its pod
/// ranges.
pub(crate) fn node(node: &core::Node) -> (Node, Vec<(IpAddr, u8)>) {
    let addresses = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_deref())
        .unwrap_or_default();
    let spec = node.spec.as_ref();
    let mut cidrs: Vec<&str> = spec
        .and_then(|s| s.pod_cidrs.as_deref())
        .unwrap_or_default()
        .iter()
        .map(String::as_str)
        .collect();
    if cidrs.is_empty() {
        cidrs.extend(spec.and_then(|s| s.pod_cidr.as_deref()));
    }
    let ranges = cidrs.iter().filter_map(|c| parse_cidr(c)).collect();
    let node = Node {
        name: node.metadata.name.clone().unwrap_or_default(),
        ips: addresses
            .iter()
            .filter(|a| matches!(a.type_.as_str(), "InternalIP" | "ExternalIP"))
            .filter_map(|a| a.address.parse().ok())
            .collect(),
    };
    (node, ranges)
}

/// `10.244.0.0/16` → (10.244.0.0, 16).
pub fn parse_cidr(cidr: &str) -> Option<(IpAddr, u8)> {
    let (ip, bits) = cidr.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let bits: u8 = bits.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((ip, bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_deployment_pod_as_a_cluster_returns_it() {
        let p: core::Pod = from_json(serde_json::json!({
            "metadata": {"name": "web-5d8f-x2x", "namespace": "shop", "uid": "u1",
                "ownerReferences": [
                    {"apiVersion": "v1", "kind": "Other", "name": "x", "uid": "o0"},
                    {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-5d8f",
                     "uid": "o1", "controller": true}]},
            "spec": {"nodeName": "n1", "containers": [
                {"name": "app", "ports": [{"containerPort": 8080}, {"containerPort": 9090, "hostPort": 19090}]},
                {"name": "sidecar"}]},
            "status": {"phase": "Running", "podIP": "10.244.1.5",
                "podIPs": [{"ip": "10.244.1.5"}, {"ip": "fd00::5"}],
                "containerStatuses": [{"name": "sidecar", "containerID": "containerd://abc",
                    "image": "i", "imageID": "", "ready": true, "restartCount": 0}]}
        }));
        let pod = pod(&p).unwrap();
        assert_eq!(pod.uid, "u1");
        assert_eq!(pod.node, "n1");
        assert_eq!(pod.ips.len(), 2);
        assert_eq!(pod.owner.unwrap().kind, "ReplicaSet");
        assert_eq!(pod.containers[0].ports, [8080, 9090]);
        assert_eq!(pod.containers[0].host_ports, [19090]);
        assert_eq!(pod.containers[0].id, None);
        assert_eq!(pod.containers[1].id.as_deref(), Some("abc"));
        assert!(!pod_is_finished(&p));
    }

    #[test]
    fn a_headless_service_has_no_address_and_slices_name_their_pods() {
        let s: core::Service = from_json(serde_json::json!({
            "metadata": {"name": "db", "namespace": "shop"},
            "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 3306}]}
        }));
        let s = service(&s);
        assert!(s.cluster_ips.is_empty());
        assert_eq!(s.ports, [3306]);
        let slice: EndpointSlice = from_json(serde_json::json!({
            "metadata": {"name": "db-abc", "namespace": "shop",
                "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"port": 3306}],
            "endpoints": [
                {"addresses": ["10.244.1.9"], "targetRef": {"kind": "Pod", "name": "db-0", "uid": "p9"}},
                {"addresses": ["192.168.1.50"]}]
        }));
        let (key, endpoints) = endpoint_slice(&slice).unwrap();
        assert_eq!(key, ("shop".to_owned(), "db".to_owned()));
        assert_eq!(endpoints.pods, ["p9"]);
        assert_eq!(endpoints.ports, [3306]);
    }

    #[test]
    fn cidrs_parse_and_bad_ones_are_refused() {
        assert_eq!(
            parse_cidr("10.244.0.0/16"),
            Some(("10.244.0.0".parse().unwrap(), 16))
        );
        assert_eq!(parse_cidr("fd00::/129"), None);
        assert_eq!(parse_cidr("10.0.0.0"), None);
    }
}
