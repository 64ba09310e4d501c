"""E2E-only entry point: run a KubeSerial command against the node's simulated USB adapters.

Real nodes in the tests have no USB adapters; each has a umockdev testbed instead, made by the
test harness under SIMULATED_USB_ROOT/<run>/<node>/umockdev.XXXXXX (in the host's /dev, visible to the
monitor through a hostPath the harness adds, and to the gateway through the /dev it already
mounts). This wrapper finds the testbed that belongs here, sets umockdev's preload on it and
execs the real command. Without a testbed it execs the command unchanged (a real node).

    umockdev_entry.py monitor ARGS...   the node is $NODE_NAME
    umockdev_entry.py gateway ARGS...   `serve --device PATH`: the testbed that has PATH
"""

import datetime
import glob
import json
import os
import sys

SIMULATED_USB_ROOT = "/dev/kubeserial-e2e-usb"
PRELOAD = "libumockdev-preload.so.0"
COMMANDS = {
    "monitor": ["/opt/venv/bin/kubeserial-monitor.real"],
    "gateway": ["/opt/venv/bin/python", "-m", "kubeserial_gateway"],
}


def option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def testbed_for(kind: str, args: list[str]) -> str | None:
    if kind == "monitor":
        node = os.environ.get("NODE_NAME", "")
        found = sorted(glob.glob(f"{SIMULATED_USB_ROOT}/*/{node}/umockdev.*"))
        return found[-1] if found else None
    device = option(args, "--device") if args[:1] == ["serve"] else None
    if not device or not device.startswith("/dev/"):
        return None
    for testbed in sorted(glob.glob(f"{SIMULATED_USB_ROOT}/*/*/umockdev.*")):
        if os.path.lexists(os.path.join(testbed, device.removeprefix("/"))):
            return testbed
    return None


def main() -> None:
    kind, args = sys.argv[1], sys.argv[2:]
    testbed = testbed_for(kind, args)
    env = dict(os.environ)
    if testbed is not None:
        env.update(LD_PRELOAD=PRELOAD, UMOCKDEV_DIR=testbed)
        # One JSON object, as the services log: the container's log stays machine-readable.
        line = {
            "event": "e2e: simulated USB testbed",
            "testbed": testbed,
            "level": "info",
            "logger": "e2e",
            "timestamp": datetime.datetime.now(datetime.UTC).isoformat(),
        }
        print(json.dumps(line), file=sys.stderr, flush=True)
    command = COMMANDS[kind] + args
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main()
