#!/bin/sh
# Chaos-proxy benchmark: firedrill's proxy vs a direct connection vs haproxy (mode tcp)
# vs fault-cli, interleaved rounds on loopback. Release build. Prints a Markdown table
# (also written to target/bench-proxy.md).
#   ROUNDS=3 SECS=3 FAULT_BIN=$(command -v fault) benches/proxy.sh
set -eu
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "wrk is required (apt install wrk)" >&2; exit 2; }
command -v haproxy >/dev/null || echo "haproxy not found: its row is skipped" >&2
if [ -z "${FAULT_BIN:-}" ] && command -v fault >/dev/null; then FAULT_BIN=$(command -v fault); fi
export FAULT_BIN="${FAULT_BIN:-}"
cargo bench --bench proxy
