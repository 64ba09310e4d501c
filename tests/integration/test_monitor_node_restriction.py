"""Node-bound monitors (issue 17, item 2) on a real kube-apiserver: the shipped
ValidatingAdmissionPolicy lets the kubeserial-monitor ServiceAccount write only the SerialPorts of
the node its token is bound to and only that node's Lease. Tokens are real: TokenRequests bound to
Pods on node-a and node-b, as the kubelet mounts them (the real-node version of this is
tests/e2e/test_real_node_restriction.py)."""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeserial_common.core.serialports import port_object
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane
from kubeserial_testing.services import NAMESPACE, apply_rbac, node_bound_kubeconfig, wait_for

pytestmark = pytest.mark.controlplane
POLICIES = REPO_ROOT / "deploy" / "kustomize" / "base" / "policies"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"


class As:
    """kubectl with one identity's kubeconfig."""

    def __init__(self, plane: ControlPlane, kubeconfig: Path) -> None:
        self.plane, self.kubeconfig = plane, kubeconfig

    def run(self, *args: str, input: str | None = None) -> tuple[int, str]:
        result = self.plane.kubectl(f"--kubeconfig={self.kubeconfig}", *args, input=input, check=False)
        return result.returncode, result.stdout + result.stderr

    def create(self, obj: dict[str, Any]) -> tuple[int, str]:
        return self.run("create", "-f", "-", input=json.dumps(obj))


def port(node: str, tty: str = "ttyUSB0") -> dict[str, Any]:
    return port_object(
        node=node, vendor="0403", product="6001", devnode=f"/dev/{tty}", device_path=f"/dev/{tty}"
    )


def lease(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"holderIdentity": "x", "leaseDurationSeconds": 40},
    }


@pytest.fixture(scope="module")
def monitors(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, As]]:
    workdir = tmp_path_factory.mktemp("node-restriction")
    apply_rbac(control_plane, "monitor")
    # Monitors of earlier modules in this session may have left their Leases.
    for name in ("kubeserial-monitor-node-a", "kubeserial-monitor-node-b"):
        control_plane.kubectl("delete", "lease", name, "-n", NAMESPACE, "--ignore-not-found")
    control_plane.kubectl("apply", "-k", str(POLICIES))
    identities = {
        node: As(
            control_plane,
            node_bound_kubeconfig(
                control_plane,
                namespace=NAMESPACE,
                service_account="kubeserial-monitor",
                node=node,
                path=workdir / f"{node}.kubeconfig",
            ),
        )
        for node in ("node-a", "node-b")
    }
    identities["unbound"] = As(
        control_plane,
        control_plane.service_account_kubeconfig(NAMESPACE, "kubeserial-monitor", path=workdir / "u"),
    )
    # A policy takes effect once the apiserver has loaded it: wait until node-a's monitor is refused
    # a node-b port (a dry run, so nothing is left behind either way).
    wait_for(
        lambda: (
            identities["node-a"].run(
                "create", "--dry-run=server", "-f", "-", input=json.dumps(port("node-b"))
            )[0]
            != 0
        ),
        timeout=30,
        message="the ValidatingAdmissionPolicy to be in force",
    )
    try:
        yield identities
    finally:
        control_plane.kubectl("delete", "-k", str(POLICIES), "--ignore-not-found", check=False)
        # The apiserver drops a deleted policy asynchronously; later modules in this session run
        # monitors with unbound tokens.
        wait_for(
            lambda: (
                identities["unbound"].run(
                    "create", "--dry-run=server", "-f", "-", input=json.dumps(port("node-b"))
                )[0]
                == 0
            ),
            timeout=30,
            message="the ValidatingAdmissionPolicy to be gone",
        )
        control_plane.kubectl("delete", "serialports", "--all", check=False)
        # No kubelet finishes a graceful deletion here.
        control_plane.kubectl(
            "delete",
            "pods",
            "-n",
            NAMESPACE,
            "-l",
            "kubeserial.test/placeholder=true",
            "--grace-period=0",
            "--force",
            check=False,
        )
        for name in ("kubeserial-monitor-node-a", "kubeserial-monitor-node-b", "kubeserial-controller"):
            control_plane.kubectl("delete", "lease", name, "-n", NAMESPACE, "--ignore-not-found", check=False)


def test_a_pod_bound_token_carries_its_node(monitors: dict[str, As]) -> None:
    """ServiceAccountTokenPodNodeInfo (on by default since 1.30) on our v1.33 apiserver."""
    code, out = monitors["node-a"].run("auth", "whoami", "-o", "json")
    assert code == 0, out
    user = json.loads(out)["status"]["userInfo"]
    assert user["username"] == f"system:serviceaccount:{NAMESPACE}:kubeserial-monitor"
    assert user["extra"][NODE_NAME_KEY] == ["node-a"]
    code, out = monitors["unbound"].run("auth", "whoami", "-o", "json")
    assert NODE_NAME_KEY not in json.loads(out)["status"]["userInfo"].get("extra", {})


