//! End to end on the real kernel: the probe watches this test's own HTTP
//! server and client on loopback, and the pipeline must report each
//! exchange from both ends. Needs root; without it the test skips with a
//! reason, except under `CI=true`, where it fails.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use kindling_flow::{Config, Driver, ErrorKind, Output, Role};
use kindling_probe::{capture, ProbeBuilder};

fn privileged() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert_ne!(
        std::env::var("CI").as_deref(),
        Ok("true"),
        "CI=true but not root: the live pipeline test must run in CI"
    );
    eprintln!("skipping: needs root to load the probe");
    false
}

/// Reads one HTTP/1 message with a Content-Length body (or none); returns
/// its start line, or `None` at the end of the stream.
fn read_message(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut start = String::new();
    if reader.read_line(&mut start).unwrap() == 0 {
        return None;
    }
    let mut length = 0;
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        if h == "\r\n" {
            break;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).unwrap();
    Some(start)
}

/// A keep-alive HTTP/1.1 server for one connection: `/fail` answers 500,
/// anything else 200 with a small body.
fn serve(listener: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut conn = conn;
        while let Some(line) = read_message(&mut reader) {
            let (status, text) = if line.split(' ').nth(1) == Some("/fail") {
                ("500 Internal Server Error", "broken\n")
            } else {
                ("200 OK", "hello\n")
            };
            write!(
                conn,
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\n\r\n{text}",
                text.len()
            )
            .unwrap();
        }
    })
}

fn read_response(reader: &mut BufReader<TcpStream>) -> String {
    read_message(reader).expect("a response")
}

#[test]
fn live_http_exchanges_from_both_ends() {
    if !privileged() {
        return;
    }
    let mut probe = ProbeBuilder::new()
        .trace_self(true)
        .pid(std::process::id())
        .wakeup_bytes(0)
        .load()
        .unwrap_or_else(|e| panic!("loading the probe failed: {e}\n{}", e.log().unwrap_or("")));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve(listener);
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    client
        .write_all(b"GET /users/42 HTTP/1.1\r\nHost: live\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut reader).contains("200"));
    client
        .write_all(
            b"POST /orders HTTP/1.1\r\nHost: live\r\nContent-Length: 11\r\n\r\n{\"qty\": 3}\n",
        )
        .unwrap();
    assert!(read_response(&mut reader).contains("200"));
    client
        .write_all(b"GET /fail HTTP/1.1\r\nHost: live\r\n\r\n")
        .unwrap();
    assert!(read_response(&mut reader).contains("500"));
    drop(reader);
    drop(client);
    server.join().unwrap();

    let mut driver = Driver::live(Config {
        boottime_to_unix_ns: capture::boottime_to_unix_ns(),
        ..Config::default()
    });
    let mut out = Vec::new();
    let start = Instant::now();
    let mut quiet_since = Instant::now();
    while start.elapsed() < Duration::from_secs(5)
        && quiet_since.elapsed() < Duration::from_millis(300)
    {
        let n = probe
            .poll_raw(Duration::from_millis(50), |rec| {
                driver
                    .push_record(rec, &mut out)
                    .expect("the kernel's records decode");
                true
            })
            .unwrap();
        if n > 0 {
            quiet_since = Instant::now();
        }
    }
    driver.finish(&mut out);
    let mine: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            Output::Exchange(x) if x.dst.port() == port => Some(x),
            _ => None,
        })
        .collect();
    for role in [Role::Client, Role::Server] {
        let seen: Vec<_> = mine
            .iter()
            .filter(|x| x.role == role)
            .map(|x| {
                let a = |k: &str| x.attributes.get(k).unwrap_or("");
                (
                    a("http.request.method"),
                    a("url.path"),
                    a("http.response.status_code"),
                    x.error,
                )
            })
            .collect();
        assert_eq!(
            seen,
            [
                ("GET", "/users/42", "200", None),
                ("POST", "/orders", "200", None),
                ("GET", "/fail", "500", Some(ErrorKind::ServerError)),
            ],
            "{role:?}: {mine:#?}"
        );
    }
    for x in &mine {
        assert_eq!(x.pid, std::process::id());
        assert!(x.duration_ns > 0 && x.duration_ns < 1_000_000_000, "{x:?}");
        assert_ne!(x.src.port(), port, "src is the client side");
    }
    let connects = mine.iter().filter(|x| x.phases.connect.is_some()).count();
    assert_eq!(
        connects, 1,
        "the client's first exchange carries the connect"
    );
}
