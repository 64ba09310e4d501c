"""What the monitor knows about a USB serial tty, and the SerialPort it publishes for it.

Pure functions only: the udev shell (udev.py) turns pyudev devices into `UsbTty` values and the
decisions here never touch sysfs or the apiserver. Matching SerialDevices to ports is the
controller's (kubeserial_common.core.binding); the monitor knows nothing of SerialDevices.
"""

import posixpath
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubeserial_common.core.devicepaths import BY_ID_PREFIX, BY_PATH_PREFIX, is_usb_tty_name
from kubeserial_common.core.serialports import port_name, port_object

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
    manufacturer: str | None = None
    model: str | None = None

    @property
    def device_path(self) -> str:
        return stable_device_path(self.devnode, self.links)

    @property
    def by_id_path(self) -> str | None:
        return next((link for link in sorted(self.links) if link.startswith(BY_ID_PREFIX)), None)

    def port_name(self, node: str) -> str:
        return port_name(node, self.device_path)

    def port(self, node: str) -> dict[str, Any]:
        """The SerialPort this node's monitor publishes for the tty."""
        return port_object(
            node=node,
            vendor=self.vendor,
            product=self.product,
            devnode=self.devnode,
            device_path=self.device_path,
            serial=self.serial,
            manufacturer=self.manufacturer,
            model=self.model,
            by_id_path=self.by_id_path,
        )


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


def normalize_text(value: str | bytes | None) -> str | None:
    """A USB string descriptor (manufacturer, product), or udev's ID_VENDOR/ID_MODEL with '_' for ' '."""
    return normalize_serial(value)


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
    (e.g. when sysfs of the parent is not readable). Not a USB tty, or no device node -> None; so is
    a tty whose name is none of the USB serial drivers' (kubeserial_common.core.devicepaths), which
    the SerialPort CRD and the gateway would refuse anyway.
    """
    if not devnode or not is_usb_tty_name(posixpath.basename(devnode)):
        return None
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
    manufacturer = normalize_text(usb_attributes.get("manufacturer")) or normalize_text(
        (properties.get("ID_VENDOR") or "").replace("_", " ")
    )
    model = normalize_text(usb_attributes.get("product")) or normalize_text(
        (properties.get("ID_MODEL") or "").replace("_", " ")
    )
    return UsbTty(
        sys_path=sys_path,
        devnode=devnode,
        vendor=vendor,
        product=product,
        serial=serial,
        links=all_links,
        manufacturer=manufacturer,
        model=model,
    )
