#!/usr/bin/env bash
# Records the captures the kindling-flow tests replay, with the real probe
# (root) and real peers on loopback:
#   http1/redis/mysql/dns.kcap  the kindling-proto fixture sessions (nginx +
#                               curl, redis-server + redis-cli, mariadb +
#                               mysql, dnsmasq + dig), kept as captures
#   failures.kcap               a connect to a closed port, a server that never
#                               answers, a reset mid-response, a slow response
# Re-run to refresh; the tests compare the replays against snapshots.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
fixtures=$root/kindling-proto/tests/fixtures
cargo build --release -q -p kindling-cli --manifest-path "$root/Cargo.toml"
for p in http1 redis mysql dns; do
  FLOW_CAPTURE=$here/$p.kcap bash "$fixtures/record-$p.sh" > /dev/null
done

kindling=$root/target/release/kindling
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$kindling" record -o "$work/failures.kcap" --port 18301 --port 18302 --port 18303 --port 18304 \
  --snaplen 16384 --quiet &
recorder=$!
for _ in $(seq 100); do [ -s "$work/failures.kcap" ] && break; sleep 0.1; done
sleep 0.3
python3 "$here/failures.py" 18301 18302 18303 18304
sleep 0.5
kill -INT "$recorder"
wait "$recorder"
cp "$work/failures.kcap" "$here/failures.kcap"
ls -l "$here"/*.kcap
