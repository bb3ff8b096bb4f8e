//! The agent's settings: from flags, `KINDLING_*` environment variables
//! and a TOML file, in that order of precedence (clap puts a flag before
//! its variable; the file fills what neither gave; defaults the rest).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use kindling_probe::ProbeConfig;
use serde::{Deserialize, Serialize};

use super::otlp::{self, Protocol};
use crate::args::AgentArgs;

/// Everything `kindling agent` runs with; `--print-config` shows it as TOML.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    pub listen: SocketAddr,
    /// Cluster name, a label on every exported series (empty: none).
    pub cluster: String,
    /// Node name, a label on every exported series.
    pub node: String,
    /// Only these processes (empty: all).
    pub pids: Vec<u32>,
    /// Only sockets with one of these local or remote ports (empty: all).
    pub ports: Vec<u16>,
    /// Only tasks in these cgroup v2 ids (empty: all).
    pub cgroups: Vec<u64>,
    /// Payload bytes captured per syscall.
    pub snaplen: u32,
    /// Ring buffer size, MiB.
    pub ring_mb: u32,
    /// Most label sets per metric family; more are folded into an
    /// overflow set (bounds the agent's memory).
    pub max_series: usize,
    /// The kernel's BTF as a file, for kernels built without it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub btf: Option<PathBuf>,
    /// Exchanges and TCP records as JSON lines to this file, or `-` for
    /// standard output (none: not written).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_out: Option<String>,
    /// Size at which the `json_out` file is rotated, KiB.
    pub json_out_max_kb: u64,
    /// Rotated `json_out` files kept.
    pub json_out_keep: u32,
    /// A file holding the bearer token `/metrics` requires (none: open).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_token_file: Option<PathBuf>,
    /// Serve `/metrics` over HTTPS with this PEM certificate (chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_tls_cert: Option<PathBuf>,
    /// The private key of `metrics_tls_cert`, PEM.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_tls_key: Option<PathBuf>,
    /// Query parameters whose values outputs keep (every other value is
    /// redacted).
    pub keep_query_values: Vec<String>,
    /// The OpenTelemetry collector that gets spans and metrics (none: no
    /// OTLP output).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// `grpc` or `http/protobuf`.
    pub otlp_protocol: Protocol,
    /// `KEY=VALUE` headers on every OTLP request.
    pub otlp_headers: Vec<String>,
    /// Most spans waiting to be sent.
    pub otlp_queue: usize,
    /// Seconds between metric exports.
    pub otlp_interval: u64,
    /// Seconds a batch is retried before it is dropped.
    pub otlp_max_retry: u64,
    /// CPU scheduling policy of the agent's threads.
    pub sched: Sched,
    /// How the agent's log lines are written (to standard error; the level
    /// from `KINDLING_LOG`, e.g. `debug`, default `info`).
    pub log_format: LogFormat,
    /// Kubernetes names: `auto` (on in a cluster or with a kubeconfig),
    /// `on`, `off`.
    pub kubernetes: Kubernetes,
    /// The kubeconfig to reach the API server with (none: in-cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Ranges that are the cluster's besides the nodes' pod ranges (the
    /// service range, say): unknown addresses there are
    /// `NOT_FOUND_INTERNAL`.
    pub cluster_cidrs: Vec<String>,
    /// Watch full pods only on this node; elsewhere their metadata and
    /// the addresses their EndpointSlices give.
    pub k8s_node_local: bool,
    /// Follow one packet flow in this many through the node's virtual
    /// network, for the `kindling_net_*` series (0: the packet tracer is
    /// not loaded).
    pub trace_packets: u32,
    /// Hops the packet tracer writes per CPU per second at most.
    pub trace_packets_budget: u64,
}

impl Kubernetes {
    /// On, for `Auto` when a kubeconfig is given or inside a cluster.
    pub fn enabled(self, kubeconfig: bool) -> bool {
        match self {
            Kubernetes::Off => false,
            Kubernetes::On => true,
            Kubernetes::Auto => kubeconfig || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some(),
        }
    }
}

/// Whether the agent names Kubernetes objects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kubernetes {
    /// On inside a cluster (`KUBERNETES_SERVICE_HOST` is set) or when a
    /// kubeconfig is given.
    #[default]
    Auto,
    /// On: failing to reach the API's configuration is an error.
    On,
    /// Off.
    Off,
}

/// The agent's log format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// `2026-12-07T14:00:00Z  INFO agent serving url=http://…`
    #[default]
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

