#!/usr/bin/env bash
# Build the service images kubeserial/<service>:latest: all four, or the services named.
#   hack/images/build.sh [controller|monitor|gateway|injector ...]
# Works offline and is cached: the base image is made locally (base.sh); third-party wheels are
# downloaded on the host once per (constraints.txt, pyprojects, this script) into
# $KUBESERIAL_CACHE/images/wheels; each services/<service>/Dockerfile then builds a venv from them
# and from the sources in a builder stage, and the docker layer cache skips what has not changed.
# KUBESERIAL_IMAGE_TAG adds a second tag (e.g. a release version). Starts the project's dockerd if
# needed (hack/docker-up.sh). Prints BASE_IMAGE=..., BUSYBOX_IMAGE=..., then a line per image:
# tag, id, size, seconds. Build logs: $KUBESERIAL_CACHE/images/logs/<service>.log.
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
BASE_IMAGE="$(sed -n 's/^BASE_IMAGE=//p' <<<"$base_out")"
echo "$base_out"

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
  local svc="$1" key dir tmp platforms=() minor
  key="$(cat "$repo/constraints.txt" "$repo/libs/kubeserial_common/pyproject.toml" \
    "$repo/services/$svc/pyproject.toml" "$0" | sha256sum | cut -c1-12)"
  dir="$cache/wheels/$svc-$key"
  if [[ ! -d "$dir" ]]; then
    tmp="$dir.partial"
    rm -rf "$tmp"
    for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_$(uname -m)"); done
    platforms+=(--platform "manylinux2014_$(uname -m)")
    mapfile -t reqs < <(requirements "$svc")
    "$host_python" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
      --python-version "$PYTHON_VERSION" --implementation cp --abi "cp${PYTHON_VERSION/./}" --abi abi3 \
      --abi none "${platforms[@]}" -c "$repo/constraints.txt" -d "$tmp/deps" "${reqs[@]}" >&2
    "$host_python" -m pip download --quiet --disable-pip-version-check --no-deps -d "$tmp/build" \
      "setuptools==$SETUPTOOLS_VERSION" "pip==$PIP_VERSION" >&2
    # pip runs from its wheel in the builder stage (python -m pip is not in the base image).
    mv "$tmp/build/pip-$PIP_VERSION-py3-none-any.whl" "$tmp/pip.whl"
    mv "$tmp" "$dir"
    find "$cache/wheels" -maxdepth 1 -name "$svc-*" ! -name "$svc-$key" -exec rm -rf {} +
  fi
  echo "$dir"
}

# The build context: only what the Dockerfile copies (no .venv, caches or egg-info).
context_for() {
  local svc="$1" ctx="$cache/context/$1"
  rm -rf "$ctx"
  mkdir -p "$ctx"
  cp "$repo/services/$svc/Dockerfile" "$repo/constraints.txt" "$ctx/"
  cp -al "$2" "$ctx/wheels"
  tar -C "$repo" --exclude=__pycache__ --exclude='*.egg-info' --exclude=build --exclude=dist \
    -cf - libs/kubeserial_common services/"$svc"/pyproject.toml services/"$svc"/src | tar -C "$ctx" -xf -
  echo "$ctx"
}

for svc in "${services[@]}"; do
  started=$SECONDS
  tag="kubeserial/$svc:latest"
  ctx="$(context_for "$svc" "$(wheels_for "$svc")")"
  log="$cache/logs/$svc.log"
  # The builder stage is tagged too, so that pruning untagged images keeps its layer cache.
  if ! { docker build --target builder --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "kubeserial/$svc-builder:cache" "$ctx" &&
    docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" -t "$tag" "$ctx"; } >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "building $tag failed; full log: $log" >&2
    exit 1
  fi
  [[ -z "${KUBESERIAL_IMAGE_TAG:-}" ]] || docker tag "$tag" "kubeserial/$svc:$KUBESERIAL_IMAGE_TAG"
  new_id="$(docker image inspect -f '{{.Id}}' "$tag")"
  size="$(docker image inspect -f '{{.Size}}' "$tag")"
  printf '%s %s %dMB %ds\n' "$tag" "${new_id:7:12}" $((size / 1000000)) $((SECONDS - started))
done
# Images this build replaced (and their builder stages) are untagged now: remove them, except those a
# container still uses.
docker image prune -f >/dev/null
