//! HTTP/1 on conversations recorded between nginx and curl / a raw
//! pipelining client (see `fixtures/record-http1.sh`), checked against
//! snapshots, and re-split at arbitrary boundaries.

mod common;

use std::fmt::Write as _;

use common::{fixtures, read_conversation, Segment};
use kindling_proto::http1::{Body, Http1, Message};
use kindling_proto::{Direction, Protocol, Status};
use proptest::prelude::*;

/// Feeds segments in capture order into one buffer per direction and
/// parses every complete message; returns one summary line per message and
/// the bytes left unparsed per direction.
fn walk(segments: &[Segment]) -> String {
    let mut session = Default::default();
    let mut bufs: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut out = String::new();
    for seg in segments {
        let i = usize::from(seg.dir == Direction::Response);
        bufs[i].extend_from_slice(&seg.bytes);
        loop {
            match Http1::parse(&mut session, seg.dir, &bufs[i]) {
                Ok(Status::Complete((msg, used))) => {
                    summarize(&mut out, &msg);
                    bufs[i].drain(..used);
                }
                Ok(Status::Partial) => break,
                Err(e) => {
                    writeln!(out, "error: {e}").unwrap();
                    bufs[i].clear();
                    break;
                }
            }
        }
    }
    writeln!(
        out,
        "unparsed: request {} B, response {} B",
        bufs[0].len(),
        bufs[1].len()
    )
    .unwrap();
    out
}

fn body(b: &Body) -> String {
    match b {
        Body::None => "no body".into(),
        Body::Length(n) => format!("{n} B"),
        Body::Chunked { data, encoded } => format!("chunked {data} B in {encoded} B"),
        Body::UntilClose => "until close".into(),
    }
}

fn summarize(out: &mut String, msg: &Message<'_>) {
    match msg {
        Message::Request(r) => {
            let mut extra = String::new();
            if let Some(tp) = r.headers.get("traceparent") {
                write!(extra, " traceparent={}", String::from_utf8_lossy(tp)).unwrap();
            }
            if r.expects_continue() {
                extra.push_str(" expect-continue");
            }
            writeln!(
                out,
                "> {} {} HTTP/1.{} host={} headers={} body={}{extra}",
                r.method,
                r.path(),
                r.version,
                String::from_utf8_lossy(r.headers.get("host").unwrap_or(b"-")),
                r.headers.len(),
                body(&r.body)
            )
            .unwrap();
        }
        Message::Response(r) => {
            writeln!(
                out,
                "< {} {} HTTP/1.{} type={} headers={} body={}{}",
                r.status,
                r.reason,
                r.version,
                String::from_utf8_lossy(r.headers.get("content-type").unwrap_or(b"-")),
                r.headers.len(),
                body(&r.body),
                if r.is_interim() { " interim" } else { "" }
            )
            .unwrap();
        }
    }
}

#[test]
fn recorded_conversations_match_snapshots() {
    let files = fixtures("http1");
    assert!(files.len() >= 7, "fixtures missing: {files:?}");
    for f in files {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let summary = walk(&read_conversation(&f));
        assert!(
            summary.ends_with("unparsed: request 0 B, response 0 B\n"),
            "{name}:\n{summary}"
        );
        insta::assert_snapshot!(name, summary);
    }
}

/// Splits the concatenation of same-direction runs at the given cut points,
/// keeping direction order: the parse must not depend on segment sizes.
fn resplit(segments: &[Segment], cuts: &[usize]) -> Vec<Segment> {
    let mut out = Vec::new();
    for seg in segments {
        let mut start = 0;
        for &c in cuts {
            let c = c % (seg.bytes.len() + 1);
            if c > start {
                out.push(Segment {
                    dir: seg.dir,
                    bytes: seg.bytes[start..c].to_vec(),
                });
                start = c;
            }
        }
        out.push(Segment {
            dir: seg.dir,
            bytes: seg.bytes[start..].to_vec(),
        });
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_segmentation_parses_the_same(mut cuts in proptest::collection::vec(0usize..20_000, 0..6)) {
        cuts.sort_unstable();
        for f in fixtures("http1") {
            let segs = read_conversation(&f);
            prop_assert_eq!(walk(&resplit(&segs, &cuts)), walk(&segs));
        }
    }

    #[test]
    fn byte_by_byte_is_the_same(idx in 0usize..7) {
        let files = fixtures("http1");
        let segs = read_conversation(&files[idx % files.len()]);
        let one_byte: Vec<Segment> = segs
            .iter()
            .flat_map(|s| s.bytes.iter().map(move |&b| Segment { dir: s.dir, bytes: vec![b] }))
            .collect();
        prop_assert_eq!(walk(&one_byte), walk(&segs));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600), resp in any::<bool>()) {
        let dir = if resp { Direction::Response } else { Direction::Request };
        let mut s = Default::default();
        let _ = Http1::detect(&bytes, dir);
        if let Ok(Status::Complete((_, used))) = Http1::parse(&mut s, dir, &bytes) {
            prop_assert!(used <= bytes.len());
        }
    }
}
