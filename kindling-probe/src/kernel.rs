//! Facts read from the running kernel's BTF.

use std::collections::BTreeMap;
use std::path::Path;

use libbpf_rs::btf::{types, Btf};

/// The kernel's BTF: from `file` when given (an external BTF file for a
/// kernel without its own), else the running kernel's.
fn kernel_btf(file: Option<&Path>) -> Option<Btf<'static>> {
    match file {
        Some(path) => Btf::from_path(path).ok(),
        None => Btf::from_vmlinux().ok(),
    }
}

/// Whether the kernel's BTF has a function named `name` (a kfunc such as
/// `bpf_rdonly_cast`). False when the BTF cannot be read.
pub(crate) fn has_func(name: &str, file: Option<&Path>) -> bool {
    kernel_btf(file).is_some_and(|btf| btf.type_by_name::<types::Func<'_>>(name).is_some())
}

/// The names of the kernel's `enum skb_drop_reason` values, without the
/// `SKB_DROP_REASON_` prefix (`2` → `NOT_SPECIFIED`, …). The numbers change
/// between kernel versions, so captures keep this table in their header.
/// Empty when the kernel's BTF cannot be read or lacks the enum.
///
/// # Examples
///
/// ```no_run
/// let names = kindling_probe::drop_reason_names();
/// assert_eq!(names.get(&2).map(String::as_str), Some("NOT_SPECIFIED"));
/// ```
pub fn drop_reason_names() -> BTreeMap<u32, String> {
    drop_reason_names_from(None)
}

/// [`drop_reason_names`] from an external BTF file of the running kernel
/// (`Some`), or from the kernel's own BTF (`None`).
///
/// # Examples
///
/// ```no_run
/// use std::path::Path;
///
/// // a kernel without /sys/kernel/btf/vmlinux, its BTF from BTFHub
/// let names = kindling_probe::drop_reason_names_from(Some(Path::new("/opt/btf/5.10.btf")));
/// println!("{} drop reasons", names.len());
/// ```
pub fn drop_reason_names_from(file: Option<&Path>) -> BTreeMap<u32, String> {
    let Some(btf) = kernel_btf(file) else {
        return BTreeMap::new();
    };
    let Some(e) = btf.type_by_name::<types::Enum<'_>>("skb_drop_reason") else {
        return BTreeMap::new();
    };
    e.iter()
        .filter_map(|m| {
            let name = m.name?.to_str()?;
            let name = name.strip_prefix("SKB_DROP_REASON_").unwrap_or(name);
            Some((u32::try_from(m.value).ok()?, name.to_owned()))
        })
        .collect()
}