impl LogFormat {
    /// Installs the process's log subscriber (once; later calls do nothing).
    pub fn init(self) {
        let filter = tracing_subscriber::EnvFilter::try_from_env("KINDLING_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false);
        let _ = match self {
            LogFormat::Text => builder.with_ansi(false).try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
    }
}

/// How the kernel schedules the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Sched {
    /// `SCHED_BATCH`: as much CPU as a normal process, but its wake-ups
    /// (every poll of the ring) do not preempt the applications it watches,
    /// which keeps it out of their tail latency.
    #[default]
    Batch,
    /// `SCHED_OTHER`, as the agent was started.
    Normal,
}

impl Sched {
    /// Applies the policy to the calling thread (threads it starts later
    /// inherit it).
    pub fn apply(self) -> Result<()> {
        if self == Sched::Normal {
            return Ok(());
        }
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: pid 0 is the calling thread; `param` outlives the call.
        let rc = unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) };
        anyhow::ensure!(
            rc == 0,
            "setting SCHED_BATCH: {}",
            std::io::Error::last_os_error()
        );
        Ok(())
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 9500)),
            cluster: String::new(),
            node: hostname(),
            pids: Vec::new(),
            ports: Vec::new(),
            cgroups: Vec::new(),
            snaplen: ProbeConfig::default().snaplen,
            ring_mb: ProbeConfig::default().ring_bytes >> 20,
            max_series: kindling_flow::metrics::MetricsConfig::default().max_series,
            btf: None,
            metrics_token_file: None,
            json_out: None,
            json_out_max_kb: 100 << 10,
            json_out_keep: 5,
            metrics_tls_cert: None,
            metrics_tls_key: None,
            keep_query_values: Vec::new(),
            otlp_endpoint: None,
            otlp_protocol: Protocol::default(),
            otlp_headers: Vec::new(),
            otlp_queue: 8192,
            otlp_interval: 15,
            otlp_max_retry: 30,
            sched: Sched::default(),
            log_format: LogFormat::default(),
            kubernetes: Kubernetes::default(),
            kubeconfig: None,
            cluster_cidrs: Vec::new(),
            k8s_node_local: false,
            trace_packets: 0,
            trace_packets_budget: 20_000,
        }
    }
}

impl Settings {
    /// The settings `args` ask for, over the file's, over the defaults.
    pub fn resolve(args: &AgentArgs) -> Result<Self> {
        let mut s = match &args.config {
            Some(file) => Self::from_file(file)?,
            None => Self::default(),
        };
        if let Some(v) = args.listen {
            s.listen = v;
        }
        if let Some(v) = &args.cluster {
            s.cluster.clone_from(v);
        }
        if let Some(v) = &args.node {
            s.node.clone_from(v);
        }
        if !args.pids.is_empty() {
            s.pids.clone_from(&args.pids);
        }
        if !args.ports.is_empty() {
            s.ports.clone_from(&args.ports);
        }
        if !args.cgroups.is_empty() {
            s.cgroups.clone_from(&args.cgroups);
        }
        if let Some(v) = args.snaplen {
            s.snaplen = v;
        }
        if let Some(v) = args.ring_mb {
            s.ring_mb = v;
        }
        if let Some(v) = args.max_series {
            s.max_series = v;
        }
        if let Some(v) = &args.btf {
            s.btf = Some(v.clone());
        }
        if let Some(v) = &args.json_out {
            s.json_out = Some(v.clone());
        }
        if let Some(v) = args.json_out_max_kb {
            s.json_out_max_kb = v;
        }
        if let Some(v) = args.json_out_keep {
            s.json_out_keep = v;
        }
        if let Some(v) = &args.metrics_token_file {
            s.metrics_token_file = Some(v.clone());
        }
        if let Some(v) = &args.metrics_tls_cert {
            s.metrics_tls_cert = Some(v.clone());
        }
        if let Some(v) = &args.metrics_tls_key {
            s.metrics_tls_key = Some(v.clone());
        }
        if !args.keep_query_values.is_empty() {
            s.keep_query_values.clone_from(&args.keep_query_values);
        }
        if let Some(v) = &args.otlp_endpoint {
            s.otlp_endpoint = Some(v.clone());
        }
        if let Some(v) = args.otlp_protocol {
            s.otlp_protocol = v;
        }
        if !args.otlp_headers.is_empty() {
            s.otlp_headers.clone_from(&args.otlp_headers);
        }
        if let Some(v) = args.otlp_queue {
            s.otlp_queue = v;
        }
        if let Some(v) = args.otlp_interval {
            s.otlp_interval = v;
        }
        if let Some(v) = args.otlp_max_retry {
            s.otlp_max_retry = v;
        }
        if let Some(v) = args.sched {
            s.sched = v;
        }
        if let Some(v) = args.log_format {
            s.log_format = v;
        }
        if let Some(v) = args.kubernetes {
            s.kubernetes = v;
        }
        if let Some(v) = &args.kubeconfig {
            s.kubeconfig = Some(v.clone());
        }
        if !args.cluster_cidrs.is_empty() {
            s.cluster_cidrs.clone_from(&args.cluster_cidrs);
        }
        if args.k8s_node_local {
            s.k8s_node_local = true;
        }
        if let Some(n) = args.trace_packets {
            s.trace_packets = n;
        }
        s.check()?;
        Ok(s)
    }

