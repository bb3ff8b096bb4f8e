//! MySQL / MariaDB client-server protocol.
//!
//! ```text
//! packet   = payload_length (3, little endian) | sequence_id (1) | payload
//!            a payload of 0xFFFFFF bytes continues in the next packet
//! server   → greeting: 0x0a | version NUL | connection id (4) | salt … | capabilities …
//! client   → handshake response (user, database, plugin) or SSLRequest (32 bytes)
//! client   → command: COM_QUERY 0x03 | COM_STMT_PREPARE 0x16 | COM_STMT_EXECUTE 0x17 | …
//! server   → OK 0x00 | ERR 0xff | EOF 0xfe (< 9 bytes) | result set:
//!            column count, column definitions, [EOF], rows, EOF / OK(0xfe) terminator
//! ```
//!
//! A response is parsed as one message even when it spans packets (a whole
//! result set, a prepare answer with its definitions). The session follows
//! the handshake and the last command, remembers capabilities
//! (`CLIENT_DEPRECATE_EOF`, query attributes, compression) and prepared
//! statements' SQL, and stops at TLS or compression, which it reports.
//!
//! A connection seen from its middle (opened before the capture: pools) is
//! detected from any common command or a login ([`MySql::detect`]); its
//! session starts in command phase ([`Session::for_first`]) and infers what
//! the handshake would have said: a COM_QUERY starting `0x00 0x01` (no
//! attributes, one set) means `CLIENT_QUERY_ATTRIBUTES`, a row right after
//! the column definitions means `CLIENT_DEPRECATE_EOF`.
//!
//! Summaries: the login is a request (`db.operation.name` `LOGIN`,
//! `db.namespace` its schema) answered by the server's OK or ERR (steps in
//! between are ignored); an ERR sent instead of the greeting (1040 too
//! many connections) is a response naming its operation `CONNECT`, which
//! the flow reports as the exchange of the connection's opening. ERR
//! packets give `db.response.status_code` and `db.response.error_message`.

use std::collections::HashMap;

use crate::{
    AttributeSink, Detect, Direction, Failure, Follower, Protocol, ProtocolId, Status, Summarize,
    Summary, SummaryOptions,
};

/// Capability bits used here.
pub mod caps {
    #![allow(missing_docs, reason = "names are the protocol's")]
    pub const CONNECT_WITH_DB: u32 = 0x0000_0008;
    pub const COMPRESS: u32 = 0x0000_0020;
    pub const PROTOCOL_41: u32 = 0x0000_0200;
    pub const SSL: u32 = 0x0000_0800;
    pub const SECURE_CONNECTION: u32 = 0x0000_8000;
    pub const PLUGIN_AUTH: u32 = 0x0008_0000;
    pub const PLUGIN_AUTH_LENENC_DATA: u32 = 0x0020_0000;
    pub const DEPRECATE_EOF: u32 = 0x0100_0000;
    pub const QUERY_ATTRIBUTES: u32 = 0x0800_0000;
}

/// Command bytes.
pub mod com {
    #![allow(missing_docs, reason = "names are the protocol's")]
    pub const QUIT: u8 = 0x01;
    pub const INIT_DB: u8 = 0x02;
    pub const QUERY: u8 = 0x03;
    pub const FIELD_LIST: u8 = 0x04;
    pub const STATISTICS: u8 = 0x09;
    pub const PING: u8 = 0x0e;
    pub const CHANGE_USER: u8 = 0x11;
    pub const STMT_PREPARE: u8 = 0x16;
    pub const STMT_EXECUTE: u8 = 0x17;
    pub const STMT_CLOSE: u8 = 0x19;
    pub const STMT_RESET: u8 = 0x1a;
    pub const SET_OPTION: u8 = 0x1b;
    pub const RESET_CONNECTION: u8 = 0x1f;
}

/// Most prepared statements remembered per connection.
pub const MAX_STATEMENTS: usize = 256;
/// Largest logical payload accepted (several 16 MiB packets).
pub const MAX_PAYLOAD: usize = 64 << 20;

/// Why bytes are not valid MySQL protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A packet or field is shorter than its structure needs.
    #[error("malformed mysql packet")]
    Malformed,
    /// The connection switched to TLS; nothing more can be read.
    #[error("connection is encrypted (tls)")]
    Encrypted,
    /// The connection uses the compressed protocol (not decoded).
    #[error("connection uses the compressed protocol")]
    Compressed,
    /// A logical payload over [`MAX_PAYLOAD`].
    #[error("mysql payload too large")]
    TooLarge,
}

/// Where the connection is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for the server greeting (or joined mid-connection).
    #[default]
    Greeting,
    /// Greeting seen; the client answers with its handshake response.
    HandshakeResponse,
    /// Authentication exchange until OK or ERR.
    Auth,
    /// Commands and their responses.
    Command,
    /// TLS after SSLRequest.
    Encrypted,
    /// Compressed protocol after the handshake.
    Compressed,
}

/// Per-connection state.
#[derive(Clone, Debug, Default)]
pub struct Session {
    /// Handshake progress.
    pub phase: Phase,
    server_caps: u32,
    client_caps: u32,
    last_command: u8,
    prepare_sql: Option<Vec<u8>>,
    statements: HashMap<u32, Vec<u8>>,
    /// Statements forgotten because more than [`MAX_STATEMENTS`] were open.
    pub statements_evicted: u64,
    /// A login was seen and the server's verdict on it not yet: that OK or
    /// ERR closes the handshake, it answers no command.
    login_verdict_due: bool,
    /// Joined mid-connection: the capabilities were not seen and are
    /// inferred from the traffic (query attributes, DEPRECATE_EOF).
    joined: bool,
}

impl Session {
    /// A session for a connection joined after its handshake: capabilities
    /// are inferred from what the connection carries.
    pub fn in_command_phase() -> Self {
        Self {
            phase: Phase::Command,
            joined: true,
            ..Self::default()
        }
    }

