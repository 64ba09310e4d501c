#!/usr/bin/env bash
# Let this amd64 host run arm64 binaries (image builds and the arm64 image test) through Debian's
# qemu-user-static, and undo it afterwards:
#   hack/images/binfmt.sh up     mount binfmt_misc if absent, register qemu-aarch64 if absent
#   hack/images/binfmt.sh down   undo what `up` did, once the last user has called `down`
#   hack/images/binfmt.sh status
# Host changes, all undone by the last `down`: /proc/sys/fs/binfmt_misc mounted (only if it was
# not), one binfmt_misc entry `qemu-aarch64` (only if none was there; flags F and P: the kernel opens
# the interpreter at registration, so it also works inside containers and chroots). Nothing else is
# registered (Debian's other qemu-*, jar or python entries stay unregistered) and no package or
# service (binfmt-support, systemd-binfmt) is set up. Users are counted in /run/kubeserial-binfmt, so
# a build and a test that overlap share one registration. On an aarch64 host it does nothing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
source "$here/../docker-env.sh"
kubeserial_help_requested "$0" "${1:-}" && exit 0

MISC=/proc/sys/fs/binfmt_misc
ENTRY=qemu-aarch64
STATE=/run/kubeserial-binfmt
QEMU=/usr/bin/qemu-aarch64-static
mkdir -p "$STATE"
exec 7>"$STATE/.lock"
flock 7

native() { [[ "$(uname -m)" == aarch64 ]]; }
users() { cat "$STATE/users" 2>/dev/null || echo 0; }

# The magic and mask of an aarch64 ELF executable, from Debian's /usr/share/binfmts/qemu-aarch64.
register_line() {
  local magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
  local mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
  printf ':%s:M:0:%s:%s:%s:FP\n' "$ENTRY" "$magic" "$mask" "$QEMU"
}

case "${1:-}" in
  up)
    native && exit 0
    [[ -x "$QEMU" ]] || "$here/../install-system-deps.sh"
    if [[ "$(users)" -eq 0 ]]; then
      rm -f "$STATE/mounted" "$STATE/registered"
      if [[ ! -e "$MISC/register" ]]; then
        mount -t binfmt_misc binfmt_misc "$MISC"
        touch "$STATE/mounted"
      fi
      if [[ ! -e "$MISC/$ENTRY" ]]; then
        register_line >"$MISC/register"
        touch "$STATE/registered"
      fi
    fi
    echo $(($(users) + 1)) >"$STATE/users"
    ;;
  down)
    native && exit 0
    n=$(($(users) - 1))
    if [[ $n -gt 0 ]]; then echo "$n" >"$STATE/users"; exit 0; fi
    rm -f "$STATE/users"
    if [[ -e "$STATE/registered" && -e "$MISC/$ENTRY" ]]; then echo -1 >"$MISC/$ENTRY"; fi
    if [[ -e "$STATE/mounted" ]]; then umount "$MISC"; fi
    rm -f "$STATE/mounted" "$STATE/registered"
    ;;
  status)
    echo "users=$(users) mounted_by_us=$([[ -e $STATE/mounted ]] && echo yes || echo no)" \
      "registered_by_us=$([[ -e $STATE/registered ]] && echo yes || echo no)"
    if [[ -e "$MISC/$ENTRY" ]]; then cat "$MISC/$ENTRY"; else echo "$ENTRY: not registered"; fi
    ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
