//! DNS search-list expansions. A resolver with search domains (Kubernetes
//! pods: `ndots:5` and `<ns>.svc.cluster.local svc.cluster.local
//! cluster.local`) asks `api.example.com.<ns>.svc.cluster.local` and the
//! other expansions before `api.example.com`, each answered NXDOMAIN by
//! design. Such an NXDOMAIN is held back briefly: if the same client then
//! asks the next candidate of the same name, it was an expansion, reported
//! without an error (`kindling.dns.search_expansion`); if not, it was the
//! final answer, reported as the error it is.

use std::net::IpAddr;

use kindling_proto::AttributeSink;

use crate::config::Config;
use crate::record::{ErrorKind, Exchange, Output, Role};

/// Most NXDOMAIN answers held back at once; beyond, the oldest is reported
/// as it is.
const MAX_HELD: usize = 256;

/// Attribute marking an expansion.
pub(crate) const EXPANSION: &str = "kindling.dns.search_expansion";

/// Who asked: the process for a client, the client's address for a server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Asker {
    Process(u32),
    Address(IpAddr),
}

impl Asker {
    fn of(role: Role, pid: u32, client: IpAddr) -> Self {
        match role {
            Role::Client => Asker::Process(pid),
            Role::Server => Asker::Address(client),
        }
    }
}

#[derive(Debug)]
struct Held {
    asker: Asker,
    /// When it was held (boot ns).
    since_ns: u64,
    exchange: Exchange,
}

/// NXDOMAIN answers that may be search-list expansions.
#[derive(Debug, Default)]
pub(super) struct Searches {
    held: Vec<Held>,
}

/// The names `name` would be an expansion of under `suffixes`: `name`
/// minus each suffix it ends with (`*.` in a suffix stands for one label).
fn bases<'a>(name: &'a str, suffixes: &'a [String]) -> impl Iterator<Item = &'a str> + 'a {
    let name = name.trim_end_matches('.');
    suffixes.iter().filter_map(move |suffix| {
        let (wild, fixed) = match suffix.strip_prefix("*.") {
            Some(fixed) => (true, fixed),
            None => (false, suffix.as_str()),
        };
        let head = name.strip_suffix(fixed)?.strip_suffix('.')?;
        let base = if wild { head.rsplit_once('.')?.0 } else { head };
        (!base.is_empty()).then_some(base)
    })
}

/// Whether asking `next` after `name` continues a search for the same name.
fn continues(name: &str, next: &str, suffixes: &[String]) -> bool {
    let (name, next) = (name.trim_end_matches('.'), next.trim_end_matches('.'));
    !name.eq_ignore_ascii_case(next)
        && bases(name, suffixes).any(|base| {
            next.len() >= base.len()
                && next[..base.len()].eq_ignore_ascii_case(base)
                && matches!(next.as_bytes().get(base.len()), None | Some(b'.'))
        })
}

impl Searches {
    /// Takes a DNS exchange that failed with NXDOMAIN for a name ending in
    /// a search suffix, to be reported once the asker's next query tells
    /// what it was; hands back any other exchange.
    pub(super) fn hold(
        &mut self,
        config: &Config,
        x: Exchange,
        now_ns: u64,
        out: &mut Vec<Output>,
    ) -> Option<Exchange> {
        let nxdomain = x.error == Some(ErrorKind::DnsError)
            && x.attributes.get("dns.response.code") == Some("NXDOMAIN");
        let name = x.attributes.get("dns.question.name").unwrap_or("");
        if !nxdomain || bases(name, &config.dns_search_suffixes).next().is_none() {
            return Some(x);
        }
        if self.held.len() >= MAX_HELD {
            let oldest = self.held.remove(0);
            out.push(Output::Exchange(oldest.exchange));
        }
        self.held.push(Held {
            asker: Asker::of(x.role, x.pid, x.src.ip()),
            since_ns: now_ns,
            exchange: x,
        });
        None
    }

    /// A query for `name`: the held answers of its asker that it continues
    /// were expansions, reported without an error.
    pub(super) fn asked(
        &mut self,
        config: &Config,
        role: Role,
        pid: u32,
        client: IpAddr,
        name: &str,
        out: &mut Vec<Output>,
    ) {
        if self.held.is_empty() {
            return;
        }
        let asker = Asker::of(role, pid, client);
        let suffixes = &config.dns_search_suffixes;
        for mut x in self.take(|h| {
            let earlier = h.exchange.attributes.get("dns.question.name");
            h.asker == asker && continues(earlier.unwrap_or(""), name, suffixes)
        }) {
            x.error = None;
            x.attributes.put(EXPANSION, "true");
            out.push(Output::Exchange(x));
        }
    }

    /// Takes out the held exchanges `which` picks, oldest first.
    fn take(&mut self, which: impl Fn(&Held) -> bool) -> Vec<Exchange> {
        let mut taken = Vec::new();
        let mut i = 0;
        while i < self.held.len() {
            if which(&self.held[i]) {
                taken.push(self.held.remove(i).exchange);
            } else {
                i += 1;
            }
        }
        taken
    }

    /// Reports, as the errors they are, answers held longer than the
    /// search window: no query continued them.
    pub(super) fn expire(&mut self, config: &Config, now_ns: u64, out: &mut Vec<Output>) {
        let window = config.dns_search_window_ns;
        let expired = self.take(|h| now_ns.saturating_sub(h.since_ns) > window);
        out.extend(expired.into_iter().map(Output::Exchange));
    }

    /// Reports everything held, as it is.
    pub(super) fn flush(&mut self, out: &mut Vec<Output>) {
        out.extend(self.held.drain(..).map(|h| Output::Exchange(h.exchange)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Vec<String> {
        Config::default().dns_search_suffixes
    }

    #[test]
    fn expansions_of_a_name_are_told_from_other_names() {
        let s = cluster();
        let name = "api.example.com.default.svc.cluster.local";
        assert!(bases(name, &s).any(|b| b == "api.example.com"));
        assert!(continues(name, "api.example.com.svc.cluster.local", &s));
        assert!(continues(
            "api.example.com.svc.cluster.local",
            "api.example.com.cluster.local",
            &s
        ));
        assert!(continues(
            "api.example.com.cluster.local",
            "api.example.com",
            &s
        ));
        assert!(continues(name, "API.example.com.", &s), "case and root dot");
        // not a continuation: the same name again (a retry), another name,
        // a name that merely starts alike
        assert!(!continues(name, name, &s));
        assert!(!continues(name, "db.example.com", &s));
        assert!(!continues("api.cluster.local", "apiary.example.com", &s));
        // a name under no search suffix is nobody's expansion
        assert_eq!(bases("api.example.com", &s).count(), 0);
        assert_eq!(bases("cluster.local", &s).count(), 0);
    }
}
