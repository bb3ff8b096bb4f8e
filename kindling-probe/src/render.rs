//! Human and machine renderings of events: one JSON object or one table line
//! per record. Used by `kindling replay --events` and `kindling watch`.

use std::fmt::Write as _;

use serde_json::{json, Map, Value};

use crate::abi::{self, Event};

/// Escapes bytes as text, losslessly: printable ASCII as is, `\\`, `\r`,
/// `\n`, `\t`, and `\xNN` for everything else.
///
/// # Examples
///
/// ```
/// assert_eq!(kindling_probe::render::escape_bytes(b"GET /\r\n\x00"), "GET /\\r\\n\\x00");
/// ```
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
    out
}

/// One JSON object describing the event. `boottime_to_unix_ns` converts the
/// kernel's boot-time stamps to Unix time (`ts`); `ts_boot_ns` keeps the raw one.
pub fn to_json(event: &Event<'_>, boottime_to_unix_ns: i64) -> Value {
    let h = event.header();
    let sk = event.sock();
    let boot = h.ts_ns.get();
    let mut m = Map::new();
    m.insert("kind".into(), json!(event.kind_name()));
    m.insert("ts".into(), json!(boot as i64 + boottime_to_unix_ns));
    m.insert("ts_boot_ns".into(), json!(boot));
    m.insert("pid".into(), json!(h.pid.get()));
    m.insert("tid".into(), json!(h.tid.get()));
    m.insert("comm".into(), json!(String::from_utf8_lossy(h.comm())));
    m.insert("cgroup_id".into(), json!(h.cgroup_id.get()));
    m.insert("flags".into(), json!(h.flags.get()));
    m.insert("transport".into(), json!(sk.transport().name()));
    m.insert("local".into(), json!(sk.local().to_string()));
    m.insert("peer".into(), json!(sk.peer().to_string()));
    m.insert("sock".into(), json!(format!("{:#x}", sk.sock.get())));
    m.insert("tcp_state".into(), json!(abi::tcp_state_name(sk.state)));
    match event {
        Event::Data(d) => {
            let r = d.raw;
            m.insert("syscall".into(), json!(d.syscall().name()));
            m.insert(
                "direction".into(),
                json!(match d.direction() {
                    abi::Direction::Egress => "egress",
                    abi::Direction::Ingress => "ingress",
                }),
            );
            m.insert("fd".into(), json!(r.fd.get()));
            m.insert("ino".into(), json!(r.ino.get()));
            m.insert("ret".into(), json!(r.ret.get()));
            m.insert("ts_enter_boot_ns".into(), json!(r.ts_enter_ns.get()));
            m.insert("len".into(), json!(r.len.get()));
            m.insert("cap_len".into(), json!(r.cap_len.get()));
            m.insert("msg_index".into(), json!(r.msg_index.get()));
            m.insert("truncated".into(), json!(d.is_truncated()));
            // only when set: one part of a syscall captured under the framing budget
            if d.continues() {
                m.insert("continued".into(), json!(true));
            }
            m.insert("payload".into(), json!(escape_bytes(d.payload)));
        }
        Event::Conn(c) => {
            let r = c.raw;
            m.insert("syscall".into(), json!(c.syscall().name()));
            m.insert("fd".into(), json!(r.fd.get()));
            m.insert("ino".into(), json!(r.ino.get()));
            m.insert("ret".into(), json!(r.ret.get()));
            m.insert("ts_enter_boot_ns".into(), json!(r.ts_enter_ns.get()));
        }
        Event::Tcp(t) => {
            let r = t.raw;
            m.insert("srtt_us".into(), json!(r.srtt_us.get()));
            m.insert("rttvar_us".into(), json!(r.rttvar_us.get()));
            m.insert("total_retrans".into(), json!(r.total_retrans.get()));
            m.insert("snd_cwnd".into(), json!(r.snd_cwnd.get()));
            m.insert("old_state".into(), json!(abi::tcp_state_name(r.old_state)));
            m.insert("new_state".into(), json!(abi::tcp_state_name(r.new_state)));
            if let Some(reset) = t.reset() {
                m.insert("reset".into(), json!(reset.name()));
            }
        }
        Event::Drop(d) => {
            m.insert("reason".into(), json!(d.raw.reason.get()));
            m.insert(
                "location".into(),
                json!(format!("{:#x}", d.raw.location.get())),
            );
        }
        Event::Lost(l) => {
            m.insert("records".into(), json!(l.raw.records.get()));
        }
    }
    Value::Object(m)
}

/// Column titles matching [`to_table_row`].
pub const TABLE_HEADER: &str =
    "TIME(s)        PID     COMM             EVENT           FD   LOCAL                  PEER                   DETAIL";

/// One fixed-width line; `t0_ns` is subtracted from the boot-time stamp.
pub fn to_table_row(event: &Event<'_>, t0_ns: u64) -> String {
    let h = event.header();
    let sk = event.sock();
    let t = h.ts_ns.get().saturating_sub(t0_ns) as f64 / 1e9;
    let comm = String::from_utf8_lossy(h.comm()).into_owned();
    let (what, fd, detail) = match event {
        Event::Data(d) => {
            let r = d.raw;
            let arrow = match d.direction() {
                abi::Direction::Egress => "->",
                abi::Direction::Ingress => "<-",
            };
            let mut preview = escape_bytes(&d.payload[..d.payload.len().min(48)]);
            if d.payload.len() > 48 || d.is_truncated() {
                preview.push('…');
            }
            (
                d.syscall().name().to_owned(),
                r.fd.get().to_string(),
                format!(
                    "{arrow} {} B (cap {}) ret={} {preview}",
                    r.len.get(),
                    r.cap_len.get(),
                    r.ret.get()
                ),
            )
        }
        Event::Conn(c) => (
            c.syscall().name().to_owned(),
            c.raw.fd.get().to_string(),
            format!("ret={}", c.raw.ret.get()),
        ),
        Event::Tcp(t) => {
            let r = t.raw;
            let detail = match t.kind {
                abi::TcpKind::State => format!(
                    "{} -> {}",
                    abi::tcp_state_name(r.old_state),
                    abi::tcp_state_name(r.new_state)
                ),
                abi::TcpKind::Reset => format!(
                    "reset {}",
                    t.reset().unwrap_or(abi::ResetDirection::Received).name()
                ),
                _ => format!(
                    "srtt={}us rttvar={}us retrans={} cwnd={}",
                    r.srtt_us.get(),
                    r.rttvar_us.get(),
                    r.total_retrans.get(),
                    r.snd_cwnd.get()
                ),
            };
            (event.kind_name().to_owned(), "-".into(), detail)
        }
        Event::Drop(d) => (
            event.kind_name().to_owned(),
            "-".into(),
            format!("reason={}", d.raw.reason.get()),
        ),
        Event::Lost(l) => (
            event.kind_name().to_owned(),
            "-".into(),
            format!("{} records lost before this point", l.raw.records.get()),
        ),
    };
    format!(
        "{t:<14.6} {:<7} {:<16} {:<15} {:<4} {:<22} {:<22} {detail}",
        h.pid.get(),
        comm,
        what,
        fd,
        sk.local().to_string(),
        sk.peer().to_string(),
    )
}
