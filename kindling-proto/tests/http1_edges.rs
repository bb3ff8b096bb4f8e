//! HTTP/1 edge cases the recorded peers do not produce, written by hand.

use kindling_proto::http1::{Body, Error, Http1, Message, Redaction, Session};
use kindling_proto::trace::TraceFormat;
use kindling_proto::{Detect, Direction, Protocol, Status};

fn parse<'a>(
    s: &mut Session,
    dir: Direction,
    b: &'a [u8],
) -> Result<Status<(Message<'a>, usize)>, Error> {
    Http1::parse(s, dir, b)
}

fn complete<'a>(s: &mut Session, dir: Direction, b: &'a [u8]) -> (Message<'a>, usize) {
    match parse(s, dir, b) {
        Ok(Status::Complete(x)) => x,
        other => panic!("expected a complete message, got {other:?}"),
    }
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n\
        4;name=value\r\nWiki\r\n5\r\npedia\r\n0;last\r\nExpires: never\r\nX-Sum: 1\r\n\r\nNEXT";
    let (m, used) = complete(&mut Session::default(), Direction::Response, raw);
    let Message::Response(r) = m else { panic!() };
    assert_eq!(
        r.body,
        Body::Chunked {
            data: 9,
            encoded: (raw.len() - 4 - r.head_len) as u64
        }
    );
    assert_eq!(&raw[used..], b"NEXT");
    // every prefix is Partial, never an error
    for cut in 0..used {
        assert!(
            matches!(
                parse(&mut Session::default(), Direction::Response, &raw[..cut]),
                Ok(Status::Partial)
            ),
            "cut {cut}"
        );
    }
}

#[test]
fn bad_chunks_and_lengths_are_errors() {
    let mut s = Session::default();
    let bad_size = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n";
    assert_eq!(
        parse(&mut s, Direction::Response, bad_size).unwrap_err(),
        Error::BadChunk
    );
    let no_crlf = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabXY0\r\n\r\n";
    assert_eq!(
        parse(&mut s, Direction::Response, no_crlf).unwrap_err(),
        Error::BadChunk
    );
    let cl = b"POST / HTTP/1.1\r\nContent-Length: 12abc\r\n\r\n";
    assert_eq!(
        parse(&mut s, Direction::Request, cl).unwrap_err(),
        Error::BadContentLength
    );
    let two = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd";
    assert_eq!(
        parse(&mut s, Direction::Request, two).unwrap_err(),
        Error::BadContentLength
    );
    let same = b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\nabc";
    assert!(matches!(
        parse(&mut s, Direction::Request, same),
        Ok(Status::Complete(_))
    ));
    let te = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
    assert_eq!(
        parse(&mut s, Direction::Request, te).unwrap_err(),
        Error::BadTransferEncoding
    );
    let huge = b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n";
    assert_eq!(
        parse(&mut s, Direction::Response, huge).unwrap_err(),
        Error::BadContentLength
    );
    assert_eq!(
        parse(
            &mut s,
            Direction::Request,
            b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"
        )
        .unwrap_err(),
        Error::BadHead
    );
}

