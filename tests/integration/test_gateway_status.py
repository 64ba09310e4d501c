"""`Free` on the real apiserver, written by the gateway under its own ServiceAccount."""

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubeserial_testing.controlplane import ControlPlane, free_port
from kubeserial_testing.pty_device import PtyDevice
from kubeserial_testing.pty_gateway import Gateway, run_gateway
from kubeserial_testing.services import apply_rbac, wait_for

pytestmark = [
    pytest.mark.controlplane,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:serial.rfc2217"),
]
SA = "system:serviceaccount:kubeserial:kubeserial-gateway"


def serial_device(plane: ControlPlane, name: str) -> dict[str, Any]:
    return json.loads(plane.kubectl("get", "serialdevice", name, "-o", "json").stdout)  # type: ignore[no-any-return]


def free(plane: ControlPlane, name: str) -> tuple[str, str, str] | None:
    for cond in serial_device(plane, name).get("status", {}).get("conditions", []):
        if cond["type"] == "Free":
            return cond["status"], cond["reason"], cond.get("message", "")
    return None


@pytest.fixture
def device_name(control_plane: ControlPlane) -> Iterator[str]:
    """A SerialDevice that the (simulated) monitor has claimed: Available=True on node-a."""
    name = f"gw-{uuid.uuid4().hex[:8]}"
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "app.kubeserial.com/v1alpha1",
                "kind": "SerialDevice",
                "metadata": {"name": name},
                "spec": {"idVendor": "0403", "idProduct": "6001"},
            }
        ),
    )
    status = {
        "status": {
            "nodeName": "node-a",
            "devicePath": "/dev/ttyUSB0",
            "conditions": [
                {
                    "type": "Available",
                    "status": "True",
                    "reason": "DeviceAvailable",
                    "message": "claimed by the test",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    control_plane.kubectl(
        "patch", "serialdevice", name, "--subresource=status", "--type=merge", "-p", json.dumps(status)
    )
    yield name
    control_plane.kubectl("delete", "serialdevice", name, "--wait=false", check=False)


@pytest.fixture
def gateway(
    control_plane: ControlPlane, device_name: str, tmp_path: Path
) -> Iterator[tuple[Gateway, PtyDevice]]:
    kubeconfig = apply_rbac(control_plane, "gateway")
    with (
        PtyDevice(tmp_path / "ttyUSB0") as device,
        run_gateway(
            device.link,
            log_path=tmp_path / "gateway.log",
            kubeconfig=kubeconfig,
            args=["--device-name", device_name],
        ) as gw,
    ):
        yield gw, device


def test_free_flips_with_the_session_and_a_second_client_is_refused(
    control_plane: ControlPlane, device_name: str, gateway: tuple[Gateway, PtyDevice]
) -> None:
    gw, device = gateway
    wait_for(lambda: free(control_plane, device_name) == ("True", "NoSession", "no client session is open"))
    with gw.raw_client() as first:
        first.sendall(b"hi")
        assert device.read(2) == b"hi"
        peer = f"127.0.0.1:{first.getsockname()[1]} (raw)"
        wait_for(
            lambda: free(control_plane, device_name) == ("False", "InUse", f"session open from {peer}"),
            message="Free=False/InUse naming the client",
        )
        with gw.raw_client() as second:
            second.settimeout(10)
            assert second.recv(1) == b""  # refused: closed by the gateway
        assert gw.metric("kubeserial_gateway_refusals_total", reason="busy") == 1
        assert free(control_plane, device_name) == ("False", "InUse", f"session open from {peer}")
    wait_for(lambda: free(control_plane, device_name) == ("True", "NoSession", "no client session is open"))
    cond = next(
        c for c in serial_device(control_plane, device_name)["status"]["conditions"] if c["type"] == "Free"
    )
    assert cond["observedGeneration"] == 1 and cond["lastHeartbeatTime"]
    # Available (the monitor's) was left exactly as it was.
    available = next(
        c
        for c in serial_device(control_plane, device_name)["status"]["conditions"]
        if c["type"] == "Available"
    )
    assert (available["status"], available["message"]) == ("True", "claimed by the test")
    assert gw.metric("kubeserial_gateway_status_writes_total", result="failed") == 0
    # As deployed (API client loaded, sessions served): within the 40 MB budget of the issue.
    assert gw.rss_kib() < 40 * 1024, f"gateway RSS {gw.rss_kib() / 1024:.1f} MiB"


def test_free_is_restored_when_the_gateway_stops_mid_session(
    control_plane: ControlPlane, device_name: str, gateway: tuple[Gateway, PtyDevice]
) -> None:
    gw, _ = gateway
    with gw.raw_client() as client:
        wait_for(lambda: (free(control_plane, device_name) or ("",))[0] == "False", message="InUse")
        gw.proc.terminate()
        assert gw.proc.wait(timeout=15) == 0
        client.settimeout(10)
        assert client.recv(1) == b""
    assert free(control_plane, device_name) == ("True", "NoSession", "no client session is open")


def test_the_service_account_may_do_nothing_else(control_plane: ControlPlane) -> None:
    apply_rbac(control_plane, "gateway")

    def can(*args: str) -> bool:
        out = control_plane.kubectl("auth", "can-i", *args, f"--as={SA}", check=False)
        return out.stdout.strip() == "yes"

    assert can("get", "serialdevices.app.kubeserial.com")
    assert can("patch", "serialdevices.app.kubeserial.com", "--subresource=status")
    for verb, resource in [
        ("list", "serialdevices.app.kubeserial.com"),
        ("patch", "serialdevices.app.kubeserial.com"),
        ("update", "serialdevices.app.kubeserial.com"),
        ("delete", "serialdevices.app.kubeserial.com"),
        ("get", "secrets"),
        ("create", "events"),
        ("get", "kubeserials.app.kubeserial.com"),
    ]:
        assert not can(verb, resource), f"{SA} may {verb} {resource}"


def test_unreachable_apiserver_does_not_block_the_data_path(tmp_path: Path) -> None:
    """Status writes fail (and are retried) off the data path; sessions work meanwhile."""
    kubeconfig = tmp_path / "dead.kubeconfig"
    dead_port = free_port()
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{dead_port}"}}],
                "users": [{"name": "u", "user": {"token": "x"}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    with (
        PtyDevice(tmp_path / "ttyUSB0") as device,
        run_gateway(
            device.link,
            log_path=tmp_path / "gateway.log",
            kubeconfig=kubeconfig,
            args=["--device-name", "nowhere"],
        ) as gw,
        gw.raw_client() as client,
    ):
        client.sendall(b"works")
        assert device.read(5) == b"works"
        wait_for(lambda: gw.metric("kubeserial_gateway_status_writes_total", result="failed") >= 2)
        assert gw.proc.poll() is None


def test_a_serial_device_deleted_mid_session_breaks_nothing(
    control_plane: ControlPlane, device_name: str, gateway: tuple[Gateway, PtyDevice]
) -> None:
    """The SerialDevice is deleted while a client holds a session: the session goes on both ways,
    the gateway says once that the device is gone and keeps serving; when the device exists again
    (a KubeSerial listing it makes it again), Free is written there."""
    gw, device = gateway
    with gw.raw_client() as client:
        client.sendall(b"before")
        assert device.read(6) == b"before"
        wait_for(lambda: (free(control_plane, device_name) or ("",))[0] == "False", message="InUse")
        control_plane.kubectl("delete", "serialdevice", device_name)
        client.sendall(b"during")
        assert device.read(6) == b"during"
        device.write(b"back")
        client.settimeout(10)
        assert client.recv(4) == b"back"
    # The session's end cannot be written: said once, counted, and nothing else changes.
    wait_for(lambda: gw.metric("kubeserial_gateway_status_writes_total", result="missing") >= 2)
    missing = [line for line in gw.log().splitlines() if "SerialDevice does not exist" in line]
    assert len(missing) == 1 and device_name in missing[0], missing
    assert gw.metric("kubeserial_gateway_status_writes_total", result="failed") == 0
    assert gw.proc.poll() is None and gw.ready()
    with gw.raw_client() as again:
        again.sendall(b"next")
        assert device.read(4) == b"next"
    # Made again: Free is written on the new object.
    control_plane.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "app.kubeserial.com/v1alpha1",
                "kind": "SerialDevice",
                "metadata": {"name": device_name},
                "spec": {"idVendor": "0403", "idProduct": "6001"},
            }
        ),
    )
    wait_for(
        lambda: free(control_plane, device_name) == ("True", "NoSession", "no client session is open"),
        timeout=45,
        message="Free written on the device made again",
    )
    assert any("SerialDevice exists again" in line for line in gw.log().splitlines())
