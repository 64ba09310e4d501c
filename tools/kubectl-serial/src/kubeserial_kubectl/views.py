"""What `kubectl serial` prints and decides, as pure functions over the wire form."""

from collections.abc import Iterable, Mapping
from typing import Any

from kubeserial_common.core.conditions import get_condition
from kubeserial_common.core.vocabulary import AVAILABLE, FREE, IN_USE, READY

Obj = Mapping[str, Any]


class UserError(Exception):
    """A message for the person at the terminal (exit 1, no traceback)."""


def _spec(obj: Obj) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def table(rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows
    )


def port_short(port: Obj) -> str:
    """`ttyUSB0`: the devnode's base name, what people call the port on a node."""
    return str(_spec(port).get("devnode") or "").rsplit("/", 1)[-1]


def ls_table(ports: Iterable[Obj]) -> str:
    rows = [["NODE/PORT", "VENDOR:PRODUCT", "SERIAL", "MODEL", "DEVICE", "PATH"]]
    ordered = sorted(ports, key=lambda p: (str(_spec(p).get("nodeName")), port_short(p)))
    for port in ordered:
        spec = _spec(port)
        rows.append(
            [
                f"{spec.get('nodeName')}/{port_short(port)}",
                f"{spec.get('idVendor')}:{spec.get('idProduct')}",
                str(spec.get("serialNumber") or "-"),
                str(spec.get("product") or "-"),
                str((port.get("status") or {}).get("device") or "-"),
                str(spec.get("devicePath") or ""),
            ]
        )
    if len(rows) == 1:
        return (
            "no USB serial adapters found on any node (is the monitor running? kubectl -n kubeserial get ds)"
        )
    return table(rows)


def find_port(ports: Iterable[Obj], ref: str) -> Obj:
    """NODE/PORT (ttyUSB0, the by-id name, or the SerialPort's name), or the SerialPort's name."""
    node, _, which = ref.rpartition("/")
    candidates = []
    for port in ports:
        spec = _spec(port)
        names = {str(port["metadata"]["name"]), port_short(port)}
        for path in (spec.get("byIdPath"), spec.get("devicePath")):
            if path:
                names.add(str(path).rsplit("/", 1)[-1])
        if which in names and (not node or spec.get("nodeName") == node):
            candidates.append(port)
    if not candidates:
        where = f" on node {node}" if node else ""
        raise UserError(f"no adapter {which!r}{where}; `kubectl serial ls` lists them")
    if len(candidates) > 1:
        raise UserError(f"{ref!r} names several adapters; use NODE/PORT")
    return candidates[0]


def device_for_port(port: Obj, *, name: str, manager: str | None, baud: int | None) -> dict[str, Any]:
    spec = _spec(port)
    device_spec: dict[str, Any] = {"idVendor": spec.get("idVendor"), "idProduct": spec.get("idProduct")}
    if spec.get("serialNumber"):
        device_spec["serialNumber"] = spec["serialNumber"]
    if manager:
        device_spec["manager"] = manager
    if baud:
        device_spec["baudRate"] = baud
    return {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "SerialDevice",
        "metadata": {"name": name},
        "spec": device_spec,
    }


def status_text(device: Obj) -> str:
    status = device.get("status") or {}
    lines = [f"device:    {device['metadata']['name']}"]
    spec = _spec(device)
    ids = f"{spec.get('idVendor')}:{spec.get('idProduct')}"
    if spec.get("serialNumber"):
        ids += f" serial {spec['serialNumber']}"
    lines.append(f"matches:   {ids}")
    lines.append(f"node:      {status.get('nodeName') or '-'}")
    lines.append(f"path:      {status.get('devicePath') or '-'}")
    lines.append(f"port:      {status.get('port') or '-'}")
    for kind in (READY, AVAILABLE, FREE):
        cond = get_condition(device, kind) or {}
        label = f"{kind.lower()}:"
        text = f"{label:<10} {cond.get('status', '-')} {cond.get('reason', '')} {cond.get('message', '')}"
        lines.append(text.rstrip())
    return "\n".join(lines)


def console_refusal(device: Obj | None, name: str) -> str | None:
    """Why a console cannot open now, or None: unknown device, not available, busy."""
    if device is None:
        return f"unknown device {name!r}; `kubectl get serialdevices` lists them"
    available = get_condition(device, AVAILABLE) or {}
    if available.get("status") != "True":
        why = available.get("reason") or "not plugged in anywhere"
        return f"device {name!r} is not available ({why}); `kubectl serial status {name}` says more"
    free = get_condition(device, FREE) or {}
    if free.get("status") == "False" and free.get("reason") == IN_USE:
        peer = str(free.get("message") or "").removeprefix("session open from ").strip() or "another client"
        return f"device {name!r} is busy, held by {peer}"
    return None
