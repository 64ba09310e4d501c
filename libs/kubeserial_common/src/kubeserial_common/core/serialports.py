"""SerialPort objects as pure functions over the wire form: their names, labels, bodies and matching.

A SerialPort is one USB serial adapter on one node, published by that node's monitor. Its name is
deterministic, so a rescan after a lost event, a restarted monitor and the monitor that published
it first all agree on it without reading anything:

    <node>-<10 hex digits of sha256("<node>\\0<device path>")>

where the device path is the adapter's stable path (the `/dev/serial/by-id/...` link, else
`/dev/serial/by-path/...`, else the devnode). Two identical adapters without serial numbers share
no by-id link (udev gives it to one of them), so their stable paths, and names, differ. A node name
too long for the result to fit 253 characters is shortened and given a hash of its own.

Plain dicts, no Pydantic: the monitor builds these on a Raspberry Pi and stays small.
"""

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from kubeserial_common.core import constants as c

NAME_MAX = 253
LABEL_MAX = 63
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
WILDCARD = "*"  # the binding key of devices that name no serial number

BindKey = tuple[str, str, str]  # (idVendor, idProduct, serialNumber or WILDCARD), lower-case hex ids


def _digest(text: str, length: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def port_name(node: str, device_path: str) -> str:
    suffix = _digest(f"{node}\0{device_path}", 10)
    if len(node) + 1 + len(suffix) > NAME_MAX:
        node = f"{node[: NAME_MAX - 2 * 11 - 1].rstrip('.-')}-{_digest(node, 10)}"
    return f"{node}-{suffix}"


def node_label_value(node: str) -> str:
    """Node names may be 253 characters; a label value only 63: long ones are shortened + hashed."""
    if len(node) <= LABEL_MAX and _LABEL_VALUE.match(node):
        return node
    head = re.sub(r"[^A-Za-z0-9]+$", "", node[: LABEL_MAX - 11])
    return f"{head}-{_digest(node, 10)}" if head else _digest(node, 20)


def node_selector(node: str) -> str:
    return f"{c.NODE_LABEL}={node_label_value(node)}"


def port_object(
    *,
    node: str,
    vendor: str,
    product: str,
    devnode: str,
    device_path: str,
    serial: str | None = None,
    manufacturer: str | None = None,
    model: str | None = None,
    by_id_path: str | None = None,
) -> dict[str, Any]:
    """The SerialPort the monitor of `node` publishes for one adapter (spec only; status is the
    controller's)."""
    spec: dict[str, Any] = {
        "nodeName": node,
        "idVendor": vendor.lower(),
        "idProduct": product.lower(),
        "devnode": devnode,
        "devicePath": device_path,
    }
    for key, value in (
        ("serialNumber", serial),
        ("manufacturer", manufacturer),
        ("product", model),
        ("byIdPath", by_id_path),
    ):
        if value:
            spec[key] = value[:256] if key != "byIdPath" else value
    return {
        "apiVersion": c.API_VERSION,
        "kind": "SerialPort",
        "metadata": {
            "name": port_name(node, device_path),
            "labels": {
                c.NODE_LABEL: node_label_value(node),
                c.MANAGED_BY_LABEL: c.MANAGED_BY,
                c.COMPONENT_LABEL: "monitor",
            },
        },
        "spec": spec,
    }


# -- matching (the controller's binder and `kubectl serial adopt` read the same rule) ---------------


def _lower(value: Any) -> str:
    return str(value or "").strip().lower()


def device_serial(device_spec: Mapping[str, Any]) -> str | None:
    serial = str(device_spec.get("serialNumber") or "").strip()
    return serial or None


def device_key(device_spec: Mapping[str, Any]) -> BindKey:
    """The unit of binding decisions a SerialDevice belongs to."""
    return (
        _lower(device_spec.get("idVendor")),
        _lower(device_spec.get("idProduct")),
        device_serial(device_spec) or WILDCARD,
    )


def port_keys(port_spec: Mapping[str, Any]) -> tuple[BindKey, BindKey]:
    """The binding units a SerialPort takes part in: the devices naming its serial number, and the
    devices of its vendor and product that name none."""
    vendor, product = _lower(port_spec.get("idVendor")), _lower(port_spec.get("idProduct"))
    serial = str(port_spec.get("serialNumber") or "").strip()
    return (vendor, product, serial or "\0none"), (vendor, product, WILDCARD)


def matches(device_spec: Mapping[str, Any], port_spec: Mapping[str, Any]) -> bool:
    """idVendor and idProduct equal as hex, case-insensitive; the serial number too when the device
    names one."""
    if _lower(device_spec.get("idVendor")) != _lower(port_spec.get("idVendor")):
        return False
    if _lower(device_spec.get("idProduct")) != _lower(port_spec.get("idProduct")):
        return False
    serial = device_serial(device_spec)
    return serial is None or serial == str(port_spec.get("serialNumber") or "").strip()
