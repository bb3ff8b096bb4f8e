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
