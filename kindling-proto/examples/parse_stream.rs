//! Walks a pipelined Redis byte stream and prints each command's sanitised
//! text and the OpenTelemetry attributes a tracer would attach.
//!
//! `cargo run -p kindling-proto --example parse_stream`

use kindling_proto::redis::{Message, Redis};
use kindling_proto::{Direction, Protocol, Status};

fn main() {
    let stream = b"*3\r\n$3\r\nSET\r\n$6\r\nuser:1\r\n$3\r\nann\r\n*2\r\n$3\r\nGET\r\n$6\r\nuser:1\r\n*2\r\n$4\r\nAUTH\r\n$6\r\nsecret\r\n";
    let mut session = Default::default();
    let mut at = 0;
    while at < stream.len() {
        match Redis::parse(&mut session, Direction::Request, &stream[at..]) {
            Ok(Status::Complete((Message::Command(cmd), used))) => {
                println!("{:<16} {:?}", cmd.query_text(), cmd.attributes());
                at += used;
            }
            Ok(Status::Complete((Message::Reply(_), used))) => at += used,
            Ok(Status::Partial) => break,
            Err(e) => {
                eprintln!("not RESP: {e}");
                break;
            }
        }
    }
}
