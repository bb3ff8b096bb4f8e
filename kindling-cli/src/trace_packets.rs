//! `kindling trace-packets`: the packet tracer's hops as packet paths —
//! which devices and namespaces each packet crossed, when, whether NAT
//! rewrote it, and where and why it was dropped — then a summary per flow.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use kindling_flow::packets::{
    End, FlowSummary, HopPlace, PacketPath, PathAssembler, PathConfig, PathSummary,
};
use kindling_probe::{PacketFilter, PacketTracerBuilder};

use crate::args::{Format, TracePacketsArgs, Transport};
use crate::live;
use crate::output::duration;

pub fn run(args: TracePacketsArgs) -> Result<()> {
    let starts = [
        args.pid.is_some(),
        args.netns.is_some(),
        args.container.is_some(),
    ];
    if starts.iter().filter(|given| **given).count() > 1 {
        bail!("--pid, --netns and --container each name where to start: give one");
    }
    let netns = match (&args.pid, &args.netns, &args.container) {
        (Some(pid), ..) => Some(netns_inode(&format!("/proc/{pid}/ns/net"))?),
        (_, Some(ns), _) => Some(resolve_netns(ns)?),
        (.., Some(id)) => Some(container_netns(id)?),
        _ => None,
    };
    let filter = PacketFilter {
        ports: args.ports.clone(),
        addr: args.host,
        protocol: args.protocol.map(|p| match p {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        }),
        netns,
        sample_every: args.sample,
        budget_per_sec: args.budget,
    };
    let mut builder = PacketTracerBuilder::new().filter(filter);
    if let Some(btf) = &args.btf {
        builder = builder.btf_path(btf);
    }
    let deadline = live::deadline(args.duration)?;
    let stop = live::stop_flag()?;
    let started = Instant::now();
    let mut tracer = builder.load()?;
    let mut rules = match args.nft_trace.is_empty() {
        true => None,
        false => Some(RuleNamer::start(&args.nft_trace, &args.ports)?),
    };
    // (the line says everything is in place: tests wait for it)
    eprintln!(
        "kindling: packet tracer attached in {} ms on Linux {}; Ctrl-C stops",
        started.elapsed().as_millis(),
        kindling_probe::preflight::kernel_release()
    );
    let names = NetnsNames::scan();
    let symbols = Symbols::load();
    let mut assembler = PathAssembler::new(PathConfig {
        boottime_to_unix_ns: kindling_probe::capture::boottime_to_unix_ns(),
        drop_reasons: kindling_probe::drop_reason_names_from(args.btf.as_deref()),
    });
    let mut summary = PathSummary::default();
    // (a packet's JSON is ~600 bytes: one write per hundred of them)
    let mut out = io::BufWriter::with_capacity(1 << 16, io::stdout().lock());
    let mut printer = Printer {
        format: args.output,
        names: &names,
        symbols: &symbols,
        summary_only: args.summary_only,
        shared_names: BTreeMap::new(),
    };
    let mut paths = Vec::new();
    let mut packets = 0u64;
    loop {
        tracer.poll(Duration::from_millis(100), |hop| {
            assembler.push(hop, &mut paths);
        })?;
        assembler.tick(live::boottime_now(), &mut paths);
        let done = stop.load(Ordering::Relaxed)
            || deadline.is_some_and(|d| Instant::now() >= d)
            || args
                .count
                .is_some_and(|c| packets + paths.len() as u64 >= c);
        if done {
            // what is still in the ring, then every packet still open
            tracer.poll(Duration::ZERO, |hop| assembler.push(hop, &mut paths))?;
            assembler.finish(&mut paths);
        }
        if let Some(r) = rules.as_mut() {
            // paths a rule may explain wait for its trace message
            r.hold(&mut paths, done);
        }
        for mut p in paths.drain(..) {
            if args.count.is_some_and(|c| packets >= c) {
                break;
            }
            packets += 1;
            summary.add(&p);
            printer.path(&mut out, &mut p)?;
        }
        out.flush()?;
        if done {
            break;
        }
    }
    let flows = summary.flows();
    printer.summary(&mut out, &flows)?;
    out.flush()?;
    if let Some(r) = &rules {
        if r.tracer.lost() > 0 {
            eprintln!(
                "kindling: {} nftables trace messages lost: some rules are not named",
                r.tracer.lost()
            );
        }
    }
    drop(rules);
    let losses = tracer.losses()?;
    let stats = assembler.stats();
    eprintln!(
        "kindling: {packets} packets, {} hops; lost: ring_full={} over_budget={} undecodable={} | hops_truncated={} evicted={}",
        stats.hops,
        losses.ring_full,
        losses.over_budget,
        losses.undecodable,
        stats.hops_truncated,
        stats.evicted
    );
    Ok(())
}

