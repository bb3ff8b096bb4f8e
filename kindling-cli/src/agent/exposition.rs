//! What `/metrics` returns: the flow model's series, the agent's own, and
//! the cluster and node labels on every sample.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use super::otlp;

/// The agent's own counters, written by the capture loop, read by scrapes.
#[derive(Debug, Default)]
pub struct AgentCounters {
    /// Probe records received.
    pub events: AtomicU64,
    /// Records lost: ring buffer full.
    pub lost_ring_full: AtomicU64,
    /// Records lost: in-flight table full.
    pub lost_pending_full: AtomicU64,
    /// Records the consumer could not decode.
    pub lost_undecodable: AtomicU64,
    /// Payloads cut at the snaplen (records kept).
    pub truncated: AtomicU64,
    /// The probe is attached.
    pub ready: AtomicBool,
    /// The OTLP output runs.
    pub otlp_on: AtomicBool,
    /// What the OTLP output did.
    pub otlp: Arc<otlp::Counters>,
}

/// The agent's series in the OpenMetrics text format the flow model uses.
pub fn agent_families(c: &AgentCounters) -> String {
    let mut s = String::new();
    let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
        let _ = writeln!(s, "# HELP {name} {help}.\n# TYPE {name} counter");
        for (labels, v) in samples {
            let _ = writeln!(s, "{name}_total{labels} {v}");
        }
    };
    let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
    counter(
        "kindling_agent_events",
        "Probe records received",
        &[("", get(&c.events))],
    );
    counter(
        "kindling_agent_events_lost",
        "Probe records lost, by reason",
        &[
            ("{reason=\"ring_full\"}", get(&c.lost_ring_full)),
            ("{reason=\"pending_full\"}", get(&c.lost_pending_full)),
            ("{reason=\"undecodable\"}", get(&c.lost_undecodable)),
        ],
    );
    counter(
        "kindling_agent_payloads_truncated",
        "Payloads cut at the capture length (records kept)",
        &[("", get(&c.truncated))],
    );
    if c.otlp_on.load(Ordering::Relaxed) {
        let o = &c.otlp;
        counter(
            "kindling_agent_output_exported",
            "Items an output delivered (OTLP: spans the collector accepted)",
            &[("{output=\"otlp\"}", get(&o.spans_exported))],
        );
        counter(
            "kindling_agent_output_dropped",
            "Items an output dropped, by reason",
            &[
                (
                    "{output=\"otlp\",reason=\"queue_full\"}",
                    get(&o.dropped_queue_full),
                ),
                (
                    "{output=\"otlp\",reason=\"export_failed\"}",
                    get(&o.dropped_export_failed),
                ),
                (
                    "{output=\"otlp\",reason=\"rejected\"}",
                    get(&o.dropped_rejected),
                ),
            ],
        );
        counter(
            "kindling_agent_output_retries",
            "Export attempts an output retried",
            &[("{output=\"otlp\"}", get(&o.retries))],
        );
        counter(
            "kindling_agent_otlp_metric_exports",
            "OTLP metric exports, by result",
            &[
                ("{result=\"ok\"}", get(&o.metric_exports)),
                ("{result=\"failed\"}", get(&o.metric_exports_failed)),
            ],
        );
        let _ = writeln!(
            s,
            "# HELP kindling_agent_output_queue_depth Items waiting in an output's queue.\n\
             # TYPE kindling_agent_output_queue_depth gauge\n\
             kindling_agent_output_queue_depth{{output=\"otlp\"}} {}",
            get(&o.queue_depth)
        );
    }
    let (rss, cpu) = own_usage();
    let _ = writeln!(
        s,
        "# HELP kindling_agent_cpu_seconds CPU time the agent process used (user + system).\n\
         # TYPE kindling_agent_cpu_seconds counter\n\
         kindling_agent_cpu_seconds_total {cpu}\n\
         # HELP kindling_agent_resident_memory_bytes The agent's resident set size.\n\
         # TYPE kindling_agent_resident_memory_bytes gauge\n\
         kindling_agent_resident_memory_bytes {rss}\n\
         # HELP kindling_agent_ready 1 once the probe is attached.\n\
         # TYPE kindling_agent_ready gauge\n\
         kindling_agent_ready {}\n\
         # HELP kindling_agent_info The agent's version.\n\
         # TYPE kindling_agent_info gauge\n\
         kindling_agent_info{{version=\"{}\"}} 1",
        u8::from(c.ready.load(Ordering::Relaxed)),
        env!("CARGO_PKG_VERSION"),
    );
    s
}

/// Resident bytes and CPU seconds of this process, from `/proc/self`.
fn own_usage() -> (u64, f64) {
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    // SAFETY: as above.
    let ticks = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) }).unwrap_or(100);
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * page);
    // fields after the command name, which may hold spaces: utime, stime
    // are the 14th and 15th of the whole line
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .map_or(0.0, |t| t as f64 / ticks as f64);
    (rss, cpu)
}
