#!/usr/bin/env bash
# A lab for network drills on one machine: two network namespaces joined by a veth
# pair, with a small HTTP service in one of them. Run as root.
#
#   client (10.88.0.1/24) <── veth ──> api (10.88.0.2/24, HTTP on :8080)
#
#   scenarios/lab/netns-lab.sh up       create the namespaces, start the service
#   scenarios/lab/netns-lab.sh down     stop the service, delete the namespaces
#   scenarios/lab/netns-lab.sh status   what is there
#
# Then:  firedrill run scenarios/network-partition.yaml
#
# The addresses exist only inside the two namespaces (no host side), so nothing the
# drill does can reach another machine. FDLAB_PREFIX (default `fdlab`) names
# everything (`<prefix>-client`, `<prefix>-api`), so tests can build private copies;
# FDLAB_PORT (default 8080) is the service port.
set -euo pipefail

prefix="${FDLAB_PREFIX:-fdlab}"
port="${FDLAB_PORT:-8080}"
client="$prefix-client"
api="$prefix-api"
client_ip=10.88.0.1
api_ip=10.88.0.2
run_dir="/run/$prefix"

exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

up() {
  if [ "$(id -u)" != 0 ]; then
    echo "netns-lab: must run as root (it creates network namespaces)" >&2
    exit 1
  fi
  if exists "$client" || exists "$api"; then
    echo "netns-lab: $client or $api already exists; run '$0 down' first" >&2
    exit 1
  fi
  # Whatever fails from here on, leave nothing half-built behind.
  trap 'down >/dev/null 2>&1' ERR
  ip netns add "$client"
  ip netns add "$api"
  ip link add veth0 netns "$client" type veth peer name veth0 netns "$api"
  ip -n "$client" addr add "$client_ip/24" dev veth0
  ip -n "$api" addr add "$api_ip/24" dev veth0
  for ns in "$client" "$api"; do
    ip -n "$ns" link set lo up
    ip -n "$ns" link set veth0 up
  done
  mkdir -p "$run_dir/www"
  echo "ok from $api" > "$run_dir/www/index.html"
  # `ip netns exec` execs python, so $! is the service's pid.
  ip netns exec "$api" python3 -m http.server "$port" --bind "$api_ip" \
    --directory "$run_dir/www" >"$run_dir/http.log" 2>&1 &
  echo $! > "$run_dir/http.pid"
  for _ in $(seq 100); do
    if ip netns exec "$client" bash -c "exec 3<>/dev/tcp/$api_ip/$port" 2>/dev/null; then
      trap - ERR
      echo "lab up: $client ($client_ip) -> $api ($api_ip), HTTP on http://$api_ip:$port/"
      return 0
    fi
    sleep 0.1
  done
  echo "netns-lab: the HTTP service did not come up; see $run_dir/http.log" >&2
  down >/dev/null 2>&1
  exit 1
}

down() {
  if [ -f "$run_dir/http.pid" ]; then
    kill "$(cat "$run_dir/http.pid")" 2>/dev/null || true
  fi
  # Anything else still running inside the lab's namespaces is the lab's own.
  for ns in "$api" "$client"; do
    if exists "$ns"; then
      ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true
      ip netns del "$ns"
    fi
  done
  rm -rf "$run_dir"
  echo "lab down"
}

status() {
  for ns in "$client" "$api"; do
    if exists "$ns"; then
      echo "$ns: $(ip -n "$ns" -brief addr show veth0 2>/dev/null | awk '{print $3}')"
      ip netns exec "$ns" nft list tables 2>/dev/null | sed 's/^/  /'
    else
      echo "$ns: absent"
    fi
  done
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *)
    echo "usage: $0 up|down|status" >&2
    exit 2
    ;;
esac
