"""Which SerialPort each SerialDevice is bound to: the controller's binding rule, as a pure function.

The rule (DESIGN.md, data flow 3):
- a device matches a port by idVendor/idProduct (hex, case-insensitive) and, when the device names
  one, serialNumber (kubeserial_common.core.serialports.matches);
- each port serves at most one device and each device at most one port;
- a binding that exists is kept while its port exists and still matches: a device keeps its node,
  so a second matching adapter plugged in elsewhere never makes it move (no flapping);
- a device that an older version placed (status.nodeName + status.devicePath, Available True or
  Unknown, no status.port) is bound to the port at that path on that node first (in-place upgrade);
- otherwise devices are bound in name order to the first free matching port on a live node, ports
  ordered by (node, device path, name): the answer depends only on the inputs. A device with several
  candidates is told which one it got and why (`ambiguous`), and the caller posts a Warning Event.

The truth of a binding is the port's `status.device` (written first, with the port's
resourceVersion, so two decisions can never both take one port); the device's status mirrors it.

Decisions are made per binding key (serialports.device_key): the devices naming one serial number,
or the devices of one vendor:product naming none. Work per event is proportional to that key.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubeserial_common.core.conditions import condition_status
from kubeserial_common.core.serialports import device_serial, matches
from kubeserial_common.core.vocabulary import AVAILABLE

Obj = Mapping[str, Any]


def _spec(obj: Obj) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def _status(obj: Obj) -> Mapping[str, Any]:
    return obj.get("status") or {}


def port_order(port: Obj) -> tuple[str, str, str]:
    spec = _spec(port)
    return (str(spec.get("nodeName") or ""), str(spec.get("devicePath") or ""), str(port["metadata"]["name"]))


def port_paths(port: Obj) -> set[str]:
    spec = _spec(port)
    return {str(p) for p in (spec.get("devicePath"), spec.get("byIdPath"), spec.get("devnode")) if p}


@dataclass
class Plan:
    bindings: dict[str, str | None] = field(default_factory=dict)  # device -> port (None: unbound)
    holders: dict[str, str | None] = field(default_factory=dict)  # port -> device, for ports we decide
    messages: dict[str, str] = field(default_factory=dict)  # device -> why this port (new bindings)
    ambiguous: dict[str, list[str]] = field(default_factory=dict)  # device -> every candidate port
    adopted: set[str] = field(default_factory=set)  # devices bound from an older version's status


def describe(port: Obj) -> str:
    spec = _spec(port)
    return f"SerialPort {port['metadata']['name']} ({spec.get('devicePath')} on node {spec.get('nodeName')})"


def bind(
    devices: Mapping[str, Obj],
    ports: Mapping[str, Obj],
    *,
    held_elsewhere: Callable[[Obj], bool],
    alive: Callable[[str], bool],
    reserved: Callable[[Obj], bool] = lambda _port: False,
) -> Plan:
    """Bind `devices` (one binding key) among `ports` (every port that can match them).

    `held_elsewhere(port)`: the port is bound to a device outside this key (left alone).
    `alive(node)`: the node's monitor Lease is live (new bindings only go to live nodes).
    `reserved(port)`: a device naming the port's serial number waits for it (wildcard keys only:
    a specific device takes precedence for a new binding).
    """
    plan = Plan()
    ours = {name: port for name, port in ports.items() if not held_elsewhere(port)}
    # 1. Keep what exists: the port names the device and still matches it. A port on a lost node
    # (its monitor can no longer delete it) is kept only if no live node has a free match: an
    # adapter carried away from a dead node follows the user, not the stale object.
    on_lost_node: dict[str, str] = {}
    for port_name in sorted(ours):
        port = ours[port_name]
        holder = _status(port).get("device")
        if not holder or holder not in devices or not matches(_spec(devices[holder]), _spec(port)):
            continue
        if not alive(str(_spec(port).get("nodeName") or "")):
            on_lost_node.setdefault(str(holder), port_name)
            continue
        previous = plan.bindings.get(str(holder))
        if previous is None or _status(devices[holder]).get("port") == port_name:
            plan.bindings[str(holder)] = port_name
    for holder in plan.bindings:
        on_lost_node.pop(holder, None)
    taken = {port: device for device, port in plan.bindings.items() if port is not None}
    taken.update({port: device for device, port in on_lost_node.items()})
    unbound = sorted(name for name in devices if name not in plan.bindings)

    def free(port_name: str) -> bool:
        return port_name in ours and port_name not in taken

    # 2. In-place upgrade: a device an older version placed keeps that place.
    for name in unbound:
        if name in on_lost_node:
            continue
        status = _status(devices[name])
        node, path = status.get("nodeName"), status.get("devicePath")
        if not node or not path or condition_status(devices[name], AVAILABLE) not in ("True", "Unknown"):
            continue
        for port_name in sorted(ours, key=lambda p: port_order(ours[p])):
            port = ours[port_name]
            if (
                free(port_name)
                and _spec(port).get("nodeName") == node
                and path in port_paths(port)
                and matches(_spec(devices[name]), _spec(port))
            ):
                plan.bindings[name] = port_name
                taken[port_name] = name
                plan.adopted.add(name)
                plan.messages[name] = f"bound to {describe(port)}, where it already was"
                break
    # 3. New bindings, deterministic.
    for name in unbound:
        if name in plan.bindings:
            continue
        spec = _spec(devices[name])
        lost_port = on_lost_node.get(name)
        candidates = sorted(
            (
                p
                for p in ours
                if free(p)
                and not reserved(ours[p])
                and alive(str(_spec(ours[p]).get("nodeName") or ""))
                and matches(spec, _spec(ours[p]))
            ),
            key=lambda p: port_order(ours[p]),
        )
        if not candidates and lost_port is not None:
            plan.bindings[name] = lost_port  # no live match: it stays where it was (NodeLost)
            continue
        if not candidates:
            plan.bindings[name] = None
            continue
        chosen = candidates[0]
        plan.bindings[name] = chosen
        taken[chosen] = name
        if lost_port is not None:
            del taken[lost_port]  # released: the lost node's port no longer names the device
        message = f"bound to {describe(ours[chosen])}"
        if len(candidates) > 1:
            plan.ambiguous[name] = candidates
            what = f"{spec.get('idVendor')}:{spec.get('idProduct')}"
            serial = device_serial(spec)
            what += f" with serial number {serial}" if serial else " (no serialNumber given)"
            message += (
                f"; {len(candidates)} free SerialPorts match {what}: chose the first by node and path"
                f" ({', '.join(candidates[:5])}{', ...' if len(candidates) > 5 else ''}); set"
                " serialNumber to choose another"
            )
        plan.messages[name] = message
    for port_name in ours:
        plan.holders[port_name] = taken.get(port_name)
    return plan
