//! The loader's error type.

/// Why the probe could not be loaded or read. Each message says what is
/// wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProbeError {
    /// Neither root nor CAP_BPF + CAP_PERFMON.
    #[error("not permitted to load eBPF programs: run as root or grant CAP_BPF and CAP_PERFMON")]
    NotPrivileged,
    /// `/sys/kernel/btf/vmlinux` is missing and no BTF file was given.
    #[error("kernel BTF is missing (/sys/kernel/btf/vmlinux), and Kindling needs the kernel's type information to read its structures: give this kernel's BTF as a file with --btf PATH (BTFHub publishes one per distribution kernel), or use a kernel built with CONFIG_DEBUG_INFO_BTF=y (the default of Debian 11+, Ubuntu 20.10+, RHEL 8.2+, Amazon Linux 2's 5.10)")]
    NoBtf,
    /// tracefs is absent and could not be mounted.
    #[error(
        "tracefs is not available: mount it with `mount -t tracefs tracefs /sys/kernel/tracing`"
    )]
    NoTracefs,
    /// The running kernel predates a feature the programs need.
    #[error("kernel {found} is too old: Kindling needs Linux {needed} or newer (the BPF ring buffer and BTF-typed tracepoints it is built on)")]
    KernelTooOld {
        /// `uname -r`.
        found: String,
        /// Oldest supported version.
        needed: String,
    },
    /// The verifier refused a program; `log` holds libbpf's and the verifier's output.
    #[error("the kernel verifier rejected the BPF programs (see the verifier log)")]
    Verifier {
        /// The verifier log (its tail if it was very long).
        log: String,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// Another step of opening, loading or attaching failed.
    #[error("BPF {stage} failed")]
    Load {
        /// The step: open, configure, load, filters, attach, ring buffer.
        stage: &'static str,
        /// libbpf's messages for the step.
        log: String,
        /// libbpf's error.
        #[source]
        source: libbpf_rs::Error,
    },
    /// A builder setting is out of range.
    #[error("invalid probe configuration: {0}")]
    Config(String),
    /// Polling the ring buffer or reading counters failed.
    #[error("reading from the probe failed")]
    Ring(#[source] libbpf_rs::Error),
}

impl ProbeError {
    /// The verifier/libbpf log for load failures.
    pub fn log(&self) -> Option<&str> {
        match self {
            ProbeError::Verifier { log, .. } | ProbeError::Load { log, .. } => Some(log),
            _ => None,
        }
    }
}
