"""Writes of whole objects: server-side apply to create or repair, delete with a uid precondition.

Server-side apply (one PATCH) both creates a missing object and restores every field the controller
owns, while fields other actors set stay theirs. Forcing takes back fields someone else changed.
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from kubeserial_common.core import resources as r
from kubeserial_common.core.errors import Conflict, NotFound
from kubeserial_common.runtime.kube import read_json

APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "kubeserial-controller"

Call = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class KindCalls:
    patch: Call  # (name, [namespace,] body, **kwargs)
    delete: Call  # (name, [namespace,] body=..., **kwargs)


@dataclass(frozen=True)
class Applied:
    obj: dict[str, Any]
    created: bool


class Applier:
    def __init__(self, api: client.ApiClient, *, field_manager: str = FIELD_MANAGER) -> None:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        networking, custom = client.NetworkingV1Api(api), client.CustomObjectsApi(api)
        self.field_manager = field_manager
        # The client's calls for each kind the controller writes; what a kind is comes from the registry.
        self.kinds: dict[r.ResourceInfo, KindCalls] = {
            r.DEPLOYMENT: KindCalls(apps.patch_namespaced_deployment, apps.delete_namespaced_deployment),
            r.SERVICE: KindCalls(core.patch_namespaced_service, core.delete_namespaced_service),
            r.CONFIGMAP: KindCalls(core.patch_namespaced_config_map, core.delete_namespaced_config_map),
            r.INGRESS: KindCalls(networking.patch_namespaced_ingress, networking.delete_namespaced_ingress),
        }
        for resource in r.CUSTOM:
            if resource.namespaced:
                continue
            self.kinds[resource] = KindCalls(
                _bind_custom(custom.patch_cluster_custom_object, resource),
                _bind_custom(custom.delete_cluster_custom_object, resource),
            )

    def _calls(
        self, obj: Mapping[str, Any], *, resource: r.ResourceInfo | None = None
    ) -> tuple[KindCalls, list[str]]:
        meta = obj["metadata"]
        resource = resource or r.by_kind(obj.get("apiVersion", ""), obj.get("kind", ""))
        calls = self.kinds[resource]
        return calls, [meta["name"], meta["namespace"]] if resource.namespaced else [meta["name"]]

    async def apply(self, obj: Mapping[str, Any]) -> Applied:
        """Create or repair `obj` (the full desired state of the fields the controller owns)."""
        calls, names = self._calls(obj)
        response = await calls.patch(
            *names,
            dict(obj),
            field_manager=self.field_manager,
            force=True,
            _content_type=APPLY_PATCH,
            _preload_content=False,
        )
        created = response.status == 201
        return Applied(obj=await read_json(response), created=created)

    async def delete(self, obj: Mapping[str, Any], *, resource: r.ResourceInfo) -> bool:
        """Delete exactly this object (uid precondition); False when it was already gone."""
        calls, names = self._calls(obj, resource=resource)
        body = {"preconditions": {"uid": obj["metadata"]["uid"]}, "propagationPolicy": "Background"}
        try:
            await calls.delete(*names, body=body)
        except (NotFound, Conflict):
            # Conflict: the uid changed, so the object we meant is gone and a new one took its name.
            return False
        return True


def _bind_custom(method: Call, resource: r.ResourceInfo) -> Call:
    async def call(name: str, *args: Any, **kwargs: Any) -> Any:
        return await method(resource.group, resource.version, resource.plural, name, *args, **kwargs)

    return call
