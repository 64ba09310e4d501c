"""Manager specs the controller cannot turn into a ConfigMap and a mount are refused by the apiserver,
with a message that says what to write instead (instead of a controller retrying a 422 forever)."""

import json
import uuid
from typing import Any

import pytest

from kubeserial_testing.controlplane import ControlPlane

pytestmark = pytest.mark.controlplane

CONFIG_PATH_MESSAGE = "spec.configPath must be an absolute file path such as /data/config.yaml"


def manager(**spec: object) -> dict[str, object]:
    return {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "Manager",
        "metadata": {"name": f"m-{uuid.uuid4().hex[:8]}"},
        "spec": {"image": {"repository": "octoprint", "tag": "1"}, "runCmd": "run", **spec},
    }


def apply(plane: ControlPlane, obj: dict[str, object]) -> tuple[int, str]:
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
