"""`kubectl serial ls`, `adopt` and `status` on the real control plane, as a person would run them
(the console needs a kubelet for port-forward: its pure parts are unit-tested)."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from kubeserial_common.core.serialports import port_object
from kubeserial_testing.controlplane import ControlPlane

pytestmark = pytest.mark.controlplane
PLUGIN = Path(sys.executable).parent / "kubectl-serial"


def kubectl_serial(plane: ControlPlane, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(PLUGIN), "--kubeconfig", str(plane.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_ls_adopt_status(control_plane: ControlPlane) -> None:
    node = f"plugin-{uuid.uuid4().hex[:6]}"
    serial = uuid.uuid4().hex[:8].upper()
    by_id = f"/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_{serial}-if00-port0"
    port = port_object(
        node=node,
        vendor="0403",
        product="6001",
        devnode="/dev/ttyUSB0",
        device_path=by_id,
        serial=serial,
        manufacturer="FTDI",
        model="FT232R USB UART",
        by_id_path=by_id,
    )
    control_plane.kubectl("create", "-f", "-", input=json.dumps(port))
    name = f"printer-{uuid.uuid4().hex[:6]}"
    try:
        listed = kubectl_serial(control_plane, "ls")
        assert listed.returncode == 0, listed.stderr
        row = next(line.split() for line in listed.stdout.splitlines() if line.startswith(f"{node}/"))
        assert row[:4] == [f"{node}/ttyUSB0", "0403:6001", serial, "FT232R"]

        adopted = kubectl_serial(
            control_plane, "adopt", f"{node}/ttyUSB0", "--name", name, "--manager", "octoprint"
        )
        assert adopted.returncode == 0, adopted.stderr
        device = json.loads(control_plane.kubectl("get", "serialdevice", name, "-o", "json").stdout)
        assert device["spec"] == {
            "idVendor": "0403",
            "idProduct": "6001",
            "serialNumber": serial,
            "manager": "octoprint",
        }
        again = kubectl_serial(control_plane, "adopt", f"{node}/ttyUSB0", "--name", name)
        assert (again.returncode, again.stderr.strip()) == (1, f"error: SerialDevice '{name}' already exists")
        missing = kubectl_serial(control_plane, "adopt", f"{node}/ttyUSB7", "--name", "other")
        assert missing.returncode == 1 and "no adapter 'ttyUSB7'" in missing.stderr

        status = kubectl_serial(control_plane, "status", name)
        assert status.returncode == 0, status.stderr
        assert f"matches:   0403:6001 serial {serial}" in status.stdout
        unknown = kubectl_serial(control_plane, "status", "no-such-device")
        assert unknown.returncode == 1 and "unknown device 'no-such-device'" in unknown.stderr
        refused = kubectl_serial(control_plane, "console", name)
        assert refused.returncode == 1 and "is not available" in refused.stderr
    finally:
        control_plane.kubectl("delete", "serialport", port["metadata"]["name"], check=False)
        control_plane.kubectl("delete", "serialdevice", name, check=False)
