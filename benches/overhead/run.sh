#!/usr/bin/env bash
# Overhead harness: nginx (Debian nginx-light) serving a small response on
# loopback under wrk keep-alive load, alternating in one run between
#   none      no tracer
#   floor     kindling's hooks attached, every program returns at once
#   kindling  `kindling record` capturing payloads to a file
#   tcpdump   `tcpdump -w` on lo
# and reporting throughput, latency, ratios to `none`, events/s and losses.
# A last, separate kindling run with kernel BPF stats on shows where the
# time goes (BPF programs vs the user-space recorder).
#
# Usage (root): bash benches/overhead/run.sh [SECONDS_PER_RUN=10] [ROUNDS=5]
# ROUNDS=0 makes only the profiled run (cost per BPF program run).
# KINDLING_BEFORE=/path/to/an/older/kindling adds a mode `before` (that
# binary's `record`) to every round and a profiled run of it, for a
# before/after comparison in one run.
set -euo pipefail
DUR=${1:-10}
ROUNDS=${2:-5}
CONNS=${CONNS:-32}
cd "$(dirname "$0")/../.."
root=$(pwd)

for p in nginx-light wrk tcpdump bpftool; do
  dpkg -s "$p" >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$p"; }
done
cargo build --release -q -p kindling-cli
kindling=$root/target/release/kindling
before=${KINDLING_BEFORE:-}
modes=(none floor kindling tcpdump)
[ -z "$before" ] || modes=(none floor kindling before tcpdump)

# On disk, not tmpfs: first writes to fresh tmpfs pages are slow on VMs and
# would charge both recorders for the hypervisor. Both write to the same place.
work=$(mktemp -d /var/tmp/kindling-overhead.XXXXXX)
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
wrk -t1 -c"$CONNS" -d2s "http://127.0.0.1:$port/" >/dev/null   # warm-up

# Starts the tracer for MODE in the background; waits until it is attached.
start_tracer() {
  local mode=$1
  tracer_pid=""
  case $mode in
    none) ;;
    floor|kindling|profiled|before|before-profiled)
      local extra=() bin=$kindling
      [ "$mode" = floor ] && extra=(--hooks-only)
      [[ $mode == before* ]] && bin=$before
      rm -f "$work/k.kcap"
      "$bin" record -o "$work/k.kcap" --port "$port" --quiet "${extra[@]}" 2>"$work/k.err" &
      tracer_pid=$!
      for _ in $(seq 300); do [ -s "$work/k.kcap" ] && break; sleep 0.1; done
      if ! kill -0 "$tracer_pid" 2>/dev/null || [ ! -s "$work/k.kcap" ]; then
        cat "$work/k.err" >&2; echo "overhead: kindling did not start" >&2; exit 1
      fi
      ;;
    tcpdump)
      tcpdump -i lo -s 0 -U -w "$work/t.pcap" "tcp port $port" 2>"$work/t.err" &
      tracer_pid=$!
      for _ in $(seq 100); do grep -q listening "$work/t.err" 2>/dev/null && break; sleep 0.1; done
      ;;
  esac
  sleep 0.5
}

stop_tracer() {
  if [ -n "$tracer_pid" ]; then
    kill -INT "$tracer_pid"; wait "$tracer_pid" 2>/dev/null || true
    tracer_pid=""
  fi
}

to_us() { # wrk latency like 812.00us / 1.20ms / 2.00s -> microseconds
  awk -v v="$1" 'BEGIN{ n=v+0; if (v ~ /ms$/) n*=1000; else if (v ~ /[^m]s$/ && v !~ /us$/) n*=1000000; printf "%.1f", n }'
}