    /// The session for a connection whose first bytes `head` (in `dir`)
    /// [`MySql::detect`] matched: from the start for a server greeting or
    /// a refusal sent instead of it, at the handshake response for a login,
    /// in command phase for any command (a connection that began before
    /// the capture).
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_proto::mysql::Session;
    /// use kindling_proto::Direction;
    ///
    /// // COM_PING seen first: a pooled connection
    /// assert!(Session::for_first(&[1, 0, 0, 0, 0x0e], Direction::Request).is_command_phase());
    /// ```
    pub fn for_first(head: &[u8], dir: Direction) -> Self {
        match (dir, head.get(3)) {
            (Direction::Request, Some(1)) => Self {
                phase: Phase::HandshakeResponse,
                ..Self::default()
            },
            (Direction::Request, _) => Self::in_command_phase(),
            (Direction::Response, _) => Self::default(),
        }
    }

    /// Whether the response to the last command may be a result set (the
    /// answers to COM_FIELD_LIST and COM_STATISTICS are not, though they
    /// do not begin like an OK or ERR packet either).
    pub fn expects_result_set(&self) -> bool {
        !matches!(self.last_command, com::FIELD_LIST | com::STATISTICS)
    }

    /// The SQL a prepared statement was prepared with, if seen.
    pub fn statement_sql(&self, id: u32) -> Option<&[u8]> {
        self.statements.get(&id).map(Vec::as_slice)
    }

    /// Whether the connection is past its handshake, reading commands and
    /// their responses.
    pub fn is_command_phase(&self) -> bool {
        self.phase == Phase::Command
    }

    /// Whether CLIENT_DEPRECATE_EOF was negotiated (result sets end with an
    /// OK packet instead of EOF).
    pub fn deprecate_eof(&self) -> bool {
        self.caps() & caps::DEPRECATE_EOF != 0
    }

    /// The phase once authentication succeeded.
    fn after_auth(&self) -> Phase {
        if self.caps() & caps::COMPRESS != 0 {
            Phase::Compressed
        } else {
            Phase::Command
        }
    }

    fn caps(&self) -> u32 {
        if self.server_caps == 0 {
            self.client_caps
        } else {
            self.server_caps & self.client_caps
        }
    }
}

/// A client command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// COM_QUERY: the SQL text (after any query attributes).
    Query(&'a [u8]),
    /// COM_STMT_PREPARE.
    Prepare(&'a [u8]),
    /// COM_STMT_EXECUTE of a statement id (its SQL: [`Session::statement_sql`]).
    Execute(u32),
    /// COM_STMT_CLOSE (no response follows).
    Close(u32),
    /// COM_INIT_DB: the schema.
    InitDb(&'a [u8]),
    /// COM_FIELD_LIST: the table whose columns are asked for.
    FieldList(&'a [u8]),
    /// COM_PING.
    Ping,
    /// COM_QUIT (no response follows).
    Quit,
    /// Any other command byte.
    Other(u8),
}

/// A server response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Response<'a> {
    /// OK packet.
    Ok {
        /// Rows changed.
        affected_rows: u64,
        /// AUTO_INCREMENT id.
        last_insert_id: u64,
        /// Server status flags.
        status: u16,
        /// Warnings.
        warnings: u16,
    },
    /// ERR packet.
    Err {
        /// Error number (1064 …).
        code: u16,
        /// SQLSTATE (`42000`), when sent.
        sql_state: Option<&'a [u8]>,
        /// Message.
        message: &'a [u8],
    },
    /// A whole result set.
    ResultSet {
        /// Columns.
        columns: u64,
        /// Rows up to the terminator.
        rows: u64,
        /// More result sets follow (multi-statement, CALL).
        more_results: bool,
    },
    /// Answer to COM_STMT_PREPARE, with its definitions.
    Prepared {
        /// Statement id.
        statement: u32,
        /// Result columns.
        columns: u16,
        /// Parameters.
        params: u16,
    },
    /// Answer to COM_FIELD_LIST: column definitions up to a terminator.
    Columns {
        /// Column definitions.
        columns: u64,
    },
    /// Answer to COM_STATISTICS: a human-readable string, no header.
    Text(&'a [u8]),
    /// An authentication step (switch request, more data).
    AuthStep,
    /// A lone EOF packet.
    Eof,
}

/// A handshake message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake<'a> {
    /// Server greeting.
    Greeting {
        /// Server version (`10.11.6-MariaDB-0+deb12u1`).
        version: &'a [u8],
        /// Connection id.
        connection_id: u32,
        /// Capability flags offered.
        capabilities: u32,
        /// Default authentication plugin.
        auth_plugin: Option<&'a [u8]>,
    },
    /// Client handshake response.
    Login {
        /// User name.
        user: &'a [u8],
        /// Initial schema.
        database: Option<&'a [u8]>,
        /// Capabilities the client asked for.
        capabilities: u32,
        /// Authentication plugin.
        auth_plugin: Option<&'a [u8]>,
    },
    /// SSLRequest: TLS follows.
    SslRequest,
}

/// A MySQL message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message<'a> {
    /// Connection set-up.
    Handshake(Handshake<'a>),
    /// From the client.
    Command(Command<'a>),
    /// From the server.
    Response(Response<'a>),
}

/// The MySQL protocol; see the module docs.
#[derive(Clone, Copy, Debug, Default)]
pub struct MySql;

/// One logical packet (continuations joined only if contiguous: a
/// continued payload is returned as its first part plus the total length).
struct Packet<'a> {
    seq: u8,
    payload: &'a [u8],
    /// Bytes from the start of the header to after the last continuation.
    wire: usize,
}

fn packet(buf: &[u8]) -> Result<Option<Packet<'_>>, Error> {
    let mut at = 0usize;
    let mut first: Option<(u8, &[u8])> = None;
    loop {
        let Some(h) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        if at + len > MAX_PAYLOAD {
            return Err(Error::TooLarge);
        }
        let Some(payload) = buf.get(at + 4..at + 4 + len) else {
            return Ok(None);
        };
        first.get_or_insert((h[3], payload));
        at += 4 + len;
        if len < 0xff_ffff {
            let (seq, payload) = first.unwrap_or((h[3], payload));
            return Ok(Some(Packet {
                seq,
                payload,
                wire: at,
            }));
        }
    }
}

/// Length-encoded integer at `at`: `(value, bytes used)`.
fn lenenc(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let le = |n: usize| -> Option<u64> {
        let s = b.get(at + 1..at + 1 + n)?;
        Some(s.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x)))
    };
    match *b.get(at)? {
        x @ 0..=0xfa => Some((u64::from(x), 1)),
        0xfc => Some((le(2)?, 3)),
        0xfd => Some((le(3)?, 4)),
        0xfe => Some((le(8)?, 9)),
        _ => None,
    }
}

