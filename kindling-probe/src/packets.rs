//! The packet tracer (feature `loader`): follows chosen packets through the
//! host's network stack and virtual network, one [`RawPacket`] per hop.
//!
//! A BPF object of its own (`bpf/packets.bpf.c`), loaded only while a trace
//! runs: a node whose agent does not trace packets pays nothing for it.
//!
//! ```no_run
//! use std::time::Duration;
//! use kindling_probe::PacketTracerBuilder;
//!
//! let mut tracer = PacketTracerBuilder::new().port(8080).load()?;
//! tracer.poll(Duration::from_millis(100), |hop| {
//!     println!("{:?} on {:?}", hop.point(), hop.device());
//! })?;
//! # Ok::<(), kindling_probe::ProbeError>(())
//! ```

use std::mem::MaybeUninit;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, OpenObject, RingBuffer, RingBufferBuilder};
use zerocopy::FromBytes;

use crate::abi::{self, RawPacket};
use crate::ProbeError;

skeleton!("packets.skel.rs");

use skel::{PacketsSkel, PacketsSkelBuilder};

const _: () = assert!(size_of::<RawPacket>() == size_of::<skel::types::ke_packet>());

/// Most ports a filter names (`MAX_PORTS` in `packets.bpf.c`).
pub const MAX_FILTER_PORTS: usize = 8;

/// Records each CPU writes before it wakes the reader (see
/// `wakeup_records` in `bpf/packets.bpf.c`).
const WAKEUP_RECORDS: u64 = 64;

/// What to follow, and how much of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PacketFilter {
    /// Ports either end of a packet must have (empty: any).
    pub ports: Vec<u16>,
    /// An address either end must have.
    pub addr: Option<IpAddr>,
    /// IP protocol: 6 (TCP), 17 (UDP), or `None` for both.
    pub protocol: Option<u8>,
    /// Start following packets only in this network namespace (inode); once
    /// followed, a packet is followed into every namespace.
    pub netns: Option<u32>,
    /// Follow one flow in this many (by a hash of its ends), 1 = all.
    pub sample_every: u32,
    /// Hops written per CPU per second at most; beyond, counted as lost.
    pub budget_per_sec: u64,
}

impl Default for PacketFilter {
    fn default() -> Self {
        Self {
            ports: Vec::new(),
            addr: None,
            protocol: None,
            netns: None,
            sample_every: 1,
            budget_per_sec: 50_000,
        }
    }
}

/// Sets up a [`PacketTracer`].
#[derive(Clone, Debug, Default)]
pub struct PacketTracerBuilder {
    filter: PacketFilter,
    btf_path: Option<PathBuf>,
}

impl PacketTracerBuilder {
    /// Follow everything (TCP and UDP over IP), within the budget.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses `filter` as a whole.
    pub fn filter(mut self, filter: PacketFilter) -> Self {
        self.filter = filter;
        self
    }

    /// Adds a port either end must have.
    pub fn port(mut self, port: u16) -> Self {
        self.filter.ports.push(port);
        self
    }

    /// Reads the kernel's types from this file instead of
    /// `/sys/kernel/btf/vmlinux`.
    pub fn btf_path(mut self, file: impl Into<PathBuf>) -> Self {
        self.btf_path = Some(file.into());
        self
    }

    /// Loads and attaches the tracer.
    pub fn load(self) -> Result<PacketTracer, ProbeError> {
        let f = &self.filter;
        if f.ports.len() > MAX_FILTER_PORTS {
            return Err(ProbeError::Config(format!(
                "at most {MAX_FILTER_PORTS} ports, got {}",
                f.ports.len()
            )));
        }
        if f.sample_every == 0 {
            return Err(ProbeError::Config("sample_every must be at least 1".into()));
        }
        crate::preflight::check(self.btf_path.as_deref())?;
        PacketTracer::open(self)
    }
}

/// Hops lost on the kernel side, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PacketLosses {
    /// The ring buffer was full.
    pub ring_full: u64,
    /// Over the per-CPU budget.
    pub over_budget: u64,
    /// Records that did not decode.
    pub undecodable: u64,
}

impl PacketLosses {
    /// All hops lost.
    pub fn total(&self) -> u64 {
        self.ring_full + self.over_budget + self.undecodable
    }
}

/// A loaded, attached packet tracer. Dropping it detaches the programs.
pub struct PacketTracer {
    // Field order is drop order: the ring uses the map, the skeleton
    // borrows the boxed object storage.
    ring: RingBuffer<'static>,
    skel: PacketsSkel<'static>,
    _object: Box<MaybeUninit<OpenObject>>,
    batch: Arc<Mutex<Vec<RawPacket>>>,
    undecodable: Arc<Mutex<u64>>,
}

impl std::fmt::Debug for PacketTracer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketTracer").finish_non_exhaustive()
    }
}

fn load_error(stage: &'static str) -> impl Fn(libbpf_rs::Error) -> ProbeError {
    move |source| ProbeError::Load {
        stage,
        log: String::new(),
        source,
    }
}

