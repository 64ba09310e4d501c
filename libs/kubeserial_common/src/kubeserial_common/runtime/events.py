"""Kubernetes Events for the transitions users care about (`kubectl describe` shows them)."""

import asyncio
from typing import Any

from kubeserial_common.core.conditions import now_rfc3339
from kubeserial_common.core.errors import ApiError
from kubeserial_common.core.resources import EVENT
from kubeserial_common.runtime.lean import LeanClient
from kubeserial_common.runtime.logs import get_logger

log = get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"
BACKGROUND_SENDERS = 2  # connections that background Events may use at once


class EventRecorder:
    """Posts core/v1 Events through the lean client. Cluster-scoped objects get theirs in
    `cluster_namespace`."""

    def __init__(
        self, api: LeanClient, *, component: str, cluster_namespace: str = "default", max_pending: int = 1000
    ) -> None:
        self.api = api
        self.component = component
        self.cluster_namespace = cluster_namespace
        self.max_pending = max_pending
        self.dropped = 0
        self._dropped_in_burst = 0  # since the queue was last full
        # Unsent Events by type, each bounded by max_pending: a burst of Normal ones (a cold start
        # binds thousands of devices) never crowds out a Warning, the one a user must see.
        self._pending: dict[str, set[asyncio.Task[None]]] = {NORMAL: set(), WARNING: set()}
        # Background posts use at most this many of the client's connections at once: a burst of
        # Events never queues the reconciles' own writes behind it.
        self._senders = asyncio.Semaphore(BACKGROUND_SENDERS)

    def emit(self, obj: dict[str, Any], *, type_: str, reason: str, message: str) -> None:
        """Post in the background, so that a reconcile never waits on its Event (client-go's
        recorder is asynchronous too); the one way a component's Events go out. Beyond
        `max_pending` unsent Events of its type, new ones are dropped and logged: an Event is best
        effort, the status is the record."""
        pending = self._pending.setdefault(type_, set())
        if len(pending) >= self.max_pending:
            self.dropped += 1
            self._dropped_in_burst += 1
            if self._dropped_in_burst == 1:  # one line per burst, not one per Event (thousands)
                log.warning(
                    "events dropped: too many unsent; dropping until they are posted",
                    unsent=len(pending),
                    type=type_,
                    first=obj.get("metadata", {}).get("name"),
                    reason=reason,
                )
            return
        if self._dropped_in_burst:
            log.warning("events posted again", dropped=self._dropped_in_burst, dropped_total=self.dropped)
            self._dropped_in_burst = 0
        task = asyncio.get_running_loop().create_task(
            self._send_later(obj, type_=type_, reason=reason, message=message), name=f"event-{reason}"
        )
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def _send_later(self, obj: dict[str, Any], *, type_: str, reason: str, message: str) -> None:
        async with self._senders:
            await self._post(obj, type_=type_, reason=reason, message=message)

    async def flush(self) -> None:
        """Until every Event handed to emit is posted (or failed, which _post logs)."""
        while unsent := [task for tasks in self._pending.values() for task in tasks]:
            await asyncio.gather(*unsent, return_exceptions=True)

    async def _post(self, obj: dict[str, Any], *, type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata", {})
        namespace = meta.get("namespace") or self.cluster_namespace
        now = now_rfc3339()
        body = {
            "metadata": {"generateName": f"{meta.get('name', 'object')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
                "resourceVersion": meta.get("resourceVersion"),
            },
            "reason": reason,
            "message": message[:1024],
            "type": type_,
            "source": {"component": self.component},
            "reportingComponent": self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.api.create(EVENT, body, namespace=namespace)
        except ApiError as exc:  # an Event is best effort: never fail a reconcile over it
            log.warning("could not post event", reason=reason, error=repr(exc))
        log.info("event", object=meta.get("name"), reason=reason, type=type_, message=message)
