//! Loads the CO-RE programs into the kernel, attaches them and consumes the
//! ring buffer (feature `loader`).
//!
//! ```text
//! ProbeBuilder ──load()──► open skeleton ─► set rodata/maps ─► load (verifier) ─► attach
//!                                                                     │
//!        Probe::poll(timeout, |Event| …) ◄── batch ◄── ring buffer ◄──┘
//! ```

use std::mem::MaybeUninit;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject, RingBuffer, RingBufferBuilder};

use crate::abi::{self, Event};
use crate::preflight;
use crate::{ProbeConfig, ProbeError};

skeleton!("kindling.skel.rs");

use skel::{KindlingSkel, KindlingSkelBuilder};

// Compile-time proof that the Rust mirrors match what clang laid out for the
// BPF target (the skeleton's types come from the object's BTF).
macro_rules! same_layout {
    ($rust:ty, $c:ty, [$($field:ident),*]) => {
        const _: () = assert!(size_of::<$rust>() == size_of::<$c>());
        $(const _: () = assert!(
            std::mem::offset_of!($rust, $field) == std::mem::offset_of!($c, $field)
        );)*
    };
}
same_layout!(
    abi::RecordHeader,
    skel::types::ke_header,
    [kind, flags, size, ts_ns, pid, tid, cgroup_id, comm]
);
same_layout!(
    abi::SockTuple,
    skel::types::ke_sock,
    [sock, saddr, daddr, sport, dport, family, protocol, state, netns]
);
same_layout!(
    abi::RawData,
    skel::types::ke_data,
    [
        hdr,
        sk,
        ts_enter_ns,
        ret,
        ino,
        len,
        cap_len,
        fd,
        syscall,
        direction,
        msg_index
    ]
);
same_layout!(
    abi::RawConn,
    skel::types::ke_conn,
    [hdr, sk, ts_enter_ns, ret, ino, fd, syscall]
);
same_layout!(
    abi::RawTcp,
    skel::types::ke_tcp,
    [
        hdr,
        sk,
        srtt_us,
        rttvar_us,
        total_retrans,
        snd_cwnd,
        old_state,
        new_state,
        reset_dir
    ]
);
same_layout!(
    abi::RawDrop,
    skel::types::ke_drop,
    [hdr, sk, location, reason]
);

/// Configures and loads a [`Probe`].
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use kindling_probe::ProbeBuilder;
///
/// let mut probe = ProbeBuilder::new().snaplen(512).port(6379).load()?;
/// loop {
///     probe.poll(Duration::from_millis(100), |event| {
///         println!("{} pid {}", event.kind_name(), event.header().pid.get());
///     })?;
/// }
/// # Ok::<(), kindling_probe::ProbeError>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct ProbeBuilder {
    config: ProbeConfig,
}

impl ProbeBuilder {
    /// Defaults: snaplen 4096, all processes and ports, 16 MiB ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts from a full configuration.
    pub fn from_config(config: ProbeConfig) -> Self {
        Self { config }
    }

    /// Payload bytes captured per syscall message.
    pub fn snaplen(mut self, bytes: u32) -> Self {
        self.config.snaplen = bytes;
        self
    }

    /// Reads kernel memory as on kernels before 6.2 even on a newer one
    /// (see [`ProbeConfig::force_compat`]).
    pub fn force_compat(mut self, yes: bool) -> Self {
        self.config.force_compat = yes;
        self
    }

    /// Reads the kernel's types from this BTF file instead of the kernel's
    /// own (see [`ProbeConfig::btf_path`]).
    pub fn btf_path(mut self, file: impl Into<std::path::PathBuf>) -> Self {
        self.config.btf_path = Some(file.into());
        self
    }

    /// Bytes of each TCP turn captured in full past the snaplen (see
    /// [`ProbeConfig::framing_budget`]); 0 turns it off.
    pub fn framing_budget(mut self, bytes: u32) -> Self {
        self.config.framing_budget = bytes;
        self
    }

