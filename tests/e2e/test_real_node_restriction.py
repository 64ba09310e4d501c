"""Node-bound monitors on real nodes (issue 17, item 2): a pod on node-a running as the
kubeserial-monitor ServiceAccount gets its projected token from a real kubelet; with it, writing a
node-b SerialPort (or node-b's Lease) is denied by the shipped ValidatingAdmissionPolicy with a
clear message, and writing its own node's is admitted. The control-plane version with tokens bound
by TokenRequest is tests/integration/test_monitor_node_restriction.py."""

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserial_common.core.serialports import port_object
from kubeserial_testing.controlplane import REPO_ROOT, kubeconfig_for
from kubeserial_testing.nodeimages import BUSYBOX_IMAGE
from kubeserial_testing.nodes import RealCluster, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real nodes need root (namespaces, cgroups)")
CRD_DIR = REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"
RBAC = REPO_ROOT / "deploy" / "kustomize" / "base" / "rbac" / "monitor.yaml"
POLICIES = REPO_ROOT / "deploy" / "kustomize" / "base" / "policies"
NAMESPACE = "kubeserial"
TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def monitor_pod(node: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": f"fake-monitor-{node}", "namespace": NAMESPACE},
        "spec": {
            "serviceAccountName": "kubeserial-monitor",
            "nodeSelector": {"kubernetes.io/hostname": node},
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "main",
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["sh", "-c", "exec sleep 3600"],
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealCluster]:
    with RealCluster(tmp_path_factory.mktemp("nodes"), preinstall=(CRD_DIR,)) as real:
        real.kubectl("create", "namespace", NAMESPACE)
        real.kubectl("apply", "-f", str(RBAC))
        real.kubectl("apply", "-k", str(POLICIES))
        yield real


def test_a_monitor_token_from_node_a_cannot_write_node_b(cluster: RealCluster, tmp_path: Path) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps(monitor_pod("node-a")))
    cluster.kubectl(
        "wait",
        "--for=condition=Ready",
        "pod/fake-monitor-node-a",
        "-n",
        NAMESPACE,
        "--timeout=90s",
        timeout=100,
    )
    # The token the kubelet of node-a projected into the pod.
    token = cluster.kubectl("exec", "-n", NAMESPACE, "fake-monitor-node-a", "--", "cat", TOKEN).stdout.strip()
    config = tmp_path / "node-a-monitor.kubeconfig"
    config.write_text(
        yaml.safe_dump(kubeconfig_for(cluster.plane.server, cluster.plane.ca_file, user={"token": token}))
    )

    def as_monitor(*args: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
        result = cluster.kubectl(
            f"--kubeconfig={config}", *args, input=None if body is None else json.dumps(body), check=False
        )
        return result.returncode, result.stdout + result.stderr

    code, out = as_monitor("auth", "whoami", "-o", "json")
    assert code == 0, out
    extra = json.loads(out)["status"]["userInfo"]["extra"]
    assert extra["authentication.kubernetes.io/node-name"] == ["node-a"]

    def port(node: str) -> dict[str, Any]:
        return port_object(
            node=node, vendor="0403", product="6001", devnode="/dev/ttyUSB0", device_path="/dev/ttyUSB0"
        )

    # Wait until the apiserver enforces the policy it was given at start (it loads policies async).
    def enforced() -> bool:
        return as_monitor("create", "--dry-run=server", "-f", "-", body=port("node-b"))[0] != 0

    wait_until("the monitor policy in force", enforced, timeout=30)
    code, out = as_monitor("create", "-f", "-", body=port("node-b"))
    assert code != 0
    assert (
        "the monitor of node node-a may write only SerialPorts of that node: spec.nodeName is node-b" in out
    ), out
    lease: dict[str, Any] = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "kubeserial-monitor-node-b", "namespace": NAMESPACE},
        "spec": {"holderIdentity": "x"},
    }
    code, out = as_monitor("create", "-f", "-", body=lease)
    assert code != 0 and "may write only its own Lease kubeserial-monitor-node-a" in out, out

    # Its own node's: admitted.
    code, out = as_monitor("create", "-f", "-", body=port("node-a"))
    assert code == 0, out
    lease["metadata"]["name"] = "kubeserial-monitor-node-a"
    code, out = as_monitor("create", "-f", "-", body=lease)
    assert code == 0, out
