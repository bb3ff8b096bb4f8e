//! Which protocol a message or an exchange speaks, as a value rather than a
//! string: the pipeline, the metrics model and the renderers match on it,
//! and only the serialisation edge turns it into its name.

use std::fmt;

/// A protocol Kindling knows by name.
///
/// `Tcp` is the transport alone: an exchange that never got to speak an
/// application protocol (a failed connect).
///
/// # Examples
///
/// ```
/// use kindling_proto::ProtocolId;
///
/// assert_eq!(ProtocolId::MySql.as_str(), "mysql");
/// assert_eq!(ProtocolId::from_name("dns"), Some(ProtocolId::Dns));
/// assert_eq!(ProtocolId::Http.to_string(), "http");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ProtocolId {
    /// HTTP/1.0 and 1.1 ([`crate::http1`]).
    Http,
    /// Redis RESP2/RESP3 ([`crate::redis`]).
    Redis,
    /// MySQL and MariaDB ([`crate::mysql`]).
    MySql,
    /// DNS over UDP and TCP ([`crate::dns`]).
    Dns,
    /// No application protocol: the transport alone.
    Tcp,
}

impl ProtocolId {
    /// Every protocol, in a stable order.
    pub const ALL: [ProtocolId; 5] = [
        ProtocolId::Http,
        ProtocolId::Redis,
        ProtocolId::MySql,
        ProtocolId::Dns,
        ProtocolId::Tcp,
    ];

    /// Its name in outputs (`protocol` of exchanges, metric labels).
    pub const fn as_str(self) -> &'static str {
        match self {
            ProtocolId::Http => "http",
            ProtocolId::Redis => "redis",
            ProtocolId::MySql => "mysql",
            ProtocolId::Dns => "dns",
            ProtocolId::Tcp => "tcp",
        }
    }

    /// The attributes that say what a request asks for, most general
    /// first: HTTP method and path, SQL operation and table, Redis command,
    /// DNS question type (`""`: none). What a server's `request_content`
    /// metric label is made of.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::ProtocolId;
    ///
    /// assert_eq!(ProtocolId::Http.request_keys(), ["http.request.method", "url.path"]);
    /// assert_eq!(ProtocolId::Redis.request_keys(), ["db.operation.name", ""]);
    /// ```
    pub const fn request_keys(self) -> [&'static str; 2] {
        match self {
            ProtocolId::Http => ["http.request.method", "url.path"],
            ProtocolId::MySql => ["db.operation.name", "db.collection.name"],
            ProtocolId::Redis => ["db.operation.name", ""],
            ProtocolId::Dns => ["dns.question.type", ""],
            ProtocolId::Tcp => ["", ""],
        }
    }

    /// The attribute holding a response's status: HTTP status code, DNS
    /// response code, a database's error code.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::ProtocolId;
    ///
    /// assert_eq!(ProtocolId::Dns.status_key(), "dns.response.code");
    /// ```
    pub const fn status_key(self) -> &'static str {
        match self {
            ProtocolId::Http => "http.response.status_code",
            ProtocolId::Dns => "dns.response.code",
            _ => "db.response.status_code",
        }
    }

    /// The protocol of a name given by [`ProtocolId::as_str`].
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl fmt::Display for ProtocolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// Compares with a name, as outputs spell it.
impl PartialEq<&str> for ProtocolId {
    fn eq(&self, name: &&str) -> bool {
        self.as_str() == *name
    }
}

impl serde::Serialize for ProtocolId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in ProtocolId::ALL {
            assert_eq!(ProtocolId::from_name(p.as_str()), Some(p));
        }
        assert_eq!(ProtocolId::from_name("kafka"), None);
        assert_eq!(format!("{:<6}|", ProtocolId::Dns), "dns   |");
    }
}