    /// Adds a process (thread-group id) to the pid filter.
    pub fn pid(mut self, pid: u32) -> Self {
        self.config.pids.push(pid);
        self
    }

    /// Adds a cgroup v2 id to the cgroup filter.
    pub fn cgroup(mut self, id: u64) -> Self {
        self.config.cgroups.push(id);
        self
    }

    /// Adds a port (local or remote) to the port filter.
    pub fn port(mut self, port: u16) -> Self {
        self.config.ports.push(port);
        self
    }

    /// Ring buffer size in bytes (rounded up to a power of two).
    pub fn ring_bytes(mut self, bytes: u32) -> Self {
        self.config.ring_bytes = bytes;
        self
    }

    /// Batch wake-ups: wake the consumer once this many bytes wait.
    pub fn wakeup_bytes(mut self, bytes: u64) -> Self {
        self.config.wakeup_bytes = bytes;
        self
    }

    /// Trace the loading process too (for tests; agents exclude themselves).
    pub fn trace_self(mut self, yes: bool) -> Self {
        self.config.trace_self = yes;
        self
    }

    /// Attach programs that return immediately (overhead floor).
    pub fn hooks_only(mut self, yes: bool) -> Self {
        self.config.hooks_only = yes;
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }

    /// Checks the host, loads the programs through the verifier and attaches
    /// them. Programs are detached when the [`Probe`] is dropped.
    pub fn load(self) -> Result<Probe, ProbeError> {
        let cfg = self.config;
        if cfg.snaplen == 0 || cfg.snaplen > abi::MAX_SNAPLEN {
            return Err(ProbeError::Config(format!(
                "snaplen must be 1..={}, got {}",
                abi::MAX_SNAPLEN,
                cfg.snaplen
            )));
        }
        preflight::check(cfg.btf_path.as_deref())?;
        Probe::open(cfg)
    }
}

/// Loss counters summed over CPUs (see `enum ke_loss`), plus user-side ones.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LossStats {
    /// Records dropped because the ring buffer was full.
    pub ring_full: u64,
    /// Payload or argument reads from user memory that failed.
    pub read_failed: u64,
    /// Records whose payload was cut at snaplen or the iovec limit (kept).
    pub truncated: u64,
    /// Syscalls not reported because the in-flight table was full.
    pub pending_full: u64,
    /// Records the consumer could not decode.
    pub undecodable: u64,
}

impl LossStats {
    /// Records lost for good (truncation is not a loss of the record).
    pub fn lost_records(&self) -> u64 {
        self.ring_full + self.pending_full + self.undecodable
    }
}

/// Records copied out of the ring buffer: `[u32 len][record][pad to 8]…`.
/// Copying lets the caller's closure run outside libbpf's callback and the
/// buffer is reused, so there is no allocation per record.
#[derive(Default)]
struct Batch {
    bytes: Vec<u8>,
}

impl Batch {
    fn push(&mut self, record: &[u8]) {
        self.bytes
            .extend_from_slice(&(record.len() as u32).to_ne_bytes());
        self.bytes.extend_from_slice(record);
        let pad = (8 - (record.len() + 4) % 8) % 8;
        self.bytes.extend_from_slice(&[0u8; 8][..pad]);
    }

    fn records(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.bytes[..];
        std::iter::from_fn(move || {
            let (len, tail) = rest.split_first_chunk::<4>()?;
            let len = u32::from_ne_bytes(*len) as usize;
            let record = tail.get(..len)?;
            let pad = (8 - (len + 4) % 8) % 8;
            rest = tail.get(len + pad..).unwrap_or(&[]);
            Some(record)
        })
    }
}

