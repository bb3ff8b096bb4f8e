//! Node-local mode: full pods only for this node (a field selector), and
//! for the rest of the cluster only what naming a remote peer needs — its
//! metadata (name, namespace, owner) from a metadata-only watch of every
//! pod, and its addresses and node from the EndpointSlices. A remote pod
//! that no service selects has no address here and stays
//! `NOT_FOUND_INTERNAL`: the price of not moving every pod's spec and
//! status over the API.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use crate::store::{Owner, Pod};

/// What the node-local watchers know of pods on other nodes.
#[derive(Debug, Default)]
pub(super) struct RemotePods {
    /// Pods watched in full (this node's): never drawn from the rest.
    pub local: HashSet<String>,
    /// UID → (namespace, name, owner), from the metadata watch.
    pub meta: HashMap<String, (String, String, Option<Owner>)>,
    /// UID → slice key → (addresses, node), from EndpointSlices.
    pub endpoints: HashMap<String, HashMap<String, (Vec<IpAddr>, String)>>,
    /// UIDs put in the store from here.
    pub published: HashSet<String>,
}

/// What to do with the store for one remote pod.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Change {
    /// Add or replace it.
    Upsert(Pod),
    /// It went: delete it.
    Delete,
    /// Nothing.
    None,
}

impl RemotePods {
    /// Replaces what the slice `slice` says of pods: (uid, address, node)
    /// per endpoint. Returns the UIDs whose record changed.
    pub fn set_slice(
        &mut self,
        slice: &str,
        endpoints: &[(String, IpAddr, String)],
    ) -> Vec<String> {
        let mut touched: Vec<String> = Vec::new();
        for (uid, slices) in &mut self.endpoints {
            if slices.remove(slice).is_some() {
                touched.push(uid.clone());
            }
        }
        self.endpoints.retain(|_, slices| !slices.is_empty());
        for (uid, ip, node) in endpoints {
            let entry = self
                .endpoints
                .entry(uid.clone())
                .or_default()
                .entry(slice.to_owned())
                .or_insert_with(|| (Vec::new(), node.clone()));
            entry.0.push(*ip);
            touched.push(uid.clone());
        }
        touched.sort();
        touched.dedup();
        touched
    }

    /// The change `uid` needs in the store now.
    pub fn change(&mut self, uid: &str) -> Change {
        let record = (!self.local.contains(uid))
            .then(|| {
                let (namespace, name, owner) = self.meta.get(uid)?;
                let slices = self.endpoints.get(uid)?;
                let mut ips: Vec<IpAddr> =
                    slices.values().flat_map(|(ips, _)| ips).copied().collect();
                ips.sort();
                ips.dedup();
                let node = slices
                    .values()
                    .next()
                    .map(|(_, n)| n.clone())
                    .unwrap_or_default();
                Some(Pod {
                    uid: uid.to_owned(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                    node,
                    ips,
                    host_network: false,
                    owner: owner.clone(),
                    containers: Vec::new(),
                })
            })
            .flatten();
        match record {
            Some(pod) => {
                self.published.insert(uid.to_owned());
                Change::Upsert(pod)
            }
            None if self.published.remove(uid) && !self.local.contains(uid) => Change::Delete,
            None => {
                self.published.remove(uid);
                Change::None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_pod_needs_its_metadata_and_an_address() {
        let mut r = RemotePods::default();
        let ip: IpAddr = "10.244.2.9".parse().unwrap();
        assert_eq!(
            r.set_slice("shop/api-x", &[("u1".into(), ip, "n2".into())]),
            ["u1"]
        );
        assert_eq!(r.change("u1"), Change::None);
        r.meta
            .insert("u1".into(), ("shop".into(), "api-0".into(), None));
        let Change::Upsert(pod) = r.change("u1") else {
            panic!("not published")
        };
        assert_eq!((pod.node.as_str(), pod.ips.as_slice()), ("n2", &[ip][..]));
        // its slice lets it go: deleted
        assert_eq!(r.set_slice("shop/api-x", &[]), ["u1"]);
        assert_eq!(r.change("u1"), Change::Delete);
        assert_eq!(r.change("u1"), Change::None);
        // a pod of this node is never drawn from here
        r.local.insert("u1".into());
        r.set_slice("shop/api-x", &[("u1".into(), ip, "n1".into())]);
        assert_eq!(r.change("u1"), Change::None);
    }
}
