"""Kubernetes Events for the transitions users care about (`kubectl describe` shows them)."""

from typing import Any

from kubeserial_common.core.conditions import now_rfc3339
from kubeserial_common.core.errors import ApiError
from kubeserial_common.core.resources import EVENT
from kubeserial_common.runtime.lean import LeanClient
from kubeserial_common.runtime.logs import get_logger

log = get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


class EventRecorder:
    """Posts core/v1 Events through the lean client. Cluster-scoped objects get theirs in
    `cluster_namespace`."""

    def __init__(self, api: LeanClient, *, component: str, cluster_namespace: str = "default") -> None:
        self.api = api
        self.component = component
        self.cluster_namespace = cluster_namespace

    async def emit(self, obj: dict[str, Any], *, type_: str, reason: str, message: str) -> None:
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
