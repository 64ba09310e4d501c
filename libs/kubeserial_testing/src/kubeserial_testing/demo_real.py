"""`make demo` on real nodes: two kubelets with containerd in network namespaces of their own,
KubeSerial installed from the shipped e2e overlay as real pods, a simulated FTDI adapter.

The original README's OctoPrint image cannot be pulled here (no registry), so the Manager runs a
locally built busybox image that plays OctoPrint (hack/images/e2e/octoprint.sh): it opens its
tty, sends M115 and prints what the printer answers.
"""

import os
import select
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import yaml

from kubeserial_common import constants as c
from kubeserial_common.conditions import condition_status
from kubeserial_testing.controlplane import REPO_ROOT
from kubeserial_testing.nodes import RealCluster
from kubeserial_testing.realstack import NAMESPACE, RealStack, wait_until
from kubeserial_testing.ttyio import read_until
from kubeserial_testing.umockdev import UsbAdapter

SAMPLES = REPO_ROOT / "deploy" / "kustomize" / "base" / "samples"
DEVICE = "ender3"
LOCAL_OCTOPRINT = {"repository": "kubeserial/octoprint", "tag": "e2e"}


def why_not_real_nodes() -> str | None:
    """None when this machine can run real nodes; otherwise the reason, for the user."""
    if os.geteuid() != 0:
        return "real nodes need root (network namespaces, containerd)"
    for tool in ("nsenter", "ip", "containerd", "runc", "iptables", "umockdev-run"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (make dev installs it)"
    if not Path("/usr/lib/cni/bridge").exists():
        return "the CNI plugins are not installed (make dev installs them)"
    return None


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(stack: RealStack, *args: str) -> None:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    result = stack.kubectl(*args, check=False)
    print((result.stdout or result.stderr).rstrip(), flush=True)


def samples_with_local_octoprint() -> str:
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(SAMPLES)], check=True, capture_output=True, text=True
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc]
    for doc in docs:
        if doc["kind"] == "Manager":
            doc["spec"]["image"] = LOCAL_OCTOPRINT
            doc["spec"]["runCmd"] = f"sh /octoprint.sh /dev/serial/{DEVICE}"
    return yaml.safe_dump_all(docs)


def device_on(stack: RealStack, node: str) -> bool:
    return stack.device_state(DEVICE) == ("True", node)


def manager_pods(stack: RealStack, node: str | None = None) -> list[str]:
    selector = f"{c.DEVICE_LABEL}={DEVICE},{c.COMPONENT_LABEL}=manager"
    return [p["metadata"]["name"] for p in stack.running_pods(NAMESPACE, selector, node=node)]


def printer_answers(device_fd: int) -> None:
    """Play the printer for the manager's first command."""
    received = read_until(device_fd, b"\n", timeout=60)
    print(f"printer received {received!r}", flush=True)
    os.write(device_fd, b"FIRMWARE_NAME:Marlin (simulated) ok\n")


def run(workdir: Path, *, hold: bool) -> None:
    say("Starting a real cluster: control plane + node-a and node-b (kubelet, containerd, kube-proxy)")
    with RealCluster(workdir / "cluster") as cluster:
        stack = RealStack(cluster, workdir)
        try:
            show(stack, "get", "nodes", "-o", "wide")
            say("Installing KubeSerial from deploy/kustomize/overlays/e2e (images built here)")
            stack.start()
            show(stack, "get", "pods", "-n", NAMESPACE, "-o", "wide")
            say("Applying the original README's KubeSerial and Manager (OctoPrint played by busybox)")
            stack.kubectl("apply", "-f", "-", input=samples_with_local_octoprint())
            wait_until(
                lambda: condition_status(stack.get("serialdevice", DEVICE), c.READY) == "True",
                within=60,
                message="ender3 Ready",
            )
            show(stack, "get", "serialdevice")

            say("Plugging a simulated FTDI FT232R (0403:6001) into node-a")
            adapter = UsbAdapter()
            stack.usb["node-a"].plug(adapter)
            device_fd = stack.usb["node-a"].device_side(adapter)
            answer = threading.Thread(target=printer_answers, args=(device_fd,), daemon=True)
            answer.start()
            wait_until(lambda: device_on(stack, "node-a"), within=60, message="ender3 available on node-a")
            show(stack, "get", "serialdevice")
            wait_until(lambda: manager_pods(stack), within=180, message="OctoPrint running")
            show(stack, "get", "pods", "-n", NAMESPACE, "-o", "wide")
            show(stack, "get", "managerschedulerequest")
            answer.join(timeout=60)
            say("OctoPrint (node-?) talks to the printer (node-a) through its tty, bridge and gateway")
            manager = manager_pods(stack)[0]
            wait_until(
                lambda: "Marlin" in stack.kubectl("logs", "-n", NAMESPACE, manager, "-c", "manager").stdout,
                within=30,
                message="OctoPrint to hear the printer",
            )
            show(stack, "logs", "-n", NAMESPACE, manager, "-c", "manager")

            say("Moving the adapter to node-b: the gateway follows")
            stack.usb["node-a"].unplug(adapter)
            wait_until(lambda: not device_on(stack, "node-a"), within=60, message="unplugged")
            stack.usb["node-b"].plug(adapter)
            wait_until(lambda: device_on(stack, "node-b"), within=60, message="ender3 on node-b")
            wait_until(lambda: stack.gateway_pods(DEVICE, node="node-b"), within=120, message="the gateway")
            show(stack, "get", "serialdevice")
            show(stack, "get", "pods", "-n", NAMESPACE, "-o", "wide")
            if hold:
                hold_for_the_user(stack, stack.usb["node-b"].device_side(adapter))
            say("Done. On your cluster: kubectl apply -k deploy/kustomize/overlays/default (see README)")
        finally:
            stack.stop()


def hold_for_the_user(stack: RealStack, device_fd: int) -> None:
    """The gateway serves one session at a time and OctoPrint holds it: its Manager goes first."""
    say("Handing the printer to you: OctoPrint holds the one session, so its Manager goes")
    show(stack, "delete", "manager", "octoprint")
    wait_until(
        lambda: condition_status(stack.get("serialdevice", DEVICE), c.FREE) == "True",
        within=120,
        message="the gateway free",
    )
    kubeconfig = stack.cluster.kubeconfig
    say("Everything keeps running; the printer echoes and answers each line with `ok`. Ctrl-C stops")
    print(f"export KUBECONFIG={kubeconfig}")
    print(f"kubectl -n {NAMESPACE} port-forward svc/{DEVICE}-gateway 12217:2217 13333:3333 &")
    print("socat - TCP:127.0.0.1:13333                                   (raw; Ctrl-C quits)")
    print("python -m serial.tools.miniterm rfc2217://127.0.0.1:12217 115200  (Ctrl-] quits)", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        readable, _, _ = select.select([device_fd], [], [], 0.5)
        if not readable:
            continue
        try:
            data = os.read(device_fd, 4096)
        except OSError:  # EIO while nobody has the tty open
            stop.wait(0.1)
            continue
        os.write(device_fd, data.replace(b"\r", b"\r\n"))
        if b"\r" in data or b"\n" in data:
            os.write(device_fd, b"ok\r\n")
