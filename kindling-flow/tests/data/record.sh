#!/usr/bin/env bash
# Records the captures the kindling-flow tests replay, with the real probe
# (root) and real peers on loopback:
#   http1/redis/mysql/dns.kcap  the kindling-proto fixture sessions (nginx +
#                               curl, redis-server + redis-cli, mariadb +
#                               mysql, dnsmasq + dig), kept as captures
#   failures.kcap               a connect to a closed port, a server that never
#                               answers, a reset mid-response, a slow response
#   wrk.kcap, wrk.expected      nginx under wrk: two keep-alive connections,
#                               three pipelined requests a round (one a 404),
#                               150 responses (wrk.lua); wrk's own counts
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

mkdir -p "$work/www/users"
echo hello > "$work/www/index.html"
echo user > "$work/www/users/42"
cat > "$work/nginx.conf" <<CONF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/error.log;
events { worker_connections 64; }
http {
  access_log off;
  client_body_temp_path $work;
  server { listen 127.0.0.1:18190; root $work/www; }
}
CONF
nginx -c "$work/nginx.conf"
"$kindling" record -o "$work/wrk.kcap" --port 18190 --snaplen 16384 --quiet &
recorder=$!
for _ in $(seq 100); do [ -s "$work/wrk.kcap" ] && break; sleep 0.1; done
sleep 0.3
wrk -c 2 -t 1 -d 2s -s "$here/wrk.lua" http://127.0.0.1:18190/ > "$work/wrk.out"
sleep 0.5
kill -INT "$recorder"
wait "$recorder"
kill "$(cat "$work/nginx.pid")"
cp "$work/wrk.kcap" "$here/wrk.kcap"
# "150 requests in 2.00s" and "Non-2xx or 3xx responses: 50"
{
  awk '/requests in/ {print "responses", $1}' "$work/wrk.out"
  awk '/Non-2xx/ {print "non_2xx", $NF}' "$work/wrk.out"
} > "$here/wrk.expected"
cat "$here/wrk.expected"
ls -l "$here"/*.kcap
