//! DNS series: each domain a process resolved, and the answer it got
//! (client side: what a process asked, whoever answered).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::cardinality::Cap;
use super::schema::{register, DnsLabels, Name};
use super::text::escape;
use super::OVERFLOW;
use crate::record::Exchange;
use crate::ErrorKind;

/// Name and help of each family, in the order registered.
const FAMILIES: [Name; 2] = [
    (
        "kindling_dns_request",
        "DNS queries by domain, process and answer",
    ),
    (
        "kindling_dns_request_duration_nanoseconds",
        "Total DNS answer time, nanoseconds",
    ),
];

/// The DNS series, under the series cap.
#[derive(Debug)]
pub(super) struct Dns {
    requests: Family<DnsLabels, Counter>,
    duration: Family<DnsLabels, Counter>,
    /// Label sets → their (requests, duration) handles. Keyed
    /// (DoS-resistant) hashing: domains come from traffic.
    series: Cap<DnsLabels, (Counter, Counter), ahash::RandomState>,
}

impl Dns {
    /// No series yet; at most `max_series` label sets.
    pub(super) fn new(max_series: usize) -> Self {
        Self {
            requests: Family::default(),
            duration: Family::default(),
            series: Cap::new(max_series),
        }
    }

    /// Registers its families.
    pub(super) fn register(&self, r: &mut Registry) {
        let [requests, duration] = FAMILIES;
        register(r, requests, self.requests.clone());
        register(r, duration, self.duration.clone());
    }

    /// Counts one client DNS exchange.
    pub(super) fn observe(&mut self, x: &Exchange) {
        let labels = DnsLabels {
            comm: escape(&x.comm.as_str()),
            domain: escape(x.attributes.get("dns.question.name").unwrap_or_default()),
            rcode: match x.error {
                Some(ErrorKind::NoResponse) => "TIMEOUT".to_owned(),
                _ => escape(x.attributes.get("dns.response.code").unwrap_or_default()),
            },
        };
        let (requests, duration) = (&self.requests, &self.duration);
        let (count, total) = self
            .series
            .admit(labels, |admitted| {
                let overflow;
                let labels = match admitted {
                    Some(labels) => labels,
                    None => {
                        overflow = DnsLabels {
                            comm: OVERFLOW.into(),
                            domain: OVERFLOW.into(),
                            rcode: OVERFLOW.into(),
                        };
                        &overflow
                    }
                };
                (
                    requests.get_or_create(labels).clone(),
                    duration.get_or_create(labels).clone(),
                )
            })
            .value();
        count.inc();
        total.inc_by(x.duration_ns);
    }

    /// Label sets admitted.
    pub(super) fn admitted(&self) -> usize {
        self.series.admitted()
    }

    /// Exchanges folded into the overflow label set.
    pub(super) fn refused(&self) -> u64 {
        self.series.refused()
    }
}
