//! Host checks before loading, each failing with a one-line, actionable error.

use std::path::Path;

use crate::ProbeError;

/// Oldest kernel with everything the programs need: the BPF ring buffer and
/// `bpf_ktime_get_boot_ns` (5.8), `tp_btf` and BTF. From 6.2 on they read
/// kernel structs with plain loads (the `bpf_rdonly_cast` kfunc) and keep
/// in-flight calls in task storage; before, with `bpf_probe_read_kernel`
/// and a hash by thread id (see [`crate::ProbeBuilder::load`]).
pub const MIN_KERNEL: (u32, u32) = (5, 8);

const BTF: &str = "/sys/kernel/btf/vmlinux";
const TRACEFS: &str = "/sys/kernel/tracing";
const BPFFS: &str = "/sys/fs/bpf";

// Capability bits from linux/capability.h.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// Runs every check; mounts tracefs (and bpffs) when they are missing.
/// `btf_file`: an external BTF file standing in for the kernel's own.
pub fn check(btf_file: Option<&Path>) -> Result<(), ProbeError> {
    check_privileges()?;
    check_kernel_version()?;
    match btf_file {
        Some(file) if !file.is_file() => {
            return Err(ProbeError::Config(format!(
                "the BTF file {} does not exist",
                file.display()
            )))
        }
        Some(_) => {}
        None if !Path::new(BTF).exists() => return Err(ProbeError::NoBtf),
        None => {}
    }
    ensure_tracefs()?;
    // Not needed for attaching, but tools that pin expect it; best effort.
    let _ = mount_if_missing(BPFFS, "bpf", &format!("{BPFFS}/"));
    Ok(())
}

fn check_privileges() -> Result<(), ProbeError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    let has = |cap: u32| eff & (1u64 << cap) != 0;
    if has(CAP_SYS_ADMIN) || (has(CAP_BPF) && has(CAP_PERFMON)) {
        Ok(())
    } else {
        Err(ProbeError::NotPrivileged)
    }
}

/// Parses the `major.minor` prefix of a kernel release string.
pub fn parse_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn check_kernel_version() -> Result<(), ProbeError> {
    let release = kernel_release();
    match parse_release(&release) {
        Some(v) if v < MIN_KERNEL => Err(ProbeError::KernelTooOld {
            found: release,
            needed: format!("{}.{}", MIN_KERNEL.0, MIN_KERNEL.1),
        }),
        _ => Ok(()),
    }
}

/// `uname -r`.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn ensure_tracefs() -> Result<(), ProbeError> {
    let events = format!("{TRACEFS}/events/syscalls");
    if Path::new(&events).exists()
        || Path::new("/sys/kernel/debug/tracing/events/syscalls").exists()
    {
        return Ok(());
    }
    mount_if_missing(TRACEFS, "tracefs", &events).map_err(|_| ProbeError::NoTracefs)
}

fn mount_if_missing(target: &str, fstype: &str, probe_path: &str) -> Result<(), ()> {
    if Path::new(probe_path).exists() {
        return Ok(());
    }
    let c = |s: &str| std::ffi::CString::new(s).map_err(|_| ());
    let (src, tgt, fs) = (c(fstype)?, c(target)?, c(fstype)?);
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
    if rc == 0 && Path::new(probe_path).exists() {
        Ok(())
    } else {
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_strings_parse() {
        assert_eq!(parse_release("6.18.44-fc-v595"), Some((6, 18)));
        assert_eq!(parse_release("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(parse_release("garbage"), None);
        assert!(parse_release("5.4.0").unwrap() < MIN_KERNEL);
        assert!(parse_release("5.7.19").unwrap() < MIN_KERNEL);
        assert!(parse_release("5.10.0-32-cloud-amd64").unwrap() >= MIN_KERNEL);
        assert!(parse_release("6.1.0-13-amd64").unwrap() >= MIN_KERNEL);
        assert!(parse_release("6.18.44").unwrap() >= MIN_KERNEL);
    }
}
