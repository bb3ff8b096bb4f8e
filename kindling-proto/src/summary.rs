//! What a monitor keeps of a message, whatever its protocol: how it pairs
//! with its counterpart, whether it reports a failure, and its attributes.
//!
//! A pipeline that pairs requests with responses (such as `kindling-flow`)
//! reads every protocol through [`Summarize`] and [`Follower`], and knows
//! nothing else about any of them.

use crate::http1::Redaction;
use crate::{AttributeSink, Direction, Protocol, ProtocolId};

/// Settings a summary reads.
///
/// # Examples
///
/// ```
/// let options = kindling_proto::SummaryOptions::default();
/// assert!(options.redaction.credentials, "credentials are redacted by default");
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SummaryOptions {
    /// What to hide of HTTP heads (credentials, query values).
    pub redaction: Redaction,
    /// How many attributes to write.
    pub detail: Detail,
}

/// How many attributes a summary writes.
///
/// # Examples
///
/// ```
/// use kindling_proto::http1::Http1;
/// use kindling_proto::{Detail, Direction, Protocol, Status, Summarize, SummaryOptions};
///
/// let raw = b"GET /a?b=1 HTTP/1.1\r\nHost: shop\r\nUser-Agent: curl\r\n\r\n";
/// let Ok(Status::Complete((m, _))) = Http1::parse(&mut Default::default(), Direction::Request, raw) else {
///     unreachable!()
/// };
/// let essential = SummaryOptions { detail: Detail::Essential, ..Default::default() };
/// let mut a: Vec<(&str, String)> = Vec::new();
/// Http1::summarize(&mut Default::default(), &m, &essential, &mut a);
/// let keys: Vec<&str> = a.iter().map(|(k, _)| *k).collect();
/// assert_eq!(keys, ["http.request.method", "url.path", "server.address"]);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Detail {
    /// Every attribute of OpenTelemetry's conventions the message has
    /// (what JSON lines and spans carry).
    #[default]
    Full,
    /// Only what metrics are labelled by: [`ProtocolId::request_keys`],
    /// [`ProtocolId::status_key`], the server's name and a DNS question's
    /// name (an agent serving metrics alone: less work per exchange).
    ///
    /// [`ProtocolId::request_keys`]: crate::ProtocolId::request_keys
    /// [`ProtocolId::status_key`]: crate::ProtocolId::status_key
    Essential,
}

/// How a response says that its request failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Failure {
    /// The client's fault (HTTP 4xx).
    Client,
    /// The server's fault (HTTP 5xx).
    Server,
    /// A database's error reply (MySQL ERR, Redis error).
    Database,
    /// A DNS response code other than `NOERROR`.
    Dns,
}

/// How one message takes part in an exchange.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Summary {
    /// A request.
    Request {
        /// What pairs it with its response (DNS: id and question); `None`:
        /// responses come in request order.
        key: Option<u64>,
        /// False for a request that gets no answer (MySQL `COM_QUIT`).
        answered: bool,
    },
    /// A response.
    Response {
        /// The key of its request (see [`Summary::Request`]).
        key: Option<u64>,
        /// The failure it reports, if any.
        failure: Option<Failure>,
    },
    /// Not part of an exchange: handshakes, authentication, interim
    /// responses, a subscription's further confirmations.
    Ignore,
    /// Delivered to the client without being asked for: a message
    /// published to a channel it subscribed to, a command it monitors, a
    /// RESP3 push. Counted, not an exchange and not an error.
    Delivered,
}

/// A protocol whose messages can be summarised.
///
/// Adding a protocol to Kindling: write its module with [`Protocol`] (and
/// [`crate::Follower`] for messages too large to buffer) and this trait,
/// give it a [`ProtocolId`] variant, then add one variant to the closed
/// enum of sessions in `kindling-flow` (`protocol.rs`) and its detector to
/// the list there.
///
/// # Examples
///
/// ```
/// use kindling_proto::redis::Redis;
/// use kindling_proto::{Direction, Protocol, Status, Summarize, Summary, SummaryOptions};
///
/// let mut session = Default::default();
/// let bytes = b"-ERR unknown command\r\n";
/// let Ok(Status::Complete((reply, _))) = Redis::parse(&mut session, Direction::Response, bytes)
/// else {
///     panic!("a whole reply")
/// };
/// let mut attributes: Vec<(&'static str, String)> = Vec::new();
/// let summary = Redis::summarize(&mut session, &reply, &SummaryOptions::default(), &mut attributes);
/// assert!(matches!(summary, Summary::Response { failure: Some(_), .. }));
/// assert_eq!(
///     attributes,
///     [
///         ("db.response.status_code", "ERR".to_owned()),
///         ("db.response.error_message", "unknown command".to_owned()),
///     ]
/// );
/// ```
pub trait Summarize: Protocol {
    /// Which protocol this is.
    const ID: ProtocolId;

    /// How `message` (just parsed with `session`) takes part in an
    /// exchange; its OpenTelemetry attributes go to `attributes`
    /// (nothing is written for [`Summary::Ignore`]).
    fn summarize(
        session: &mut Self::Session,
        message: &Self::Message<'_>,
        options: &SummaryOptions,
        attributes: &mut impl AttributeSink,
    ) -> Summary;
}

/// Reads one message chunk by chunk without buffering it (a large HTTP
/// body, a large Redis reply, a MySQL result set), skipping bytes that were
/// moved but not captured where its framing allows.
///
/// # Examples
///
/// ```
/// use kindling_proto::redis::Skipper;
/// use kindling_proto::Follower;
///
/// let mut reply = Skipper::new();
/// assert_eq!(reply.feed(b"$10\r\nhello"), Ok(None));
/// assert_eq!(reply.feed(b"world\r\n+OK\r\n"), Ok(Some(7)));
/// assert!(reply.is_done());
/// ```
pub trait Follower {
    /// Why the bytes do not continue the message.
    type Error: std::error::Error + Copy;

    /// Reads the message's next bytes: `Some(n)` when it ended after `n`
    /// bytes of `input`, `None` when it goes on past them.
    fn feed(&mut self, input: &[u8]) -> Result<Option<usize>, Self::Error>;

    /// Accounts for `n` bytes that were moved but not captured: how many
    /// of them belonged to the message (all `n`, or fewer when it ended
    /// inside them at an offset its framing told: the rest begin what
    /// follows, whose framing was not seen). An error when they held
    /// framing that cannot be skipped blind.
    fn skip_unseen(&mut self, n: u64) -> Result<u64, Self::Error>;

    /// Whether the message ended.
    fn is_done(&self) -> bool;

    /// Whether the connection closing ends the message properly (an HTTP
    /// body delimited by the close) rather than cutting it short.
    fn ends_with_close(&self) -> bool {
        false
    }

    /// Attributes the reader learnt that the message's head could not tell
    /// (an HTTP chunked body's decoded size), added to the head's once the
    /// message ended, when [`Follower::summary`] is `None`. `dir` is the
    /// message's direction.
    fn write_attributes(&self, dir: Direction, attributes: &mut impl AttributeSink) {
        let _ = (dir, attributes);
    }

    /// What the whole message says once it ended, when its reader learnt
    /// more than its head told (MySQL's row count or error, a Redis push);
    /// `None` when the head said it all.
    fn summary(&self, attributes: &mut impl AttributeSink) -> Option<Summary> {
        let _ = attributes;
        None
    }
}
