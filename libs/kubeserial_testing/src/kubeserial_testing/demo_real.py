"""`make demo` on real nodes: two kubelets with containerd in network namespaces of their own,
KubeSerial installed from the shipped e2e overlay as real pods, a simulated FTDI adapter that this
process plays (the pty master behind the adapter's tty).

The story: the original README's KubeSerial and Manager are applied; the adapter is plugged into
node-a, the gateway pod runs there and the Manager talks to the printer. The original OctoPrint
image cannot be pulled here (no registry), so the Manager runs a locally built busybox image that
plays OctoPrint (hack/images/e2e/octoprint.sh). The Manager is deleted, which frees the one session,
and an annotated busybox consumer on node-b takes it: a shell script reads and writes its injected
tty itself, and `kubectl logs` shows what it heard. The adapter moves to node-b, the gateway
follows and the consumer's open tty carries on, with no restart.
"""

import os
import select
import shutil
import signal
import subprocess
import termios
import threading
from pathlib import Path

import yaml

from kubeserial_common import constants as c
from kubeserial_common.conditions import condition_status
from kubeserial_testing import nodeimages
from kubeserial_testing.controlplane import K8S_VERSION, REPO_ROOT
from kubeserial_testing.nodes import CGROUP_ROOT, CNI_BIN
from kubeserial_testing.realstack import (
    NAMESPACE,
    RealStack,
    annotated_busybox_pod,
    running_stack,
    wait_until,
)
from kubeserial_testing.ttyio import baud, read_until
from kubeserial_testing.umockdev import UsbAdapter

SAMPLES = REPO_ROOT / "deploy" / "kustomize" / "base" / "samples"
DEVICE = "ender3"
LOCAL_OCTOPRINT = {"repository": "kubeserial/octoprint", "tag": "e2e"}
APPS = "demo"
CONSUMER = "consumer"
CONNECTED = "kubeserial_bridge_connected"
RECONNECTS = "kubeserial_bridge_reconnects_total"
TOOLS = ("nsenter", "ip", "iptables", "containerd", "runc", "umockdev-run", "kubectl", "dockerd")
# The consumer: busybox, no Python, no socat. It opens the tty the native sidecar injected, says
# hello, and answers every line the device sends with "consumer got: <line>". It configures the
# tty while holding it open, so that its bridge sees the settings and pushes them to each gateway.
CONSUMER_SCRIPT = """
tty="$KUBESERIAL_ENDER3_TTY"
while [ ! -e "$tty" ]; do sleep 0.2; done
exec 3<>"$tty"
stty -F "$tty" 115200 raw -echo
echo "consumer: opened $tty ($KUBESERIAL_ENDER3_URL)"
printf 'hello from the consumer\\n' >&3
while read -r line <&3; do
  echo "consumer heard: $line"
  printf 'consumer got: %s\\n' "$line" >&3
done
echo "consumer: $tty closed"
"""


def missing_for_real_nodes(
    *, euid: int, tools: dict[str, bool], cni_bridge: bool, pids_cgroup: bool, kubelet: bool, go: bool
) -> str | None:
    """None when real nodes can run; otherwise why not, in one line for the user."""
    if euid != 0:
        return "real nodes need root (network namespaces, containerd, cgroups)"
    absent = [tool for tool, present in tools.items() if not present]
    if absent:
        return f"{', '.join(absent)} not installed (make dev installs them)"
    if not cni_bridge:
        return f"the CNI plugins are not installed ({CNI_BIN}/bridge; make dev installs them)"
    if not pids_cgroup:
        return f"no pids cgroup hierarchy at {CGROUP_ROOT}/pids (the nodes are stopped through it)"
    if not kubelet and not go:
        return f"no kubelet {K8S_VERSION} built and no Go to build it (make dev builds it)"
    return None


def why_not_real_nodes() -> str | None:
    """None when this machine can run real nodes; otherwise the reason, for the user."""
    cache = nodeimages.CACHE_ROOT / "k8s" / K8S_VERSION  # hack/build-control-plane.sh
    return missing_for_real_nodes(
        euid=os.geteuid(),
        tools={tool: shutil.which(tool) is not None for tool in TOOLS},
        cni_bridge=Path(CNI_BIN, "bridge").exists(),
        pids_cgroup=(CGROUP_ROOT / "pids" / "cgroup.procs").exists(),
        kubelet=(cache / "kubelet").exists(),
        go=shutil.which("go") is not None,
    )


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def show(stack: RealStack, *args: str) -> str:
    print(f"$ kubectl {' '.join(args)}", flush=True)
    result = stack.kubectl(*args, check=False)
    out = (result.stdout or result.stderr).rstrip()
    print(out, flush=True)
    return out


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


