#!/usr/bin/env bash
# Debian packages the tests need; installs only what is missing (idempotent, uses apt's cache).
set -euo pipefail
PACKAGES=(umockdev gir1.2-umockdev-1.0 python3-gi socat ser2net)
# arm64 images (hack/images/binfmt.sh): qemu-aarch64 for builds and the arm64 image test, arch-test
# for mmdebstrap --arch; no binfmt-support (binfmt.sh registers the one handler it needs, then
# removes it).
PACKAGES+=(qemu-user-static arch-test)
# Real nodes for the end-to-end tests (libs/kubeserial_testing/nodes.py): one containerd per node,
# runc, CNI bridge plugins, conntrack and iptables for kube-proxy, iproute2 for the network namespace,
# util-linux (nsenter, unshare, mount), busybox-static for its local busybox image, curl for probes.
PACKAGES+=(containerd runc containernetworking-plugins conntrack iptables iproute2 util-linux busybox-static curl)
# The image tests need a container engine, mmdebstrap for the locally made base image and a static
# busybox for the app image (tests/integration/test_images*.py); KUBESERIAL_WITH_DOCKER=0 skips them.
if [[ "${KUBESERIAL_WITH_DOCKER:-1}" == "1" ]]; then PACKAGES+=(docker.io busybox-static mmdebstrap); fi
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
command -v apt-get >/dev/null || { echo "apt-get not found; install: ${missing[*]}" >&2; exit 1; }
SUDO=""; [[ "$(id -u)" -ne 0 ]] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
