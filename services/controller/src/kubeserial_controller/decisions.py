"""Pure decisions of the controller: no I/O, everything a reconciler decides is decided here."""

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from kubeserial_common.core import constants as c
from kubeserial_common.core.conditions import ConditionUpdate, get_condition
from kubeserial_common.core.names import kubeserial_label_value, monitor_lease_name
from kubeserial_common.core.vocabulary import ALL_CHECKS_PASSED, MANAGER_NOT_AVAILABLE, NODE_LOST
from kubeserial_common.runtime.leases import lease_expiry, parse_time

# Reasons the controller writes (the monitor and gateway own the others).

Obj = Mapping[str, Any]


LABEL_VALUE_MAX = 63  # Kubernetes' limit on a label value
CONFIGMAP_MAX_BYTES = 1024 * 1024  # the apiserver's limit on a ConfigMap's data: keys and values


def kubeserial_label_problem(namespace: str, name: str) -> str | None:
    """Why a KubeSerial's SerialDevices cannot carry its label `<namespace>.<name>`, or None."""
    value = kubeserial_label_value(namespace, name)
    if len(value) <= LABEL_VALUE_MAX:
        return None
    return (
        f"metadata.name is too long: the SerialDevices of a KubeSerial are labelled"
        f" {c.KUBESERIAL_LABEL}=<namespace>.<name>, {len(value)} characters here, and a label value"
        f" holds at most {LABEL_VALUE_MAX}; in namespace {namespace} a KubeSerial name may have at most"
        f" {LABEL_VALUE_MAX - len(namespace) - 1} characters. No SerialDevice was created"
    )


def manager_config_problem(config: str | None, *, key: str) -> str | None:
    """Why a Manager's spec.config cannot be its ConfigMap (data key `key`), or None."""
    if config is None:
        return None
    size = len(config.encode())
    if size + len(key.encode()) <= CONFIGMAP_MAX_BYTES:
        return None
    return (
        f"spec.config is {size} bytes; its ConfigMap (data key {key!r}) holds at most"
        f" {CONFIGMAP_MAX_BYTES} bytes of keys and values"
    )


def creation_stub(desired: Obj, *, spec_fields: tuple[str, ...]) -> dict[str, Any]:
    """What a create-only-if-absent sends: apiVersion, kind, name and labels, and the spec fields
    the schema requires. The apply after it owns every field, so a field dropped later goes."""
    meta = desired["metadata"]
    spec = desired.get("spec") or {}
    return {
        "apiVersion": desired["apiVersion"],
        "kind": desired["kind"],
        "metadata": {"name": meta["name"], "labels": dict(meta.get("labels") or {})},
        "spec": {k: spec[k] for k in spec_fields if k in spec},
    }


def conditions_of(obj: Obj) -> list[Mapping[str, Any]]:
    return list((obj.get("status") or {}).get("conditions") or [])


def ready_update(device: Obj, *, manager_exists: bool) -> ConditionUpdate:
    """`Ready` reflects validation: the only check that can fail at runtime is the Manager's existence."""
    manager = (device.get("spec") or {}).get("manager")
    generation = (device.get("metadata") or {}).get("generation")
    if manager and not manager_exists:
        return ConditionUpdate(
            type=c.READY,
            status="False",
            reason=MANAGER_NOT_AVAILABLE,
            message=f"Manager {manager!r} does not exist",
            observed_generation=generation,
        )
    return ConditionUpdate(
        type=c.READY, status="True", reason=ALL_CHECKS_PASSED, observed_generation=generation
    )


@dataclass(frozen=True)
class Placement:
    """Where the monitor says the device is: both fields are set only while Available=True."""

    node: str
    device_path: str


def claimed_placement(device: Obj) -> Placement | None:
    status = device.get("status") or {}
    available = get_condition(device, c.AVAILABLE)
    node, path = status.get("nodeName"), status.get("devicePath")
    if available is None or available.get("status") != "True" or not node or not path:
        return None
    return Placement(node=str(node), device_path=str(path))


