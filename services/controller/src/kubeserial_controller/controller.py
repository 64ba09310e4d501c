"""Wiring: informers feed one work queue per kind; workers run the reconcilers on queued keys."""

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

import structlog

from kubeserial_common.core import constants as c
from kubeserial_common.core.errors import PermanentError, message_of, status_of
from kubeserial_common.core.serialports import BindKey
from kubeserial_common.core.vocabulary import RECONCILE_FAILED
from kubeserial_common.runtime.events import WARNING, EventRecorder
from kubeserial_common.runtime.lean import LeanClient
from kubeserial_common.runtime.leanobjects import LeanObjects
from kubeserial_common.runtime.leanwatch import run_lean_informers
from kubeserial_common.runtime.workqueue import WorkQueue, run_workers
from kubeserial_controller import decisions as d
from kubeserial_controller.apply import Applier
from kubeserial_controller.binder import Binder
from kubeserial_controller.metrics import ControllerMetrics
from kubeserial_controller.reconcilers import KubeSerialKey, Reconcilers, Settings, kind_of
from kubeserial_controller.world import World

log = structlog.get_logger(__name__)

K = TypeVar("K", bound=Hashable)
COMPONENT = "kubeserial-controller"
NODE_BATCH_SECONDS = 0.2
BINDINGS_BACKLOG = 32  # waiting binding keys above which device reconciles hold back
BINDINGS_FIRST_MAX_SECONDS = 30.0


