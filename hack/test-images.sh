#!/usr/bin/env bash
# Build the local test images from Debian's busybox-static (there is no registry here).
#
# Usage:
#   hack/test-images.sh            # builds missing images, prints their names
#   hack/test-images.sh --force    # rebuilds them
#   hack/test-images.sh --rootfs   # only writes the busybox root filesystem as a tar
#                                  # to stdout (for other engines: podman import)
#
# Images (all `docker import`ed, one layer, CMD ["/bin/sh"]):
#   edgefleet/busybox:test   /bin/busybox + every applet symlinked in /bin,
#                            /etc/passwd (root, nobody), /tmp (1777), /root
#
# Talks to $DOCKER_HOST; when that is unset, starts (or finds) the private daemon
# with hack/dockerd.sh. Installs busybox-static with apt-get when missing.
# Progress goes to stderr, image names to stdout.
set -euo pipefail

{
HERE="$(cd "$(dirname "$0")" && pwd)"
FORCE=0
ROOTFS=0
case "${1:-}" in
  "") ;;
  --force) FORCE=1 ;;
  --rootfs) ROOTFS=1 ;;
  -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
  *) echo "test-images.sh: unknown argument: $1 (try --help)" >&2; exit 2 ;;
esac

log() { echo "[test-images.sh] $*" >&2; }
die() { echo "test-images.sh: ERROR: $*" >&2; exit 1; }

BUSYBOX=/bin/busybox
is_static() { [[ -x "$1" && "$(LC_ALL=C ldd "$1" 2>&1 || true)" == *"not a dynamic"* ]]; }
if ! is_static "$BUSYBOX"; then
  log "installing busybox-static with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q busybox-static >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q busybox-static >&2; } \
    || die "apt-get install busybox-static failed"
  is_static "$BUSYBOX" || die "$BUSYBOX is not a static binary even after installing busybox-static"
fi

# The root filesystem of edgefleet/busybox:test as a tar on stdout.
busybox_rootfs() {
  local root; root="$(mktemp -d)"
  trap 'rm -rf "$root"' RETURN
  mkdir -p "$root"/{bin,etc,tmp,root,proc,sys,dev,var/tmp,usr/bin,sbin}
  chmod 1777 "$root/tmp" "$root/var/tmp"
  cp "$BUSYBOX" "$root/bin/busybox"
  local applet
  for applet in $("$root/bin/busybox" --list); do
    [[ "$applet" == busybox ]] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' \
    >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar --numeric-owner --owner=0 --group=0 -C "$root" -c .
}

if (( ROOTFS )); then
  busybox_rootfs
  exit 0
fi

if [[ -z "${DOCKER_HOST:-}" ]]; then
  eval "$("$HERE/dockerd.sh" start)"
  export DOCKER_HOST
fi
DOCKER="${DOCKER:-$(command -v docker || true)}"
[[ -n "$DOCKER" ]] || die "no docker CLI on PATH (Debian package docker.io)"

image_exists() { "$DOCKER" image inspect "$1" >/dev/null 2>&1; }

build_busybox() {
  local image=edgefleet/busybox:test
  if (( ! FORCE )) && image_exists "$image"; then
    log "$image exists"
    echo "$image"
    return 0
  fi
  log "importing $image ($("$BUSYBOX" | head -n1))"
  busybox_rootfs \
    | "$DOCKER" import \
        -c 'CMD ["/bin/sh"]' \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'LABEL org.edgefleet.test-image=busybox' \
        - "$image" >/dev/null \
    || die "docker import $image failed"
  echo "$image"
}

build_busybox
}
