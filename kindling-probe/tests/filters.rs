//! In-kernel filters, checked with real `curl` processes against a tiny HTTP
//! server in this test: a pid filter sees only that pid, and a probe never
//! sees the process that loaded it.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::Duration;

use common::{decode_all, drain, privileged, with_port};
use kindling_probe::abi::Event;
use kindling_probe::ProbeBuilder;

/// Loads are heavy (verifier); run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Serves `n` HTTP requests with a fixed response, on its own thread.
fn http_server(n: usize) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = thread::spawn(move || {
        for _ in 0..n {
            let (stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).unwrap() > 2 {
                line.clear();
            }
            let mut s = stream;
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
                .unwrap();
        }
    });
    (port, handle)
}

fn curl(port: u16, path: &str) -> Command {
    let mut c = Command::new("curl");
    c.args([
        "-s",
        "-o",
        "/dev/null",
        &format!("http://127.0.0.1:{port}{path}"),
    ]);
    c
}

fn payload_contains(e: &Event<'_>, needle: &[u8]) -> bool {
    matches!(e, Event::Data(d) if d.payload.windows(needle.len()).any(|w| w == needle))
}

#[test]
fn pid_filter_sees_only_that_process() {
    if !privileged("pid filter") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (port, server) = http_server(2);
    // The shell waits for a line, then becomes curl (same pid).
    let mut wanted = Command::new("sh")
        .args([
            "-c",
            &format!("read go; exec curl -s -o /dev/null http://127.0.0.1:{port}/wanted"),
        ])
        .stdin(Stdio::piped())
        .spawn()
        .expect("sh and curl must be installed");
    let pid = wanted.id();
    let mut probe = ProbeBuilder::new().pid(pid).load().expect("load probe");

    let status = curl(port, "/other")
        .status()
        .expect("curl must be installed");
    assert!(status.success());
    writeln!(wanted.stdin.take().unwrap(), "go").unwrap();
    assert!(wanted.wait().unwrap().success());
    server.join().unwrap();

    let records = drain(
        &mut probe,
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    let events = decode_all(&records);
    assert!(!events.is_empty(), "the filtered process was seen");
    for e in &events {
        // TCP/drop events fire in softirq context under any pid; the kernel
        // side keeps only those of sockets the wanted process used.
        if matches!(e, Event::Data(_) | Event::Conn(_)) {
            assert_eq!(e.header().pid.get(), pid, "only pid {pid}: {e:?}");
        }
    }
    assert!(events.iter().any(|e| payload_contains(e, b"GET /wanted")));
    assert!(
        !events.iter().any(|e| payload_contains(e, b"GET /other")),
        "unfiltered curl leaked"
    );
    assert!(
        !events
            .iter()
            .any(|e| payload_contains(e, b"HTTP/1.1 200 OK") && e.header().pid.get() != pid),
        "the server (this process) leaked"
    );
}

#[test]
fn the_loading_process_never_sees_itself() {
    if !privileged("self exclusion") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (port, server) = http_server(1);
    let mut probe = ProbeBuilder::new().port(port).load().expect("load probe");
    let status = curl(port, "/seen")
        .status()
        .expect("curl must be installed");
    assert!(status.success());
    server.join().unwrap();

    let records = drain(
        &mut probe,
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    let events = decode_all(&records);
    let mine = with_port(&events, port);
    let me = std::process::id();
    assert!(
        mine.iter()
            .any(|e| payload_contains(e, b"GET /seen") && e.header().pid.get() != me),
        "curl's request is seen: {mine:?}"
    );
    for e in &mine {
        if matches!(e, Event::Data(_) | Event::Conn(_)) {
            assert_ne!(e.header().pid.get(), me, "the agent saw itself: {e:?}");
        }
    }
    // The server's response was written by this process: invisible. curl
    // reading it is visible.
    assert!(mine.iter().any(|e| payload_contains(e, b"HTTP/1.1 200 OK")));
    assert!(mine
        .iter()
        .filter(|e| payload_contains(e, b"HTTP/1.1 200 OK"))
        .all(|e| e.header().pid.get() != me));
}

#[test]
fn port_filter_drops_other_ports() {
    if !privileged("port filter") {
        return;
    }
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (port, server) = http_server(1);
    let (other, other_server) = http_server(1);
    let mut probe = ProbeBuilder::new().port(port).load().expect("load probe");
    assert!(curl(other, "/other-port").status().unwrap().success());
    assert!(curl(port, "/this-port").status().unwrap().success());
    server.join().unwrap();
    other_server.join().unwrap();
    let records = drain(
        &mut probe,
        Duration::from_millis(200),
        Duration::from_secs(5),
    );
    let events = decode_all(&records);
    assert!(events
        .iter()
        .any(|e| payload_contains(e, b"GET /this-port")));
    assert!(!events
        .iter()
        .any(|e| payload_contains(e, b"GET /other-port")));
    for e in &events {
        if let Event::Data(d) = e {
            let (s, p) = (d.raw.sk.sport.get(), d.raw.sk.dport.get());
            assert!(s == port || p == port, "record for ports {s}/{p}");
        }
    }
}
