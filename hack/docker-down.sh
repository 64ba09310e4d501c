#!/usr/bin/env bash
# Stop the project's dockerd (by the pid in its pid file) if it runs; idempotent. Images stay cached.
set -euo pipefail
source "$(cd "$(dirname "$0")" && pwd)/docker-env.sh"
kubeserial_help_requested "$0" "${1:-}" && exit 0
[[ -f "$KUBESERIAL_DOCKER_PIDFILE" ]] || exit 0
pid="$(cat "$KUBESERIAL_DOCKER_PIDFILE")"
if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  # dockerd stops its containers first (up to their stop timeout), then its containerd.
  for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$pid" 2>/dev/null && kill -KILL "$pid"
fi
rm -f "$KUBESERIAL_DOCKER_PIDFILE"
# dockerd leaves its default network namespace mounted in its exec root.
awk -v root="$KUBESERIAL_DOCKER_RUN/" 'index($2, root) == 1 { print $2 }' /proc/self/mounts | sort -r |
  while read -r mount; do umount "$mount" || true; done
