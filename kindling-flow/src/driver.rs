//! Driving a [`Pipeline`]: when to tick it, what to tell it about losses,
//! and reading a capture file into it. One policy for every caller, so
//! `kindling replay`, `kindling watch`, the tests, the fuzz target, the
//! benches and a library user get the same answer from the same input.
//!
//! ```text
//!  capture file ─► Replay ─(decode)─┐
//!                                   ├─► Driver ─► Pipeline ─► outputs
//!  probe ring buffer ─(decode)──────┘     │
//!                                         ├ replay: tick once per second of event time
//!                                         └ live:   tick on the caller's clock, losses from the probe's counters
//! ```
//!
//! The driver stays sans-IO: a live caller passes the time and the probe's
//! loss counter in; a [`Replay`] reads from any [`Read`] its caller opened.

use std::io::Read;

use kindling_probe::abi::{self, DecodeError, Event};
use kindling_probe::capture::{CaptureError, CaptureHeader, CaptureReader};

use crate::{Config, Output, Pipeline, Stats};

/// Event time between two ticks of a [`Driver::replay`]: one second, as
/// `kindling replay` has always ticked.
pub const TICK_INTERVAL_NS: u64 = 1_000_000_000;

/// A [`Pipeline`] with the tick and loss policy of `kindling replay`
/// ([`Driver::replay`]: ticks on event time) or of `kindling watch`
/// ([`Driver::live`]: ticks on the caller's clock).
///
/// It costs one comparison per event over calling the pipeline directly.
///
/// # Examples
///
/// ```
/// use kindling_flow::{Config, Driver};
/// use kindling_probe::capture::CaptureReader;
///
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/http1.kcap");
/// let mut reader = CaptureReader::new(std::io::BufReader::new(std::fs::File::open(path)?))?;
/// let mut driver = Driver::replay(Config::from_capture(reader.header()));
/// let mut out = Vec::new();
/// while let Some(record) = reader.next_record()? {
///     driver.push_record(record, &mut out)?;
/// }
/// driver.finish(&mut out);
/// assert_eq!(driver.stats().exchanges, 20);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Driver {
    pipeline: Pipeline,
    /// Event time at or after which the next event ticks.
    next_tick_ns: u64,
    /// Whether events tick at all (replay) or only the caller does (live).
    event_time: bool,
    /// The probe's loss counter when last told (live).
    lost_total: u64,
}

impl Driver {
    /// Replaying recorded events: the first event ticks the pipeline at its
    /// own time, then the first event at least [`TICK_INTERVAL_NS`] after
    /// the last tick, so a replay expires requests and idle connections
    /// as the capture's clock says, however fast it is read. Loss markers
    /// in the input reach the pipeline as events.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_flow::{Config, Driver};
    ///
    /// let mut driver = Driver::replay(Config::default());
    /// let mut out = Vec::new();
    /// // for each decoded event: driver.push(&event, &mut out);
    /// driver.finish(&mut out);
    /// assert!(out.is_empty());
    /// ```
    pub fn replay(config: Config) -> Self {
        Self {
            pipeline: Pipeline::new(config),
            next_tick_ns: 0,
            event_time: true,
            lost_total: 0,
        }
    }

    /// Live events: pushing never ticks; the caller calls [`Driver::tick`]
    /// with the probe's clock (`CLOCK_BOOTTIME`) and
    /// [`Driver::note_lost_total`] with the probe's loss counter after each
    /// poll of the ring buffer, so that a quiet host still expires what
    /// waits.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_flow::{Config, Driver};
    ///
    /// let mut driver = Driver::live(Config::default());
    /// let mut out = Vec::new();
    /// // after each poll that pushed the events it read:
    /// driver.tick(5_000_000_000, &mut out);
    /// driver.note_lost_total(3); // LossStats::lost_records() of the probe
    /// driver.note_lost_total(3); // no new loss
    /// assert_eq!(driver.stats().events_lost, 3);
    /// ```
    pub fn live(config: Config) -> Self {
        Self {
            next_tick_ns: u64::MAX,
            event_time: false,
            ..Self::replay(config)
        }
    }

    /// Feeds one event, then ticks if the replay's clock says so; outputs
    /// land in `out`. Returns whether it ticked.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_flow::{Config, Driver};
    /// use kindling_probe::abi::{decode, RawLost};
    ///
    /// let mut driver = Driver::replay(Config::default());
    /// let mut out = Vec::new();
    /// let marker = RawLost::new(2, 7_000_000_000); // a loss marker at t = 7 s
    /// let event = decode(zerocopy::IntoBytes::as_bytes(&marker))?;
    /// assert!(driver.push(&event, &mut out), "the first event ticks");
    /// assert!(!driver.push(&event, &mut out), "not again in the same second");
    /// assert_eq!(driver.stats().events_lost, 4);
    /// # Ok::<(), kindling_probe::abi::DecodeError>(())
    /// ```
    #[inline]
    pub fn push(&mut self, event: &Event<'_>, out: &mut Vec<Output>) -> bool {
        self.pipeline.push(event, out);
        let ts = event.header().ts_ns.get();
        if ts < self.next_tick_ns || !self.event_time {
            return false;
        }
        self.pipeline.tick(ts, out);
        self.next_tick_ns = ts.saturating_add(TICK_INTERVAL_NS);
        true
    }

