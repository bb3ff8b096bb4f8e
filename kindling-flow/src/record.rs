//! What the pipeline returns: exchanges and TCP health records, owned and
//! serialisable (the `-o json` schema documented in the README).

use kindling_proto::ProtocolId;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// OpenTelemetry attributes in the order they were set (request first,
/// then response), serialised as a JSON object. The values share one string:
/// one allocation per exchange instead of one per value.
///
/// # Examples
///
/// ```
/// use kindling_flow::Attributes;
/// use kindling_proto::AttributeSink;
///
/// let mut a = Attributes::default();
/// a.put("http.request.method", "GET");
/// a.put("http.request.method", "PUT");
/// assert_eq!(a.get("http.request.method"), Some("PUT"));
/// assert_eq!(a.len(), 1);
/// assert_eq!(serde_json::to_string(&a).unwrap(), r#"{"http.request.method":"PUT"}"#);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    text: String,
    /// Key and the value's range in `text`.
    entries: Vec<(&'static str, u32, u32)>,
}

impl Attributes {
    /// Room for `entries` attributes of `text` bytes in all.
    pub fn with_capacity(entries: usize, text: usize) -> Self {
        Self {
            text: String::with_capacity(text),
            entries: Vec::with_capacity(entries),
        }
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _, _)| same_key(k, key))
            .map(|&(_, a, b)| &self.text[a as usize..b as usize])
    }

    /// Whether `key` is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.entries.iter().any(|(k, _, _)| same_key(k, key))
    }

    /// Every attribute, in the order set.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.entries
            .iter()
            .map(|&(k, a, b)| (k, &self.text[a as usize..b as usize]))
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// None set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Removes every attribute, keeping the room they took.
    ///
    /// ```
    /// use kindling_flow::Attributes;
    /// use kindling_proto::AttributeSink;
    ///
    /// let mut a = Attributes::default();
    /// a.put("db.operation.name", "GET");
    /// a.clear();
    /// assert!(a.is_empty());
    /// ```
    pub fn clear(&mut self) {
        self.text.clear();
        self.entries.clear();
    }

    /// Bytes of room it holds (for bounding the pools of spare sets).
    pub(crate) fn capacity_bytes(&self) -> usize {
        self.text.capacity() + self.entries.capacity() * size_of::<(&str, u32, u32)>()
    }

    /// Appends every attribute of `other`, replacing equal keys.
    pub fn extend_from(&mut self, other: &Attributes) {
        for (k, v) in other.iter() {
            kindling_proto::AttributeSink::put(self, k, v);
        }
    }
}

impl Attributes {
    /// Points `key` at `text[start..]`, the value just appended. A replaced
    /// value stays in `text`, unreferenced: rare and bounded.
    fn set_last(&mut self, key: &'static str, start: usize) {
        let range = (start as u32, self.text.len() as u32);
        match self.entries.iter_mut().find(|(k, _, _)| same_key(k, key)) {
            Some(e) => (e.1, e.2) = range,
            None => self.entries.push((key, range.0, range.1)),
        }
    }
}

impl kindling_proto::AttributeSink for Attributes {
    fn put(&mut self, key: &'static str, value: &str) {
        let start = self.text.len();
        self.text.push_str(value);
        self.set_last(key, start);
    }

    fn put_fmt(&mut self, key: &'static str, value: fmt::Arguments<'_>) {
        use fmt::Write as _;
        let start = self.text.len();
        let _ = self.text.write_fmt(value);
        self.set_last(key, start);
    }
}

impl std::ops::Index<&str> for Attributes {
    type Output = str;

    fn index(&self, key: &str) -> &str {
        self.get(key)
            .unwrap_or_else(|| panic!("no attribute {key:?}"))
    }
}

impl Serialize for Attributes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in self.iter() {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

/// Whether two attribute keys are equal. Keys are constants, mostly of a
/// few shared lengths and prefixes (`http.request.method`,
/// `user_agent.original`): the same constant, or a different last byte,
/// answers before the bytes are compared.
#[inline]
fn same_key(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && (a.as_ptr() == b.as_ptr() || (a.as_bytes().last() == b.as_bytes().last() && a == b))
}

/// A process name (`comm`, at most 15 bytes), kept inline.
///
/// # Examples
///
/// ```
/// use kindling_flow::Comm;
///
/// let c = Comm::from_raw(*b"nginx\0\0\0\0\0\0\0\0\0\0\0");
/// assert_eq!(c, "nginx");
/// assert_eq!(c.to_string(), "nginx");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Comm([u8; 16]);

impl Comm {
    /// From the kernel's NUL-padded bytes.
    pub fn from_raw(raw: [u8; 16]) -> Self {
        Self(raw)
    }

