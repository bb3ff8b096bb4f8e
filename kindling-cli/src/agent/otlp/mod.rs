//! The OpenTelemetry output: every exchange as a span and the metrics of
//! `/metrics`, sent to a collector over OTLP (gRPC or HTTP/protobuf).
//!
//! The capture loop only ever *offers* a span: it goes into a bounded
//! queue, or is dropped and counted when the queue is full. A thread of
//! its own batches the queue, sends, retries with back-off while the
//! collector is away, and exports the metrics on an interval. So the probe
//! and the pipeline never wait on the network, and memory stays bounded
//! (the queue, plus one batch being retried).

mod metrics;
mod spans;
mod transport;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use kindling_flow::Exchange;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use spans::{Ids, Item, Owner};
use transport::{Failure, Transport};

/// The OTLP encoding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Protocol {
    /// OTLP/gRPC (a collector's port 4317).
    #[default]
    #[serde(rename = "grpc")]
    #[value(name = "grpc")]
    Grpc,
    /// OTLP/HTTP with protobuf bodies (a collector's port 4318).
    #[serde(rename = "http/protobuf")]
    #[value(name = "http/protobuf")]
    HttpProtobuf,
}

/// Where and how the output sends.
#[derive(Clone, Debug)]
pub struct Config {
    /// `http://host:port` of the collector.
    pub endpoint: String,
    /// gRPC or HTTP/protobuf.
    pub protocol: Protocol,
    /// Extra headers (gRPC metadata) on every request, e.g. an API key.
    pub headers: Vec<(String, String)>,
    /// Most spans waiting to be sent; more are dropped and counted.
    pub queue: usize,
    /// Most spans in one request.
    pub batch: usize,
    /// How often the metrics are sent (and the longest a span waits).
    pub metrics_interval: Duration,
    /// How long one batch is retried before it is dropped and counted.
    pub max_retry: Duration,
    /// Resource attributes of everything sent: `k8s.cluster.name`.
    pub cluster: String,
    /// … and `host.name`.
    pub node: String,
}

/// What the output did, for `/metrics`.
#[derive(Debug, Default)]
pub struct Counters {
    /// Spans the collector accepted.
    pub spans_exported: AtomicU64,
    /// Spans dropped: the queue was full.
    pub dropped_queue_full: AtomicU64,
    /// Spans dropped: the export failed for good (or its retries ran out).
    pub dropped_export_failed: AtomicU64,
    /// Spans or metric points the collector accepted the request of but
    /// rejected.
    pub dropped_rejected: AtomicU64,
    /// Metric exports that succeeded.
    pub metric_exports: AtomicU64,
    /// Metric exports that failed (the next one sends the cumulative
    /// values again: nothing is lost but resolution).
    pub metric_exports_failed: AtomicU64,
    /// Export attempts retried.
    pub retries: AtomicU64,
    /// Spans waiting in the queue now.
    pub queue_depth: AtomicU64,
}

/// The running output.
#[derive(Debug)]
pub struct Exporter {
    tx: Option<mpsc::Sender<Item>>,
    capacity: usize,
    ids: Ids,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

/// The metrics to send: the exposition text `/metrics` serves.
pub type MetricsSource = Box<dyn Fn() -> String + Send>;

impl Exporter {
    /// Starts the sending thread. Fails only on a bad endpoint or header;
    /// an absent collector is retried.
    pub fn start(config: Config, counters: Arc<Counters>, source: MetricsSource) -> Result<Self> {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the OTLP runtime")?;
        // built here, so that a bad endpoint is an error at start
        let transport = runtime.block_on(async {
            Transport::new(
                &config.endpoint,
                config.protocol,
                &config.headers,
                Duration::from_secs(10),
            )
        })?;
        let c = Arc::clone(&counters);
        let capacity = config.queue.max(1);
        let thread = std::thread::Builder::new()
            .name("otlp".into())
            .spawn(move || {
                let mut sender = Sender {
                    transport,
                    counters: c,
                    config,
                    started_ns: unix_now(),
                    source,
                    closing: false,
                };
                runtime.block_on(sender.run(rx));
            })
            .context("starting the OTLP thread")?;
        Ok(Self {
            tx: Some(tx),
            capacity,
            ids: Ids::new(),
            counters,
            thread: Some(thread),
        })
    }

