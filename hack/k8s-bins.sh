#!/usr/bin/env bash
# Build (once) and cache real kube-apiserver and etcd binaries for tests.
#
# No package ships kube-apiserver, so it is built from the Go module proxy with
# a wrapper go module that requires k8s.io/kubernetes and replaces every
# staging module with its published k8s.io/<m> v0.Y.Z; etcd is built the same
# way from go.etcd.io/etcd/server/v3. See hack/K8S_NOTES.md.
#
# Usage:
#   eval "$(hack/k8s-bins.sh)"        # builds if needed, then prints:
#       KUBE_APISERVER_BIN=...  ETCD_BIN=...  [KUBE_SCHEDULER_BIN=...]
#   hack/k8s-bins.sh --check          # never builds; exit 3 if not cached
#
# Progress goes to stderr; only the eval-able lines go to stdout.
#
# Environment:
#   EDGEFLEET_CACHE     cache root (default /var/cache/edgefleet); binaries in
#                       $EDGEFLEET_CACHE/k8s/<K8S_VERSION>/bin/, Go module and
#                       build caches in $EDGEFLEET_CACHE/go*
#   K8S_VERSION         k8s.io/kubernetes version (default v1.34.4)
#   ETCD_VERSION        go.etcd.io/etcd/server/v3 version (default v3.6.8; >= v3.5.13)
#   KUBE_APISERVER_BIN  use this binary instead of building (only verified)
#   ETCD_BIN            use this binary instead of building (only verified)
#   KUBE_SCHEDULER_BIN  use this binary instead of building (only verified)
#   K8S_BUILD_SCHEDULER 1 (default) also builds kube-scheduler; 0 skips it
#   K8S_BUILD_JOBS      go build -p value (default 2)
#   GO                  go command (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

# The whole script is one { ... } block so bash parses it completely before
# running: editing or updating this file during a long build cannot break it.
{
K8S_VERSION="${K8S_VERSION:-v1.34.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.8}"
CACHE_ROOT="${EDGEFLEET_CACHE:-/var/cache/edgefleet}"
BUILD_SCHEDULER="${K8S_BUILD_SCHEDULER:-1}"
JOBS="${K8S_BUILD_JOBS:-2}"
CHECK_ONLY=0

case "${1:-}" in
  "") ;;
  --check) CHECK_ONLY=1 ;;
  -h|--help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "k8s-bins: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

START=$SECONDS
log() { echo "[k8s-bins +$((SECONDS - START))s] $*" >&2; }
die() { echo "k8s-bins: ERROR: $*" >&2; exit 1; }

