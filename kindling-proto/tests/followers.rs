//! The streaming followers (`http1::BodyReader`, `redis::Skipper`,
//! `mysql::ResultSetReader`) must find the same message ends as the full
//! parsers, on every recorded fixture, however the bytes are cut.

mod common;

use common::{fixtures, read_conversation, Segment};
use kindling_proto::http1::{self, BodyReader, Http1};
use kindling_proto::mysql::{self, MySql, ResultSetReader};
use kindling_proto::redis::{Message as RespMessage, Redis, Skipper};
use kindling_proto::{Direction, Follower, Protocol, Status};
use proptest::prelude::*;

/// The bytes of each direction and the messages the full parser found:
/// `(direction, start, end, extra)` where `extra` is protocol-specific.
type Found = Vec<(Direction, usize, usize, u64)>;

fn streams(segments: &[Segment]) -> [Vec<u8>; 2] {
    let mut s = [Vec::new(), Vec::new()];
    for seg in segments {
        s[usize::from(seg.dir == Direction::Response)].extend_from_slice(&seg.bytes);
    }
    s
}

/// Walks both directions in capture order with `P`, recording message
/// spans; `extra` picks what to compare.
fn found<P: Protocol>(
    segments: &[Segment],
    extra: impl Fn(&P::Message<'_>, &[u8]) -> Option<u64>,
) -> Found {
    let mut session = P::Session::default();
    let all = streams(segments);
    let mut fed = [0usize; 2];
    let mut at = [0usize; 2];
    let mut out = Vec::new();
    for seg in segments {
        let i = usize::from(seg.dir == Direction::Response);
        fed[i] += seg.bytes.len();
        while let Ok(Status::Complete((m, used))) =
            P::parse(&mut session, seg.dir, &all[i][at[i]..fed[i]])
        {
            if let Some(x) = extra(&m, &all[i][at[i]..at[i] + used]) {
                out.push((seg.dir, at[i], at[i] + used, x));
            }
            at[i] += used;
        }
    }
    out
}

/// A chunked body's decoded size; `u64::MAX` for any other framing (whose
/// size the head tells, not the reader).
fn body_data(body: http1::Body) -> u64 {
    match body {
        http1::Body::Chunked { data, .. } => data,
        _ => u64::MAX,
    }
}

/// Feeds `bytes` in pieces cut at `cuts` (fractions), returning where the
/// follower said the message ended, relative to `bytes`.
fn follow(
    bytes: &[u8],
    cuts: &[f64],
    mut feed: impl FnMut(&[u8]) -> Option<usize>,
) -> Option<usize> {
    let mut points: Vec<usize> = cuts
        .iter()
        .map(|c| (c * bytes.len() as f64) as usize)
        .collect();
    points.push(bytes.len());
    points.sort_unstable();
    let mut from = 0;
    for to in points {
        if to <= from {
            continue;
        }
        if let Some(n) = feed(&bytes[from..to]) {
            return Some(from + n);
        }
        from = to;
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn redis_skipper_ends_where_the_parser_does(cuts in prop::collection::vec(0.0f64..1.0, 0..6)) {
        for path in fixtures("redis") {
            let segs = read_conversation(&path);
            let all = streams(&segs);
            let msgs = found::<Redis>(&segs, |m, _| match m {
                RespMessage::Reply(r) => Some(r.size as u64),
                RespMessage::Command(c) if !c.inline => Some(0),
                RespMessage::Command(_) => None,
            });
            for (dir, start, end, _) in msgs {
                let i = usize::from(dir == Direction::Response);
                // the message plus what follows it: the skipper must stop at the end
                let bytes = &all[i][start..];
                let mut s = Skipper::new();
                let got = follow(bytes, &cuts, |b| s.feed(b).expect("valid RESP"));
                prop_assert_eq!(got, Some(end - start), "{}", path.display());
            }
        }
    }

    #[test]
    fn http_body_reader_ends_where_the_parser_does(cuts in prop::collection::vec(0.0f64..1.0, 0..6)) {
        for path in fixtures("http1") {
            let segs = read_conversation(&path);
            let all = streams(&segs);
            let msgs = found::<Http1>(&segs, |m, _| Some(match m {
                http1::Message::Request(r) => r.head_len as u64,
                http1::Message::Response(r) => r.head_len as u64,
            }));
            // the decoded size of each chunked body, as the full parser read it
            let chunked = found::<Http1>(&segs, |m, _| Some(match m {
                http1::Message::Request(r) => body_data(r.body),
                http1::Message::Response(r) => body_data(r.body),
            }));
            // bodies framed as the parser framed them: re-parse heads in order
            let mut session = http1::Session::default();
            for ((dir, start, end, head_len), (.., data)) in msgs.into_iter().zip(chunked) {
                let i = usize::from(dir == Direction::Response);
                let Ok(Status::Complete(m)) = Http1::parse_head(&mut session, dir, &all[i][start..]) else {
                    panic!("head");
                };
                let body = match m {
                    http1::Message::Request(r) => r.body,
                    http1::Message::Response(r) => r.body,
                };
                let body_start = start + head_len as usize;
                let mut r = BodyReader::new(body);
                let got = if r.is_done() {
                    Some(0)
                } else {
                    follow(&all[i][body_start..], &cuts, |b| r.feed(b).expect("valid body"))
                };
                prop_assert_eq!(got, Some(end - body_start), "{}", path.display());
                // the size a head read alone could not tell, the reader does
                let mut told = Vec::new();
                r.write_attributes(dir, &mut told);
                let size = told.iter().find(|(k, _)| k.ends_with("body.size"));
                let expected = (data != u64::MAX).then(|| data.to_string());
                prop_assert_eq!(size.map(|(_, v)| v.clone()), expected, "{}", path.display());
            }
        }
    }

    #[test]
    fn mysql_reader_counts_rows_like_the_parser(cuts in prop::collection::vec(0.0f64..1.0, 0..6)) {
        for path in fixtures("mysql") {
            let segs = read_conversation(&path);
            let all = streams(&segs);
            let msgs = found::<MySql>(&segs, |m, _| match m {
                mysql::Message::Response(mysql::Response::ResultSet { rows, .. }) => Some(*rows),
                _ => None,
            });
            prop_assert!(!msgs.is_empty());
            for (_, start, end, rows) in msgs {
                // the fixtures negotiate CLIENT_DEPRECATE_EOF or not: try the
                // framing that ends where the parser ended
                let bytes = &all[1][start..];
                let got = [false, true].into_iter().find_map(|deprecate| {
                    let mut r = ResultSetReader::new(deprecate);
                    let end_at = follow(bytes, &cuts, |b| r.feed(b).ok().flatten())?;
                    (end_at == end - start).then_some(r.rows())
                });
                prop_assert_eq!(got, Some(rows), "{}", path.display());
            }
        }
    }
}

#[test]
fn followers_skip_uncaptured_payload_but_not_framing() {
    let mut r = BodyReader::new(http1::Body::Length(100));
    assert_eq!(r.feed(b"0123456789").unwrap(), None);
    r.skip_unseen(80).unwrap();
    assert_eq!(r.feed(b"0123456789next").unwrap(), Some(10));
    let mut r = BodyReader::new(http1::Body::Chunked {
        data: 0,
        encoded: 0,
    });
    assert!(r.skip_unseen(5).is_err(), "inside a size line");

    let mut s = Skipper::new();
    assert_eq!(s.feed(b"$100\r\n0123").unwrap(), None);
    assert_eq!(s.skip_unseen(90).unwrap(), 90);
    // the string, its CRLF and the reply end 8 bytes into the next 10
    // unseen ones: its end is known, the 2 after it are the next reply's
    assert_eq!(s.skip_unseen(10).unwrap(), 8);
    assert!(s.is_done());
    let mut s = Skipper::new();
    assert_eq!(s.feed(b"*2\r\n$100\r\n0123").unwrap(), None);
    assert!(
        s.skip_unseen(200).is_err(),
        "the next element's header was not seen"
    );
    let mut r = BodyReader::new(http1::Body::Length(100));
    assert_eq!(r.skip_unseen(150).unwrap(), 100, "ends at its length");
    assert!(r.is_done());

    let mut m = ResultSetReader::new(true);
    assert_eq!(
        m.feed(&[1, 0, 0, 1, 1, 3, 0, 0, 2, b'd', b'e', b'f', 100, 0, 0, 3, 1])
            .unwrap(),
        None
    );
    m.skip_unseen(99).unwrap();
    assert!(m.skip_unseen(1).is_err());
}
