"""Least-privilege namespaces (issue 17, item 4), on the real apiserver with its Pod Security
admission and ValidatingAdmissionPolicies.

The controller and the injector run in `kubeserial-system` (Pod Security `restricted`), the monitor,
the gateways and the manager workloads in `kubeserial` (`privileged`). The shipped policy
kubeserial-controller-workloads lets the controller's ServiceAccount create there only the gateway
and manager shapes its own code builds (kubeserial_controller.desired); the dry runs below are
authenticated with that ServiceAccount's real token, so RBAC and admission both run for real.
"""

import copy
import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserial_common.core.models import ManagerSpec
from kubeserial_controller.decisions import Placement
from kubeserial_controller.desired import Images, desired_gateway_deployment, desired_manager_objects
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane
from kubeserial_testing.services import NAMESPACE, SYSTEM_NAMESPACE, apply_rbac, wait_for

pytestmark = pytest.mark.controlplane
OVERLAY = REPO_ROOT / "deploy" / "kustomize" / "overlays" / "default"
POLICY = "kubeserial-controller-workloads"
# Installed for the module; only the namespaces (which other tests create anyway) stay afterwards.
INSTALLED_KINDS = ("ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ConfigMap")


def rendered() -> list[dict[str, Any]]:
    out = subprocess.run(["kubectl", "kustomize", str(OVERLAY)], check=True, capture_output=True, text=True)
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (found,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return found


DOCS = rendered()
GATEWAY_IMAGE = one(DOCS, "ConfigMap", POLICY)["data"]["gatewayImage"]
DEVICE = {"metadata": {"name": "door-lock", "uid": "0000"}, "spec": {"idVendor": "0658", "idProduct": "0200"}}
REQUEST = {
    "metadata": {"name": "door-lock-zwave", "uid": "0001"},
    "spec": {"device": "door-lock", "manager": "z"},
}
MANAGER = ManagerSpec.model_validate(
    {"image": {"repository": "zwavejs/zwave-js-ui", "tag": "9"}, "runCmd": "start"}
)


def gateway() -> dict[str, Any]:
    placement = Placement("node-a", "/dev/serial/by-id/usb-0658_0200-if00")
    return desired_gateway_deployment(
        DEVICE, placement, namespace=NAMESPACE, images=Images(gateway=GATEWAY_IMAGE)
    )


def manager() -> dict[str, Any]:
    objects = desired_manager_objects(
        REQUEST, MANAGER, namespace=NAMESPACE, images=Images(GATEWAY_IMAGE), ingress=None
    )
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    return deployment


def dry_run(
    plane: ControlPlane, obj: dict[str, Any], *, kubeconfig: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Server-side dry run of a create: authentication, RBAC and every admission plugin and policy run."""
    body = copy.deepcopy(obj)
    body["metadata"].pop("ownerReferences", None)  # owners that do not exist would be refused later
    body["metadata"]["name"] = f"{body['metadata']['name']}-{uuid.uuid4().hex[:6]}"
    config = f"--kubeconfig={kubeconfig or plane.kubeconfig}"
    return subprocess.run(
        ["kubectl", config, "create", "--dry-run=server", "-o", "name", "-f", "-"],
        input=json.dumps(body),
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(scope="module")
def controller_kubeconfig(control_plane: ControlPlane) -> Iterator[Path]:
    """The shipped namespaces, the controller's RBAC and token, the policy, its binding and parameters."""
    # Only this policy: the others of the overlay (the monitors' node restriction) are their tests' business.
    installed = [
        d
        for d in DOCS
        if d["kind"] == "Namespace" or (d["kind"] in INSTALLED_KINDS and d["metadata"]["name"] == POLICY)
    ]
    control_plane.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(installed)
    )
    for component in ("injector", "gateway"):  # their pods name their ServiceAccounts
        apply_rbac(control_plane, component)
    kubeconfig = apply_rbac(control_plane, "controller")
    privileged = gateway()
    privileged["spec"]["template"]["spec"]["hostPID"] = True
    # The apiserver compiles policies asynchronously: wait until this one denies.
    wait_for(
        lambda: (
            "ValidatingAdmissionPolicy" in dry_run(control_plane, privileged, kubeconfig=kubeconfig).stderr
        ),
        timeout=30,
        message="the policy in force",
    )
    yield kubeconfig
    # Other modules run their controller with images of their own: leave no policy behind.
    for kind in ("ValidatingAdmissionPolicyBinding", "ValidatingAdmissionPolicy"):
        control_plane.kubectl("delete", kind.lower(), POLICY, "--ignore-not-found")
    control_plane.kubectl("delete", "configmap", POLICY, "-n", SYSTEM_NAMESPACE, "--ignore-not-found")


def test_controller_and_injector_run_restricted_monitor_and_gateways_privileged() -> None:
    levels = {
        d["metadata"]["name"]: d["metadata"]["labels"].get("pod-security.kubernetes.io/enforce")
        for d in DOCS
        if d["kind"] == "Namespace"
    }
    assert levels == {SYSTEM_NAMESPACE: "restricted", NAMESPACE: "privileged"}
    where = {
        d["metadata"]["name"]: d["metadata"]["namespace"]
        for d in DOCS
        if d["kind"] in ("Deployment", "DaemonSet")
    }
    assert where == {
        "kubeserial-controller": SYSTEM_NAMESPACE,
        "kubeserial-injector": SYSTEM_NAMESPACE,
        "kubeserial-monitor": NAMESPACE,
    }
    accounts = {
        d["metadata"]["name"]: d["metadata"]["namespace"] for d in DOCS if d["kind"] == "ServiceAccount"
    }
    assert accounts == {
        "kubeserial-controller": SYSTEM_NAMESPACE,
        "kubeserial-injector": SYSTEM_NAMESPACE,
        "kubeserial-monitor": NAMESPACE,
        "kubeserial-gateway": NAMESPACE,
    }


def pod_of(workload: dict[str, Any], namespace: str) -> dict[str, Any]:
    template = workload["spec"]["template"]
    name = workload["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, **template["metadata"]},
        "spec": template["spec"],
    }


def test_pod_security_admits_controller_and_injector_pods_in_the_restricted_namespace_and_no_gateway(
    control_plane: ControlPlane, controller_kubeconfig: Path
) -> None:
    for name in ("kubeserial-controller", "kubeserial-injector"):
        admitted = dry_run(control_plane, pod_of(one(DOCS, "Deployment", name), SYSTEM_NAMESPACE))
        assert admitted.returncode == 0 and not admitted.stderr, admitted.stderr
    misplaced = pod_of(gateway(), SYSTEM_NAMESPACE)
    del misplaced["spec"]["serviceAccountName"]  # kubeserial-gateway lives in the other namespace
    denied = dry_run(control_plane, misplaced)
    assert denied.returncode != 0
    assert 'violates PodSecurity "restricted:latest"' in denied.stderr and "privileged" in denied.stderr, (
        denied.stderr
    )
    # The gateway's own namespace admits it.
    admitted = dry_run(control_plane, pod_of(gateway(), NAMESPACE))
    assert admitted.returncode == 0, admitted.stderr


def test_the_controller_creates_its_gateway_and_manager_shapes(
    control_plane: ControlPlane, controller_kubeconfig: Path
) -> None:
    for workload in (gateway(), manager()):
        out = dry_run(control_plane, workload, kubeconfig=controller_kubeconfig)
        assert out.returncode == 0, out.stderr


def gateway_with(**changes: Any) -> dict[str, Any]:
    obj = gateway()
    pod = obj["spec"]["template"]["spec"]
    for key, value in changes.items():
        if key in ("image", "command", "env"):
            pod["containers"][0][key] = value
        else:
            pod[key] = value
    return obj


def manager_with(pod_changes: dict[str, Any] | None = None, **container: Any) -> dict[str, Any]:
    obj = manager()
    pod = obj["spec"]["template"]["spec"]
    pod.update(pod_changes or {})
    pod["containers"][0].update(container)
    return obj


def host_root() -> dict[str, Any]:
    """The audit's example: privileged, hostPID, the host's root filesystem mounted."""
    obj = manager_with(
        {"hostPID": True, "shareProcessNamespace": False}, securityContext={"privileged": True}
    )
    pod = obj["spec"]["template"]["spec"]
    pod["volumes"] = [*pod.get("volumes", []), {"name": "host", "hostPath": {"path": "/"}}]
    pod["containers"][0]["volumeMounts"].append({"name": "host", "mountPath": "/host"})
    return obj


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        (host_root, "never uses the host's network, PID or IPC namespace"),
        (lambda: gateway_with(hostNetwork=True), "never uses the host's network, PID or IPC namespace"),
        (
            lambda: gateway_with(image="registry.example/miner:1"),
            f"a gateway is one container of image {GATEWAY_IMAGE}",
        ),
        (
            lambda: gateway_with(command=["/bin/sh", "-c", "cat /dev/sda"]),
            "running `serve` (no command, no env)",
        ),
        (lambda: gateway_with(env=[{"name": "LD_PRELOAD", "value": "/x.so"}]), "(no command, no env)"),
        (
            lambda: gateway_with(volumes=[{"name": "dev", "hostPath": {"path": "/", "type": "Directory"}}]),
            "a gateway mounts no host path but /dev",
        ),
        (
            lambda: manager_with({"serviceAccountName": "kubeserial-monitor"}),
            "default ServiceAccount without a token",
        ),
        (
            lambda: manager_with({"automountServiceAccountToken": True}),
            "default ServiceAccount without a token",
        ),
        (lambda: manager_with(securityContext={"privileged": True}), "runs nothing privileged"),
        (
            lambda: manager_with(securityContext={"capabilities": {"add": ["SYS_ADMIN"]}}),
            "adds no capability but NET_BIND_SERVICE",
        ),
        (lambda: manager_with(ports=[{"containerPort": 80, "hostPort": 80}]), "opens no host port"),
    ],
    ids=[
        "host-root",
        "gateway-host-network",
        "gateway-other-image",
        "gateway-command",
        "gateway-env",
        "gateway-host-root",
        "manager-monitor-account",
        "manager-token",
        "manager-privileged",
        "manager-capability",
        "manager-host-port",
    ],
)
def test_the_controller_creates_nothing_else_in_the_privileged_namespace(
    control_plane: ControlPlane, controller_kubeconfig: Path, workload: Any, message: str
) -> None:
    out = dry_run(control_plane, workload(), kubeconfig=controller_kubeconfig)
    assert out.returncode != 0, "admitted"
    assert f"ValidatingAdmissionPolicy '{POLICY}'" in out.stderr and message in out.stderr, out.stderr


def test_the_policy_binds_only_the_controller(
    control_plane: ControlPlane, controller_kubeconfig: Path
) -> None:
    """A cluster admin (or the Deployment controller's own pods) is not the controller's
    ServiceAccount: the policy stays out of their way; RBAC keeps the controller out of its own namespace."""
    assert dry_run(control_plane, host_root()).returncode == 0
    elsewhere = gateway()
    elsewhere["metadata"]["namespace"] = SYSTEM_NAMESPACE
    out = dry_run(control_plane, elsewhere, kubeconfig=controller_kubeconfig)
    assert out.returncode != 0 and "forbidden" in out.stderr, out.stderr