[[ "$K8S_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] \
  || die "K8S_VERSION must look like v1.34.4, got '$K8S_VERSION'"
K8S_MINOR="${BASH_REMATCH[1]}"
STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"

[[ "$ETCD_VERSION" =~ ^v3\.([0-9]+)\.([0-9]+)$ ]] \
  || die "ETCD_VERSION must look like v3.6.8, got '$ETCD_VERSION'"
if (( BASH_REMATCH[1] < 5 || (BASH_REMATCH[1] == 5 && BASH_REMATCH[2] < 13) )); then
  die "ETCD_VERSION $ETCD_VERSION is too old: kube-apiserver needs etcd >= v3.5.13"
fi

BIN_DIR="$CACHE_ROOT/k8s/$K8S_VERSION/bin"
ETCD_BUILD_DIR="$CACHE_ROOT/etcd/$ETCD_VERSION/bin"

# --- verification -----------------------------------------------------------

# version_of <binary>: first line of its --version output ("" if it fails).
version_of() {
  [[ -x "$1" && -f "$1" ]] || return 0
  timeout 60 "$1" --version 2>/dev/null | head -n1 || true
}

apiserver_ok() { # <bin> <want or "">
  local v; v="$(version_of "$1")"
  [[ "$v" == Kubernetes\ v* ]] || return 1
  [[ -z "$2" || "$v" == "Kubernetes $2" ]]
}
scheduler_ok() { apiserver_ok "$@"; }
etcd_ok() { # <bin> <want or "">
  local v; v="$(version_of "$1")"
  [[ "$v" == "etcd Version: "* ]] || return 1
  [[ -z "$2" || "$v" == "etcd Version: ${2#v}" ]]
}

verify_user_bin() { # <VAR name> <check fn>
  local name="$1" fn="$2" path="${!1}"
  [[ -x "$path" ]] || die "$name=$path is not an executable file"
  "$fn" "$path" "" || die "$name=$path does not run or is not the right program: '$path --version' printed '$(version_of "$path")'"
  log "using $name=$path ($(version_of "$path"))"
}

need_apiserver() { [[ -z "${KUBE_APISERVER_BIN:-}" ]] && ! apiserver_ok "$BIN_DIR/kube-apiserver" "$K8S_VERSION"; }
need_etcd() { [[ -z "${ETCD_BIN:-}" ]] && ! etcd_ok "$BIN_DIR/etcd" "$ETCD_VERSION"; }
need_scheduler() {
  [[ "$BUILD_SCHEDULER" == 1 && -z "${KUBE_SCHEDULER_BIN:-}" ]] \
    && ! scheduler_ok "$BIN_DIR/kube-scheduler" "$K8S_VERSION"
}

print_result() {
  local a="${KUBE_APISERVER_BIN:-$BIN_DIR/kube-apiserver}"
  local e="${ETCD_BIN:-$BIN_DIR/etcd}"
  printf 'KUBE_APISERVER_BIN=%q\n' "$a"
  printf 'ETCD_BIN=%q\n' "$e"
  local s="${KUBE_SCHEDULER_BIN:-$BIN_DIR/kube-scheduler}"
  if [[ -n "${KUBE_SCHEDULER_BIN:-}" ]] || scheduler_ok "$s" "$K8S_VERSION"; then
    printf 'KUBE_SCHEDULER_BIN=%q\n' "$s"
  fi
  log "done: $(version_of "$a"); $(version_of "$e")"
}

[[ -n "${KUBE_APISERVER_BIN:-}" ]] && verify_user_bin KUBE_APISERVER_BIN apiserver_ok
[[ -n "${ETCD_BIN:-}" ]] && verify_user_bin ETCD_BIN etcd_ok
[[ -n "${KUBE_SCHEDULER_BIN:-}" ]] && verify_user_bin KUBE_SCHEDULER_BIN scheduler_ok

# Fast path: everything already cached (or supplied).
if ! need_apiserver && ! need_etcd && ! need_scheduler; then
  print_result
  exit 0
fi
if (( CHECK_ONLY )); then
  log "not cached in $BIN_DIR (run $0 without --check to build)"
  exit 3
fi

# --- build environment ------------------------------------------------------

mkdir -p "$CACHE_ROOT" 2>/dev/null && [[ -w "$CACHE_ROOT" ]] \
  || die "cache dir $CACHE_ROOT is not writable; set EDGEFLEET_CACHE to a writable directory"

# One build at a time per cache (parallel test runs may all call this script).
exec 9>"$CACHE_ROOT/.k8s-bins.lock"
if ! flock -n 9; then
  log "another k8s-bins build holds $CACHE_ROOT/.k8s-bins.lock; waiting"
  flock 9
fi
# Re-check now that we hold the lock: the other build may have done our work.
if ! need_apiserver && ! need_etcd && ! need_scheduler; then
  print_result
  exit 0
fi

GO="${GO:-$(command -v go || true)}"
[[ -n "$GO" ]] || GO=/usr/local/go/bin/go
[[ -x "$GO" ]] || die "no go toolchain found (set GO=/path/to/go; install from go.dev or apt golang)"
command -v timeout >/dev/null || die "coreutils timeout is needed"

export GOPATH="$CACHE_ROOT/go"
export GOMODCACHE="$CACHE_ROOT/go/pkg/mod"
export GOCACHE="$CACHE_ROOT/go-build"
export CGO_ENABLED=0
# -modcacherw: the module cache can be removed with plain rm -rf.
export GOFLAGS="-p=$JOBS -modcacherw -buildvcs=false"
export GOPROXY="${GOPROXY:-https://proxy.golang.org,direct}"
unset GOOS GOARCH GOWORK || true
export GOWORK=off
mkdir -p "$GOMODCACHE" "$GOCACHE" "$BIN_DIR" "$ETCD_BUILD_DIR" "$CACHE_ROOT/src"

log "go: $("$GO" version) (GOPROXY=$GOPROXY)"
log "cache: $CACHE_ROOT  (binaries: $BIN_DIR)"

NICE=(nice -n 10)
command -v ionice >/dev/null && NICE=(ionice -c 3 nice -n 10)

# run_step <description> <command...>: runs niced, prints elapsed time and a
# heartbeat every 60s so a caller polling the log sees progress.
HB_PID=""
trap '[[ -n "$HB_PID" ]] && kill "$HB_PID" 2>/dev/null; true' EXIT
run_step() {
  local what="$1"; shift
  local t0=$SECONDS rc=0
  log "$what ..."
  ( while sleep 60; do log "  ... still: $what ($((SECONDS - t0))s)"; done ) &
  HB_PID=$!
  "${NICE[@]}" "$@" || rc=$?
  kill "$HB_PID" 2>/dev/null || true
  wait "$HB_PID" 2>/dev/null || true
  HB_PID=""
  if (( rc != 0 )); then
    die "step failed (exit $rc) after $((SECONDS - t0))s: $what"
  fi
  log "$what: ok in $((SECONDS - t0))s"
}

# --- kube-apiserver (+ kube-scheduler) ------------------------------------------

build_kubernetes() {
  local src="$CACHE_ROOT/src/kubernetes-$K8S_VERSION"
  mkdir -p "$src"
  cd "$src"
  if [[ ! -f go.mod ]]; then
    "$GO" mod init example.invalid/k8sbins >/dev/null 2>&1 || die "go mod init failed in $src"
  fi

  # The staging modules are exactly the "=> ./staging/..." replaces of
  # k8s.io/kubernetes' own go.mod (31 for 1.34/1.35, 33 from 1.36).
  local kmod
  kmod="$("$GO" list -m -f '{{.GoMod}}' "k8s.io/kubernetes@$K8S_VERSION" 2>&1)" \
    || die "cannot fetch k8s.io/kubernetes@$K8S_VERSION from the module proxy: $kmod"
  local staging
  staging="$(sed -nE 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+)[[:space:]]+=>[[:space:]]+\./staging/.*#\1#p' "$kmod")"
  [[ -n "$staging" ]] || die "found no staging replaces in $kmod"
  log "k8s.io/kubernetes $K8S_VERSION: $(wc -w <<<"$staging") staging modules -> $STAGING_VERSION"

  local args=() m
  for m in $staging; do args+=("-replace=$m=$m@$STAGING_VERSION"); done
  # Keep kubernetes' own GODEBUG defaults (e.g. "godebug default=go1.24").
  local gd
  while read -r gd; do
    [[ -n "$gd" ]] && args+=("-godebug=$gd")
  done < <(sed -nE 's/^godebug[[:space:]]+([^ (]+=[^ ]+)[[:space:]]*$/\1/p' "$kmod")
  "$GO" mod edit "${args[@]}"

  local pkgs=(k8s.io/kubernetes/cmd/kube-apiserver)
  [[ "$BUILD_SCHEDULER" == 1 && -z "${KUBE_SCHEDULER_BIN:-}" ]] && pkgs+=(k8s.io/kubernetes/cmd/kube-scheduler)
  local getargs=() p
  for p in "${pkgs[@]}"; do getargs+=("$p@$K8S_VERSION"); done
  run_step "go get k8s.io/kubernetes@$K8S_VERSION (download modules)" "$GO" get "${getargs[@]}"

  local date
  date="$("$GO" list -m -f '{{if .Time}}{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}{{end}}' k8s.io/kubernetes)"
  local ld="-s -w"
  ld+=" -X k8s.io/component-base/version.gitVersion=$K8S_VERSION"
  ld+=" -X k8s.io/component-base/version.gitMajor=1"
  ld+=" -X k8s.io/component-base/version.gitMinor=$K8S_MINOR"
  ld+=" -X k8s.io/component-base/version.gitTreeState=clean"
  [[ -n "$date" ]] && ld+=" -X k8s.io/component-base/version.buildDate=$date"

  local name
  if need_apiserver; then
    run_step "go build kube-apiserver $K8S_VERSION" \
      "$GO" build -trimpath -ldflags "$ld" -o "$BIN_DIR/kube-apiserver.tmp" k8s.io/kubernetes/cmd/kube-apiserver
    mv -f "$BIN_DIR/kube-apiserver.tmp" "$BIN_DIR/kube-apiserver"
    apiserver_ok "$BIN_DIR/kube-apiserver" "$K8S_VERSION" \
      || die "built kube-apiserver does not report $K8S_VERSION: $(version_of "$BIN_DIR/kube-apiserver")"
  fi
  if need_scheduler; then
    name=kube-scheduler
    run_step "go build $name $K8S_VERSION" \
      "$GO" build -trimpath -ldflags "$ld" -o "$BIN_DIR/$name.tmp" "k8s.io/kubernetes/cmd/$name"
    mv -f "$BIN_DIR/$name.tmp" "$BIN_DIR/$name"
  fi
}

# --- etcd -----------------------------------------------------------------------

build_etcd() {
  if ! etcd_ok "$ETCD_BUILD_DIR/etcd" "$ETCD_VERSION"; then
    local src="$CACHE_ROOT/src/etcd-$ETCD_VERSION"
    mkdir -p "$src"
    cd "$src"
    if [[ ! -f go.mod ]]; then
      "$GO" mod init example.invalid/etcdbin >/dev/null 2>&1 || die "go mod init failed in $src"
    fi
    # No replaces needed: etcd's own requires name real versions of its modules.
    run_step "go get go.etcd.io/etcd/server/v3@$ETCD_VERSION (download modules)" \
      "$GO" get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    run_step "go build etcd $ETCD_VERSION" \
      "$GO" build -trimpath -ldflags "-s -w" -o "$ETCD_BUILD_DIR/etcd.tmp" go.etcd.io/etcd/server/v3
    mv -f "$ETCD_BUILD_DIR/etcd.tmp" "$ETCD_BUILD_DIR/etcd"
    etcd_ok "$ETCD_BUILD_DIR/etcd" "$ETCD_VERSION" \
      || die "built etcd does not report $ETCD_VERSION: $(version_of "$ETCD_BUILD_DIR/etcd")"
  fi
  log "installing etcd $ETCD_VERSION from $ETCD_BUILD_DIR"
  cp -f "$ETCD_BUILD_DIR/etcd" "$BIN_DIR/etcd.tmp"
  mv -f "$BIN_DIR/etcd.tmp" "$BIN_DIR/etcd"
}

if need_etcd; then build_etcd; fi
if need_apiserver || need_scheduler; then build_kubernetes; fi

log "build finished in $((SECONDS - START))s"
print_result
exit 0
}