def last_confirmed(device: Obj) -> datetime | None:
    """When the monitor last claimed or re-confirmed the device (the later of transition and heartbeat)."""
    available = get_condition(device, c.AVAILABLE)
    if available is None:
        return None
    times = [
        parse_time(str(value))
        for value in (available.get("lastTransitionTime"), available.get("lastHeartbeatTime"))
        if value
    ]
    return max(times, default=None)


@dataclass(frozen=True)
class Liveness:
    lost: bool
    # Seconds until this device must be looked at again; None when the node's Lease timer covers it.
    recheck_after: float | None


def device_liveness(
    lease_spec: Mapping[str, Any] | None, *, confirmed: datetime | None, now: datetime, grace: timedelta
) -> Liveness:
    """Is the node holding a claimed device still alive?

    A node is alive until `grace` after the later of its monitor Lease's expiry and the device's last
    confirmation. The confirmation term covers a monitor that claims before its Lease exists or was
    renewed, so a fresh claim is never declared lost at once. A Lease released by a restarting monitor
    (no holder) still counts until it would have expired: a monitor upgrade must not tear gateways down.
    """
    expiry = lease_expiry(dict(lease_spec)) if lease_spec else None
    lease_deadline = expiry + grace if expiry is not None else None
    claim_deadline = confirmed + grace if confirmed is not None else None
    deadlines = [d for d in (lease_deadline, claim_deadline) if d is not None]
    if not deadlines:
        return Liveness(lost=True, recheck_after=None)
    deadline = max(deadlines)
    if now > deadline:
        return Liveness(lost=True, recheck_after=None)
    lease_covers = lease_deadline is not None and lease_deadline >= deadline
    return Liveness(lost=False, recheck_after=None if lease_covers else (deadline - now).total_seconds())


def node_lease_recheck(
    lease_spec: Mapping[str, Any] | None, *, now: datetime, grace: timedelta
) -> float | None:
    """Seconds until the node's Lease deadline passes; None when it already has (or never existed)."""
    expiry = lease_expiry(dict(lease_spec)) if lease_spec else None
    if expiry is None:
        return None
    remaining = (expiry + grace - now).total_seconds()
    return remaining if remaining >= 0 else None


def node_lost_update(node: str, *, lease_name: str) -> ConditionUpdate:
    return ConditionUpdate(
        type=c.AVAILABLE,
        status="Unknown",
        reason=NODE_LOST,
        message=f"node {node} stopped renewing its monitor Lease {lease_name}",
    )


MONITOR_LEASE_PREFIX = monitor_lease_name("")


def node_from_lease_name(name: str) -> str | None:
    """`kubeserial-monitor-node-a` -> `node-a`; None for Leases that are not monitor Leases."""
    if not name.startswith(MONITOR_LEASE_PREFIX) or name == MONITOR_LEASE_PREFIX:
        return None
    return name[len(MONITOR_LEASE_PREFIX) :]


def controller_owner(obj: Obj) -> Mapping[str, Any] | None:
    refs = (obj.get("metadata") or {}).get("ownerReferences") or []
    return next((ref for ref in refs if ref.get("controller")), None)


def controlled_by(obj: Obj, owner: Obj) -> bool:
    ref = controller_owner(obj)
    return ref is not None and ref.get("uid") == (owner.get("metadata") or {}).get("uid")


def contains(actual: Any, desired: Any) -> bool:
    """Does `actual` (as the apiserver returns it, with defaults filled in) still hold `desired`?

    Mappings: every desired key must match; extra keys are defaults or others' fields. Lists of
    named items (containers, ports, env, volumes) match by name, so entries added by others do not
    count as drift (server-side apply keeps them too). Other lists are atomic: same length, in order.
    """
    if isinstance(desired, Mapping):
        return isinstance(actual, Mapping) and all(contains(actual.get(k), v) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return False
        if desired and all(isinstance(item, Mapping) and "name" in item for item in desired):
            by_name = {item.get("name"): item for item in actual if isinstance(item, Mapping)}
            return all(contains(by_name.get(item["name"]), item) for item in desired)
        return len(actual) == len(desired) and all(
            contains(a, d) for a, d in zip(actual, desired, strict=True)
        )
    return bool(actual == desired)


APPLIED_HASH_ANNOTATION = f"{c.GROUP}/applied-hash"


def fingerprint(desired: Obj) -> str:
    return hashlib.sha256(json.dumps(desired, sort_keys=True).encode()).hexdigest()[:20]


def stamped(desired: Obj) -> dict[str, Any]:
    """`desired` with a hash of itself in an annotation.

    `contains` alone cannot see a field the controller stopped setting (an extra key looks like a
    server default); a changed hash can, and server-side apply then removes that field.
    """
    meta = dict(desired.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), APPLIED_HASH_ANNOTATION: fingerprint(desired)}
    return {**desired, "metadata": meta}