#[test]
fn response_without_length_runs_until_close_and_http10() {
    let raw = b"HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody bytes until the end";
    let (m, used) = complete(&mut Session::default(), Direction::Response, raw);
    let Message::Response(r) = m else { panic!() };
    assert_eq!((r.version, r.body, used), (0, Body::UntilClose, raw.len()));
    let (m, _) = complete(
        &mut Session::default(),
        Direction::Request,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    assert!(matches!(m, Message::Request(r) if r.version == 0 && r.body == Body::None));
}

#[test]
fn bodiless_statuses_ignore_content_length() {
    for status in ["204 No Content", "304 Not Modified", "103 Early Hints"] {
        let raw = format!("HTTP/1.1 {status}\r\nContent-Length: 10\r\n\r\n");
        let (m, used) = complete(&mut Session::default(), Direction::Response, raw.as_bytes());
        assert!(
            matches!(m, Message::Response(r) if r.body == Body::None),
            "{status}"
        );
        assert_eq!(used, raw.len());
    }
}

#[test]
fn upgrade_and_connect_end_http() {
    let mut s = Session::default();
    let req = b"GET /chat HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n";
    let (m, _) = complete(&mut s, Direction::Request, req);
    assert!(matches!(m, Message::Request(r) if r.upgrade() == Some(&b"websocket"[..])));
    let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello";
    let (_, used) = complete(&mut s, Direction::Response, resp);
    assert_eq!(
        &resp[used..],
        b"\x81\x05hello",
        "frames after the 101 are not HTTP"
    );
    assert!(s.is_upgraded());
    assert_eq!(
        parse(&mut s, Direction::Request, b"GET / HTTP/1.1\r\n\r\n").unwrap_err(),
        Error::Upgraded
    );

    let mut s = Session::default();
    complete(
        &mut s,
        Direction::Request,
        b"CONNECT db.internal:5432 HTTP/1.1\r\nHost: db.internal:5432\r\n\r\n",
    );
    complete(
        &mut s,
        Direction::Response,
        b"HTTP/1.1 200 Connection established\r\n\r\n",
    );
    assert!(s.is_upgraded());
}

#[test]
fn pipelined_requests_walk_by_consumed_bytes() {
    let raw = b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nokDELETE /3 HTTP/1.1\r\n\r\n";
    let mut s = Session::default();
    let mut at = 0;
    let mut paths = Vec::new();
    while at < raw.len() {
        let (m, used) = complete(&mut s, Direction::Request, &raw[at..]);
        let Message::Request(r) = m else { panic!() };
        paths.push(format!("{} {}", r.method, r.path()));
        at += used;
    }
    assert_eq!(paths, ["GET /1", "POST /2", "DELETE /3"]);
}

#[test]
fn detection_by_content() {
    use Detect::*;
    let d = |b: &[u8], dir| Http1::detect(b, dir);
    assert_eq!(d(b"PROPFIND /dav HTTP/1.1\r\n", Direction::Request), Match);
    assert_eq!(d(b"PROPFIND /dav", Direction::Request), NeedMore);
    assert_eq!(d(b"GE", Direction::Request), NeedMore);
    assert_eq!(
        d(b"\x16\x03\x01\x02\x00", Direction::Request),
        NoMatch,
        "TLS client hello"
    );
    assert_eq!(
        d(b"*3\r\n$3\r\nSET\r\n", Direction::Request),
        NoMatch,
        "RESP"
    );
    assert_eq!(d(b"\x00\x00\x00\x0a", Direction::Request), NoMatch);
    assert_eq!(d(b"HTTP/2.0 200", Direction::Response), NoMatch);
    assert_eq!(d(b"HTTP/1.1 2", Direction::Response), NeedMore);
    assert_eq!(d(b"", Direction::Response), NeedMore);
}

#[test]
fn records_redact_credentials_and_carry_trace_context() {
    let raw = b"POST /login?user=ann&pw=hunter2 HTTP/1.1\r\nHost: app\r\nCookie: sid=abc\r\n\
        Proxy-Authorization: Basic eDp5\r\nb3: 80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1\r\n\
        Content-Length: 0\r\n\r\n";
    let (m, _) = complete(&mut Session::default(), Direction::Request, raw);
    let Message::Request(r) = m else { panic!() };
    let rec = r.to_record(&Redaction::default());
    // query values are redacted by default: they carry secrets
    assert_eq!(rec.target.as_deref(), Some("/login?user=?&pw=?"));
    let verbatim = r.to_record(&Redaction {
        query_values: false,
        ..Redaction::default()
    });
    assert_eq!(
        verbatim.target.as_deref(),
        Some("/login?user=ann&pw=hunter2")
    );
    let get = |n: &str| {
        rec.headers
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("Cookie"), Some("[REDACTED]"));
    assert_eq!(get("Proxy-Authorization"), Some("[REDACTED]"));
    assert_eq!(get("Host"), Some("app"));
    assert_eq!(rec.trace.as_ref().map(|t| t.format), Some(TraceFormat::B3));
    let keep_user = Redaction {
        keep_query_values: vec!["user".into(), "pw2".into()],
        ..Redaction::default()
    };
    let kept = r.to_record(&keep_user);
    assert_eq!(kept.target.as_deref(), Some("/login?user=ann&pw=?"));
    let attrs = r.attributes(&keep_user);
    assert!(attrs.contains(&("url.query", "user=ann&pw=?".into())));
    let attrs = r.attributes(&Redaction::default());
    assert!(attrs.contains(&("url.query", "user=?&pw=?".into())));
    assert!(attrs.contains(&("http.request.method", "POST".into())));
    assert!(attrs.contains(&("url.path", "/login".into())));
    let json = serde_json::to_string(&rec).unwrap();
    assert!(
        !json.contains("sid=abc") && !json.contains("eDp5") && !json.contains("hunter2"),
        "{json}"
    );
}

#[test]
fn absolute_form_targets_have_paths() {
    let (m, _) = complete(
        &mut Session::default(),
        Direction::Request,
        b"GET http://proxy.test:8080/a/b?c=d HTTP/1.1\r\n\r\n",
    );
    let Message::Request(r) = m else { panic!() };
    assert_eq!((r.path(), r.query()), ("/a/b", Some("c=d")));
}

#[test]
fn a_url_in_the_query_is_not_the_target_s_scheme() {
    let raw = b"GET /login?next=http://example.com/home HTTP/1.1\r\nHost: a\r\n\r\n";
    let Ok(Status::Complete(Message::Request(r))) =
        Http1::parse_head(&mut Default::default(), Direction::Request, raw)
    else {
        panic!("a valid head");
    };
    assert_eq!(r.path(), "/login");
    assert_eq!(r.query(), Some("next=http://example.com/home"));
    let raw = b"GET http://example.com/a/b?c=1 HTTP/1.1\r\nHost: example.com\r\n\r\n";
    let Ok(Status::Complete(Message::Request(r))) =
        Http1::parse_head(&mut Default::default(), Direction::Request, raw)
    else {
        panic!("a valid head");
    };
    assert_eq!(r.path(), "/a/b", "absolute form");
}
