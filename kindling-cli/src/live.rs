//! What `record` and `watch` share: loading the probe, stopping on a
//! signal or a deadline, the probe's clock, and the facts about this host
//! that a capture's header holds.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kindling_flow::Config;
use kindling_probe::capture::CaptureHeader;
use kindling_probe::{Probe, ProbeBuilder};

use crate::args::ProbeArgs;

/// Set by SIGINT / SIGTERM.
pub fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag)).context("installing signal handler")?;
    }
    Ok(flag)
}

pub fn load(args: &ProbeArgs) -> Result<Probe> {
    let probe = ProbeBuilder::from_config(args.config()).load()?;
    Ok(probe)
}

/// What loading took and how the probe reads the kernel, for the log.
pub fn loaded_line(probe: &Probe, took: Duration) -> String {
    format!(
        "kindling: probe loaded and attached in {} ms on Linux {} ({})",
        took.as_millis(),
        kindling_probe::preflight::kernel_release(),
        match (&probe.config().btf_path, probe.reads_with_helpers()) {
            (Some(_), _) => "raw tracepoints, kernel types from the --btf file, helper reads",
            (None, true) => "kernel memory read with helpers: before 6.2",
            (None, false) => "kernel memory read with plain loads",
        }
    )
}

/// When `--duration` ends, from now.
pub fn deadline(secs: Option<f64>) -> Result<Option<Instant>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => {
            Ok(Some(Instant::now() + Duration::from_secs_f64(s)))
        }
        Some(s) => bail!("--duration must be a positive number of seconds, got {s}"),
    }
}

/// The header a recording on this host with `probe` starts with: the
/// clock offset and the kernel's drop reason names. `watch` configures
/// its pipeline from it as `replay` does from a file's.
pub fn host_header(probe: &Probe) -> CaptureHeader {
    let mut header = CaptureHeader::for_this_host(probe.config().clone());
    header.host.drop_reasons =
        kindling_probe::drop_reason_names_from(probe.config().btf_path.as_deref());
    header
}

/// The pipeline settings for live traffic on this host: the capture
/// header's, RTT samples as records, and this host's DNS search list (its
/// expansions are not DNS errors either).
pub fn pipeline_config(header: &CaptureHeader) -> Config {
    let mut config = Config {
        rtt_records: true,
        ..Config::from_capture(header)
    };
    let resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for domain in kindling_flow::search_domains(&resolv) {
        if !config.dns_search_suffixes.contains(&domain) {
            config.dns_search_suffixes.push(domain);
        }
    }
    config
}

/// `CLOCK_BOOTTIME` now, the probe's clock.
pub fn boottime_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer given.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}
