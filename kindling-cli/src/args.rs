//! The command line: subcommands and their flags (clap).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kindling_probe::ProbeConfig;

#[derive(Parser, Debug)]
#[command(
    name = "kindling",
    version,
    about = "See every request that crosses a socket, from the kernel (eBPF)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Capture socket events on this host into a .kcap file (needs root).
    Record(RecordArgs),
    /// Read a .kcap file and print what it holds.
    Replay(ReplayArgs),
    /// Print socket events on this host live (needs root).
    Watch(WatchArgs),
    /// Run as this node's agent: the Prometheus model of its traffic on
    /// /metrics, until SIGTERM (needs root).
    Agent(Box<AgentArgs>),
    /// Turn a .kcap file into a pcapng file that Wireshark and tshark open
    /// as the real TCP and UDP conversations.
    Dump(DumpArgs),
    /// Follow packets through this host's network stack and virtual network
    /// (veth pairs, bridges, namespaces, NAT): the devices each packet
    /// crossed, the time at each, and where and why it was dropped (needs
    /// root). Nothing is traced unless this runs.
    TracePackets(TracePacketsArgs),
}

#[derive(Args, Debug)]
pub struct TracePacketsArgs {
    /// Follow packets to or from this port (repeatable, at most 8).
    #[arg(long = "port", value_name = "PORT")]
    pub ports: Vec<u16>,
    /// Follow packets to or from this address.
    #[arg(long, value_name = "ADDR")]
    pub host: Option<std::net::IpAddr>,
    /// Follow only this transport.
    #[arg(long, value_enum)]
    pub protocol: Option<Transport>,
    /// Start following packets in this process' network namespace (they
    /// are then followed everywhere).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Start following packets in this network namespace: a name of `ip
    /// netns`, a path (`/proc/PID/ns/net`) or an inode number.
    #[arg(long, value_name = "NETNS")]
    pub netns: Option<String>,
    /// Start following packets in this container's network namespace: its
    /// id, or the start of it (Docker's 12 digits), as its cgroup names it
    /// (Docker, containerd, CRI-O, Podman).
    #[arg(long, value_name = "ID")]
    pub container: Option<String>,
    /// Follow one flow in N (chosen by a hash of its ends, the same at
    /// every hop).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub sample: u32,
    /// Hops reported per CPU per second at most (beyond, counted as lost).
    #[arg(long, value_name = "N", default_value_t = 50_000)]
    pub budget: u64,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Stop after this many packets.
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Output: table (a packet's hops, then a summary per flow) or json
    /// (one object per packet, then one per flow).
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Print only the per-flow summary at the end.
    #[arg(long)]
    pub summary_only: bool,
    /// Name the nftables rule that dropped or translated a packet, with
    /// nftables tracing in this network namespace (an `ip netns` name, or
    /// `host`; repeatable). This adds a table `inet kindling_trace` to
    /// that namespace's ruleset while the trace runs.
    #[arg(long = "nft-trace", value_name = "NETNS")]
    pub nft_trace: Vec<String>,
    /// Read the kernel's types from this BTF file instead of
    /// /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Transport {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

#[derive(Args, Debug)]
pub struct DumpArgs {
    /// Capture file to read.
    pub file: PathBuf,
    /// pcapng file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Only these processes' traffic (repeatable, or comma-separated).
    #[arg(long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Only sockets with this local or remote port (repeatable, or
    /// comma-separated).
    #[arg(long = "port", value_name = "PORT", value_delimiter = ',')]
    pub ports: Vec<u16>,
    /// Only from this many seconds after the capture's first record.
    #[arg(long, value_name = "SECS")]
    pub from: Option<f64>,
    /// Only until this many seconds after the capture's first record.
    #[arg(long, value_name = "SECS")]
    pub to: Option<f64>,
    /// Only connections carrying these protocols (`http`, `redis`,
    /// `mysql`, `dns`; repeatable, or comma-separated), as Kindling's
    /// parsers recognise them.
    #[arg(long = "protocol", value_name = "NAME", value_delimiter = ',')]
    pub protocols: Vec<String>,
}

#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// Only these processes (repeatable, or comma-separated).
    #[arg(long = "pid", value_name = "PID", value_delimiter = ',')]
    pub pids: Vec<u32>,
    /// Only sockets with this local or remote port (repeatable, or comma-separated).
    #[arg(long = "port", value_name = "PORT", value_delimiter = ',')]
    pub ports: Vec<u16>,
    /// Only tasks in this cgroup v2 id (repeatable, or comma-separated;
    /// `stat -c %i` of the cgroup dir).
    #[arg(long = "cgroup", value_name = "ID", value_delimiter = ',')]
    pub cgroups: Vec<u64>,
    /// Payload bytes captured per syscall (1..=16384).
    #[arg(long, default_value_t = 4096)]
    pub snaplen: u32,
    /// KiB of each turn of a TCP connection captured in full past the
    /// snaplen, so that large messages keep their framing (chunk sizes,
    /// MySQL rows); 0 = off.
    #[arg(long, value_name = "KIB", default_value_t = 2048)]
    pub framing_budget_kb: u32,
    /// Ring buffer size in MiB.
    #[arg(long, default_value_t = 16)]
    pub ring_mb: u32,
    /// Attach the hooks but capture nothing (overhead floor measurements).
    #[arg(long, hide = true)]
    pub hooks_only: bool,
    /// Read kernel memory as kernels before 6.2 need, on any kernel (tests).
    #[arg(long, hide = true)]
    pub force_compat: bool,
    /// This kernel's BTF as a file (BTFHub-style), for a kernel built
    /// without /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "PATH")]
    pub btf: Option<PathBuf>,
}

impl ProbeArgs {
    /// The probe settings these flags ask for.
    pub fn config(&self) -> ProbeConfig {
        ProbeConfig {
            snaplen: self.snaplen,
            framing_budget: self.framing_budget_kb.saturating_mul(1 << 10),
            pids: self.pids.clone(),
            cgroups: self.cgroups.clone(),
            ports: self.ports.clone(),
            ring_bytes: self.ring_mb.saturating_mul(1 << 20),
            hooks_only: self.hooks_only,
            force_compat: self.force_compat,
            btf_path: self.btf.clone(),
            ..ProbeConfig::default()
        }
    }
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// Capture file to write.
    #[arg(short, long)]
    pub output: PathBuf,
    /// Stop after this many seconds (default: until Ctrl-C / SIGTERM).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// No per-second statistics on stderr.
    #[arg(short, long)]
    pub quiet: bool,
    /// Save the Kubernetes metadata in use beside the capture
    /// (`OUTPUT.k8s.json`), so that `replay` anywhere names pods: `auto`
    /// (inside a cluster, or with --kubeconfig), `on` or `off`.
    #[arg(long, value_enum, default_value_t = crate::agent::settings::Kubernetes::Auto)]
    pub kubernetes: crate::agent::settings::Kubernetes,
    /// The kubeconfig to reach the API server with [default: in-cluster].
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// This node's name, for loopback addresses [default: the hostname].
    #[arg(long, env = "KINDLING_NODE")]
    pub node: Option<String>,
    /// Also write the traffic as pcapng for Wireshark, as it is recorded
    /// (what `kindling dump` makes of the capture).
    #[arg(long, value_name = "FILE")]
    pub pcapng: Option<PathBuf>,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// Capture file to read.
    pub file: PathBuf,
    /// Print the decoded probe events instead of exchanges and TCP events.
    #[arg(long)]
    pub events: bool,
    /// Output format; `prometheus` prints the metrics the run aggregated.
    #[arg(short, long, value_enum, default_value_t = ReplayFormat::Table)]
    pub output: ReplayFormat,
    /// Also print every RTT sample as a TCP record.
    #[arg(long)]
    pub rtt: bool,
    /// Also print drops that are not packet loss (a socket closed with
    /// data queued, a packet to a closed port, …).
    #[arg(long)]
    pub all_drops: bool,
    /// Kubernetes metadata saved by `record` [default: FILE.k8s.json,
    /// when it exists]: names pods, workloads and services.
    #[arg(long, value_name = "JSON")]
    pub k8s_metadata: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReplayFormat {
    /// Aligned columns.
    Table,
    /// One JSON object per line.
    Json,
    /// Prometheus text exposition of the aggregated series, at the end.
    Prometheus,
}

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Output format [default: the live view on a terminal, else table].
    #[arg(short, long, value_enum)]
    pub output: Option<Format>,
    /// Print the raw probe events instead of exchanges and TCP events.
    #[arg(long)]
    pub events: bool,
    /// Also print every RTT sample as a TCP record.
    #[arg(long)]
    pub rtt: bool,
    /// Also print drops that are not packet loss (a socket closed with
    /// data queued, a packet to a closed port, …).
    #[arg(long)]
    pub all_drops: bool,
    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub probe: ProbeArgs,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per line.
    Json,
}

/// `kindling agent`'s flags. Each has a `KINDLING_*` environment variable
/// (the flag wins); `--config` names a TOML file for the rest.
#[derive(Args, Debug, Default)]
pub struct AgentArgs {
    /// TOML file of settings (see `--print-config` for its keys).
    #[arg(long, env = "KINDLING_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the settings in effect, as TOML, and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Address of /metrics, /healthz and /readyz [default: 127.0.0.1:9500].
    #[arg(long, env = "KINDLING_LISTEN", value_name = "ADDR")]
    pub listen: Option<std::net::SocketAddr>,
    /// Cluster name: a label on every series.
    #[arg(long, env = "KINDLING_CLUSTER")]
    pub cluster: Option<String>,
    /// Node name: a label on every series [default: the hostname].
    #[arg(long, env = "KINDLING_NODE")]
    pub node: Option<String>,
    /// Only these processes (repeatable, or comma-separated).
    #[arg(
        long = "pid",
        env = "KINDLING_PIDS",
        value_name = "PID",
        value_delimiter = ','
    )]
    pub pids: Vec<u32>,
    /// Only sockets with this local or remote port (repeatable, or comma-separated).
    #[arg(
        long = "port",
        env = "KINDLING_PORTS",
        value_name = "PORT",
        value_delimiter = ','
    )]
    pub ports: Vec<u16>,
    /// Only tasks in this cgroup v2 id (repeatable, or comma-separated).
    #[arg(
        long = "cgroup",
        env = "KINDLING_CGROUPS",
        value_name = "ID",
        value_delimiter = ','
    )]
    pub cgroups: Vec<u64>,
    /// Payload bytes captured per syscall [default: 4096].
    #[arg(long, env = "KINDLING_SNAPLEN")]
    pub snaplen: Option<u32>,
    /// Ring buffer size in MiB [default: 16].
    #[arg(long, env = "KINDLING_RING_MB")]
    pub ring_mb: Option<u32>,
    /// Most label sets per metric family [default: 10000].
    #[arg(long, env = "KINDLING_MAX_SERIES")]
    pub max_series: Option<usize>,
    /// This kernel's BTF as a file, for a kernel built without it.
    #[arg(long, env = "KINDLING_BTF", value_name = "PATH")]
    pub btf: Option<PathBuf>,
    /// Also write exchanges and TCP records as JSON lines (the `replay -o
    /// json` schema) to this file, rotated by size, or to standard output (`-`).
    #[arg(long, env = "KINDLING_JSON_OUT", value_name = "PATH|-")]
    pub json_out: Option<String>,
    /// Size at which the --json-out file is rotated, KiB [default: 102400].
    #[arg(long, env = "KINDLING_JSON_OUT_MAX_KB", value_name = "KIB")]
    pub json_out_max_kb: Option<u64>,
    /// Rotated --json-out files kept (PATH.1 … PATH.N) [default: 5].
    #[arg(long, env = "KINDLING_JSON_OUT_KEEP", value_name = "N")]
    pub json_out_keep: Option<u32>,
    /// A file holding the bearer token /metrics requires (`Authorization:
    /// Bearer TOKEN`, as Prometheus' `authorization.credentials_file` sends).
    #[arg(long, env = "KINDLING_METRICS_TOKEN_FILE", value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// Serve /metrics over HTTPS with this PEM certificate (chain) file
    /// (with --metrics-tls-key).
    #[arg(long, env = "KINDLING_METRICS_TLS_CERT", value_name = "FILE")]
    pub metrics_tls_cert: Option<PathBuf>,
    /// The PEM private key of --metrics-tls-cert.
    #[arg(long, env = "KINDLING_METRICS_TLS_KEY", value_name = "FILE")]
    pub metrics_tls_key: Option<PathBuf>,
    /// Query parameters whose values are kept (repeatable, or
    /// comma-separated); every other value is redacted (`?page=2&key=?`).
    #[arg(
        long = "keep-query-value",
        env = "KINDLING_KEEP_QUERY_VALUES",
        value_name = "KEY",
        value_delimiter = ','
    )]
    pub keep_query_values: Vec<String>,
    /// Send every exchange as a span, and the metrics, to this
    /// OpenTelemetry collector (`http://host:port`).
    #[arg(long, env = "KINDLING_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
    /// OTLP encoding [default: grpc].
    #[arg(long, env = "KINDLING_OTLP_PROTOCOL")]
    pub otlp_protocol: Option<crate::agent::otlp::Protocol>,
    /// A header (gRPC metadata) on every OTLP request, `KEY=VALUE`
    /// (repeatable).
    #[arg(
        long = "otlp-header",
        env = "KINDLING_OTLP_HEADERS",
        value_name = "KEY=VALUE",
        value_delimiter = ','
    )]
    pub otlp_headers: Vec<String>,
    /// Most spans waiting to be sent; more are dropped and counted [default: 8192].
    #[arg(long, env = "KINDLING_OTLP_QUEUE", value_name = "SPANS")]
    pub otlp_queue: Option<usize>,
    /// Seconds between metric exports [default: 15].
    #[arg(long, env = "KINDLING_OTLP_INTERVAL", value_name = "SECONDS")]
    pub otlp_interval: Option<u64>,
    /// Seconds a batch is retried while the collector is away before it is
    /// dropped and counted [default: 30].
    #[arg(long, env = "KINDLING_OTLP_MAX_RETRY", value_name = "SECONDS")]
    pub otlp_max_retry: Option<u64>,
    /// CPU scheduling of the agent: `batch` (the default: it never preempts
    /// the applications it watches when it wakes up) or `normal`.
    #[arg(long, env = "KINDLING_SCHED")]
    pub sched: Option<crate::agent::settings::Sched>,
    /// Log lines as `text` or `json` (level from KINDLING_LOG, default
    /// info) [default: text].
    #[arg(long, env = "KINDLING_LOG_FORMAT")]
    pub log_format: Option<crate::agent::settings::LogFormat>,
    /// Kubernetes names on metrics, spans and JSON: `auto` (on inside a
    /// cluster, or with --kubeconfig), `on` or `off` [default: auto].
    #[arg(long, env = "KINDLING_KUBERNETES")]
    pub kubernetes: Option<crate::agent::settings::Kubernetes>,
    /// The kubeconfig to reach the API server with [default: the
    /// in-cluster service account].
    #[arg(long, env = "KUBECONFIG", value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Ranges that are the cluster's besides the nodes' pod ranges, e.g.
    /// the service range 10.96.0.0/12 (repeatable, or comma-separated): an
    /// address in them that no object has is NOT_FOUND_INTERNAL.
    #[arg(
        long = "cluster-cidr",
        env = "KINDLING_CLUSTER_CIDRS",
        value_name = "CIDR",
        value_delimiter = ','
    )]
    pub cluster_cidrs: Vec<String>,
    /// Watch full pods only on this node (a field selector); pods
    /// elsewhere are named from their metadata and the EndpointSlices
    /// (one no service selects stays unnamed). Less API traffic in large
    /// clusters.
    #[arg(long, env = "KINDLING_K8S_NODE_LOCAL")]
    pub k8s_node_local: bool,
    /// Also follow packets through this node's virtual network (the packet
    /// tracer of `kindling trace-packets`), one flow in N, for the
    /// `kindling_net_*` series: drops by device, namespace and reason, hop
    /// latency [default: 0, off].
    #[arg(long, env = "KINDLING_TRACE_PACKETS", value_name = "N")]
    pub trace_packets: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_take_lists_as_the_agent_does() {
        let cli = Cli::try_parse_from(["kindling", "watch", "--port", "80,443", "--port", "8080"])
            .unwrap();
        let Command::Watch(w) = cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(w.probe.ports, [80, 443, 8080]);
        let bad = Cli::try_parse_from(["kindling", "record", "-o", "x.kcap", "--pid", "1,two"]);
        assert!(bad.unwrap_err().to_string().contains("two"));
    }
}
