#!/usr/bin/env bash
# Build the service images kubeserial/<service>:latest: all four, or the services named.
#   hack/images/build.sh [controller|monitor|gateway|injector ...]
# Works offline and is cached: the base image is made locally (base.sh); third-party wheels are
# downloaded on the host once per (constraints.txt, pyprojects, this script) into
# $KUBESERIAL_CACHE/images/wheels; each services/<service>/Dockerfile then builds a venv from them
# and from the sources in a builder stage, and the docker layer cache skips what has not changed.
# KUBESERIAL_IMAGE_TAG adds a second tag (e.g. a release version). Starts the project's dockerd if
# needed (hack/docker-up.sh). Prints BASE_IMAGE=..., BUSYBOX_IMAGE=..., then a line per image:
# tag, id, size, seconds. Build logs: $KUBESERIAL_CACHE/images/logs/<service>[-<arch>].log.
#
# Architectures: KUBESERIAL_ARCHS="amd64 arm64" (Debian names; default: the host's only; `make
# images` builds both). Each image is tagged kubeserial/<svc>:latest-<arch> (and <tag>-<arch>), and
# the host's architecture also kubeserial/<svc>:latest as before. A foreign architecture gets its own
# base image (base.sh with KUBESERIAL_ARCH), wheels for its platform (pip download --platform
# manylinux_*_aarch64: nothing is compiled) and `docker build --platform linux/<arch>`, whose RUN
# steps execute under qemu-user-static (hack/images/binfmt.sh up, and down when done). Without a
# registry there is no manifest list: see "arm64" in the README for the push that makes one.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
source "$here/../docker-env.sh"
kubeserial_help_requested "$0" "${1:-}" && exit 0
docker() { "$KUBESERIAL_DOCKER_CLI" "$@"; }

ALL_SERVICES=(controller monitor gateway injector)
# The image's pip and the build backend of our own packages, pinned (not runtime dependencies).
PIP_VERSION=26.3
SETUPTOOLS_VERSION=84.2.1
PYTHON_VERSION=3.11  # Debian bookworm's python3 in the base image

HOST_ARCH="$(dpkg --print-architecture)"
read -r -a archs <<<"${KUBESERIAL_ARCHS:-$HOST_ARCH}"
declare -A PLATFORM_MACHINE=([amd64]=x86_64 [arm64]=aarch64)
for arch in "${archs[@]}"; do
  [[ -n "${PLATFORM_MACHINE[$arch]:-}" ]] || { echo "unsupported architecture '$arch' (amd64 arm64)" >&2; exit 2; }
done

