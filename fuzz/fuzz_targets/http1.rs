//! Any bytes as an HTTP/1 stream in either direction, walked message by
//! message the way a connection tracker does: no panic, progress always,
//! never past the input; records and attributes of what parses.
#![no_main]

use kindling_proto::http1::{Http1, Message, Redaction};
use kindling_proto::{Direction, Follower, Protocol, Status};
use libfuzzer_sys::fuzz_target;

#[path = "follow.rs"]
mod follow;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let dir = if first & 1 == 0 { Direction::Request } else { Direction::Response };
    let _ = Http1::detect(rest, dir);
    let mut session = Default::default();
    let mut at = 0;
    while at < rest.len() {
        match Http1::parse(&mut session, dir, &rest[at..]) {
            Ok(Status::Complete((msg, used))) => {
                assert!(used > 0 && at + used <= rest.len());
                match msg {
                    Message::Request(r) => {
                        let _ = r.to_record(&Redaction { credentials: true, query_values: true, ..Default::default() });
                        let _ = r.attributes(&Redaction::default());
                    }
                    Message::Response(r) => {
                        let _ = r.to_record(&Redaction::default());
                        let _ = r.attributes();
                    }
                }
                at += used;
            }
            Ok(Status::Partial) | Err(_) => break,
        }
    }

    // Resynchronisation and the streaming body reader on the same bytes.
    if let Some(at) = Http1::resync(rest, dir) {
        assert!(at < rest.len());
    }
    let body = match first >> 1 & 3 {
        0 => kindling_proto::http1::Body::Length(u64::from(first)),
        1 => kindling_proto::http1::Body::UntilClose,
        _ => kindling_proto::http1::Body::Chunked { data: 0, encoded: 0 },
    };
    let reader = std::cell::RefCell::new(kindling_proto::http1::BodyReader::new(body));
    follow::in_two_parts(
        rest,
        usize::from(first >> 3),
        u64::from(first & 7),
        |part| reader.borrow_mut().feed(part),
        |n| {
            let _ = reader.borrow_mut().skip_unseen(n);
        },
    );
});
