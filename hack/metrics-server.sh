#!/usr/bin/env bash
# Build (once) and cache a real metrics-server binary, for the `kubectl top` test.
#
# Built from the Go module proxy (`go install sigs.k8s.io/metrics-server/cmd/metrics-server@V`),
# sharing the Go module and build caches of hack/k8s-bins.sh.
#
# Usage:
#   eval "$(hack/metrics-server.sh)"    # builds if needed, then prints METRICS_SERVER_BIN=...
#   hack/metrics-server.sh --check      # never builds; exit 3 if not cached
#
# Progress goes to stderr; only the eval-able line goes to stdout.
#
# Environment:
#   EDGEFLEET_CACHE         cache root (default /var/cache/edgefleet); the binary in
#                           $EDGEFLEET_CACHE/metrics-server/<version>/bin/
#   METRICS_SERVER_VERSION  default v0.8.0
#   METRICS_SERVER_BIN      use this binary instead of building (only verified)
#   GO                      go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail
{
VERSION="${METRICS_SERVER_VERSION:-v0.8.0}"
CACHE_ROOT="${EDGEFLEET_CACHE:-/var/cache/edgefleet}"
BIN="$CACHE_ROOT/metrics-server/$VERSION/bin/metrics-server"
CHECK_ONLY=0
case "${1:-}" in
  "") ;;
  --check) CHECK_ONLY=1 ;;
  -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "metrics-server.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac
log() { echo "[metrics-server.sh] $*" >&2; }
die() { echo "metrics-server.sh: ERROR: $*" >&2; exit 1; }
runs() { [[ -x "$1" && -f "$1" ]] && timeout 60 "$1" --help >/dev/null 2>&1; }

if [[ -n "${METRICS_SERVER_BIN:-}" ]]; then
  runs "$METRICS_SERVER_BIN" || die "METRICS_SERVER_BIN=$METRICS_SERVER_BIN does not run"
  printf 'METRICS_SERVER_BIN=%q\n' "$METRICS_SERVER_BIN"
  exit 0
fi
if runs "$BIN"; then
  printf 'METRICS_SERVER_BIN=%q\n' "$BIN"
  exit 0
fi
if (( CHECK_ONLY )); then
  log "not cached at $BIN (run $0 without --check to build)"
  exit 3
fi
GO="${GO:-$(command -v go || echo /usr/local/go/bin/go)}"
[[ -x "$GO" ]] || die "no go toolchain (set GO=...)"
export GOMODCACHE="$CACHE_ROOT/go/pkg/mod" GOCACHE="$CACHE_ROOT/go-build"
export GOFLAGS="-p=2 -modcacherw -buildvcs=false" GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
export GOBIN="$CACHE_ROOT/metrics-server/$VERSION/bin.tmp.$$"
mkdir -p "$GOMODCACHE" "$GOCACHE" "$GOBIN"
log "building sigs.k8s.io/metrics-server $VERSION with $("$GO" version) (a few minutes)"
"$GO" install "sigs.k8s.io/metrics-server/cmd/metrics-server@$VERSION" >&2 || die "go install failed"
mkdir -p "$(dirname "$BIN")"
mv -f "$GOBIN/metrics-server" "$BIN"
rmdir "$GOBIN" 2>/dev/null || true
runs "$BIN" || die "the built $BIN does not run"
log "built $BIN"
printf 'METRICS_SERVER_BIN=%q\n' "$BIN"
exit 0
}