    /// Decodes one raw record (as the kernel wrote it, from a capture or
    /// the ring buffer) and [pushes](Driver::push) it. A record that does
    /// not decode is not pushed.
    ///
    /// # Examples
    ///
    /// ```
    /// use kindling_flow::{Config, Driver};
    ///
    /// let mut driver = Driver::replay(Config::default());
    /// assert!(driver.push_record(b"not a record", &mut Vec::new()).is_err());
    /// assert_eq!(driver.stats().events, 0);
    /// ```
    #[inline]
    pub fn push_record(
        &mut self,
        record: &[u8],
        out: &mut Vec<Output>,
    ) -> Result<bool, DecodeError> {
        Ok(self.push(&abi::decode(record)?, out))
    }

    /// Expires what waited too long as of `now_ns` (`CLOCK_BOOTTIME`, the
    /// probe's clock): the live clock, or an extra tick of a replay (its
    /// own ticks keep their schedule).
    pub fn tick(&mut self, now_ns: u64, out: &mut Vec<Output>) {
        self.pipeline.tick(now_ns, out);
    }

    /// Live: the probe's running count of lost records
    /// (`LossStats::lost_records`); what it grew by since the last call is
    /// handed to [`Pipeline::note_lost`], which drops what was in flight.
    pub fn note_lost_total(&mut self, total: u64) {
        self.pipeline
            .note_lost(total.saturating_sub(self.lost_total));
        self.lost_total = total;
    }

    /// Ends the input ([`Pipeline::finish`]).
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        self.pipeline.finish(out);
    }

    /// Clears `out`, keeping what it owns for the next outputs
    /// ([`Pipeline::reuse`]).
    pub fn reuse(&mut self, out: &mut Vec<Output>) {
        self.pipeline.reuse(out);
    }

    /// The pipeline's counters so far.
    pub fn stats(&self) -> Stats {
        self.pipeline.stats()
    }

    /// The pipeline driven.
    pub fn pipeline(&self) -> &Pipeline {
        &self.pipeline
    }
}

/// One record a [`Replay`] pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Step {
    /// The event's time (`CLOCK_BOOTTIME` of the recording host, ns).
    pub ts_ns: u64,
    /// Whether the pipeline ticked after it.
    pub ticked: bool,
}

/// A capture file through a [`Driver::replay`]: reads a record, decodes it
/// and pushes it, one [`step`](Replay::step) at a time, so the caller
/// handles the outputs of each record as they come (and can stop early).
/// Records that do not decode are skipped and counted.
///
/// # Examples
///
/// ```
/// use kindling_flow::{Config, Output, Replay};
/// use kindling_probe::capture::CaptureReader;
///
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/http1.kcap");
/// let reader = CaptureReader::new(std::io::BufReader::new(std::fs::File::open(path)?))?;
/// let config = Config {
///     rtt_records: true,
///     ..Config::from_capture(reader.header())
/// };
/// let mut replay = Replay::new(reader, config);
/// let mut out = Vec::new();
/// let mut exchanges = 0;
/// while replay.step(&mut out)?.is_some() {
///     exchanges += out.iter().filter(|o| matches!(o, Output::Exchange(_))).count();
///     replay.reuse(&mut out);
/// }
/// replay.finish(&mut out);
/// exchanges += out.iter().filter(|o| matches!(o, Output::Exchange(_))).count();
/// assert_eq!(exchanges, 20);
/// assert_eq!(replay.undecodable(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Replay<R: Read> {
    reader: CaptureReader<R>,
    driver: Driver,
    first_ts_ns: Option<u64>,
    undecodable: u64,
}

impl<R: Read> Replay<R> {
    /// Replays what `reader` holds into a pipeline with `config` (usually
    /// built on [`Config::from_capture`] of the reader's header).
    pub fn new(reader: CaptureReader<R>, config: Config) -> Self {
        Self {
            reader,
            driver: Driver::replay(config),
            first_ts_ns: None,
            undecodable: 0,
        }
    }

    /// Pushes the next decodable record; `Ok(None)` at the end of the file.
    /// A damaged file ends with an error after every complete record before
    /// the damage ([`CaptureError::Truncated`] for a recorder that was
    /// killed); later calls return `Ok(None)`.
    pub fn step(&mut self, out: &mut Vec<Output>) -> Result<Option<Step>, CaptureError> {
        while let Some(record) = self.reader.next_record()? {
            let Ok(event) = abi::decode(record) else {
                self.undecodable += 1;
                continue;
            };
            let ts_ns = event.header().ts_ns.get();
            self.first_ts_ns.get_or_insert(ts_ns);
            let ticked = self.driver.push(&event, out);
            return Ok(Some(Step { ts_ns, ticked }));
        }
        Ok(None)
    }

    /// Ends the input ([`Pipeline::finish`]).
    pub fn finish(&mut self, out: &mut Vec<Output>) {
        self.driver.finish(out);
    }

    /// Clears `out`, keeping what it owns for the next outputs.
    pub fn reuse(&mut self, out: &mut Vec<Output>) {
        self.driver.reuse(out);
    }

    /// The capture's header.
    pub fn header(&self) -> &CaptureHeader {
        self.reader.header()
    }

    /// Time of the first event pushed, the origin of relative times.
    pub fn first_ts_ns(&self) -> Option<u64> {
        self.first_ts_ns
    }

    /// Records skipped because they did not decode.
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// The pipeline's counters so far.
    pub fn stats(&self) -> Stats {
        self.driver.stats()
    }

    /// The driver.
    pub fn driver(&self) -> &Driver {
        &self.driver
    }
}
