//! Probe configuration, shared by the loader and capture-file headers.

/// What the probe captures; recorded in capture-file headers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProbeConfig {
    /// Payload bytes captured per syscall message (1 ..= [`crate::abi::MAX_SNAPLEN`]).
    pub snaplen: u32,
    /// Bytes of each turn of a TCP connection (what one side says before
    /// the other speaks again) captured in full past `snaplen`, so that the
    /// framing inside a large message (chunk sizes, MySQL packet headers,
    /// array elements) is seen; 0 = off. A syscall is split into records of
    /// at most [`crate::abi::MAX_SNAPLEN`] bytes (at most
    /// [`crate::abi::MAX_PARTS`] of them; flat buffers only, one record for
    /// iovecs).
    // absent from captures made before it existed (and left out when 0,
    // so that rewriting one changes no byte)
    #[serde(default, skip_serializing_if = "is_zero")]
    pub framing_budget: u32,
    /// Only these processes (thread-group ids); empty = all.
    pub pids: Vec<u32>,
    /// Only tasks in these cgroup v2 ids; empty = all.
    pub cgroups: Vec<u64>,
    /// Only sockets with one of these local or remote ports; empty = all.
    pub ports: Vec<u16>,
    /// Ring buffer size in bytes (power of two, at least one page).
    pub ring_bytes: u32,
    /// Wake the consumer once this many bytes wait (0 = on every record; at
    /// most a quarter of the ring is used, so a small ring still wakes it).
    pub wakeup_bytes: u64,
    /// Minimum interval between two RTT samples of one connection.
    pub rtt_interval_ms: u64,
    /// Also trace the loading process itself (tests only: an agent must not
    /// see its own traffic).
    pub trace_self: bool,
    /// Attach every program but make each return at once: the cost floor of
    /// the hooks themselves, for overhead measurements.
    pub hooks_only: bool,
    /// Read kernel memory the way kernels before 6.2 need (helper reads,
    /// in-flight calls keyed by thread id) even where the fast way works:
    /// for testing that way on a new kernel. Older kernels always use it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_compat: bool,
    /// The running kernel's BTF from a file (BTFHub-style), for kernels
    /// built without `/sys/kernel/btf/vmlinux`: the programs then attach to
    /// raw tracepoints and read kernel memory with helpers at the offsets
    /// this file gives. Works on a kernel with BTF too (tests).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub btf_path: Option<std::path::PathBuf>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            snaplen: 4096,
            // a 1 MB result set or chunked body, its framing and headroom
            framing_budget: 2 << 20,
            pids: Vec::new(),
            cgroups: Vec::new(),
            ports: Vec::new(),
            ring_bytes: 16 << 20,
            // 2 MiB saved the recorder a third of its CPU under load but
            // tripled the traced server's p99 latency: larger batches keep
            // the recorder on a CPU longer at a time (BENCHMARKS.md)
            wakeup_bytes: 256 << 10,
            rtt_interval_ms: 1000,
            trace_self: false,
            hooks_only: false,
            force_compat: false,
            btf_path: None,
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
