"""The CRDs on a real kube-apiserver: the seed README's manifests, printer columns, validation."""

import json
import subprocess
import uuid
from collections.abc import Mapping

import pytest
import yaml

from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane

SEED = REPO_ROOT / "tests" / "fixtures" / "seed"
pytestmark = pytest.mark.controlplane


def device(object_name: str, **spec: object) -> dict[str, object]:
    return {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "SerialDevice",
        "metadata": {"name": object_name},
        "spec": {"idVendor": "0403", "idProduct": "6001", **spec},
    }


def apply(plane: ControlPlane, obj: Mapping[str, object]) -> subprocess.CompletedProcess[str]:
    return plane.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)


def test_seed_manifests_apply_unchanged(control_plane: ControlPlane) -> None:
    control_plane.kubectl("create", "namespace", "kubeserial", check=False)
    for name in ("kubeserial.yaml", "serialdevice.yaml", "manager.yaml"):
        result = control_plane.kubectl("apply", "-f", str(SEED / name), check=False)
        assert result.returncode == 0, f"{name}: {result.stderr}"
    stored = json.loads(control_plane.kubectl("get", "manager", "octoprint", "-o", "json").stdout)
    assert stored["spec"]["image"] == {"repository": "janekbaraniewski/octoprint", "tag": "1.3.10"}
    assert stored["spec"]["runCmd"].startswith("mkdir /root/.octoprint && cp /data/config.yaml")
    kubeserial = json.loads(
        control_plane.kubectl("get", "kubeserial", "kubeserial", "-n", "kubeserial", "-o", "json").stdout
    )
    assert [d["name"] for d in kubeserial["spec"]["serialDevices"]] == ["ender3", "sonoff-zigbee"]


def test_seed_status_and_printer_columns(control_plane: ControlPlane) -> None:
    control_plane.kubectl("apply", "-f", str(SEED / "serialdevice.yaml"))
    control_plane.kubectl(
        "patch",
        "serialdevice",
        "ender3",
        "--subresource=status",
        "--type=merge",
        "--patch-file",
        str(SEED / "serialdevice-status.yaml"),
    )
    control_plane.kubectl(
        "patch",
        "serialdevice",
        "ender3",
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {"nodeName": "node-a", "devicePath": "/dev/ttyUSB0"}}),
    )
    lines = control_plane.kubectl("get", "serialdevice", "ender3").stdout.splitlines()
    assert lines[0].split() == ["NAME", "READY", "AVAILABLE", "NODE"]
    assert lines[1].split() == ["ender3", "True", "False", "node-a"]


def test_managerschedulerequest_columns(control_plane: ControlPlane) -> None:
    msr = {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "ManagerScheduleRequest",
        "metadata": {"name": "columns-octoprint"},
        "spec": {"device": "columns", "manager": "octoprint"},
    }
    assert apply(control_plane, msr).returncode == 0
    control_plane.kubectl(
        "patch",
        "msr",
        "columns-octoprint",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"fulfilled":true}}',
    )
    lines = control_plane.kubectl("get", "managerschedulerequest", "columns-octoprint").stdout.splitlines()
    assert lines[0].split() == ["NAME", "DEVICE", "MANAGER", "FULFILLED"]
    assert lines[1].split() == ["columns-octoprint", "columns", "octoprint", "true"]


@pytest.mark.parametrize(
    ("obj", "expected"),
    [
        (device("bad-vendor", idVendor="zz12"), "spec.idVendor"),
        (device("bad-product", idProduct="60011"), "spec.idProduct"),
        (
            {
                "apiVersion": "app.kubeserial.com/v1alpha1",
                "kind": "SerialDevice",
                "metadata": {"name": "no-vendor"},
                "spec": {"idProduct": "6001"},
            },
            "spec.idVendor: Required value",
        ),
        (device("Bad_Name"), "metadata.name"),
        (device("mismatch", name="other"), "spec.name must equal metadata.name"),
        (device("bad-manager", manager="Not A Name"), "spec.manager"),
        (device("bad-baud", baudRate=3), "spec.baudRate"),
        (
            {
                "apiVersion": "app.kubeserial.com/v1alpha1",
                "kind": "KubeSerial",
                "metadata": {"name": "no-ingress", "namespace": "default"},
                "spec": {"serialDevices": []},
            },
            "spec.ingress: Required value",
        ),
        (
            {
                "apiVersion": "app.kubeserial.com/v1alpha1",
                "kind": "KubeSerial",
                "metadata": {"name": "dup", "namespace": "default"},
                "spec": {
                    "ingress": {"enabled": False},
                    "serialDevices": [
                        {"name": "a", "idVendor": "0403", "idProduct": "6001"},
                        {"name": "a", "idVendor": "0403", "idProduct": "6002"},
                    ],
                },
            },
            "spec.serialDevices[1]: Duplicate value",
        ),
        (
            {
                "apiVersion": "app.kubeserial.com/v1alpha1",
                "kind": "Manager",
                "metadata": {"name": "no-image"},
                "spec": {"runCmd": "run"},
            },
            "spec.image: Required value",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else None,
)
def test_invalid_objects_are_rejected_naming_the_field(
    control_plane: ControlPlane, obj: dict[str, object], expected: str
) -> None:
    result = apply(control_plane, obj)
    assert result.returncode != 0, f"accepted: {obj}"
    assert expected in result.stderr, result.stderr


def test_unknown_condition_status_is_rejected(control_plane: ControlPlane) -> None:
    name = f"cond-{uuid.uuid4().hex[:6]}"
    assert apply(control_plane, device(name)).returncode == 0
    bad = {
        "status": {
            "conditions": [
                {
                    "type": "Available",
                    "status": "Maybe",
                    "reason": "Guess",
                    "lastTransitionTime": "2024-01-01T00:00:00Z",
                }
            ]
        }
    }
    result = control_plane.kubectl(
        "patch",
        "serialdevice",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(bad),
        check=False,
    )
    assert result.returncode != 0
    assert "status.conditions[0].status" in result.stderr and "Unsupported value" in result.stderr, (
        result.stderr
    )
    unknown_type = {
        "status": {
            "conditions": [
                {
                    "type": "Plugged",
                    "status": "True",
                    "reason": "Guess",
                    "lastTransitionTime": "2024-01-01T00:00:00Z",
                }
            ]
        }
    }
    result = control_plane.kubectl(
        "patch",
        "serialdevice",
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(unknown_type),
        check=False,
    )
    assert result.returncode != 0 and "status.conditions[0].type" in result.stderr, result.stderr


def test_kustomize_base_emits_the_five_crds() -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(REPO_ROOT / "deploy" / "kustomize" / "base" / "crd")],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    crds = sorted(
        doc["metadata"]["name"]
        for doc in yaml.safe_load_all(out)
        if doc and doc["kind"] == "CustomResourceDefinition"
    )
    assert crds == [
        "kubeserials.app.kubeserial.com",
        "managers.app.kubeserial.com",
        "managerschedulerequests.app.kubeserial.com",
        "serialdevices.app.kubeserial.com",
        "serialports.app.kubeserial.com",
    ]