results=$work/results.tsv
: > "$results"
run_one() {
  local mode=$1 round=$2
  start_tracer "$mode"
  # CPU the recorder used before the load (loading the programs) is not overhead.
  local ticks0=0
  [[ $mode == *profiled ]] && ticks0=$(awk '{print $14+$15}' "/proc/$tracer_pid/stat")
  local out; out=$(wrk -t1 -c"$CONNS" -d"${DUR}s" --latency "http://127.0.0.1:$port/")
  local extra=""
  if [[ $mode == *profiled ]]; then
    # Sum BPF run time of kindling's programs while the load ran.
    extra=$(bpftool prog show -j | python3 -c '
import json, sys
tot = cnt = 0
per = []
for p in json.load(sys.stdin):
    # the programs of bpf/kindling.bpf.c, by name; the recorder is
    # the only BPF user on these machines.
    name = p.get("name", "")
    if name.startswith(("sys_enter", "sys_exit", "on_")):
        t, c = p.get("run_time_ns", 0), p.get("run_cnt", 0)
        tot += t; cnt += c
        if c:
            per.append(f"{name}={c}x{t // c}ns")
print(f"{tot} {cnt} " + ",".join(per))')
    local ticks; ticks=$(awk -v t0="$ticks0" '{print $14+$15-t0}' "/proc/$tracer_pid/stat")
    extra="${extra% *} $ticks ${extra##* }"
  fi
  stop_tracer
  local rps lat p99 events lost
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  lat=$(to_us "$(awk '/^    Latency/ {print $2; exit}' <<<"$out")")
  p99=$(to_us "$(awk '/^ +99%/ {print $2; exit}' <<<"$out")")
  events="-"; lost="-"
  if [[ $mode == kindling || $mode == before || $mode == *profiled ]]; then
    events=$(sed -n 's/.*wrote \([0-9]*\) events (\([0-9]*\)\/s.*/\2/p' "$work/k.err")
    lost=$(sed -n 's/.*ring_full=\([0-9]*\) pending_full=\([0-9]*\) undecodable=\([0-9]*\).*/\1+\2+\3/p' "$work/k.err")
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$mode" "$round" "$rps" "$lat" "$p99" "$events" "$lost" "$extra" >> "$results"
  printf '%-9s round %s: %10s req/s  avg %8s us  p99 %8s us  events/s %8s  lost %s %s\n' \
    "$mode" "$round" "$rps" "$lat" "$p99" "$events" "$lost" "$extra" >&2
  rm -f "$work/k.kcap" "$work/t.pcap"
}

for r in $(seq "$ROUNDS"); do
  for m in "${modes[@]}"; do run_one "$m" "$r"; done
done
sysctl -qw kernel.bpf_stats_enabled=1
run_one profiled 1
[ -z "$before" ] || run_one before-profiled 1
sysctl -qw kernel.bpf_stats_enabled=0

python3 - "$results" "$DUR" <<'PY'
import sys, statistics as st
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
dur = float(sys.argv[2])
by, rounds = {}, {}
for m, r, rps, lat, p99, ev, lost, extra in rows:
    by.setdefault(m, []).append((float(rps), float(lat), float(p99), ev, lost, extra))
    rounds.setdefault(r, {})[m] = float(rps)
def profiled(mode="profiled"):
    p = by.get(mode)
    if not p:
        return
    rps, _, _, ev, lost, extra = p[0]
    parts = extra.split()
    ns, cnt, ticks = (float(v) for v in parts[:3])
    per = parts[3] if len(parts) > 3 else "-"
    cpu_user = ticks / 100.0
    print(f"{mode} run (BPF stats on): {rps:.0f} req/s, {ev} events/s, lost {lost}; "
          f"BPF programs {ns/1e9:.2f} s CPU over {cnt:.0f} runs ({ns/max(cnt,1):.0f} ns/run, "
          f"{100*ns/1e9/dur:.1f}% of one core); recorder process {cpu_user:.2f} s CPU "
          f"({100*cpu_user/dur:.1f}% of one core) over {dur:.0f} s of load")
    print(f"per program (runs x ns/run): {per}")
    print(f"BPF time per HTTP request (both ends): {ns / max(rps * dur, 1):.0f} ns "
          f"({cnt / max(rps * dur, 1):.1f} program runs per request)")
def profiled_all():
    profiled()
    profiled("before-profiled")
if "none" not in by:
    profiled_all()
    sys.exit(0)
# The machine's speed drifts between rounds; each round runs the four modes
# back to back, so compare every mode with the `none` run of its own round.
ratio = {m: st.median(rd[m] / rd["none"] for rd in rounds.values() if m in rd and "none" in rd)
         for m in ["none", "floor", "kindling", "before", "tcpdump"] if m in by}
print("| mode | req/s (median) | vs none (median of per-round ratios) | throughput loss | avg latency us | p99 latency us | events/s | lost |")
print("|---|---|---|---|---|---|---|---|")
loss = {}
for m in ratio:
    xs = by[m]
    loss[m] = 100 * (1 - ratio[m])
    ev = ",".join(x[3] for x in xs)
    lost = ",".join(x[4] for x in xs)
    print(f"| {m} | {st.median(x[0] for x in xs):.0f} | {ratio[m]:.3f} | {loss[m]:.1f}% | "
          f"{st.median(x[1] for x in xs):.0f} | {st.median(x[2] for x in xs):.0f} | {ev} | {lost} |")
print()
print("per round (req/s):", "; ".join(
    f"r{r}: " + " ".join(f"{m}={rd[m]:.0f}" for m in ratio if m in rd)
    for r, rd in sorted(rounds.items())))
for m in ["kindling", "before"]:
    if m not in loss:
        continue
    print(f"{m} loss - floor loss = {loss[m] - loss['floor']:.1f} points (target <= 10)")
    if loss["tcpdump"] > 0:
        print(f"{m} loss / tcpdump loss = {loss[m] / loss['tcpdump']:.2f} (target <= 0.5)")
profiled_all()
PY
