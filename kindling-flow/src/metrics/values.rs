//! Label values taken from traffic, interned and bounded.
//!
//! A series key holds numbers instead of strings, so that finding a
//! series allocates nothing. Two [`Cap`]s bound what traffic can make us
//! keep: at most [`MAX_STRINGS`] distinct strings (then [`OVERFLOW`]), and
//! at most `max_request_contents` request contents per server (protocol,
//! port; then [`OTHER`]).

use ahash::AHashMap;
use kindling_proto::ProtocolId;

use super::cardinality::Cap;
use super::content::request_content_into;
use super::{OTHER, OVERFLOW};
use crate::record::Exchange;

/// Most distinct label values kept; beyond, new values read [`OVERFLOW`].
const MAX_STRINGS: usize = 1 << 16;

/// Keyed (DoS-resistant) hashing: these keys are strings from traffic.
type StringCap = Cap<String, u32, ahash::RandomState>;

/// The label values of exchange series, each stored once.
#[derive(Debug)]
pub(super) struct Values {
    strings: Strings,
    /// Request contents admitted per server (protocol, port).
    contents: AHashMap<(ProtocolId, u16), StringCap>,
    max_request_contents: usize,
    /// Where a request content is composed (no allocation once seen).
    scratch: String,
}

impl Values {
    /// Empty, with at most `max_request_contents` per server.
    pub(super) fn new(max_request_contents: usize) -> Self {
        Self {
            strings: Strings {
                ids: Cap::new(MAX_STRINGS),
                names: Vec::new(),
            },
            contents: AHashMap::new(),
            max_request_contents,
            scratch: String::new(),
        }
    }

    /// The id of `s` (of [`OVERFLOW`] past the cap).
    pub(super) fn intern(&mut self, s: &str) -> u32 {
        self.strings.intern(s)
    }

    /// The string of an id.
    pub(super) fn get(&self, id: u32) -> &str {
        &self.strings.names[id as usize]
    }

    /// The interned request content of a server exchange: at most
    /// `max_request_contents` distinct ones per (protocol, port), then
    /// [`OTHER`]. A content seen before costs one lookup.
    pub(super) fn request_content(&mut self, x: &Exchange) -> u32 {
        request_content_into(&mut self.scratch, x);
        let strings = &mut self.strings;
        self.contents
            .entry((x.protocol, x.dst.port()))
            .or_insert_with(|| Cap::new(self.max_request_contents))
            .admit_ref(self.scratch.as_str(), |content| {
                strings.intern(content.unwrap_or(OTHER))
            })
            .value()
    }
}

/// Strings named by numbers.
#[derive(Debug)]
struct Strings {
    ids: StringCap,
    /// The string of each id.
    names: Vec<String>,
}

impl Strings {
    fn intern(&mut self, s: &str) -> u32 {
        let names = &mut self.names;
        self.ids
            .admit_ref(s, |admitted| match admitted {
                Some(s) => push(names, s),
                // OVERFLOW keeps the id it has if traffic brought that very
                // string before the cap was reached: one value, one id
                None => names
                    .iter()
                    .position(|n| n == OVERFLOW)
                    .map_or_else(|| push(names, OVERFLOW), |id| id as u32),
            })
            .value()
    }
}

/// Appends `s` to `names`: its id.
fn push(names: &mut Vec<String>, s: &str) -> u32 {
    names.push(s.to_owned());
    names.len() as u32 - 1
}