    /// Queues the span of an exchange, or drops and counts it when the
    /// queue is full. Never waits.
    pub fn offer(&mut self, x: &Exchange) {
        let Some(tx) = &self.tx else { return };
        match tx.try_send(spans::span(x, &mut self.ids)) {
            Ok(()) => {}
            Err(_) => {
                self.counters
                    .dropped_queue_full
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        let depth = self.capacity.saturating_sub(tx.capacity());
        self.counters
            .queue_depth
            .store(depth as u64, Ordering::Relaxed);
    }

    /// Sends what is queued and the last metrics, for at most about
    /// `max_retry` more, then stops the thread.
    pub fn finish(mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The sending thread's state.
struct Sender {
    transport: Transport,
    counters: Arc<Counters>,
    config: Config,
    started_ns: u64,
    source: MetricsSource,
    /// The agent is stopping: retries are cut short.
    closing: bool,
}

impl Sender {
    async fn run(&mut self, mut rx: mpsc::Receiver<Item>) {
        let mut batch = Vec::with_capacity(self.config.batch);
        // spans wait at most a second; metrics go on their interval
        let mut flush = tokio::time::interval(Duration::from_secs(1));
        let mut metrics = tokio::time::interval(self.config.metrics_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        metrics.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        metrics.tick().await;
        loop {
            tokio::select! {
                item = rx.recv() => match item {
                    Some(item) => {
                        batch.push(item);
                        if batch.len() >= self.config.batch {
                            self.send_spans(&mut batch).await;
                        }
                    }
                    None => break,
                },
                _ = flush.tick() => {
                    if !batch.is_empty() {
                        self.send_spans(&mut batch).await;
                    }
                }
                _ = metrics.tick() => self.send_metrics().await,
            }
            self.counters
                .queue_depth
                .store(rx.len() as u64, Ordering::Relaxed);
        }
        // the queue is closed: what it held, then the last metrics
        self.closing = true;
        if !batch.is_empty() {
            self.send_spans(&mut batch).await;
        }
        self.send_metrics().await;
        self.counters.queue_depth.store(0, Ordering::Relaxed);
    }

    async fn send_spans(&mut self, batch: &mut Vec<Item>) {
        let n = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: group(std::mem::take(batch), &self.config),
        };
        let c = Arc::clone(&self.counters);
        let outcome = self.with_retries(&Request::Traces(request)).await;
        match outcome {
            Ok(rejected) => {
                c.spans_exported
                    .fetch_add(n.saturating_sub(rejected), Ordering::Relaxed);
                c.dropped_rejected.fetch_add(rejected, Ordering::Relaxed);
            }
            Err(e) => {
                c.dropped_export_failed.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(spans = n, error = %e, "OTLP: spans dropped");
            }
        }
    }

    async fn send_metrics(&mut self) {
        let text = (self.source)();
        let (metrics, _) = metrics::from_exposition(
            &text,
            metrics::Window {
                start_ns: self.started_ns,
                now_ns: unix_now(),
            },
        );
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(resource(
                    &self.config,
                    [
                        ("service.name", "kindling-agent".to_owned()),
                        ("service.version", env!("CARGO_PKG_VERSION").to_owned()),
                    ],
                )),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let c = Arc::clone(&self.counters);
        let outcome = self.with_retries(&Request::Metrics(request)).await;
        match outcome {
            Ok(rejected) => {
                c.metric_exports.fetch_add(1, Ordering::Relaxed);
                c.dropped_rejected.fetch_add(rejected, Ordering::Relaxed);
            }
            Err(e) => {
                c.metric_exports_failed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "OTLP: metrics not sent");
            }
        }
    }

    /// Sends `request` until it succeeds, fails for good, or `max_retry`
    /// has passed (3 s at most once the agent is stopping), waiting 100 ms,
    /// 200 ms, … up to 5 s between attempts.
    async fn with_retries(&mut self, request: &Request) -> Result<u64, Failure> {
        let start = Instant::now();
        let limit = if self.closing {
            self.config.max_retry.min(Duration::from_secs(3))
        } else {
            self.config.max_retry
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = async {
                match request {
                    Request::Traces(r) => self.transport.traces(r.clone()).await,
                    Request::Metrics(r) => self.transport.metrics(r.clone()).await,
                }
            };
            let result = tokio::time::timeout(Duration::from_secs(10), attempt)
                .await
                .unwrap_or_else(|_| Err(Failure::Retryable("timed out".into())));
            match result {
                Err(Failure::Retryable(_)) if start.elapsed() + backoff < limit => {
                    self.counters.retries.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }
}

/// One export.
enum Request {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

/// Spans grouped by their process: one OTLP resource each.
fn group(items: Vec<Item>, config: &Config) -> Vec<ResourceSpans> {
    let mut by_owner: BTreeMap<Owner, Vec<Span>> = BTreeMap::new();
    for item in items {
        by_owner.entry(item.owner).or_default().push(item.span);
    }
    by_owner
        .into_iter()
        .map(|(owner, spans)| {
            let mut r = resource(
                config,
                [
                    ("service.name", owner.comm.clone()),
                    ("process.pid", owner.pid.to_string()),
                    ("process.executable.name", owner.comm.clone()),
                ],
            );
            for (k, v) in &owner.resource {
                if !r.attributes.iter().any(|kv| kv.key == *k) {
                    r.attributes.push(string_kv(k, v));
                }
            }
            ResourceSpans {
                resource: Some(r),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect()
}

/// A resource of `attributes` and the node's: `host.name`,
/// `k8s.cluster.name` (when named).
fn resource<const N: usize>(config: &Config, attributes: [(&str, String); N]) -> Resource {
    let mut kv: Vec<KeyValue> = attributes
        .iter()
        .map(|(k, v)| {
            if *k == "process.pid" {
                int_kv(k, v.parse().unwrap_or(0))
            } else {
                string_kv(k, v)
            }
        })
        .collect();
    kv.push(string_kv("host.name", &config.node));
    if !config.cluster.is_empty() {
        kv.push(string_kv("k8s.cluster.name", &config.cluster));
    }
    Resource {
        attributes: kv,
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "kindling".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        ..Default::default()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// A string attribute.
fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// An integer attribute.
fn int_kv(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}