impl PacketTracer {
    fn open(b: PacketTracerBuilder) -> Result<Self, ProbeError> {
        let mut object = Box::new(MaybeUninit::<OpenObject>::uninit());
        // SAFETY: the skeleton borrows `object`, heap-allocated and owned by
        // the returned tracer; the skeleton is dropped before it (field
        // order), so the extended lifetime never outlives the storage.
        let object_ref: &'static mut MaybeUninit<OpenObject> =
            unsafe { &mut *(object.as_mut() as *mut MaybeUninit<OpenObject>) };
        let mut builder = PacketsSkelBuilder::default();
        if let Some(file) = &b.btf_path {
            builder
                .object_builder_mut()
                .btf_custom_path(file)
                .map_err(load_error("open"))?;
        }
        let mut open = builder.open(object_ref).map_err(load_error("open"))?;
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| ProbeError::Config("BPF rodata is not memory-mapped".into()))?;
        let f = &b.filter;
        rodata.filter_proto = f.protocol.unwrap_or(0);
        for (slot, port) in rodata.filter_ports.iter_mut().zip(&f.ports) {
            *slot = *port;
        }
        rodata.filter_nports = f.ports.len() as u8;
        match f.addr {
            Some(IpAddr::V4(a)) => {
                rodata.filter_family = 2;
                rodata.filter_addr[..4].copy_from_slice(&a.octets());
            }
            Some(IpAddr::V6(a)) => {
                rodata.filter_family = 10;
                rodata.filter_addr = a.octets();
            }
            None => {}
        }
        rodata.filter_netns = f.netns.unwrap_or(0);
        rodata.sample_every = f.sample_every;
        rodata.budget_per_sec = f.budget_per_sec;
        // the reader polls every 100 ms at most: a CPU's 64 records wait
        // no longer than that
        rodata.wakeup_records = WAKEUP_RECORDS;
        // tp_btf programs read the sk_buff with plain loads; without the
        // kernel's own BTF (an external file) their raw_tp twins, with
        // helper reads
        let raw = b.btf_path.is_some();
        rodata.raw_tracepoints = u8::from(raw);
        crate::loader::keep_twins(open.open_object_mut(), raw);
        let mut skel = open.load().map_err(|source| ProbeError::Verifier {
            log: String::new(),
            source,
        })?;
        skel.attach().map_err(load_error("attach"))?;

        let batch = Arc::new(Mutex::new(Vec::new()));
        let undecodable = Arc::new(Mutex::new(0u64));
        let (sink, bad) = (Arc::clone(&batch), Arc::clone(&undecodable));
        let mut rb = RingBufferBuilder::new();
        rb.add(&skel.maps.packets, move |record: &[u8]| {
            match abi::decode_packet(record) {
                Ok(hop) => sink.lock().unwrap_or_else(PoisonError::into_inner).push(
                    RawPacket::read_from_bytes(zerocopy::IntoBytes::as_bytes(hop))
                        .expect("a decoded record has the size of one"),
                ),
                Err(_) => *bad.lock().unwrap_or_else(PoisonError::into_inner) += 1,
            }
            0
        })
        .map_err(load_error("ring buffer"))?;
        let ring = rb.build().map_err(load_error("ring buffer"))?;
        Ok(Self {
            ring,
            skel,
            _object: object,
            batch,
            undecodable,
        })
    }

    /// Waits up to `timeout` for hops, then hands every available one to
    /// `on_hop`. Returns how many.
    pub fn poll(
        &mut self,
        timeout: Duration,
        mut on_hop: impl FnMut(&RawPacket),
    ) -> Result<usize, ProbeError> {
        if !timeout.is_zero() {
            if let Err(e) = self.ring.poll(timeout) {
                if e.kind() != libbpf_rs::ErrorKind::Interrupted {
                    return Err(ProbeError::Ring(e));
                }
            }
        }
        self.ring.consume().map_err(ProbeError::Ring)?;
        let hops = std::mem::take(&mut *self.batch.lock().unwrap_or_else(PoisonError::into_inner));
        for hop in &hops {
            on_hop(hop);
        }
        Ok(hops.len())
    }

    /// Hops lost so far.
    pub fn losses(&self) -> Result<PacketLosses, ProbeError> {
        let per_cpu = self
            .skel
            .maps
            .cpu_state
            .lookup_percpu(&0u32.to_ne_bytes(), MapFlags::ANY)
            .map_err(load_error("losses"))?
            .unwrap_or_default();
        let mut losses = PacketLosses {
            undecodable: *self
                .undecodable
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            ..PacketLosses::default()
        };
        for cpu in per_cpu {
            // struct cpu_state: window_start, window_used, seq, lost[2]
            let word = |i: usize| {
                cpu.get(i * 8..i * 8 + 8)
                    .and_then(|b| b.try_into().ok())
                    .map_or(0, u64::from_ne_bytes)
            };
            losses.ring_full += word(3);
            losses.over_budget += word(4);
        }
        Ok(losses)
    }
}
