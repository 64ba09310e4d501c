"""The monitor process: udev inventory -> this node's SerialPorts, and the node's Lease.

The monitor publishes what is plugged in; it reads no SerialDevice and decides nothing about them
(the controller binds). Its cost follows its own node's adapters, not the cluster's devices.

Everything is level-triggered and keyed by SerialPort name (deterministic: node + stable path,
kubeserial_common.core.serialports). A udev event queues the names of the tty before and after the
event; a rescan queues the names whose tty changed. `reconcile_port` compares what udev shows with
what the apiserver holds (listed once at start, then kept from our own writes) and creates, patches
or deletes that one SerialPort. No SerialPort is deleted at shutdown: a restarting monitor must not
make devices flap; the node's Lease tells the controller whether the node is alive.
"""

import asyncio
from dataclasses import dataclass
from typing import Any

from kubeserial_common.core import constants as c
from kubeserial_common.core import resources as r
from kubeserial_common.core.errors import AlreadyExists, ApiError, NotFound, message_of
from kubeserial_common.core.names import monitor_lease_name
from kubeserial_common.core.serialports import node_selector
from kubeserial_common.runtime.health import HealthServer
from kubeserial_common.runtime.lean import LeanClient
from kubeserial_common.runtime.leases import LeaseHolder
from kubeserial_common.runtime.logs import get_logger
from kubeserial_common.runtime.runner import Runner
from kubeserial_common.runtime.workqueue import WorkQueue, run_workers
from kubeserial_monitor.metrics import Metrics
from kubeserial_monitor.udev import RESCAN_ACTIONS, UdevEvent, UdevWatcher, scan
from kubeserial_monitor.usb import UsbTty

log = get_logger(__name__)


@dataclass(frozen=True)
class Settings:
    node: str
    namespace: str = c.DEFAULT_NAMESPACE
    rescan_seconds: float = 30.0
    resync_seconds: float = 0.0  # re-LIST this node's SerialPorts this often; 0: only at start
    lease_duration_seconds: int = 40
    lease_renew_seconds: float = 10.0
    workers: int = 2


def spec_patch(current: dict[str, Any], wanted: dict[str, Any]) -> dict[str, Any]:
    """A merge patch from one spec to another (null removes a field that went away)."""
    return {
        key: wanted.get(key) for key in current.keys() | wanted.keys() if current.get(key) != wanted.get(key)
    }


