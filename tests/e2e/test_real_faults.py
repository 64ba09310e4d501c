"""Faults with KubeSerial running as real pods on real kubelets; each case asserts that state
converges and that nothing is lost.

- A gateway container killed (SIGKILL) in the middle of a session: the kubelet restarts it, the
  consumer's bridge reconnects, the application's open tty carries on (same pod, no restart) with
  its baud re-applied at the device, and Free tells the truth afterwards.
- kube-apiserver down while the adapter is unplugged and, through a second apiserver on the same
  etcd, a SerialDevice is created; etcd is then compacted, so every watch resumes into 410 Gone.
  After the restart every transition is there, and a replug brings everything back.

Covered elsewhere on the same real components: a node dying without a FIN (test_real_story.py),
a monitor that stops renewing its Lease and two controller replicas failing over
(tests/integration/test_controller*.py), 410 Gone against the informer itself
(tests/integration/test_library_faults.py, test_informer_gone.py), the injector down
(tests/integration/test_injector.py); random faults for minutes: `make soak`.
"""

import json
import os
import signal
import termios
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from kubeserial_common import constants as c
from kubeserial_testing.nodes import in_netns, run
from kubeserial_testing.objects import kubeserial_for
from kubeserial_testing.probes import assert_json_logs
from kubeserial_testing.realstack import (
    NAMESPACE,
    SYSTEM_NAMESPACE,
    AppTty,
    RealStack,
    annotated_busybox_pod,
    app_command,
    running_stack,
    wait_until,
)
from kubeserial_testing.ttyio import baud, read_exactly
from kubeserial_testing.umockdev import UsbAdapter

pytestmark = [pytest.mark.umockdev, pytest.mark.timeout(1200)]

SUFFIX = uuid.uuid4().hex[:4]
DEVICE = f"killed-{SUFFIX}"
FAULTY = f"faulty-{SUFFIX}"
BORN = f"born-{SUFFIX}"
APPS = f"faults-{SUFFIX}"
DIAGNOSED_NAMESPACES = (APPS,)  # printed with KubeSerial's after a failure (conftest.py)
CONSUMER = "victim"
ADAPTER = UsbAdapter(serial=f"KIL{SUFFIX.upper()}")
FAULTY_ADAPTER = UsbAdapter(serial=f"FLT{SUFFIX.upper()}", port=2)
ENV_PREFIX = "KUBESERIAL_" + DEVICE.upper().replace("-", "_")
SECOND_APISERVER_PORT = 6444  # inside the control plane's own network namespace


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    with running_stack(tmp_path_factory.mktemp("faults")) as real:
        real.kubectl(
            "apply",
            "-f",
            "-",
            input=json.dumps(
                kubeserial_for("faults", {DEVICE: ADAPTER.serial, FAULTY: FAULTY_ADAPTER.serial})
            ),
        )
        yield real
        # After the faults, every KubeSerial container's log (the killed gateway's previous one and
        # the controller's from before the outage included) is still one JSON object per line.
        logs = real.container_logs(real.workdir / "logs", NAMESPACE, SYSTEM_NAMESPACE)
        assert any("_previous" in path.name for path in logs), [path.name for path in logs]
        assert_json_logs(*logs, allow_empty=True)


def ready_gateway(stack: RealStack, device: str) -> tuple[str, int] | None:
    """The one running, ready gateway pod's name and its container's restartCount."""
    pods = stack.gateway_pods(device)
    if len(pods) != 1:
        return None
    return pods[0]["metadata"]["name"], int(pods[0]["status"]["containerStatuses"][0]["restartCount"])


