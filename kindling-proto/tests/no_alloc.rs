//! Parsing allocates nothing: a counting global allocator watches the parse
//! of a real request head recorded from curl, and of a response.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use kindling_proto::http1::{Http1, Message};
use kindling_proto::{Detect, Direction, Protocol, Status};

struct Counting;

thread_local! {
    /// Allocations made by this thread: tests run in parallel threads, and
    /// only the parsing thread's own allocations count.
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn allocs() -> usize {
    ALLOCS.with(Cell::get)
}

fn count() {
    // try_with: the thread-local may already be gone while a thread exits.
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const REQUEST: &[u8] =
    b"POST /api/echo HTTP/1.1\r\nHost: 127.0.0.1:18181\r\nUser-Agent: curl/7.88.1\r\n\
Accept: */*\r\nContent-Type: application/json\r\nAuthorization: Bearer s3cr3t\r\n\
traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\nContent-Length: 19\r\n\r\n\
{\"name\":\"kindling\"}";
const RESPONSE: &[u8] =
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nTransfer-Encoding: chunked\r\n\r\n\
5\r\nhello\r\n0\r\n\r\n";

#[test]
fn resp_command_and_reply_parse_do_not_allocate() {
    use kindling_proto::redis::{Message as Resp, Redis};
    let cmd = b"*3\r\n$3\r\nSET\r\n$6\r\nuser:1\r\n$3\r\nann\r\n";
    let reply = b"%2\r\n+first\r\n:1\r\n+second\r\n*2\r\n:1\r\n_\r\n";
    let mut session = Default::default();
    let before = allocs();
    let c = Redis::parse(&mut session, Direction::Request, cmd);
    let r = Redis::parse(&mut session, Direction::Response, reply);
    let after = allocs();
    assert_eq!(after - before, 0, "allocations while parsing");
    assert!(
        matches!(c, Ok(Status::Complete((Resp::Command(c), n))) if c.key == Some(&b"user:1"[..]) && n == cmd.len())
    );
    assert!(matches!(r, Ok(Status::Complete((Resp::Reply(_), n))) if n == reply.len()));
}

#[test]
fn dns_query_and_response_parse_do_not_allocate() {
    use kindling_proto::dns::Message as Dns;
    // recorded from dig -> dnsmasq (tests/fixtures/dns): www.example.test A, with EDNS
    let query = b"\x9d3\x01 \x00\x01\x00\x00\x00\x00\x00\x01\x03www\x07example\x04test\x00\x00\x01\x00\x01\x00\x00)\x04\xd0\x00\x00\x00\x00\x00\x0c\x00\n\x00\x08+a\x16}3\xce\x11\x91";
    let before = allocs();
    let m = Dns::parse(query).expect("query");
    let q = m.first_question().expect("question");
    let matches = q.name.eq_str("www.example.test");
    let after = allocs();
    assert_eq!(after - before, 0, "allocations while parsing");
    assert!(matches && q.qtype == 1 && m.header.id() == 0x9d33);
}

#[test]
fn mysql_com_query_parse_does_not_allocate() {
    use kindling_proto::mysql::{Command, Message as My, MySql, Session};
    let q = b"\x2e\x00\x00\x00\x03SELECT id, name FROM users WHERE name = 'ann'";
    let mut session = Session::in_command_phase();
    let before = allocs();
    let r = MySql::parse(&mut session, Direction::Request, q);
    let after = allocs();
    assert_eq!(after - before, 0, "allocations while parsing");
    assert!(
        matches!(r, Ok(Status::Complete((My::Command(Command::Query(sql)), n))) if sql.starts_with(b"SELECT") && n == q.len())
    );
}

#[test]
fn http_head_parse_and_accessors_do_not_allocate() {
    let mut session = Default::default();
    let before = allocs();
    assert_eq!(Http1::detect(REQUEST, Direction::Request), Detect::Match);
    let Ok(Status::Complete((Message::Request(r), used))) =
        Http1::parse(&mut session, Direction::Request, REQUEST)
    else {
        panic!("request")
    };
    let trace = r.headers.trace_context().expect("traceparent");
    let host = r.headers.get("host");
    let Ok(Status::Complete((Message::Response(resp), _))) =
        Http1::parse(&mut session, Direction::Response, RESPONSE)
    else {
        panic!("response")
    };
    let after = allocs();
    assert_eq!(after - before, 0, "allocations while parsing");
    assert_eq!(
        (used, r.path(), host, trace.span_id),
        (
            REQUEST.len(),
            "/api/echo",
            Some(&b"127.0.0.1:18181"[..]),
            "00f067aa0ba902b7"
        )
    );
    assert_eq!(resp.status, 200);
}
