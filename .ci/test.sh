#!/usr/bin/env bash
# The whole test suite: install what is needed, check formatting and lints,
# run every test (root tests load the real probe; under CI=true they must).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
rustup component list --installed 2>/dev/null | grep -q '^rustfmt' || rustup component add rustfmt clippy || true

cargo fmt --all --check
cargo clippy --workspace --all-targets --all-features --locked -- -D warnings
# The pure half of the probe crate must build without clang/libbpf.
cargo build -p kindling-probe --no-default-features --locked
cargo test --workspace --locked
cargo test -p kindling-probe --features tokio --locked --test async_probe
# The probe's live tests again, reading kernel memory the way kernels before
# 6.2 need (helper reads, in-flight calls by thread id): that way runs here too.
KINDLING_TEST_COMPAT=1 cargo test -p kindling-probe --locked --test live --test filters --test exec_comm
# And as on a kernel without BTF: raw tracepoints, the kernel's types from a
# file (--btf), here a copy of this kernel's own.
btf=$(mktemp)
cp /sys/kernel/btf/vmlinux "$btf"
KINDLING_TEST_BTF=$btf cargo test -p kindling-probe --locked --test live --test filters --test exec_comm --test packets
rm -f "$btf"
cargo test -p kindling-probe --no-default-features --locked --test capture
# The probe's live tests inside Debian's 5.10, 6.1 and 6.12 kernels (qemu).
bash .ci/kernels.sh
# The probe built for arm64, loaded and checked inside Debian's arm64 6.1
# and 6.12 kernels (qemu).
bash .ci/arm64.sh
# The packaged probe crate carries its BPF sources.
cargo package -p kindling-probe --list --allow-dirty | grep -qx 'bpf/kindling.bpf.c'
echo "all checks passed"
