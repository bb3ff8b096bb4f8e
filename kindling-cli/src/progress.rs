//! Progress of a long replay on stderr: how much of the file was read.

use std::io::{self, IsTerminal, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// A progress line on stderr for large captures, when stderr is a
/// terminal.
pub struct Progress {
    size: u64,
    read: Arc<AtomicU64>,
    shown: bool,
    enabled: bool,
}

impl Progress {
    /// Progress through a file of `size` bytes.
    pub fn new(size: u64) -> Self {
        Self {
            size,
            read: Arc::default(),
            shown: false,
            enabled: size > 64 << 20 && io::stderr().is_terminal(),
        }
    }

    /// `inner`, counting the bytes read through it for this progress.
    pub fn counting<R>(&self, inner: R) -> Counting<R> {
        Counting {
            inner,
            read: Arc::clone(&self.read),
        }
    }

    pub fn show(&mut self) {
        if self.enabled {
            let read = self.read.load(Ordering::Relaxed);
            let pct = read as f64 * 100.0 / self.size.max(1) as f64;
            eprint!(
                "\rkindling: {pct:5.1}% of {:.0} MiB",
                self.size as f64 / 1048576.0
            );
            self.shown = true;
        }
    }

    pub fn done(&mut self) {
        if self.shown {
            eprintln!();
        }
    }
}

/// A reader that counts the bytes read through it.
pub struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}
