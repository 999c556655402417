#!/usr/bin/env bash
# Runs one WeCom drill (scenarios/wecom/<name>.yaml) against the system that ships
# with firedrill: two WeCom API simulators (the public API and the private
# deployment) and the relay that delivers through them. No root needed for the
# outage drill; the network, token and quota drills need root (nftables).
#
#   scripts/wecom-drill.sh                      # the outage drill, relay as shipped
#   scripts/wecom-drill.sh outage --level smoke # extra arguments go to `firedrill run`
#   RELAY_FLAGS=--safe-failover scripts/wecom-drill.sh outage   # the duplicate fix
#   RELAY_FLAGS=--no-spool scripts/wecom-drill.sh outage        # no spool: loses messages
#
#   PORT_BASE=18100          # relay on PORT_BASE, simulators on +1 (primary), +2 (standby)
#   FIREDRILL_STATE_DIR=DIR  # another state directory (ledger and locks)
#   FIREDRILL_BIN_DIR=DIR    # use these binaries, do not build
#   KEEP_WORK=1              # keep the temp dir (logs, spool, pidfiles)
set -euo pipefail
cd "$(dirname "$0")/.."

name="outage"
if [[ $# -gt 0 && "$1" != -* ]]; then
  name="$1"
  shift
fi
scenario="scenarios/wecom/$name.yaml"
if [[ ! -f "$scenario" ]]; then
  echo "error: no scenario $scenario; one of: $(cd scenarios/wecom && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')" >&2
  exit 2
fi
base="${PORT_BASE:-18100}"
relay_port="$base"
primary_port=$((base + 1))
standby_port=$((base + 2))
if [[ -n "${FIREDRILL_BIN_DIR:-}" ]]; then
  bin="$FIREDRILL_BIN_DIR"
else
  cargo build --quiet --bins
  bin=target/debug
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/firedrill-wecom.XXXXXX")"
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill -CONT "$p" 2>/dev/null || true
    kill "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  if [[ -n "${KEEP_WORK:-}" ]]; then
    echo "logs, spool and pidfiles kept in $work" >&2
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT

# The simulators' secrets and the relay's go through the environment, never argv.
export WECOM_SIM_CORPSECRET="drill-secret-$RANDOM$RANDOM" WECOM_SIM_WEBHOOK_KEY="drill-key-$RANDOM$RANDOM"
export WECOM_CORPID=ww-firedrill-drill WECOM_CORPSECRET="$WECOM_SIM_CORPSECRET" WECOM_WEBHOOK_KEY="$WECOM_SIM_WEBHOOK_KEY"
# A short token lifetime for the token drill: every token expires together.
token_ttl=7200
if [[ "$name" == token-expiry ]]; then token_ttl="${TOKEN_TTL_S:-4}"; fi
"$bin/firedrill-wecom-sim" --port "$primary_port" --name primary --pidfile "$work/primary.pid" \
  --token-ttl-s "$token_ttl" 2>"$work/primary.log" &
pids+=($!)
"$bin/firedrill-wecom-sim" --port "$standby_port" --name standby --pidfile "$work/standby.pid" \
  2>"$work/standby.log" &
pids+=($!)
spool=(--spool "$work/relay.spool")
for f in ${RELAY_FLAGS:-}; do
  if [[ "$f" == --no-spool ]]; then spool=(); fi
done
# shellcheck disable=SC2086 # RELAY_FLAGS is a list of flags
"$bin/firedrill-wecom-relay" --port "$relay_port" \
  --channel "primary=app:http://127.0.0.1:$primary_port" \
  --channel "standby=app:http://127.0.0.1:$standby_port" \
  "${spool[@]}" ${RELAY_FLAGS:-} --pidfile "$work/relay.pid" 2>"$work/relay.log" &
pids+=($!)

# Wait until all three listen, or one has died: then say why and stop.
for _ in $(seq 100); do
  up=0
  for f in primary standby relay; do
    if grep -q "listening on" "$work/$f.log" 2>/dev/null; then up=$((up + 1)); fi
  done
  [[ $up -eq 3 ]] && break
  for p in "${pids[@]}"; do
    if ! kill -0 "$p" 2>/dev/null; then
      echo "error: a simulator or the relay exited before listening; logs:" >&2
      tail -n 5 "$work"/*.log >&2
      exit 1
    fi
  done
  sleep 0.1
done
if [[ $up -ne 3 ]]; then
  echo "error: simulators and relay not listening within 10 s (ports $relay_port-$standby_port taken? try PORT_BASE=19100)" >&2
  tail -n 5 "$work"/*.log >&2
  exit 1
fi

state_args=()
if [[ -n "${FIREDRILL_STATE_DIR:-}" ]]; then
  state_args=(--state-dir "$FIREDRILL_STATE_DIR")
fi
set +e
"$bin/firedrill" run "$scenario" \
  --var relay_port="$relay_port" --var primary_port="$primary_port" \
  --var standby_port="$standby_port" \
  --var primary_pidfile="$work/primary.pid" --var standby_pidfile="$work/standby.pid" \
  "${state_args[@]}" "$@"
code=$?
set -e
exit "$code"