def consumer_pod() -> dict[str, object]:
    return annotated_busybox_pod(
        CONSUMER, namespace=APPS, device=DEVICE, node="node-b", command=["sh", "-c", CONSUMER_SCRIPT]
    )


def device_on(stack: RealStack, node: str) -> bool:
    return stack.device_state(DEVICE) == ("True", node)


def manager_pods(stack: RealStack) -> list[str]:
    selector = f"{c.DEVICE_LABEL}={DEVICE},{c.COMPONENT_LABEL}=manager"
    return [p["metadata"]["name"] for p in stack.running_pods(NAMESPACE, selector)]


def device_hears(device_fd: int, expected: bytes, *, who: str, within: float = 60) -> None:
    line = read_until(device_fd, b"\n", timeout=within)
    print(f"printer received {line!r}", flush=True)
    if line != expected:
        raise AssertionError(f"the printer expected {expected!r} from {who} within {within}s, got {line!r}")


def conversation(stack: RealStack, device_fd: int, node: str) -> None:
    """The printer speaks, the consumer answers through its tty, bridge and the gateway."""
    line = f"hello from the printer on {node}\n".encode()
    print(f"printer sends    {line!r}", flush=True)
    os.write(device_fd, line)
    device_hears(device_fd, b"consumer got: " + line, who="the consumer")
    show(stack, "logs", "-n", APPS, CONSUMER, "-c", "app")


