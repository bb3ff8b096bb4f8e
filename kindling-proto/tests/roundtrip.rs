//! Generated messages round-trip: a message built from random parts and
//! written in its wire format parses back to the same parts, uses exactly
//! its bytes, and the streaming followers end where it ends.

use kindling_proto::dns::{Message as DnsMessage, RData};
use kindling_proto::http1::{self, BodyReader, Http1, Message as HttpMessage};
use kindling_proto::mysql::{self, Command, MySql, ResultSetReader};
use kindling_proto::redis::{self, Kind, Message as RespMessage, Redis, Skipper};
use kindling_proto::{Direction, Follower, Protocol, Status};
use proptest::prelude::*;

fn parse_one<P: Protocol>(dir: Direction, bytes: &[u8]) -> (P::Message<'_>, usize)
where
    for<'a> P::Message<'a>: std::fmt::Debug,
{
    match P::parse(&mut P::Session::default(), dir, bytes) {
        Ok(Status::Complete(m)) => m,
        other => panic!("{other:?} on {:?}", String::from_utf8_lossy(bytes)),
    }
}

/// A RESP3 value of bounded depth, and its wire form.
fn resp_value() -> impl Strategy<Value = Vec<u8>> {
    let leaf = prop_oneof![
        "[a-zA-Z0-9 ]{0,12}".prop_map(|s| format!("+{s}\r\n").into_bytes()),
        any::<i64>().prop_map(|n| format!(":{n}\r\n").into_bytes()),
        prop::collection::vec(any::<u8>(), 0..40).prop_map(|b| {
            let mut v = format!("${}\r\n", b.len()).into_bytes();
            v.extend_from_slice(&b);
            v.extend_from_slice(b"\r\n");
            v
        }),
        Just(b"_\r\n".to_vec()),
        any::<bool>().prop_map(|b| if b {
            b"#t\r\n".to_vec()
        } else {
            b"#f\r\n".to_vec()
        }),
        any::<f64>().prop_map(|d| format!(",{d}\r\n").into_bytes()),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        (
            prop::sample::select(vec![b'*', b'~', b'%', b'>']),
            prop::collection::vec(inner, 0..6),
        )
            .prop_map(|(t, items)| {
                let items = if t == b'%' && items.len() % 2 == 1 {
                    &items[1..]
                } else {
                    &items[..]
                };
                let n = if t == b'%' {
                    items.len() / 2
                } else {
                    items.len()
                };
                let mut v = format!("{}{n}\r\n", t as char).into_bytes();
                items.iter().for_each(|i| v.extend_from_slice(i));
                v
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn resp_commands_round_trip(
        name in "[A-Z]{1,10}",
        key in "[a-z0-9:_]{1,16}",
        rest in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..30), 0..5),
    ) {
        // container commands (CLIENT SETNAME …) count their subcommand apart
        let containers = ["ACL", "CLIENT", "CLUSTER", "COMMAND", "CONFIG", "DEBUG", "FUNCTION",
            "LATENCY", "MEMORY", "MODULE", "OBJECT", "PUBSUB", "SCRIPT", "SLOWLOG", "XGROUP", "XINFO"];
        prop_assume!(!containers.contains(&name.as_str()));
        let mut words = vec![name.clone().into_bytes(), key.clone().into_bytes()];
        words.extend(rest.iter().cloned());
        let mut wire = format!("*{}\r\n", words.len()).into_bytes();
        for w in &words {
            wire.extend_from_slice(format!("${}\r\n", w.len()).as_bytes());
            wire.extend_from_slice(w);
            wire.extend_from_slice(b"\r\n");
        }
        let (m, used) = parse_one::<Redis>(Direction::Request, &wire);
        prop_assert_eq!(used, wire.len());
        let RespMessage::Command(c) = m else { panic!("a command") };
        prop_assert_eq!(c.name, name.as_bytes());
        prop_assert_eq!(c.args as usize + 1, words.len());
        let mut s = Skipper::new();
        prop_assert_eq!(s.feed(&wire).unwrap(), Some(wire.len()));
    }

    #[test]
    fn resp_replies_round_trip(value in resp_value(), tail in "[a-z]{0,4}") {
        let mut wire = value.clone();
        wire.extend_from_slice(tail.as_bytes());
        let (m, used) = parse_one::<Redis>(Direction::Response, &wire);
        prop_assert_eq!(used, value.len());
        let RespMessage::Reply(r) = m else { panic!("a reply") };
        let expected = match value[0] {
            b'+' => Kind::SimpleString,
            b':' => Kind::Integer,
            b'$' => Kind::BulkString,
            b'_' => Kind::Null,
            b'#' => Kind::Boolean,
            b',' => Kind::Double,
            b'*' => Kind::Array,
            b'~' => Kind::Set,
            b'%' => Kind::Map,
            _ => Kind::Push,
        };
        prop_assert_eq!(r.kind, expected);
        // the follower, in two pieces, ends at the same byte
        let cut = value.len() / 2;
        let mut s = Skipper::new();
        let first = s.feed(&wire[..cut]).unwrap();
        let end = match first {
            Some(n) => n,
            None => cut + s.feed(&wire[cut..]).unwrap().expect("ends"),
        };
        prop_assert_eq!(end, value.len());
        prop_assert_eq!(s.kind(), Some(expected));
    }

    #[test]
    fn http_messages_round_trip(
        method in prop::sample::select(vec!["GET", "POST", "PUT", "PATCH", "DELETE", "PROPFIND"]),
        segments in prop::collection::vec("[a-z0-9_-]{1,8}", 0..5),
        headers in prop::collection::vec(("[A-Za-z][A-Za-z0-9-]{0,12}", "[ -~]{0,20}"), 0..6),
        body in prop::collection::vec(any::<u8>(), 0..300),
        chunk in 1usize..64,
        chunked in any::<bool>(),
    ) {
        let path = format!("/{}", segments.join("/"));
        let mut wire = format!("{method} {path} HTTP/1.1\r\nHost: example.test\r\n").into_bytes();
        for (n, v) in headers.iter().filter(|(n, _)| {
            !n.eq_ignore_ascii_case("content-length") && !n.eq_ignore_ascii_case("transfer-encoding")
        }) {
            wire.extend_from_slice(format!("X-{n}: {}\r\n", v.trim()).as_bytes());
        }
        let mut encoded = Vec::new();
        if chunked {
            wire.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for c in body.chunks(chunk) {
                encoded.extend_from_slice(format!("{:x};ext=1\r\n", c.len()).as_bytes());
                encoded.extend_from_slice(c);
                encoded.extend_from_slice(b"\r\n");
            }
            encoded.extend_from_slice(b"0\r\nTrailer: yes\r\n\r\n");
        } else {
            wire.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            encoded.extend_from_slice(&body);
        }
        let head_len = wire.len();
        wire.extend_from_slice(&encoded);
        let (m, used) = parse_one::<Http1>(Direction::Request, &wire);
        prop_assert_eq!(used, wire.len());
        let HttpMessage::Request(r) = m else { panic!("a request") };
        prop_assert_eq!((r.method, r.path(), r.head_len), (method, path.as_str(), head_len));
        prop_assert_eq!(r.headers.get("host"), Some(&b"example.test"[..]));
        for (n, v) in &headers {
            let name = format!("x-{n}");
            if let Some(got) = r.headers.get(&name) {
                // the first header of that name, trimmed
                let first = headers
                    .iter()
                    .find(|(m, _)| m.eq_ignore_ascii_case(n))
                    .map(|(_, v)| v.trim())
                    .unwrap();
                prop_assert_eq!(got, first.as_bytes(), "{}: {}", name, v);
            }
        }
        let data = match r.body {
            http1::Body::Chunked { data, encoded: e } => {
                prop_assert_eq!(e as usize, encoded.len());
                data
            }
            http1::Body::Length(n) => n,
            http1::Body::None => 0,
            http1::Body::UntilClose => unreachable!(),
        };
        prop_assert_eq!(data as usize, body.len());
        let mut reader = BodyReader::new(r.body);
        let end = if reader.is_done() { Some(0) } else { reader.feed(&encoded).unwrap() };
        prop_assert_eq!(end, Some(encoded.len()));
        prop_assert_eq!(reader.data() as usize, body.len());
    }

    #[test]
    fn dns_messages_round_trip(
        id in any::<u16>(),
        labels in prop::collection::vec("[a-z0-9-]{1,20}", 1..5),
        v4 in prop::collection::vec(any::<[u8; 4]>(), 0..4),
        response in any::<bool>(),
        rcode in 0u8..6,
    ) {
        let mut m = id.to_be_bytes().to_vec();
        let flags: u16 = if response { 0x8180 | u16::from(rcode) } else { 0x0100 };
        m.extend_from_slice(&flags.to_be_bytes());
        let answers = if response { v4.len() as u16 } else { 0 };
        m.extend_from_slice(&[0, 1]);
        m.extend_from_slice(&answers.to_be_bytes());
        m.extend_from_slice(&[0, 0, 0, 0]);
        for l in &labels {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        if response {
            for a in &v4 {
                m.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
                m.extend_from_slice(a);
            }
        }
        let msg = DnsMessage::parse(&m).unwrap();
        prop_assert_eq!(msg.header.id(), id);
        prop_assert_eq!(msg.header.is_response(), response);
        let q = msg.first_question().unwrap();
        prop_assert_eq!(q.name.to_string(), labels.join("."));
        prop_assert_eq!(q.qtype, 1);
        if response {
            prop_assert_eq!(u16::from(msg.header.rcode()), u16::from(rcode));
            let got: Vec<[u8; 4]> = msg
                .answers()
                .filter_map(|r| match r.data {
                    RData::A(a) => Some(a.octets()),
                    _ => None,
                })
                .collect();
            prop_assert_eq!(got, v4);
        }
    }

    #[test]
    fn mysql_queries_and_result_sets_round_trip(
        sql in "[ -~]{1,200}",
        columns in 1usize..6,
        rows in prop::collection::vec(prop::collection::vec("[a-z0-9]{0,20}", 1..6), 0..30),
        deprecate_eof in any::<bool>(),
    ) {
        let packet = |seq: u8, payload: &[u8]| {
            let n = payload.len();
            let mut p = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
            p.extend_from_slice(payload);
            p
        };
        let mut query = vec![0x03];
        query.extend_from_slice(sql.as_bytes());
        let wire = packet(0, &query);
        let mut session = mysql::Session::in_command_phase();
        let Ok(Status::Complete((mysql::Message::Command(Command::Query(q)), used))) =
            MySql::parse(&mut session, Direction::Request, &wire)
        else {
            panic!("a query")
        };
        prop_assert_eq!((q, used), (sql.as_bytes(), wire.len()));

        let mut rs = packet(1, &[columns as u8]);
        let mut seq = 2u8;
        for c in 0..columns {
            let def = format!("\x03def\x04shop\x01t\x01t\x02c{c}\x02c{c}");
            rs.extend(packet(seq, def.as_bytes()));
            seq = seq.wrapping_add(1);
        }
        if !deprecate_eof {
            rs.extend(packet(seq, &[0xfe, 0, 0, 2, 0]));
            seq = seq.wrapping_add(1);
        }
        for row in &rows {
            let mut payload = Vec::new();
            for v in row.iter().cycle().take(columns) {
                payload.push(v.len() as u8);
                payload.extend_from_slice(v.as_bytes());
            }
            rs.extend(packet(seq, &payload));
            seq = seq.wrapping_add(1);
        }
        let end: &[u8] = if deprecate_eof { &[0xfe, 0, 0, 2, 0, 0, 0] } else { &[0xfe, 0, 0, 2, 0] };
        rs.extend(packet(seq, end));
        let mut reader = ResultSetReader::new(deprecate_eof);
        let cut = rs.len() / 3;
        let first = reader.feed(&rs[..cut]).unwrap();
        let done = match first {
            Some(n) => n,
            None => cut + reader.feed(&rs[cut..]).unwrap().expect("ends"),
        };
        prop_assert_eq!(done, rs.len());
        prop_assert_eq!(reader.rows() as usize, rows.len());
    }
}

#[test]
fn generated_redis_values_include_every_aggregate() {
    // a guard that the strategy above really nests: one literal example
    let wire = b"%1\r\n+k\r\n*2\r\n~1\r\n:1\r\n>1\r\n$0\r\n\r\n";
    let (m, used) = parse_one::<Redis>(Direction::Response, wire);
    assert_eq!(used, wire.len());
    assert!(matches!(
        m,
        RespMessage::Reply(redis::Reply {
            kind: Kind::Map,
            ..
        })
    ));
}