/// Bytes a binary-protocol value of column type `ty` takes at `at` (the
/// encoding of COM_STMT_EXECUTE parameters and query attributes).
fn binary_value_len(b: &[u8], at: usize, ty: u8) -> Option<usize> {
    match ty {
        6 => Some(0),                                           // NULL
        1 => Some(1),                                           // TINY
        2 | 13 => Some(2),                                      // SHORT, YEAR
        3 | 4 | 9 => Some(4),                                   // LONG, FLOAT, INT24
        5 | 8 => Some(8),                                       // DOUBLE, LONGLONG
        7 | 10 | 11 | 12 => Some(1 + usize::from(*b.get(at)?)), // dates and times
        _ => {
            // strings, decimals, blobs, JSON, …: length-encoded
            let (n, used) = lenenc(b, at)?;
            usize::try_from(n).ok()?.checked_add(used)
        }
    }
}

/// Where the SQL starts in a COM_QUERY payload sent with
/// CLIENT_QUERY_ATTRIBUTES: after the counts, and for `n` attributes the
/// null bitmap, the bind flag, each type and name, and each non-null value.
fn query_attributes_end(pl: &[u8]) -> Option<usize> {
    let (n, used) = lenenc(pl, 1)?;
    let (_, used2) = lenenc(pl, 1 + used)?;
    let mut at = 1 + used + used2;
    if n == 0 {
        return Some(at);
    }
    let n = usize::try_from(n).ok().filter(|&n| n <= pl.len())?;
    let nulls = pl.get(at..at + n.div_ceil(8))?;
    at += n.div_ceil(8);
    // without the bind flag the types are not sent and values cannot be sized
    if *pl.get(at)? != 1 {
        return None;
    }
    at += 1;
    let types_at = at;
    for _ in 0..n {
        at += 2; // type and unsigned flag
        let (len, used) = lenenc(pl, at)?;
        at = at
            .checked_add(used)?
            .checked_add(usize::try_from(len).ok()?)?;
    }
    let mut t = types_at;
    for i in 0..n {
        let ty = *pl.get(t)?;
        t += 2;
        let (len, used) = lenenc(pl, t)?;
        t += used + usize::try_from(len).ok()?;
        if nulls[i / 8] & (1 << (i % 8)) == 0 {
            at = at.checked_add(binary_value_len(pl, at, ty)?)?;
        }
    }
    (at <= pl.len()).then_some(at)
}

fn nul_str(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = b.get(at..)?;
    let end = rest.iter().position(|&c| c == 0)?;
    Some((&rest[..end], at + end + 1))
}