class Monitor:
    def __init__(
        self,
        api: LeanClient,
        settings: Settings,
        *,
        metrics: Metrics,
        health: HealthServer,
        udev_context: Any = None,
    ) -> None:
        self.api = api
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.lease = LeaseHolder(
            api,
            name=monitor_lease_name(settings.node),
            namespace=settings.namespace,
            # The node is the identity: a restarted monitor renews its node's Lease at once.
            identity=settings.node,
            duration_seconds=settings.lease_duration_seconds,
            renew_seconds=settings.lease_renew_seconds,
            labels={c.COMPONENT_LABEL: "monitor", c.MANAGED_BY_LABEL: c.MANAGED_BY},
        )
        self.watcher = UdevWatcher(on_event=self._on_udev_event, on_missed=self.rescan)
        if udev_context is not None:
            self.watcher.context = udev_context
        self.inventory: dict[str, UsbTty] = {}  # sys_path -> tty, on this node now
        self.by_name: dict[str, UsbTty] = {}  # SerialPort name -> tty
        self.plugged_at: dict[str, float] = {}  # SerialPort name -> loop time of its udev add event
        self.published: dict[str, dict[str, Any]] = {}  # SerialPort name -> spec the apiserver has
        self.listed = asyncio.Event()
        self.scanned = False
        self.queue: WorkQueue[str] = WorkQueue()
        health.live_checks["udev"] = lambda: self.watcher.running
        health.ready_checks["serialports-listed"] = self.listed.is_set
        health.ready_checks["udev-scanned"] = lambda: self.scanned

    # -- inputs ---------------------------------------------------------------------------------

    def _name(self, tty: UsbTty) -> str:
        return tty.port_name(self.settings.node)

    def _on_udev_event(self, event: UdevEvent) -> None:
        self.metrics.udev_events.labels(event.action).inc()
        if event.action in RESCAN_ACTIONS:
            self.rescan()
            return
        before = self.inventory.get(event.sys_path)
        if event.tty is None:
            self.inventory.pop(event.sys_path, None)
        else:
            self.inventory[event.sys_path] = event.tty
            if event.action == "add" or before is None:
                self.plugged_at[self._name(event.tty)] = event.received
        log.info(
            "udev event",
            action=event.action,
            sys_path=event.sys_path,
            tty=event.tty.device_path if event.tty else None,
        )
        self._changed([t for t in (before, event.tty) if t is not None])

    def rescan(self) -> None:
        fresh = scan(self.watcher.context)
        changed = [
            tty
            for path in fresh.keys() | self.inventory.keys()
            if fresh.get(path) != self.inventory.get(path)
            for tty in (fresh.get(path), self.inventory.get(path))
            if tty is not None
        ]
        if changed:
            log.info("rescan changed the inventory", ttys=sorted(t.device_path for t in fresh.values()))
        self.inventory = fresh
        self.scanned = True
        self.metrics.rescans.inc()
        self._changed(changed)

    def _changed(self, ttys: list[UsbTty]) -> None:
        """Queue only the SerialPorts these ttys name (before and after the change)."""
        self.by_name = {self._name(tty): tty for tty in self.inventory.values()}
        self.metrics.usb_ttys.set(len(self.inventory))
        for name in list(self.plugged_at):
            if name not in self.by_name:
                del self.plugged_at[name]
        for tty in ttys:
            self.queue.add(self._name(tty))

    # -- the apiserver side ---------------------------------------------------------------------

    async def list_ports(self) -> None:
        """What the apiserver holds for this node; queue every difference with the inventory."""
        body = await self.api.list(r.SERIALPORT, label_selector=node_selector(self.settings.node))
        fresh = {
            str(item["metadata"]["name"]): dict(item.get("spec") or {})
            for item in body.get("items") or []
            if (item.get("spec") or {}).get("nodeName") == self.settings.node
        }
        for name in fresh.keys() | self.published.keys() | self.by_name.keys():
            if fresh.get(name) != self.published.get(name) or name not in self.by_name:
                self.queue.add(name)
        self.published = fresh
        self.listed.set()

    async def reconcile_port(self, name: str) -> None:
        await self.listed.wait()
        tty = self.by_name.get(name)
        current = self.published.get(name)
        if tty is None:
            if current is None:
                return
            try:
                await self.api.delete(r.SERIALPORT, name)
                self.metrics.port_writes.labels("deleted").inc()
                log.info("serialport deleted", port=name, path=current.get("devicePath"))
            except NotFound:
                pass
            self.published.pop(name, None)
            return
        wanted = tty.port(self.settings.node)
        plugged = self.plugged_at.get(name)  # taken now: an unplug may come while we write
        if current == wanted["spec"]:
            return
        if current is None:
            try:
                created = await self.api.create(r.SERIALPORT, wanted)
                self.published[name] = dict(created.get("spec") or wanted["spec"])
                self.metrics.port_writes.labels("created").inc()
                log.info("serialport created", port=name, path=tty.device_path)
            except AlreadyExists:  # published by us before a restart whose LIST missed it
                existing = await self.api.get(r.SERIALPORT, name)
                self.published[name] = dict(existing.get("spec") or {})
                self.queue.add(name)
                return
        else:
            patched = await self.api.patch(
                r.SERIALPORT,
                name,
                {
                    "metadata": {"labels": wanted["metadata"]["labels"]},
                    "spec": spec_patch(current, wanted["spec"]),
                },
            )
            self.published[name] = dict(patched.get("spec") or wanted["spec"])
            self.metrics.port_writes.labels("updated").inc()
            log.info("serialport updated", port=name, path=tty.device_path)
        if plugged is not None and self.plugged_at.get(name) == plugged:
            del self.plugged_at[name]
            self.metrics.plug_to_port.observe(asyncio.get_running_loop().time() - plugged)

    # -- lifecycle ------------------------------------------------------------------------------

    async def _rescan_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rescan_seconds)
            try:
                self.rescan()
            except Exception as exc:  # e.g. sysfs unreadable for a moment; try again next time
                log.warning("udev rescan failed", error=repr(exc))

    async def _list_and_resync(self) -> None:
        """LIST this node's SerialPorts at start (retrying), then every resync_seconds if set."""
        failures = 0
        while True:
            try:
                await self.list_ports()
                failures = 0
            except ApiError as exc:
                failures += 1
                log.warning("cannot list this node's SerialPorts; retrying", error=message_of(exc))
                await asyncio.sleep(min(10.0, 0.2 * 2 ** min(failures, 6)))
                continue
            if self.settings.resync_seconds <= 0:
                await asyncio.Event().wait()  # runs until the process stops
            await asyncio.sleep(self.settings.resync_seconds)

    def _count_error(self, key: str, exc: BaseException) -> None:
        self.metrics.reconcile_errors.inc()
        log.warning("serialport reconcile failed", port=key, error=message_of(exc))

    async def start(self) -> None:
        """Before the runnables start: take the node Lease if we can, listen to udev, scan once."""
        try:
            await self.lease.try_acquire_or_renew()
        except ApiError as exc:  # the renew loop keeps trying
            log.warning("could not take the node lease yet", error=repr(exc))
        # Listen before the first scan so that nothing plugged in between is missed.
        self.watcher.start()
        self.rescan()

    def register(self, runner: Runner) -> None:
        """The monitor's runnables and its shutdown step, supervised by the process runner."""
        runner.add("serialports-list", self._list_and_resync)
        runner.add(
            "port-workers",
            lambda: run_workers(
                self.queue,
                self.reconcile_port,
                workers=self.settings.workers,
                name="serialport",
                on_error=self._count_error,
            ),
        )
        runner.add("lease", self.lease.run)
        runner.add("rescan", self._rescan_periodically)
        runner.on_shutdown("udev", self.shutdown)

    async def shutdown(self) -> None:
        """Stop listening. SerialPorts stay (a restart must not unbind devices); the Lease expires."""
        self.watcher.stop()
        await self.api.close()
