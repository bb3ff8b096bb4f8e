//! `--json-out PATH|-`: exchanges and TCP records as JSON lines (the
//! `replay -o json` schema), to standard output or to a file rotated by
//! size: PATH → PATH.1 → … → PATH.{keep}, the oldest dropped.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Where the lines go, counting bytes for rotation.
pub struct Sink {
    out: Box<dyn Write + Send>,
    /// The file and its limits; `None` for standard output.
    file: Option<Rotation>,
    written: u64,
}

struct Rotation {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
}

impl Sink {
    /// `-` is standard output; anything else a file, appended to, rotated
    /// once it holds `max_bytes` (checked between batches, so that no line
    /// is split: a file ends a batch past the limit at most).
    pub fn open(target: &str, max_bytes: u64, keep: u32) -> io::Result<Self> {
        if target == "-" {
            return Ok(Self {
                out: Box::new(BufWriter::new(io::stdout())),
                file: None,
                written: 0,
            });
        }
        let path = PathBuf::from(target);
        let file = open(&path)?;
        let written = file.metadata()?.len();
        Ok(Self {
            out: Box::new(BufWriter::new(file)),
            file: Some(Rotation {
                path,
                max_bytes: max_bytes.max(1),
                keep: keep.max(1),
            }),
            written,
        })
    }

    /// Flushes, and starts a new file if this one is full.
    pub fn end_batch(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let Some(r) = &self.file else {
            return Ok(());
        };
        if self.written < r.max_bytes {
            return Ok(());
        }
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", r.path.display()));
        for n in (1..r.keep).rev() {
            let from = numbered(n);
            if from.exists() {
                std::fs::rename(&from, numbered(n + 1))?;
            }
        }
        std::fs::rename(&r.path, numbered(1))?;
        self.out = Box::new(BufWriter::new(open(&r.path)?));
        self.written = 0;
        Ok(())
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.write(buf)?;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Created for the owner and its group only: redacted, but still who
/// talked to whom.
fn open(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_between_batches_and_keeps_so_many_files() {
        let dir = std::env::temp_dir().join(format!("kindling-json-out-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.jsonl");
        let mut sink = Sink::open(path.to_str().unwrap(), 10, 2).unwrap();
        for batch in 0..5 {
            writeln!(sink, "{{\"batch\":{batch}}}").unwrap();
            sink.end_batch().unwrap();
        }
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
        // every batch filled a file: the newest two are kept besides the
        // (empty) current one
        assert_eq!(read(path.clone()), "");
        assert_eq!(read(dir.join("x.jsonl.1")), "{\"batch\":4}\n");
        assert_eq!(read(dir.join("x.jsonl.2")), "{\"batch\":3}\n");
        assert!(!dir.join("x.jsonl.3").exists());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
