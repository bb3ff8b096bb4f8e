//! Any bytes as a MySQL conversation: the first byte picks the starting
//! phase, the rest alternates directions per packet-sized chunk. No panic,
//! progress, bounded state.
#![no_main]

use kindling_proto::mysql::{Message, MySql, Session};
use kindling_proto::{Direction, Follower, Protocol, Status};
use libfuzzer_sys::fuzz_target;

#[path = "follow.rs"]
mod follow;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else { return };
    let mut s = if first & 1 == 0 { Session::default() } else { Session::in_command_phase() };
    let _ = MySql::detect(rest, Direction::Request);
    let _ = MySql::detect(rest, Direction::Response);
    let _ = MySql::resync(rest, Direction::Request);
    let _ = Session::for_first(rest, Direction::Request);
    let mut at = 0;
    let mut dir = if first & 2 == 0 { Direction::Response } else { Direction::Request };
    let mut stalls = 0;
    while at < rest.len() && stalls < 2 {
        match MySql::parse(&mut s, dir, &rest[at..]) {
            Ok(Status::Complete((m, used))) => {
                assert!(used > 0 && at + used <= rest.len());
                if let Message::Command(c) = m {
                    let _ = c.attributes(&s);
                }
                at += used;
                stalls = 0;
            }
            _ => stalls += 1,
        }
        dir = if dir == Direction::Request { Direction::Response } else { Direction::Request };
    }

    // The streaming result-set reader on the same bytes, cut in two.
    let reader = std::cell::RefCell::new(kindling_proto::mysql::ResultSetReader::new(first & 4 != 0));
    follow::in_two_parts(
        rest,
        usize::from(first >> 3),
        u64::from(first & 3),
        |part| reader.borrow_mut().feed(part),
        |n| {
            let _ = reader.borrow_mut().skip_unseen(n);
        },
    );
});
