//! What most exchanges cost: one fingerprint of the raw values that choose
//! an exchange's series, and one lookup of it.
//!
//! Finding a series the long way templates the request, interns label
//! values and applies the caps. The memo remembers where each combination
//! of raw values led, so that only a combination not seen before pays for
//! that. It can forget (it starts over when full) because the caps never
//! change an answer once given.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash};
use std::net::IpAddr;

use kindling_proto::ProtocolId;
use rustc_hash::FxHashMap;

use super::content::{content_parts, response_content};
use super::series::Series;
use crate::record::{Comm, Exchange, Role};

/// Most raw value combinations remembered; the memo starts over when full.
const MEMO_CAP: usize = 8192;

/// The series an exchange's raw values lead to.
#[derive(Clone, Debug)]
pub(super) struct Memo {
    /// Where the exchange is counted.
    pub(super) series: Series,
    /// The caps refused a series of its own: counted as overflow each time.
    pub(super) overflow: bool,
}

/// Fingerprints of raw values → series.
#[derive(Debug, Default)]
pub(super) struct Memos {
    table: FxHashMap<u128, Memo>,
    fingerprints: Fingerprints,
    /// The identity labels' attribute keys (see `MetricsConfig::identity`).
    identity: &'static [(&'static str, &'static str)],
}

impl Memos {
    /// Empty; `identity` as the model's.
    pub(super) fn new(identity: &'static [(&'static str, &'static str)]) -> Self {
        Self {
            identity,
            ..Self::default()
        }
    }

    /// The fingerprint of what chooses the series of `x`.
    pub(super) fn fingerprint(&self, x: &Exchange) -> u128 {
        self.fingerprints.of(&RawKey::of(x, self.identity))
    }

    /// Where `fingerprint` led before, if remembered.
    pub(super) fn get(&self, fingerprint: u128) -> Option<&Memo> {
        self.table.get(&fingerprint)
    }

    /// Remembers where `fingerprint` leads.
    pub(super) fn insert(&mut self, fingerprint: u128, memo: Memo) -> &Memo {
        if self.table.len() >= MEMO_CAP {
            self.table.clear();
        }
        self.table.entry(fingerprint).or_insert(memo)
    }
}

/// Everything that chooses an exchange's series, borrowed from it.
#[derive(Clone, Copy, Debug)]
struct RawKey<'a> {
    server: bool,
    protocol: ProtocolId,
    comm: Comm,
    /// Topology only (an entity is its port).
    dst: Option<IpAddr>,
    port: u16,
    error: bool,
    slow: bool,
    /// Entity: request content parts and response content; topology: the
    /// server's name.
    parts: [&'a str; 3],
    /// Identity attributes: the traced end's and the peer's, and the keys
    /// read from them (none when the model has no identity labels).
    ends: [&'a BTreeMap<&'static str, String>; 2],
    identity: &'static [(&'static str, &'static str)],
}

impl<'a> RawKey<'a> {
    fn of(x: &'a Exchange, identity: &'static [(&'static str, &'static str)]) -> Self {
        let server = x.role == Role::Server;
        let parts = if server {
            let [first, second] = content_parts(x);
            [first, second, response_content(x)]
        } else {
            let name = x.attributes.get("server.address").unwrap_or_default();
            [name, "", ""]
        };
        Self {
            server,
            protocol: x.protocol,
            comm: x.comm,
            dst: (!server).then(|| x.dst.ip()),
            port: x.dst.port(),
            error: x.error.is_some(),
            slow: x.slow,
            parts,
            ends: [&x.resource, &x.peer],
            identity,
        }
    }
}

// Few, wide writes: the hasher's cost is per write.
impl Hash for RawKey<'_> {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let (family, ip) = match self.dst {
            None => (0, 0),
            Some(IpAddr::V4(ip)) => (1, u128::from(ip.to_bits())),
            Some(IpAddr::V6(ip)) => (2, ip.to_bits()),
        };
        let flags = u64::from(self.server)
            | u64::from(self.error) << 1
            | u64::from(self.slow) << 2
            | family << 3
            | u64::from(self.port) << 8
            | (self.protocol as u64) << 24;
        h.write_u64(flags);
        h.write_u128(u128::from_ne_bytes(self.comm.to_raw()));
        h.write_u128(ip);
        for part in self.parts {
            h.write_usize(part.len());
            h.write(part.as_bytes());
        }
        // an entity series names its server only; a topology series both
        let ends = if self.server { 1 } else { 2 };
        for end in &self.ends[..ends] {
            for (_, key) in self.identity {
                let value = end.get(key).map_or("", String::as_str);
                h.write_usize(value.len());
                h.write(value.as_bytes());
            }
        }
    }
}

/// Names a [`RawKey`] by two 64-bit hashes of the same writes: a keyed one
/// (random per process) and a fast unkeyed one. The memo keeps these 16
/// bytes instead of the strings: its lookups then touch no memory but the
/// table's. Two keys share a fingerprint by chance with probability ~2^-128
/// per pair; traffic shaped against the unkeyed half still has to collide
/// the keyed 64 bits, ~2^-64 per pair, without knowing the key. (The
/// writes themselves never coincide for different keys: every variable
/// part is written with its length, the address with its family.)
#[derive(Debug, Default)]
struct Fingerprints {
    keyed: ahash::RandomState,
}

impl Fingerprints {
    fn of(&self, key: &RawKey<'_>) -> u128 {
        let fast = rustc_hash::FxBuildHasher.hash_one(key);
        u128::from(self.keyed.hash_one(key)) << 64 | u128::from(fast)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dst: IpAddr, parts: [&str; 3]) -> RawKey<'_> {
        RawKey {
            server: false,
            protocol: ProtocolId::Http,
            comm: Comm::from_raw(*b"curl\0\0\0\0\0\0\0\0\0\0\0\0"),
            dst: Some(dst),
            port: 80,
            error: false,
            slow: false,
            parts,
            ends: [&EMPTY, &EMPTY],
            identity: &[],
        }
    }

    static EMPTY: BTreeMap<&'static str, String> = BTreeMap::new();

    /// Keys that differ only where an ambiguous encoding could merge them
    /// get different fingerprints.
    #[test]
    fn fingerprints_tell_apart_what_an_encoding_could_merge() {
        let f = Fingerprints::default();
        // an IPv4 address and the IPv6 one whose bits it would equal if the
        // family were folded into the address bits
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let v6 = IpAddr::V6(std::net::Ipv6Addr::from_bits(
            (1u128 << 64 | 0x0a00_0001) ^ 2,
        ));
        assert_ne!(f.of(&key(v4, ["", "", ""])), f.of(&key(v6, ["", "", ""])));
        // the same bytes split differently between the parts
        assert_ne!(
            f.of(&key(v4, ["ab", "c", ""])),
            f.of(&key(v4, ["a", "bc", ""]))
        );
        assert_eq!(
            f.of(&key(v4, ["a", "b", ""])),
            f.of(&key(v4, ["a", "b", ""]))
        );
    }
}
