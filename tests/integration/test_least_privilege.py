"""No more privilege than needed (issue 17, item 5), on a real kube-apiserver: the controller's
Events permission is granted per namespace, and the manager pods it makes pass Pod Security's
"restricted" profile in everything but the uid their application's image picks."""

import json
import uuid
from typing import Any

import pytest
import yaml

from kubeserial_common.core.models import ManagerSpec
from kubeserial_controller import desired
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane
from kubeserial_testing.services import NAMESPACE, SYSTEM_NAMESPACE, apply_rbac

pytestmark = pytest.mark.controlplane
CONTROLLER = f"system:serviceaccount:{SYSTEM_NAMESPACE}:kubeserial-controller"


def can_i(plane: ControlPlane, *args: str) -> bool:
    out = plane.kubectl("auth", "can-i", *args, f"--as={CONTROLLER}", check=False).stdout.strip()
    return out == "yes"


def test_controller_events_are_granted_per_namespace(control_plane: ControlPlane) -> None:
    """Cluster-scoped objects' Events go to "default", a KubeSerial's to its namespace: the
    controller may create Events there and nowhere else (before issue 17: in every namespace)."""
    apply_rbac(control_plane, "controller")
    elsewhere = f"apps-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", elsewhere)
    try:
        assert can_i(control_plane, "create", "events", "-n", "default")
        assert can_i(control_plane, "create", "events", "-n", NAMESPACE)
        assert not can_i(control_plane, "create", "events", "-n", elsewhere)
        assert not can_i(control_plane, "create", "events", "-n", "kube-system")
        assert not can_i(control_plane, "patch", "events", "-n", "default")
    finally:
        control_plane.kubectl("delete", "namespace", elsewhere, "--wait=false", check=False)


def manager_deployment(namespace: str) -> dict[str, Any]:
    """The Deployment the controller makes for the seed README's OctoPrint Manager."""
    seed = yaml.safe_load((REPO_ROOT / "tests" / "fixtures" / "seed" / "manager.yaml").read_text())
    spec = ManagerSpec.model_validate(seed["spec"])
    request = {
        "metadata": {"name": "ender3-octoprint", "uid": str(uuid.uuid4())},
        "spec": {"device": "ender3", "manager": "octoprint"},
    }
    images = desired.Images(gateway="kubeserial/gateway:0.1.0")
    objects = desired.desired_manager_objects(request, spec, namespace=namespace, images=images, ingress=None)
    (deployment,) = [obj for obj in objects if obj["kind"] == "Deployment"]
    deployment["metadata"].pop("ownerReferences")  # the request does not exist here
    return deployment


def test_manager_pods_are_restricted_but_for_their_images_uid(
    control_plane: ControlPlane,
) -> None:
    """The seed README's OctoPrint as the controller would run it, dry-run in a namespace that
    warns at Pod Security "restricted": the only findings are the uid (the app's image decides it,
    and its tty bridge has to share it). Before issue 17 the pod also had no seccomp profile, kept
    every default capability and could gain privileges (setuid)."""
    namespace = f"psa-{uuid.uuid4().hex[:6]}"
    control_plane.kubectl("create", "namespace", namespace)
    control_plane.kubectl(
        "label",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=baseline",
        "pod-security.kubernetes.io/warn=restricted",
    )
    try:
        body = manager_deployment(namespace)
        result = control_plane.kubectl(
            "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(body), check=False
        )
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if "restricted" in line]
        assert len(warnings) == 1, result.stderr
        # e.g. 'would violate PodSecurity "restricted:latest": runAsNonRoot != true (...), runAsUser=0 (...)'
        findings = warnings[0].split('":', 1)[1]
        assert "runAsNonRoot != true" in findings
        for absent in ("allowPrivilegeEscalation", "unrestricted capabilities", "seccompProfile"):
            assert absent not in findings, findings
        created = json.loads(result.stdout)
        (manager,) = [c for c in created["spec"]["template"]["spec"]["containers"] if c["name"] == "manager"]
        assert manager["resources"]["limits"]["memory"] == desired.MANAGER_MEMORY_LIMIT
    finally:
        control_plane.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