def test_a_monitor_writes_the_serial_ports_of_its_own_node(monitors: dict[str, As]) -> None:
    mine = port("node-a", "ttyUSB1")
    code, out = monitors["node-a"].create(mine)
    assert code == 0, out
    name = mine["metadata"]["name"]
    patch = json.dumps({"spec": {"devicePath": "/dev/ttyUSB2", "devnode": "/dev/ttyUSB2"}})
    code, out = monitors["node-a"].run("patch", "serialport", name, "--type=merge", "-p", patch)
    assert code == 0, out
    code, out = monitors["node-a"].run("delete", "serialport", name)
    assert code == 0, out


def test_a_monitor_cannot_write_another_nodes_serial_ports(
    control_plane: ControlPlane, monitors: dict[str, As]
) -> None:
    """A compromised monitor on node-a tries to publish, move, rewrite or delete node-b's ports."""
    code, out = monitors["node-a"].create(port("node-b", "ttyUSB3"))
    assert code != 0
    assert (
        "the monitor of node node-a may write only SerialPorts of that node: spec.nodeName is node-b" in out
    )

    theirs = port("node-b", "ttyUSB4")
    name = theirs["metadata"]["name"]
    code, out = monitors["node-b"].create(theirs)
    assert code == 0, out
    patch = json.dumps({"spec": {"devicePath": "/dev/ttyUSB5", "devnode": "/dev/ttyUSB5"}})
    code, out = monitors["node-a"].run("patch", "serialport", name, "--type=merge", "-p", patch)
    assert code != 0 and "may write only SerialPorts of that node" in out, out
    code, out = monitors["node-a"].run("delete", "serialport", name)
    assert code != 0 and "may write only SerialPorts of that node: spec.nodeName is node-b" in out, out
    assert control_plane.kubectl("get", "serialport", name, check=False).returncode == 0

    mine = port("node-a", "ttyUSB6")
    assert monitors["node-a"].create(mine)[0] == 0
    move = json.dumps({"spec": {"nodeName": "node-b"}})
    code, out = monitors["node-a"].run(
        "patch", "serialport", mine["metadata"]["name"], "--type=merge", "-p", move
    )
    assert code != 0 and "spec.nodeName is node-b" in out, out
    relabel = json.dumps({"metadata": {"labels": {"app.kubeserial.com/node": "node-b"}}})
    code, out = monitors["node-a"].run(
        "patch", "serialport", mine["metadata"]["name"], "--type=merge", "-p", relabel
    )
    assert code != 0 and "may not label a SerialPort app.kubeserial.com/node=node-b" in out, out


def test_a_monitor_writes_only_its_own_lease(control_plane: ControlPlane, monitors: dict[str, As]) -> None:
    code, out = monitors["node-a"].create(lease("kubeserial-monitor-node-a"))
    assert code == 0, out
    code, out = monitors["node-a"].create(lease("kubeserial-monitor-node-b"))
    assert code != 0
    assert "may write only its own Lease kubeserial-monitor-node-a, not kubeserial-monitor-node-b" in out
    # The controller's leader Lease: a monitor that could renew it could stall leader election.
    code, out = monitors["node-a"].create(lease("kubeserial-controller"))
    assert code != 0 and "not kubeserial-controller" in out, out
    held = json.loads(
        control_plane.kubectl(
            "get", "lease", "kubeserial-monitor-node-a", "-n", NAMESPACE, "-o", "json"
        ).stdout
    )
    held["spec"]["holderIdentity"] = "node-b"
    code, out = monitors["node-b"].run("replace", "-f", "-", input=json.dumps(held))
    assert code != 0 and "not kubeserial-monitor-node-a" in out, out


def test_a_token_without_a_node_writes_nothing(monitors: dict[str, As]) -> None:
    code, out = monitors["unbound"].create(port("node-a", "ttyUSB7"))
    assert code != 0 and "this token carries no node name" in out, out


def test_the_monitor_has_no_rbac_on_nodes_or_serial_devices(monitors: dict[str, As]) -> None:
    """What the monitor calls (kubeserial_monitor: its SerialPorts and its Lease) and nothing more."""
    for verb, resource, subresource in [
        ("patch", "nodes", "status"),
        ("get", "nodes", ""),
        ("list", "serialdevices.app.kubeserial.com", ""),
        ("patch", "serialdevices.app.kubeserial.com", "status"),
        ("patch", "serialports.app.kubeserial.com", "status"),
    ]:
        _, out = monitors["node-a"].run("auth", "can-i", verb, resource, f"--subresource={subresource}")
        assert out.strip().startswith("no"), (verb, resource, out)
