"""The monitor process: udev inventory + SerialDevice informer -> claims, node resources, a Lease.

Everything is level-triggered. A udev event or a SerialDevice change only queues device names;
`reconcile_device` re-reads the inventory and the cached object and converges the status. Claims
carry the resourceVersion they were computed from (write_status), so when two nodes race for one
device the apiserver picks one and the other, re-reading, sees the winner and writes nothing.
"""

import asyncio
import functools
from dataclasses import dataclass
from typing import Any

import structlog
from kubernetes_asyncio import client
from pydantic import ValidationError

from kubeserial_common.core import constants as c
from kubeserial_common.core import resources as r
from kubeserial_common.core.conditions import now_rfc3339
from kubeserial_common.core.errors import ApiError, NotFound, message_of
from kubeserial_common.core.models import SerialDeviceSpec
from kubeserial_common.core.names import monitor_lease_name
from kubeserial_common.core.status import write_status
from kubeserial_common.core.vocabulary import DEVICE_AVAILABLE, DEVICE_UNAVAILABLE
from kubeserial_common.runtime.events import NORMAL, EventRecorder
from kubeserial_common.runtime.health import HealthServer
from kubeserial_common.runtime.kube import JSON_PATCH, CustomObjects, read_json
from kubeserial_common.runtime.leases import LeaseHolder
from kubeserial_common.runtime.runner import Runner
from kubeserial_common.runtime.watching import Informer
from kubeserial_common.runtime.workqueue import WorkQueue, run_workers
from kubeserial_monitor.claims import Change, decide, owned_by, owner
from kubeserial_monitor.metrics import Metrics
from kubeserial_monitor.noderesources import resource_patch
from kubeserial_monitor.udev import RESCAN_ACTIONS, UdevEvent, UdevWatcher, scan
from kubeserial_monitor.usb import UsbTty, assign

log = structlog.get_logger(__name__)

NODE_KEY = "node"  # the single key of the node-resources queue
COMPONENT = "kubeserial-monitor"
# The apiserver accepts an Event about a cluster-scoped object (a SerialDevice) only in "default"
# ("involvedObject.namespace: does not match event.namespace" anywhere else).
EVENTS_NAMESPACE = "default"


@dataclass(frozen=True)
class Settings:
    node: str
    namespace: str = c.DEFAULT_NAMESPACE
    rescan_seconds: float = 30.0
    resync_seconds: float = 300.0
    lease_duration_seconds: int = 40
    lease_renew_seconds: float = 10.0
    workers: int = 2
    shutdown_timeout_seconds: float = 5.0


