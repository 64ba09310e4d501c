# Sourced by hack/docker-*.sh and hack/images/*.sh: where the project's own dockerd lives.
# Its socket and exec state are under /run (gone after a reboot); its images and layers are in the
# cache outside the repository, so a warm machine keeps them. `source hack/docker-env.sh` in a shell
# points the docker CLI at it.
KUBESERIAL_CACHE="${KUBESERIAL_CACHE:-$HOME/.cache/kubeserial}"
KUBESERIAL_DOCKER_DIR="${KUBESERIAL_DOCKER_DIR:-$KUBESERIAL_CACHE/docker}"
KUBESERIAL_DOCKER_RUN="${KUBESERIAL_DOCKER_RUN:-/run/kubeserial-docker}"
KUBESERIAL_DOCKER_PIDFILE="$KUBESERIAL_DOCKER_RUN/dockerd.pid"
export DOCKER_HOST="${KUBESERIAL_DOCKER_HOST:-unix://$KUBESERIAL_DOCKER_RUN/docker.sock}"
# Debian's CLI matches Debian's dockerd (and its legacy builder); another docker on PATH may be newer
# and expect buildx, which is not installed here.
if [[ -z "${KUBESERIAL_DOCKER_CLI:-}" ]]; then
  if [[ -x /usr/bin/docker ]]; then KUBESERIAL_DOCKER_CLI=/usr/bin/docker; else KUBESERIAL_DOCKER_CLI=docker; fi
fi
export DOCKER_BUILDKIT=0
export KUBESERIAL_CACHE KUBESERIAL_DOCKER_DIR KUBESERIAL_DOCKER_RUN KUBESERIAL_DOCKER_PIDFILE KUBESERIAL_DOCKER_CLI

# `<script> --help` prints the comment block at the top of the script.
kubeserial_help_requested() {
  [[ "${2:-}" == -h || "${2:-}" == --help ]] || return 1
  sed -n '2,/^set -/{/^#/s/^# \{0,1\}//p}' "$1"
}