/// A loaded, attached probe. Dropping it detaches every program.
pub struct Probe {
    // Field order is drop order: the ring buffer uses the map, the skeleton
    // borrows the boxed object storage.
    ring: RingBuffer<'static>,
    skel: KindlingSkel<'static>,
    _object: Box<MaybeUninit<OpenObject>>,
    batch: Arc<Mutex<Batch>>,
    config: ProbeConfig,
    undecodable: u64,
    received: u64,
    /// Loss-counter slots in use: one per possible CPU (the rest stay 0).
    loss_slots: usize,
    /// Kernel memory read with helpers (before Linux 6.2, or forced).
    compat: bool,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Probe")
            .field("config", &self.config)
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

/// Verifier and libbpf messages of the load in progress.
static LIBBPF_LOG: Mutex<String> = Mutex::new(String::new());

fn collect_libbpf_log(_level: libbpf_rs::PrintLevel, msg: String) {
    if let Ok(mut log) = LIBBPF_LOG.lock() {
        // Bounded: a verifier log can be megabytes; keep the tail, where the
        // rejection reason is.
        log.push_str(&msg);
        if log.len() > 1 << 20 {
            let cut = log.len() - (1 << 19);
            let cut = (cut..log.len())
                .find(|&i| log.is_char_boundary(i))
                .unwrap_or(cut);
            log.drain(..cut);
        }
    }
}

impl Probe {
    fn open(cfg: ProbeConfig) -> Result<Self, ProbeError> {
        let _ = libbpf_rs::set_print(Some((libbpf_rs::PrintLevel::Debug, collect_libbpf_log)));
        if let Ok(mut log) = LIBBPF_LOG.lock() {
            log.clear();
        }
        let mut object = Box::new(MaybeUninit::<OpenObject>::uninit());
        // SAFETY: the skeleton borrows `object`, which is heap-allocated and
        // owned by the returned `Probe`; the skeleton is dropped before it
        // (field order), so the extended lifetime never outlives the storage.
        let object_ref: &'static mut MaybeUninit<OpenObject> =
            unsafe { &mut *(object.as_mut() as *mut MaybeUninit<OpenObject>) };
        let mut builder = KindlingSkelBuilder::default();
        if let Some(file) = &cfg.btf_path {
            builder
                .object_builder_mut()
                .btf_custom_path(file)
                .map_err(|e| ProbeError::Load {
                    stage: "open",
                    log: String::new(),
                    source: e,
                })?;
        }
        let mut open = builder.open(object_ref).map_err(|e| ProbeError::Load {
            stage: "open",
            log: take_log(),
            source: e,
        })?;

        let cpus = libbpf_rs::num_possible_cpus().map_err(|e| ProbeError::Load {
            stage: "configure",
            log: take_log(),
            source: e,
        })?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| ProbeError::Config("BPF rodata is not memory-mapped".into()))?;
        rodata.self_tgid = if cfg.trace_self {
            0
        } else {
            std::process::id()
        };
        // Plain loads through bpf_rdonly_cast (6.2+), or helper reads: the
        // verifier drops the way not taken, and only one of the two slot
        // maps is made (libbpf turns the other one's uses into dead code).
        // With an external BTF file, the raw_tp twins of the programs
        // (the kernel may have no BTF to type tp_btf arguments with), and
        // helper reads.
        let raw_tracepoints = cfg.btf_path.is_some();
        let compat = raw_tracepoints
            || cfg.force_compat
            || !crate::kernel::has_func("bpf_rdonly_cast", cfg.btf_path.as_deref());
        rodata.compat = u8::from(compat);
        rodata.raw_tracepoints = u8::from(raw_tracepoints);
        // (task storage needs bpf_get_current_task_btf in tracing programs:
        // 6.2 is past both)
        let slots_by_tid = compat;
        rodata.slots_by_tid = u8::from(slots_by_tid);
        rodata.snaplen = cfg.snaplen;
        rodata.framing_budget = cfg.framing_budget;
        rodata.filter_pids = u8::from(!cfg.pids.is_empty());
        rodata.filter_cgroups = u8::from(!cfg.cgroups.is_empty());
        rodata.filter_ports = u8::from(!cfg.ports.is_empty());
        rodata.hooks_only = u8::from(cfg.hooks_only);
        // The kernel side counts per CPU (see `unwoken` in kindling.bpf.c).
        let ring = cfg.ring_bytes.max(4096).next_power_of_two();
        let wake = cfg.wakeup_bytes.min(u64::from(ring) / 4);
        rodata.wakeup_bytes = wake / (cpus.max(1) as u64);
        rodata.rtt_interval_ns = cfg.rtt_interval_ms.saturating_mul(1_000_000);
        open.maps
            .events
            .set_max_entries(ring)
            .map_err(|e| ProbeError::Load {
                stage: "configure",
                log: take_log(),
                source: e,
            })?;

