"""Is this path a USB serial tty of this node? The gateway serves nothing else.

A gateway is privileged and opens whatever path its Deployment names; the CRDs constrain the path's
shape (kubeserial_common.core.devicepaths), and this checks the thing itself before every open:
the path resolves to a character device whose sysfs entry (/sys/dev/char/<major>:<minor>) is in the
`tty` class and has an ancestor on the `usb` bus. A mainboard UART (ttyS0), a pty, a console, a
by-id link that someone pointed elsewhere: refused, with a message naming `--device`.

`usb_tty_problem` decides from what sysfs showed (pure); `check_usb_tty` reads sysfs. umockdev's
testbeds (the simulated adapters of the tests) emulate exactly this part of sysfs and the device
numbers of their nodes, so simulated adapters pass the same check as real ones.
"""

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass

from kubeserial_common.core.devicepaths import device_path_problem, is_usb_tty_name

FIELD = "--device"


class NotUsbSerialTty(OSError):
    """The path is not a USB serial tty of this node; the message says why and names --device."""


@dataclass(frozen=True)
class SysfsView:
    """What sysfs says about the char device a path resolves to."""

    path: str  # as given
    target: str  # after symlinks
    is_char_device: bool
    sysfs_entry: str | None  # realpath of /sys/dev/char/M:m, None when there is none
    # subsystems from the device itself up to /sys/devices (None where there is no subsystem link)
    subsystems: Sequence[str | None] = ()


def usb_tty_problem(view: SysfsView) -> str | None:
    """None when `view` is a USB serial tty; otherwise why not, naming --device."""
    where = f"{FIELD} {view.path}" + (f" (-> {view.target})" if view.target != view.path else "")
    shape = device_path_problem(view.path, field=FIELD)
    if shape:
        return shape
    if not view.is_char_device:
        return f"{where} is not a character device"
    if not is_usb_tty_name(os.path.basename(view.target)) or not view.target.startswith("/dev/"):
        return f"{where} is not a USB serial tty (ttyUSB<n>, ttyACM<n>, ...)"
    if view.sysfs_entry is None:
        return f"{where}: no sysfs entry for this device on this node"
    if not view.subsystems or view.subsystems[0] != "tty":
        return f"{where}: sysfs entry {view.sysfs_entry} is not a tty"
    if "usb" not in view.subsystems[1:]:
        return f"{where}: the tty has no USB parent in sysfs ({view.sysfs_entry}); not a USB serial adapter"
    return None


def read_sysfs_view(path: str, *, sys_root: str = "/sys") -> SysfsView:
    """Raises OSError when the path is gone (the caller's "not now, retry")."""
    target = os.path.realpath(path)
    st = os.stat(target)
    if not stat.S_ISCHR(st.st_mode):
        return SysfsView(path, target, False, None)
    link = f"{sys_root}/dev/char/{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
    if not os.path.lexists(link):
        return SysfsView(path, target, True, None)
    entry = os.path.realpath(link)
    subsystems: list[str | None] = []
    directory = entry
    devices_root = f"{sys_root}/devices"
    while directory.startswith(devices_root + "/"):
        subsystem = os.path.join(directory, "subsystem")
        subsystems.append(os.path.basename(os.readlink(subsystem)) if os.path.islink(subsystem) else None)
        directory = os.path.dirname(directory)
    return SysfsView(path, target, True, entry, tuple(subsystems))


def check_usb_tty(path: str, *, sys_root: str = "/sys") -> None:
    """NotUsbSerialTty unless `path` is a USB serial tty of this node (OSError if it is gone)."""
    problem = usb_tty_problem(read_sysfs_view(path, sys_root=sys_root))
    if problem:
        raise NotUsbSerialTty(problem)
