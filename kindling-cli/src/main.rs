//! `kindling`: record, replay and watch socket traffic seen from the kernel,
//! or run as a node agent behind Prometheus.
//!
//! This binary is wiring only: flags ([`args`]) choose a source — the
//! probe ([`record`], [`watch`]) or a capture file ([`replay`]) — and an
//! output ([`output`]). Decoding is `kindling_probe`'s; the pipeline and
//! the driver that ticks it are `kindling_flow`'s; enrichers are
//! `kindling_k8s`'s.

use clap::Parser;

mod agent;
mod args;
mod dump;
mod k8s_meta;
mod live;
mod nftrace;
mod output;
mod progress;
mod record;
mod replay;
mod trace_packets;
mod tui;
mod watch;

use args::{Cli, Command};

fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record(a) => record::run(a),
        Command::Replay(a) => replay::run(a),
        Command::Watch(a) => watch::run(a),
        Command::Agent(a) => agent::run(*a),
        Command::Dump(a) => dump::run(a),
        Command::TracePackets(a) => trace_packets::run(a),
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
