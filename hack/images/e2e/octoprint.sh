#!/bin/sh
# Plays OctoPrint for the e2e tests: opens the printer's tty, asks for the firmware (M115) and
# prints every line the printer answers. Busybox only, like any app image without Python.
tty="${1:?usage: octoprint.sh TTY}"
echo "fake-octoprint: waiting for $tty"
while [ ! -e "$tty" ]; do sleep 0.2; done
stty -F "$tty" 115200 raw -echo
echo "fake-octoprint: connected to $tty"
exec 3<>"$tty"
printf 'M115\n' >&3
while read -r line <&3; do echo "printer: $line"; done