def drifted(actual: Obj | None, desired: Obj) -> bool:
    """True when the object is missing or someone changed a field the controller sets.

    `desired` should be `stamped`, so that changes of the desired state itself count as drift.
    """
    if actual is None:
        return True
    meta, want = actual.get("metadata") or {}, desired.get("metadata") or {}
    if meta.get("deletionTimestamp"):
        return True
    wanted_meta = {k: want[k] for k in ("labels", "annotations", "ownerReferences") if k in want}
    body = {k: v for k, v in desired.items() if k not in ("apiVersion", "kind", "metadata")}
    return not (contains(meta, wanted_meta) and contains(actual, body))


def deployment_available(deployment: Obj | None) -> bool:
    """The Deployment controller has seen the current spec and reports at least one available pod."""
    if deployment is None:
        return False
    meta, status = deployment.get("metadata") or {}, deployment.get("status") or {}
    if int(status.get("observedGeneration") or 0) < int(meta.get("generation") or 0):
        return False
    cond = get_condition(deployment, "Available")
    return cond is not None and cond.get("status") == "True" and int(status.get("availableReplicas") or 0) > 0


def condition_state(device: Obj, condition_type: str) -> str:
    """ "True", "False", "Unknown", or "None" when the condition was never written (for metrics)."""
    cond = get_condition(device, condition_type)
    return "None" if cond is None else str(cond.get("status"))


def device_status_updates(
    device: Obj,
    *,
    manager_exists: bool,
    lease_spec: Mapping[str, Any] | None,
    now: datetime,
    grace: timedelta,
) -> tuple[list[ConditionUpdate], Liveness | None]:
    """The conditions the controller owns on a device (Ready, and Available=Unknown when its node is
    lost), and the liveness of its node when the device is claimed."""
    updates = [ready_update(device, manager_exists=manager_exists)]
    placement = claimed_placement(device)
    if placement is None:
        return updates, None
    liveness = device_liveness(lease_spec, confirmed=last_confirmed(device), now=now, grace=grace)
    if liveness.lost:
        updates.append(node_lost_update(placement.node, lease_name=monitor_lease_name(placement.node)))
    return updates, liveness


def changed_conditions(before: Obj, after: Obj, *, types: tuple[str, ...]) -> list[Mapping[str, Any]]:
    """Conditions of `types` whose status or reason differs between two versions of an object."""
    changed = []
    for condition_type in types:
        old = get_condition(before, condition_type) or {}
        new = get_condition(after, condition_type)
        if new is not None and (old.get("status"), old.get("reason")) != (
            new.get("status"),
            new.get("reason"),
        ):
            changed.append(new)
    return changed


@dataclass(frozen=True)
class Notice:
    """An Event to post about a device."""

    reason: str
    message: str
    warning: bool


def device_notices(before: Obj, after: Obj) -> list[Notice]:
    """Events for what the controller changed on a device: Ready transitions and NodeLost.

    A new device passing validation is no news (that would be one Event per device at install);
    the monitor reports its own Available transitions.
    """
    notices = []
    for cond in changed_conditions(before, after, types=(c.READY, c.AVAILABLE)):
        reason, status = str(cond.get("reason")), cond.get("status")
        if cond["type"] == c.AVAILABLE and reason != NODE_LOST:
            continue
        if status == "True" and get_condition(before, cond["type"]) is None:
            continue
        notices.append(
            Notice(reason=reason, message=str(cond.get("message") or reason), warning=status != "True")
        )
    return notices
