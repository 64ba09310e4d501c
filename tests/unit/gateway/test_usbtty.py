"""The gateway's check that a path is a USB serial tty of its node (kubeserial_gateway.usbtty)."""

import os
from pathlib import Path

import pytest

from kubeserial_gateway.usbtty import (
    NotUsbSerialTty,
    SysfsView,
    check_usb_tty,
    read_sysfs_view,
    usb_tty_problem,
)

ENTRY = "/sys/devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/ttyUSB0/tty/ttyUSB0"


def view(**changes: object) -> SysfsView:
    fields: dict[str, object] = {
        "path": "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A1-if00-port0",
        "target": "/dev/ttyUSB0",
        "is_char_device": True,
        "sysfs_entry": ENTRY,
        "subsystems": ("tty", "usb-serial", "usb", "usb", "usb", "pci", None),
    }
    return SysfsView(**{**fields, **changes})  # type: ignore[arg-type]


def test_a_usb_serial_tty_is_served() -> None:
    assert usb_tty_problem(view()) is None
    acm = ("tty", "usb", "usb", "usb", "pci")
    assert usb_tty_problem(view(target="/dev/ttyACM0", subsystems=acm)) is None


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"path": "/dev/ttyS0", "target": "/dev/ttyS0"}, "is not a USB serial device path"),
        ({"target": "/dev/ttyS0"}, "is not a USB serial tty"),
        ({"target": "/dev/pts/3"}, "is not a USB serial tty"),
        ({"is_char_device": False}, "is not a character device"),
        ({"sysfs_entry": None}, "no sysfs entry"),
        ({"subsystems": ("tty", "platform", None)}, "has no USB parent"),
        ({"subsystems": ("usb", "usb")}, "is not a tty"),
    ],
)
def test_anything_else_is_refused_naming_the_flag(changes: dict[str, object], why: str) -> None:
    problem = usb_tty_problem(view(**changes))
    assert problem is not None and problem.startswith("--device") and why in problem


def _sysfs(root: Path, rdev: int, device: str, subsystems: dict[str, str]) -> None:
    """A sysfs-shaped tree: /dev/char/<maj:min> -> the device; a `subsystem` link per directory."""
    for directory, subsystem in subsystems.items():
        (root / directory).mkdir(parents=True, exist_ok=True)
        (root / directory / "subsystem").symlink_to(root / "bus" / subsystem)
    (root / "dev" / "char").mkdir(parents=True)
    (root / "dev" / "char" / f"{os.major(rdev)}:{os.minor(rdev)}").symlink_to(root / device)


def test_sysfs_is_read_from_the_device_up(tmp_path: Path) -> None:
    """A real char device (/dev/null) behind a USB-looking name, read against a sysfs-shaped tree:
    the walk goes from the device up and reports each level's subsystem."""
    rdev = os.stat("/dev/null").st_rdev
    device = "devices/platform/serial8250/tty/ttyUSB9"
    _sysfs(tmp_path, rdev, device, {device: "tty", "devices/platform/serial8250": "platform"})
    seen = read_sysfs_view("/dev/null", sys_root=str(tmp_path))
    assert seen.is_char_device and seen.sysfs_entry == str(tmp_path / device)
    assert seen.subsystems == ("tty", None, "platform", None)
    with pytest.raises(NotUsbSerialTty, match="not a USB serial device path"):
        check_usb_tty("/dev/null", sys_root=str(tmp_path))
    assert usb_tty_problem(SysfsView("/dev/ttyUSB9", "/dev/ttyUSB9", True, seen.sysfs_entry, seen.subsystems))


def test_a_path_that_is_gone_is_not_a_refusal(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        check_usb_tty(str(tmp_path / "ttyUSB0"), sys_root=str(tmp_path))