/// How long a path a rule may explain waits for the trace message naming
/// it (netlink and the ring buffer are read apart).
const RULE_WAIT: Duration = Duration::from_millis(300);

/// Names the nftables rules behind drops and translations
/// (`--nft-trace`).
struct RuleNamer {
    tracer: crate::nftrace::NftTracer,
    /// Recent verdicts, with the namespace each came from.
    verdicts: Vec<(String, kindling_flow::packets::nftrace::VerdictLog)>,
    held: std::collections::VecDeque<(Instant, PacketPath)>,
}

impl RuleNamer {
    fn start(namespaces: &[String], ports: &[u16]) -> Result<Self> {
        let tracer = crate::nftrace::NftTracer::start(namespaces, ports)?;
        eprintln!(
            "kindling: nftables tracing in {} (table inet kindling_trace until the trace ends)",
            namespaces.join(", ")
        );
        Ok(Self {
            tracer,
            verdicts: namespaces
                .iter()
                .map(|n| (n.clone(), Default::default()))
                .collect(),
            held: Default::default(),
        })
    }

    /// Takes the paths of `ready` a rule may explain, and gives back those
    /// named or waited for long enough (all of them when `flush`).
    fn hold(&mut self, ready: &mut Vec<PacketPath>, flush: bool) {
        let now = Instant::now();
        for (ns, t) in self.tracer.drain() {
            if let Some((_, log)) = self.verdicts.iter_mut().find(|(n, _)| *n == ns) {
                log.push(t);
            }
        }
        let mut keep = Vec::with_capacity(ready.len());
        for p in ready.drain(..) {
            let wants_rule = p.translation().is_some()
                || matches!(&p.end, End::Dropped { reason, .. } if reason == "NETFILTER_DROP");
            if wants_rule {
                self.held.push_back((now, p));
            } else {
                keep.push(p);
            }
        }
        let mut waiting = std::collections::VecDeque::new();
        while let Some((since, mut p)) = self.held.pop_front() {
            self.name(&mut p);
            let named = p.drop_rule.is_some() || p.nat_rule.is_some();
            if named || flush || now.duration_since(since) >= RULE_WAIT {
                keep.push(p);
            } else {
                waiting.push_back((since, p));
            }
        }
        self.held = waiting;
        *ready = keep;
    }

    fn name(&mut self, p: &mut PacketPath) {
        use kindling_flow::packets::nftrace::Verdict;
        let tuples = p.tuples();
        let dropped = matches!(&p.end, End::Dropped { reason, .. } if reason == "NETFILTER_DROP");
        for (ns, log) in &self.verdicts {
            for &tuple in &tuples {
                if dropped && p.drop_rule.is_none() {
                    if let Some(t) = log.find(tuple, &Verdict::Drop) {
                        p.drop_rule = Some(self.tracer.describe(ns, t));
                    }
                }
                if p.translation().is_some() && p.nat_rule.is_none() {
                    if let Some(t) = log.find(tuple, &Verdict::Accept) {
                        let rule = self.tracer.describe(ns, t);
                        if ["dnat", "snat", "masquerade", "redirect"]
                            .iter()
                            .any(|w| rule.contains(w))
                        {
                            p.nat_rule = Some(rule);
                        }
                    }
                }
            }
        }
    }
}

fn netns_inode(path: &str) -> Result<u32> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {path}"))?;
    u32::try_from(meta.ino()).with_context(|| format!("{path}: inode out of range"))
}

