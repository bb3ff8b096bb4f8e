//! HTTP/1 on conversations recorded between nginx and curl / a raw
//! pipelining client (see `fixtures/record-http1.sh`), checked against
//! snapshots, and re-split at arbitrary boundaries.

mod common;

use std::fmt::Write as _;

use common::{byte_by_byte, fixtures, read_conversation, Segment};
use kindling_proto::http1::{Body, Http1, Message};
use kindling_proto::{Direction, Protocol, Status};
use proptest::prelude::*;

fn walk(segments: &[Segment]) -> String {
    common::walk::<Http1>(segments, summarize)
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
    common::check_fixtures("http1", 7, walk, |name, summary| {
        insta::assert_snapshot!(name, summary)
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn any_segmentation_parses_the_same(mut cuts in proptest::collection::vec(0usize..20_000, 0..6)) {
        cuts.sort_unstable();
        common::same_after_resplit("http1", &cuts, walk)?;
    }

    #[test]
    fn byte_by_byte_is_the_same(idx in 0usize..7) {
        let files = fixtures("http1");
        let segs = read_conversation(&files[idx % files.len()]);
        prop_assert_eq!(walk(&byte_by_byte(&segs)), walk(&segs));
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
