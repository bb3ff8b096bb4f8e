//! `kindling agent`: probe → pipeline → process enricher → the Prometheus
//! model, served on `/metrics` (with `/healthz` and `/readyz`) until
//! SIGTERM or SIGINT, which end it after counting what the pipeline still
//! held.

mod exposition;
mod json_out;
pub mod otlp;
mod serve;
pub mod settings;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use kindling_flow::enrich::Enricher;
use kindling_flow::packets::DropLinks;
use kindling_flow::{Driver, Metrics, MetricsConfig, Output};
use kindling_k8s::ProcessEnricher;
use kindling_probe::{LossStats, ProbeBuilder};

use crate::args::{AgentArgs, Format};
use crate::live::{self, boottime_now};
use crate::output::Printer;
use exposition::AgentCounters;
use json_out::Sink;
use serve::Shared;
use settings::Settings;

pub fn run(args: AgentArgs) -> Result<()> {
    let settings = Settings::resolve(&args)?;
    if args.print_config {
        print!("{}", settings.to_toml());
        return Ok(());
    }
    settings.log_format.init();
    // before any thread starts: they inherit it
    settings.sched.apply()?;
    let stop = live::stop_flag()?;
    // Kubernetes names: the watchers fill the store the enricher reads
    let kubernetes = match settings.kubernetes() {
        Some(config) => Some(Kubernetes::start(&config, &settings.node)?),
        None => None,
    };
    let shared = Arc::new(Shared {
        metrics: Mutex::new(Metrics::with_labels(
            MetricsConfig {
                max_series: settings.max_series,
                identity: if kubernetes.is_some() {
                    kindling_k8s::METRIC_LABELS
                } else {
                    &[]
                },
                ..MetricsConfig::default()
            },
            &[("cluster", &settings.cluster), ("node", &settings.node)],
        )),
        counters: AgentCounters::default(),
        cluster: settings.cluster.clone(),
        node: settings.node.clone(),
        token: settings.metrics_token()?,
        kubernetes: kubernetes.as_ref().map(Kubernetes::view),
        net: (settings.trace_packets > 0).then(|| {
            Mutex::new(kindling_flow::metrics::NetMetrics::new(
                settings.max_series,
                kindling_probe::capture::host_netns(),
            ))
        }),
    });
    // The endpoint first: a port in use fails before the probe loads, and
    // /readyz answers while it loads.
    let tls = settings.metrics_tls()?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = serve::start(settings.listen, tls, Arc::clone(&shared), Arc::clone(&stop))?;
    tracing::info!(url = %format!("{scheme}://{}/metrics", settings.listen), "agent serving");
    let started = Instant::now();
    let loaded = ProbeBuilder::from_config(settings.probe()).load();
    let mut probe = match loaded {
        Ok(p) => p,
        Err(e) => {
            stop.store(true, Ordering::Relaxed);
            let _ = server.join();
            return Err(e.into());
        }
    };
    tracing::info!(
        "{}",
        live::loaded_line(&probe, started.elapsed()).trim_start_matches("kindling: ")
    );
    let header = live::host_header(&probe);
    let mut packets = match settings.trace_packets {
        0 => None,
        every => Some(PacketPaths::start(&settings, every, &header)?),
    };
    shared.counters.ready.store(true, Ordering::Relaxed);

    let mut json = match &settings.json_out {
        Some(target) => {
            let sink = Sink::open(
                target,
                settings.json_out_max_kb.saturating_mul(1024),
                settings.json_out_keep,
            )
            .with_context(|| format!("opening --json-out {target}"))?;
            let offset = header.host.boottime_to_unix_ns;
            Some(Printer::new(sink, Format::Json, offset, false, false))
        }
        None => None,
    };
    let mut exporter = match settings.otlp() {
        Some(config) => {
            let endpoint = config.endpoint.clone();
            shared.counters.otlp_on.store(true, Ordering::Relaxed);
            let source = Arc::clone(&shared);
            let e = otlp::Exporter::start(
                config,
                Arc::clone(&shared.counters.otlp),
                Box::new(move || source.exposition()),
            )?;
            tracing::info!(%endpoint, "agent sending OTLP");
            Some(e)
        }
        None => None,
    };
    let mut pipeline = live::pipeline_config(&header);
    pipeline.redaction.keep_query_values = settings.keep_query_values.clone();
    if json.is_none() && exporter.is_none() {
        // only the metrics model reads the exchanges: it needs a handful
        // of their attributes
        pipeline.detail = kindling_flow::Detail::Essential;
    }
    let mut driver = Driver::live(pipeline);
    let mut enricher: Box<dyn Enricher> = match &kubernetes {
        Some(k) => Box::new(k.enricher(&settings.node)),
        None => Box::new(ProcessEnricher::new()),
    };
    // The process enricher fills the resource attributes, which only the
    // JSON and OTLP outputs carry: without them the agent skips that work.
    // Kubernetes names are labels on the metrics too.
    let enrich = json.is_some() || exporter.is_some() || kubernetes.is_some();
    let mut outputs = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let polled = probe.poll(Duration::from_millis(100), |ev| {
            driver.push(&ev, &mut outputs);
        });
        if let Err(e) = polled {
            stop.store(true, Ordering::Relaxed);
            let _ = server.join();
            return Err(e.into());
        }
        driver.tick(boottime_now(), &mut outputs);
        let losses = probe.losses()?;
        driver.note_lost_total(losses.lost_records());
        // the drops first: a retransmit just read follows its drop, which
        // the tracer's ring holds by now
        if let (Some(p), Some(net)) = (packets.as_mut(), shared.net.as_ref()) {
            p.publish(net, false)?;
        }
        if let Err(e) = publish(
            &shared,
            &mut driver,
            enrich.then_some(&mut *enricher),
            packets.as_mut().map(|p| &mut p.links),
            &mut outputs,
            json.as_mut(),
            exporter.as_mut(),
        ) {
            // a full disk must not take the metrics down with it
            tracing::error!(error = %format!("{e:#}"), "--json-out stops, /metrics goes on");
            json = None;
        }
        count(&shared.counters, probe.received(), &losses);
    }
    // what the ring still holds is read (the outputs get every exchange
    // made before the signal), and what the pipeline still held
    // (unanswered requests at the end) is counted before the last scrape
    probe.poll(Duration::ZERO, |ev| {
        driver.push(&ev, &mut outputs);
    })?;
    driver.finish(&mut outputs);
    if let (Some(p), Some(net)) = (packets.as_mut(), shared.net.as_ref()) {
        p.publish(net, true)?;
    }
    publish(
        &shared,
        &mut driver,
        enrich.then_some(&mut *enricher),
        packets.as_mut().map(|p| &mut p.links),
        &mut outputs,
        json.as_mut(),
        exporter.as_mut(),
    )?;
    if let Some(e) = exporter {
        // what is queued, and the last metrics, before the endpoint goes
        e.finish();
    }
    let _ = server.join();
    tracing::info!(
        events = probe.received(),
        losses = %crate::output::losses_line(&probe.losses()?),
        "agent stopped"
    );
    Ok(())
}

