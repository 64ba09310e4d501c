"""Binding SerialDevices to SerialPorts, node extended resources, and SerialPorts of vanished nodes.

- `BindingIndex` keeps, from the watch events, which devices and ports belong to which binding key
  (kubeserial_common.core.serialports: the devices naming one serial number, or the devices of one
  vendor:product naming none) and which ports are on which node. An event queues only the keys and
  nodes it touches, so the work per event follows what changed, not the cluster's size.
- `Binder.bind(key)` decides with kubeserial_common.core.binding.bind (pure) and writes: first each
  port's status.device (with its resourceVersion: two keys never both take one port), then each
  device's status (nodeName, devicePath, port, Available; Free at bind and release, free.py).
- `Binder.node(node)` sets kubeserial.com/<device> in the Node's capacity and allocatable from the
  ports on it (level-based: a kubelet that re-registers zeroes them, and they come back), and
  deletes the SerialPorts of a node whose Node object is gone and whose monitor Lease is not live
  (nobody else would: that node's monitor is gone with it).
"""

from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog

from kubeserial_common.core import constants as c
from kubeserial_common.core import vocabulary as v
from kubeserial_common.core.binding import Plan, bind
from kubeserial_common.core.conditions import ConditionUpdate, condition_status, get_condition
from kubeserial_common.core.errors import NotFound
from kubeserial_common.core.free import free_at_claim, free_at_release
from kubeserial_common.core.resources import NODE
from kubeserial_common.core.serialports import WILDCARD, BindKey, device_key, matches, port_keys
from kubeserial_common.core.status import conditions_patch, write_status
from kubeserial_common.runtime.events import NORMAL, WARNING, EventRecorder
from kubeserial_common.runtime.lean import JSON_PATCH, LeanClient
from kubeserial_common.runtime.leanobjects import LeanObjects
from kubeserial_controller import decisions as d
from kubeserial_controller.noderesources import resource_patch
from kubeserial_controller.world import World

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
# How long a device placed by an older version (no status.port) keeps that place untouched while its
# node's monitor has not published a SerialPort at that path yet: an in-place upgrade does not flap.
LEGACY_GRACE = timedelta(seconds=60)


def _spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("spec") or {}


