#!/usr/bin/env bash
# The probe on arm64: builds bpf/kindling.bpf.c for arm64, boots Debian's
# arm64 cloud kernels (6.1 of bookworm, 6.12 of bookworm-backports) under
# qemu's software emulation, and runs .ci/arm64/check.c inside each, the
# way the loader would (plain loads on 6.12, helper reads on 6.1), with
# helper reads forced, and as on a kernel without BTF (raw tracepoints, the
# kernel's types from a file):
# load (the arm64 verifier), attach, and loopback exchanges whose records
# must carry the right fd, length, direction and payload (the arguments
# read from arm64's saved registers at exit).
#
#   bash .ci/arm64.sh
#
# The Rust crates cannot be built for arm64 here (no aarch64 standard
# library), so a small C program linked with the same libbpf version as
# kindling-probe (libbpf-sys' vendored source, cross-compiled) stands in for
# the loader. Debian packages are downloaded through a private apt
# configuration and cached in $KINDLING_KERNEL_CACHE/arm64-bookworm.
# Exit status: 0 when both runs passed.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
cache=${KINDLING_KERNEL_CACHE:-/var/cache/kindling-kernels}/arm64-bookworm

need=()
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v aarch64-linux-gnu-gcc >/dev/null || need+=(gcc-aarch64-linux-gnu)
command -v clang >/dev/null || need+=(clang)
command -v bpftool >/dev/null || need+=(bpftool)
command -v cpio >/dev/null || need+=(cpio)
command -v make >/dev/null || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
fi

# arm64 packages: the kernel, a static busybox, and libelf/zlib to link with
mkdir -p "$cache/lists/partial" "$cache/archives/partial" "$cache/sysroot"
echo "deb http://deb.debian.org/debian bookworm main" > "$cache/sources.list"
apt=(-q -o "Dir::Etc::SourceList=$cache/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$cache/lists" -o "Dir::Cache=$cache" -o APT::Get::List-Cleanup=0
     -o APT::Architecture=arm64 -o APT::Architectures::=arm64)
if [ ! -e "$cache/sysroot/bin/busybox" ]; then
  apt-get "${apt[@]}" update >/dev/null
  (cd "$cache" && apt-get "${apt[@]}" download busybox-static libelf-dev zlib1g-dev >/dev/null 2>&1)
  for deb in "$cache"/*.deb; do dpkg-deb -x "$deb" "$cache/sysroot"; done
fi
sysroot=$cache/sysroot

# Downloads (once) the newest arm64 cloud kernel of a suite; prints its vmlinuz.
fetch_kernel() {
  local suite=$1 dir=$cache/kernel-$1 kapt pkg
  mkdir -p "$dir/lists/partial" "$dir/archives/partial" "$dir/x"
  echo "deb http://deb.debian.org/debian $suite main" > "$dir/sources.list"
  kapt=(-q -o "Dir::Etc::SourceList=$dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$dir/lists" -o "Dir::Cache=$dir" -o APT::Get::List-Cleanup=0
        -o APT::Architecture=arm64 -o APT::Architectures::=arm64)
  if ! ls "$dir"/x/boot/vmlinuz-* >/dev/null 2>&1; then
    apt-get "${kapt[@]}" update >/dev/null
    pkg=$(apt-cache "${kapt[@]}" depends linux-image-cloud-arm64 | awk '/Depends: linux-image-/ {print $2; exit}')
    (cd "$dir" && apt-get "${kapt[@]}" download "$pkg" >/dev/null 2>&1)
    dpkg-deb -x "$dir"/"$pkg"_*.deb "$dir/x"
  fi
  ls "$dir"/x/boot/vmlinuz-* | head -1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# libbpf, the version kindling-probe links (vendored by libbpf-sys)
src=$(cargo metadata --locked --format-version 1 | python3 -c '
import json, os, sys
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == "libbpf-sys":
        print(os.path.join(os.path.dirname(p["manifest_path"]), "libbpf", "src"))')
echo "building libbpf for arm64 from $src" >&2
make -s -C "$src" CC=aarch64-linux-gnu-gcc BUILD_STATIC_ONLY=1 OBJDIR="$work/libbpf-obj" \
  DESTDIR="$work/libbpf" PREFIX=/usr LIBSUBDIR=lib EXTRA_CFLAGS="-I$sysroot/usr/include" \
  install >/dev/null
inc=$work/libbpf/usr/include

echo "building the probe for arm64" >&2
clang -g -O2 -target bpf -D__TARGET_ARCH_arm64 -I bpf -I "$inc" -Wall -Wno-unused-function \
  -c bpf/kindling.bpf.c -o "$work/kindling.bpf.o"
bpftool gen skeleton "$work/kindling.bpf.o" name kindling > "$work/kindling.skel.h"
mkdir -p "$work/rootfs"/{bin,proc,sys,dev,tmp}
aarch64-linux-gnu-gcc -static -O2 -Wall -I "$work" -I bpf -I "$inc" -I "$sysroot/usr/include" \
  .ci/arm64/check.c "$work/libbpf/usr/lib/libbpf.a" \
  "$sysroot/usr/lib/aarch64-linux-gnu/libelf.a" "$sysroot/usr/lib/aarch64-linux-gnu/libz.a" \
  -o "$work/rootfs/bin/check"

cp "$sysroot/bin/busybox" "$work/rootfs/bin/busybox"
cat > "$work/rootfs/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tracefs tracefs /sys/kernel/tracing
ip link set lo up
echo "ARM64-KERNEL $(uname -r) $(uname -m)"
/bin/check
/bin/check 1
cp /sys/kernel/btf/vmlinux /tmp/vmlinux.btf
/bin/check btf /tmp/vmlinux.btf
echo ARM64-DONE
poweroff -f
INIT
chmod 755 "$work/rootfs/init"
(cd "$work/rootfs" && find . | cpio -o -H newc --quiet | gzip -1) > "$work/initrd.gz"

status=0
for suite in bookworm bookworm-backports; do
  vmlinuz=$(fetch_kernel "$suite")
  log=$work/arm64-$suite.log
  start=$(date +%s)
  timeout 900 qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 2 -m 2048 \
    -kernel "$vmlinuz" -initrd "$work/initrd.gz" -nographic -no-reboot \
    -append "console=ttyAMA0 panic=-1 quiet" > "$log" 2>&1 || true
  took=$(( $(date +%s) - start ))
  running=$(grep -a 'ARM64-KERNEL' "$log" | sed 's/.*ARM64-KERNEL //' | tr -d '\r' || true)
  grep -a 'ARM64-CHECK' "$log" | tr -d '\r' >&2 || true
  passes=$(grep -ac 'ARM64-CHECK pass' "$log" || true)
  if grep -aq ARM64-DONE "$log" && [ "$passes" -eq 3 ] && ! grep -aq 'ARM64-CHECK FAIL' "$log"; then
    echo "arm64 $suite ($running): pass in ${took}s"
  else
    status=1
    mkdir -p "$root/target" && cp "$log" "$root/target/kernel-arm64-$suite.log"
    tail -30 "$log" >&2
    echo "arm64 $suite (${running:-did not boot}): FAIL in ${took}s (see target/kernel-arm64-$suite.log)"
  fi
done
exit $status
