//! The `.kcap` capture file: what `kindling record` writes and `kindling
//! replay` reads.
//!
//! ```text
//! preamble  18 B   "KINDLING" | format u16 LE | abi u16 LE | byte order u8 | 0 u8 | header_len u32 LE
//! header    N B    JSON CaptureHeader (host facts, probe config, struct sizes)
//!           4 B    CRC-32 of the JSON, LE
//! record*          len u32 LE | CRC-32 u32 LE | len bytes exactly as the kernel emitted them
//! ```
//!
//! Records keep the kernel's byte order; the preamble names it, and a reader
//! on a host of the other order refuses the file rather than misread it.
//! Writing is streaming: a recorder killed at any point leaves a file whose
//! complete records all read back, followed by a [`CaptureError::Truncated`].
//!
//! # Examples
//!
//! ```
//! use kindling_probe::capture::{CaptureHeader, CaptureReader, CaptureWriter};
//!
//! let mut file = Vec::new();
//! let mut w = CaptureWriter::new(&mut file, &CaptureHeader::for_this_host(Default::default()))?;
//! w.write_record(b"not a real record, any bytes are framed")?;
//! w.finish()?;
//!
//! let mut r = CaptureReader::new(&file[..])?;
//! assert_eq!(r.next_record()?.unwrap(), b"not a real record, any bytes are framed");
//! assert!(r.next_record()?.is_none());
//! # Ok::<(), kindling_probe::capture::CaptureError>(())
//! ```

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Read, Write};

use crate::abi;
use crate::ProbeConfig;

/// First bytes of every capture file.
pub const MAGIC: &[u8; 8] = b"KINDLING";
/// Version of the container format (preamble, header, framing).
pub const FORMAT_VERSION: u16 = 1;
/// Largest record a reader accepts; anything larger is corruption.
pub const MAX_RECORD: u32 = 1 << 20;
/// Largest JSON header a reader accepts.
pub const MAX_HEADER: u32 = 1 << 20;

const PREAMBLE_LEN: usize = 18;
const BYTE_ORDER_LITTLE: u8 = 1;
const BYTE_ORDER_BIG: u8 = 2;

fn host_byte_order() -> u8 {
    if cfg!(target_endian = "little") {
        BYTE_ORDER_LITTLE
    } else {
        BYTE_ORDER_BIG
    }
}

/// Why a capture file cannot be read (further).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// Not a Kindling capture.
    #[error("not a kindling capture file (bad magic)")]
    BadMagic,
    /// Written by a newer or unknown format version.
    #[error("capture format version {0} is not supported (this build reads {FORMAT_VERSION})")]
    UnsupportedFormat(u16),
    /// Records use another event ABI version.
    #[error("capture holds event ABI version {found}; this build decodes version {expected}")]
    AbiMismatch {
        /// In the file.
        found: u16,
        /// This build's.
        expected: u16,
    },
    /// Written on a host of the other byte order.
    #[error("capture was written with another byte order; replay it on a host of the same kind")]
    ByteOrder,
    /// The header is damaged or inconsistent.
    #[error("capture header is invalid: {0}")]
    BadHeader(String),
    /// The file ends inside a record: every record before `offset` was complete.
    #[error("capture is truncated at byte {offset} after {records} complete records")]
    Truncated {
        /// Byte offset where the incomplete record starts.
        offset: u64,
        /// Records read before it.
        records: u64,
    },
    /// A record frame is damaged: every record before `offset` was intact.
    #[error("capture is corrupt at byte {offset} after {records} records: {reason}")]
    Corrupt {
        /// Byte offset of the damaged frame.
        offset: u64,
        /// Records read before it.
        records: u64,
        /// What was wrong.
        reason: &'static str,
    },
    /// Reading or writing failed.
    #[error("capture i/o failed")]
    Io(#[from] io::Error),
}

