"""`make demo`: KubeSerial end to end on your machine, no cluster or hardware needed.

Starts a real local control plane with two simulated nodes, installs KubeSerial (CRDs, RBAC,
webhook) and runs its four services under their own ServiceAccounts, applies the original
README's KubeSerial and Manager, plugs a simulated FTDI adapter (0403:6001) into node-a, and shows
what a user sees: `kubectl get serialdevice`, the gateway, a conversation with the device over
the network, and the device following the adapter to node-b.

Where this machine can run real nodes (root, containerd, runc, the CNI plugins, a kubelet build:
demo_real.why_not_real_nodes), the same story runs on two real kubelets with KubeSerial as real
pods (demo_real); otherwise this local story runs and says why. `--local` forces the local one.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import termios
from pathlib import Path

from kubeserial_common import constants as c
from kubeserial_common.conditions import condition_status
from kubeserial_testing import demo_real
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane
from kubeserial_testing.stack import LocalStack, wait_async
from kubeserial_testing.ttyio import read_until
from kubeserial_testing.umockdev import UsbAdapter

SAMPLES = REPO_ROOT / "deploy" / "kustomize" / "base" / "samples"
CRD_DIR = REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"
DEVICE = "ender3"


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(plane: ControlPlane, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    result = plane.kubectl(*args, check=False)
    print((result.stdout or result.stderr).rstrip(), flush=True)


def device_on(plane: ControlPlane, node: str) -> bool:
    device = json.loads(plane.kubectl("get", "serialdevice", DEVICE, "-o", "json").stdout)
    return condition_status(device, c.AVAILABLE) == "True" and device["status"].get("nodeName") == node


async def talk(stack: LocalStack, plane: ControlPlane, device_fd: int) -> None:
    """OctoPrint (the Manager) talks to the printer through its tty; we play both ends."""
    pods = json.loads(plane.kubectl("get", "pods", "-n", "kubeserial", "-o", "json").stdout)["items"]
    manager_pod = next(
        p["metadata"]["name"] for p in pods if p["metadata"]["name"].startswith(f"{DEVICE}-octoprint")
    )
    link = stack.link_path(manager_pod, DEVICE)
    await wait_async(link.exists, within=30, message="the manager's tty")
    print(f"OctoPrint's tty /dev/serial/{DEVICE} (here {link}) -> bridge -> gateway -> device", flush=True)
    app_fd = os.open(link, os.O_RDWR | os.O_NOCTTY)
    try:
        attrs = termios.tcgetattr(app_fd)
        attrs[0] = attrs[1] = attrs[3] = 0
        attrs[4] = attrs[5] = termios.B115200
        termios.tcsetattr(app_fd, termios.TCSANOW, attrs)
        os.write(app_fd, b"M115\n")
        received = await asyncio.to_thread(read_until, device_fd, b"\n")
        print(f"printer received {received!r}", flush=True)
        os.write(device_fd, b"FIRMWARE_NAME:Marlin ok\n")
        answer = await asyncio.to_thread(read_until, app_fd, b"\n")
        print(f"OctoPrint received {answer!r}", flush=True)
    finally:
        os.close(app_fd)


async def play_printer(device_fd: int, stop: asyncio.Event) -> None:
    """The simulated printer answers like Marlin: each line gets `ok`, echoed back as typed."""
    loop = asyncio.get_running_loop()
    received = asyncio.Queue[bytes]()
    loop.add_reader(device_fd, lambda: received.put_nowait(read_available(device_fd)))
    line = b""
    try:
        while not stop.is_set():
            for byte in await received.get():
                char = bytes([byte])
                os.write(device_fd, b"\r\n" if char in b"\r\n" else char)
                if char in b"\r\n":
                    if line.strip():
                        os.write(device_fd, b"ok " + line.strip() + b"\r\n")
                    line = b""
                else:
                    line += char
    finally:
        loop.remove_reader(device_fd)


def read_available(fd: int) -> bytes:
    try:
        return os.read(fd, 4096)
    except OSError:  # EIO while no one has the tty open: nothing to answer
        return b""


async def hold_for_the_user(stack: LocalStack, plane: ControlPlane, device_fd: int) -> None:
    """Keep everything running and let the user talk to the printer. The gateway serves one
    session at a time and OctoPrint holds it, so the Manager is removed first."""
    say("Handing the printer to you: OctoPrint holds the one session, so its Manager goes")
    show(plane, "delete", "manager", "octoprint")
    await wait_async(
        lambda: (
            condition_status(
                json.loads(plane.kubectl("get", "serialdevice", DEVICE, "-o", "json").stdout), c.FREE
            )
            == "True"
        ),
        within=60,
        message="the gateway free",
    )
    show(plane, "get", "serialdevice", DEVICE, "-o", "jsonpath={.status.conditions[?(@.type=='Free')]}")
    ports = stack.ports_for(DEVICE)
    python = Path(sys.executable)
    say("Everything keeps running; the printer answers each line with `ok`. Ctrl-C stops the demo")
    print(f"export KUBECONFIG={plane.kubeconfig}")
    print(f"raw:      socat - TCP:127.0.0.1:{ports.raw}   (type a line, Enter; Ctrl-C quits)")
    miniterm = f"{python} -m serial.tools.miniterm rfc2217://127.0.0.1:{ports.rfc2217} 115200"
    print(f"rfc2217:  {miniterm}   (Ctrl-] quits)")
    print("(one client at a time: the second is refused while the first is connected)", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, stop.set)
    printer = asyncio.create_task(play_printer(device_fd, stop))
    await stop.wait()
    printer.cancel()


async def demo(workdir: Path, *, hold: bool) -> None:
    say("Starting a real local control plane (etcd, kube-apiserver, controller-manager, scheduler)")
    plane = ControlPlane(workdir / "cluster", preinstall=(CRD_DIR,)).start()
    stack: LocalStack | None = None
    try:
        for node in ("node-a", "node-b"):
            plane.register_node(node)
        show(plane, "get", "nodes")
        say("Installing KubeSerial and running its services (controller, monitor per node, injector)")
        stack = await LocalStack(plane, workdir / "stack").start()
        say("Applying the original README's KubeSerial and Manager")
        show(plane, "apply", "-k", str(SAMPLES))
        await wait_async(
            lambda: "True" in plane.kubectl("get", "serialdevice", DEVICE).stdout,
            within=30,
            message="devices",
        )
        show(plane, "get", "serialdevice")

        say("Plugging a simulated FTDI FT232R (0403:6001) into node-a")
        adapter = UsbAdapter()
        stack.usb["node-a"].plug(adapter)
        device_fd = stack.usb["node-a"].device_side(adapter)
        await wait_async(lambda: device_on(plane, "node-a"), within=30, message="ender3 available on node-a")
        show(plane, "get", "serialdevice")
        show(plane, "get", "node", "node-a", "-o", f"jsonpath={{.status.capacity.kubeserial\\.com/{DEVICE}}}")
        await wait_async(lambda: stack.gateway_ports.get(DEVICE), within=30, message="the gateway")
        show(plane, "get", "deployments,services", "-n", "kubeserial")
        show(plane, "get", "managerschedulerequest")

        say("The Manager (OctoPrint) talks to the printer through bridge and gateway")
        await wait_async(stack.ports_for(DEVICE).ready, within=30, message="the gateway ready")
        await talk(stack, plane, device_fd)

        say("Moving the adapter to node-b")
        stack.usb["node-a"].unplug(adapter)
        await wait_async(lambda: not device_on(plane, "node-a"), within=30, message="unplugged")
        show(plane, "get", "serialdevice")
        stack.usb["node-b"].plug(adapter)
        await wait_async(lambda: device_on(plane, "node-b"), within=30, message="available on node-b")
        show(plane, "get", "serialdevice")
        await wait_async(
            lambda: stack.gateway_pod(DEVICE, "node-b"), within=30, message="the gateway on node-b"
        )
        await wait_async(
            lambda: len(stack.gateway_pods(DEVICE, "node-a")) == 0, within=30, message="node-a's gone"
        )
        show(plane, "get", "pods", "-n", "kubeserial", "-o", "wide")

        if hold:
            await hold_for_the_user(stack, plane, stack.usb["node-b"].device_side(adapter))
        say("Done. In a real cluster: kubectl apply -k deploy/kustomize/overlays/default (see README)")
    finally:
        if stack is not None:
            await stack.stop()
        plane.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubeserial_testing.demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--hold", action="store_true", help="keep everything running until Ctrl-C")
    parser.add_argument("--workdir", type=Path, help="where to keep state and logs (default: a temp dir)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument(
        "--local",
        action="store_true",
        help="the local story even where real nodes can run: services as local processes, pods on a"
        " stand-in kubelet",
    )
    where.add_argument(
        "--real-nodes",
        action="store_true",
        help="real nodes or nothing: fail, saying why, where they cannot run",
    )
    args = parser.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="kubeserial-demo-"))
    print(f"state and logs: {workdir}")
    reason = "--local was given" if args.local else demo_real.why_not_real_nodes()
    if reason is None:
        demo_real.run(workdir, hold=args.hold)
        return 0
    if args.real_nodes:
        print(f"cannot run on real nodes: {reason}", file=sys.stderr)
        return 2
    say(f"Not on real nodes ({reason}): services run as local processes, pods on a stand-in kubelet")
    asyncio.run(demo(workdir, hold=args.hold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
