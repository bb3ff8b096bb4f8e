//! Helpers for the root-only tests that load the real probe.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::time::{Duration, Instant};

use kindling_probe::abi::{self, Event};
use kindling_probe::{Probe, ProbeBuilder};

/// A probe builder for the tests: with `KINDLING_TEST_COMPAT=1` it reads
/// kernel memory the way kernels before 6.2 need (`force_compat`), with
/// `KINDLING_TEST_BTF=FILE` it runs as on a kernel without BTF (raw
/// tracepoints, types from that file), so those ways are tested on this
/// kernel too (`.ci/test.sh` runs all three).
pub fn builder() -> ProbeBuilder {
    let builder = ProbeBuilder::new()
        .force_compat(std::env::var_os("KINDLING_TEST_COMPAT").is_some_and(|v| !v.is_empty()));
    match std::env::var_os("KINDLING_TEST_BTF") {
        Some(file) if !file.is_empty() => builder.btf_path(file),
        _ => builder,
    }
}

/// True when the test may load BPF. Without privileges a local run skips
/// with a printed reason; under `CI=true` it fails loudly instead.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: CI=true but not running as root: BPF tests must run in CI");
    }
    eprintln!("skipping {test}: needs root to load BPF programs");
    false
}

/// Polls until no record arrived for `quiet`, at most `max`; returns owned
/// copies of every raw record.
pub fn drain(probe: &mut Probe, quiet: Duration, max: Duration) -> Vec<Vec<u8>> {
    let start = Instant::now();
    let mut last = Instant::now();
    let mut out = Vec::new();
    while start.elapsed() < max {
        let n = probe
            .poll_raw(Duration::from_millis(20), |rec| {
                out.push(rec.to_vec());
                true
            })
            .expect("poll");
        if n > 0 {
            last = Instant::now();
        } else if last.elapsed() >= quiet {
            break;
        }
    }
    out
}

/// Decodes every record, panicking on a malformed one (the kernel must
/// never emit one).
pub fn decode_all(records: &[Vec<u8>]) -> Vec<Event<'_>> {
    records
        .iter()
        .map(|r| {
            abi::decode(r).unwrap_or_else(|e| panic!("undecodable record from the kernel: {e}"))
        })
        .collect()
}

/// Records whose socket has `port` at either end.
pub fn with_port<'a>(events: &[Event<'a>], port: u16) -> Vec<Event<'a>> {
    events
        .iter()
        .filter(|e| e.sock().sport.get() == port || e.sock().dport.get() == port)
        .copied()
        .collect()
}

/// Current thread id.
pub fn gettid() -> u32 {
    // SAFETY: gettid has no preconditions.
    unsafe { libc::gettid() as u32 }
}
