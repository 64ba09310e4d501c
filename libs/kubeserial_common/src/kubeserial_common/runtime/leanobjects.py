"""KubeSerial's own resources by plural over the lean client: the calls of runtime.kube.CustomObjects
(get, list, create, patch, patch_status, delete), for processes that do not load kubernetes_asyncio
(the controller)."""

from typing import Any

from kubeserial_common.core.resources import custom_by_plural
from kubeserial_common.runtime.lean import MERGE_PATCH, LeanClient


class LeanObjects:
    def __init__(self, client: LeanClient) -> None:
        self.client = client

    async def get(self, plural: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        return await self.client.get(custom_by_plural(plural), name, namespace=namespace)

    async def list(
        self, plural: str, *, namespace: str | None = None, label_selector: str | None = None
    ) -> dict[str, Any]:
        return await self.client.list(
            custom_by_plural(plural), namespace=namespace, label_selector=label_selector
        )

    async def create(
        self, plural: str, body: dict[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        return await self.client.create(custom_by_plural(plural), body, namespace=namespace)

    async def patch(
        self,
        plural: str,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        return await self.client.patch(
            custom_by_plural(plural), name, body, namespace=namespace, content_type=content_type
        )

    async def patch_status(
        self,
        plural: str,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        return await self.client.patch(
            custom_by_plural(plural),
            name,
            body,
            namespace=namespace,
            subresource="status",
            content_type=content_type,
        )

    async def delete(self, plural: str, name: str, *, namespace: str | None = None) -> None:
        await self.client.delete(custom_by_plural(plural), name, namespace=namespace)
