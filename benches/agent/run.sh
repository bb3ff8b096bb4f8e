#!/usr/bin/env bash
# Agent cost at fixed request rates (issue 13's numbers; issue 12's "record
# and agent costs separately"): nginx (Debian nginx-light, 1 worker) serves
# a small response on loopback; `fixed_rate` (benches/src/bin) sends GET /
# at 1,000 and 10,000 requests/s over 16 keep-alive connections, measuring
# latency from each request's scheduled time. In every round, for each
# rate, back to back: no tracer, `kindling agent` (metrics only, no file),
# `kindling record` (to a file on disk). Reported per mode and rate
# (medians over rounds): p50/p99 latency, CPU per request split into BPF
# programs (kernel.bpf_stats_enabled, on for every mode) and the tracer
# process, total cores, the tracer's RSS, events lost.
#
# Usage (root): bash benches/agent/run.sh [SECONDS_PER_RUN=10] [ROUNDS=3]
# KINDLING_BEFORE=/path/to/older/kindling adds a mode `before`: that
# binary's agent, run in the same rounds (an A/B of two builds).
set -euo pipefail
DUR=${1:-10}
ROUNDS=${2:-3}
RATES=${RATES:-"1000 10000"}
cd "$(dirname "$0")/../.."
root=$(pwd)

for p in nginx-light bpftool curl; do
  dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p"; }
done
cargo build --release -q -p kindling-cli -p kindling-benches --bin kindling --bin fixed_rate
kindling=$root/target/release/kindling
loader=$root/target/release/fixed_rate

work=$(mktemp -d /var/tmp/kindling-agent-bench.XXXXXX)
nginx_pid=""
tracer_pid=""
cleanup() {
  [ -n "$tracer_pid" ] && kill "$tracer_pid" 2>/dev/null || true
  [ -n "$nginx_pid" ] && kill "$nginx_pid" 2>/dev/null || true
  sysctl -qw kernel.bpf_stats_enabled=0 || true
  rm -rf "$work"
}
trap cleanup EXIT

source benches/nginx.sh
port=$(free_port)
start_nginx "$work/nginx" "$port"
"$loader" "$port" 2000 2 >/dev/null   # warm-up
sysctl -qw kernel.bpf_stats_enabled=1

bpf_ns() { # run time of kindling's programs so far
  bpftool prog show -j | python3 -c '
import json, sys
print(sum(p.get("run_time_ns", 0) for p in json.load(sys.stdin)
          if p.get("name", "").startswith(("sys_", "on_"))))'
}
ticks() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }

start_tracer() {
  local mode=$1
  tracer_pid=""
  case $mode in
    agent|before)
      aport=$(free_port)
      local bin=$kindling
      [ "$mode" = before ] && bin=$KINDLING_BEFORE
      "$bin" agent --listen "127.0.0.1:$aport" --port "$port" 2>"$work/t.err" &
      tracer_pid=$!
      for _ in $(seq 300); do curl -sf "http://127.0.0.1:$aport/readyz" >/dev/null && break; sleep 0.1; done
      ;;
    record)
      rm -f "$work/r.kcap"
      "$kindling" record -o "$work/r.kcap" --port "$port" --quiet 2>"$work/t.err" &
      tracer_pid=$!
      for _ in $(seq 300); do [ -s "$work/r.kcap" ] && break; sleep 0.1; done
      ;;
  esac
  if [ -n "$tracer_pid" ] && ! kill -0 "$tracer_pid" 2>/dev/null; then
    cat "$work/t.err" >&2; echo "agent bench: $mode did not start" >&2; exit 1
  fi
  sleep 0.5
}

results=$work/results.tsv
: > "$results"
run_one() {
  local mode=$1 rate=$2 round=$3
  start_tracer "$mode"
  local b0 t0=0; b0=$(bpf_ns)
  [ -n "$tracer_pid" ] && t0=$(ticks "$tracer_pid")
  local out; out=$("$loader" "$port" "$rate" "$DUR")
  local b1 t1=0 rss=0 lost=0; b1=$(bpf_ns)
  if [ -n "$tracer_pid" ]; then
    t1=$(ticks "$tracer_pid"); rss=$(rss_kb "$tracer_pid")
    if [ "$mode" = agent ] || [ "$mode" = before ]; then
      lost=$(curl -s "http://127.0.0.1:$aport/metrics" | awk '/^kindling_agent_events_lost_total/ {s+=$2} END {print s+0}')
    fi
    kill -INT "$tracer_pid"; wait "$tracer_pid" 2>/dev/null || true
    if [ "$mode" = record ]; then
      lost=$(sed -n 's/.*ring_full=\([0-9]*\) pending_full=\([0-9]*\) undecodable=\([0-9]*\).*/\1+\2+\3/p' "$work/t.err" | tail -1)
      lost=$(( ${lost:-0} ))
    fi
    tracer_pid=""
  fi
  local ok p50 p99
  ok=$(awk '{print $4}' <<<"$out"); p50=$(awk '{print $10}' <<<"$out"); p99=$(awk '{print $12}' <<<"$out")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$rate" "$round" "$ok" "$p50" "$p99" \
    "$((b1 - b0))" "$((t1 - t0))" "$rss" "$lost" >> "$results"
  printf '%-6s %6s/s round %s: %s\n' "$mode" "$rate" "$round" "$out" >&2
  rm -f "$work/r.kcap"
}

for r in $(seq "$ROUNDS"); do
  for rate in $RATES; do
    for m in none ${KINDLING_BEFORE:+before} agent record; do run_one "$m" "$rate" "$r"; done
  done
done

python3 - "$results" "$DUR" <<'PY'
import sys, statistics as st, os
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
dur = float(sys.argv[2])
hz = os.sysconf("SC_CLK_TCK")
by = {}
for mode, rate, rnd, ok, p50, p99, bpf, ticks, rss, lost in rows:
    ok = int(ok)
    bpf_us = int(bpf) / 1e3 / max(ok, 1)
    proc_us = int(ticks) / hz * 1e6 / max(ok, 1)
    by.setdefault((int(rate), mode), []).append(
        (int(p50), int(p99), bpf_us, proc_us, (int(bpf) / 1e9 + int(ticks) / hz) / dur, int(rss) / 1024, int(lost)))
print("| rate | mode | p50 latency | p99 latency | BPF µs/request | process µs/request | cores | RSS MiB | lost |")
print("|---|---|---|---|---|---|---|---|---|")
for (rate, mode), xs in sorted(by.items(), key=lambda k: (k[0][0], ["none", "before", "agent", "record"].index(k[0][1]))):
    m = lambda i: st.median(x[i] for x in xs)
    lost = ",".join(str(x[6]) for x in xs)
    if mode == "none":
        print(f"| {rate:,}/s | none | {m(0):.0f} µs | {m(1):.0f} µs | – | – | – | – | – |")
    else:
        print(f"| {rate:,}/s | {mode} | {m(0):.0f} µs | {m(1):.0f} µs | {m(2):.2f} | {m(3):.2f} | "
              f"{m(4):.3f} | {m(5):.1f} | {lost} |")
PY
