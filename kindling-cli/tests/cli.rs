//! The `kindling` binary end to end: flags, record → replay, damaged files.

mod common;

use common::{kindling, privileged};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kindling-probe/tests/data/loopback.kcap")
}

/// How many records the fixture holds, as the capture reader counts them.
fn fixture_records() -> usize {
    let file = std::fs::File::open(fixture()).unwrap();
    let mut r = kindling_probe::capture::CaptureReader::new(file).unwrap();
    let mut n = 0;
    while r.next_record().unwrap().is_some() {
        n += 1;
    }
    assert!(
        n > 50,
        "the fixture holds the script's traffic: {n} records"
    );
    n
}

#[test]
fn replay_prints_every_event_as_json() {
    let out = kindling()
        .args(["replay", "--events", "-o", "json"])
        .arg(fixture())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    assert_eq!(lines.len(), fixture_records(), "one line per record");
    let first = &lines[0];
    for key in [
        "kind",
        "ts",
        "pid",
        "tid",
        "comm",
        "local",
        "peer",
        "transport",
    ] {
        assert!(first.get(key).is_some(), "missing {key} in {first}");
    }
    let gets: Vec<_> = lines
        .iter()
        .filter(|l| {
            l["kind"] == "data"
                && l["payload"]
                    .as_str()
                    .unwrap()
                    .starts_with("GET / HTTP/1.1\\r\\n")
        })
        .collect();
    assert_eq!(gets.len(), 6);
    assert!(gets
        .iter()
        .all(|g| g["local"].as_str().unwrap().starts_with("127.0.0.1:")));
}

#[test]
fn replay_table_and_truncated_file_warning() {
    let bytes = std::fs::read(fixture()).unwrap();
    let dir = std::env::temp_dir().join(format!("kindling-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("cut.kcap");
    std::fs::write(&cut, &bytes[..bytes.len() - 50]).unwrap();
    let out = kindling()
        .args(["replay", "--events"])
        .arg(&cut)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("TIME(s)"));
    assert_eq!(
        stdout.lines().count(),
        fixture_records(),
        "header line and every complete record (the last one is cut)"
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("warning: capture is truncated"), "{stderr}");

    let junk = dir.join("junk.kcap");
    std::fs::write(&junk, b"this is not a capture").unwrap();
    let out = kindling()
        .args(["replay", "--events"])
        .arg(&junk)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("not a kindling capture file"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn bad_flags_give_one_clear_line() {
    let out = kindling()
        .args([
            "record",
            "-o",
            "/tmp/x.kcap",
            "--snaplen",
            "99999",
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        assert!(stderr.contains("snaplen must be 1..=16384"), "{stderr}");
    }
    let out = kindling()
        .args(["record", "-o", "/tmp/x.kcap", "--duration=0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("--duration must be a positive number"));
}

#[test]
fn record_a_live_exchange_then_replay_it() {
    if !privileged("record/replay") {
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let dir = std::env::temp_dir().join(format!("kindling-cli-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("live.kcap");
    let mut rec = kindling()
        .args(["record", "--port", &port.to_string(), "-o"])
        .arg(&file)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // the header is written once the probe is attached
    let start = Instant::now();
    while std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0) == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "recorder never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (mut s, _) = listener.accept().unwrap();
    c.write_all(b"PING kindling\r\n").unwrap();
    let mut buf = [0u8; 15];
    s.read_exact(&mut buf).unwrap();
    s.write_all(b"+PONG\r\n").unwrap();
    let mut pong = [0u8; 7];
    c.read_exact(&mut pong).unwrap();
    drop((c, s));
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(rec.id() as i32, libc::SIGTERM) };
    let status = rec.wait().unwrap();
    let mut err = String::new();
    rec.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(status.success(), "{err}");
    assert!(err.contains("ring_full=0"), "losses reported: {err}");
    // payloads of every process: the owner's alone
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "capture file mode {mode:o}");

    let out = kindling()
        .args(["replay", "--events", "-o", "json"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(out.status.success());
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The recorder excludes itself, but this test process is not the recorder.
    let payloads: Vec<&str> = lines.iter().filter_map(|l| l["payload"].as_str()).collect();
    assert_eq!(
        payloads
            .iter()
            .filter(|p| **p == "PING kindling\\r\\n")
            .count(),
        2,
        "{lines:#?}"
    );
    assert_eq!(payloads.iter().filter(|p| **p == "+PONG\\r\\n").count(), 2);
    assert!(lines.iter().any(|l| l["kind"] == "connect"));
    assert!(lines.iter().any(|l| l["kind"] == "accept"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn unprivileged_load_says_what_to_do() {
    // As root, drop to nobody with no capabilities; otherwise we already are unprivileged.
    // SAFETY: geteuid has no preconditions.
    let out = if unsafe { libc::geteuid() } == 0 {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "--inh-caps=-all",
            ])
            .arg(env!("CARGO_BIN_EXE_kindling"))
            .args(["watch", "--duration", "1"])
            .output()
            .expect("setpriv (util-linux) must be installed")
    } else {
        kindling()
            .args(["watch", "--duration", "1"])
            .output()
            .unwrap()
    };
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        "kindling: not permitted to load eBPF programs: run as root or grant CAP_BPF and CAP_PERFMON"
    );
}

/// The exchange and TCP records of `replay -o json` keep the schema the
/// README documents, and `-o prometheus` prints Kindling's metric names.
#[test]
fn replay_prints_exchanges_in_the_documented_schema() {
    let capture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../kindling-flow/tests/data/failures.kcap");
    let out = kindling()
        .args(["replay", "-o", "json"])
        .arg(&capture)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exchanges") && stderr.contains("lost by the probe"),
        "{stderr}"
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let exchanges: Vec<_> = lines.iter().filter(|v| v["kind"] == "exchange").collect();
    assert!(exchanges.len() >= 7, "{lines:#?}");
    for x in &exchanges {
        for field in [
            "protocol",
            "role",
            "transport",
            "pid",
            "tid",
            "comm",
            "src",
            "dst",
            "ts",
            "duration_ns",
            "phases",
            "request_bytes",
            "response_bytes",
            "error",
            "slow",
            "partial",
            "attributes",
        ] {
            assert!(x.get(field).is_some(), "{field} missing in {x}");
        }
        for phase in ["send", "wait", "download"] {
            assert!(x["phases"][phase].is_u64(), "{x}");
        }
        assert!(x["src"].as_str().unwrap().contains(':'), "ip:port");
    }
    let slow = exchanges
        .iter()
        .find(|x| x["attributes"]["url.path"] == "/slow" && x["role"] == "client")
        .expect("the slow exchange");
    assert_eq!(slow["slow"], true);
    assert_eq!(slow["attributes"]["http.response.status_code"], "200");
    let refused = lines
        .iter()
        .find(|v| v["kind"] == "tcp" && v["event"] == "connect_failed")
        .expect("the refused connect");
    assert_eq!(refused["errno"], 111);

    let prom = kindling()
        .args(["replay", "-o", "prometheus"])
        .arg(&capture)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&prom.stdout);
    for name in [
        "kindling_entity_request_total{",
        "kindling_topology_request_total{",
        "kindling_tcp_connect_failure_total{",
        "kindling_flow_events_total",
    ] {
        assert!(text.contains(name), "{name} missing");
    }
}
