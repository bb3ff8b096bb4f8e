//! Names DNS answers gave to addresses: the name of a peer that no protocol
//! header names.

use std::net::IpAddr;

use kindling_proto::AttributeSink;

use crate::record::{Exchange, Role};

/// Addresses that DNS answers seen by the pipeline resolved, with the name
/// asked (bounded; the older generation is forgotten when the newer fills).
#[derive(Debug, Default)]
pub(super) struct Names {
    // addresses from DNS answers (traffic): a keyed, fast hash
    now: ahash::AHashMap<IpAddr, String>,
    before: ahash::AHashMap<IpAddr, String>,
}

/// Most addresses remembered per generation.
const MAX_NAMES: usize = 4096;

impl Names {
    pub(super) fn learn(&mut self, name: &str, addrs: &[IpAddr]) {
        for a in addrs {
            if self.now.len() >= MAX_NAMES {
                self.before = std::mem::take(&mut self.now);
            }
            self.now.insert(*a, name.to_owned());
        }
    }

    fn get(&self, addr: &IpAddr) -> Option<&String> {
        self.now.get(addr).or_else(|| self.before.get(addr))
    }

    /// Gives a client's exchange the name its server was resolved from,
    /// unless the protocol named it already (HTTP's Host).
    pub(super) fn name_peer(&self, x: &mut Exchange) {
        if x.role == Role::Client && !x.attributes.contains_key("server.address") {
            if let Some(name) = self.get(&x.dst.ip()) {
                x.attributes.put("server.address", name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_older_generation_is_forgotten_when_the_newer_fills() {
        let mut names = Names::default();
        let addr = |i: u32| IpAddr::from(i.to_be_bytes());
        names.learn("first.test", &[addr(0)]);
        for i in 1..MAX_NAMES as u32 {
            names.learn("many.test", &[addr(i)]);
        }
        assert_eq!(names.get(&addr(0)).map(String::as_str), Some("first.test"));
        // a full generation moves to `before`: still known
        names.learn("next.test", &[addr(u32::MAX)]);
        assert_eq!(names.get(&addr(0)).map(String::as_str), Some("first.test"));
        // the generation after that forgets it
        for i in 0..MAX_NAMES as u32 {
            names.learn("more.test", &[addr(1 << 20 | i)]);
        }
        assert_eq!(names.get(&addr(0)), None);
    }
}
