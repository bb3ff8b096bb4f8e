//! Replaying the captures in `tests/data/` (recorded with the real probe by
//! `tests/data/record.sh`) through the pipeline.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::path::Path;

use kindling_flow::{Config, Driver, Exchange, Output, Role, Stats, TcpRecord};
use kindling_probe::abi::RawData;
use kindling_probe::capture::{CaptureHeader, CaptureReader};
use zerocopy::byteorder::native_endian::{I64, U32};
use zerocopy::IntoBytes;

/// The raw records of `tests/data/<name>.kcap` and its boot-time offset.
pub fn records(name: &str) -> (Vec<Vec<u8>>, i64) {
    let (records, header) = records_and_header(name);
    (records, header.host.boottime_to_unix_ns)
}

/// The raw records of `tests/data/<name>.kcap` and its header.
pub fn records_and_header(name: &str) -> (Vec<Vec<u8>>, CaptureHeader) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/{name}.kcap"));
    let file = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = CaptureReader::new(std::io::BufReader::new(file)).expect("a capture");
    let header = reader.header().clone();
    let mut out = Vec::new();
    while let Some(r) = reader.next_record().expect("an undamaged capture") {
        out.push(r.to_vec());
    }
    (out, header)
}

/// Runs records through a pipeline as `kindling replay` does (its
/// [`Driver`]: a tick per second of capture time, `finish` at the end).
pub fn run(records: &[Vec<u8>], config: Config) -> (Vec<Output>, Stats) {
    let mut driver = Driver::replay(config);
    let mut out = Vec::new();
    for r in records {
        driver.push_record(r, &mut out).expect("decodable");
    }
    driver.finish(&mut out);
    (out, driver.stats())
}

/// The bytes of a data record: `raw`'s fields with `payload` as its whole,
/// fully captured payload.
pub fn data_record(raw: &RawData, payload: &[u8]) -> Vec<u8> {
    let mut raw = *raw;
    let n = payload.len() as u32;
    raw.hdr.size = U32::new(size_of::<RawData>() as u32 + n);
    raw.len = U32::new(n);
    raw.cap_len = U32::new(n);
    raw.ret = I64::new(i64::from(n));
    let mut out = raw.as_bytes().to_vec();
    out.extend_from_slice(payload);
    out
}

/// Replays a capture with the default settings.
pub fn replay(name: &str) -> (Vec<Output>, Stats) {
    replay_with(name, Config::default())
}

/// Replays a capture with these settings (and the capture's time offset
/// and drop reason names, as `kindling replay` does).
pub fn replay_with(name: &str, config: Config) -> (Vec<Output>, Stats) {
    let (records, header) = records_and_header(name);
    run(
        &records,
        Config {
            boottime_to_unix_ns: header.host.boottime_to_unix_ns,
            drop_reasons: header.host.drop_reasons,
            ..config
        },
    )
}

pub fn exchanges(out: &[Output]) -> Vec<&Exchange> {
    out.iter()
        .filter_map(|o| match o {
            Output::Exchange(x) => Some(x),
            Output::Tcp(_) => None,
        })
        .collect()
}

pub fn tcp_records(out: &[Output]) -> Vec<&TcpRecord> {
    out.iter()
        .filter_map(|o| match o {
            Output::Tcp(t) => Some(t),
            Output::Exchange(_) => None,
        })
        .collect()
}

pub fn attr<'a>(x: &'a Exchange, key: &str) -> &'a str {
    x.attributes.get(key).unwrap_or("")
}

/// Exchanges of one role, as sorted `request → result` lines.
pub fn summary(out: &[Output], role: Role) -> Vec<String> {
    let mut v: Vec<String> = exchanges(out)
        .into_iter()
        .filter(|x| x.role == role)
        .map(|x| {
            let request = match x.protocol.as_str() {
                "http" => format!("{} {}", attr(x, "http.request.method"), attr(x, "url.path")),
                "dns" => format!(
                    "{} {}",
                    attr(x, "dns.question.type"),
                    attr(x, "dns.question.name")
                ),
                _ => match attr(x, "db.query.text") {
                    "" => attr(x, "db.operation.name").to_owned(),
                    t => t.to_owned(),
                },
            };
            let result = [
                "http.response.status_code",
                "dns.response.code",
                "db.response.status_code",
            ]
            .iter()
            .map(|k| attr(x, k))
            .find(|v| !v.is_empty())
            .unwrap_or("");
            let error = x.error.map(|e| format!(" {e:?}")).unwrap_or_default();
            let partial = if x.partial { " partial" } else { "" };
            format!("{} {request} → {result}{error}{partial}", x.protocol)
        })
        .collect();
    v.sort();
    v
}

/// One line per output in emission order, for snapshots: every field but
/// the absolute time.
pub fn render(out: &[Output]) -> String {
    let mut s = String::new();
    for o in out {
        let line = match o {
            Output::Exchange(x) => {
                let mut attrs: Vec<String> = x
                    .attributes
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                attrs.sort();
                format!(
                    "{:?} {} {} {}->{} pid={} {} req={}B resp={}B total={}us connect={:?} send={}us wait={}us download={}us error={:?} slow={} partial={} net={:?} [{}]",
                    x.role,
                    x.protocol,
                    x.transport,
                    x.src,
                    x.dst,
                    x.pid,
                    x.comm,
                    x.request_bytes,
                    x.response_bytes,
                    x.duration_ns / 1000,
                    x.phases.connect.map(|c| c / 1000),
                    x.phases.send / 1000,
                    x.phases.wait / 1000,
                    x.phases.download / 1000,
                    x.error,
                    x.slow,
                    x.partial,
                    x.network.map(|n| (n.srtt_us, n.retransmits)),
                    attrs.join(" ")
                )
            }
            Output::Tcp(t) => format!(
                "tcp {:?} {}->{} pid={} {} duration={:?} errno={:?} reason={:?}",
                t.event,
                t.src,
                t.dst,
                t.pid,
                t.comm,
                t.duration_ns.map(|d| d / 1000),
                t.errno,
                t.reason_name.as_deref().or(t.reason.map(|_| "?"))
            ),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}
pub mod live;
pub mod servers;

/// The phases of an exchange add up to its duration.
pub fn assert_phases_add_up(name: &str, x: &Exchange) {
    let p = x.phases;
    assert_eq!(
        x.duration_ns,
        p.connect.unwrap_or(0) + p.send + p.wait + p.download,
        "{name}: phases must add up: {x:?}"
    );
}