        // One of each pair of twin programs (see TWIN_PROGRAMS).
        keep_twins(open.open_object_mut(), raw_tracepoints);
        let slots = if slots_by_tid {
            open.maps.pending.set_autocreate(false)
        } else {
            open.maps.pending_tid.set_autocreate(false)
        };
        slots.map_err(|e| ProbeError::Load {
            stage: "configure",
            log: take_log(),
            source: e,
        })?;
        open.maps
            .scratch_map
            .set_max_entries(cpus as u32)
            .map_err(|e| ProbeError::Load {
                stage: "configure",
                log: take_log(),
                source: e,
            })?;
        let skel = open.load().map_err(|e| {
            let log = take_log();
            if log.contains("processed") || log.contains("R0") || log.contains("invalid") {
                ProbeError::Verifier { log, source: e }
            } else {
                ProbeError::Load {
                    stage: "load",
                    log,
                    source: e,
                }
            }
        })?;
        let mut skel = skel;
        fill_filters(&skel, &cfg)?;
        skel.attach().map_err(|e| ProbeError::Load {
            stage: "attach",
            log: take_log(),
            source: e,
        })?;

        let batch = Arc::new(Mutex::new(Batch::default()));
        let sink = Arc::clone(&batch);
        let mut builder = RingBufferBuilder::new();
        builder
            .add(&skel.maps.events, move |record: &[u8]| {
                // Uncontended: only poll_raw() on this thread touches it.
                sink.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(record);
                0
            })
            .map_err(|e| ProbeError::Load {
                stage: "ring buffer",
                log: String::new(),
                source: e,
            })?;
        let ring = builder.build().map_err(|e| ProbeError::Load {
            stage: "ring buffer",
            log: String::new(),
            source: e,
        })?;
        Ok(Self {
            ring,
            skel,
            _object: object,
            batch,
            config: cfg,
            undecodable: 0,
            received: 0,
            loss_slots: cpus,
            compat,
        })
    }

    /// Waits up to `timeout` for records, then hands every available record to
    /// `on_event` as a borrowed [`Event`]. Returns how many were delivered.
    /// Records that fail to decode are counted in [`LossStats::undecodable`].
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut on_event: impl FnMut(Event<'_>),
    ) -> Result<usize, ProbeError> {
        self.poll_raw(timeout, |bytes| {
            if let Ok(event) = abi::decode(bytes) {
                on_event(event);
                true
            } else {
                false
            }
        })
    }

