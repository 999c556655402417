#!/usr/bin/env bash
# A lab for SSH drills on one machine: an `engine` network namespace, where
# firedrill runs, and N "hosts" (namespaces, default 3), each with its own sshd on
# port 22 and a small HTTP service on :8080, joined by a bridge. Run as root.
#
#   engine br0 10.89.0.1/24 ── web1 10.89.0.11, web2 10.89.0.12, web3 10.89.0.13
#
#   scenarios/lab/ssh-lab.sh up       create the hosts, keys, known_hosts; start sshd + HTTP
#   scenarios/lab/ssh-lab.sh down     stop everything, delete the namespaces and keys
#   scenarios/lab/ssh-lab.sh status   what is there
#
# Then:  ip netns exec fdsshlab-engine firedrill run scenarios/ssh-fleet.yaml
#
# Host and user keys are generated into /run/<prefix>/ (with a known_hosts naming
# every host's key), and each sshd runs with its own config from there: the
# machine's own sshd, its keys and ~/.ssh are never touched. Addresses exist only
# inside the lab's namespaces. The hosts share this machine's processes and files
# (only their networks are their own): a scenario names a host's processes by
# something only that host has (the address its server binds). FDSSHLAB_PREFIX (default `fdsshlab`) names
# everything; FDSSHLAB_HOSTS (default 3, at most 50) is the number of hosts.
set -euo pipefail

prefix="${FDSSHLAB_PREFIX:-fdsshlab}"
n="${FDSSHLAB_HOSTS:-3}"
dir="/run/$prefix"
engine="$prefix-engine"

exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

up() {
  if [ "$(id -u)" != 0 ]; then
    echo "ssh-lab: must run as root (it creates network namespaces)" >&2
    exit 1
  fi
  if exists "$engine"; then
    echo "ssh-lab: $engine already exists; run '$0 down' first" >&2
    exit 1
  fi
  for tool in /usr/sbin/sshd ssh ssh-keygen python3; do
    command -v "$tool" >/dev/null || { echo "ssh-lab: $tool is missing (apt-get install openssh-server openssh-client python3)" >&2; exit 1; }
  done
  trap 'down >/dev/null 2>&1' ERR
  mkdir -p -m 700 "$dir" /run/sshd
  ssh-keygen -q -t ed25519 -N '' -C "$prefix host" -f "$dir/host_key"
  ssh-keygen -q -t ed25519 -N '' -C "$prefix user" -f "$dir/user_key"
  cp "$dir/user_key.pub" "$dir/authorized_keys"
  cat > "$dir/sshd_config" <<CONF
Port 22
HostKey $dir/host_key
AuthorizedKeysFile $dir/authorized_keys
PidFile none
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
MaxSessions 100
LogLevel ERROR
CONF
  ip netns add "$engine"
  ip -n "$engine" link add br0 type bridge
  ip -n "$engine" addr add 10.89.0.1/24 dev br0
  ip -n "$engine" link set br0 up
  ip -n "$engine" link set lo up
  : > "$dir/known_hosts"
  for i in $(seq 1 "$n"); do
    ns="$prefix-web$i"
    ip=10.89.0.$((10 + i))
    ip netns add "$ns"
    ip -n "$engine" link add "web$i" type veth peer name eth0 netns "$ns"
    ip -n "$engine" link set "web$i" master br0
    ip -n "$engine" link set "web$i" up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" link set lo up
    echo "$ip $(cut -d' ' -f1,2 "$dir/host_key.pub")" >> "$dir/known_hosts"
    ip netns exec "$ns" /usr/sbin/sshd -f "$dir/sshd_config" -E "$dir/sshd-web$i.log"
    mkdir -p "$dir/www$i"
    echo "ok from web$i" > "$dir/www$i/index.html"
    ip netns exec "$ns" python3 -m http.server 8080 --bind "$ip" --directory "$dir/www$i" \
      >"$dir/http-web$i.log" 2>&1 &
  done
  for i in $(seq 1 "$n"); do
    ip=10.89.0.$((10 + i))
    for _ in $(seq 100); do
      if ip netns exec "$engine" bash -c "exec 3<>/dev/tcp/$ip/22 && exec 4<>/dev/tcp/$ip/8080" 2>/dev/null; then
        break
      fi
      sleep 0.1
    done
  done
  trap - ERR
  echo "lab up: $n hosts web1..web$n (10.89.0.11..), sshd :22 and HTTP :8080 on each;"
  echo "keys and known_hosts in $dir; the engine runs in namespace $engine:"
  echo "  ip netns exec $engine firedrill run scenarios/ssh-fleet.yaml"
}

down() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$prefix-" || true); do
    # Every process the lab left in its namespaces: sshd, HTTP, sessions, watchers.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    ip netns del "$ns"
  done
  rm -rf "$dir"
  echo "lab down"
}

status() {
  ip netns list | awk '{print $1}' | grep "^$prefix-" || echo "no lab namespaces"
  [ -d "$dir" ] && ls "$dir" || true
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
