//! Limits and thresholds, all with defaults that suit a busy host.

use kindling_probe::capture::CaptureHeader;
use kindling_proto::http1::Redaction;
use kindling_proto::Detail;
use kindling_proto::ProtocolId;

/// Pipeline settings.
///
/// # Examples
///
/// ```
/// let mut c = kindling_flow::Config::default();
/// c.max_connections = 1_000;
/// assert_eq!(c.slow_ns.http, 500_000_000);
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// Most connections tracked; beyond it the least recently active one
    /// is evicted (counted).
    pub max_connections: usize,
    /// Most bytes buffered per connection and direction while a message
    /// is incomplete; beyond it the buffer is dropped and the stream
    /// resynchronises (counted).
    pub max_buffer: usize,
    /// Most bytes buffered over all connections together; checked at
    /// every tick, where the largest buffers are given up on (counted as
    /// buffer overflows, their streams resynchronise) until the total is
    /// back under three quarters of it. Bounds memory under many
    /// connections each holding a partial message.
    pub max_buffered_total: usize,
    /// Most requests waiting for an answer per connection.
    pub max_pending: usize,
    /// A request unanswered this long is reported with `no_response`.
    pub response_timeout_ns: u64,
    /// A connection silent this long is forgotten (counted).
    pub idle_timeout_ns: u64,
    /// Exchanges slower than these are flagged `slow`.
    pub slow_ns: SlowThresholds,
    /// Boot-time to Unix-time offset, from the capture header or the host
    /// ([`Config::from_capture`]); 0 leaves times on the boot clock.
    pub boottime_to_unix_ns: i64,
    /// HTTP header and query redaction.
    pub redaction: Redaction,
    /// Which attributes exchanges carry: all of them (the default), or only
    /// those the metrics model labels by ([`Detail::Essential`]: less work
    /// per exchange when no output shows the rest).
    pub detail: Detail,
    /// Emit a record for every RTT sample (rate limited in the kernel).
    pub rtt_records: bool,
    /// DNS search domains: an NXDOMAIN for a name under one of them,
    /// followed by the same client asking the next candidate of the same
    /// name, is a search-list expansion, not an error. `*.` stands for one
    /// label (a Kubernetes namespace). Defaults: Kubernetes' cluster
    /// domains; `kindling watch` adds the host's `/etc/resolv.conf` ones.
    pub dns_search_suffixes: Vec<String>,
    /// How long an NXDOMAIN waits for the query that continues its search.
    pub dns_search_window_ns: u64,
    /// Names of the kernel's drop reasons by number (from the capture
    /// header, [`Config::from_capture`], or `kindling_probe::drop_reason_names`
    /// live).
    pub drop_reasons: std::collections::BTreeMap<u32, String>,
}

impl Config {
    /// The settings a capture's header holds: its boot-time to Unix-time
    /// offset (so exchanges carry Unix times) and the recording kernel's
    /// drop reason names; everything else at its default. Live, build
    /// the header the recorder would write
    /// (`CaptureHeader::for_this_host`, with
    /// `kindling_probe::drop_reason_names`).
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_flow::Config;
    /// use kindling_probe::capture::CaptureHeader;
    ///
    /// let mut header = CaptureHeader::for_this_host(Default::default());
    /// header.host.drop_reasons.insert(2, "NOT_SPECIFIED".into());
    /// let config = Config {
    ///     rtt_records: true,
    ///     ..Config::from_capture(&header)
    /// };
    /// assert_eq!(config.boottime_to_unix_ns, header.host.boottime_to_unix_ns);
    /// assert_eq!(config.drop_reasons[&2], "NOT_SPECIFIED");
    /// ```
    pub fn from_capture(header: &CaptureHeader) -> Self {
        Self {
            boottime_to_unix_ns: header.host.boottime_to_unix_ns,
            drop_reasons: header.host.drop_reasons.clone(),
            ..Self::default()
        }
    }
}

/// Slow thresholds per protocol, nanoseconds.
#[derive(Clone, Copy, Debug)]
pub struct SlowThresholds {
    /// HTTP/1.
    pub http: u64,
    /// MySQL.
    pub mysql: u64,
    /// Redis.
    pub redis: u64,
    /// DNS.
    pub dns: u64,
}

impl SlowThresholds {
    /// The threshold of `protocol` (none for the transport alone).
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::ProtocolId;
    ///
    /// let slow = kindling_flow::Config::default().slow_ns;
    /// assert_eq!(slow.of(ProtocolId::Redis), 100_000_000);
    /// assert_eq!(slow.of(ProtocolId::Tcp), u64::MAX);
    /// ```
    pub fn of(&self, protocol: ProtocolId) -> u64 {
        match protocol {
            ProtocolId::Http => self.http,
            ProtocolId::MySql => self.mysql,
            ProtocolId::Redis => self.redis,
            ProtocolId::Dns => self.dns,
            _ => u64::MAX,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_connections: 100_000,
            max_buffer: 64 << 10,
            max_buffered_total: 64 << 20,
            max_pending: 64,
            response_timeout_ns: 30_000_000_000,
            idle_timeout_ns: 300_000_000_000,
            slow_ns: SlowThresholds {
                http: 500_000_000,
                mysql: 500_000_000,
                redis: 100_000_000,
                dns: 200_000_000,
            },
            boottime_to_unix_ns: 0,
            redaction: Redaction::default(),
            detail: Detail::Full,
            rtt_records: false,
            dns_search_suffixes: ["*.svc.cluster.local", "svc.cluster.local", "cluster.local"]
                .map(String::from)
                .to_vec(),
            dns_search_window_ns: 1_000_000_000,
            drop_reasons: Default::default(),
        }
    }
}

/// The search domains a resolv.conf names (its `search` and `domain`
/// lines; the last of them wins, as in glibc), without their root dot: to
/// add to [`Config::dns_search_suffixes`].
///
/// # Examples
///
/// ```
/// let conf = "nameserver 10.96.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local.\noptions ndots:5\n";
/// assert_eq!(
///     kindling_flow::search_domains(conf),
///     ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local"]
/// );
/// assert!(kindling_flow::search_domains("nameserver 1.1.1.1\n").is_empty());
/// ```
pub fn search_domains(resolv_conf: &str) -> Vec<String> {
    let mut domains = Vec::new();
    for line in resolv_conf.lines() {
        let mut words = line.split_whitespace();
        if matches!(words.next(), Some("search" | "domain")) {
            domains = words
                .take_while(|w| !w.starts_with(['#', ';']))
                .map(|w| w.trim_end_matches('.').to_owned())
                .filter(|w| !w.is_empty())
                .collect();
        }
    }
    domains
}
