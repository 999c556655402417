#!/usr/bin/env bash
# Runs the quickstart drill against the demo service that ships with firedrill.
# No root needed. Reports land in reports/quickstart-<UTC timestamp>/.
#
#   scripts/quickstart.sh            # port 18080
#   PORT=19000 scripts/quickstart.sh
set -euo pipefail
cd "$(dirname "$0")/.."

port="${PORT:-18080}"
cargo build --quiet --bins

work="$(mktemp -d "${TMPDIR:-/tmp}/firedrill-quickstart.XXXXXX")"
pidfile="$work/worker.pid"
target/debug/firedrill-demo serve --port "$port" --pidfile "$pidfile" \
  --supervisor-pidfile "$pidfile.supervisor" --restart-delay-ms 2000 2>"$work/demo.log" &
demo=$!
cleanup() {
  kill "$demo" 2>/dev/null || true
  wait "$demo" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# The drill's first precheck waits (within 10 s) for the demo to answer.
set +e
target/debug/firedrill run scenarios/quickstart.yaml \
  --var port="$port" --var pidfile="$pidfile" \
  --state-dir "${FIREDRILL_STATE_DIR:-$work/state}" "$@"
code=$?
set -e
exit "$code"
