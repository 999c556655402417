#!/usr/bin/env bash
# Runs the quickstart drill against the demo service that ships with firedrill.
# No root needed. Reports land in reports/quickstart-<UTC timestamp>/; the run's
# ledger stays in firedrill's state directory (as for any drill), so the journal's
# `ledger` path still exists afterwards and `firedrill recover --all` finds it.
#
#   scripts/quickstart.sh            # port 18080
#   PORT=19000 scripts/quickstart.sh
#   FIREDRILL_STATE_DIR=DIR          # another state directory (ledger and locks)
#   FIREDRILL_BIN_DIR=target/debug   # use these binaries, do not build
# Extra arguments go to `firedrill run` (e.g. --report-dir DIR).
set -euo pipefail
cd "$(dirname "$0")/.."

port="${PORT:-18080}"
if [[ -n "${FIREDRILL_BIN_DIR:-}" ]]; then
  bin="$FIREDRILL_BIN_DIR"
else
  cargo build --quiet --bins
  bin=target/debug
fi

# Only what dies with the demo is temporary: its pidfiles and its log.
work="$(mktemp -d "${TMPDIR:-/tmp}/firedrill-quickstart.XXXXXX")"
pidfile="$work/worker.pid"
log="$work/demo.log"
"$bin/firedrill-demo" serve --port "$port" --pidfile "$pidfile" \
  --supervisor-pidfile "$pidfile.supervisor" --restart-delay-ms 2000 2>"$log" &
demo=$!
cleanup() {
  kill "$demo" 2>/dev/null || true
  wait "$demo" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# Wait until the demo's worker listens, or the demo has died (e.g. the port is
# taken): then stop here with the demo's own words, not a puzzling precheck failure
# against whatever else holds the port.
ready=""
for _ in $(seq 100); do
  if grep -q "listening on 127.0.0.1:$port" "$log"; then
    ready=1
    break
  fi
  if ! kill -0 "$demo" 2>/dev/null; then
    break
  fi
  sleep 0.1
done
if [[ -z "$ready" ]]; then
  code=0
  if kill -0 "$demo" 2>/dev/null; then
    echo "error: the demo did not start listening on 127.0.0.1:$port within 10 s; its log:" >&2
  else
    wait "$demo" || code=$?
    echo "error: the demo service exited (code $code) before listening on 127.0.0.1:$port; its log:" >&2
  fi
  sed 's/^/  /' "$log" >&2
  echo "(is another program using port $port? try PORT=19000 $0)" >&2
  exit 1
fi

state_args=()
if [[ -n "${FIREDRILL_STATE_DIR:-}" ]]; then
  state_args=(--state-dir "$FIREDRILL_STATE_DIR")
fi
set +e
"$bin/firedrill" run scenarios/quickstart.yaml \
  --var port="$port" --var pidfile="$pidfile" "${state_args[@]}" "$@"
code=$?
set -e
exit "$code"
