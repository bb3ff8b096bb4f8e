//! `kindling`: record, replay and watch socket traffic seen from the kernel.
//!
//! This binary is wiring only: probe settings come from flags, events go to a
//! capture file or to stdout through `kindling_probe`'s renderers.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use kindling_flow::Pipeline;
use kindling_probe::abi;
use kindling_probe::capture::{self, CaptureError, CaptureHeader, CaptureReader, CaptureWriter};
use kindling_probe::render;
use kindling_probe::{LossStats, Probe, ProbeBuilder, ProbeConfig};

mod flow_render;

#[derive(Parser, Debug)]
#[command(
    name = "kindling",
    version,
    about = "See every request that crosses a socket, from the kernel (eBPF)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Capture socket events on this host into a .kcap file (needs root).
    Record(RecordArgs),
    /// Read a .kcap file and print what it holds.
    Replay(ReplayArgs),
    /// Print socket events on this host live (needs root).
    Watch(WatchArgs),
}

#[derive(Args, Debug, Clone)]
struct ProbeArgs {
    /// Only these processes (repeatable).
    #[arg(long = "pid", value_name = "PID")]
    pids: Vec<u32>,
    /// Only sockets with this local or remote port (repeatable).
    #[arg(long = "port", value_name = "PORT")]
    ports: Vec<u16>,
    /// Only tasks in this cgroup v2 id (repeatable; `stat -c %i` of the cgroup dir).
    #[arg(long = "cgroup", value_name = "ID")]
    cgroups: Vec<u64>,
    /// Payload bytes captured per syscall (1..=16384).
    #[arg(long, default_value_t = 4096)]
    snaplen: u32,
    /// Ring buffer size in MiB.
    #[arg(long, default_value_t = 16)]
    ring_mb: u32,
    /// Attach the hooks but capture nothing (overhead floor measurements).
    #[arg(long, hide = true)]
    hooks_only: bool,
}

impl ProbeArgs {
    fn config(&self) -> ProbeConfig {
        ProbeConfig {
            snaplen: self.snaplen,
            pids: self.pids.clone(),
            cgroups: self.cgroups.clone(),
            ports: self.ports.clone(),
            ring_bytes: self.ring_mb.saturating_mul(1 << 20),
            hooks_only: self.hooks_only,
            ..ProbeConfig::default()
        }
    }
}

#[derive(Args, Debug)]
struct RecordArgs {
    /// Capture file to write.
    #[arg(short, long)]
    output: PathBuf,
    /// Stop after this many seconds (default: until Ctrl-C / SIGTERM).
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    /// No per-second statistics on stderr.
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    probe: ProbeArgs,
}

#[derive(Args, Debug)]
struct ReplayArgs {
    /// Capture file to read.
    file: PathBuf,
    /// Print the decoded probe events instead of exchanges and TCP events.
    #[arg(long)]
    events: bool,
    /// Output format; `prometheus` prints the metrics the run aggregated.
    #[arg(short, long, value_enum, default_value_t = ReplayFormat::Table)]
    output: ReplayFormat,
    /// Also print every RTT sample as a TCP record.
    #[arg(long)]
    rtt: bool,
    /// Also print drops that are not packet loss (a socket closed with
    /// data queued, a packet to a closed port, …).
    #[arg(long)]
    all_drops: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ReplayFormat {
    /// Aligned columns.
    Table,
    /// One JSON object per line.
    Json,
    /// Prometheus text exposition of the aggregated series, at the end.
    Prometheus,
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    output: Format,
    /// Print the raw probe events instead of exchanges and TCP events.
    #[arg(long)]
    events: bool,
    /// Also print every RTT sample as a TCP record.
    #[arg(long)]
    rtt: bool,
    /// Also print drops that are not packet loss (a socket closed with
    /// data queued, a packet to a closed port, …).
    #[arg(long)]
    all_drops: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    duration: Option<f64>,
    #[command(flatten)]
    probe: ProbeArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per line.
    Json,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(a) => record(a),
        Command::Replay(a) => replay(a),
        Command::Watch(a) => watch(a),
    };
    if let Err(e) = result {
        eprintln!("kindling: {e:#}");
        if let Some(log) = e
            .downcast_ref::<kindling_probe::ProbeError>()
            .and_then(|p| p.log())
        {
            if !log.is_empty() {
                eprintln!("--- libbpf / verifier log (tail) ---");
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
        std::process::exit(1);
    }
}

/// Set by SIGINT / SIGTERM.
fn stop_flag() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&flag)).context("installing signal handler")?;
    }
    Ok(flag)
}

fn load(args: &ProbeArgs) -> Result<Probe> {
    let probe = ProbeBuilder::from_config(args.config()).load()?;
    Ok(probe)
}

