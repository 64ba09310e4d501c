"""Only a device's consumers reach its gateway, enforced on real nodes (issue 17, item 1).

KubeSerial from the shipped e2e overlay runs as real pods (kubeserial_testing.realstack) and
sigs.k8s.io/kube-network-policies v0.8.0 enforces NetworkPolicies on both nodes
(kubeserial_testing.netpol). A simulated adapter is plugged into node-a; the controller makes its
gateway and the gateway's NetworkPolicy. Pods with neither the injector's label nor the manager's
cannot connect to the gateway's raw or RFC 2217 port, from the gateway's node or another; a pod
annotated for the device (labelled by the injector) can, and what it sends reaches the device. The
same unlabelled pod, once labelled, gets through: the label is what decides. /metrics is open to a
pod labelled like Prometheus, closed to the others.
"""

import json
import os
import select
import uuid
from collections.abc import Iterator
from functools import partial

import pytest

from kubeserial_common.core import constants as c
from kubeserial_common.core.names import connect_label, gateway_name
from kubeserial_testing import netpol
from kubeserial_testing.nodeimages import BUSYBOX_IMAGE
from kubeserial_testing.objects import kubeserial_for
from kubeserial_testing.realstack import GATEWAY_HEALTH_PORT, NAMESPACE, RealStack, running_stack, wait_until
from kubeserial_testing.ttyio import read_until
from kubeserial_testing.umockdev import UsbAdapter

pytestmark = [
    pytest.mark.umockdev,
    pytest.mark.timeout(1800),
    pytest.mark.skipif(os.geteuid() != 0, reason="real nodes need root (namespaces, cgroups)"),
]

SUFFIX = uuid.uuid4().hex[:4]
DEVICE = f"guarded-{SUFFIX}"
ADAPTER = UsbAdapter(serial=f"NP{SUFFIX.upper()}", port=3)
APPS = f"np-apps-{SUFFIX}"
DIAGNOSED_NAMESPACES = (APPS,)  # printed with KubeSerial's after a failure (conftest.py)
GATEWAY_HOST = f"{gateway_name(DEVICE)}.{NAMESPACE}.svc"
CONNECT_SECONDS = 4  # busybox nc -w: a SYN that is dropped ends as "nc: timed out", exit 1


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    with running_stack(tmp_path_factory.mktemp("real-netpol")) as real:
        netpol.install(real.cluster)
        yield real


def client_pod(
    name: str, node: str, *, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name,
                "namespace": APPS,
                "labels": labels or {},
                "annotations": annotations or {},
            },
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "app",
                        "image": BUSYBOX_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "3600"],
                    }
                ],
            },
        }
    )


def exec_sh(stack: RealStack, pod: str, script: str) -> str:
    # The whole script's stderr (nc's "timed out") with its stdout.
    out = stack.kubectl(
        "exec", "-n", APPS, pod, "-c", "app", "--", "sh", "-c", f"{{ {script}; }} 2>&1", timeout=60
    )
    return out.stdout


def send(stack: RealStack, pod: str, port: int, line: str) -> str:
    """`line` to the gateway's Service from `pod`; the exit code is printed as `rc=N`. A connection
    that is made stays open until the gateway or `timeout` ends it (rc 0 or 143)."""
    return exec_sh(
        stack,
        pod,
        f"echo {line} | timeout {CONNECT_SECONDS + 3} nc -w {CONNECT_SECONDS} {GATEWAY_HOST} {port};"
        " echo rc=$?",
    )


def blocked(output: str) -> bool:
    return "timed out" in output and output.rstrip().endswith("rc=1")


def nothing_arrived(fd: int) -> bool:
    return not select.select([fd], [], [], 0)[0]


def wait_free(stack: RealStack) -> None:
    wait_until(
        lambda: stack.condition(DEVICE, c.FREE).get("status") == "True", within=30, message="the gateway Free"
    )