fn u16le(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

fn u32le(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn printable(b: &[u8]) -> bool {
    b.iter()
        .take(32)
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
}

fn name(b: &[u8]) -> bool {
    !b.is_empty() && b.len() <= 256 && b.iter().all(|b| b.is_ascii_graphic() || *b >= 0x80)
}

/// An ERR packet as a server's first packet: code, optional SQLSTATE,
/// printable message, alone in the syscall.
fn refusal(head: &[u8], len: usize) -> Detect {
    if head.len() < 4 + len {
        return if len < 1024 {
            Detect::NeedMore
        } else {
            Detect::NoMatch
        };
    }
    let pl = &head[4..4 + len];
    let Some(code) = u16le(pl, 1) else {
        return Detect::NoMatch;
    };
    let message = match pl.get(3) {
        Some(b'#') => match pl.get(4..9) {
            Some(state) if state.iter().all(u8::is_ascii_alphanumeric) => &pl[9..],
            _ => return Detect::NoMatch,
        },
        _ => &pl[3..],
    };
    if head.len() == 4 + len
        && (1000..5000).contains(&code)
        && !message.is_empty()
        && printable(message)
    {
        Detect::Match
    } else {
        Detect::NoMatch
    }
}

/// A command at sequence 0 as the first bytes seen of a connection.
fn first_command(head: &[u8], len: usize) -> Detect {
    let whole = head.len() >= 4 + len;
    let exact = head.len() == 4 + len;
    let pl = &head[4..head.len().min(4 + len)];
    // another command may follow some (no response between)
    let then_command = || exact || head.get(4 + len + 3) == Some(&0);
    let ok = |b: bool| if b { Detect::Match } else { Detect::NoMatch };
    let need = |b: bool| {
        if whole {
            ok(b)
        } else if len < 1024 {
            Detect::NeedMore
        } else {
            Detect::NoMatch
        }
    };
    let Some(&cmd) = pl.first() else {
        return Detect::NoMatch;
    };
    match cmd {
        com::QUERY | com::STMT_PREPARE => {
            let mut sql = &pl[1..];
            if cmd == com::QUERY && sql.starts_with(&[0, 1]) {
                sql = &sql[2..];
            }
            if sql.is_empty() {
                return need(false);
            }
            ok(len >= 2 && sql[0].is_ascii_graphic() && printable(sql))
        }
        com::PING | com::QUIT | com::STATISTICS | com::RESET_CONNECTION => ok(len == 1 && exact),
        com::INIT_DB => need(len >= 2 && exact && name(&pl[1..])),
        com::FIELD_LIST => need(
            exact
                && nul_str(pl, 1).is_some_and(|(table, at)| {
                    name(table) && pl[at..].iter().all(u8::is_ascii_graphic)
                }),
        ),
        com::STMT_EXECUTE => {
            if len < 10 {
                return Detect::NoMatch;
            }
            if pl.len() < 10 {
                return Detect::NeedMore;
            }
            ok(u32le(pl, 1) != Some(0) && pl[5] & !0x0f == 0 && u32le(pl, 6) == Some(1))
        }
        com::STMT_CLOSE | com::STMT_RESET => {
            ok(len == 5 && whole && u32le(pl, 1) != Some(0) && then_command())
        }
        com::SET_OPTION => ok(len == 3 && exact && matches!(u16le(pl, 1), Some(0 | 1))),
        com::CHANGE_USER => need(len >= 3 && nul_str(pl, 1).is_some_and(|(user, _)| name(user))),
        _ => Detect::NoMatch,
    }
}

/// A HandshakeResponse41 (or the SSLRequest before it) as the first bytes
/// seen of a connection.
fn first_login(head: &[u8], len: usize) -> Detect {
    if len < 32 {
        return Detect::NoMatch;
    }
    let pl = &head[4..head.len().min(4 + len)];
    if pl.len() < 32 {
        return Detect::NeedMore;
    }
    let caps = u32le(pl, 0).unwrap_or(0);
    if caps & caps::PROTOCOL_41 == 0 || pl[9..32].iter().any(|&b| b != 0) {
        return Detect::NoMatch;
    }
    if len == 32 {
        return if caps & caps::SSL != 0 {
            Detect::Match
        } else {
            Detect::NoMatch
        };
    }
    match nul_str(pl, 32) {
        Some((user, _)) if name(user) => Detect::Match,
        Some(_) => Detect::NoMatch,
        None if head.len() < 4 + len => Detect::NeedMore,
        None => Detect::NoMatch,
    }
}

fn greeting(p: &[u8]) -> Option<Handshake<'_>> {
    if p.first() != Some(&10) {
        return None;
    }
    let (version, at) = nul_str(p, 1)?;
    let connection_id = u32le(p, at)?;
    let mut at = at + 4 + 8 + 1; // salt part 1, filler
    let low = u32::from(u16le(p, at)?);
    at += 2;
    let mut capabilities = low;
    let mut auth_plugin = None;
    if p.len() >= at + 16 {
        let high = u32::from(u16le(p, at + 3)?);
        capabilities |= high << 16;
        let salt_len = usize::from(p[at + 5]);
        at += 16; // charset, status, caps high, salt len, reserved(10)
        if capabilities & caps::SECURE_CONNECTION != 0 {
            at += salt_len.saturating_sub(8).max(13);
        }
        if capabilities & caps::PLUGIN_AUTH != 0 {
            auth_plugin = nul_str(p, at).map(|(s, _)| s).or_else(|| p.get(at..));
        }
    }
    Some(Handshake::Greeting {
        version,
        connection_id,
        capabilities,
        auth_plugin,
    })
}

fn login(p: &[u8]) -> Option<Handshake<'_>> {
    let capabilities = u32le(p, 0)?;
    if p.len() == 32 && capabilities & caps::SSL != 0 {
        return Some(Handshake::SslRequest);
    }
    let (user, mut at) = nul_str(p, 32)?;
    // auth response
    if capabilities & caps::PLUGIN_AUTH_LENENC_DATA != 0 {
        let (n, used) = lenenc(p, at)?;
        // n comes from the wire: a huge value must not overflow
        at = at
            .checked_add(used)?
            .checked_add(usize::try_from(n).ok()?)?;
    } else if capabilities & caps::SECURE_CONNECTION != 0 {
        at += 1 + usize::from(*p.get(at)?);
    } else {
        at = nul_str(p, at)?.1;
    }
    let mut database = None;
    if capabilities & caps::CONNECT_WITH_DB != 0 {
        let (db, next) = nul_str(p, at)?;
        database = Some(db);
        at = next;
    }
    let auth_plugin = (capabilities & caps::PLUGIN_AUTH != 0)
        .then(|| nul_str(p, at).map(|(s, _)| s))
        .flatten();
    Some(Handshake::Login {
        user,
        database,
        capabilities,
        auth_plugin,
    })
}

fn ok_packet(p: &[u8]) -> Option<Response<'_>> {
    let (affected_rows, a) = lenenc(p, 1)?;
    let (last_insert_id, b) = lenenc(p, 1 + a)?;
    let status = u16le(p, 1 + a + b).unwrap_or(0);
    let warnings = u16le(p, 3 + a + b).unwrap_or(0);
    Some(Response::Ok {
        affected_rows,
        last_insert_id,
        status,
        warnings,
    })
}

fn err_packet(p: &[u8]) -> Option<Response<'_>> {
    let code = u16le(p, 1)?;
    let (sql_state, message) = match p.get(3) {
        Some(b'#') => (p.get(4..9), p.get(9..).unwrap_or(&[])),
        _ => (None, p.get(3..).unwrap_or(&[])),
    };
    Some(Response::Err {
        code,
        sql_state,
        message,
    })
}

fn is_eof(p: &[u8]) -> bool {
    p.first() == Some(&0xfe) && p.len() < 9
}