fn deadline(secs: Option<f64>) -> Result<Option<Instant>> {
    match secs {
        None => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 => {
            Ok(Some(Instant::now() + Duration::from_secs_f64(s)))
        }
        Some(s) => bail!("--duration must be a positive number of seconds, got {s}"),
    }
}

fn format_losses(l: &LossStats) -> String {
    format!(
        "lost: ring_full={} pending_full={} undecodable={} | read_failed={} truncated={}",
        l.ring_full, l.pending_full, l.undecodable, l.read_failed, l.truncated
    )
}

fn record(args: RecordArgs) -> Result<()> {
    deadline(args.duration)?; // validate before the slow load
    let stop = stop_flag()?;
    let file = File::create(&args.output)
        .with_context(|| format!("cannot create {}", args.output.display()))?;
    let mut probe = load(&args.probe)?;
    let mut header = CaptureHeader::for_this_host(probe.config().clone());
    header.host.drop_reasons = kindling_probe::drop_reason_names();
    let mut writer = CaptureWriter::new(file, &header)?;
    let until = deadline(args.duration)?;
    if !args.quiet {
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
            abi::decode(rec).is_ok()
        })?;
        if let Some(e) = write_err.take() {
            return Err(e).context("writing the capture file");
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
                    format_losses(&probe.losses()?)
                );
            }
            last_count = writer.records();
            last_report = Instant::now();
        }
    }
    // Drain what the kernel emitted before we stopped.
    probe.poll_raw(Duration::ZERO, |rec| {
        writer.write_record(rec).is_ok() && abi::decode(rec).is_ok()
    })?;
    mark_losses(&probe, &mut writer, &mut kernel_lost)?;
    let losses = probe.losses()?;
    let records = writer.records();
    let bytes = writer.bytes();
    writer
        .finish()?
        .sync_all()
        .context("syncing the capture file")?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "kindling: wrote {records} events ({:.0}/s, {:.1} MiB) to {}; {}",
        records as f64 / secs.max(1e-9),
        bytes as f64 / (1 << 20) as f64,
        args.output.display(),
        format_losses(&losses)
    );
    Ok(())
}

