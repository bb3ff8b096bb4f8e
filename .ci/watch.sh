#!/usr/bin/env bash
# Main job: install what is needed, build, and watch this host's sockets live.
# Extra arguments go to `kindling watch` (e.g. --port 80 -o json).
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/setup.sh
exec cargo run --release -q -p kindling-cli --bin kindling -- watch "$@"