/// Walks a result set after its column-count packet; returns the response,
/// the bytes used and whether the connection turned out to use
/// CLIENT_DEPRECATE_EOF (a row right after the column definitions, where an
/// EOF is due without it), or `None` if incomplete.
fn result_set(
    buf: &[u8],
    mut at: usize,
    columns: u64,
    mut deprecate_eof: bool,
) -> Result<Option<(Response<'static>, usize, bool)>, Error> {
    for _ in 0..columns {
        let Some(p) = packet(&buf[at..])? else {
            return Ok(None);
        };
        at += p.wire;
    }
    // the sequence id the packet after the column EOF would have
    let mut after_eof = None;
    if !deprecate_eof {
        let Some(p) = packet(&buf[at..])? else {
            return Ok(None);
        };
        if is_eof(p.payload) {
            at += p.wire;
            after_eof = Some(p.seq.wrapping_add(1));
        } else if matches!(p.payload.first(), Some(0xfe | 0xff) | None) {
            return Err(Error::Malformed);
        } else {
            // a row: without DEPRECATE_EOF an EOF would be here
            deprecate_eof = true;
        }
    }
    let mut rows = 0u64;
    loop {
        let Some(p) = packet(&buf[at..])? else {
            return Ok(None);
        };
        if rows == 0 && after_eof.is_some_and(|seq| seq != 1) && p.seq == 1 {
            // a new answer (sequence 1) where rows were due: the "EOF"
            // was the OK that ends an empty result set with
            // DEPRECATE_EOF (a handshake not seen)
            return Ok(Some((
                Response::ResultSet {
                    columns,
                    rows: 0,
                    more_results: false,
                },
                at,
                true,
            )));
        }
        at += p.wire;
        let pl = p.payload;
        // terminator: EOF, or with DEPRECATE_EOF an OK packet headed 0xfe
        if pl.first() == Some(&0xfe) && pl.len() < 0xff_ffff && (is_eof(pl) || deprecate_eof) {
            let status = if is_eof(pl) {
                u16le(pl, 3).unwrap_or(0)
            } else {
                match ok_packet(pl) {
                    Some(Response::Ok { status, .. }) => status,
                    _ => 0,
                }
            };
            return Ok(Some((
                Response::ResultSet {
                    columns,
                    rows,
                    more_results: status & 0x0008 != 0,
                },
                at,
                deprecate_eof,
            )));
        }
        if pl.first() == Some(&0xff) {
            // an error in the middle of the rows ends the result
            return Ok(Some((
                Response::ResultSet {
                    columns,
                    rows,
                    more_results: false,
                },
                at,
                deprecate_eof,
            )));
        }
        rows += 1;
    }
}

impl MySql {
    fn request<'a>(s: &mut Session, buf: &'a [u8]) -> Result<Status<(Message<'a>, usize)>, Error> {
        let Some(p) = packet(buf)? else {
            return Ok(Status::Partial);
        };
        let pl = p.payload;
        if s.phase == Phase::HandshakeResponse || (s.phase == Phase::Greeting && p.seq == 1) {
            let h = login(pl).ok_or(Error::Malformed)?;
            match h {
                Handshake::SslRequest => s.phase = Phase::Encrypted,
                Handshake::Login { capabilities, .. } => {
                    s.client_caps = capabilities;
                    s.phase = Phase::Auth;
                }
                Handshake::Greeting { .. } => {}
            }
            return Ok(Status::Complete((Message::Handshake(h), p.wire)));
        }
        if s.phase == Phase::Auth {
            if p.seq != 0 {
                // auth continuation data carries on the handshake's sequence
                return Ok(Status::Complete((
                    Message::Command(Command::Other(0)),
                    p.wire,
                )));
            }
            // A command starts a new sequence: the server's OK closing the
            // handshake was not seen (lost, or a capture that began late).
            s.phase = s.after_auth();
        }
        let &cmd = pl.first().ok_or(Error::Malformed)?;
        s.last_command = cmd;
        let id = || u32le(pl, 1).ok_or(Error::Malformed);
        let c = match cmd {
            com::QUERY => {
                let mut sql = &pl[1..];
                // joined mid-connection: SQL never starts with a NUL, the
                // attribute counts (0 attributes, 1 set) do
                if s.joined && pl.get(1..3) == Some(&[0, 1]) {
                    s.client_caps |= caps::QUERY_ATTRIBUTES;
                    s.server_caps |= caps::QUERY_ATTRIBUTES;
                }
                if s.caps() & caps::QUERY_ATTRIBUTES != 0 {
                    let at = query_attributes_end(pl).ok_or(Error::Malformed)?;
                    sql = &pl[at..];
                }
                Command::Query(sql)
            }
            com::STMT_PREPARE => {
                s.prepare_sql = Some(pl[1..].to_vec());
                Command::Prepare(&pl[1..])
            }
            com::STMT_EXECUTE => Command::Execute(id()?),
            com::STMT_CLOSE => {
                let id = id()?;
                s.statements.remove(&id);
                Command::Close(id)
            }
            com::INIT_DB => Command::InitDb(&pl[1..]),
            com::FIELD_LIST => Command::FieldList(nul_str(pl, 1).map_or(&pl[1..], |(t, _)| t)),
            com::PING => Command::Ping,
            // a new authentication exchange follows, as after the login
            com::CHANGE_USER => {
                s.phase = Phase::Auth;
                Command::Other(cmd)
            }
            com::QUIT => Command::Quit,
            other => Command::Other(other),
        };
        Ok(Status::Complete((Message::Command(c), p.wire)))
    }

    fn response<'a>(s: &mut Session, buf: &'a [u8]) -> Result<Status<(Message<'a>, usize)>, Error> {
        let Some(p) = packet(buf)? else {
            return Ok(Status::Partial);
        };
        let pl = p.payload;
        if s.phase == Phase::Greeting && p.seq == 0 {
            if let Some(g @ Handshake::Greeting { capabilities, .. }) = greeting(pl) {
                s.server_caps = capabilities;
                s.phase = Phase::HandshakeResponse;
                return Ok(Status::Complete((Message::Handshake(g), p.wire)));
            }
        }
        let &head = pl.first().ok_or(Error::Malformed)?;
        if s.phase == Phase::Auth {
            let r = match head {
                0x00 => {
                    s.phase = s.after_auth();
                    ok_packet(pl).ok_or(Error::Malformed)?
                }
                0xff => err_packet(pl).ok_or(Error::Malformed)?,
                _ => Response::AuthStep,
            };
            return Ok(Status::Complete((Message::Response(r), p.wire)));
        }
        let r = match head {
            0x00 if s.last_command == com::STMT_PREPARE => {
                let statement = u32le(pl, 1).ok_or(Error::Malformed)?;
                let columns = u16le(pl, 5).ok_or(Error::Malformed)?;
                let params = u16le(pl, 7).ok_or(Error::Malformed)?;
                // definitions follow, each block ended by EOF unless DEPRECATE_EOF
                let eof = s.caps() & caps::DEPRECATE_EOF == 0;
                let mut at = p.wire;
                for n in [params, columns] {
                    let extra = usize::from(n > 0 && eof);
                    for _ in 0..usize::from(n) + extra {
                        let Some(d) = packet(&buf[at..])? else {
                            return Ok(Status::Partial);
                        };
                        at += d.wire;
                    }
                }
                if let Some(sql) = s.prepare_sql.take() {
                    if s.statements.len() >= MAX_STATEMENTS {
                        s.statements_evicted += 1;
                    } else {
                        s.statements.insert(statement, sql);
                    }
                }
                return Ok(Status::Complete((
                    Message::Response(Response::Prepared {
                        statement,
                        columns,
                        params,
                    }),
                    at,
                )));
            }
            0xff => err_packet(pl).ok_or(Error::Malformed)?,
            _ if s.last_command == com::STATISTICS => Response::Text(pl),
            // column definitions up to an EOF (or with DEPRECATE_EOF an OK
            // headed 0xfe); a definition starts with its catalog "def"
            _ if s.last_command == com::FIELD_LIST => {
                let deprecate_eof = s.caps() & caps::DEPRECATE_EOF != 0;
                let mut at = 0;
                let mut columns = 0u64;
                loop {
                    let Some(d) = packet(&buf[at..])? else {
                        return Ok(Status::Partial);
                    };
                    at += d.wire;
                    let dl = d.payload;
                    if dl.first() == Some(&0xfe) && (is_eof(dl) || deprecate_eof) {
                        break;
                    }
                    if dl.first() == Some(&0xff) {
                        break;
                    }
                    if columns == 4096 || dl.get(..4) != Some(b"\x03def") {
                        return Err(Error::Malformed);
                    }
                    columns += 1;
                }
                s.last_command = 0;
                return Ok(Status::Complete((
                    Message::Response(Response::Columns { columns }),
                    at,
                )));
            }
            0x00 => ok_packet(pl).ok_or(Error::Malformed)?,
            _ if is_eof(pl) => Response::Eof,
            _ => {
                let (columns, _) = lenenc(pl, 0).ok_or(Error::Malformed)?;
                if columns == 0 || columns > 4096 {
                    return Err(Error::Malformed);
                }
                let deprecate_eof = s.caps() & caps::DEPRECATE_EOF != 0;
                return match result_set(buf, p.wire, columns, deprecate_eof)? {
                    Some((r, used, seen)) => {
                        if seen && !deprecate_eof {
                            // the handshake was not seen, or lost
                            s.client_caps |= caps::DEPRECATE_EOF;
                            s.server_caps |= caps::DEPRECATE_EOF;
                        }
                        Ok(Status::Complete((Message::Response(r), used)))
                    }
                    None => Ok(Status::Partial),
                };
            }
        };
        Ok(Status::Complete((Message::Response(r), p.wire)))
    }
}

