#!/usr/bin/env bash
# Run a private Docker Engine for tests: its own socket, data root and bridge.
#
# Usage:
#   eval "$(hack/dockerd.sh start)"   # starts it if needed, then prints DOCKER_HOST=unix://...
#   hack/dockerd.sh status            # exit 0 + DOCKER_HOST=... if it answers, else exit 3
#   hack/dockerd.sh stop              # stops it (and the containers it runs)
#
# Only the eval-able line goes to stdout; progress and errors go to stderr.
# Idempotent: start on a running daemon just prints DOCKER_HOST; parallel
# callers serialise on a flock in the state directory.
#
# Environment:
#   EDGEFLEET_DOCKER_DIR     state dir (default /var/lib/edgefleet-docker): docker.sock,
#                            data/ (images, containers), exec/ (runtime state, its
#                            own containerd), docker.pid, dockerd.log
#   EDGEFLEET_DOCKER_NET     auto (default) | bridge | none
#                            bridge: containers get an address on our own bridge
#                              (EDGEFLEET_DOCKER_BRIDGE, EDGEFLEET_DOCKER_CIDR) with
#                              iptables NAT and published ports (-p) like a normal host.
#                            none: --bridge=none --iptables=false --ip-forward=false;
#                              containers get only loopback (or --network host).
#                            auto: bridge when this host can create a bridge and use the
#                              iptables nat table, otherwise none.
#   EDGEFLEET_DOCKER_BRIDGE  bridge name (default efdocker0; not docker0, so a system
#                            dockerd on the same host keeps its own)
#   EDGEFLEET_DOCKER_CIDR    bridge address (default 172.29.0.1/24)
#   EDGEFLEET_DOCKER_TIMEOUT seconds to wait for the daemon to answer (default 60)
#   DOCKERD                  dockerd binary (default: dockerd on PATH)
#
# Installs the Debian package docker.io with apt-get when dockerd is missing.
set -euo pipefail

# One { ... } block: bash parses the whole script before running it.
{
DIR="${EDGEFLEET_DOCKER_DIR:-/var/lib/edgefleet-docker}"
NET="${EDGEFLEET_DOCKER_NET:-auto}"
BRIDGE="${EDGEFLEET_DOCKER_BRIDGE:-efdocker0}"
CIDR="${EDGEFLEET_DOCKER_CIDR:-172.29.0.1/24}"
TIMEOUT="${EDGEFLEET_DOCKER_TIMEOUT:-60}"
SOCK="$DIR/docker.sock"
PIDFILE="$DIR/docker.pid"
LOG="$DIR/dockerd.log"
HOST="unix://$SOCK"

log() { echo "[dockerd.sh] $*" >&2; }
die() { echo "dockerd.sh: ERROR: $*" >&2; exit 1; }

usage() { sed -n '2,31p' "$0" | sed 's/^# \{0,1\}//' >&2; }

# A unix socket path must fit in sun_path (108 bytes including the NUL).
(( ${#SOCK} < 100 )) || die "socket path $SOCK is too long for a unix socket; use a shorter EDGEFLEET_DOCKER_DIR"

daemon_pid() { # prints the pid of our live dockerd, or nothing
  [[ -f "$PIDFILE" ]] || return 0
  local pid; pid="$(cat "$PIDFILE" 2>/dev/null || true)"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 0
  [[ -r "/proc/$pid/comm" && "$(cat "/proc/$pid/comm")" == dockerd ]] || return 0
  # A killed daemon whose parent never reaps it stays a zombie: not alive.
  [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != Z ]] || return 0
  echo "$pid"
}

# The daemon answers the Engine API on our socket (/_ping needs no client binary).
answers() {
  [[ -S "$SOCK" ]] || return 1
  if command -v curl >/dev/null; then
    [[ "$(curl -s --max-time 5 --unix-socket "$SOCK" http://localhost/_ping 2>/dev/null)" == OK ]]
  else
    python3 - "$SOCK" <<'EOF' >/dev/null 2>&1
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5); s.connect(sys.argv[1])
s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
data = b""
while chunk := s.recv(4096):
    data += chunk
sys.exit(0 if data.split(b"\r\n\r\n", 1)[-1] == b"OK" else 1)
EOF
  fi
}

print_host() { printf 'DOCKER_HOST=%s\n' "$HOST"; }

install_docker() {
  command -v "${DOCKERD:-dockerd}" >/dev/null && return 0
  command -v apt-get >/dev/null || die "dockerd is not installed and apt-get is not available"
  log "dockerd not found; installing docker.io with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q docker.io >&2; then
    apt-get update -q >&2 || die "apt-get update failed"
    apt-get install -y -q docker.io >&2 || die "apt-get install docker.io failed"
  fi
  command -v "${DOCKERD:-dockerd}" >/dev/null || die "docker.io installed but dockerd is still not on PATH"
}

# Can this host give containers a bridge with NAT? (Some sandboxes forbid
# creating links or have no nat table.)
bridge_works() {
  command -v ip >/dev/null && command -v iptables >/dev/null || return 1
  iptables -t nat -L -n >/dev/null 2>&1 || return 1
  ip link show "$BRIDGE" >/dev/null 2>&1 && return 0
  local probe="efprobe$$"
  ip link add "$probe" type bridge >/dev/null 2>&1 || return 1
  ip link del "$probe" >/dev/null 2>&1 || true
}

ensure_bridge() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge || die "cannot create bridge $BRIDGE"
  fi
  if ! ip -4 addr show dev "$BRIDGE" | grep -q "inet $CIDR"; then
    ip -4 addr flush dev "$BRIDGE"
    ip addr add "$CIDR" dev "$BRIDGE" || die "cannot assign $CIDR to $BRIDGE"
  fi
  ip link set "$BRIDGE" up
}

network_flags() { # prints one flag per line
  local mode="$NET"
  if [[ "$mode" == auto ]]; then
    if bridge_works; then mode=bridge; else mode=none; fi
  fi
  case "$mode" in
    bridge)
      ensure_bridge
      printf '%s\n' "--bridge=$BRIDGE"
      log "networking: bridge $BRIDGE ($CIDR) with iptables NAT and port publishing"
      ;;
    none)
      printf '%s\n' --bridge=none --iptables=false --ip-forward=false --ip-masq=false
      log "networking: none (containers get loopback only; use network_mode=host for host networking)"
      ;;
    *) die "EDGEFLEET_DOCKER_NET must be auto, bridge or none, got '$NET'" ;;
  esac
}

