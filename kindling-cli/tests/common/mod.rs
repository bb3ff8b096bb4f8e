//! What the CLI's test binaries share.

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// Throwaway servers, shared with `kindling-flow`'s live tests.
#[path = "../../../kindling-flow/tests/common/servers.rs"]
pub mod servers;

/// A child process killed (and reaped) when dropped.
#[allow(unused_imports, reason = "each test binary uses a subset")]
pub use servers::Killed as Stop;

/// The `kindling` binary under test.
pub fn kindling() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kindling"))
}

/// True when the test may load BPF. Without privileges a local run skips
/// with a printed reason; under `CI=true` it fails loudly instead.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "{test}: CI must run as root"
    );
    eprintln!("skipping {test}: needs root");
    false
}

/// A fresh directory for one test.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kindling-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A GET on loopback: status and body.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    get_with(port, path, "")
}

/// A GET with extra header lines (each ending in CRLF).
pub fn get_with(port: u16, path: &str, headers: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n{headers}\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let status = text.split(' ').nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

pub fn wait_for(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A loopback HTTP server answering every request with 200 (or 503 for
/// `/fail`), until the process ends.
pub fn http_server() -> u16 {
    http_server_on("127.0.0.1")
}

/// [`http_server`] on another address (of 127.0.0.0/8, say).
pub fn http_server_on(ip: &str) -> u16 {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    serve_http(listener);
    port
}

/// Runs `f` on a thread inside the network namespace `/run/netns/NAME`
/// (`setns` moves only the calling thread): sockets it makes live there.
pub fn in_netns<T: Send + 'static>(name: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("the namespace exists");
        // SAFETY: a valid namespace fd; only this thread changes namespace
        let rc = unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&ns), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap()
}

/// [`http_server`] on `ip`:`port` inside the network namespace NAME.
pub fn http_server_in_netns(name: &str, ip: &str, port: u16) {
    let ip = ip.to_owned();
    let bound = in_netns(name, move || {
        TcpListener::bind((ip.as_str(), port)).expect("bind in the namespace")
    });
    serve_http(bound);
}

/// Answers HTTP requests on `listener` (200, or 503 for `/fail`) in
/// threads of its own, until the process ends.
fn serve_http(listener: TcpListener) {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            std::thread::spawn(move || {
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let fail = line.contains("/fail");
                    while line != "\r\n" {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                    }
                    let status = if fail { "503 Unavailable" } else { "200 OK" };
                    let _ = write!(conn, "HTTP/1.1 {status}\r\nContent-Length: 3\r\n\r\nok\n");
                }
            });
        }
    });
}

/// SIGTERM to an agent: it must exit successfully within 20 s; what it
/// printed on standard error.
pub fn terminate(mut agent: Stop) -> String {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(agent.0.id() as i32, libc::SIGTERM) };
    let start = Instant::now();
    let status = loop {
        if let Some(s) = agent.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "agent did not stop"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    agent
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
    err
}
