#!/usr/bin/env bash
# Re-records tests/data/loopback.kcap with the real probe (needs root):
# python3's http.server answering curl over IPv4, refused connects over
# IPv4 and IPv6, and a UDP datagram to a closed port.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
kindling=${KINDLING:-$here/../../../target/release/kindling}
out=$here/loopback.kcap
rm -f "$out"
# (/etc: a directory listing longer than the 512-byte snaplen)
python3 -m http.server 18080 --bind 127.0.0.1 --directory /etc >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
"$kindling" record -o "$out" --port 18080 --port 18081 --port 18082 --snaplen 512 --framing-budget-kb 0 --quiet &
rec=$!
# Wait until the probe is attached (the header is written after attach).
for _ in $(seq 100); do [ -s "$out" ] && break; sleep 0.1; done
sleep 0.5
for _ in 1 2 3; do curl -s -o /dev/null http://127.0.0.1:18080/; done
curl -s http://127.0.0.1:18081/ || true
curl -s -g -6 'http://[::1]:18082/' || true
python3 -c "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'hello udp', ('127.0.0.1', 18081))"
sleep 0.5
kill -INT $rec
wait $rec