/// Facts about the recording host.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostFacts {
    /// `hostname`.
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
    /// Add to a record's `CLOCK_BOOTTIME` timestamp to get Unix-epoch ns.
    pub boottime_to_unix_ns: i64,
    /// When recording started, Unix-epoch ns.
    pub started_unix_ns: i64,
    /// Names of the kernel's packet drop reasons by number (they differ
    /// between kernels); empty in captures that did not record them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drop_reasons: BTreeMap<u32, String>,
    /// Inode of the host's network namespace (PID 1's), which records'
    /// [`abi::SockTuple::netns`] name; `None` in older captures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_netns: Option<u32>,
}

/// The self-describing header that follows the preamble.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CaptureHeader {
    /// Container format version.
    pub format_version: u16,
    /// Event ABI version of the records.
    pub abi_version: u16,
    /// Size of every ABI struct, by C name; checked on read.
    pub struct_sizes: BTreeMap<String, u32>,
    /// Recording host.
    pub host: HostFacts,
    /// Probe settings (snaplen, filters) in force.
    pub probe: ProbeConfig,
    /// Name and version of the writing tool.
    pub writer: String,
}

/// The layouts of ABI 1: every body was 8 bytes shorter, its `ke_sock`
/// without `netns`. [`CaptureReader`] upgrades such records as it reads.
fn abi1_struct_sizes() -> BTreeMap<String, u32> {
    struct_sizes()
        .into_iter()
        .map(|(k, v)| {
            let v = if k == "ke_header" { v } else { v - 8 };
            (k, v)
        })
        .collect()
}

fn struct_sizes() -> BTreeMap<String, u32> {
    [
        ("ke_header", size_of::<abi::RecordHeader>()),
        ("ke_sock", size_of::<abi::SockTuple>()),
        ("ke_data", size_of::<abi::RawData>()),
        ("ke_conn", size_of::<abi::RawConn>()),
        ("ke_tcp", size_of::<abi::RawTcp>()),
        ("ke_drop", size_of::<abi::RawDrop>()),
        ("ke_lost", size_of::<abi::RawLost>()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v as u32))
    .collect()
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec * 1_000_000_000 + ts.tv_nsec
}

/// `CLOCK_REALTIME - CLOCK_BOOTTIME` now, in ns: converts probe timestamps
/// to Unix time.
pub fn boottime_to_unix_ns() -> i64 {
    // Read realtime between two boottime reads to halve the skew.
    let b1 = clock_ns(libc::CLOCK_BOOTTIME);
    let rt = clock_ns(libc::CLOCK_REALTIME);
    let b2 = clock_ns(libc::CLOCK_BOOTTIME);
    rt - (b1 + (b2 - b1) / 2)
}

/// Inode of the host's network namespace: PID 1's (an agent in a pod sees
/// the host's PID 1 with `hostPID`), else this process' own.
pub fn host_netns() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    ["/proc/1/ns/net", "/proc/self/ns/net"]
        .iter()
        .find_map(|p| std::fs::metadata(p).ok())
        .and_then(|m| u32::try_from(m.ino()).ok())
}

impl CaptureHeader {
    /// A header describing this host now and the given probe settings.
    pub fn for_this_host(probe: ProbeConfig) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Self {
            format_version: FORMAT_VERSION,
            abi_version: abi::ABI_VERSION,
            struct_sizes: struct_sizes(),
            host: HostFacts {
                hostname,
                kernel,
                boottime_to_unix_ns: boottime_to_unix_ns(),
                started_unix_ns: clock_ns(libc::CLOCK_REALTIME),
                drop_reasons: BTreeMap::new(),
                host_netns: host_netns(),
            },
            probe,
            writer: concat!("kindling-probe ", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }
}

/// Streams records into a capture file.
#[derive(Debug)]
pub struct CaptureWriter<W: Write> {
    out: BufWriter<W>,
    records: u64,
    bytes: u64,
}

impl<W: Write> CaptureWriter<W> {
    /// Writes the preamble and header. The header reaches `w` at once, so
    /// even an empty capture is a valid file.
    pub fn new(w: W, header: &CaptureHeader) -> Result<Self, CaptureError> {
        let json =
            serde_json::to_vec(header).map_err(|e| CaptureError::BadHeader(e.to_string()))?;
        let mut out = BufWriter::with_capacity(256 << 10, w);
        out.write_all(MAGIC)?;
        out.write_all(&header.format_version.to_le_bytes())?;
        out.write_all(&header.abi_version.to_le_bytes())?;
        out.write_all(&[host_byte_order(), 0])?;
        out.write_all(&(json.len() as u32).to_le_bytes())?;
        out.write_all(&json)?;
        out.write_all(&crc32fast::hash(&json).to_le_bytes())?;
        out.flush()?;
        let bytes = (PREAMBLE_LEN + json.len() + 4) as u64;
        Ok(Self {
            out,
            records: 0,
            bytes,
        })
    }