def story(stack: RealStack) -> int:
    """Runs the story on a started stack; returns the adapter's device fd on node-b."""
    say("Applying the original README's KubeSerial and Manager (OctoPrint played by busybox)")
    stack.kubectl("apply", "-f", "-", input=samples_with_local_octoprint())
    wait_until(
        lambda: condition_status(stack.get("serialdevice", DEVICE), c.READY) == "True",
        within=60,
        message=f"{DEVICE} Ready",
    )
    show(stack, "get", "serialdevice")

    say("Plugging a simulated FTDI FT232R (0403:6001) into node-a")
    adapter = UsbAdapter()
    stack.usb["node-a"].plug(adapter)
    device_a = stack.usb["node-a"].device_side(adapter)
    wait_until(lambda: device_on(stack, "node-a"), within=60, message=f"{DEVICE} available on node-a")
    show(stack, "get", "serialport")
    show(stack, "get", "serialdevice")
    wait_until(lambda: stack.gateway_pods(DEVICE, node="node-a"), within=180, message="the gateway on node-a")
    wait_until(lambda: manager_pods(stack), within=180, message="OctoPrint running")
    show(stack, "get", "pods", "-n", NAMESPACE, "-o", "wide")
    show(stack, "get", "managerschedulerequest")

    say("OctoPrint talks to the printer (node-a) through its tty, its bridge and the gateway")
    device_hears(device_a, b"M115\n", who="OctoPrint")
    os.write(device_a, b"FIRMWARE_NAME:Marlin (simulated) ok\n")
    manager = manager_pods(stack)[0]
    wait_until(
        lambda: "Marlin" in stack.kubectl("logs", "-n", NAMESPACE, manager, "-c", "manager").stdout,
        within=60,
        message="OctoPrint to hear the printer",
    )
    show(stack, "logs", "-n", NAMESPACE, manager, "-c", "manager")

    say("The gateway serves one session at a time: OctoPrint's Manager goes, the printer is Free")
    show(stack, "delete", "manager", "octoprint")
    wait_until(
        lambda: condition_status(stack.get("serialdevice", DEVICE), c.FREE) == "True",
        within=120,
        message="the gateway free",
    )
    show(stack, "get", "serialdevice", DEVICE, "-o", "jsonpath={.status.conditions[?(@.type=='Free')]}")
    print()
    show(stack, "get", "serialdevice", DEVICE, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')]}")
    print()

    say(f"A busybox consumer on node-b, {c.INJECT_ANNOTATION}={DEVICE}: the injector adds its bridge")
    stack.kubectl("create", "namespace", APPS, check=False)
    created = stack.kubectl("create", "-f", "-", input=yaml.safe_dump(consumer_pod()))
    print(created.stdout.rstrip(), created.stderr.rstrip(), sep="\n", flush=True)
    env = "{range .spec.containers[0].env[*]}{.name}={.value}{'\\n'}{end}"
    show(stack, "get", "pod", CONSUMER, "-n", APPS, "-o", f"jsonpath={{.metadata.annotations}}{{'\\n'}}{env}")
    stack.kubectl("wait", "--for=condition=Ready", "pod", CONSUMER, "-n", APPS, "--timeout=180s", timeout=200)
    show(stack, "get", "pod", CONSUMER, "-n", APPS, "-o", "wide")
    device_hears(device_a, b"hello from the consumer\n", who="the consumer")
    conversation(stack, device_a, "node-a")

    say("Moving the adapter to node-b: the gateway follows, the consumer's open tty carries on")
    stack.usb["node-a"].unplug(adapter)
    wait_until(lambda: not device_on(stack, "node-a"), within=60, message="unplugged")
    stack.usb["node-b"].plug(adapter)
    device_b = stack.usb["node-b"].device_side(adapter)
    wait_until(lambda: device_on(stack, "node-b"), within=60, message=f"{DEVICE} on node-b")
    wait_until(lambda: stack.gateway_pods(DEVICE, node="node-b"), within=180, message="the gateway on node-b")
    show(stack, "get", "serialport")
    show(stack, "get", "serialdevice")
    show(stack, "get", "pods", "-A", "-o", "wide", "-l", f"{c.DEVICE_LABEL}={DEVICE}")
    # The consumer's bridge reconnects (bytes the device sends before that go nowhere, as with a
    # real serial server without a client) and re-applies the consumer's port settings.
    wait_until(
        lambda: (
            stack.bridge_metric(APPS, CONSUMER, CONNECTED) == 1
            and stack.bridge_metric(APPS, CONSUMER, RECONNECTS) >= 1
        ),
        within=120,
        message="the consumer's bridge to reconnect",
    )
    wait_until(lambda: baud(device_b) == termios.B115200, within=30, message="the consumer's 115200 baud")
    show(stack, "get", "serialdevice", DEVICE, "-o", "jsonpath={.status.conditions[?(@.type=='Free')]}")
    print()
    conversation(stack, device_b, "node-b")
    show(
        stack,
        "get",
        "pod",
        CONSUMER,
        "-n",
        APPS,
        "-o",
        "jsonpath={range .status.initContainerStatuses[*]}{.name} restarts={.restartCount}{'\\n'}{end}"
        "{range .status.containerStatuses[*]}{.name} restarts={.restartCount}{'\\n'}{end}",
    )
    return device_b


def run(workdir: Path, *, hold: bool) -> None:
    say("Starting a real cluster: control plane + node-a and node-b (kubelet, containerd, kube-proxy)")
    say("and installing KubeSerial from deploy/kustomize/overlays/e2e (images built here)")
    # $KUBESERIAL_E2E_CLUSTER=DIR reuses a cluster that `python -m kubeserial_testing.nodes up` left.
    with running_stack(workdir) as stack:
        show(stack, "get", "nodes", "-o", "wide")
        show(stack, "get", "pods", "-A", "-o", "wide")
        try:
            device_fd = story(stack)
        except Exception:
            print(stack.diagnostics(APPS), flush=True)
            raise
        if hold:
            hold_for_the_user(stack, device_fd)
        say("Done. On your cluster: kubectl apply -k deploy/kustomize/overlays/default (see README)")


def hold_for_the_user(stack: RealStack, device_fd: int) -> None:
    """The consumer holds the one session: it goes first."""
    say("Handing the printer to you: the consumer holds the one session, so it goes")
    show(stack, "delete", "pod", CONSUMER, "-n", APPS, "--wait")
    wait_until(
        lambda: condition_status(stack.get("serialdevice", DEVICE), c.FREE) == "True",
        within=120,
        message="the gateway free",
    )
    say("Everything keeps running; the printer echoes and answers each line with `ok`. Ctrl-C stops")
    print(f"export KUBECONFIG={stack.cluster.kubeconfig}")
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
