//! Slow answers, long polls and server-sent events on the real kernel: a
//! request answered after the response timeout is reported as still
//! waiting (not an error) and then paired with its late answer; a stream
//! whose head came at once is never reported as waiting. Needs root;
//! without it the test skips with a reason, except under `CI=true`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::thread::sleep;
use std::time::Duration;

mod common;

use common::live::{self, Drain};
use kindling_flow::{Config, Exchange, Role};
use kindling_probe::ProbeBuilder;

/// Reads a request head; its target, or `None` at the end of the stream.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut start = String::new();
    if reader.read_line(&mut start).unwrap() == 0 {
        return None;
    }
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        if h == "\r\n" {
            break;
        }
    }
    start.split(' ').nth(1).map(str::to_owned)
}

/// One keep-alive connection: `/slow` and `/poll` answer late, `/events`
/// streams five events 150 ms apart.
fn serve(listener: TcpListener) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut conn = conn;
        while let Some(target) = read_request(&mut reader) {
            match target.as_str() {
                "/events" => {
                    conn.write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                    )
                    .unwrap();
                    for i in 0..5 {
                        sleep(Duration::from_millis(150));
                        let event = format!("data: {i}\n\n");
                        write!(conn, "{:x}\r\n{event}\r\n", event.len()).unwrap();
                    }
                    conn.write_all(b"0\r\n\r\n").unwrap();
                }
                late => {
                    sleep(Duration::from_millis(if late == "/slow" {
                        700
                    } else {
                        900
                    }));
                    conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nlate\n")
                        .unwrap();
                }
            }
        }
    })
}

/// Reads a response, Content-Length or chunked.
fn read_response(reader: &mut BufReader<TcpStream>) -> String {
    let mut start = String::new();
    reader.read_line(&mut start).unwrap();
    let (mut length, mut chunked) = (0, false);
    loop {
        let mut h = String::new();
        reader.read_line(&mut h).unwrap();
        let lower = h.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap();
        }
        chunked |= lower.starts_with("transfer-encoding: chunked");
        if h == "\r\n" {
            break;
        }
    }
    if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut data = vec![0; n + 2];
            reader.read_exact(&mut data).unwrap();
            if n == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
    }
    start
}

