//! `kindling watch`: the probe's events live, or what the pipeline makes
//! of them (through `kindling_flow::Driver::live`, ticked on the probe's
//! clock after each poll), enriched with process and container.

use std::io::{self, BufWriter, IsTerminal};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use kindling_flow::enrich::Enricher;
use kindling_flow::Driver;
use kindling_k8s::ProcessEnricher;

use crate::args::{Format, WatchArgs};
use crate::live::{self, boottime_now, deadline};
use crate::output::{losses_line, stats_line, Printer};

pub fn run(args: WatchArgs) -> Result<()> {
    deadline(args.duration)?;
    let stop = live::stop_flag()?;
    let mut probe = live::load(&args.probe)?;
    let until = deadline(args.duration)?;
    let header = live::host_header(&probe);
    let offset = header.host.boottime_to_unix_ns;
    let mut driver = Driver::live(live::pipeline_config(&header));
    let mut enricher = ProcessEnricher::new();
    // a person at a terminal gets the live view; a pipe gets lines
    if args.output.is_none() && !args.events && io::stdout().is_terminal() {
        return crate::tui::run(&mut probe, &mut driver, &mut enricher, &stop, until);
    }
    let format = args.output.unwrap_or(Format::Table);
    let stdout = BufWriter::new(io::stdout().lock());
    let mut out = Printer::new(stdout, format, offset, args.rtt, args.all_drops);
    if matches!(format, Format::Table) {
        out.header(args.events)?;
    }
    let mut outputs = Vec::new();
    let mut t0 = None;
    let mut broken = false;
    while !broken && !stop.load(Ordering::Relaxed) && until.is_none_or(|t| Instant::now() < t) {
        probe.poll(Duration::from_millis(100), |ev| {
            let t0 = *t0.get_or_insert(ev.header().ts_ns.get());
            if args.events {
                broken |= out.event(&ev, t0).is_err();
            } else {
                driver.push(&ev, &mut outputs);
            }
        })?;
        if !args.events {
            driver.tick(boottime_now(), &mut outputs);
            driver.note_lost_total(probe.losses()?.lost_records());
            let t0 = t0.unwrap_or(0);
            broken |= out
                .outputs(&mut outputs, t0, |o| enricher.enrich(o))
                .is_err();
            driver.reuse(&mut outputs);
        }
        broken |= out.flush().is_err();
    }
    eprintln!(
        "kindling: {} events; {}",
        probe.received(),
        losses_line(&probe.losses()?)
    );
    if !args.events {
        eprintln!("kindling: {}", stats_line(&driver.stats()));
    }
    Ok(())
}