    /// Appends one record (buffered; see [`CaptureWriter::flush`]).
    pub fn write_record(&mut self, record: &[u8]) -> Result<(), CaptureError> {
        let len = u32::try_from(record.len())
            .ok()
            .filter(|&l| l <= MAX_RECORD)
            .ok_or_else(|| CaptureError::BadHeader(format!("record of {} bytes", record.len())))?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&crc32fast::hash(record).to_le_bytes())?;
        self.out.write_all(record)?;
        self.records += 1;
        self.bytes += 8 + u64::from(len);
        Ok(())
    }

    /// Pushes buffered records to the underlying writer. A recorder calls
    /// this periodically so that a crash loses at most one period.
    pub fn flush(&mut self) -> Result<(), CaptureError> {
        self.out.flush()?;
        Ok(())
    }

    /// Records written so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// Bytes written so far (file size once flushed).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Flushes and returns the underlying writer.
    pub fn finish(self) -> Result<W, CaptureError> {
        self.out
            .into_inner()
            .map_err(|e| CaptureError::Io(e.into_error()))
    }
}

/// Reads and validates a capture file, one record at a time.
#[derive(Debug)]
pub struct CaptureReader<R: Read> {
    input: R,
    header: CaptureHeader,
    buf: Vec<u8>,
    /// For an ABI 1 capture: the record being read, in this build's layout.
    upgraded: Option<Vec<u8>>,
    offset: u64,
    records: u64,
    failed: bool,
}

impl<R: Read> CaptureReader<R> {
    /// Reads and checks the preamble and header.
    pub fn new(mut input: R) -> Result<Self, CaptureError> {
        let mut pre = [0u8; PREAMBLE_LEN];
        match read_full(&mut input, &mut pre)? {
            n if n >= MAGIC.len() && &pre[..8] != MAGIC => return Err(CaptureError::BadMagic),
            n if n < MAGIC.len() && pre[..n] != MAGIC[..n] => return Err(CaptureError::BadMagic),
            n if n < PREAMBLE_LEN => {
                return Err(CaptureError::Truncated {
                    offset: 0,
                    records: 0,
                })
            }
            _ => {}
        }
        let format = u16::from_le_bytes([pre[8], pre[9]]);
        if format != FORMAT_VERSION {
            return Err(CaptureError::UnsupportedFormat(format));
        }
        let abi_version = u16::from_le_bytes([pre[10], pre[11]]);
        let upgrade = abi_version == 1;
        if abi_version != abi::ABI_VERSION && !upgrade {
            return Err(CaptureError::AbiMismatch {
                found: abi_version,
                expected: abi::ABI_VERSION,
            });
        }
        match pre[12] {
            o if o == host_byte_order() => {}
            BYTE_ORDER_LITTLE | BYTE_ORDER_BIG => return Err(CaptureError::ByteOrder),
            _ => return Err(CaptureError::BadHeader("unknown byte order".into())),
        }
        let header_len = u32::from_le_bytes([pre[14], pre[15], pre[16], pre[17]]);
        if header_len > MAX_HEADER {
            return Err(CaptureError::BadHeader(format!(
                "header of {header_len} bytes"
            )));
        }
        let mut json = vec![0u8; header_len as usize + 4];
        if read_full(&mut input, &mut json)? < json.len() {
            return Err(CaptureError::Truncated {
                offset: PREAMBLE_LEN as u64,
                records: 0,
            });
        }
        let (json, crc) = json.split_at(header_len as usize);
        if crc32fast::hash(json).to_le_bytes() != crc {
            return Err(CaptureError::BadHeader("checksum mismatch".into()));
        }
        let header: CaptureHeader =
            serde_json::from_slice(json).map_err(|e| CaptureError::BadHeader(e.to_string()))?;
        // every layout the file names must be ours; a file may predate a
        // record kind (ke_lost came later) and so not name it
        let ours = if upgrade {
            abi1_struct_sizes()
        } else {
            struct_sizes()
        };
        let differs = header
            .struct_sizes
            .iter()
            .any(|(k, v)| ours.get(k) != Some(v))
            || [
                "ke_header",
                "ke_sock",
                "ke_data",
                "ke_conn",
                "ke_tcp",
                "ke_drop",
            ]
            .iter()
            .any(|k| !header.struct_sizes.contains_key(*k));
        if differs {
            return Err(CaptureError::BadHeader(format!(
                "record layouts differ from this build's: {:?}",
                header.struct_sizes
            )));
        }
        let offset = (PREAMBLE_LEN + json.len() + 4) as u64;
        Ok(Self {
            input,
            header,
            buf: Vec::new(),
            upgraded: upgrade.then(Vec::new),
            offset,
            records: 0,
            failed: false,
        })
    }

