//! `kindling record`: the probe's raw records into a capture file, with
//! a loss marker wherever the kernel's loss counters grew.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kindling_probe::abi;
use kindling_probe::capture::{CaptureError, CaptureWriter};
use kindling_probe::Probe;

use crate::args::RecordArgs;
use crate::live::{self, boottime_now, deadline};
use crate::output::losses_line;

pub fn run(args: RecordArgs) -> Result<()> {
    deadline(args.duration)?; // validate before the slow load
    let stop = live::stop_flag()?;
    // Payloads of every process on the host: passwords, tokens, personal
    // data. Readable by the owner only (an existing file keeps its mode).
    let file = crate::output::create_private(&args.output)?;
    // the metadata to save with the recording: watched while it runs
    let kubernetes = if args.kubernetes.enabled(args.kubeconfig.is_some()) {
        let config = kindling_k8s::watch::WatchConfig {
            kubeconfig: args.kubeconfig.clone(),
            cluster_ranges: Vec::new(),
            node_local: None,
        };
        let store = std::sync::Arc::new(std::sync::RwLock::new(kindling_k8s::store::Store::new(
            60_000_000_000,
        )));
        let watchers = kindling_k8s::watch::Watchers::start(&config, std::sync::Arc::clone(&store))
            .context("Kubernetes metadata (--kubernetes off to go without)")?;
        Some((store, watchers))
    } else {
        None
    };
    let loading = Instant::now();
    let mut probe = live::load(&args.probe)?;
    let header = live::host_header(&probe);
    let mut writer = CaptureWriter::new(file, &header)?;
    let mut pcapng = match &args.pcapng {
        Some(path) => Some(Pcapng::create(path, header.host.boottime_to_unix_ns)?),
        None => None,
    };
    let until = deadline(args.duration)?;
    if !args.quiet {
        eprintln!("{}", live::loaded_line(&probe, loading.elapsed()));
        eprintln!(
            "kindling: recording to {} (Ctrl-C to stop)",
            args.output.display()
        );
    }
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut last_count = 0u64;
    let mut write_err: Option<CaptureError> = None;
    let mut kernel_lost = 0u64;
    while !stop.load(Ordering::Relaxed) && until.is_none_or(|t| Instant::now() < t) {
        probe.poll_raw(Duration::from_millis(100), |rec| {
            if write_err.is_none() {
                if let Err(e) = writer.write_record(rec) {
                    write_err = Some(e);
                }
            }
            let decoded = abi::decode(rec);
            if let (Some(p), Ok(ev)) = (pcapng.as_mut(), &decoded) {
                p.push(ev);
            }
            decoded.is_ok()
        })?;
        if let Some(e) = write_err.take() {
            return Err(e).context("writing the capture file");
        }
        if let Some(p) = pcapng.as_mut() {
            p.check()?;
        }
        mark_losses(&probe, &mut writer, &mut kernel_lost)?;
        if last_report.elapsed() >= Duration::from_secs(1) {
            writer.flush()?;
            if !args.quiet {
                let n = writer.records();
                let rate = (n - last_count) as f64 / last_report.elapsed().as_secs_f64();
                eprintln!(
                    "kindling: {n} events ({rate:.0}/s), {:.1} MiB; {}",
                    writer.bytes() as f64 / (1 << 20) as f64,
                    losses_line(&probe.losses()?)
                );
            }
            last_count = writer.records();
            last_report = Instant::now();
        }
    }
    // Drain what the kernel emitted before we stopped.
    probe.poll_raw(Duration::ZERO, |rec| {
        let decoded = abi::decode(rec);
        if let (Some(p), Ok(ev)) = (pcapng.as_mut(), &decoded) {
            p.push(ev);
        }
        writer.write_record(rec).is_ok() && decoded.is_ok()
    })?;
    if let Some(p) = pcapng {
        p.finish()?;
    }
    mark_losses(&probe, &mut writer, &mut kernel_lost)?;
    let losses = probe.losses()?;
    let records = writer.records();
    let bytes = writer.bytes();
    writer
        .finish()?
        .sync_all()
        .context("syncing the capture file")?;
    if let Some((store, watchers)) = kubernetes {
        if !watchers.status().all_synced() {
            eprintln!("kindling: warning: the Kubernetes metadata was not completely listed");
        }
        drop(watchers);
        let node = args
            .node
            .clone()
            .unwrap_or_else(|| header.host.hostname.clone());
        let path = crate::k8s_meta::beside(&args.output);
        let store = store
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        crate::k8s_meta::save(&path, &store, &node)?;
        eprintln!(
            "kindling: saved the Kubernetes metadata ({} pods) to {}",
            store.pod_count(),
            path.display()
        );
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "kindling: wrote {records} events ({:.0}/s, {:.1} MiB) to {}; {}",
        records as f64 / secs.max(1e-9),
        bytes as f64 / (1 << 20) as f64,
        args.output.display(),
        losses_line(&losses)
    );
    Ok(())
}

/// Writes a loss marker into the capture where the kernel's loss counters
/// grew, so that a replay knows where records are missing.
fn mark_losses(
    probe: &Probe,
    writer: &mut CaptureWriter<std::fs::File>,
    seen: &mut u64,
) -> Result<()> {
    let l = probe.losses()?;
    let lost = l.ring_full + l.pending_full;
    if lost > *seen {
        let marker = abi::RawLost::new(lost - *seen, boottime_now());
        writer.write_record(zerocopy::IntoBytes::as_bytes(&marker))?;
        *seen = lost;
    }
    Ok(())
}

/// The pcapng written beside the capture (`--pcapng`).
struct Pcapng {
    synth: kindling_flow::pcapng::Synthesizer,
    writer: kindling_flow::pcapng::PcapngWriter<std::io::BufWriter<std::fs::File>>,
    packets: Vec<kindling_flow::pcapng::Packet>,
    path: std::path::PathBuf,
    /// The first write error, reported at the next check.
    failed: Option<std::io::Error>,
}

impl Pcapng {
    fn create(path: &std::path::Path, boottime_to_unix_ns: i64) -> Result<Self> {
        let file = crate::output::create_private(path)?;
        let writer = kindling_flow::pcapng::PcapngWriter::new(std::io::BufWriter::new(file))
            .with_context(|| format!("writing {}", path.display()))?
            .with_host_netns(kindling_probe::capture::host_netns());
        Ok(Self {
            synth: kindling_flow::pcapng::Synthesizer::new(boottime_to_unix_ns),
            writer,
            packets: Vec::new(),
            path: path.to_owned(),
            failed: None,
        })
    }

    fn push(&mut self, event: &abi::Event<'_>) {
        self.synth.push(event, &mut self.packets);
        for p in self.packets.drain(..) {
            if self.failed.is_none() {
                if let Err(e) = self.writer.write(&p) {
                    self.failed = Some(e);
                }
            }
        }
    }

    fn check(&mut self) -> Result<()> {
        match self.failed.take() {
            Some(e) => Err(e).with_context(|| format!("writing {}", self.path.display())),
            None => Ok(()),
        }
    }

    fn finish(mut self) -> Result<()> {
        self.check()?;
        let packets = self.synth.stats().packets;
        self.writer
            .into_inner()
            .with_context(|| format!("writing {}", self.path.display()))?;
        eprintln!(
            "kindling: wrote {packets} packets to {}",
            self.path.display()
        );
        Ok(())
    }
}