/// `--container`: the network namespace of the container whose id starts
/// with `prefix` (its first process' namespace: a container has one).
fn container_netns(prefix: &str) -> Result<u32> {
    let prefix = prefix.to_ascii_lowercase();
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--container {prefix}: a container id is hexadecimal digits");
    }
    let found = kindling_k8s::container_processes("/proc", &prefix);
    let ids: std::collections::BTreeSet<&str> = found.iter().map(|(_, id)| id.as_str()).collect();
    match (found.first(), ids.len()) {
        (None, _) => {
            bail!("--container {prefix}: no process of such a container runs on this host")
        }
        (Some((pid, id)), 1) => {
            eprintln!(
                "kindling: container {id}: starting in the network namespace of its process {pid}"
            );
            netns_inode(&format!("/proc/{pid}/ns/net"))
        }
        _ => bail!(
            "--container {prefix} is ambiguous: {} containers start so ({})",
            ids.len(),
            ids.into_iter().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// `--netns`: an `ip netns` name, a path, or an inode number.
fn resolve_netns(spec: &str) -> Result<u32> {
    if let Ok(n) = spec.parse::<u32>() {
        return Ok(n);
    }
    if spec.contains('/') {
        return netns_inode(spec);
    }
    netns_inode(&format!("/run/netns/{spec}"))
        .with_context(|| format!("no network namespace named {spec} (ip netns list)"))
}

/// Readable names of namespaces: `host`, the names of `ip netns`, else
/// `net:[INODE]`.
struct NetnsNames {
    by_inode: BTreeMap<u32, String>,
}

impl NetnsNames {
    fn scan() -> Self {
        let mut by_inode = BTreeMap::new();
        if let Ok(dir) = std::fs::read_dir("/run/netns") {
            for entry in dir.flatten() {
                if let (Ok(meta), Some(name)) = (
                    entry.metadata(),
                    entry.file_name().to_str().map(str::to_owned),
                ) {
                    if let Ok(ino) = u32::try_from(meta.ino()) {
                        by_inode.insert(ino, name);
                    }
                }
            }
        }
        if let Some(host) = kindling_probe::capture::host_netns() {
            by_inode.insert(host, "host".to_owned());
        }
        Self { by_inode }
    }

    fn name(&self, inode: u32) -> String {
        match (inode, self.by_inode.get(&inode)) {
            (0, _) => "?".to_owned(),
            (_, Some(name)) => name.clone(),
            (n, None) => format!("net:[{n}]"),
        }
    }
}

/// Kernel symbols, to name where a packet was dropped (`nf_hook_slow+0x9c`).
struct Symbols {
    sorted: Vec<(u64, String)>,
}

impl Symbols {
    fn load() -> Self {
        let text = std::fs::read_to_string("/proc/kallsyms").unwrap_or_default();
        let mut sorted: Vec<(u64, String)> = text
            .lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let addr = u64::from_str_radix(f.next()?, 16).ok()?;
                let kind = f.next()?;
                let name = f.next()?;
                (addr != 0 && matches!(kind, "t" | "T")).then(|| (addr, name.to_owned()))
            })
            .collect();
        sorted.sort_unstable_by_key(|(a, _)| *a);
        Self { sorted }
    }

    fn name(&self, addr: u64) -> String {
        let i = self.sorted.partition_point(|(a, _)| *a <= addr);
        match i.checked_sub(1).and_then(|i| self.sorted.get(i)) {
            Some((base, name)) if addr - base < 1 << 20 => format!("{name}+{:#x}", addr - base),
            _ => format!("{addr:#x}"),
        }
    }
}

struct Printer<'a> {
    format: Format,
    names: &'a NetnsNames,
    symbols: &'a Symbols,
    summary_only: bool,
    /// Each namespace's name made once, shared by every hop in it.
    shared_names: BTreeMap<u32, std::sync::Arc<str>>,
}

