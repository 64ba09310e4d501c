"""What the monitor knows about a USB serial tty, and how SerialDevices are matched to ttys.

Pure functions only: the udev shell (udev.py) turns pyudev devices into `UsbTty` values and the
decisions here never touch sysfs or the apiserver.
"""

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from kubeserial_common.core.models import SerialDeviceSpec

BY_ID_PREFIX = "/dev/serial/by-id/"
BY_PATH_PREFIX = "/dev/serial/by-path/"
_HEX4 = re.compile(r"^[0-9a-f]{4}$")


@dataclass(frozen=True)
class UsbTty:
    """A tty whose USB ancestor we could identify."""

    sys_path: str
    devnode: str
    vendor: str  # 4 lowercase hex digits
    product: str  # 4 lowercase hex digits
    serial: str | None
    links: tuple[str, ...] = ()

    @property
    def device_path(self) -> str:
        return stable_device_path(self.devnode, self.links)


def stable_device_path(devnode: str, links: Iterable[str]) -> str:
    """/dev/serial/by-id/... survives replugs and renumbering (ttyUSB0 -> ttyUSB1); prefer it."""
    ordered = sorted(links)
    for prefix in (BY_ID_PREFIX, BY_PATH_PREFIX):
        for link in ordered:
            if link.startswith(prefix):
                return link
    return devnode


def normalize_usb_id(value: str | bytes | None) -> str | None:
    """'0403', b'0403\\n', '0x0403', 'ABCD' -> '0403'/'abcd'; anything else -> None."""
    if value is None:
        return None
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    text = text.strip().lower().removeprefix("0x")
    return text if _HEX4.match(text) else None


def normalize_serial(value: str | bytes | None) -> str | None:
    if value is None:
        return None
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    return text.strip() or None


def split_links(devlinks: str | None) -> tuple[str, ...]:
    """udev's DEVLINKS property is a space-separated list of symlinks."""
    return tuple(sorted(set((devlinks or "").split())))


def usb_tty(
    *,
    sys_path: str,
    devnode: str | None,
    usb_attributes: Mapping[str, str | bytes | None],
    properties: Mapping[str, str],
    links: Iterable[str] = (),
) -> UsbTty | None:
    """Build a UsbTty from the tty's udev properties and its usb_device parent's sysfs attributes.

    The parent's attributes are authoritative; udev's ID_* properties on the tty are the fallback
    (e.g. when sysfs of the parent is not readable). Not a USB tty, or no device node -> None.
    """
    vendor = normalize_usb_id(usb_attributes.get("idVendor")) or normalize_usb_id(
        properties.get("ID_VENDOR_ID")
    )
    product = normalize_usb_id(usb_attributes.get("idProduct")) or normalize_usb_id(
        properties.get("ID_MODEL_ID")
    )
    if not devnode or vendor is None or product is None:
        return None
    serial = normalize_serial(usb_attributes.get("serial")) or normalize_serial(
        properties.get("ID_SERIAL_SHORT")
    )
    all_links = tuple(sorted(set(links) | set(split_links(properties.get("DEVLINKS")))))
    return UsbTty(
        sys_path=sys_path, devnode=devnode, vendor=vendor, product=product, serial=serial, links=all_links
    )


def matches(spec: SerialDeviceSpec, tty: UsbTty) -> bool:
    """Vendor and product equal (hex, case-insensitive); the serial too when the spec names one."""
    if spec.id_vendor.lower() != tty.vendor or spec.id_product.lower() != tty.product:
        return False
    return spec.serial_number is None or spec.serial_number.strip() == (tty.serial or "")


def assign(specs: Mapping[str, SerialDeviceSpec], ttys: Iterable[UsbTty]) -> dict[str, UsbTty]:
    """Give each SerialDevice at most one tty, and each tty to at most one SerialDevice.

    Devices that name a serial number choose first, so a device without one (any adapter of that
    model) cannot take the adapter a more specific device asked for. Ties are broken by name and
    path, so the answer depends only on the inputs.
    """
    available = sorted(ttys, key=lambda tty: (tty.device_path, tty.sys_path))
    order = sorted(specs, key=lambda name: (specs[name].serial_number is None, name))
    taken: set[str] = set()
    result: dict[str, UsbTty] = {}
    for name in order:
        for tty in available:
            if tty.sys_path not in taken and matches(specs[name], tty):
                result[name] = tty
                taken.add(tty.sys_path)
                break
    return result
