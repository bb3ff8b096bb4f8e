#!/usr/bin/env bash
# Installs what building and testing Kindling needs on Debian 12, and mounts
# tracefs and bpffs. Idempotent: installs only what is missing.
set -euo pipefail

# Servers the live tests run with throwaway configurations (the packaged
# services are not used): nginx-light (bodies sent with sendfile(2)),
# dnsmasq + dig (DNS search lists), redis (pub/sub), mariadb (connections
# joined mid-way, failed logins, refusals), prometheus (scrapes the agent),
# openssl (a throwaway certificate for /metrics over TLS), kubectl (checks
# that the test Kubernetes API server speaks the real API), nftables +
# iproute2 (pods in network namespaces behind a ClusterIP DNAT rule),
# iptables (its nftables backend's rules named by nftables tracing),
# tshark (reads what `kindling dump` writes), tmux (drives the live view).
need=(clang llvm libelf-dev zlib1g-dev libssl-dev openssl pkg-config make gcc bpftool curl python3 ca-certificates util-linux mount nginx-light dnsmasq-base dnsutils redis-server redis-tools mariadb-server mariadb-client prometheus nftables iptables iproute2 procps tshark tmux)
missing=()
for p in "${need[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
# any kubectl will do (Debian's is kubernetes-client)
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo is not on PATH; install Rust (rustup) first" >&2
  exit 1
fi

# The probe mounts these itself when it can; doing it here keeps tests honest
# about what they need.
if [ "$(id -u)" = 0 ]; then
  mountpoint -q /sys/kernel/tracing || mount -t tracefs tracefs /sys/kernel/tracing || true
  mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf || true
fi
