"""Manager specs the controller cannot turn into a ConfigMap and a mount are refused by the apiserver,
with a message that says what to write instead (instead of a controller retrying a 422 forever)."""

import json
import uuid

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