impl Protocol for MySql {
    type Session = Session;
    type Message<'a> = Message<'a>;
    type Error = Error;

    /// A server greeting or a refusal sent instead of it (an ERR packet,
    /// sequence 0: too many connections); a login (HandshakeResponse41:
    /// sequence 1, CLIENT_PROTOCOL_41, 23 reserved zero bytes); or, on a
    /// connection that began before the capture, any common command at
    /// sequence 0 with strict checks: fixed-size commands exactly their
    /// size and alone in the syscall, SQL and names printable.
    fn detect(head: &[u8], dir: Direction) -> Detect {
        let Some(h) = head.get(..5) else {
            return Detect::NeedMore;
        };
        let len = usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16;
        match dir {
            Direction::Response => {
                if h[3] != 0 || len < 3 {
                    return Detect::NoMatch;
                }
                if h[4] == 0xff {
                    return refusal(head, len);
                }
                if h[4] != 10 || len < 20 {
                    return Detect::NoMatch;
                }
                let version = &head[5..head.len().min(4 + len)];
                match version.iter().position(|&b| b == 0) {
                    Some(n) if n > 0 && version[..n].iter().all(|b| b.is_ascii_graphic()) => {
                        Detect::Match
                    }
                    None if version.len() < 64 => Detect::NeedMore,
                    _ => Detect::NoMatch,
                }
            }
            Direction::Request => match h[3] {
                0 => first_command(head, len),
                1 => first_login(head, len),
                _ => Detect::NoMatch,
            },
        }
    }

    /// After lost bytes, requests restart at the next packet that
    /// [`MySql::detect`] would take for a command; responses are not
    /// resynchronised (rows look like anything).
    fn resync(buf: &[u8], dir: Direction) -> Option<usize> {
        if dir == Direction::Response {
            return None;
        }
        (1..buf.len().saturating_sub(4)).find(|&at| {
            buf[at + 3] == 0 && Self::detect(&buf[at..], Direction::Request) == Detect::Match
        })
    }

    fn parse<'a>(
        session: &mut Session,
        dir: Direction,
        buf: &'a [u8],
    ) -> Result<Status<(Message<'a>, usize)>, Error> {
        match session.phase {
            Phase::Encrypted => return Err(Error::Encrypted),
            Phase::Compressed => return Err(Error::Compressed),
            _ => {}
        }
        match dir {
            Direction::Request => Self::request(session, buf),
            Direction::Response => Self::response(session, buf),
        }
    }
}

