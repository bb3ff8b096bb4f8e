//! Any bytes as a DNS datagram and as a TCP stream: no panic, iterators
//! terminate, names render, progress on TCP.
#![no_main]

use kindling_proto::dns::{Dns, Message, Session};
use kindling_proto::{Direction, Protocol, Status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Dns::detect(data, Direction::Request);
    let _ = Dns::detect(data, Direction::Response);
    if let Ok(m) = Message::parse(data) {
        for q in m.questions() {
            let _ = q.name.to_string();
        }
        for r in m.answers().chain(m.authorities()).chain(m.additionals()) {
            let _ = r.name.to_string();
            let _ = format!("{:?}", r.data);
        }
        let _ = m.attributes();
    }
    let mut s = Session::tcp();
    let mut at = 0;
    while at < data.len() {
        match Dns::parse(&mut s, Direction::Response, &data[at..]) {
            Ok(Status::Complete((_, used))) => {
                assert!(used > 0 && at + used <= data.len());
                at += used;
            }
            _ => break,
        }
    }
});