    /// The kernel's NUL-padded bytes.
    pub fn to_raw(self) -> [u8; 16] {
        self.0
    }

    /// The name (invalid UTF-8 shown lossily).
    pub fn as_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.0.iter().position(|&b| b == 0).unwrap_or(self.0.len());
        String::from_utf8_lossy(&self.0[..end])
    }
}

impl fmt::Display for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

impl fmt::Debug for Comm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq<&str> for Comm {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<str> for Comm {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl Serialize for Comm {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

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
    /// The connection could not be made (refused, timed out): an exchange
    /// of protocol `tcp` that never got to send its request.
    ConnectFailed,
}

impl ErrorKind {
    /// Its name in outputs (`error` of exchanges, `error.type` of spans).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(kindling_flow::ErrorKind::NoResponse.as_str(), "no_response");
    /// ```
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::ClientError => "client_error",
            ErrorKind::ServerError => "server_error",
            ErrorKind::DbError => "db_error",
            ErrorKind::DnsError => "dns_error",
            ErrorKind::NoResponse => "no_response",
            ErrorKind::Reset => "reset",
            ErrorKind::Incomplete => "incomplete",
            ErrorKind::ConnectFailed => "connect_failed",
        }
    }
}

impl From<kindling_proto::Failure> for ErrorKind {
    fn from(f: kindling_proto::Failure) -> Self {
        use kindling_proto::Failure;
        match f {
            Failure::Client => ErrorKind::ClientError,
            Failure::Server => ErrorKind::ServerError,
            Failure::Dns => ErrorKind::DnsError,
            // a database's error reply, and any failure added later
            _ => ErrorKind::DbError,
        }
    }
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

/// What the network did under an exchange: the evidence for blaming it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Network {
    /// The connection's smoothed round-trip time, as the kernel last
    /// reported it, microseconds.
    pub srtt_us: u32,
    /// Segments retransmitted on the connection while the exchange ran.
    pub retransmits: u32,
}

/// One request and its response (or the lack of one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Exchange {
    /// Always `"exchange"`.
    pub kind: &'static str,
    /// `http`, `mysql`, `redis` or `dns` (`tcp` for a failed connect).
    pub protocol: ProtocolId,
    /// Which end the traced process is.
    pub role: Role,
    /// `tcp` or `udp`.
    pub transport: &'static str,
    /// Process id.
    pub pid: u32,
    /// Thread that sent or received the request.
    pub tid: u32,
    /// Process name.
    pub comm: Comm,
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
    /// The connection's RTT and retransmits, when the kernel reported any
    /// for it (TCP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<Network>,
    /// Slower than the protocol's threshold.
    pub slow: bool,
    /// The response was seen but could not be read (events lost, or cut
    /// by the capture length): its timing and size come from the bytes
    /// seen, its attributes are missing.
    pub partial: bool,
    /// Not answered yet when reported (it waited longer than the response
    /// timeout, or the input ended): not an error, and not counted in
    /// metrics; a late answer is still paired and reported (as `slow`).
    /// Serialised only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub pending: bool,
    /// The client gave up on the request: it closed the connection before
    /// the answer came (a timeout, a cancelled call, a load generator
    /// stopping with requests in flight) while the server had not closed
    /// its side. No error when it let go before the protocol's slow
    /// threshold (the server did not fail); after it, `no_response` (the
    /// server did not answer in time). Its duration is how long the client
    /// waited. Serialised only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
    /// OpenTelemetry semantic-convention attributes of request and response.
    pub attributes: Attributes,
    /// Resource attributes of the traced process, from enrichers
    /// (`process.pid`, `container.id`, `k8s.pod.name`, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resource: BTreeMap<&'static str, String>,
    /// What enrichers know of the other end, with the same keys
    /// (`k8s.pod.name` of the server a client called, `k8s.service.name`
    /// of the ClusterIP it dialled, …).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub peer: BTreeMap<&'static str, String>,
    /// The traced packet drop of this connection that the retransmits
    /// answered, when the packet tracer saw one
    /// ([`crate::packets::DropLinks`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_cause: Option<Box<DropCause>>,
}