impl Command<'_> {
    /// OpenTelemetry attributes; SQL literals are replaced by `?`.
    pub fn attributes(&self, session: &Session) -> Vec<(&'static str, String)> {
        let mut a = Vec::new();
        self.write_attributes(session, &mut a);
        a
    }

    /// [`Command::attributes`] into any sink.
    pub fn write_attributes(&self, session: &Session, a: &mut impl AttributeSink) {
        a.put("db.system.name", "mysql");
        let sql = match self {
            Command::Query(q) | Command::Prepare(q) => Some(*q),
            Command::Execute(id) => session.statement_sql(*id),
            _ => None,
        };
        if let Some(sql) = sql {
            let s = crate::sql::summarize(sql);
            a.put("db.operation.name", &s.operation);
            if let Some(t) = &s.table {
                a.put("db.collection.name", t);
            }
            a.put("db.query.text", &s.normalized);
        } else {
            let op = match self {
                Command::InitDb(_) => "INIT_DB",
                Command::FieldList(_) => "FIELD_LIST",
                Command::Ping => "PING",
                Command::Quit => "QUIT",
                Command::Close(_) => "STMT_CLOSE",
                // a statement prepared before the capture
                Command::Execute(_) => "EXECUTE",
                Command::Other(com::STATISTICS) => "STATISTICS",
                Command::Other(com::CHANGE_USER) => "CHANGE_USER",
                Command::Other(com::STMT_RESET) => "STMT_RESET",
                Command::Other(com::SET_OPTION) => "SET_OPTION",
                Command::Other(com::RESET_CONNECTION) => "RESET_CONNECTION",
                _ => "OTHER",
            };
            a.put("db.operation.name", op);
            match self {
                Command::InitDb(db) => a.put_bytes("db.namespace", db),
                Command::FieldList(t) => a.put_bytes("db.collection.name", t),
                _ => {}
            }
        }
    }
}

/// Follows a result set packet by packet without keeping it: for results
/// too large to buffer, or partly uncaptured. Fed from the column-count
/// packet; counts the rows.
///
/// # Examples
///
/// ```
/// use kindling_proto::mysql::ResultSetReader;
/// use kindling_proto::Follower;
///
/// // 1 column, its definition, EOF, two rows, EOF (without DEPRECATE_EOF)
/// let mut wire = vec![1, 0, 0, 1, 1];
/// wire.extend([3, 0, 0, 2, b'd', b'e', b'f']);
/// wire.extend([5, 0, 0, 3, 0xfe, 0, 0, 2, 0]);
/// wire.extend([2, 0, 0, 4, 1, b'a']);
/// wire.extend([2, 0, 0, 5, 1, b'b']);
/// wire.extend([5, 0, 0, 6, 0xfe, 0, 0, 2, 0]);
/// let mut r = ResultSetReader::new(false);
/// assert_eq!(r.feed(&wire[..10]).unwrap(), None);
/// assert_eq!(r.feed(&wire[10..]).unwrap(), Some(wire.len() - 10));
/// assert_eq!(r.rows(), 2);
/// ```
#[derive(Clone, Debug)]
pub struct ResultSetReader {
    deprecate_eof: bool,
    phase: RowsPhase,
    /// Header and first payload bytes of the packet being read.
    head: [u8; 13],
    have: usize,
    /// Payload bytes of the current packet still to skip.
    left: u64,
    /// The current packet continues a 16 MiB one.
    continued: bool,
    rows: u64,
    more_results: bool,
    error: Option<u16>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RowsPhase {
    Count,
    Columns(u64),
    ColumnsEof,
    Rows,
    Done,
}

impl ResultSetReader {
    /// A reader at a result set's first packet; `deprecate_eof` when the
    /// connection negotiated CLIENT_DEPRECATE_EOF.
    pub fn new(deprecate_eof: bool) -> Self {
        Self {
            deprecate_eof,
            phase: RowsPhase::Count,
            head: [0; 13],
            have: 0,
            left: 0,
            continued: false,
            rows: 0,
            more_results: false,
            error: None,
        }
    }

    /// Rows read so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The terminator said more result sets follow.
    pub fn more_results(&self) -> bool {
        self.more_results
    }

    /// The error code, if an ERR packet ended the rows.
    pub fn error(&self) -> Option<u16> {
        self.error
    }

    /// Classifies the packet being read from its header and the payload
    /// bytes gathered so far; the rest of its payload is then skipped.
    fn classify(&mut self) -> Result<(), Error> {
        let len = u32::from_le_bytes([self.head[0], self.head[1], self.head[2], 0]) as usize;
        let peeked = self.have - 4;
        let head = self.head;
        self.packet(len, &head[4..self.have])?;
        self.left = (len - peeked) as u64;
        self.have = 0;
        Ok(())
    }

    /// Classifies a packet of `len` bytes from its first `payload` bytes.
    fn packet(&mut self, len: usize, payload: &[u8]) -> Result<(), Error> {
        let continued = std::mem::replace(&mut self.continued, len == 0xff_ffff);
        if continued {
            return Ok(()); // the rest of a 16 MiB packet
        }
        let first = payload.first().copied();
        match self.phase {
            RowsPhase::Count => {
                let (n, _) = lenenc(payload, 0).ok_or(Error::Malformed)?;
                if n == 0 || n > 4096 {
                    return Err(Error::Malformed);
                }
                self.phase = RowsPhase::Columns(n);
            }
            RowsPhase::Columns(n) => {
                self.phase = match (n - 1, self.deprecate_eof) {
                    (0, false) => RowsPhase::ColumnsEof,
                    (0, true) => RowsPhase::Rows,
                    (left, _) => RowsPhase::Columns(left),
                };
            }
            RowsPhase::ColumnsEof => {
                self.phase = RowsPhase::Rows;
                if !(first == Some(0xfe) && len < 9) {
                    // where the EOF is due without DEPRECATE_EOF, a row or
                    // an OK terminator: the connection negotiated it (a
                    // handshake not seen)
                    self.deprecate_eof = true;
                    match first {
                        Some(0xfe) => self.phase = RowsPhase::Done,
                        Some(0xff) => {
                            self.error = u16le(payload, 1);
                            self.phase = RowsPhase::Done;
                        }
                        _ => self.rows += 1,
                    }
                }
            }
            RowsPhase::Rows => {
                let terminator =
                    first == Some(0xfe) && (len < 9 || (self.deprecate_eof && len < 0xff_ffff));
                if terminator {
                    // EOF: warnings(2) status(2); OK: lenenc rows, lenenc id, status(2)
                    let status = if len < 9 {
                        u16le(payload, 3)
                    } else {
                        lenenc(payload, 1).and_then(|(_, a)| {
                            lenenc(payload, 1 + a).and_then(|(_, b)| u16le(payload, 1 + a + b))
                        })
                    };
                    self.more_results = status.is_some_and(|s| s & 0x0008 != 0);
                    self.phase = RowsPhase::Done;
                } else if first == Some(0xff) {
                    self.error = u16le(payload, 1);
                    self.phase = RowsPhase::Done;
                } else {
                    self.rows += 1;
                }
            }
            RowsPhase::Done => {}
        }
        Ok(())
    }
}

impl Summarize for MySql {
    const ID: ProtocolId = ProtocolId::MySql;

