#!/usr/bin/env bash
# Start the project's own dockerd unless it already answers on the project's socket (idempotent).
# No bridge network and no iptables (neither works here): containers use --network=host or none.
# --ip-forward=false: dockerd would otherwise switch on the host's net.ipv4.ip_forward.
# Prints the DOCKER_HOST to use. Stop it with hack/docker-down.sh. With KUBESERIAL_DOCKER_HOST set
# (e.g. unix:///var/run/docker.sock, to build into a machine's own Docker for kind) it only checks
# that that engine answers.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/docker-env.sh"
kubeserial_help_requested "$0" "${1:-}" && exit 0

answering() { "$KUBESERIAL_DOCKER_CLI" version --format '{{.Server.Version}}' >/dev/null 2>&1; }

if answering; then echo "DOCKER_HOST=$DOCKER_HOST"; exit 0; fi
if [[ -n "${KUBESERIAL_DOCKER_HOST:-}" ]]; then
  echo "KUBESERIAL_DOCKER_HOST=$KUBESERIAL_DOCKER_HOST does not answer (an engine of its own is not started there)" >&2
  exit 1
fi
KUBESERIAL_WITH_DOCKER=1 "$here/install-system-deps.sh"
[[ "$(id -u)" -eq 0 ]] || { echo "dockerd needs root (rootless docker is not set up here)" >&2; exit 1; }
mkdir -p "$KUBESERIAL_DOCKER_RUN" "$KUBESERIAL_DOCKER_DIR/data"
exec 9>"$KUBESERIAL_DOCKER_RUN/up.lock"
flock 9
if answering; then echo "DOCKER_HOST=$DOCKER_HOST"; exit 0; fi
# A pid file left by a dockerd that died would stop the next one from starting.
if [[ -f "$KUBESERIAL_DOCKER_PIDFILE" ]]; then
  old="$(cat "$KUBESERIAL_DOCKER_PIDFILE")"
  if [[ -n "$old" ]] && kill -0 "$old" 2>/dev/null; then
    echo "dockerd (pid $old) is running but not answering on $DOCKER_HOST; see $KUBESERIAL_DOCKER_DIR/dockerd.log" >&2
    exit 1
  fi
  rm -f "$KUBESERIAL_DOCKER_PIDFILE"
fi
log="$KUBESERIAL_DOCKER_DIR/dockerd.log"
setsid dockerd \
  --host "$DOCKER_HOST" \
  --data-root "$KUBESERIAL_DOCKER_DIR/data" \
  --exec-root "$KUBESERIAL_DOCKER_RUN/exec" \
  --pidfile "$KUBESERIAL_DOCKER_PIDFILE" \
  --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
  >>"$log" 2>&1 </dev/null &
for _ in $(seq 1 600); do
  if answering; then echo "DOCKER_HOST=$DOCKER_HOST"; exit 0; fi
  kill -0 $! 2>/dev/null || break
  sleep 0.1
done
echo "dockerd did not come up on $DOCKER_HOST; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