services=("$@")
[[ ${#services[@]} -gt 0 ]] || services=("${ALL_SERVICES[@]}")
for svc in "${services[@]}"; do
  [[ " ${ALL_SERVICES[*]} " == *" $svc "* ]] || { echo "unknown service '$svc' (${ALL_SERVICES[*]})" >&2; exit 2; }
done

cache="$KUBESERIAL_CACHE/images"
mkdir -p "$cache/wheels" "$cache/context" "$cache/logs"
exec 9>"$cache/.build.lock"
flock 9

"$here/../docker-up.sh" >/dev/null
base_out="$("$here/base.sh")"
declare -A BASE_IMAGES=([$HOST_ARCH]="$(sed -n 's/^BASE_IMAGE=//p' <<<"$base_out")")
echo "$base_out"
foreign=0
for arch in "${archs[@]}"; do [[ "$arch" == "$HOST_ARCH" ]] || foreign=1; done
if [[ $foreign -eq 1 ]]; then
  "$here/binfmt.sh" up
  trap '"$here/binfmt.sh" down' EXIT
  for arch in "${archs[@]}"; do
    [[ "$arch" == "$HOST_ARCH" ]] && continue
    out="$(KUBESERIAL_ARCH="$arch" "$here/base.sh")"
    BASE_IMAGES[$arch]="$(sed -n 's/^BASE_IMAGE=//p' <<<"$out")"
    echo "BASE_IMAGE_$arch=${BASE_IMAGES[$arch]}"
  done
fi

if [[ -x "${VENV:-$repo/.venv}/bin/python" ]]; then host_python="${VENV:-$repo/.venv}/bin/python"; else host_python=python3; fi

# Third-party requirements of the common library and one service, from their pyproject.toml.
requirements() {
  "$host_python" - "$repo/libs/kubeserial_common/pyproject.toml" "$repo/services/$1/pyproject.toml" <<'PY'
import sys
import tomllib

for path in sys.argv[1:]:
    with open(path, "rb") as file:
        for requirement in tomllib.load(file)["project"]["dependencies"]:
            if not requirement.startswith("kubeserial-"):
                print(requirement)
PY
}

# Wheels for the image's Python (cp311, manylinux up to bookworm's glibc 2.36), whatever the host's.
wheels_for() {
  local svc="$1" arch="$2" key dir tmp platforms=() minor machine suffix=""
  machine="${PLATFORM_MACHINE[$arch]}"
  [[ "$arch" == "$HOST_ARCH" ]] || suffix="-$arch"
  key="$(cat "$repo/constraints.txt" "$repo/libs/kubeserial_common/pyproject.toml" \
    "$repo/services/$svc/pyproject.toml" "$0" | sha256sum | cut -c1-12)"
  # A foreign architecture's wheels live in wheels-<arch>/, out of reach of the host's clean-up.
  mkdir -p "$cache/wheels$suffix"
  dir="$cache/wheels$suffix/$svc-$key"
  if [[ ! -d "$dir" ]]; then
    tmp="$dir.partial"
    rm -rf "$tmp"
    for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_$machine"); done
    platforms+=(--platform "manylinux2014_$machine")
    mapfile -t reqs < <(requirements "$svc")
    "$host_python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
      --python-version "$PYTHON_VERSION" --implementation cp --abi "cp${PYTHON_VERSION/./}" --abi abi3 \
      --abi none "${platforms[@]}" -c "$repo/constraints.txt" -d "$tmp/deps" "${reqs[@]}" >&2
    "$host_python" -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp/build" \
      "setuptools==$SETUPTOOLS_VERSION" "pip==$PIP_VERSION" >&2
    # pip runs from its wheel in the builder stage (python -m pip is not in the base image).
    mv "$tmp/build/pip-$PIP_VERSION-py3-none-any.whl" "$tmp/pip.whl"
    mv "$tmp" "$dir"
    find "$cache/wheels$suffix" -maxdepth 1 -name "$svc-*" ! -name "$svc-$key" -exec rm -rf {} +
  fi
  echo "$dir"
}

# The build context: only what the Dockerfile copies (no .venv, caches or egg-info).
context_for() {
  local svc="$1" ctx="$cache/context/$1-$3"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp "$repo/services/$svc/Dockerfile" "$repo/constraints.txt" "$ctx/"
  cp -al "$2" "$ctx/wheels"
  tar -C "$repo" --exclude=__pycache__ --exclude='*.egg-info' --exclude=build --exclude=dist \
    -cf - libs/kubeserial_common services/"$svc"/pyproject.toml services/"$svc"/src | tar -C "$ctx" -xf -
  echo "$ctx"
}

for arch in "${archs[@]}"; do
  base="${BASE_IMAGES[$arch]}"
  suffix="" platform=()
  # Only a foreign architecture passes --platform: the host's builds stay exactly as before.
  [[ "$arch" == "$HOST_ARCH" ]] || { suffix="-$arch"; platform=(--platform "linux/$arch"); }
  for svc in "${services[@]}"; do
    started=$SECONDS
    tag="kubeserial/$svc:latest$suffix"
    ctx="$(context_for "$svc" "$(wheels_for "$svc" "$arch")" "$arch")"
    log="$cache/logs/$svc$suffix.log"
    # The builder stage is tagged too, so that pruning untagged images keeps its layer cache.
    if ! { docker build "${platform[@]}" --target builder --build-arg "BASE_IMAGE=$base" \
      -t "kubeserial/$svc-builder:cache$suffix" "$ctx" &&
      docker build "${platform[@]}" --build-arg "BASE_IMAGE=$base" -t "$tag" "$ctx"; } >"$log" 2>&1; then
      tail -n 40 "$log" >&2
      echo "building $tag failed; full log: $log" >&2
      exit 1
    fi
    docker tag "$tag" "kubeserial/$svc:latest-$arch"
    if [[ -n "${KUBESERIAL_IMAGE_TAG:-}" ]]; then
      docker tag "$tag" "kubeserial/$svc:$KUBESERIAL_IMAGE_TAG-$arch"
      [[ -n "$suffix" ]] || docker tag "$tag" "kubeserial/$svc:$KUBESERIAL_IMAGE_TAG"
    fi
    new_id="$(docker image inspect -f '{{.Id}}' "$tag")"
    size="$(docker image inspect -f '{{.Size}}' "$tag")"
    printf '%s %s %dMB %ds\n' "$tag" "${new_id:7:12}" $((size / 1000000)) $((SECONDS - started))
  done
done
# Images this build replaced (and their builder stages) are untagged now: remove them, except those a
# container still uses.
docker image prune -f >/dev/null
