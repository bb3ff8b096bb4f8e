//! Conversation fixtures: one captured segment per line, `>` sent by the
//! client, `<` received by it, payload escaped (printable ASCII, `\r \n \t
//! \\`, `\xNN`).

#![allow(dead_code, reason = "each test binary uses a subset")]

use std::path::{Path, PathBuf};

use kindling_proto::Direction;

/// One captured segment.
#[derive(Clone, Debug)]
pub struct Segment {
    pub dir: Direction,
    pub bytes: Vec<u8>,
}

/// Undoes the escaping.
pub fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            match b[i + 1] {
                b'r' => out.push(b'\r'),
                b'n' => out.push(b'\n'),
                b't' => out.push(b'\t'),
                b'\\' => out.push(b'\\'),
                b'x' if i + 3 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 2..i + 4]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 2;
                }
                other => panic!("bad escape \\{}", other as char),
            }
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

pub fn read_conversation(path: &Path) -> Vec<Segment> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (dir, rest) = match l.split_at_checked(2)? {
                ("> ", rest) => (Direction::Request, rest),
                ("< ", rest) => (Direction::Response, rest),
                _ => return None,
            };
            Some(Segment {
                dir,
                bytes: unescape(rest),
            })
        })
        .collect()
}

/// Every `.conv` file under `tests/fixtures/<dir>`, sorted.
pub fn fixtures(dir: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let mut v: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "conv"))
        .collect();
    v.sort();
    v
}

/// Feeds segments in capture order into one buffer per direction and parses
/// every complete message, the way a connection tracker does; returns one
/// summary line per message (from `summarize`) and the bytes left unparsed.
pub fn walk<P: kindling_proto::Protocol>(
    segments: &[Segment],
    summarize: impl Fn(&mut String, &P::Message<'_>),
) -> String {
    walk_with::<P>(P::Session::default(), segments, summarize)
}

/// [`walk`] starting from a given session (e.g. DNS over TCP).
pub fn walk_with<P: kindling_proto::Protocol>(
    mut session: P::Session,
    segments: &[Segment],
    summarize: impl Fn(&mut String, &P::Message<'_>),
) -> String {
    use std::fmt::Write as _;

    let mut bufs: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut out = String::new();
    for seg in segments {
        let i = usize::from(seg.dir == Direction::Response);
        bufs[i].extend_from_slice(&seg.bytes);
        loop {
            // None = need more bytes; Some(None) = error, drop the buffer.
            let step = match P::parse(&mut session, seg.dir, &bufs[i]) {
                Ok(kindling_proto::Status::Complete((msg, used))) => {
                    summarize(&mut out, &msg);
                    Some(Some(used))
                }
                Ok(kindling_proto::Status::Partial) => None,
                Err(e) => {
                    writeln!(out, "error: {e}").unwrap();
                    Some(None)
                }
            };
            match step {
                Some(Some(used)) => {
                    bufs[i].drain(..used);
                }
                Some(None) => {
                    bufs[i].clear();
                    break;
                }
                None => break,
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

/// The same segments cut again at `cuts` (modulo each segment's length).
pub fn resplit(segments: &[Segment], cuts: &[usize]) -> Vec<Segment> {
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

/// Every segment cut into single bytes.
pub fn byte_by_byte(segments: &[Segment]) -> Vec<Segment> {
    segments
        .iter()
        .flat_map(|s| {
            s.bytes.iter().map(move |&b| Segment {
                dir: s.dir,
                bytes: vec![b],
            })
        })
        .collect()
}

/// The property every parser must have: walking the fixtures of `dir`
/// re-cut at `cuts` gives the same result as walking them as captured.
pub fn same_after_resplit(
    dir: &str,
    cuts: &[usize],
    walk: impl Fn(&[Segment]) -> String,
) -> Result<(), proptest::test_runner::TestCaseError> {
    for f in fixtures(dir) {
        let segs = read_conversation(&f);
        proptest::prop_assert_eq!(walk(&resplit(&segs, cuts)), walk(&segs), "{}", f.display());
    }
    Ok(())
}

/// Walks every conversation of `tests/fixtures/<dir>` (at least `min` of
/// them), checks that nothing was left unparsed, and hands each file's name
/// and summary to `check` — where the caller asserts its snapshot, so the
/// snapshot keeps the caller's name.
pub fn check_fixtures(
    dir: &str,
    min: usize,
    walk: impl Fn(&[Segment]) -> String,
    mut check: impl FnMut(&str, &str),
) {
    let files = fixtures(dir);
    assert!(files.len() >= min, "fixtures missing: {files:?}");
    for f in files {
        let name = f.file_stem().unwrap().to_string_lossy().into_owned();
        let summary = walk(&read_conversation(&f));
        assert!(
            summary.ends_with("unparsed: request 0 B, response 0 B\n"),
            "{name}:\n{summary}"
        );
        check(&name, &summary);
    }
}