    /// A TOML file's settings over the defaults; an unknown key or a bad
    /// value is one line naming it.
    pub fn from_file(file: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        toml::from_str(&text).map_err(|e| {
            // toml's message spans several lines with a source excerpt;
            // its first line names the key and the problem
            let first = e.message().lines().next().unwrap_or("invalid").to_owned();
            // the line the error points at, and the key it sets
            let at = e
                .span()
                .map(|r| {
                    let line = text[..r.start.min(text.len())].matches('\n').count() + 1;
                    let key = text
                        .lines()
                        .nth(line - 1)
                        .and_then(|l| l.split_once('='))
                        .map(|(k, _)| format!(", key `{}`", k.trim()))
                        .unwrap_or_default();
                    format!(" line {line}{key}")
                })
                .unwrap_or_default();
            anyhow::anyhow!("{}{at}: {first}", file.display())
        })
    }

    /// Settings that parse but cannot work together.
    fn check(&self) -> Result<()> {
        anyhow::ensure!(
            self.metrics_tls_cert.is_some() == self.metrics_tls_key.is_some(),
            "metrics_tls_cert and metrics_tls_key go together"
        );
        anyhow::ensure!(self.otlp_interval > 0, "otlp_interval must be at least 1");
        if let Some(e) = &self.otlp_endpoint {
            anyhow::ensure!(
                e.starts_with("http://"),
                "otlp_endpoint {e}: only http:// is supported (send to a local collector for TLS)"
            );
        }
        for h in &self.otlp_headers {
            anyhow::ensure!(h.contains('='), "otlp_headers: {h:?} is not KEY=VALUE");
        }
        self.cluster_ranges()?;
        Ok(())
    }

    /// `cluster_cidrs`, parsed.
    fn cluster_ranges(&self) -> Result<Vec<(std::net::IpAddr, u8)>> {
        self.cluster_cidrs
            .iter()
            .map(|c| {
                kindling_k8s::watch::parse_cidr(c)
                    .with_context(|| format!("cluster_cidrs: {c:?} is not an address/prefix"))
            })
            .collect()
    }

    /// Where to watch the Kubernetes API from, when the agent names
    /// Kubernetes objects.
    pub fn kubernetes(&self) -> Option<kindling_k8s::watch::WatchConfig> {
        let on = self.kubernetes.enabled(self.kubeconfig.is_some());
        on.then(|| kindling_k8s::watch::WatchConfig {
            kubeconfig: self.kubeconfig.clone(),
            // checked when the settings were made
            cluster_ranges: self.cluster_ranges().unwrap_or_default(),
            node_local: self.k8s_node_local.then(|| self.node.clone()),
        })
    }

    /// The OTLP output's configuration, when an endpoint is set.
    pub fn otlp(&self) -> Option<otlp::Config> {
        let endpoint = self.otlp_endpoint.clone()?;
        Some(otlp::Config {
            endpoint,
            protocol: self.otlp_protocol,
            headers: self
                .otlp_headers
                .iter()
                .filter_map(|h| h.split_once('='))
                .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
                .collect(),
            queue: self.otlp_queue,
            batch: 512,
            metrics_interval: Duration::from_secs(self.otlp_interval),
            max_retry: Duration::from_secs(self.otlp_max_retry),
            cluster: self.cluster.clone(),
            node: self.node.clone(),
        })
    }

    /// The certificate and key `/metrics` is served with, read from their
    /// files (none: plain HTTP).
    pub fn metrics_tls(&self) -> Result<Option<tiny_http::SslConfig>> {
        let (Some(cert), Some(key)) = (&self.metrics_tls_cert, &self.metrics_tls_key) else {
            return Ok(None);
        };
        let read = |f: &Path| {
            std::fs::read(f)
                .with_context(|| format!("reading the /metrics TLS file {}", f.display()))
        };
        Ok(Some(tiny_http::SslConfig {
            certificate: read(cert)?,
            private_key: read(key)?,
        }))
    }

    /// The token `/metrics` requires, read from its file (trimmed).
    pub fn metrics_token(&self) -> Result<Option<String>> {
        let Some(file) = &self.metrics_token_file else {
            return Ok(None);
        };
        let token = std::fs::read_to_string(file)
            .with_context(|| format!("reading the metrics token file {}", file.display()))?;
        let token = token.trim();
        anyhow::ensure!(
            !token.is_empty(),
            "the metrics token file {} is empty",
            file.display()
        );
        Ok(Some(token.to_owned()))
    }

    /// As TOML, for `--print-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("the settings serialise")
    }

    /// The probe configuration these settings ask for.
    pub fn probe(&self) -> ProbeConfig {
        ProbeConfig {
            snaplen: self.snaplen,
            pids: self.pids.clone(),
            cgroups: self.cgroups.clone(),
            ports: self.ports.clone(),
            ring_bytes: self.ring_mb.saturating_mul(1 << 20),
            btf_path: self.btf.clone(),
            ..ProbeConfig::default()
        }
    }
}

/// This host's name (`/proc/sys/kernel/hostname`), or "localhost".
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
