"""Status writes through the status subresource, with optimistic concurrency.

Every write carries the resourceVersion it was computed from; on 409 Conflict the object is read
again and `compute` decides afresh. That is what stops two monitors both claiming one device.

This module deliberately does not import kubernetes_asyncio (kubeserial_common.runtime.kube does): the
gateway runs once per device and writes status through a small client of its own to stay small.
Both clients raise kubeserial_common.core.errors, so a conflict is `Conflict` whichever wrote.
"""

from collections.abc import Callable, Iterable
from typing import Any, Protocol

from kubeserial_common.core.conditions import ConditionUpdate, apply_conditions, differs, now_rfc3339
from kubeserial_common.core.errors import Conflict

StatusFunc = Callable[[dict[str, Any]], dict[str, Any] | None]


class StatusObjects(Protocol):
    """What write_status needs: runtime.kube.CustomObjects, or any client with these calls."""

    async def get(self, plural: str, name: str, *, namespace: str | None = None) -> dict[str, Any]: ...

    async def patch_status(
        self, plural: str, name: str, body: Any, *, namespace: str | None = None
    ) -> dict[str, Any]: ...


async def write_status(
    objects: StatusObjects,
    plural: str,
    name: str,
    compute: StatusFunc,
    *,
    namespace: str | None = None,
    current: dict[str, Any] | None = None,
    attempts: int = 5,
) -> dict[str, Any] | None:
    """Merge `compute(obj)` into obj.status; None from `compute` means nothing to write.

    Returns the updated object, or None when nothing was written.
    """
    obj = current
    for attempt in range(attempts):
        if obj is None:
            obj = await objects.get(plural, name, namespace=namespace)
        status_patch = compute(obj)
        if status_patch is None:
            return None
        body = {"metadata": {"resourceVersion": obj["metadata"]["resourceVersion"]}, "status": status_patch}
        try:
            return await objects.patch_status(plural, name, body, namespace=namespace)
        except Conflict:
            if attempt == attempts - 1:
                raise
            obj = None
    return None


def conditions_patch(
    obj: dict[str, Any], updates: Iterable[ConditionUpdate], *, now: str | None = None
) -> dict[str, Any] | None:
    """The status patch that applies `updates`, or None when they change nothing that matters."""
    updates = list(updates)
    existing = obj.get("status", {}).get("conditions") or []
    if not any(differs(existing, update) for update in updates):
        return None
    return {"conditions": apply_conditions(existing, updates, now=now or now_rfc3339())}