    /// The file's header.
    pub fn header(&self) -> &CaptureHeader {
        &self.header
    }

    /// Records read so far.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The next record's bytes, `Ok(None)` at a clean end of file. After an
    /// error the reader stays failed and returns `Ok(None)`.
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, CaptureError> {
        if self.failed {
            return Ok(None);
        }
        let mut frame = [0u8; 8];
        let got = read_full(&mut self.input, &mut frame)?;
        if got == 0 {
            return Ok(None);
        }
        if got < frame.len() {
            return Err(self.fail_truncated());
        }
        let len = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
        let crc = u32::from_le_bytes([frame[4], frame[5], frame[6], frame[7]]);
        if len > MAX_RECORD {
            return Err(self.fail_corrupt("record length out of range"));
        }
        self.buf.resize(len as usize, 0);
        if read_full(&mut self.input, &mut self.buf)? < len as usize {
            return Err(self.fail_truncated());
        }
        if crc32fast::hash(&self.buf) != crc {
            return Err(self.fail_corrupt("record checksum mismatch"));
        }
        self.offset += 8 + u64::from(len);
        self.records += 1;
        match &mut self.upgraded {
            Some(out) => {
                upgrade_abi1(&self.buf, out);
                Ok(Some(out))
            }
            None => Ok(Some(&self.buf)),
        }
    }

    fn fail_truncated(&mut self) -> CaptureError {
        self.failed = true;
        CaptureError::Truncated {
            offset: self.offset,
            records: self.records,
        }
    }

    fn fail_corrupt(&mut self, reason: &'static str) -> CaptureError {
        self.failed = true;
        CaptureError::Corrupt {
            offset: self.offset,
            records: self.records,
            reason,
        }
    }
}

/// Rewrites an ABI 1 record in this build's layout: `netns` (zero: not
/// known) and its padding are inserted after the socket tuple every body
/// starts with, and the size grows by as much. A record too short to hold
/// a tuple is copied as it is, for the decoder to refuse.
fn upgrade_abi1(record: &[u8], out: &mut Vec<u8>) {
    use zerocopy::FromBytes;
    const TUPLE_END: usize = size_of::<abi::RecordHeader>() + abi::ABI1_SOCK_SIZE;
    const GROWTH: usize = size_of::<abi::SockTuple>() - abi::ABI1_SOCK_SIZE;
    out.clear();
    if record.len() < TUPLE_END {
        out.extend_from_slice(record);
        return;
    }
    out.extend_from_slice(&record[..TUPLE_END]);
    out.resize(TUPLE_END + GROWTH, 0);
    out.extend_from_slice(&record[TUPLE_END..]);
    if let Ok((hdr, _)) = abi::RecordHeader::mut_from_prefix(&mut out[..]) {
        let size = hdr.size.get().saturating_add(GROWTH as u32);
        hdr.size.set(size);
    }
}

/// Reads until `buf` is full or end of file; returns bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}
