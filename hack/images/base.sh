#!/usr/bin/env bash
# Make the local base images (nothing can be pulled here) and print their tags:
#   kubeserial/python:<hash>   Debian bookworm "essential" + python3 (3.11) + libudev1, no apt, no pip
#   kubeserial/busybox:<hash>  the host's static busybox and nothing else: an app image with no
#                              Python and no socat, for the tty-injection proof
# <hash> is a hash of this script (and of the busybox version), so changing the recipe makes new
# images. The Debian rootfs tarball is cached in $KUBESERIAL_CACHE/images/base; a warm run only
# checks that the images exist. Needs the project's dockerd (hack/docker-up.sh).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../docker-env.sh"
kubeserial_help_requested "$0" "${1:-}" && exit 0
docker() { "$KUBESERIAL_DOCKER_CLI" "$@"; }

SUITE=bookworm
PYTHON_PACKAGES=python3,libudev1
NONROOT_UID=65532
cache="$KUBESERIAL_CACHE/images/base"
recipe="$(cat "$0")"
recipe_hash="$(printf '%s\n%s\n' "$recipe" "$(uname -m)" | sha256sum | cut -c1-12)"
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
    # Docs, man pages and locales are dropped (copyright files kept); merged /usr without the
    # usrmerge package (which would pull in perl).
    local log="$cache/mmdebstrap.log"
    mmdebstrap --quiet --format=tar --variant=essential --include="$PYTHON_PACKAGES" \
      --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
      --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --customize-hook="echo 'nonroot:x:$NONROOT_UID:$NONROOT_UID:nonroot:/nonexistent:/usr/sbin/nologin' >> \"\$1/etc/passwd\"" \
      --customize-hook="echo 'nonroot:x:$NONROOT_UID:' >> \"\$1/etc/group\"" \
      "$SUITE" "$tarball.partial" "${sources[@]}" >"$log" 2>&1 ||
      { tail -n 30 "$log" >&2; rm -rf "$tarball.partial"; return 1; }
    mv "$tarball.partial" "$tarball"
    # Older recipes' tarballs are of no further use.
    find "$cache" -maxdepth 1 -name 'python-*.tar' ! -name "python-$recipe_hash.tar" -delete
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
  docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' "$tarball" "$python_tag" >/dev/null
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
# Images of older recipes are of no further use (images built on them keep their layers).
for repo_tag in "$python_tag" "$busybox_tag"; do
  repo="${repo_tag%:*}"
  for old in $(docker images "$repo" --format '{{.Tag}}'); do
    [[ "$repo:$old" == "$repo_tag" || "$old" == latest ]] || docker rmi "$repo:$old" >/dev/null
  done
done
echo "BASE_IMAGE=$python_tag"
echo "BUSYBOX_IMAGE=$busybox_tag"