#[test]
fn late_answers_and_streams_are_not_errors() {
    if !live::ready("late_answers_and_streams_are_not_errors", &[]) {
        return;
    }
    let mut probe = live::load(ProbeBuilder::new().trace_self(true).pid(std::process::id()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = serve(listener);
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::new(client.try_clone().unwrap());
    let mut client = client;
    for target in ["/slow", "/events", "/poll"] {
        write!(client, "GET {target} HTTP/1.1\r\nHost: live\r\n\r\n").unwrap();
        assert!(read_response(&mut reader).contains("200"), "{target}");
    }
    drop(reader);
    drop(client);
    server.join().unwrap();

    // a short response timeout, so that the late answers outlast it
    let timeout = 300_000_000;
    let mut pipeline = live::pipeline(Config {
        response_timeout_ns: timeout,
        ..Config::default()
    });
    // ticks every 50 ms of event time, as a live agent would
    let how = Drain {
        tick_ns: Some(50_000_000),
        ..Drain::default()
    };
    let out = live::drain(&mut probe, &mut pipeline, how, || true, |_| {});
    let mine = live::exchanges(&out, |x| x.dst.port() == port);
    assert!(mine.iter().all(|x| x.error.is_none()), "{mine:#?}");
    for role in [Role::Client, Role::Server] {
        let of = |path: &str, pending: bool| -> Vec<&Exchange> {
            mine.iter()
                .copied()
                .filter(|x| {
                    x.role == role
                        && x.pending == pending
                        && x.attributes.get("url.path") == Some(path)
                })
                .collect()
        };
        for late in ["/slow", "/poll"] {
            let (waiting, answered) = (of(late, true), of(late, false));
            assert_eq!(
                (waiting.len(), answered.len()),
                (1, 1),
                "{role:?} {late}: {mine:#?}"
            );
            assert!(waiting[0].phases.wait > timeout && waiting[0].response_bytes == 0);
            assert_eq!(
                answered[0].attributes.get("http.response.status_code"),
                Some("200")
            );
            assert!(
                answered[0].slow && answered[0].phases.wait >= 600_000_000,
                "{answered:?}"
            );
        }
        let (waiting, stream) = (of("/events", true), of("/events", false));
        assert!(
            waiting.is_empty(),
            "a stream whose head came is answered: {waiting:#?}"
        );
        assert_eq!(stream.len(), 1, "{role:?}: {mine:#?}");
        let stream = stream[0];
        assert!(
            stream.phases.wait < timeout,
            "time to first byte: {stream:?}"
        );
        assert!(stream.phases.download >= 600_000_000, "{stream:?}");
        assert_eq!(
            stream.attributes.get("http.response.header.content-type"),
            Some("text/event-stream")
        );
    }
    let stats = pipeline.stats();
    assert_eq!(
        (stats.unpaired_responses, stats.requests_dropped),
        (0, 0),
        "{stats:?}"
    );
}

/// Two 1 MB chunked responses (4 kB chunks) on one keep-alive connection,
/// at the default settings: far more than the capture length per syscall,
/// but within the framing budget, so every chunk-size line is read: each
/// exchange keeps its head's status, is no error, and has its exact body
/// size, from both ends.
#[test]
fn large_chunked_responses_keep_their_status() {
    if !live::ready("large_chunked_responses_keep_their_status", &[]) {
        return;
    }
    let mut probe = live::load(ProbeBuilder::new().trace_self(true).pid(std::process::id()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut reader = BufReader::new(conn.try_clone().unwrap());
        let mut conn = conn;
        let chunk = vec![b'x'; 4096];
        while read_request(&mut reader).is_some() {
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
                .unwrap();
            for _ in 0..256 {
                write!(conn, "{:x}\r\n", chunk.len()).unwrap();
                conn.write_all(&chunk).unwrap();
                conn.write_all(b"\r\n").unwrap();
            }
            conn.write_all(b"0\r\n\r\n").unwrap();
        }
    });
    let client = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut reader = BufReader::with_capacity(256 << 10, client.try_clone().unwrap());
    let mut client = client;
    for _ in 0..2 {
        client
            .write_all(b"GET /download HTTP/1.1\r\nHost: live\r\n\r\n")
            .unwrap();
        assert!(read_response(&mut reader).contains("200"));
    }
    drop(reader);
    drop(client);
    server.join().unwrap();

    let mut pipeline = live::pipeline(Config::default());
    let out = live::drain(&mut probe, &mut pipeline, Drain::default(), || true, |_| {});
    let mine = live::exchanges(&out, |x| x.dst.port() == port);
    // the chunked body on the wire: 256 × (size line, data, CRLF) and the end
    let body_wire = 256 * (5 + 4096 + 2) + 5;
    for role in [Role::Client, Role::Server] {
        let of_role: Vec<_> = mine.iter().filter(|x| x.role == role).collect();
        assert_eq!(of_role.len(), 2, "{role:?}: {mine:#?}");
        for x in of_role {
            assert_eq!(x.error, None, "{x:?}");
            assert_eq!(
                x.attributes.get("http.response.status_code"),
                Some("200"),
                "{x:?}"
            );
            assert_eq!(
                x.attributes.get("http.response.header.content-type"),
                Some("application/octet-stream")
            );
            assert!(
                x.response_bytes >= body_wire,
                "sizes from the syscalls: {x:?}"
            );
            // the framing budget captured every chunk-size line
            assert!(!x.partial, "{x:?}");
            assert_eq!(
                x.attributes.get("http.response.body.size"),
                Some("1048576"),
                "{x:?}"
            );
        }
    }
}

/// Who closed first with a request unanswered. A client that gives up
/// early (closes 50 ms after asking, well under the slow threshold) has
/// its request `cancelled`, no error, from both ends; a server that closes
/// without answering leaves a `no_response` that is not `cancelled`.
#[test]
fn a_client_giving_up_is_no_error_a_server_hanging_up_is() {
    if !live::ready("a_client_giving_up_is_no_error_a_server_hanging_up_is", &[]) {
        return;
    }
    let mut probe = live::load(ProbeBuilder::new().trace_self(true).pid(std::process::id()));
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        for _ in 0..2 {
            let (conn, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let target = read_request(&mut reader).unwrap();
            if target == "/wait-for-client" {
                // never answers; the client leaves first
                assert!(read_request(&mut reader).is_none());
            }
            drop(conn); // "/hang-up": closes without answering
        }
    });
    for target in ["/wait-for-client", "/hang-up"] {
        let mut client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(client, "GET {target} HTTP/1.1\r\nHost: live\r\n\r\n").unwrap();
        if target == "/hang-up" {
            // waits for the server's close
            let mut rest = Vec::new();
            let _ = client.read_to_end(&mut rest);
        } else {
            sleep(Duration::from_millis(50));
        }
        drop(client);
    }
    server.join().unwrap();

    let mut pipeline = live::pipeline(Config::default());
    let out = live::drain(&mut probe, &mut pipeline, Drain::default(), || true, |_| {});
    let mine = live::exchanges(&out, |x| x.dst.port() == port);
    let seen: Vec<String> = {
        let mut v: Vec<String> = mine
            .iter()
            .map(|x| {
                format!(
                    "{:?} {} error={:?} cancelled={}",
                    x.role,
                    x.attributes.get("url.path").unwrap_or("-"),
                    x.error,
                    x.cancelled
                )
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        seen,
        [
            "Client /hang-up error=Some(NoResponse) cancelled=false",
            "Client /wait-for-client error=None cancelled=true",
            "Server /hang-up error=Some(NoResponse) cancelled=false",
            "Server /wait-for-client error=None cancelled=true",
        ],
        "{mine:#?}"
    );
}