class Monitor:
    def __init__(
        self,
        api: client.ApiClient,
        settings: Settings,
        *,
        metrics: Metrics,
        health: HealthServer,
        udev_context: Any = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.health = health
        self.objects = CustomObjects(api)
        self.core = client.CoreV1Api(api)
        self.events = EventRecorder(api, component=COMPONENT, cluster_namespace=EVENTS_NAMESPACE)
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
        self.informer = Informer(
            list_call=functools.partial(
                client.CustomObjectsApi(api).list_cluster_custom_object,
                r.SERIALDEVICE.group,
                r.SERIALDEVICE.version,
                r.SERIALDEVICE.plural,
            ),
            handler=self._on_device_event,
            name="serialdevices",
            resync_seconds=settings.resync_seconds,
        )
        self.watcher = UdevWatcher(on_event=self._on_udev_event, on_missed=self.rescan)
        if udev_context is not None:
            self.watcher.context = udev_context
        self.inventory: dict[str, UsbTty] = {}  # sys_path -> tty, on this node now
        self.plugged_at: dict[str, float] = {}  # sys_path -> loop time of its udev add event
        self.owned: set[str] = set()  # SerialDevices this node holds
        self.scanned = False
        self.device_queue: WorkQueue[str] = WorkQueue()
        self.node_queue: WorkQueue[str] = WorkQueue()
        self._invalid_seen: set[tuple[str, str]] = set()
        self._event_tasks: set[asyncio.Task[None]] = set()
        health.live_checks["udev"] = lambda: self.watcher.running
        health.ready_checks["serialdevices-synced"] = self.informer.synced.is_set
        health.ready_checks["udev-scanned"] = lambda: self.scanned

    # -- inputs ---------------------------------------------------------------------------------

    def _on_device_event(self, event_type: str, obj: dict[str, Any]) -> None:
        self.device_queue.add(obj["metadata"]["name"])
        if event_type == "DELETED":
            self.node_queue.add(NODE_KEY)

    def _on_udev_event(self, event: UdevEvent) -> None:
        self.metrics.udev_events.labels(event.action).inc()
        if event.action in RESCAN_ACTIONS:
            self.rescan()
            return
        if event.tty is None:
            self.inventory.pop(event.sys_path, None)
            self.plugged_at.pop(event.sys_path, None)
        else:
            if event.action == "add" or event.sys_path not in self.inventory:
                self.plugged_at[event.sys_path] = event.received
            self.inventory[event.sys_path] = event.tty
        log.info(
            "udev event",
            action=event.action,
            sys_path=event.sys_path,
            tty=event.tty.device_path if event.tty else None,
        )
        self._inventory_changed()

    def rescan(self) -> None:
        fresh = scan(self.watcher.context)
        for gone in self.plugged_at.keys() - fresh.keys():
            del self.plugged_at[gone]
        if fresh != self.inventory:
            log.info("rescan changed the inventory", ttys=sorted(t.device_path for t in fresh.values()))
        self.inventory = fresh
        self.scanned = True
        self.metrics.rescans.inc()
        self._inventory_changed()

    def _inventory_changed(self) -> None:
        self.metrics.usb_ttys.set(len(self.inventory))
        for _namespace, name in list(self.informer.cache):
            self.device_queue.add(name)

    # -- decisions ------------------------------------------------------------------------------

    def _specs(self) -> dict[str, SerialDeviceSpec]:
        """Parsed specs of every cached SerialDevice; an invalid one is logged once and skipped."""
        specs: dict[str, SerialDeviceSpec] = {}
        for (_namespace, name), obj in list(self.informer.cache.items()):
            try:
                specs[name] = SerialDeviceSpec.model_validate(obj.get("spec") or {})
            except ValidationError as exc:
                version = (name, str(obj["metadata"].get("resourceVersion")))
                if version not in self._invalid_seen:
                    self._invalid_seen.add(version)
                    log.warning("ignoring SerialDevice with an invalid spec", device=name, error=str(exc))
        return specs

    def _set_owned(self, name: str, owned: bool) -> None:
        before = name in self.owned
        if owned:
            self.owned.add(name)
        else:
            self.owned.discard(name)
        self.metrics.devices_owned.set(len(self.owned))
        if owned != before:
            self.node_queue.add(NODE_KEY)

    async def reconcile_device(self, name: str) -> None:
        obj = self.informer.cache.get(("", name))
        specs = self._specs()
        if obj is None or name not in specs:
            self._set_owned(name, False)
            return
        assignment = assign(specs, self.inventory.values())
        self.metrics.devices_matched.set(len(assignment))
        tty = assignment.get(name)
        path = tty.device_path if tty is not None else None
        # Taken now: an unplug may remove the tty from the inventory while the write is in flight.
        plugged = self.plugged_at.get(tty.sys_path) if tty is not None else None
        seen: list[tuple[dict[str, Any], Change]] = []

        def compute(current: dict[str, Any]) -> dict[str, Any] | None:
            decision = decide(current, node=self.settings.node, device_path=path, now=now_rfc3339())
            seen.append((current, decision.change))
            return decision.patch

        try:
            written = await write_status(self.objects, c.SERIALDEVICES, name, compute, current=obj)
        except NotFound:
            self._set_owned(name, False)
            return
        last_seen, change = seen[-1]
        final = written if written is not None else last_seen
        self._set_owned(name, tty is not None and owned_by(final, self.settings.node))
        if written is not None:
            self._after_write(name, change, final, tty, plugged=plugged)
        elif tty is not None and len(seen) > 1 and owner(last_seen) != self.settings.node:
            # Our claim met a conflict, and the fresh object shows another node holding it.
            self.metrics.claims.labels("lost").inc()
            log.info("device held by another node", device=name, holder=owner(last_seen))

    def _after_write(
        self, name: str, change: Change, obj: dict[str, Any], tty: UsbTty | None, *, plugged: float | None
    ) -> None:
        outcome = {Change.CLAIM: "claimed", Change.UPDATE: "updated", Change.RELEASE: "released"}[change]
        self.metrics.claims.labels(outcome).inc()
        if tty is not None and plugged is not None:
            self.plugged_at.pop(tty.sys_path, None)
            self.metrics.plug_to_status.observe(asyncio.get_running_loop().time() - plugged)
        log.info(f"device {outcome}", device=name, node=self.settings.node, path=tty and tty.device_path)
        if change is Change.CLAIM and tty is not None:
            self._post_event(
                obj, DEVICE_AVAILABLE, f"found at {tty.device_path} on node {self.settings.node}"
            )
        elif change is Change.RELEASE:
            self._post_event(obj, DEVICE_UNAVAILABLE, f"removed from node {self.settings.node}")

    def _post_event(self, obj: dict[str, Any], reason: str, message: str) -> None:
        """In the background: the next transition of this device must not wait for an Event."""
        task = asyncio.create_task(self.events.emit(obj, type_=NORMAL, reason=reason, message=message))
        self._event_tasks.add(task)
        task.add_done_callback(self._event_tasks.discard)

    async def sync_node_resources(self, _key: str = NODE_KEY, *, cleanup: bool = False) -> None:
        """Patch kubeserial.com/* on our Node; `cleanup` removes them all (shutdown)."""
        if not cleanup:
            await self.informer.synced.wait()  # before that, every device would look deleted
        node = await read_json(await self.core.read_node(self.settings.node, _preload_content=False))
        known = [] if cleanup else [name for _ns, name in self.informer.cache]
        owned = [] if cleanup else sorted(self.owned)
        ops = resource_patch(node.get("status") or {}, owned=owned, known=known)
        if not ops:
            return
        await self.core.patch_node_status(self.settings.node, ops, _content_type=JSON_PATCH)
        self.metrics.node_patches.inc()
        log.info("node resources patched", node=self.settings.node, ops=ops)

    # -- lifecycle ------------------------------------------------------------------------------

    async def _rescan_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.rescan_seconds)
            try:
                self.rescan()
            except Exception as exc:  # e.g. sysfs unreadable for a moment; try again next time
                log.warning("udev rescan failed", error=repr(exc))

    def _count_error(self, kind: str) -> Any:
        def on_error(key: str, exc: BaseException) -> None:
            self.metrics.reconcile_errors.labels(kind).inc()
            log.warning("reconcile failed", kind=kind, key=key, error=message_of(exc))

        return on_error

    async def start(self) -> None:
        """Before the runnables start: take the node Lease if we can, listen to udev, scan once."""
        try:
            await self.lease.try_acquire_or_renew()
        except ApiError as exc:  # the renew loop keeps trying
            log.warning("could not take the node lease yet", error=repr(exc))
        # Listen before the first scan so that nothing plugged in between is missed.
        self.watcher.start()
        self.rescan()
        self.node_queue.add(NODE_KEY)  # drop keys of devices deleted while we were down

    def register(self, runner: Runner) -> None:
        """The monitor's runnables and its shutdown step, supervised by the process runner."""
        runner.add("informer", self.informer.run)
        runner.add(
            "device-workers",
            lambda: run_workers(
                self.device_queue,
                self.reconcile_device,
                workers=self.settings.workers,
                name="device",
                on_error=self._count_error("device"),
            ),
        )
        runner.add(
            "node-workers",
            lambda: run_workers(
                self.node_queue,
                self.sync_node_resources,
                workers=1,
                name="node-resources",
                on_error=self._count_error("node"),
            ),
        )
        runner.add("lease", self.lease.run)
        runner.add("rescan", self._rescan_periodically)
        runner.on_shutdown("node-resources", self.shutdown)

    async def shutdown(self) -> None:
        """Remove our extended resources; the Lease is left to expire (a restart renews it)."""
        self.watcher.stop()
        if self._event_tasks:  # Events already decided on still get posted
            await asyncio.wait(self._event_tasks, timeout=self.settings.shutdown_timeout_seconds)
        try:
            await asyncio.wait_for(
                self.sync_node_resources(cleanup=True), timeout=self.settings.shutdown_timeout_seconds
            )
        except (ApiError, TimeoutError) as exc:
            log.warning("could not clean up node resources", error=repr(exc))
