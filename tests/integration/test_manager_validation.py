"""Manager specs the controller cannot turn into a ConfigMap and a mount are refused by the apiserver,
with a message that says what to write instead (instead of a controller retrying a 422 forever)."""

import json
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane
from kubeserial_testing.services import wait_for

pytestmark = pytest.mark.controlplane

CONFIG_PATH_MESSAGE = "spec.configPath must be an absolute file path such as /data/config.yaml"


def manager(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "Manager",
        "metadata": {"name": f"m-{uuid.uuid4().hex[:8]}"},
        "spec": {"image": {"repository": "octoprint", "tag": "1"}, "runCmd": "run", **spec},
    }


def apply(plane: ControlPlane, obj: Mapping[str, object]) -> tuple[int, str]:
    result = plane.kubectl("apply", "-f", "-", input=json.dumps(obj), check=False)
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    "config_path",
    [
        "data/config.yaml",  # relative: no mount point
        "/data/my config.yaml",  # the file name becomes a ConfigMap key
        "/data/../etc/passwd",
        "/data/",
        "/",
    ],
)
def test_bad_config_path_is_rejected_with_a_clear_message(
    control_plane: ControlPlane, config_path: str
) -> None:
    code, stderr = apply(control_plane, manager(config="x: 1", configPath=config_path))
    assert code != 0, f"accepted configPath {config_path!r}"
    assert CONFIG_PATH_MESSAGE in stderr and "spec.configPath" in stderr, stderr


def test_config_without_a_path_is_rejected_not_dropped(control_plane: ControlPlane) -> None:
    code, stderr = apply(control_plane, manager(config="x: 1"))
    assert code != 0
    assert "spec.config needs spec.configPath" in stderr, stderr


@pytest.mark.parametrize("config_path", ["/data/config.yaml", "/root/.octoprint/config.yaml", "/etc/app/.rc"])
def test_good_config_paths_are_accepted(control_plane: ControlPlane, config_path: str) -> None:
    code, stderr = apply(control_plane, manager(config="x: 1", configPath=config_path))
    assert code == 0, stderr
    assert apply(control_plane, manager())[0] == 0  # neither field: still fine


def kubeserial(domain: str) -> dict[str, object]:
    return {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "KubeSerial",
        "metadata": {"name": f"ks-{uuid.uuid4().hex[:8]}", "namespace": "default"},
        "spec": {"ingress": {"enabled": True, "domain": domain}, "serialDevices": []},
    }


@pytest.mark.parametrize("domain", ["Example.com", "example.com.", "*.example.com", "my domain"])
def test_bad_ingress_domain_is_rejected(control_plane: ControlPlane, domain: str) -> None:
    """The Ingress host <device>.<domain> would be refused on every reconcile, and the request
    would never be marked fulfilled; refuse the KubeSerial instead, saying why."""
    code, stderr = apply(control_plane, kubeserial(domain))
    assert code != 0, f"accepted domain {domain!r}"
    assert "spec.ingress.domain must be a lowercase DNS name" in stderr, stderr


@pytest.mark.parametrize("domain", ["example.com", ".example.com", "lan", ""])
def test_good_ingress_domains_are_accepted(control_plane: ControlPlane, domain: str) -> None:
    code, stderr = apply(control_plane, kubeserial(domain))
    assert code == 0, stderr


SERVICE_NAME_MESSAGE = "a Service name: at most 63 characters, no dots"


def named_manager(name: str) -> dict[str, object]:
    return {**manager(), "metadata": {"name": name}}


def test_a_manager_name_its_objects_cannot_carry_is_refused(control_plane: ControlPlane) -> None:
    """A manager's Deployment and Service are named <device>-<manager>: a dotted or 62-character
    Manager name could never be served, so the apiserver refuses it and says why."""
    for name in (f"octo.print-{uuid.uuid4().hex[:6]}", "m" * 56 + uuid.uuid4().hex[:6]):
        code, stderr = apply(control_plane, named_manager(name))
        assert code != 0, f"accepted Manager {name!r}"
        assert "metadata.name must have no dots and at most 61 characters" in stderr, stderr
    assert apply(control_plane, named_manager("m" * 55 + uuid.uuid4().hex[:6]))[0] == 0  # 61: fits