fn replay(args: ReplayArgs) -> Result<()> {
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let read = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counting = flow_render::Counting::new(file, read.clone());
    let mut reader = CaptureReader::new(io::BufReader::with_capacity(1 << 20, counting))
        .with_context(|| format!("{} is not a readable capture", args.file.display()))?;
    let offset = reader.header().host.boottime_to_unix_ns;
    let drop_reasons = reader.header().host.drop_reasons.clone();
    let out = io::stdout().lock();
    let mut out = BufWriter::new(out);
    let mut t0 = None;
    let mut undecodable = 0u64;
    let format = match (args.events, args.output) {
        (true, ReplayFormat::Prometheus) => {
            bail!("--events prints events: use -o table or -o json with it")
        }
        (_, ReplayFormat::Json) => Format::Json,
        _ => Format::Table,
    };
    let mut pipeline = (!args.events).then(|| {
        Pipeline::new(kindling_flow::Config {
            boottime_to_unix_ns: offset,
            rtt_records: true,
            drop_reasons,
            ..kindling_flow::Config::default()
        })
    });
    let mut metrics = (args.output == ReplayFormat::Prometheus)
        .then(|| kindling_flow::Metrics::new(kindling_flow::MetricsConfig::default()));
    let mut progress = flow_render::Progress::new(size);
    let mut outputs = Vec::new();
    let mut next_tick = 0u64;
    if args.output == ReplayFormat::Table {
        let header = if args.events {
            render::TABLE_HEADER
        } else {
            flow_render::TABLE_HEADER
        };
        writeln!(out, "{header}")?;
    }
    let sink = |out: &mut BufWriter<_>,
                outputs: &mut Vec<kindling_flow::Output>,
                metrics: &mut Option<kindling_flow::Metrics>,
                t0: u64| {
        if let Some(m) = metrics.as_mut() {
            outputs.iter().for_each(|o| m.observe(o));
            return Ok(());
        }
        outputs.retain(|o| flow_render::shown(o, args.rtt, args.all_drops));
        flow_render::write_all(out, outputs, format, t0, offset)
    };
    let end = loop {
        match reader.next_record() {
            Ok(Some(rec)) => match abi::decode(rec) {
                Ok(ev) => {
                    let ts = ev.header().ts_ns.get();
                    let t0 = *t0.get_or_insert(ts);
                    let Some(pipeline) = pipeline.as_mut() else {
                        let line = match format {
                            Format::Table => render::to_table_row(&ev, t0),
                            Format::Json => render::to_json(&ev, offset).to_string(),
                        };
                        if writeln!(out, "{line}").is_err() {
                            return Ok(()); // stdout closed (e.g. piped to head)
                        }
                        continue;
                    };
                    pipeline.push(&ev, &mut outputs);
                    if ts >= next_tick {
                        pipeline.tick(ts, &mut outputs);
                        next_tick = ts.saturating_add(1_000_000_000);
                        progress.show(read.load(Ordering::Relaxed));
                    }
                    let written = sink(&mut out, &mut outputs, &mut metrics, t0);
                    // what the outputs own serves the next exchanges
                    pipeline.reuse(&mut outputs);
                    if written.is_err() {
                        return Ok(());
                    }
                }
                Err(_) => undecodable += 1,
            },
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    progress.done();
    if let Some(pipeline) = pipeline.as_mut() {
        pipeline.finish(&mut outputs);
        sink(&mut out, &mut outputs, &mut metrics, t0.unwrap_or(0)).ok();
        let stats = pipeline.stats();
        if let Some(m) = metrics.as_mut() {
            m.update_stats(&stats);
            write!(out, "{}", m.encode())?;
        }
        eprintln!("kindling: {}", flow_render::stats_line(&stats));
    }
    out.flush().ok();
    if undecodable > 0 {
        eprintln!("kindling: {undecodable} records could not be decoded and were skipped");
    }
    match end {
        Ok(()) => Ok(()),
        Err(e @ CaptureError::Truncated { .. }) => {
            // A recorder that was killed leaves a truncated tail: not fatal.
            eprintln!("kindling: warning: {e}");
            Ok(())
        }
        Err(e) => Err(e).context(format!("reading {}", args.file.display())),
    }
}

fn watch(args: WatchArgs) -> Result<()> {
    deadline(args.duration)?;
    let stop = stop_flag()?;
    let mut probe = load(&args.probe)?;
    let until = deadline(args.duration)?;
    let offset = capture::boottime_to_unix_ns();
    let mut out = BufWriter::new(io::stdout().lock());
    if matches!(args.output, Format::Table) {
        let header = if args.events {
            render::TABLE_HEADER
        } else {
            flow_render::TABLE_HEADER
        };
        writeln!(out, "{header}")?;
    }
    let mut pipeline = Pipeline::new(kindling_flow::Config {
        boottime_to_unix_ns: offset,
        rtt_records: true,
        drop_reasons: kindling_probe::drop_reason_names(),
        ..kindling_flow::Config::default()
    });
    let mut enricher = kindling_flow::enrich::ProcessEnricher::new();
    let mut outputs = Vec::new();
    let mut t0 = None;
    let mut broken = false;
    let mut last_lost = 0;
    while !broken && !stop.load(Ordering::Relaxed) && until.is_none_or(|t| Instant::now() < t) {
        probe.poll(Duration::from_millis(100), |ev| {
            let t0 = *t0.get_or_insert(ev.header().ts_ns.get());
            if args.events {
                let line = match args.output {
                    Format::Table => render::to_table_row(&ev, t0),
                    Format::Json => render::to_json(&ev, offset).to_string(),
                };
                broken |= writeln!(out, "{line}").is_err();
            } else {
                pipeline.push(&ev, &mut outputs);
            }
        })?;
        if !args.events {
            pipeline.tick(boottime_now(), &mut outputs);
            let lost = probe.losses()?.lost_records();
            pipeline.note_lost(lost.saturating_sub(last_lost));
            last_lost = lost;
            outputs.retain(|o| flow_render::shown(o, args.rtt, args.all_drops));
            for o in &mut outputs {
                kindling_flow::enrich::Enricher::enrich(&mut enricher, o);
            }
            let t0 = t0.unwrap_or(0);
            broken |= flow_render::write_all(&mut out, &outputs, args.output, t0, offset).is_err();
            pipeline.reuse(&mut outputs);
        }
        broken |= out.flush().is_err();
    }
    eprintln!(
        "kindling: {} events; {}",
        probe.received(),
        format_losses(&probe.losses()?)
    );
    if !args.events {
        eprintln!("kindling: {}", flow_render::stats_line(&pipeline.stats()));
    }
    Ok(())
}

/// Writes a loss marker into the capture where the kernel's loss counters
/// grew, so that a replay knows where records are missing.
fn mark_losses(probe: &Probe, writer: &mut CaptureWriter<File>, seen: &mut u64) -> Result<()> {
    let l = probe.losses()?;
    let lost = l.ring_full + l.pending_full;
    if lost > *seen {
        let marker = abi::RawLost::new(lost - *seen, boottime_now());
        writer.write_record(zerocopy::IntoBytes::as_bytes(&marker))?;
        *seen = lost;
    }
    Ok(())
}

/// `CLOCK_BOOTTIME` now, the probe's clock.
fn boottime_now() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer given.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}
