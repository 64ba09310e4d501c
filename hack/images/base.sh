#!/usr/bin/env bash
# Make the local base images (nothing can be pulled here) and print their tags:
#   kubeserial/python:<hash>   Debian bookworm "essential" + python3 (3.11) + libudev1, no apt, no pip
#                              (also tagged :latest-<arch>, and :latest for the host's architecture)
#   kubeserial/busybox:<hash>  the host's static busybox and nothing else: an app image with no
#                              Python and no socat, for the tty-injection proof (host arch only)
# KUBESERIAL_ARCH=arm64 (a Debian architecture; default: the host's) makes the python image for that
# architecture: mmdebstrap --arch runs its maintainer scripts under qemu-user-static, registered by
# the caller (hack/images/binfmt.sh up), and the image is loaded from an archive whose config names
# that architecture (oci_load.py).
# <hash> is a hash of the recipe (suite, architecture, mmdebstrap options, image format; and of the
# busybox version), so changing the recipe makes new images. The Debian rootfs tarball is cached in
# $KUBESERIAL_CACHE/images/base/<arch>; a warm run only checks that the images exist (and loads the
# cached tarball again, same image id, if the tag was removed). Needs the project's dockerd (hack/docker-up.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../docker-env.sh"
kubeserial_help_requested "$0" "${1:-}" && exit 0
docker() { "$KUBESERIAL_DOCKER_CLI" "$@"; }

SUITE=bookworm
PYTHON_PACKAGES=python3,libudev1
NONROOT_UID=65532
HOST_ARCH="$(dpkg --print-architecture)"
ARCH="${KUBESERIAL_ARCH:-$HOST_ARCH}"
# Per architecture, below images/base/: a checkout with an older base.sh that cleans images/base/
# does not reach these.
cache="$KUBESERIAL_CACHE/images/base/$ARCH"
# Docs, man pages and locales are dropped (copyright files kept); merged /usr without the usrmerge
# package (which would pull in perl); a nonroot user for the images that run as one.
MMDEBSTRAP_OPTS=(
  --variant=essential --include="$PYTHON_PACKAGES"
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --customize-hook="echo 'nonroot:x:$NONROOT_UID:$NONROOT_UID:nonroot:/nonexistent:/usr/sbin/nologin' >> \"\$1/etc/passwd\""
  --customize-hook="echo 'nonroot:x:$NONROOT_UID:' >> \"\$1/etc/group\""
)
# The recipe is what makes the rootfs and the image (not the rest of this script): editing the
# script elsewhere does not rebuild them. Bump IMAGE_FORMAT when oci_load.py changes the image.
IMAGE_FORMAT=1
recipe_hash="$(printf '%s\n' "$SUITE" "$ARCH" "${MMDEBSTRAP_OPTS[@]}" "$IMAGE_FORMAT" | sha256sum | cut -c1-12)"
python_tag="kubeserial/python:$recipe_hash"
busybox_version="$(dpkg-query -W -f='${Version}' busybox-static)"
busybox_tag="kubeserial/busybox:$(printf '%s\n%s\n' "$recipe_hash" "$busybox_version" | sha256sum | cut -c1-12)"
mkdir -p "$cache"
exec 8>"$cache/.lock"
flock 8

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# apt's own sources for this suite: the Debian mirror reachable from this machine (and its security
# archive); KUBESERIAL_DEBIAN_MIRROR overrides with a mirror URL.
debian_sources() {
  if [[ -n "${KUBESERIAL_DEBIAN_MIRROR:-}" ]]; then echo "$KUBESERIAL_DEBIAN_MIRROR"; return; fi
  local found=0 file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "$file" ]] && grep -Eq "^[^#]*\b$SUITE\b" "$file" && { echo "$file"; found=1; }
  done
  [[ $found -eq 1 ]] || { echo "no apt source for $SUITE; set KUBESERIAL_DEBIAN_MIRROR" >&2; return 1; }
}

python_rootfs() {
  local tarball="$cache/python-$recipe_hash.tar"
  if [[ ! -f "$tarball" ]]; then
    command -v mmdebstrap >/dev/null || KUBESERIAL_WITH_DOCKER=1 "$here/../install-system-deps.sh"
    local listed sources
    listed="$(debian_sources)"
    mapfile -t sources <<<"$listed"
    local log="$cache/mmdebstrap.log"
    mmdebstrap --quiet --arch="$ARCH" --format=tar "${MMDEBSTRAP_OPTS[@]}" \
      "$SUITE" "$tarball.partial" "${sources[@]}" >"$log" 2>&1 ||
      { tail -n 30 "$log" >&2; rm -rf "$tarball.partial"; return 1; }
    mv "$tarball.partial" "$tarball"
    # Older recipes' tarballs of this architecture go after a day (not at once: another checkout
    # sharing this cache may still build with an older recipe).
    local old
    for old in "$cache"/python-*.tar; do
      if [[ "$old" != "$tarball" && -n "$(find "$old" -mmin +1440)" ]]; then rm -f "$old"; fi
    done
  fi
  echo "$tarball"
}

busybox_rootfs() {
  local root="$1" applet
  mkdir -p "$root/bin" "$root/etc" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [[ "$applet" == busybox ]] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/tmp:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\napp:x:1000:\n' >"$root/etc/group"
}

if ! have_image "$python_tag"; then
  tarball="$(python_rootfs)"
  # Not `docker import`: it records the host's architecture (its --platform needs an experimental
  # daemon) and a new creation time, hence a new image id (and no layer cache) on every import.
  python3 "$here/oci_load.py" "$tarball" "$python_tag" "$ARCH" LANG=C.UTF-8 | docker load >/dev/null
fi
docker tag "$python_tag" "kubeserial/python:latest-$ARCH"
if [[ "$ARCH" != "$HOST_ARCH" ]]; then
  echo "BASE_IMAGE=$python_tag"
  exit 0
fi
if ! have_image "$busybox_tag"; then
  [[ -x /bin/busybox ]] || KUBESERIAL_WITH_DOCKER=1 "$here/../install-system-deps.sh"
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
  busybox_rootfs "$work"
  tar -C "$work" -cf - . | docker import --change 'ENV PATH=/bin' --change 'CMD ["sh"]' - "$busybox_tag" >/dev/null
fi
docker tag "$python_tag" kubeserial/python:latest
docker tag "$busybox_tag" kubeserial/busybox:latest
# Tags of older recipes are left alone: another checkout sharing this engine may still build on
# them (removing them made both rebuild everything). `docker image prune` removes what nothing uses.
echo "BASE_IMAGE=$python_tag"
echo "BUSYBOX_IMAGE=$busybox_tag"