/// Adds the pipeline's new outputs and counters to the model, and writes
/// them as JSON lines when asked to; with the packet tracer on, names the
/// traced drops behind retransmits first.
fn publish(
    shared: &Shared,
    driver: &mut Driver,
    mut enricher: Option<&mut dyn Enricher>,
    mut links: Option<&mut DropLinks>,
    outputs: &mut Vec<Output>,
    json: Option<&mut Printer<Sink>>,
    mut otlp: Option<&mut otlp::Exporter>,
) -> Result<()> {
    let mut net = shared
        .net
        .as_ref()
        .map(|n| n.lock().unwrap_or_else(PoisonError::into_inner));
    let mut metrics = shared
        .metrics
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for o in outputs.iter_mut() {
        if let Some(e) = enricher.as_deref_mut() {
            e.enrich(o);
        }
        if let (Some(links), Some(net)) = (links.as_deref_mut(), net.as_deref_mut()) {
            let is_tcp = matches!(o, Output::Tcp(_));
            if let Some(cause) = links.link(o) {
                if is_tcp {
                    net.observe_retransmit_cause(cause);
                }
            }
        }
        metrics.observe(o);
        if let (Some(otlp), Output::Exchange(x)) = (otlp.as_deref_mut(), &*o) {
            if !x.pending {
                otlp.offer(x);
            }
        }
    }
    metrics.update_stats(&driver.stats());
    drop(metrics);
    drop(net);
    if let Some(json) = json {
        // (RTT samples and non-loss drops stay out, as in `replay -o json`)
        json.outputs(outputs, 0, |_| {})
            .and_then(|()| json.get_mut().end_batch())
            .context("writing --json-out")?;
    }
    driver.reuse(outputs);
    Ok(())
}

/// The packet tracer of `--trace-packets`: its hops become packet paths,
/// the paths the `kindling_net_*` series.
struct PacketPaths {
    tracer: kindling_probe::PacketTracer,
    assembler: kindling_flow::packets::PathAssembler,
    done: Vec<kindling_flow::packets::PacketPath>,
    /// Recent drops, for the retransmits they cause.
    links: DropLinks,
    boottime_to_unix_ns: i64,
}

