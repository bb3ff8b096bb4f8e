//! What the live tests share: whether they can run here, loading the
//! probe, and feeding its records to a pipeline (the servers they start are
//! in `servers`).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kindling_flow::{Config, Exchange, Output, Pipeline};
use kindling_probe::abi::{self, Event};
use kindling_probe::{capture, Probe, ProbeBuilder};

/// Whether a live test can run: root (to load the probe) and every one of
/// `tools` on `PATH` (or in /usr/sbin). Without them the test skips with a
/// reason, except under `CI=true`, where it fails.
pub fn ready(test: &str, tools: &[&str]) -> bool {
    let ci = std::env::var("CI").as_deref() == Ok("true");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t} || test -x /usr/sbin/{t}")])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if root && missing.is_empty() {
        return true;
    }
    assert!(
        !ci,
        "CI=true: {test} must run (root: {root}, missing: {missing:?})"
    );
    eprintln!("skipping {test}: needs root and {tools:?} (missing: {missing:?})");
    false
}

/// Loads the probe, or fails with the verifier's log.
pub fn load(builder: ProbeBuilder) -> Probe {
    // KINDLING_TEST_COMPAT=1: the way of reading kernel memory that kernels
    // before 6.2 need, tested on this one
    builder
        .force_compat(std::env::var_os("KINDLING_TEST_COMPAT").is_some_and(|v| !v.is_empty()))
        .wakeup_bytes(0)
        .load()
        .unwrap_or_else(|e| panic!("loading the probe failed: {e}\n{}", e.log().unwrap_or("")))
}

/// A loopback port free right now (for a server the test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// A fresh directory for one test's server files, unique to this process.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kindling-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    dir
}

/// A pipeline for live records: Unix times from this host's clock.
pub fn pipeline(config: Config) -> Pipeline {
    Pipeline::new(Config {
        boottime_to_unix_ns: capture::boottime_to_unix_ns(),
        ..config
    })
}

/// How [`drain`] feeds a pipeline.
pub struct Drain {
    /// Gives up after this long.
    pub limit: Duration,
    /// Ticks the pipeline every this many ns of event time (`None`: never).
    pub tick_ns: Option<u64>,
}

impl Default for Drain {
    fn default() -> Self {
        Self {
            limit: Duration::from_secs(10),
            tick_ns: None,
        }
    }
}

/// Feeds the probe's records to `pipeline` (`inspect` sees each event
/// first) until `done()` says the workload ended and 300 ms pass without
/// a record, or the limit; then finishes the pipeline.
pub fn drain(
    probe: &mut Probe,
    pipeline: &mut Pipeline,
    how: Drain,
    mut done: impl FnMut() -> bool,
    mut inspect: impl FnMut(&Event<'_>),
) -> Vec<Output> {
    let mut out = Vec::new();
    let mut next_tick = 0;
    let start = Instant::now();
    let mut quiet_since = Instant::now();
    let mut ended = false;
    while start.elapsed() < how.limit
        && (!ended || quiet_since.elapsed() < Duration::from_millis(300))
    {
        let n = probe
            .poll_raw(Duration::from_millis(50), |rec| {
                let ev = abi::decode(rec).expect("the kernel's records decode");
                inspect(&ev);
                if let Some(every) = how.tick_ns {
                    let ts = ev.header().ts_ns.get();
                    if ts >= next_tick {
                        pipeline.tick(ts, &mut out);
                        next_tick = ts + every;
                    }
                }
                pipeline.push(&ev, &mut out);
                true
            })
            .expect("polling the probe");
        if n > 0 {
            quiet_since = Instant::now();
        }
        if !ended && done() {
            ended = true;
            quiet_since = Instant::now();
        }
    }
    pipeline.finish(&mut out);
    out
}

/// The exchanges among `out` that `keep` picks.
pub fn exchanges(out: &[Output], keep: impl Fn(&Exchange) -> bool) -> Vec<&Exchange> {
    out.iter()
        .filter_map(|o| match o {
            Output::Exchange(x) if keep(x) => Some(x),
            _ => None,
        })
        .collect()
}
