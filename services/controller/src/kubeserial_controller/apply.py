"""Writes of whole objects: server-side apply to create or repair, delete with a uid precondition.

Server-side apply (one PATCH) both creates a missing object and restores every field the controller
owns, while fields other actors set stay theirs. Forcing takes back fields someone else changed.
"""

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes_asyncio import client

from kubeserial_common import constants as c
from kubeserial_common.errors import Conflict, NotFound
from kubeserial_common.kube import read_json
from kubeserial_common.models import ALL_RESOURCES

APPLY_PATCH = "application/apply-patch+yaml"
FIELD_MANAGER = "kubeserial-controller"

Call = Callable[..., Awaitable[Any]]


@dataclass(frozen=True)
class KindCalls:
    patch: Call  # (name, [namespace,] body, **kwargs)
    delete: Call  # (name, [namespace,] body=..., **kwargs)
    namespaced: bool


@dataclass(frozen=True)
class Applied:
    obj: dict[str, Any]
    created: bool


class Applier:
    def __init__(self, api: client.ApiClient, *, field_manager: str = FIELD_MANAGER) -> None:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        networking, custom = client.NetworkingV1Api(api), client.CustomObjectsApi(api)
        self.field_manager = field_manager
        self.kinds: dict[tuple[str, str], KindCalls] = {
            ("apps/v1", "Deployment"): KindCalls(
                apps.patch_namespaced_deployment, apps.delete_namespaced_deployment, True
            ),
            ("v1", "Service"): KindCalls(core.patch_namespaced_service, core.delete_namespaced_service, True),
            ("v1", "ConfigMap"): KindCalls(
                core.patch_namespaced_config_map, core.delete_namespaced_config_map, True
            ),
            ("networking.k8s.io/v1", "Ingress"): KindCalls(
                networking.patch_namespaced_ingress, networking.delete_namespaced_ingress, True
            ),
        }
        for resource in ALL_RESOURCES:
            if resource.namespaced:
                continue
            self.kinds[(c.API_VERSION, resource.kind_name)] = KindCalls(
                _bind_custom(custom.patch_cluster_custom_object, resource.plural),
                _bind_custom(custom.delete_cluster_custom_object, resource.plural),
                False,
            )

    def _calls(self, obj: Mapping[str, Any], *, kind: str | None = None) -> tuple[KindCalls, list[str]]:
        meta = obj["metadata"]
        calls = self.kinds[(obj.get("apiVersion", ""), kind or obj.get("kind", ""))]
        return calls, [meta["name"], meta["namespace"]] if calls.namespaced else [meta["name"]]

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

    async def delete(self, obj: Mapping[str, Any], *, api_version: str, kind: str) -> bool:
        """Delete exactly this object (uid precondition); False when it was already gone."""
        calls, names = self._calls({**obj, "apiVersion": api_version}, kind=kind)
        body = {"preconditions": {"uid": obj["metadata"]["uid"]}, "propagationPolicy": "Background"}
        try:
            await calls.delete(*names, body=body)
        except (NotFound, Conflict):
            # Conflict: the uid changed, so the object we meant is gone and a new one took its name.
            return False
        return True


def _bind_custom(method: Call, plural: str) -> Call:
    async def call(name: str, *args: Any, **kwargs: Any) -> Any:
        return await method(c.GROUP, c.VERSION, plural, name, *args, **kwargs)

    return call