    /// Like [`Probe::poll`] but hands over raw record bytes (for recording);
    /// `on_record` returns whether the record was valid.
    pub fn poll_raw(
        &mut self,
        timeout: Duration,
        mut on_record: impl FnMut(&[u8]) -> bool,
    ) -> Result<usize, ProbeError> {
        // Wake-ups are batched in the kernel, so a timed-out poll may still
        // leave records behind: always drain with consume() as well.
        if !timeout.is_zero() {
            if let Err(e) = self.ring.poll(timeout) {
                if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                    return Err(ProbeError::Ring(e));
                }
            }
        }
        self.ring.consume().map_err(ProbeError::Ring)?;
        let batch = std::mem::take(&mut *self.batch.lock().unwrap_or_else(PoisonError::into_inner));
        let mut n = 0;
        for record in batch.records() {
            if on_record(record) {
                n += 1;
            } else {
                self.undecodable += 1;
            }
        }
        self.received += n as u64;
        // Hand the (now empty) buffer back so its capacity is reused.
        let mut bytes = batch.bytes;
        bytes.clear();
        self.batch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes = bytes;
        Ok(n)
    }

    /// Loss counters, summed over CPUs.
    pub fn losses(&self) -> Result<LossStats, ProbeError> {
        let bss = self
            .skel
            .maps
            .bss_data
            .as_deref()
            .ok_or_else(|| ProbeError::Config("BPF .bss is not memory-mapped".into()))?;
        let mut sums = [0u64; 4];
        for slot in bss.loss_counts.iter().take(self.loss_slots) {
            for (sum, n) in sums.iter_mut().zip(&slot.n) {
                // SAFETY: `n` points into the mapped .bss, valid while the
                // skeleton lives; the kernel updates it concurrently, so it
                // is read once, without letting the compiler cache it.
                *sum += unsafe { std::ptr::read_volatile(n) };
            }
        }
        Ok(LossStats {
            ring_full: sums[0],
            read_failed: sums[1],
            truncated: sums[2],
            pending_full: sums[3],
            undecodable: self.undecodable,
        })
    }

    /// The ring buffer's epoll descriptor (readable when records wait).
    #[cfg(feature = "tokio")]
    pub(crate) fn epoll_fd(&self) -> std::os::fd::RawFd {
        self.ring.epoll_fd()
    }

    /// Kernel ids of the loaded programs (as `bpftool prog show id N` lists them).
    pub fn program_ids(&self) -> Vec<u32> {
        use std::os::fd::AsFd;
        self.skel
            .object()
            .progs()
            .filter_map(|p| libbpf_rs::Program::id_from_fd(p.as_fd()).ok())
            .collect()
    }

    /// Records delivered so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether the programs read kernel memory with helpers, as kernels
    /// before 6.2 need (slower per record), rather than with plain loads.
    pub fn reads_with_helpers(&self) -> bool {
        self.compat
    }

    /// The configuration the probe runs with.
    pub fn config(&self) -> &ProbeConfig {
        &self.config
    }
}

fn fill_filters(skel: &KindlingSkel<'_>, cfg: &ProbeConfig) -> Result<(), ProbeError> {
    let one = [1u8];
    let put = |map: &dyn MapCore, key: &[u8]| {
        map.update(key, &one, MapFlags::ANY)
            .map_err(|e| ProbeError::Load {
                stage: "filters",
                log: String::new(),
                source: e,
            })
    };
    for pid in &cfg.pids {
        put(&skel.maps.pid_filter, &pid.to_ne_bytes())?;
    }
    for cg in &cfg.cgroups {
        put(&skel.maps.cgroup_filter, &cg.to_ne_bytes())?;
    }
    for port in &cfg.ports {
        put(&skel.maps.port_filter, &u32::from(*port).to_ne_bytes())?;
    }
    Ok(())
}

/// Keeps one program of each twin pair (see TWIN_PROGRAMS in the BPF
/// sources): the `raw_tp` ones when `raw_tracepoints`, else the `tp_btf`
/// ones.
pub(crate) fn keep_twins(object: &mut OpenObject, raw_tracepoints: bool) {
    for mut prog in object.progs_mut() {
        let section = prog.section().to_string_lossy();
        let twin_not_taken = if raw_tracepoints {
            section.starts_with("tp_btf/")
        } else {
            section.starts_with("raw_tp/")
        };
        if twin_not_taken {
            prog.set_autoload(false);
        }
    }
}

fn take_log() -> String {
    LIBBPF_LOG
        .lock()
        .map(|mut l| std::mem::take(&mut *l))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_round_trips_records_of_any_length() {
        let mut b = Batch::default();
        let recs: Vec<Vec<u8>> = (0..20).map(|n| vec![n as u8; n * 3]).collect();
        for r in &recs {
            b.push(r);
        }
        let out: Vec<&[u8]> = b.records().collect();
        assert_eq!(out.len(), recs.len());
        for (a, b) in out.iter().zip(&recs) {
            assert_eq!(*a, &b[..]);
        }
    }
}
