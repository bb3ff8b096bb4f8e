//! What the pipeline returns: exchanges and TCP health records, owned and
//! serialisable (the `-o json` schema documented in the README).

use std::collections::BTreeMap;
use std::net::SocketAddr;

use serde::Serialize;

/// Which end of a connection the traced process is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// It connected, or it sends the requests.
    Client,
    /// It accepted, or it answers the requests.
    Server,
}

/// Why an exchange failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// HTTP 4xx.
    ClientError,
    /// HTTP 5xx.
    ServerError,
    /// A MySQL ERR packet or a Redis error reply.
    DbError,
    /// A DNS response code other than NOERROR.
    DnsError,
    /// No answer before the response timeout or before the connection
    /// closed.
    NoResponse,
    /// The connection was reset while the request waited.
    Reset,
    /// The connection closed in the middle of the response.
    Incomplete,
}

/// Time spent in each phase, like a browser's network panel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Phases {
    /// Connection set-up, for the first exchange of a connection the
    /// traced process opened.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<u64>,
    /// First to last request byte.
    pub send: u64,
    /// Last request byte to first response byte.
    pub wait: u64,
    /// First to last response byte.
    pub download: u64,
}

/// One request and its response (or the lack of one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// Always `"exchange"`.
    pub kind: &'static str,
    /// `http`, `mysql`, `redis` or `dns`.
    pub protocol: &'static str,
    /// Which end the traced process is.
    pub role: Role,
    /// `tcp` or `udp`.
    pub transport: &'static str,
    /// Process id.
    pub pid: u32,
    /// Thread that sent or received the request.
    pub tid: u32,
    /// Process name.
    pub comm: String,
    /// Client side address.
    pub src: SocketAddr,
    /// Server side address.
    pub dst: SocketAddr,
    /// First request byte (or the connect), Unix nanoseconds.
    pub ts: i64,
    /// Connect (when counted) + send + wait + download.
    pub duration_ns: u64,
    /// The phases.
    pub phases: Phases,
    /// Request size on the wire (uncaptured body bytes included).
    pub request_bytes: u64,
    /// Response size on the wire.
    pub response_bytes: u64,
    /// Why it failed, if it did.
    pub error: Option<ErrorKind>,
    /// Slower than the protocol's threshold.
    pub slow: bool,
    /// The response was seen but could not be read (events lost, or cut
    /// by the capture length): its timing and size come from the bytes
    /// seen, its attributes are missing.
    pub partial: bool,
    /// OpenTelemetry semantic-convention attributes of request and response.
    pub attributes: BTreeMap<&'static str, String>,
    /// Resource attributes of the traced process, from enrichers
    /// (`process.pid`, `container.id`, `k8s.pod.name`, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resource: BTreeMap<&'static str, String>,
}

/// What happened to a TCP connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TcpEventKind {
    /// A connect completed; `duration_ns` is how long it took.
    Connect,
    /// A connect failed; `errno` says why (111 refused, 110 timed out).
    ConnectFailed,
    /// A segment was retransmitted.
    Retransmit,
    /// This host sent a reset.
    ResetSent,
    /// This host received a reset.
    ResetReceived,
    /// A smoothed round-trip time sample.
    Rtt,
    /// The kernel dropped a packet; `reason` is its `skb_drop_reason`.
    Drop,
}

/// One TCP health event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TcpRecord {
    /// Always `"tcp"`.
    pub kind: &'static str,
    /// What happened.
    pub event: TcpEventKind,
    /// Process id (for kernel-context events, whoever was on the CPU).
    pub pid: u32,
    /// Process name.
    pub comm: String,
    /// This host's address.
    pub src: SocketAddr,
    /// The peer's address.
    pub dst: SocketAddr,
    /// When, Unix nanoseconds.
    pub ts: i64,
    /// Connect duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ns: Option<u64>,
    /// Error number of a failed connect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub errno: Option<i32>,
    /// Smoothed RTT, microseconds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub srtt_us: Option<u32>,
    /// Retransmits over the connection's life so far.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retransmits: Option<u32>,
    /// Kernel drop reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<u32>,
    /// Resource attributes, from enrichers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resource: BTreeMap<&'static str, String>,
}

/// An output of the pipeline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Output {
    /// A request/response exchange.
    Exchange(Exchange),
    /// A TCP health event.
    Tcp(TcpRecord),
}
