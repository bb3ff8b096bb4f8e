//! An async (tokio) face of [`Probe`] (feature `tokio`).
//!
//! The ring buffer's epoll fd is registered with tokio's reactor; because the
//! kernel side batches wake-ups, a flush interval also drains what arrived
//! below the wake-up threshold.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::abi::Event;
use crate::{Probe, ProbeError};

struct EpollFd(RawFd);

impl AsRawFd for EpollFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A [`Probe`] driven by a tokio runtime.
///
/// # Examples
///
/// ```no_run
/// use kindling_probe::{AsyncProbe, ProbeBuilder};
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let mut probe = AsyncProbe::new(ProbeBuilder::new().port(80).load()?)?;
/// loop {
///     probe.next_batch(|event| println!("{event:?}")).await?;
/// }
/// # }
/// ```
pub struct AsyncProbe {
    // Declared before `probe`, so it is dropped (deregistered) before the
    // ring buffer that owns the descriptor closes it.
    fd: AsyncFd<EpollFd>,
    probe: Probe,
    flush: Duration,
}

impl std::fmt::Debug for AsyncProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncProbe")
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

impl AsyncProbe {
    /// Registers the probe's ring buffer with the current tokio runtime.
    /// Records below the wake-up threshold are delivered within 100 ms.
    pub fn new(probe: Probe) -> std::io::Result<Self> {
        // SAFETY: the epoll descriptor belongs to the probe's ring buffer,
        // which `Self` owns and drops only after this AsyncFd (field order);
        // it stays open and unchanged for the AsyncFd's whole life.
        let fd = unsafe {
            AsyncFd::register_with_interest(EpollFd(probe.epoll_fd()), Interest::READABLE)
        }
        .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            fd,
            probe,
            flush: Duration::from_millis(100),
        })
    }

    /// Sets the longest time a record may wait below the wake-up threshold.
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.flush = every;
        self
    }

    /// Waits until records are available (or the flush interval passes),
    /// then hands each to `on_event`. Returns how many were delivered
    /// (possibly 0 after a quiet flush interval).
    pub async fn next_batch(
        &mut self,
        on_event: impl FnMut(Event<'_>),
    ) -> Result<usize, ProbeError> {
        if let Ok(ready) = tokio::time::timeout(self.flush, self.fd.readable()).await {
            let mut guard = ready.map_err(|e| ProbeError::Config(format!("tokio reactor: {e}")))?;
            guard.clear_ready();
        }
        self.probe.poll(Duration::ZERO, on_event)
    }

    /// The underlying probe (loss counters, configuration).
    pub fn probe(&self) -> &Probe {
        &self.probe
    }
}