impl PacketPaths {
    fn start(
        settings: &Settings,
        every: u32,
        header: &kindling_probe::capture::CaptureHeader,
    ) -> Result<Self> {
        let mut builder =
            kindling_probe::PacketTracerBuilder::new().filter(kindling_probe::PacketFilter {
                sample_every: every,
                budget_per_sec: settings.trace_packets_budget,
                ..kindling_probe::PacketFilter::default()
            });
        if let Some(btf) = &settings.btf {
            builder = builder.btf_path(btf);
        }
        let tracer = builder.load().context("loading the packet tracer")?;
        tracing::info!(every, "packet tracer attached: one flow in N followed");
        Ok(Self {
            tracer,
            assembler: kindling_flow::packets::PathAssembler::new(
                kindling_flow::packets::PathConfig {
                    boottime_to_unix_ns: header.host.boottime_to_unix_ns,
                    drop_reasons: header.host.drop_reasons.clone(),
                },
            ),
            done: Vec::new(),
            links: DropLinks::default(),
            boottime_to_unix_ns: header.host.boottime_to_unix_ns,
        })
    }

    /// Reads the tracer's hops and counts the packets they end; `last`:
    /// every packet still open ends too.
    fn publish(
        &mut self,
        net: &Mutex<kindling_flow::metrics::NetMetrics>,
        last: bool,
    ) -> Result<()> {
        let (assembler, done) = (&mut self.assembler, &mut self.done);
        self.tracer
            .poll(Duration::ZERO, |hop| assembler.push(hop, done))?;
        let now = boottime_now();
        assembler.tick(now, done);
        let now_unix = i64::try_from(now)
            .unwrap_or(i64::MAX)
            .saturating_add(self.boottime_to_unix_ns);
        if last {
            assembler.finish(done);
        }
        let losses = self.tracer.losses()?;
        let mut net = net.lock().unwrap_or_else(PoisonError::into_inner);
        for p in done.drain(..) {
            net.observe(&p);
            self.links.record(&p);
        }
        self.links.prune(now_unix);
        net.set_lost(losses.ring_full, losses.over_budget, losses.undecodable);
        Ok(())
    }
}

/// The Kubernetes side of the agent: the store and its watchers.
struct Kubernetes {
    store: Arc<RwLock<kindling_k8s::store::Store>>,
    watchers: kindling_k8s::watch::Watchers,
}

/// How long a deleted pod's names stay in use, for events about it that
/// arrive late.
const K8S_GRACE: Duration = Duration::from_secs(60);

/// How long the agent waits for its first lists before capturing (it goes
/// on without them: names arrive as the lists do).
const K8S_SYNC_WAIT: Duration = Duration::from_secs(10);

impl Kubernetes {
    fn start(config: &kindling_k8s::watch::WatchConfig, node: &str) -> Result<Self> {
        let grace = u64::try_from(K8S_GRACE.as_nanos()).unwrap_or(u64::MAX);
        let store = Arc::new(RwLock::new(kindling_k8s::store::Store::new(grace)));
        let watchers = kindling_k8s::watch::Watchers::start(config, Arc::clone(&store))
            .context("Kubernetes names (--kubernetes off to go without)")?;
        if watchers.wait_synced(K8S_SYNC_WAIT) {
            let pods = store
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .pod_count();
            tracing::info!(pods, node, "Kubernetes metadata listed");
        } else {
            tracing::warn!(
                "Kubernetes metadata not listed after {K8S_SYNC_WAIT:?}: names will be missing until it is"
            );
        }
        Ok(Self { store, watchers })
    }

    /// The enricher naming both ends, and a service's backend pod from
    /// conntrack when the agent may read it (CAP_NET_ADMIN).
    fn enricher(&self, node: &str) -> kindling_k8s::KubernetesEnricher {
        let e = kindling_k8s::KubernetesEnricher::new(
            ProcessEnricher::new(),
            Arc::clone(&self.store),
            node,
        );
        match kindling_k8s::conntrack::Conntrack::open() {
            Ok(conntrack) => e.with_translations(Box::new(conntrack)),
            Err(error) => {
                tracing::warn!(%error, "no conntrack: services are named, not their backend pods");
                e
            }
        }
    }

    /// What `/metrics` reads of it.
    fn view(&self) -> serve::KubernetesView {
        serve::KubernetesView {
            store: Arc::clone(&self.store),
            status: Arc::clone(self.watchers.status()),
        }
    }
}

fn count(c: &AgentCounters, events: u64, losses: &LossStats) {
    c.events.store(events, Ordering::Relaxed);
    c.lost_ring_full.store(losses.ring_full, Ordering::Relaxed);
    c.lost_pending_full
        .store(losses.pending_full, Ordering::Relaxed);
    c.lost_undecodable
        .store(losses.undecodable, Ordering::Relaxed);
    c.truncated.store(losses.truncated, Ordering::Relaxed);
}
