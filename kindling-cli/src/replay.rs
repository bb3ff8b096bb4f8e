//! `kindling replay`: a capture file's events, or what the pipeline makes
//! of them (through `kindling_flow::Replay`, the one driver every replay
//! uses), printed or added up into metrics.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use kindling_flow::enrich::Enricher;
use kindling_flow::{Config, Metrics, MetricsConfig, Output, Replay};
use kindling_k8s::KubernetesEnricher;
use kindling_probe::abi;
use kindling_probe::capture::{CaptureError, CaptureReader};

use crate::args::{Format, ReplayArgs, ReplayFormat};
use crate::output::{stats_line, Printer};
use crate::progress::Progress;

/// How a replay ended: the reader's verdict and the records skipped
/// because they did not decode; `None` when stdout was closed.
type End = Option<(Result<(), CaptureError>, u64)>;

pub fn run(args: ReplayArgs) -> Result<()> {
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let progress = Progress::new(file.metadata().map(|m| m.len()).unwrap_or(0));
    let reader = CaptureReader::new(BufReader::with_capacity(1 << 20, progress.counting(file)))
        .with_context(|| format!("{} is not a readable capture", args.file.display()))?;
    let format = match (args.events, args.output) {
        (true, ReplayFormat::Prometheus) => {
            bail!("--events prints events: use -o table or -o json with it")
        }
        (_, ReplayFormat::Json) => Format::Json,
        _ => Format::Table,
    };
    let offset = reader.header().host.boottime_to_unix_ns;
    let stdout = BufWriter::new(io::stdout().lock());
    let mut out = Printer::new(stdout, format, offset, args.rtt, args.all_drops);
    if args.output == ReplayFormat::Table {
        out.header(args.events)?;
    }
    let end = if args.events {
        events(reader, &mut out)
    } else {
        let names = kubernetes_names(&args)?;
        let metrics = (args.output == ReplayFormat::Prometheus).then(|| {
            Metrics::new(MetricsConfig {
                identity: if names.is_some() {
                    kindling_k8s::METRIC_LABELS
                } else {
                    &[]
                },
                ..MetricsConfig::default()
            })
        });
        outputs(reader, &mut out, metrics, names, progress)?
    };
    let Some((end, undecodable)) = end else {
        return Ok(()); // stdout closed (e.g. piped to head)
    };
    out.flush().ok();
    if undecodable > 0 {
        eprintln!("kindling: {undecodable} records could not be decoded and were skipped");
    }
    ended(end, &args.file)
}

/// The enricher naming pods by the metadata saved with the capture (by
/// `--k8s-metadata`, or beside the capture), if any.
fn kubernetes_names(args: &ReplayArgs) -> Result<Option<KubernetesEnricher>> {
    let path = match &args.k8s_metadata {
        Some(path) => path.clone(),
        None => {
            let beside = crate::k8s_meta::beside(&args.file);
            if !beside.exists() {
                return Ok(None);
            }
            beside
        }
    };
    let (store, node) = crate::k8s_meta::load(&path)?;
    Ok(Some(KubernetesEnricher::offline(store, &node)))
}

/// Prints every event.
fn events<R: Read, W: Write>(mut reader: CaptureReader<R>, out: &mut Printer<W>) -> End {
    let mut t0 = None;
    let mut undecodable = 0;
    let end = loop {
        match reader.next_record() {
            Ok(Some(rec)) => match abi::decode(rec) {
                Ok(ev) => {
                    let t0 = *t0.get_or_insert(ev.header().ts_ns.get());
                    out.event(&ev, t0).ok()?;
                }
                Err(_) => undecodable += 1,
            },
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    Some((end, undecodable))
}

/// Prints the pipeline's outputs as each record completes them, or adds
/// them up into `metrics` and prints those at the end, with the
/// pipeline's counters on stderr.
fn outputs<R: Read, W: Write>(
    reader: CaptureReader<R>,
    out: &mut Printer<W>,
    mut metrics: Option<Metrics>,
    mut names: Option<KubernetesEnricher>,
    mut progress: Progress,
) -> Result<End> {
    let config = Config {
        rtt_records: true,
        ..Config::from_capture(reader.header())
    };
    let mut replay = Replay::new(reader, config);
    let mut outputs = Vec::new();
    let mut sink = |outputs: &mut Vec<Output>, t0: Option<u64>| match metrics.as_mut() {
        Some(m) => {
            for o in outputs.iter_mut() {
                if let Some(names) = names.as_mut() {
                    names.enrich(o);
                }
                m.observe(o);
            }
            Ok(())
        }
        None => out.outputs(outputs, t0.unwrap_or(0), |o| {
            if let Some(names) = names.as_mut() {
                names.enrich(o);
            }
        }),
    };
    let end = loop {
        match replay.step(&mut outputs) {
            Ok(Some(step)) => {
                if step.ticked {
                    progress.show();
                }
                let written = sink(&mut outputs, replay.first_ts_ns());
                // what the outputs own serves the next exchanges
                replay.reuse(&mut outputs);
                if written.is_err() {
                    return Ok(None);
                }
            }
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
    };
    progress.done();
    replay.finish(&mut outputs);
    sink(&mut outputs, replay.first_ts_ns()).ok();
    let stats = replay.stats();
    if let Some(m) = metrics.as_mut() {
        m.update_stats(&stats);
        out.text(&m.encode())?;
    }
    eprintln!("kindling: {}", stats_line(&stats));
    Ok(Some((end, replay.undecodable())))
}

/// A truncated file is what a killed recorder leaves: a warning; any other
/// damage fails the replay (after all that came before it was shown).
fn ended(end: Result<(), CaptureError>, file: &Path) -> Result<()> {
    match end {
        Ok(()) => Ok(()),
        Err(e @ CaptureError::Truncated { .. }) => {
            eprintln!("kindling: warning: {e}");
            Ok(())
        }
        Err(e) => Err(e).context(format!("reading {}", file.display())),
    }
}
