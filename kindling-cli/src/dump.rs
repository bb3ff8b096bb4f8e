//! `kindling dump`: a capture file's socket traffic as a pcapng file of
//! synthetic packets (`kindling_flow::pcapng`), filtered by process, port
//! and time.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::net::SocketAddr;

use anyhow::{bail, Context, Result};
use kindling_flow::pcapng::{PcapngWriter, Synthesizer};
use kindling_flow::{Output, ProtocolId};
use kindling_probe::abi::{self, Event};
use kindling_probe::capture::{CaptureError, CaptureReader};

use crate::args::DumpArgs;

pub fn run(args: DumpArgs) -> Result<()> {
    if let (Some(from), Some(to)) = (args.from, args.to) {
        if to < from {
            bail!("--to {to} is before --from {from}");
        }
    }
    let connections = match args.protocols.is_empty() {
        true => None,
        false => Some(connections_of(&args)?),
    };
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let mut reader = CaptureReader::new(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("{} is not a readable capture", args.file.display()))?;
    // payloads of the traced processes: readable by the owner only, as
    // the capture
    let out = crate::output::create_private(&args.output)?;
    let mut writer = PcapngWriter::new(BufWriter::with_capacity(1 << 20, out))
        .with_context(|| format!("writing {}", args.output.display()))?
        .with_host_netns(reader.header().host.host_netns);
    let mut synth = Synthesizer::new(reader.header().host.boottime_to_unix_ns);
    let mut packets = Vec::new();
    let mut first_ts = None;
    let mut undecodable = 0u64;
    let window = |secs: Option<f64>| secs.map(|s| (s.max(0.0) * 1e9) as u64);
    let (from, to) = (window(args.from), window(args.to));
    let end = loop {
        let record = match reader.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        };
        let Ok(event) = abi::decode(record) else {
            undecodable += 1;
            continue;
        };
        let ts = event.header().ts_ns.get();
        let since = ts.saturating_sub(*first_ts.get_or_insert(ts));
        if from.is_some_and(|f| since < f) || to.is_some_and(|t| since > t) {
            continue;
        }
        if !wanted(&event, &args) {
            continue;
        }
        if let Some(keep) = &connections {
            let sk = match &event {
                Event::Data(d) => &d.raw.sk,
                Event::Conn(c) => &c.raw.sk,
                Event::Tcp(t) => &t.raw.sk,
                _ => continue,
            };
            if !keep.contains(&ends(sk.local(), sk.peer())) {
                continue;
            }
        }
        synth.push(&event, &mut packets);
        for p in packets.drain(..) {
            writer
                .write(&p)
                .with_context(|| format!("writing {}", args.output.display()))?;
        }
    };
    writer
        .into_inner()
        .with_context(|| format!("writing {}", args.output.display()))?;
    let s = synth.stats();
    eprintln!(
        "kindling: wrote {} packets to {}; {} payload bytes not captured (gaps), {} records \
         left out as the other end's copy, {} lost in the kernel, {undecodable} undecodable",
        s.packets,
        args.output.display(),
        s.gap_bytes,
        s.duplicate_records,
        s.lost_records
    );
    match end {
        Ok(()) => Ok(()),
        Err(e @ CaptureError::Truncated { .. }) => {
            eprintln!("kindling: warning: {e}");
            Ok(())
        }
        Err(e) => Err(e).context(format!("reading {}", args.file.display())),
    }
}

/// A connection's two ends, in one order whichever end names it.
fn ends(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let (a, b) = (canonical(a), canonical(b));
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The connections whose exchanges are of `--protocol`: a first pass of
/// the capture through the pipeline, whose parsers recognise them.
fn connections_of(args: &DumpArgs) -> Result<HashSet<(SocketAddr, SocketAddr)>> {
    let wanted: Vec<ProtocolId> = args
        .protocols
        .iter()
        .map(|name| {
            ProtocolId::ALL
                .into_iter()
                .find(|p| p.as_str() == name.as_str())
                .with_context(|| {
                    let known: Vec<&str> = ProtocolId::ALL.iter().map(|p| p.as_str()).collect();
                    format!("--protocol {name}: not one of {}", known.join(", "))
                })
        })
        .collect::<Result<_>>()?;
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let reader = CaptureReader::new(BufReader::with_capacity(1 << 20, file))
        .with_context(|| format!("{} is not a readable capture", args.file.display()))?;
    let config = kindling_flow::Config::from_capture(reader.header());
    let mut replay = kindling_flow::Replay::new(reader, config);
    let mut outputs = Vec::new();
    let mut keep = HashSet::new();
    let mut take = |outputs: &mut Vec<Output>| {
        for o in outputs.drain(..) {
            if let Output::Exchange(x) = o {
                if wanted.contains(&x.protocol) {
                    keep.insert(ends(x.src, x.dst));
                }
            }
        }
    };
    // a damaged capture ends the first pass where it ends the second
    while let Ok(Some(_)) = replay.step(&mut outputs) {
        take(&mut outputs);
    }
    replay.finish(&mut outputs);
    take(&mut outputs);
    Ok(keep)
}

/// Whether `--pid` and `--port` keep this record. TCP records (resets)
/// are kept whatever process was on the CPU: the synthesizer draws them
/// only for connections it draws.
fn wanted(event: &Event<'_>, args: &DumpArgs) -> bool {
    let (pid, sk) = match event {
        Event::Data(d) => (Some(d.raw.hdr.pid.get()), Some(&d.raw.sk)),
        Event::Conn(c) => (Some(c.raw.hdr.pid.get()), Some(&c.raw.sk)),
        Event::Tcp(t) => (None, Some(&t.raw.sk)),
        _ => (None, None),
    };
    let pid_ok = args.pids.is_empty() || pid.is_none_or(|p| args.pids.contains(&p));
    let port_ok = args.ports.is_empty()
        || sk.is_some_and(|sk| {
            args.ports.contains(&sk.sport.get()) || args.ports.contains(&sk.dport.get())
        });
    pid_ok && port_ok
}
