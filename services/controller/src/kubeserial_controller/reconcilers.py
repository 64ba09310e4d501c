"""The reconcilers: each takes a key, re-reads the world from the informer caches and converges.

They never act on "what happened": a watch event only says which key to look at again.
Decisions live in `decisions` and `desired`; this module performs the writes and posts Events.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from kubeserial_common.core import constants as c
from kubeserial_common.core import resources as r
from kubeserial_common.core import vocabulary as v
from kubeserial_common.core.conditions import ConditionUpdate, get_condition
from kubeserial_common.core.errors import AlreadyExists, PermanentError
from kubeserial_common.core.models import KubeSerial, ManagerSpec
from kubeserial_common.core.names import (
    gateway_name,
    kubeserial_label_value,
    manager_name_problem,
    manager_request_name,
)
from kubeserial_common.core.podspec import PodSpecError
from kubeserial_common.core.status import conditions_patch, write_status
from kubeserial_common.runtime.events import NORMAL, WARNING, EventRecorder
from kubeserial_common.runtime.leanobjects import LeanObjects
from kubeserial_controller import decisions as d
from kubeserial_controller.apply import Applier
from kubeserial_controller.desired import (
    DEFAULT_SCRAPER_LABELS,
    Images,
    config_key,
    desired_gateway_deployment,
    desired_gateway_network_policy,
    desired_gateway_service,
    desired_manager_objects,
    desired_manager_request,
    desired_serial_device,
)
from kubeserial_controller.world import World

log = structlog.get_logger(__name__)

Obj = dict[str, Any]
NodeKey = str
KubeSerialKey = tuple[str, str]

# Child kinds of a ManagerScheduleRequest, and of a SerialDevice (its gateway).
MANAGER_CHILDREN = (r.CONFIGMAP, r.DEPLOYMENT, r.SERVICE, r.INGRESS)
GATEWAY_CHILDREN = (r.DEPLOYMENT, r.SERVICE, r.NETWORKPOLICY)
RECHECK_MARGIN = 0.1  # seconds after a deadline, so the check runs when it has really passed


@dataclass(frozen=True)
class Ensured:
    created: bool
    repaired: bool


@dataclass(frozen=True)
class Settings:
    namespace: str
    images: Images
    node_grace: timedelta = timedelta(seconds=10)
    # Pods allowed to scrape gateways' metrics (desired.desired_gateway_network_policy).
    scraper_labels: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SCRAPER_LABELS))


def kind_of(obj: Mapping[str, Any], kind: str) -> Obj:
    """One of KubeSerial's own objects, sure to carry apiVersion and kind (Events name them)."""
    info = r.by_kind(c.API_VERSION, kind)
    return {**obj, "apiVersion": info.api_version, "kind": info.kind}