start() {
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"
  flock 9
  if [[ -n "$(daemon_pid)" ]] && answers; then
    print_host
    return 0
  fi
  install_docker
  local pid; pid="$(daemon_pid)"
  if [[ -n "$pid" ]]; then
    # A daemon that does not answer within 15 s is wedged or left over from a
    # killed run (CI ends every process of the session): replace it.
    local settle=$((SECONDS + 15))
    until answers || [[ -z "$(daemon_pid)" ]] || (( SECONDS >= settle )); do sleep 0.2; done
    if ! answers; then
      log "dockerd pid $pid does not answer; replacing it"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
      pid=""
    fi
  fi
  if [[ -z "$pid" ]]; then
    rm -f "$PIDFILE" "$SOCK"
    local flags=()
    mapfile -t flags < <(network_flags)
    (( ${#flags[@]} > 0 )) || die "could not choose network flags"
    mkdir -p "$DIR/data" "$DIR/exec"
    log "starting dockerd (log: $LOG)"
    {
      echo "=== $(date -u +%FT%TZ) start: ${flags[*]}"
    } >>"$LOG"
    # setsid: the daemon must outlive this script and the test process that ran it.
    setsid "${DOCKERD:-dockerd}" \
      --host "$HOST" \
      --data-root "$DIR/data" \
      --exec-root "$DIR/exec" \
      --pidfile "$PIDFILE" \
      --log-driver json-file \
      "${flags[@]}" \
      </dev/null >>"$LOG" 2>&1 9>&- &
    pid=$!   # setsid execs dockerd in place (a background job is no group leader)
    disown || true
  else
    log "dockerd pid $pid is up but does not answer yet; waiting"
  fi
  local deadline=$((SECONDS + TIMEOUT))
  until answers; do
    if (( SECONDS >= deadline )); then
      die "dockerd did not answer on $SOCK within ${TIMEOUT}s; last log lines:
$(tail -n 25 "$LOG" 2>/dev/null)"
    fi
    if ! kill -0 "$pid" 2>/dev/null; then
      die "dockerd exited during startup; last log lines:
$(tail -n 25 "$LOG" 2>/dev/null)"
    fi
    sleep 0.2
  done
  log "dockerd is up: $HOST"
  print_host
}

stop() {
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"
  flock 9
  local pid; pid="$(daemon_pid)"
  if [[ -z "$pid" ]]; then
    log "not running"
    rm -f "$PIDFILE"
    return 0
  fi
  log "stopping dockerd pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while [[ -d "/proc/$pid" ]] && [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" == dockerd ]]; do
    if (( SECONDS >= deadline )); then
      log "dockerd did not exit within 30s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 1
      break
    fi
    sleep 0.2
  done
  rm -f "$PIDFILE" "$SOCK"
  log "stopped"
}

status() {
  if [[ -n "$(daemon_pid)" ]] && answers; then
    print_host
    return 0
  fi
  log "not running (state dir $DIR)"
  return 3
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  -h|--help) usage ;;
  *) usage; exit 2 ;;
esac
exit $?
}
