"""Kubernetes Events for the transitions users care about (`kubectl describe` shows them)."""

from typing import Any

import structlog
from kubernetes_asyncio import client

from kubeserial_common.core.conditions import now_rfc3339
from kubeserial_common.core.errors import ApiError

log = structlog.get_logger(__name__)

NORMAL = "Normal"
WARNING = "Warning"


class EventRecorder:
    """Posts core/v1 Events. Cluster-scoped objects get theirs in `cluster_namespace`."""

    def __init__(self, api: client.ApiClient, *, component: str, cluster_namespace: str = "default") -> None:
        self.core = client.CoreV1Api(api)
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
            await self.core.create_namespaced_event(namespace, body)
        except ApiError as exc:  # an Event is best effort: never fail a reconcile over it
            log.warning("could not post event", reason=reason, error=repr(exc))
        log.info("event", object=meta.get("name"), reason=reason, type=type_, message=message)
