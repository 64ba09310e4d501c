#!/usr/bin/env bash
# Build the images the real-node e2e tests run (tag :e2e), on top of hack/images/build.sh's:
#   kubeserial/{controller,injector}:e2e  the shipped images, retagged
#   kubeserial/{monitor,gateway}:e2e      + umockdev's preload and an entry point that finds the
#                                         node's simulated USB testbed (hack/images/e2e/)
#   kubeserial/octoprint:e2e              a busybox-only Manager image that plays OctoPrint
#   kubeserial/busybox:e2e                the consumer app: busybox, no Python, no socat
# Then writes one docker-archive per image into $KUBESERIAL_CACHE/images/e2e/<tag>.tar for the
# nodes' containerd (re-saved only when the image id changed). Prints the archive paths.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../docker-env.sh"
kubeserial_help_requested "$0" "${1:-}" && exit 0
docker() { "$KUBESERIAL_DOCKER_CLI" "$@"; }

build_out="$("$here/build.sh")"
busybox="$(sed -n 's/^BUSYBOX_IMAGE=//p' <<<"$build_out")"
out="$KUBESERIAL_CACHE/images/e2e"
ctx="$out/context"
mkdir -p "$out"
exec 9>"$out/.lock"
flock 9
rm -rf "$ctx"
mkdir -p "$ctx"
cp "$here"/e2e/* "$ctx/"
cp -L /usr/lib/x86_64-linux-gnu/libumockdev-preload.so.0 "$ctx/"

docker tag kubeserial/controller:latest kubeserial/controller:e2e
docker tag kubeserial/injector:latest kubeserial/injector:e2e
docker tag "$busybox" kubeserial/busybox:e2e
docker build -q -f "$ctx/Dockerfile.monitor" --build-arg BASE=kubeserial/monitor:latest -t kubeserial/monitor:e2e "$ctx" >/dev/null
docker build -q -f "$ctx/Dockerfile.gateway" --build-arg BASE=kubeserial/gateway:latest -t kubeserial/gateway:e2e "$ctx" >/dev/null
docker build -q -f "$ctx/Dockerfile.octoprint" --build-arg BASE="$busybox" -t kubeserial/octoprint:e2e "$ctx" >/dev/null

for name in controller injector monitor gateway octoprint busybox; do
  tag="kubeserial/$name:e2e"
  id="$(docker image inspect -f '{{.Id}}' "$tag")"
  archive="$out/$name.tar"
  if [[ "$(cat "$archive.id" 2>/dev/null)" != "$id" ]]; then
    docker save -o "$archive.partial" "$tag"
    mv "$archive.partial" "$archive"
    echo "$id" > "$archive.id"
  fi
  echo "$archive"
done
docker image prune -f >/dev/null