def test_a_device_whose_manager_objects_would_be_misnamed_is_refused_naming_the_field(
    control_plane: ControlPlane,
) -> None:
    device = "d" * 40 + uuid.uuid4().hex[:6]  # 46 characters: 16 left for the manager
    too_long = "m" * 17
    serial_device: dict[str, Any] = {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "SerialDevice",
        "metadata": {"name": device},
        "spec": {"idVendor": "0403", "idProduct": "6001", "manager": too_long},
    }
    code, stderr = apply(control_plane, serial_device)
    assert code != 0, "accepted"
    assert "spec.manager: Invalid value" in stderr and SERVICE_NAME_MESSAGE in stderr, stderr
    assert f"named {device}-{too_long}," in stderr, stderr

    entries = [
        {"name": "short", "idVendor": "0403", "idProduct": "6001", "manager": "octoprint"},
        {"name": device, "idVendor": "0403", "idProduct": "6001", "manager": too_long},
    ]
    listing = {
        **kubeserial(""),
        "spec": {"ingress": {"enabled": False}, "serialDevices": entries},
    }
    code, stderr = apply(control_plane, listing)
    assert code != 0, "accepted"
    assert "spec.serialDevices[1].manager: Invalid value" in stderr and SERVICE_NAME_MESSAGE in stderr, stderr

    serial_device["spec"]["manager"] = "m" * 16
    entries[1]["manager"] = "m" * 16
    assert apply(control_plane, serial_device)[0] == 0
    assert apply(control_plane, listing)[0] == 0


def test_objects_stored_before_the_name_rules_stay_writable(tmp_path: Path) -> None:
    """An upgrade applies the new CRDs over stored objects: a SerialDevice and a KubeSerial whose
    manager name breaks the new rules still take status writes, labels and finalizers (the
    controller's and the monitor's writes), and only a change to a name that still breaks them is
    refused. Its own control plane: the CRDs are replaced."""
    crd_dir = REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"
    new = [crd_dir / "app.kubeserial.com_serialdevices.yaml", crd_dir / "app.kubeserial.com_kubeserials.yaml"]
    old = []
    for path in new:  # the same CRDs without the rules this change added
        crd = yaml.safe_load(path.read_text())
        schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        _drop_manager_name_rules(schema)
        old.append(tmp_path / f"old-{path.name}")
        old[-1].write_text(yaml.safe_dump(crd))
    plane = ControlPlane(tmp_path / "plane").start()
    try:
        plane.kubectl("apply", *(f"--filename={p}" for p in old))
        plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        device, manager = "d" * 50, "m" * 20  # 71 characters together
        stored = {
            "apiVersion": "app.kubeserial.com/v1alpha1",
            "kind": "SerialDevice",
            "metadata": {"name": device},
            "spec": {"idVendor": "0403", "idProduct": "6001", "manager": manager},
        }
        entry = {"name": device, "idVendor": "0403", "idProduct": "6001", "manager": manager}
        listing = {
            **kubeserial(""),
            "metadata": {"name": "upgraded", "namespace": "default"},
            "spec": {"ingress": {"enabled": False}, "serialDevices": [entry]},
        }
        for obj in (stored, listing):
            plane.kubectl("create", "-f", "-", input=json.dumps(obj))
        plane.kubectl("apply", *(f"--filename={p}" for p in new))
        fresh = {**stored, "metadata": {"name": "e" * 50}}
        wait_for(lambda: apply(plane, fresh)[0] != 0, timeout=30, message="the new rules in effect")

        listed = ["kubeserial", "upgraded", "-n", "default"]
        writes = [  # what the monitor, the controller and a user write to stored objects
            merge_patch("serialdevice", device, patch={"status": {"nodeName": "n"}}, status=True),
            ["label", "serialdevice", device, "kubeserial.test/x=y"],
            merge_patch(*listed, patch={"metadata": {"finalizers": ["app.kubeserial.com/t"]}}),
            merge_patch(*listed, patch={"status": {"serialDevices": 1}}, status=True),
            merge_patch(*listed, patch={"metadata": {"finalizers": None}}),
        ]
        for args in writes:
            result = plane.kubectl(*args, check=False)
            assert result.returncode == 0, f"{' '.join(args[:3])}: {result.stderr}"
        changed = plane.kubectl(
            *merge_patch("serialdevice", device, patch={"spec": {"manager": "n" * 20}}), check=False
        )
        assert changed.returncode != 0 and SERVICE_NAME_MESSAGE in changed.stderr, changed.stderr
    finally:
        plane.stop()


def merge_patch(*target: str, patch: dict[str, Any], status: bool = False) -> list[str]:
    """kubectl arguments for a merge patch of `target` (kind, name and any -n), of its status if asked."""
    return [
        "patch",
        *target,
        *(["--subresource=status"] if status else []),
        "--type=merge",
        "-p",
        json.dumps(patch),
    ]


def _drop_manager_name_rules(node: Any) -> None:
    if isinstance(node, dict):
        rules = node.get("x-kubernetes-validations")
        if rules is not None:
            kept = [r for r in rules if "objects of the manager" not in r.get("messageExpression", "")]
            if kept:
                node["x-kubernetes-validations"] = kept
            else:
                del node["x-kubernetes-validations"]
        for value in node.values():
            _drop_manager_name_rules(value)
    elif isinstance(node, list):
        for item in node:
            _drop_manager_name_rules(item)
