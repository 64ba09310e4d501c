"""Writes of whole objects: server-side apply to create or repair, delete with a uid precondition.

Server-side apply (one PATCH) both creates a missing object and restores every field the controller
owns, while fields other actors set stay theirs. Forcing takes back fields someone else changed.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubeserial_common.core import resources as r
from kubeserial_common.core.errors import Conflict, NotFound
from kubeserial_common.runtime.lean import LeanClient

APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "kubeserial-controller"
# What the controller writes; what a kind is comes from the registry.
WRITTEN = (
    r.DEPLOYMENT,
    r.SERVICE,
    r.CONFIGMAP,
    r.INGRESS,
    r.NETWORKPOLICY,
    *(res for res in r.CUSTOM if not res.namespaced),
)


@dataclass(frozen=True)
class Applied:
    obj: dict[str, Any]
    created: bool


class Applier:
    def __init__(self, api: LeanClient, *, field_manager: str = FIELD_MANAGER) -> None:
        self.api = api
        self.field_manager = field_manager

    @staticmethod
    def _path(obj: Mapping[str, Any], *, resource: r.ResourceInfo | None = None) -> str:
        meta = obj["metadata"]
        resource = resource or r.by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        if resource not in WRITTEN:
            raise KeyError(f"the controller does not write {resource.kind}")
        return resource.path(meta["name"], namespace=meta.get("namespace") if resource.namespaced else None)

    async def apply(self, obj: Mapping[str, Any]) -> Applied:
        """Create or repair `obj` (the full desired state of the fields the controller owns)."""
        status, data = await self.api.request_with_status(
            "PATCH",
            self._path(obj),
            body=dict(obj),
            content_type=APPLY_PATCH,
            params={"fieldManager": self.field_manager, "force": "true"},
        )
        return Applied(obj=json.loads(data) if data else {}, created=status == 201)

    async def create(self, obj: Mapping[str, Any]) -> None:
        """Create `obj` only if no such object exists (AlreadyExists otherwise): server-side apply
        cannot say "only if absent", and forcing would take over an object someone else just made.
        Give only what never changes (the apply that follows owns the rest, so it can drop fields)."""
        meta = obj["metadata"]
        resource = r.by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        namespace = meta.get("namespace") if resource.namespaced else None
        self._path(obj)  # only kinds the controller writes
        await self.api.request(
            "POST",
            resource.path(namespace=namespace),
            body=dict(obj),
            params={"fieldManager": self.field_manager},
        )

    async def delete(self, obj: Mapping[str, Any], *, resource: r.ResourceInfo) -> bool:
        """Delete exactly this object (uid precondition); False when it was already gone."""
        body = {"preconditions": {"uid": obj["metadata"]["uid"]}, "propagationPolicy": "Background"}
        try:
            await self.api.request("DELETE", self._path(obj, resource=resource), body=body)
        except (NotFound, Conflict):
            # Conflict: the uid changed, so the object we meant is gone and a new one took its name.
            return False
        return True