impl Printer<'_> {
    fn end_text(&self, end: &End) -> String {
        match end {
            End::Delivered { pid, comm } => format!("delivered to {comm} ({pid})"),
            End::Consumed => "consumed".to_owned(),
            End::Dropped {
                reason,
                device,
                netns,
                location,
                loss,
                ..
            } => format!(
                "{} {reason} at {}@{} in {}",
                if *loss { "DROPPED" } else { "freed" },
                device.as_deref().unwrap_or("?"),
                self.names.name(*netns),
                self.symbols.name(*location)
            ),
            End::LastSeen => "last seen".to_owned(),
        }
    }

    fn place(&self, p: &HopPlace) -> String {
        match &p.device {
            Some(d) => format!("{} {d}@{}", p.point.name(), self.names.name(p.netns)),
            None => format!("{}@{}", p.point.name(), self.names.name(p.netns)),
        }
    }

    fn path(&mut self, out: &mut impl Write, p: &mut PacketPath) -> io::Result<()> {
        if self.summary_only {
            return Ok(());
        }
        match self.format {
            Format::Json => {
                // written as it is serialised: no tree of values per packet
                // (that was most of the tracer's own time under load)
                if self.shared_names.len() > 4096 {
                    // namespaces come and go with pods: bound the cache
                    self.shared_names.clear();
                }
                for hop in &mut p.hops {
                    let names = self.names;
                    let name = self
                        .shared_names
                        .entry(hop.netns)
                        .or_insert_with(|| names.name(hop.netns).into());
                    hop.netns_name = Some(std::sync::Arc::clone(name));
                }
                if let End::Dropped {
                    location, symbol, ..
                } = &mut p.end
                {
                    *symbol = Some(self.symbols.name(*location));
                }
                serde_json::to_writer(&mut *out, &*p)?;
                out.write_all(b"\n")
            }
            Format::Table => {
                let flags = if p.tcp_flags.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", p.tcp_flags)
                };
                let rule = p
                    .drop_rule
                    .as_ref()
                    .map(|r| format!(", rule {r}"))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "{} {} → {}{flags}  {} hops, {}: {}{rule}",
                    p.protocol,
                    p.src,
                    p.dst,
                    p.hops.len(),
                    duration(p.duration_ns()),
                    self.end_text(&p.end)
                )?;
                let mut tuple = (p.src, p.dst);
                for h in &p.hops {
                    let place = match &h.device {
                        Some(d) => format!("{d}@{}", self.names.name(h.netns)),
                        None => format!("@{}", self.names.name(h.netns)),
                    };
                    let nat = if (h.src, h.dst) != tuple {
                        tuple = (h.src, h.dst);
                        let rule = p
                            .nat_rule
                            .as_ref()
                            .map(|r| format!(" by {r}"))
                            .unwrap_or_default();
                        format!("  NAT → {} → {}{rule}", h.src, h.dst)
                    } else {
                        String::new()
                    };
                    writeln!(
                        out,
                        "  +{:>9}  {:<8} {place}{nat}",
                        duration(h.offset_ns),
                        h.point.name()
                    )?;
                }
                Ok(())
            }
        }
    }

    fn summary(&mut self, out: &mut impl Write, flows: &[FlowSummary]) -> io::Result<()> {
        match self.format {
            Format::Json => {
                for f in flows {
                    let mut v = serde_json::to_value(f).unwrap_or_default();
                    v["kind"] = "flow".into();
                    writeln!(out, "{v}")?;
                }
                Ok(())
            }
            Format::Table => {
                if flows.is_empty() {
                    return writeln!(out, "no packet matched");
                }
                writeln!(out, "\nper flow:")?;
                for f in flows {
                    let end = |a: Option<std::net::SocketAddr>| {
                        a.map_or_else(|| "?".to_owned(), |a| a.to_string())
                    };
                    writeln!(
                        out,
                        "{} {} ↔ {}: {} packets, {} dropped, {} freed by a drop that is no loss, {} translated",
                        f.protocol,
                        end(f.a),
                        end(f.b),
                        f.packets,
                        f.dropped,
                        f.freed,
                        f.translated
                    )?;
                    for d in &f.drops {
                        writeln!(
                            out,
                            "  drop {:>6}  {} at {}@{}",
                            d.count,
                            d.place.reason,
                            d.place.device.as_deref().unwrap_or("?"),
                            self.names.name(d.place.netns)
                        )?;
                    }
                    for h in &f.hops {
                        writeln!(
                            out,
                            "  hop  {:<24} → {:<24} n={:<6} p50={:<8} p99={:<8} max={}",
                            self.place(&h.from),
                            self.place(&h.to),
                            h.count,
                            duration(h.p50_ns),
                            duration(h.p99_ns),
                            duration(h.max_ns)
                        )?;
                    }
                }
                Ok(())
            }
        }
    }
}