def test_gateway_killed_mid_session(stack: RealStack, tmp_path: Path) -> None:
    stack.kubectl("create", "namespace", APPS, check=False)
    command = app_command(f"{ENV_PREFIX}_TTY", "raw -echo cs8 -parenb 57600")
    pod = annotated_busybox_pod(CONSUMER, namespace=APPS, device=DEVICE, node="node-b", command=command)
    stack.kubectl("apply", "-f", "-", input=json.dumps(pod))
    stack.usb["node-a"].plug(ADAPTER)
    device_fd = stack.usb["node-a"].device_side(ADAPTER)
    wait_until(lambda: stack.device_state(DEVICE) == ("True", "node-a"), within=60, message="Available")
    wait_until(lambda: stack.gateway_pods(DEVICE, node="node-a"), within=120, message="gateway Running")
    stack.kubectl("wait", "--for=condition=Ready", "pod", CONSUMER, "-n", APPS, "--timeout=180s")
    tty = next(
        e["value"]
        for e in stack.get("pod", CONSUMER, "-n", APPS)["spec"]["containers"][0]["env"]
        if e["name"] == f"{ENV_PREFIX}_TTY"
    )
    app = AppTty(stack, namespace=APPS, pod=CONSUMER, container="app", tty=tty)

    def both_ways(label: bytes) -> None:
        app.write(label + b"to the device")
        assert read_exactly(device_fd, len(label) + 13, timeout=30) == label + b"to the device"
        os.write(device_fd, label + b"to the app")
        assert app.read_exactly(len(label) + 10) == label + b"to the app"

    wait_until(lambda: baud(device_fd) == termios.B57600, within=30, message="57600 baud at the device")
    both_ways(b"before:")
    wait_until(
        lambda: stack.condition(DEVICE, c.FREE).get("reason") == "InUse",
        within=30,
        message="Free=False InUse while the session is open",
    )

    gateway = ready_gateway(stack, DEVICE)
    assert gateway is not None
    gateway_pod, restarts = gateway
    os.kill(stack.container_pid("node-a", NAMESPACE, gateway_pod, "gateway"), signal.SIGKILL)
    wait_until(
        lambda: ready_gateway(stack, DEVICE) == (gateway_pod, restarts + 1),
        within=120,
        message="the kubelet restarted the gateway container in the same pod, ready again",
    )
    both_ways(b"after:")
    wait_until(
        lambda: baud(device_fd) == termios.B57600,
        within=30,
        message="the bridge re-applied the application's 57600 baud to the restarted gateway",
    )
    consumer = stack.get("pod", CONSUMER, "-n", APPS)
    restarted = [s["name"] for s in consumer["status"]["containerStatuses"] if s["restartCount"]]
    assert not restarted, f"the consumer's containers restarted: {restarted}"

    sidecars = [p for p in stack.container_logs(tmp_path, APPS) if "bridge" in p.name]
    assert sidecars and assert_json_logs(*sidecars), "the bridge sidecar logs one JSON object per line"
    stack.kubectl("delete", "pod", CONSUMER, "-n", APPS, "--wait=false")
    wait_until(
        lambda: stack.condition(DEVICE, c.FREE).get("status") == "True",
        within=60,
        message="Free=True once the consumer is gone",
    )
    available = stack.condition(DEVICE, c.AVAILABLE)
    assert (available["status"], available["reason"]) == ("True", "DeviceAvailable")


def second_apiserver_kubeconfig(stack: RealStack, path: Path) -> list[str]:
    """kubectl for a second kube-apiserver inside the control plane's network namespace."""
    plane = stack.cluster.plane
    config = yaml.safe_load(plane.kubeconfig.read_text())
    config["clusters"][0]["cluster"]["server"] = f"https://{plane.address}:{SECOND_APISERVER_PORT}"
    path.write_text(yaml.safe_dump(config))
    return in_netns(stack.cluster.switch_netns, "kubectl", f"--kubeconfig={path}")


def test_apiserver_down_during_unplug_then_compaction(stack: RealStack, tmp_path: Path) -> None:
    stack.usb["node-b"].plug(FAULTY_ADAPTER)
    wait_until(lambda: stack.device_state(FAULTY) == ("True", "node-b"), within=60, message="Available")
    wait_until(lambda: stack.gateway_pods(FAULTY, node="node-b"), within=120, message="gateway Running")
    plane = stack.cluster.plane
    kubectl_b = second_apiserver_kubeconfig(stack, tmp_path / "second.kubeconfig")
    plane.start_apiserver(name="kube-apiserver-b", port=SECOND_APISERVER_PORT)
    try:
        wait_until(
            lambda: run([*kubectl_b, "get", "--raw", "/readyz"], check=False).strip() == "ok",
            within=90,
            message="the second apiserver ready",
        )
        plane.stop_apiserver()
        stack.usb["node-b"].unplug(FAULTY_ADAPTER)
        born = {
            "apiVersion": c.API_VERSION,
            "kind": "SerialDevice",
            "metadata": {"name": BORN},
            "spec": {"idVendor": "10c4", "idProduct": "ea60"},
        }
        run([*kubectl_b, "create", "-f", "-"], input=json.dumps(born))
        plane.compact_etcd()
        plane.start_apiserver()
        plane.wait_ready()
    finally:
        plane.stop_apiserver("kube-apiserver-b")

    wait_until(lambda: stack.device_state(FAULTY)[0] == "False", within=120, message="Available=False")
    wait_until(
        lambda: not stack.get("deployment", f"{FAULTY}-gateway", "-n", NAMESPACE),
        within=120,
        message="the gateway removed",
    )
    wait_until(
        lambda: stack.condition(BORN, c.READY).get("status") == "True",
        within=120,
        message="the device created during the outage validated",
    )
    stack.usb["node-a"].plug(FAULTY_ADAPTER)
    wait_until(lambda: stack.device_state(FAULTY) == ("True", "node-a"), within=60, message="replugged")
    wait_until(lambda: stack.gateway_pods(FAULTY, node="node-a"), within=120, message="a new gateway Running")
    for namespace, workload in (
        (SYSTEM_NAMESPACE, "deployment/kubeserial-controller"),
        (SYSTEM_NAMESPACE, "deployment/kubeserial-injector"),
        (NAMESPACE, "daemonset/kubeserial-monitor"),
    ):
        stack.kubectl("rollout", "status", "-n", namespace, workload, "--timeout=120s", timeout=130)
