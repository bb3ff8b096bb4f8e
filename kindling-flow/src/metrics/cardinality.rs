//! The one way label cardinality is bounded.
//!
//! Whatever comes from traffic and ends up in a label passes a [`Cap`]:
//! the label sets of each metric family (entity, topology, TCP and DNS
//! series), the distinct label strings, the request contents of each
//! server. A cap keeps the first `limit` distinct keys it is asked about;
//! every later key shares one overflow value (the `__overflow__` series,
//! the `__other__` content), made the first time a key is refused, and
//! each refusal is counted.
//!
//! Admission is final: nothing is evicted, so the answer for a key never
//! changes. The memo in front of the exchange series relies on it.

use std::borrow::Borrow;
use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasher, Hash};

use rustc_hash::FxBuildHasher;

/// What a [`Cap`] answered for one key.
#[derive(Debug)]
pub(super) enum Admit<T> {
    /// The key's own value: admitted now or before.
    Own(T),
    /// The overflow value: the cap was full when the key first came.
    Overflow(T),
}

impl<T> Admit<T> {
    /// The value, whichever it is.
    pub(super) fn value(self) -> T {
        match self {
            Admit::Own(v) | Admit::Overflow(v) => v,
        }
    }
}

/// A map of at most `limit` keys, each with a value of its own; every key
/// past the limit shares the overflow value.
///
/// `S` hashes the keys: the fast unkeyed [`FxBuildHasher`] for keys of
/// fixed size, a keyed hash (`ahash`) for strings taken from traffic,
/// which could otherwise be chosen to collide.
pub(super) struct Cap<K, V, S = FxBuildHasher> {
    admitted: HashMap<K, V, S>,
    limit: usize,
    /// Made with the first refusal.
    overflow: Option<V>,
    /// Answers with the overflow value so far.
    refused: u64,
}

// The counts, not the (many) keys.
impl<K, V, S> std::fmt::Debug for Cap<K, V, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cap")
            .field("admitted", &self.admitted.len())
            .field("limit", &self.limit)
            .field("refused", &self.refused)
            .finish()
    }
}

impl<K: Hash + Eq, V, S: BuildHasher + Default> Cap<K, V, S> {
    /// Empty, admitting up to `limit` keys.
    pub(super) fn new(limit: usize) -> Self {
        Self {
            admitted: HashMap::default(),
            limit,
            overflow: None,
            refused: 0,
        }
    }

    /// The value of `key`: its own if it was admitted before or there is
    /// room for it (`make(Some(key))` makes it), else the overflow value
    /// (`make(None)` makes it, once). A key seen before costs one lookup.
    pub(super) fn admit(&mut self, key: K, make: impl FnOnce(Option<&K>) -> V) -> Admit<&mut V> {
        let room = self.admitted.len() < self.limit;
        match self.admitted.entry(key) {
            Entry::Occupied(e) => Admit::Own(e.into_mut()),
            Entry::Vacant(e) if room => {
                let value = make(Some(e.key()));
                Admit::Own(e.insert(value))
            }
            Entry::Vacant(_) => {
                self.refused += 1;
                Admit::Overflow(self.overflow.get_or_insert_with(|| make(None)))
            }
        }
    }

    /// [`Cap::admit`] for a borrowed key (a `&str` for a `String`): a key
    /// seen before costs one lookup and no allocation. The value is copied
    /// out.
    pub(super) fn admit_ref<Q>(&mut self, key: &Q, make: impl FnOnce(Option<&Q>) -> V) -> Admit<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
        V: Copy,
    {
        if let Some(&value) = self.admitted.get(key) {
            return Admit::Own(value);
        }
        if self.admitted.len() < self.limit {
            let value = make(Some(key));
            self.admitted.insert(key.to_owned(), value);
            return Admit::Own(value);
        }
        self.refused += 1;
        Admit::Overflow(*self.overflow.get_or_insert_with(|| make(None)))
    }

    /// Counts one more refusal of a key whose answer the caller remembered
    /// instead of asking again (the exchange memo): every observation
    /// folded into the overflow value counts.
    pub(super) fn refuse_again(&mut self) {
        self.refused += 1;
    }

    /// Keys admitted.
    pub(super) fn admitted(&self) -> usize {
        self.admitted.len()
    }

    /// Answers with the overflow value so far.
    pub(super) fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_then_answers_with_one_overflow_value() {
        let mut made = 0;
        let mut cap: Cap<u32, String> = Cap::new(2);
        let mut ask = |cap: &mut Cap<u32, String>, k| match cap.admit(k, |k| {
            made += 1;
            k.map_or("overflow".to_owned(), |k| k.to_string())
        }) {
            Admit::Own(v) => (true, v.clone()),
            Admit::Overflow(v) => (false, v.clone()),
        };
        assert_eq!(ask(&mut cap, 1), (true, "1".to_owned()));
        assert_eq!(ask(&mut cap, 2), (true, "2".to_owned()));
        assert_eq!(ask(&mut cap, 3), (false, "overflow".to_owned()));
        assert_eq!(ask(&mut cap, 1), (true, "1".to_owned()));
        assert_eq!(ask(&mut cap, 4), (false, "overflow".to_owned()));
        assert_eq!(ask(&mut cap, 3), (false, "overflow".to_owned()));
        // each value made once, the overflow value included
        assert_eq!(made, 3);
        assert_eq!(cap.admitted(), 2);
        assert_eq!(cap.refused(), 3);
        cap.refuse_again();
        assert_eq!(cap.refused(), 4);
    }

    #[test]
    fn borrowed_keys_are_owned_only_when_admitted() {
        let mut cap: Cap<String, u32, ahash::RandomState> = Cap::new(1);
        let mut id = |k: Option<&str>| k.map_or(99, |k| k.len() as u32);
        assert!(matches!(cap.admit_ref("abc", &mut id), Admit::Own(3)));
        assert!(matches!(cap.admit_ref("abc", &mut id), Admit::Own(3)));
        assert!(matches!(cap.admit_ref("de", &mut id), Admit::Overflow(99)));
        assert!(matches!(cap.admit_ref("abc", &mut id), Admit::Own(3)));
        assert_eq!((cap.admitted(), cap.refused()), (1, 1));
    }

    #[test]
    fn a_limit_of_zero_refuses_everything() {
        let mut cap: Cap<u8, u8> = Cap::new(0);
        assert!(matches!(
            cap.admit(1, |k| k.map_or(0, |&k| k)),
            Admit::Overflow(0)
        ));
        assert_eq!((cap.admitted(), cap.refused()), (0, 1));
    }
}