def name_of(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def generation_unobserved(obj: Mapping[str, Any]) -> bool:
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    return status.get("observedGeneration") != meta.get("generation")


class Reconcilers:
    def __init__(
        self,
        world: World,
        *,
        applier: Applier,
        objects: LeanObjects,
        recorder: EventRecorder,
        settings: Settings,
        wake_device: Callable[[str], None],
    ) -> None:
        self.world = world
        self.applier = applier
        self.objects = objects
        self.recorder = recorder
        self.settings = settings
        self.wake_device = wake_device
        self.binder: Any = None  # kubeserial_controller.binder.Binder, set by the Controller
        # KubeSerial -> the generation whose problems were reported: the key can run again before
        # the cache shows our status write (observedGeneration), and must not report them twice.
        self._reported: dict[KubeSerialKey, int | None] = {}

    def _event(
        self, obj: Mapping[str, Any], kind: str, *, reason: str, message: str, warning: bool = False
    ) -> None:
        self.recorder.emit(
            kind_of(obj, kind), type_=WARNING if warning else NORMAL, reason=reason, message=message
        )

    async def _ensure(self, desired: Obj, *, current: Obj | None) -> Ensured | None:
        """Apply `desired` when `current` (from the cache) is missing or drifted; None if it was fine."""
        want = d.stamped(desired)
        if not d.drifted(current, want):
            return None
        applied = await self.applier.apply(want)
        return Ensured(created=applied.created, repaired=current is not None and not applied.created)

    async def _delete(self, obj: Obj, *, resource: r.ResourceInfo) -> bool:
        return await self.applier.delete(obj, resource=resource)

    # -- KubeSerial ------------------------------------------------------------------------------

    async def kubeserial(self, key: KubeSerialKey) -> float | None:
        namespace, name = key
        ks = self.world.kubeserial(namespace, name)
        if ks is None:
            self._reported.pop(key, None)
            # Gone without our finalizer running (removed by hand, or deleted while no controller
            # ran): its devices would otherwise stay forever.
            for orphan in self.world.devices_of(namespace, name):
                if await self._delete(orphan, resource=r.SERIALDEVICE):
                    log.info(
                        "deleted SerialDevice of a deleted KubeSerial", device=name_of(orphan), kubeserial=key
                    )
            return None
        meta = ks["metadata"]
        owned = self.world.devices_of(namespace, name)
        finalizers = list(meta.get("finalizers") or [])
        if meta.get("deletionTimestamp"):
            if c.KUBESERIAL_FINALIZER not in finalizers:
                return None
            for device in owned:
                if await self._delete(device, resource=r.SERIALDEVICE):
                    self._event(
                        ks,
                        "KubeSerial",
                        reason="SerialDeviceDeleted",
                        message=f"deleted SerialDevice {device['metadata']['name']}",
                    )
            if owned:
                return 1.0  # the DELETED events re-queue us too; this only guards against a missed one
            remaining = [f for f in finalizers if f != c.KUBESERIAL_FINALIZER]
            await self._patch_finalizers(ks, remaining)
            return None
        generation = meta.get("generation")
        # Problems are reported (Warning Events) once per generation of the spec.
        report = generation_unobserved(ks) and self._reported.get(key, -1) != generation
        label_problem = d.kubeserial_label_problem(namespace, name)
        if label_problem is not None:
            # No SerialDevice could carry the label: say so once per generation, and retry nothing.
            if report:
                self._event(ks, "KubeSerial", reason=v.INVALID_SPEC, message=label_problem, warning=True)
                await self._write_kubeserial_status(ks, devices=len(owned))
                self._reported[key] = generation
            return None
        if c.KUBESERIAL_FINALIZER not in finalizers:
            await self._patch_finalizers(ks, [*finalizers, c.KUBESERIAL_FINALIZER])
        try:
            spec = KubeSerial.model_validate(ks).spec
        except ValidationError as exc:
            if report:
                self._event(ks, "KubeSerial", reason=v.INVALID_SPEC, message=str(exc), warning=True)
                await self._write_kubeserial_status(ks, devices=len(owned))
                self._reported[key] = generation
            return None
        label = kubeserial_label_value(namespace, name)
        wanted = {entry.name for entry in spec.serial_devices}
        managed = 0
        for entry in spec.serial_devices:
            current = self.world.device(entry.name)
            holder = ((current or {}).get("metadata", {}).get("labels") or {}).get(c.KUBESERIAL_LABEL)
            if current is not None and holder != label:
                if report:
                    owner = f"KubeSerial {holder}" if holder else "someone else"
                    self._event(
                        ks,
                        "KubeSerial",
                        reason="SerialDeviceConflict",
                        warning=True,
                        message=f"SerialDevice {entry.name} already exists, belongs to {owner}; left alone",
                    )
                continue
            desired = desired_serial_device(entry, kubeserial_namespace=namespace, kubeserial_name=name)
            if current is None:
                # Not in the cache: create it only if nobody has (another KubeSerial declaring the
                # same name may have, a moment ago); then apply as usual.
                try:
                    await self.applier.create(d.creation_stub(desired, spec_fields=("idVendor", "idProduct")))
                except AlreadyExists:
                    return 0.2  # decide once the cache shows whose it is
            managed += 1
            applied = await self._ensure(desired, current=current)
            created = current is None or (applied is not None and applied.created)
            if created or (applied is not None and applied.repaired):
                verb = "created" if created else "updated"
                self._event(
                    ks,
                    "KubeSerial",
                    reason=f"SerialDevice{verb.capitalize()}",
                    message=f"{verb} SerialDevice {entry.name}",
                )
        for device in owned:
            device_name = device["metadata"]["name"]
            if device_name not in wanted and await self._delete(device, resource=r.SERIALDEVICE):
                self._event(
                    ks,
                    "KubeSerial",
                    reason="SerialDeviceDeleted",
                    message=f"deleted SerialDevice {device_name}: no longer listed",
                )
        await self._write_kubeserial_status(ks, devices=managed)
        if report:
            self._reported[key] = generation
        return None

    async def _patch_finalizers(self, ks: Obj, finalizers: list[str]) -> None:
        meta = ks["metadata"]
        # resourceVersion makes this a compare-and-swap: nobody else's finalizer is lost.
        body = {"metadata": {"finalizers": finalizers or None, "resourceVersion": meta["resourceVersion"]}}
        await self.objects.patch(c.KUBESERIALS, meta["name"], body, namespace=meta["namespace"])

    async def _write_kubeserial_status(self, ks: Obj, *, devices: int) -> None:
        meta = ks["metadata"]
        wanted = {"observedGeneration": meta.get("generation"), "serialDevices": devices}
        current = ks.get("status") or {}
        if all(current.get(k) == v for k, v in wanted.items()):
            return
        await self.objects.patch_status(
            c.KUBESERIALS, meta["name"], {"status": wanted}, namespace=meta["namespace"]
        )

    # -- SerialDevice ----------------------------------------------------------------------------

    def _status_updates(
        self, device: Mapping[str, Any], *, now: datetime
    ) -> tuple[list[ConditionUpdate], d.Liveness | None]:
        manager = (device.get("spec") or {}).get("manager")
        placement = d.claimed_placement(device)
        lease = self.world.lease(placement.node) if placement else None
        return d.device_status_updates(
            device,
            manager_exists=bool(manager) and self.world.manager(str(manager)) is not None,
            lease_spec=(lease or {}).get("spec"),
            now=now,
            grace=self.settings.node_grace,
        )

    async def device(self, name: str) -> float | None:
        device = self.world.device(name)
        if device is None or device["metadata"].get("deletionTimestamp"):
            return None  # the garbage collector removes what the device owned
        now = datetime.now(UTC)
        updates, liveness = self._status_updates(device, now=now)
        if conditions_patch(device, updates, now=None) is not None:
            written = await write_status(
                self.objects,
                c.SERIALDEVICES,
                name,
                # Recomputed on a conflict from the fresh object: a monitor may have just moved it.
                lambda obj: conditions_patch(obj, self._status_updates(obj, now=datetime.now(UTC))[0]),
                current=device,
            )
            if written is not None:
                self._device_transition_events(device, written)
                device = written
                _, liveness = self._status_updates(device, now=datetime.now(UTC))
        placement = d.claimed_placement(device)
        if placement is not None and liveness is not None and liveness.lost:
            placement = None
        await self._reconcile_gateway(device, placement)
        ready = get_condition(device, c.READY)
        manager = (device.get("spec") or {}).get("manager")
        wanted_request = (
            manager_request_name(name, manager)
            if manager and placement is not None and ready is not None and ready.get("status") == "True"
            else None
        )
        await self._reconcile_manager_request(device, wanted_request, manager)
        if placement is None or liveness is None or liveness.recheck_after is None:
            return None
        return liveness.recheck_after + RECHECK_MARGIN

    def _device_transition_events(self, before: Obj, after: Obj) -> None:
        for notice in d.device_notices(before, after):
            self._event(
                after, "SerialDevice", reason=notice.reason, message=notice.message, warning=notice.warning
            )

    async def _reconcile_gateway(self, device: Obj, placement: d.Placement | None) -> None:
        name = device["metadata"]["name"]
        if placement is None:
            removed = False
            for resource in GATEWAY_CHILDREN:
                current = self.world.child(resource.kind, gateway_name(name))
                if current is not None and d.controlled_by(current, device):
                    removed = await self._delete(current, resource=resource) or removed
            if removed:
                self._event(
                    device,
                    "SerialDevice",
                    reason="GatewayRemoved",
                    message=f"removed gateway {gateway_name(name)}: device not available",
                )
            return
        namespace = self.settings.namespace
        wanted = (
            desired_gateway_deployment(device, placement, namespace=namespace, images=self.settings.images),
            desired_gateway_service(device, namespace=namespace),
            desired_gateway_network_policy(
                device, namespace=namespace, scraper_labels=self.settings.scraper_labels
            ),
        )
        results = [
            await self._ensure(obj, current=self.world.child(obj["kind"], gateway_name(name)))
            for obj in wanted
        ]
        changed = [r for r in results if r is not None and (r.created or r.repaired)]
        if changed:
            created = any(r.created for r in changed)
            self._event(
                device,
                "SerialDevice",
                reason="GatewayCreated" if created else "GatewayUpdated",
                message=f"gateway {gateway_name(name)} on node {placement.node} for {placement.device_path}"
                + ("" if created else " (updated or repaired)"),
            )

    async def _reconcile_manager_request(self, device: Obj, wanted: str | None, manager: str | None) -> None:
        name = device["metadata"]["name"]
        for request in self.world.requests_where("device", name):
            request_name = request["metadata"]["name"]
            if (
                request_name != wanted
                and d.controlled_by(request, device)
                and await self._delete(request, resource=r.MANAGERSCHEDULEREQUEST)
            ):
                self._event(
                    device,
                    "SerialDevice",
                    reason="ManagerUnscheduled",
                    message=f"deleted ManagerScheduleRequest {request_name}",
                )
        if wanted is None or manager is None or self.world.request(wanted) is not None:
            return
        try:
            await self.objects.create(
                c.MANAGERSCHEDULEREQUESTS, desired_manager_request(device, manager=manager)
            )
        except AlreadyExists:  # the cache was behind; the request is there
            return
        self._event(
            device,
            "SerialDevice",
            reason="ManagerScheduled",
            message=f"created ManagerScheduleRequest {wanted}",
        )

    # -- node liveness ---------------------------------------------------------------------------

    async def node(self, node: NodeKey) -> float | None:
        """A node's monitor Lease, Node object or SerialPorts changed, or its Lease deadline came:
        wake its devices once the deadline has passed (NodeLost), let its ports' bindings decide
        again when it comes back, bring its kubeserial.com/* resources in line, and delete its
        SerialPorts once the Node is gone and its Lease is not live."""
        lease = self.world.lease(node)
        remaining = d.node_lease_recheck(
            (lease or {}).get("spec"), now=datetime.now(UTC), grace=self.settings.node_grace
        )
        if self.binder is not None:
            self.binder.node_liveness_changed(node, remaining is not None)
            await self.binder.node_resources(node)
        if remaining is not None:
            return remaining + RECHECK_MARGIN
        for device_name in self.world.devices_on(node):
            self.wake_device(device_name)
        if self.binder is not None:
            await self.binder.cleanup_ports(node)
        return None

    # -- ManagerScheduleRequest ------------------------------------------------------------------

    async def manager_request(self, name: str) -> float | None:
        request = self.world.request(name)
        if request is None or request["metadata"].get("deletionTimestamp"):
            return None
        problem: PermanentError | None = None
        try:
            desired: list[Obj] | None = self._desired_manager_objects(request)
        except PermanentError as exc:
            # Invalid input: report it and keep what exists (a running manager stays up) until the
            # Manager changes; never read it as "desire nothing".
            desired, problem = None, exc
        for obj in desired or ():
            applied = await self._ensure(obj, current=self.world.child(obj["kind"], name))
            if applied is not None and applied.created:
                self._event(
                    request,
                    "ManagerScheduleRequest",
                    reason=f"{obj['kind']}Created",
                    message=f"created {obj['kind']} {self.settings.namespace}/{name}",
                )
        if desired is not None:
            wanted_kinds = {obj["kind"] for obj in desired}
            for resource in MANAGER_CHILDREN:
                current = self.world.child(resource.kind, name)
                if (
                    resource.kind not in wanted_kinds
                    and current is not None
                    and d.controlled_by(current, request)
                ):
                    await self._delete(current, resource=resource)
        deployment = self.world.child("Deployment", name)
        fulfilled = (
            (desired is None or bool(desired))
            and deployment is not None
            and d.controlled_by(deployment, request)
            and d.deployment_available(deployment)
        )
        status = request.get("status") or {}
        previously = status.get("fulfilled")
        message = None if problem is None else problem.message
        # also writes the first `false`, so `kubectl get msr` shows it
        if previously is not fulfilled or status.get("message") != message:
            await self.objects.patch_status(
                c.MANAGERSCHEDULEREQUESTS, name, {"status": {"fulfilled": fulfilled, "message": message}}
            )
            if fulfilled or previously:
                self._event(
                    request,
                    "ManagerScheduleRequest",
                    reason="Fulfilled" if fulfilled else "NotFulfilled",
                    message=f"manager Deployment {self.settings.namespace}/{name} "
                    + ("is available" if fulfilled else "is not available"),
                    warning=not fulfilled,
                )
        if problem is not None:
            raise problem  # the work queue posts it as a Warning Event once, and does not retry it
        return None

    def _desired_manager_objects(self, request: Obj) -> list[Obj]:
        """The manager workload; [] when the device or Manager is gone; PermanentError when the
        Manager cannot be turned into a workload."""
        spec = request.get("spec") or {}
        device = self.world.device(str(spec.get("device")))
        manager = self.world.manager(str(spec.get("manager")))
        if device is None or manager is None:
            return []
        # The CRDs refuse such names; objects made before they did are reported here.
        name_problem = manager_name_problem(str(spec.get("device")), str(spec.get("manager")))
        if name_problem is not None:
            raise PermanentError(
                v.INVALID_MANAGER, f"Manager {spec.get('manager')} is invalid: {name_problem}"
            )
        try:
            manager_spec = ManagerSpec.model_validate(manager.get("spec") or {})
        except ValidationError as exc:
            raise PermanentError(
                v.INVALID_MANAGER, f"Manager {spec.get('manager')} is invalid: {exc}"
            ) from exc
        if manager_spec.config_path:
            config_problem = d.manager_config_problem(
                manager_spec.config, key=config_key(manager_spec.config_path)
            )
            if config_problem is not None:
                raise PermanentError(
                    v.INVALID_MANAGER, f"Manager {spec.get('manager')} is invalid: {config_problem}"
                )
        kubeserial = self.world.kubeserial_of(device)
        ingress = None
        if kubeserial is not None:
            try:
                ingress = KubeSerial.model_validate(kubeserial).spec.ingress
            except ValidationError:
                ingress = None  # reported on the KubeSerial by its own reconciler
        settings = self.settings
        try:
            return desired_manager_objects(
                request, manager_spec, namespace=settings.namespace, images=settings.images, ingress=ingress
            )
        except PodSpecError as exc:
            raise PermanentError(
                v.MANAGER_NOT_CONNECTABLE,
                f"the pod of Manager {spec.get('manager')} cannot be connected to device"
                f" {spec.get('device')}: {exc}",
            ) from exc