/// A packet of a connection that the packet tracer saw dropped: the
/// likely cause of its retransmits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DropCause {
    /// The kernel's drop reason (`NETFILTER_DROP`, …).
    pub reason: String,
    /// Device the packet was last on, when the kernel named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// That device's network namespace inode (0: unknown).
    pub netns: u32,
    /// The nftables rule that dropped it, when nftables tracing named one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// When it was dropped, Unix nanoseconds.
    pub ts: i64,
    /// The packet tracer's id of the dropped packet.
    pub trace_id: u64,
    /// Traced drops of the connection in the same time window, this one
    /// included.
    pub drops: u32,
}

impl Exchange {
    /// An exchange of `protocol` between `src` (the client) and `dst`
    /// (the server), seen from `role`'s end, with nothing else known yet:
    /// no process, time, phases, bytes, error or attributes. For producers
    /// of exchanges other than the pipeline (tests, benchmarks, imports),
    /// which fill what they know with struct update syntax.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_flow::{Exchange, ProtocolId, Role};
    ///
    /// let x = Exchange {
    ///     duration_ns: 1_500_000,
    ///     ..Exchange::new(ProtocolId::Http, Role::Client, "10.0.0.1:40000".parse()?, "10.0.0.2:80".parse()?)
    /// };
    /// assert_eq!(x.transport, "tcp");
    /// assert!(x.error.is_none());
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    pub fn new(protocol: ProtocolId, role: Role, src: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            kind: "exchange",
            protocol,
            role,
            transport: if protocol == ProtocolId::Dns {
                "udp"
            } else {
                "tcp"
            },
            pid: 0,
            tid: 0,
            comm: Comm::from_raw([0; 16]),
            src,
            dst,
            ts: 0,
            duration_ns: 0,
            phases: Phases::default(),
            request_bytes: 0,
            response_bytes: 0,
            error: None,
            network: None,
            slow: false,
            partial: false,
            pending: false,
            cancelled: false,
            attributes: Attributes::default(),
            resource: BTreeMap::new(),
            peer: BTreeMap::new(),
            drop_cause: None,
        }
    }
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

/// Drop reasons that are not packet loss: a socket closed or reset with
/// data queued, a packet to a closed port (a refused connect), duplicates
/// of data already received. They are reported, not counted as loss.
///
/// # Examples
///
/// ```
/// assert!(!kindling_flow::is_packet_loss("QUEUE_PURGE"));
/// assert!(kindling_flow::is_packet_loss("TCP_OFO_DROP"));
/// ```
pub fn is_packet_loss(reason: &str) -> bool {
    !matches!(
        reason,
        "NOT_SPECIFIED"
            | "NO_SOCKET"
            | "SOCKET_CLOSE"
            | "QUEUE_PURGE"
            | "TCP_CLOSE"
            | "TCP_RESET"
            | "TCP_OLD_DATA"
            | "TCP_OLD_ACK"
            | "TCP_TOO_OLD_ACK"
            | "TCP_OLD_SEQUENCE"
    )
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
    pub comm: Comm,
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
    /// Kernel drop reason (`enum skb_drop_reason`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<u32>,
    /// Its name (`QUEUE_PURGE`, `TCP_OFO_DROP`, …) when the capture knows
    /// the kernel's table.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_name: Option<String>,
    /// Resource attributes, from enrichers.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub resource: BTreeMap<&'static str, String>,
    /// What enrichers know of the peer (see [`Exchange::peer`]).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub peer: BTreeMap<&'static str, String>,
    /// The traced drop a retransmit answered (see [`Exchange::drop_cause`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_cause: Option<Box<DropCause>>,
}

impl TcpRecord {
    /// A record of `event` between this host's `src` and the peer `dst`,
    /// nothing else known yet (see [`Exchange::new`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_flow::{TcpEventKind, TcpRecord};
    ///
    /// let r = TcpRecord {
    ///     errno: Some(111),
    ///     ..TcpRecord::new(TcpEventKind::ConnectFailed, "10.0.0.1:40000".parse()?, "10.0.0.2:80".parse()?)
    /// };
    /// assert_eq!(r.kind, "tcp");
    /// # Ok::<(), std::net::AddrParseError>(())
    /// ```
    pub fn new(event: TcpEventKind, src: SocketAddr, dst: SocketAddr) -> Self {
        Self {
            kind: "tcp",
            event,
            pid: 0,
            comm: Comm::from_raw([0; 16]),
            src,
            dst,
            ts: 0,
            duration_ns: None,
            errno: None,
            srtt_us: None,
            retransmits: None,
            reason: None,
            reason_name: None,
            resource: BTreeMap::new(),
            peer: BTreeMap::new(),
            drop_cause: None,
        }
    }
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