def _status(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("status") or {}


def _name(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


class BindingIndex:
    """Devices and ports by binding key, ports by node, devices by node; maintained from events."""

    def __init__(self) -> None:
        self.devices_by_key: dict[BindKey, set[str]] = defaultdict(set)
        self.ports_by_key: dict[BindKey, set[str]] = defaultdict(set)  # (v, p, serial) and (v, p, *)
        self.ports_by_node: dict[str, set[str]] = defaultdict(set)
        self._device_key: dict[str, BindKey] = {}
        self._device_node: dict[str, str] = {}
        self.devices_by_node: dict[str, set[str]] = defaultdict(set)
        self._port_keys: dict[str, tuple[BindKey, ...]] = {}
        self._port_node: dict[str, str] = {}

    def device_event(self, event_type: str, obj: Obj) -> tuple[set[BindKey], set[str]]:
        """Keys and nodes to look at again after a SerialDevice event."""
        name = _name(obj)
        keys: set[BindKey] = set()
        nodes: set[str] = set()
        old_key, old_node = self._device_key.pop(name, None), self._device_node.pop(name, None)
        if old_key is not None:
            self.devices_by_key[old_key].discard(name)
            keys.add(old_key)
        if old_node:
            nodes.add(old_node)
            self.devices_by_node[old_node].discard(name)
        if event_type != "DELETED":
            key = device_key(_spec(obj))
            self._device_key[name] = key
            self.devices_by_key[key].add(name)
            keys.add(key)
            node = str(_status(obj).get("nodeName") or "")
            if node:
                self._device_node[name] = node
                self.devices_by_node[node].add(name)
                nodes.add(node)
        if old_node == self._device_node.get(name):
            nodes.discard(old_node or "")
        return keys, nodes

    def port_event(self, event_type: str, obj: Obj) -> tuple[set[BindKey], set[str]]:
        name = _name(obj)
        keys: set[BindKey] = set()
        nodes: set[str] = set()
        for key in self._port_keys.pop(name, ()):
            self.ports_by_key[key].discard(name)
            keys.add(key)
        old_node = self._port_node.pop(name, None)
        if old_node:
            self.ports_by_node[old_node].discard(name)
            nodes.add(old_node)
        if event_type != "DELETED":
            new_keys = port_keys(_spec(obj))
            self._port_keys[name] = new_keys
            for key in new_keys:
                self.ports_by_key[key].add(name)
                keys.add(key)
            node = str(_spec(obj).get("nodeName") or "")
            if node:
                self._port_node[name] = node
                self.ports_by_node[node].add(name)
                nodes.add(node)
        return keys, nodes

    def device_keys_for_port_keys(self, keys: set[BindKey]) -> set[BindKey]:
        """The binding keys (of devices) that port keys feed: the serial key, and the wildcard key
        when devices without a serial number exist for that vendor:product."""
        wanted: set[BindKey] = set()
        for key in keys:
            if key[2] == WILDCARD:
                if self.devices_by_key.get(key):
                    wanted.add(key)
            elif self.devices_by_key.get(key):
                wanted.add(key)
        return wanted


class Binder:
    def __init__(
        self,
        world: World,
        *,
        objects: LeanObjects,
        api: LeanClient,
        recorder: EventRecorder,
        node_grace: timedelta,
        wake_keys: Callable[[BindKey], None],
    ) -> None:
        self.world = world
        self.objects = objects
        self.api = api
        self.recorder = recorder
        self.node_grace = node_grace
        self.index = BindingIndex()
        self.wake_keys = wake_keys
        self.live_nodes: set[str] = set()
        self._warned: dict[str, tuple[str, ...]] = {}

    # -- liveness -------------------------------------------------------------------------------

    def alive(self, node: str, *, now: datetime | None = None) -> bool:
        lease = self.world.lease(node)
        remaining = d.node_lease_recheck(
            (lease or {}).get("spec"), now=now or datetime.now(UTC), grace=self.node_grace
        )
        return remaining is not None

    def node_liveness_changed(self, node: str, alive: bool) -> None:
        """A node came back (or went): its ports' keys decide again (new bindings need a live node)."""
        if alive == (node in self.live_nodes):
            return
        if alive:
            self.live_nodes.add(node)
        else:
            self.live_nodes.discard(node)
        keys: set[BindKey] = set()
        for port in list(self.index.ports_by_node.get(node, ())):
            keys |= set(self.index._port_keys.get(port, ()))
        for key in self.index.device_keys_for_port_keys(keys):
            self.wake_keys(key)

    # -- binding --------------------------------------------------------------------------------

    def _scope(self, key: BindKey) -> tuple[dict[str, Obj], dict[str, Obj]]:
        devices: dict[str, Obj] = {}
        for name in sorted(self.index.devices_by_key.get(key, ())):
            obj = self.world.device(name)
            if obj is not None and not obj["metadata"].get("deletionTimestamp"):
                devices[name] = obj
        vendor, product, selector = key
        port_key = (vendor, product, WILDCARD if selector == WILDCARD else selector)
        ports: dict[str, Obj] = {}
        for name in self.index.ports_by_key.get(port_key, ()):
            obj = self.world.port(name)
            if obj is not None:
                ports[name] = obj
        return devices, ports

    def _held_elsewhere(self, devices: Mapping[str, Obj]) -> Callable[[Mapping[str, Any]], bool]:
        def held(port: Mapping[str, Any]) -> bool:
            holder = _status(port).get("device")
            if not holder or holder in devices:
                return False
            other = self.world.device(str(holder))
            return other is not None and matches(_spec(other), _spec(port))

        return held

    def _reserved(self, key: BindKey) -> Callable[[Mapping[str, Any]], bool]:
        """For a wildcard key: a port whose serial number a waiting device names is theirs first."""

        def reserved(port: Mapping[str, Any]) -> bool:
            if key[2] != WILDCARD:
                return False
            serial = str(_spec(port).get("serialNumber") or "").strip()
            if not serial:
                return False
            for name in self.index.devices_by_key.get((key[0], key[1], serial), ()):
                device = self.world.device(name)
                if device is not None and not _status(device).get("port"):
                    return True
            return False

        return reserved

    def _legacy_wait(self, device: Obj, *, now: datetime) -> float | None:
        """Seconds to leave an older version's placement alone (None: decide now)."""
        status = _status(device)
        node, path = status.get("nodeName"), status.get("devicePath")
        if status.get("port") or not node or not path:
            return None
        if condition_status(device, c.AVAILABLE) not in ("True", "Unknown"):
            return None
        created = [
            str((self.world.port(p) or {}).get("metadata", {}).get("creationTimestamp") or "")
            for p in self.index.ports_by_node.get(str(node), ())
        ]
        created = [t for t in created if t]
        if not created:
            return 0.0  # nothing published on that node yet (an older monitor, or none): leave it
        first = min(datetime.fromisoformat(t.replace("Z", "+00:00")) for t in created)
        remaining = (first + LEGACY_GRACE - now).total_seconds()
        return remaining if remaining > 0 else None

    async def bind(self, key: BindKey) -> float | None:
        devices, ports = self._scope(key)
        if not devices and not any(_status(p).get("device") for p in ports.values()):
            return None
        now = datetime.now(UTC)
        plan = bind(
            devices,
            ports,
            held_elsewhere=self._held_elsewhere(devices),
            alive=lambda node: self.alive(node, now=now),
            reserved=self._reserved(key),
        )
        # 1. Ports first (the truth of a binding; resourceVersion makes each a compare-and-swap).
        for port_name in sorted(plan.holders, key=lambda p: plan.holders[p] is not None):
            wanted = plan.holders[port_name]
            port = ports[port_name]
            if _status(port).get("device") == wanted:
                continue
            body = {
                "metadata": {"resourceVersion": port["metadata"]["resourceVersion"]},
                "status": {"device": wanted},
            }
            try:
                await self.objects.patch_status(c.SERIALPORTS, port_name, body)
            except NotFound:
                continue  # unplugged meanwhile: its DELETED event queues this key again
            log.info("serialport bound" if wanted else "serialport released", port=port_name, device=wanted)
        # 2. Devices mirror their port.
        recheck: float | None = None
        for name, device in devices.items():
            bound_to = plan.bindings.get(name)
            if bound_to is None:
                wait = self._legacy_wait(device, now=now)
                if wait is not None:
                    if wait > 0:
                        recheck = wait if recheck is None else min(recheck, wait)
                    continue
            await self._write_device(name, device, ports.get(bound_to) if bound_to else None, plan)
        return recheck

    def _device_patch(self, obj: Obj, port: Obj | None, plan: Plan) -> dict[str, Any] | None:
        name = _name(obj)
        status = _status(obj)
        available = condition_status(obj, c.AVAILABLE)
        if port is None:
            if not (status.get("port") or status.get("nodeName") or available == "True"):
                return None
            release = [
                ConditionUpdate(
                    c.AVAILABLE, "False", v.DEVICE_UNAVAILABLE, "no SerialPort matches this device"
                ),
                free_at_release(),
            ]
            released = conditions_patch(obj, release) or {}
            return {"nodeName": None, "devicePath": None, "port": None, **released}
        spec = _spec(port)
        node, path, port_name = spec.get("nodeName"), spec.get("devicePath"), _name(port)
        fields = {"nodeName": node, "devicePath": path, "port": port_name}
        moved = any(status.get(k) != val for k, val in fields.items())
        updates: list[ConditionUpdate] = []
        if (available != "True" or moved) and (self.alive(str(node)) or available == "True"):
            message = plan.messages.get(name) or f"bound to SerialPort {port_name} ({path} on node {node})"
            updates.append(ConditionUpdate(c.AVAILABLE, "True", v.DEVICE_AVAILABLE, message))
            if available != "True":
                updates.append(free_at_claim())
        conditions = conditions_patch(obj, updates) if updates else None
        if not moved and conditions is None:
            return None
        return {**fields, **(conditions or {})}

    async def _write_device(self, name: str, device: Obj, port: Obj | None, plan: Plan) -> None:
        def compute(obj: dict[str, Any]) -> dict[str, Any] | None:
            return self._device_patch(obj, port, plan)

        try:
            written = await write_status(self.objects, c.SERIALDEVICES, name, compute, current=device)
        except NotFound:
            return
        if written is None:
            return
        before, after = condition_status(device, c.AVAILABLE), condition_status(written, c.AVAILABLE)
        if port is not None and after == "True" and (before != "True" or name in plan.adopted):
            cond = get_condition(written, c.AVAILABLE) or {}
            reason = v.DEVICE_AVAILABLE
            self._emit(written, NORMAL, reason, str(cond.get("message") or reason))
        elif port is None and before == "True":
            self._emit(written, NORMAL, v.DEVICE_UNAVAILABLE, "its SerialPort is gone; released")
        candidates = plan.ambiguous.get(name)
        if candidates and self._warned.get(name) != tuple(candidates):
            self._warned[name] = tuple(candidates)
            self._emit(written, WARNING, v.AMBIGUOUS_MATCH, plan.messages.get(name, ""))

    def _emit(self, device: Obj, type_: str, reason: str, message: str) -> None:
        # In the background: a binding worker moves on to the next key (a cold start binds thousands).
        obj = {**device, "apiVersion": c.API_VERSION, "kind": "SerialDevice"}
        self.recorder.emit(obj, type_=type_, reason=reason, message=message)

    def wake_placed_on(self, node: str) -> None:
        """Devices whose status places them on `node` decide again (SerialPorts appeared there)."""
        for name in list(self.index.devices_by_node.get(node, ())):
            key = self.index._device_key.get(name)
            if key is not None:
                self.wake_keys(key)

    # -- nodes: extended resources and clean-up -------------------------------------------------

    def devices_bound_on(self, node: str) -> list[str]:
        owned = []
        for port_name in self.index.ports_by_node.get(node, ()):
            holder = _status(self.world.port(port_name)).get("device")
            device = self.world.device(str(holder)) if holder else None
            if device is not None and _status(device).get("port") == port_name:
                owned.append(str(holder))
        return sorted(owned)

    async def node_resources(self, node: str) -> None:
        current = self.world.node(node)
        if current is None:
            return
        status = current.get("status") or {}
        keys = [k for k in (status.get("capacity") or {}) if k.startswith(c.EXTENDED_RESOURCE_PREFIX)]
        known = [k.removeprefix(c.EXTENDED_RESOURCE_PREFIX) for k in keys]
        known = [name for name in known if self.world.device(name) is not None]
        ops = resource_patch(status, owned=self.devices_bound_on(node), known=known)
        if not ops:
            return
        try:
            await self.api.patch(NODE, node, ops, subresource="status", content_type=JSON_PATCH)
        except NotFound:
            return
        log.info("node resources patched", node=node, ops=len(ops))

    async def cleanup_ports(self, node: str) -> int:
        """Delete the SerialPorts of a node that is gone (no Node object, no live monitor Lease)."""
        if not self.world.nodes.synced.is_set() or self.world.node(node) is not None or self.alive(node):
            return 0
        deleted = 0
        for port_name in sorted(self.index.ports_by_node.get(node, ())):
            try:
                await self.objects.delete(c.SERIALPORTS, port_name)
                deleted += 1
            except NotFound:
                pass
        if deleted:
            log.info("deleted SerialPorts of a node that is gone", node=node, ports=deleted)
        return deleted