    fn summarize(
        session: &mut Session,
        message: &Message<'_>,
        _: &SummaryOptions,
        attributes: &mut impl AttributeSink,
    ) -> Summary {
        match message {
            // the login is a request: the server's OK or ERR is its verdict
            // (steps in between, authentication switches and more data,
            // are not)
            Message::Handshake(Handshake::Login { database, .. }) => {
                session.login_verdict_due = true;
                attributes.put("db.system.name", "mysql");
                attributes.put("db.operation.name", "LOGIN");
                if let Some(db) = database.filter(|d| !d.is_empty()) {
                    attributes.put_bytes("db.namespace", db);
                }
                Summary::Request {
                    key: None,
                    answered: true,
                }
            }
            Message::Handshake(_)
            | Message::Command(Command::Other(0))
            | Message::Response(Response::AuthStep) => Summary::Ignore,
            Message::Response(r @ (Response::Ok { .. } | Response::Err { .. }))
                if session.login_verdict_due =>
            {
                session.login_verdict_due = false;
                let mut failure = None;
                if let Response::Err { code, message, .. } = r {
                    put_error(attributes, *code, message);
                    failure = Some(Failure::Database);
                }
                Summary::Response { key: None, failure }
            }
            Message::Command(c) => {
                c.write_attributes(session, attributes);
                Summary::Request {
                    key: None,
                    answered: !matches!(c, Command::Quit | Command::Close(_)),
                }
            }
            Message::Response(r) => {
                let mut failure = None;
                match r {
                    Response::Err { code, message, .. } => {
                        // sent instead of the greeting (1040 too many
                        // connections, 1129 host blocked): the refusal of
                        // the connection, an exchange of its own
                        if session.phase == Phase::Greeting && !session.joined {
                            attributes.put("db.system.name", "mysql");
                            attributes.put("db.operation.name", "CONNECT");
                        }
                        put_error(attributes, *code, message);
                        failure = Some(Failure::Database);
                    }
                    Response::ResultSet { rows, .. } => {
                        attributes.put_u64("db.response.returned_rows", *rows);
                    }
                    Response::Ok { affected_rows, .. } => {
                        attributes.put_u64("db.response.affected_rows", *affected_rows);
                    }
                    _ => {}
                }
                Summary::Response { key: None, failure }
            }
        }
    }
}

/// Longest error message kept, in bytes.
const MAX_ERROR_MESSAGE: usize = 512;

/// An ERR packet's code (`db.response.status_code`) and message
/// (`db.response.error_message`, at most [`MAX_ERROR_MESSAGE`] bytes).
fn put_error(attributes: &mut impl AttributeSink, code: u16, message: &[u8]) {
    attributes.put_u64("db.response.status_code", u64::from(code));
    if !message.is_empty() {
        let m = &message[..message.len().min(MAX_ERROR_MESSAGE)];
        attributes.put_bytes("db.response.error_message", m);
    }
}

impl Follower for ResultSetReader {
    type Error = Error;

    /// Whether the result set is complete.
    fn is_done(&self) -> bool {
        self.phase == RowsPhase::Done && self.left == 0
    }

    /// Reads the next bytes: `Some(n)` when the result set ended after the
    /// first `n` bytes of `input`, `None` when all of it belonged to it.
    fn feed(&mut self, input: &[u8]) -> Result<Option<usize>, Error> {
        let mut at = 0;
        loop {
            if self.phase == RowsPhase::Done && self.left == 0 {
                return Ok(Some(at));
            }
            if self.left > 0 {
                let n = self.left.min((input.len() - at) as u64);
                self.left -= n;
                at += n as usize;
                if self.left > 0 {
                    return Ok(None);
                }
                continue;
            }
            // a header and its first payload bytes all in `input`: read
            // them in place
            if self.have == 0 {
                if let Some(h) = input.get(at..at + 4) {
                    let len = u32::from_le_bytes([h[0], h[1], h[2], 0]) as usize;
                    let peek = len.min(9);
                    if let Some(payload) = input.get(at + 4..at + 4 + peek) {
                        self.packet(len, payload)?;
                        self.left = (len - peek) as u64;
                        at += 4 + peek;
                        continue;
                    }
                }
            }
            // else gather the 4-byte header and up to 9 payload bytes
            let len = if self.have >= 4 {
                u32::from_le_bytes([self.head[0], self.head[1], self.head[2], 0]) as usize
            } else {
                usize::MAX
            };
            let want = if self.have < 4 { 4 } else { 4 + len.min(9) };
            if self.have < want {
                let n = (want - self.have).min(input.len() - at);
                self.head[self.have..self.have + n].copy_from_slice(&input[at..at + n]);
                self.have += n;
                at += n;
                if self.have < want {
                    return Ok(None);
                }
                if self.have == 4 {
                    continue; // now the length is known
                }
            }
            self.classify()?;
        }
    }

    /// `n` bytes were sent but not captured: fine inside a packet payload
    /// whose first byte was seen.
    fn skip_unseen(&mut self, n: u64) -> Result<u64, Error> {
        if n == 0 {
            return Ok(0);
        }
        if self.have > 4 {
            self.classify()?;
        }
        if self.have == 0 && n <= self.left {
            self.left -= n;
            Ok(n)
        } else {
            Err(Error::Malformed)
        }
    }

    /// The rows read, or the error that ended them.
    fn summary(&self, attributes: &mut impl AttributeSink) -> Option<Summary> {
        let failure = match self.error() {
            Some(code) => {
                attributes.put_u64("db.response.status_code", u64::from(code));
                Some(Failure::Database)
            }
            None => {
                attributes.put_u64("db.response.returned_rows", self.rows());
                None
            }
        };
        Some(Summary::Response { key: None, failure })
    }
}
