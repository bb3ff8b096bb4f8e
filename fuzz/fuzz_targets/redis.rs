//! Any bytes as a RESP stream in either direction, walked message by
//! message: no panic, progress, never past the input.
#![no_main]

use kindling_proto::redis::{Message, Redis};
use kindling_proto::{Direction, Follower, Protocol, Status};
use libfuzzer_sys::fuzz_target;

#[path = "follow.rs"]
mod follow;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let dir = if first & 1 == 0 { Direction::Request } else { Direction::Response };
    let _ = Redis::detect(rest, dir);
    let mut session = Default::default();
    let mut at = 0;
    while at < rest.len() {
        match Redis::parse(&mut session, dir, &rest[at..]) {
            Ok(Status::Complete((msg, used))) => {
                assert!(used > 0 && at + used <= rest.len());
                match msg {
                    Message::Command(c) => {
                        let _ = c.attributes();
                    }
                    Message::Reply(r) => {
                        let _ = r.error_code();
                    }
                }
                at += used;
            }
            Ok(Status::Partial) | Err(_) => break,
        }
    }

    // The streaming follower on the same bytes, cut in two.
    let s = std::cell::RefCell::new(kindling_proto::redis::Skipper::new());
    follow::in_two_parts(
        rest,
        usize::from(first >> 1),
        u64::from(first & 7),
        |part| s.borrow_mut().feed(part),
        |n| {
            let _ = s.borrow_mut().skip_unseen(n);
        },
    );
});