def test_only_connected_pods_reach_the_gateway(stack: RealStack) -> None:
    stack.kubectl(
        "apply", "-f", "-", input=json.dumps(kubeserial_for(f"np-{SUFFIX}", {DEVICE: ADAPTER.serial}))
    )
    stack.usb["node-a"].plug(ADAPTER)
    device = stack.usb["node-a"].device_side(ADAPTER)
    wait_until(
        lambda: stack.device_state(DEVICE) == ("True", "node-a"), within=60, message="Available on node-a"
    )
    wait_until(
        lambda: stack.gateway_pods(DEVICE, node="node-a"), within=120, message="gateway Running on node-a"
    )
    assert stack.get("networkpolicy", gateway_name(DEVICE), "-n", NAMESPACE), (
        "the controller made no NetworkPolicy"
    )
    for node in ("node-a", "node-b"):
        wait_until(partial(netpol.enforcing, stack.cluster, node), within=60, message=f"enforcer on {node}")

    stack.kubectl("create", "namespace", APPS)
    stack.kubectl("apply", "-f", "-", input=client_pod("stranger-a", "node-a"))
    stack.kubectl("apply", "-f", "-", input=client_pod("stranger-b", "node-b"))
    stack.kubectl(
        "apply",
        "-f",
        "-",
        input=client_pod("scraper", "node-b", labels={"app.kubernetes.io/name": "prometheus"}),
    )
    consumer = {c.INJECT_ANNOTATION: DEVICE, c.INJECT_MODE_ANNOTATION: "url"}
    stack.kubectl("apply", "-f", "-", input=client_pod("consumer", "node-b", annotations=consumer))
    stack.kubectl("wait", "--for=condition=Ready", "pod", "--all", "-n", APPS, "--timeout=120s", timeout=130)
    labels = stack.get("pod", "consumer", "-n", APPS)["metadata"]["labels"]
    assert labels == {connect_label(DEVICE): "true"}, "the injector labels the pod it connects"

    # Unlabelled pods, on the gateway's node and on the other: both ports closed, nothing reaches the device.
    for pod in ("stranger-a", "stranger-b"):
        for port in (c.RAW_PORT, c.RFC2217_PORT):
            out = send(stack, pod, port, f"from-{pod}")
            assert blocked(out), f"{pod} reached the gateway's port {port}: {out!r}"
    assert nothing_arrived(device)

    # The connected pod gets through, and its bytes reach the device.
    out = send(stack, "consumer", c.RAW_PORT, "from-consumer")
    assert not blocked(out), out
    assert read_until(device, b"\n", timeout=15) == b"from-consumer\n"
    wait_free(stack)

    # The same stranger, labelled: through as soon as the enforcer has seen the label.
    stack.kubectl("label", "pod", "stranger-b", "-n", APPS, f"{connect_label(DEVICE)}=true")
    wait_until(
        lambda: not blocked(send(stack, "stranger-b", c.RAW_PORT, "from-relabelled")),
        within=60,
        message="the relabelled pod to connect",
    )
    assert read_until(device, b"\n", timeout=15) == b"from-relabelled\n"
    wait_free(stack)

    # Health and metrics: the scraper's, not a stranger's.
    (gateway,) = stack.gateway_pods(DEVICE, node="node-a")
    metrics = f"http://{gateway['status']['podIP']}:{GATEWAY_HEALTH_PORT}/metrics"
    # Every wget is bounded by `timeout`: busybox 1.35's static wget segfaults when given -T.
    scraped = exec_sh(stack, "scraper", f"timeout 10 wget -qO- {metrics}; echo rc=$?")
    assert "kubeserial_gateway_sessions_total" in scraped, scraped
    refused = exec_sh(stack, "stranger-a", f"timeout {CONNECT_SECONDS} wget -qO- {metrics}; echo rc=$?")
    assert "kubeserial_gateway" not in refused and not refused.rstrip().endswith("rc=0"), refused


def more_diagnostics(stack: RealStack) -> None:
    """After a failure (tests/e2e/conftest.py): the network policy controller's view."""
    logs = stack.kubectl(
        "logs", "-n", netpol.NAMESPACE, "-l", "app=kube-network-policies", "--tail=40", check=False
    )
    print(logs.stdout, logs.stderr)
    for node in stack.cluster.nodes:
        print(node, netpol.verdicts(stack.cluster, node))