class Controller:
    def __init__(
        self,
        api: LeanClient,
        *,
        settings: Settings,
        metrics: ControllerMetrics,
        workers: int = 4,
        binding_workers: int = 16,
        resync_seconds: float = 300.0,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.workers = workers
        self.binding_workers = binding_workers
        self.kubeserials: WorkQueue[KubeSerialKey] = WorkQueue()
        self.devices: WorkQueue[str] = WorkQueue()
        self.requests: WorkQueue[str] = WorkQueue()
        self.nodes: WorkQueue[str] = WorkQueue()
        self.bindings: WorkQueue[BindKey] = WorkQueue()
        self._last_failure: dict[tuple[str, Any], str] = {}
        self.world = World(
            api, namespace=settings.namespace, on_event=self.on_event, resync_seconds=resync_seconds
        )
        self.reconcilers = Reconcilers(
            self.world,
            applier=Applier(api),
            objects=LeanObjects(api),
            # Events about cluster-scoped objects must live in "default": the apiserver refuses others.
            recorder=EventRecorder(api, component=COMPONENT),
            settings=settings,
            wake_device=self.devices.add,
        )
        self.binder = Binder(
            self.world,
            objects=self.reconcilers.objects,
            api=api,
            recorder=self.reconcilers.recorder,
            node_grace=settings.node_grace,
            wake_keys=self.bindings.add,
        )
        self.reconcilers.binder = self.binder
        for kind, queue in self._queues().items():
            metrics.track_queue(kind, queue.depth)
        metrics.track_devices(self.world.all_devices)
        metrics.track_dropped_events(lambda: self.reconcilers.recorder.dropped)

    def _queues(self) -> dict[str, WorkQueue[Any]]:
        return {
            "KubeSerial": self.kubeserials,
            "SerialDevice": self.devices,
            "ManagerScheduleRequest": self.requests,
            "Node": self.nodes,
            "Binding": self.bindings,
        }

    # -- watch events -> keys --------------------------------------------------------------------

    def on_event(self, kind: str, event_type: str, obj: dict[str, Any], *, resync: bool = False) -> None:
        """Map a change of any watched object to the keys whose desired state may depend on it.
        `resync`: the informers' periodic replay, whose keys wait behind every real change."""
        low = resync  # the work queues' back lane
        meta = obj.get("metadata") or {}
        name = str(meta.get("name", ""))
        if kind == "KubeSerial":
            namespace = str(meta.get("namespace", ""))
            self.kubeserials.add((namespace, name), low=low)
            # Ingress settings feed the manager objects of this KubeSerial's devices.
            for device in self.world.devices_of(namespace, name):
                self._requeue_requests_of(device["metadata"]["name"], low=low)
        elif kind == "SerialDevice":
            self.devices.add(name, low=low)
            keys, nodes = self.binder.index.device_event(event_type, obj)
            for key in keys:
                self.bindings.add(key, low=low)
            for node in nodes:
                self._node_changed(node)
            label = (meta.get("labels") or {}).get(c.KUBESERIAL_LABEL, "")
            namespace, _, owner = label.partition(".")
            if owner:
                self.kubeserials.add((namespace, owner), low=low)
            self._requeue_requests_of(name, low=low)
        elif kind == "Manager":
            for device_name in self.world.devices_naming(name):
                self.devices.add(device_name, low=low)
            for request in self.world.requests_where("manager", name):
                self.requests.add(request["metadata"]["name"], low=low)
        elif kind == "ManagerScheduleRequest":
            self.requests.add(name, low=low)
            wanted_by = (obj.get("spec") or {}).get("device")
            if wanted_by:
                self.devices.add(str(wanted_by), low=low)
        elif kind == "SerialPort":
            keys, nodes = self.binder.index.port_event(event_type, obj)
            for key in self.binder.index.device_keys_for_port_keys(keys):
                self.bindings.add(key, low=low)
            for node in nodes:
                self._node_changed(node)
        elif kind == "Node":
            self.nodes.add(name, low=low)
        elif kind == "Lease":
            lease_node = d.node_from_lease_name(name)
            if lease_node is not None:
                self.nodes.add(lease_node, low=low)
        else:  # our Deployments, Services, ConfigMaps, Ingresses, NetworkPolicies: wake their owner
            owner = d.controller_owner(obj)
            if owner is None:
                return
            if owner.get("kind") == "SerialDevice":
                self.devices.add(str(owner.get("name")), low=low)
            elif owner.get("kind") == "ManagerScheduleRequest":
                self.requests.add(str(owner.get("name")), low=low)

    def _node_changed(self, node: str) -> None:
        """A device or port on `node` changed: its extended resources follow a moment later, so a
        burst of bindings on one node (a cold start, a hub plugged in) is one Node patch, not one each."""
        self.nodes.add_after(node, NODE_BATCH_SECONDS)

    def _requeue_requests_of(self, device: str, *, low: bool = False) -> None:
        for request in self.world.requests_where("device", device):
            self.requests.add(request["metadata"]["name"], low=low)

    # -- running ---------------------------------------------------------------------------------

    async def run_informers(self) -> None:
        await run_lean_informers(*self.world.informers())

    async def run_workers(self) -> None:
        """Reconcile until cancelled; starts only once every cache is filled, so that nothing is
        judged missing (and deleted or re-created) just because its LIST has not come back yet."""
        await asyncio.gather(*(inf.synced.wait() for inf in self.world.informers()))
        log.info("caches synced; reconciling", objects=sum(len(i.cache) for i in self.world.informers()))
        r = self.reconcilers
        await asyncio.gather(
            self._run(self.kubeserials, "KubeSerial", r.kubeserial),
            self._run(self.devices, "SerialDevice", r.device, gate=self._bindings_first),
            self._run(self.requests, "ManagerScheduleRequest", r.manager_request),
            self._run(self.nodes, "Node", r.node),
            self._run(self.bindings, "Binding", self.binder.bind, workers=self.binding_workers),
        )

    async def _run(
        self,
        queue: WorkQueue[K],
        kind: str,
        reconcile: Callable[[K], Awaitable[float | None]],
        *,
        workers: int | None = None,
        gate: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        async def instrumented(key: K) -> float | None:
            if gate is not None:
                await gate()
            started = time.perf_counter()
            result = "error"
            try:
                again = await reconcile(key)
                result = "success"
                self._last_failure.pop((kind, key), None)
                return again
            finally:
                self.metrics.reconciles.labels(kind=kind, result=result).inc()
                self.metrics.reconcile_seconds.labels(kind=kind).observe(time.perf_counter() - started)

        def explain(key: K, exc: BaseException) -> None:
            # The queue logs the retry; the user sees a Warning Event on the object, once per
            # distinct failure (retries with the same message would only flood `kubectl describe`).
            detail = message_of(exc)
            log.warning("reconcile error", kind=kind, key=str(key), status=status_of(exc), detail=detail)
            obj = self._object_for(kind, key)
            if obj is None or self._last_failure.get((kind, key)) == detail:
                return
            self._last_failure[(kind, key)] = detail
            self.reconcilers.recorder.emit(
                kind_of(obj, kind),
                type_=WARNING,
                reason=exc.reason if isinstance(exc, PermanentError) else RECONCILE_FAILED,
                message=detail,
            )

        await run_workers(
            queue,
            instrumented,
            workers=workers or self.workers,
            name=f"reconcile-{kind}",
            on_error=explain,
        )

    async def _bindings_first(self) -> None:
        """Device reconciles hold back while many bindings wait (a cold start, a node with many
        adapters coming back): a gateway (three server-side applies) needs its device bound first,
        both share the apiserver, and the binding is what a user waits on. At most
        BINDINGS_FIRST_MAX_SECONDS per reconcile, so NodeLost and clean-ups are never held long."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(BINDINGS_FIRST_MAX_SECONDS):
                await self.bindings.until_depth_at_most(BINDINGS_BACKLOG)

    def _object_for(self, kind: str, key: Any) -> dict[str, Any] | None:
        if kind == "KubeSerial":
            return self.world.kubeserial(*key)
        if kind == "SerialDevice":
            return self.world.device(key)
        if kind == "ManagerScheduleRequest":
            return self.world.request(key)
        return None
