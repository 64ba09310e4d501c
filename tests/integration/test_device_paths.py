"""Constrained device paths (issue 17): the CRDs on a real kube-apiserver accept only USB serial
device paths, and the gateway (a real process) serves only a USB serial tty of its node, checked in
sysfs; a simulated adapter (umockdev testbed) passes the same check as a real one."""

import json
from pathlib import Path

import pytest

from kubeserial_testing.controlplane import ControlPlane
from kubeserial_testing.pty_gateway import run_gateway
from kubeserial_testing.services import wait_for
from kubeserial_testing.umockdev import SimulatedUsb, UsbAdapter

pytestmark = pytest.mark.controlplane


def serial_port(name: str, **spec: str) -> dict[str, object]:
    return {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "SerialPort",
        "metadata": {"name": name},
        "spec": {
            "nodeName": "node-b",
            "idVendor": "0403",
            "idProduct": "6001",
            "devnode": "/dev/ttyUSB0",
            "devicePath": "/dev/ttyUSB0",
            **spec,
        },
    }


def dry_run_create(plane: ControlPlane, obj: dict[str, object]) -> tuple[int, str]:
    result = plane.kubectl("create", "--dry-run=server", "-f", "-", input=json.dumps(obj), check=False)
    return result.returncode, result.stderr


@pytest.mark.parametrize(
    "path",
    [
        "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0",
        "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0",
        "/dev/ttyUSB3",
        "/dev/ttyACM0",
    ],
)
def test_a_serial_port_with_a_usb_serial_path_is_admitted(control_plane: ControlPlane, path: str) -> None:
    code, err = dry_run_create(control_plane, serial_port("node-b-ok", devicePath=path))
    assert code == 0, err


@pytest.mark.parametrize("path", ["/dev/ttyS0", "/dev/mem", "/dev/serial/by-id/../../ttyS0", "/etc/shadow"])
def test_a_serial_port_with_any_other_path_is_denied_naming_the_field(
    control_plane: ControlPlane, path: str
) -> None:
    """Before issue 17 `nodeName: node-b, devicePath: /dev/ttyS0` was admitted (pattern ^/dev/[^.])."""
    code, err = dry_run_create(control_plane, serial_port("node-b-uart", devicePath=path))
    assert code != 0
    assert "spec.devicePath in body should match '^/dev/(serial/by-(id|path)/" in err, err
    code, err = dry_run_create(control_plane, serial_port("node-b-uart", devnode="/dev/ttyS0"))
    assert code != 0 and "spec.devnode in body should match '^/dev/tty(USB|ACM" in err, err


@pytest.mark.parametrize("prefix", ["/dev/serial/by-id/", "/dev/serial/by-path/"])
def test_a_link_name_longer_than_linux_allows_is_denied(control_plane: ControlPlane, prefix: str) -> None:
    """A link's name is at most NAME_MAX (255) characters under either prefix."""
    name = "a" * 255
    code, err = dry_run_create(control_plane, serial_port("node-b-long", devicePath=prefix + name))
    assert code == 0, err
    code, err = dry_run_create(control_plane, serial_port("node-b-long", devicePath=prefix + name + "b"))
    assert code != 0 and "spec.devicePath" in err, err
    if prefix.endswith("by-id/"):
        too_long = serial_port("node-b-long", byIdPath=prefix + name + "b")
        code, err = dry_run_create(control_plane, too_long)
        assert code != 0 and "spec.byIdPath" in err, err


def test_a_serial_device_cannot_be_pointed_at_a_mainboard_uart(control_plane: ControlPlane) -> None:
    control_plane.kubectl(
        "apply",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": "app.kubeserial.com/v1alpha1",
                "kind": "SerialDevice",
                "metadata": {"name": "pathcheck"},
                "spec": {"idVendor": "0403", "idProduct": "6001"},
            }
        ),
    )

    def patch(path: str) -> tuple[int, str]:
        status = json.dumps({"status": {"nodeName": "node-b", "devicePath": path}})
        result = control_plane.kubectl(
            "patch",
            "serialdevice",
            "pathcheck",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
            check=False,
        )
        return result.returncode, result.stderr

    code, err = patch("/dev/ttyS0")
    assert code != 0 and 'status.devicePath: Invalid value: "/dev/ttyS0"' in err, err
    assert "should match '^/dev/(serial/by-(id|path)/" in err, err
    code, err = patch("/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0")
    assert code == 0, err


def test_the_gateway_refuses_a_path_that_is_no_usb_serial_device(tmp_path: Path) -> None:
    """A shape that no USB adapter has: the gateway exits at once (code 2) naming --device."""
    with run_gateway(Path("/dev/ttyS0"), log_path=tmp_path / "gw.log", any_tty=False, wait_ready=False) as gw:
        assert gw.proc.wait(timeout=30) == 2
        assert "--device: '/dev/ttyS0' is not a USB serial device path" in gw.log()


def test_the_gateway_checks_sysfs_and_serves_only_a_usb_tty(tmp_path: Path) -> None:
    """Under a umockdev testbed (sysfs and /dev as the simulated adapter's node has them): the
    adapter's by-id link is served, through the same sysfs check a real adapter passes (its tty's
    /sys/dev/char entry has a usb ancestor). Refused, with readiness false and the tty never opened:
    a by-id link that points at the node's mainboard UART (/dev/ttyS0), and /dev/ttyUSB7 made as a
    second node for that UART's char 4:64 (a right name on the wrong device: only sysfs tells)."""
    adapter = UsbAdapter(serial="PATHCHECK1")
    with SimulatedUsb(tmp_path / "usb") as usb:
        usb.plug(adapter)
        usb.add_mainboard_uart()
        evil_link = "/dev/serial/by-id/usb-Evil_Adapter_1-if00-port0"
        Path(usb.root_dir + evil_link).symlink_to("../../ttyS0")
        spoofed = usb.alias_node("ttyUSB7", of="ttyS0")
        with run_gateway(
            Path(adapter.by_id), log_path=tmp_path / "good.log", any_tty=False, env=usb.env
        ) as good:
            assert good.ready() and good.metric("kubeserial_gateway_device_opens_total") == 1
            assert "refusing" not in good.log()
        for path, why in [
            (evil_link, f"--device {evil_link} (-> /dev/ttyS0) is not a USB serial tty"),
            (spoofed, "--device /dev/ttyUSB7: the tty has no USB parent in sysfs"),
        ]:
            log_path = tmp_path / f"{Path(path).name}.log"
            with run_gateway(
                Path(path), log_path=log_path, any_tty=False, env=usb.env, wait_ready=False
            ) as gw:
                wait_for(lambda gw=gw: "refusing to serve the device" in gw.log(), timeout=30)
                assert gw.proc.poll() is None and not gw.ready()
                assert why in gw.log()
                assert gw.metric("kubeserial_gateway_device_opens_total") == 0
