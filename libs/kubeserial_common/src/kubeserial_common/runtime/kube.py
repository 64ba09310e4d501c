"""Kubernetes client plumbing shared by every service: configuration, raw-dict calls, typed errors."""

import json
import os
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from kubeserial_common.core import constants as c
from kubeserial_common.core.errors import ApiError, Unreachable, from_status

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ and os.path.exists(IN_CLUSTER_TOKEN)


async def load_configuration(kubeconfig: str | None = None) -> client.Configuration:
    """In a pod: the service-account token. Elsewhere: --kubeconfig, $KUBECONFIG or ~/.kube/config."""
    configuration = client.Configuration()
    if kubeconfig is None and in_cluster():
        config.load_incluster_config(client_configuration=configuration)
    else:
        await config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
    return configuration


@asynccontextmanager
async def api_client(kubeconfig: str | None = None) -> AsyncIterator[client.ApiClient]:
    """A client whose every call raises kubeserial_common.core.errors types on failure."""
    configuration = await load_configuration(kubeconfig)
    async with ApiClient(configuration) as api:
        yield api


def translate(exc: BaseException) -> ApiError | None:
    """The typed error for a failure of the Kubernetes client or its transport; None for anything else
    (a bug stays what it is)."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, ApiException):
        return from_status(exc.status or 0, exc.body, reason=str(exc.reason or ""))
    if isinstance(exc, aiohttp.ClientError | TimeoutError | ConnectionError):
        return Unreachable(f"{type(exc).__name__}: {exc}")
    return None


@contextmanager
def translated() -> Iterator[None]:
    """Raise client and transport failures inside the block as typed ApiErrors."""
    try:
        yield
    except (ApiException, aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        error = translate(exc)
        assert error is not None
        raise error from exc


class ApiClient(client.ApiClient):  # type: ignore[misc]
    """kubernetes_asyncio's client, raising typed errors (core.errors) from every call."""

    async def request(self, *args: Any, **kwargs: Any) -> Any:
        with translated():
            return await super().request(*args, **kwargs)


async def read_json(response: Any) -> dict[str, Any]:
    """Decode a `_preload_content=False` response into the plain dict the apiserver sent.

    The client does not check the HTTP status of raw responses, so a failure (404, 409, 422...)
    would come back as a Status dict; raise it as the typed error instead.
    """
    with translated():
        body = await response.read()
    response.release()
    if response.status >= 400:
        raise from_status(response.status, body, reason=str(response.reason or ""))
    data: dict[str, Any] = json.loads(body)
    return data


class CustomObjects:
    """Dict-in, dict-out access to KubeSerial's own resources (cluster-scoped unless namespace given)."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = client.CustomObjectsApi(api)

    async def get(self, plural: str, name: str, *, namespace: str | None = None) -> dict[str, Any]:
        if namespace:
            call = self.api.get_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, plural, name, _preload_content=False
            )
        else:
            call = self.api.get_cluster_custom_object(
                c.GROUP, c.VERSION, plural, name, _preload_content=False
            )
        return await read_json(await call)

    async def list(
        self, plural: str, *, namespace: str | None = None, label_selector: str | None = None
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"_preload_content": False}
        if label_selector:
            kwargs["label_selector"] = label_selector
        if namespace:
            call = self.api.list_namespaced_custom_object(c.GROUP, c.VERSION, namespace, plural, **kwargs)
        else:
            call = self.api.list_cluster_custom_object(c.GROUP, c.VERSION, plural, **kwargs)
        return await read_json(await call)

    async def create(
        self, plural: str, body: dict[str, Any], *, namespace: str | None = None
    ) -> dict[str, Any]:
        if namespace:
            call = self.api.create_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, plural, body, _preload_content=False
            )
        else:
            call = self.api.create_cluster_custom_object(
                c.GROUP, c.VERSION, plural, body, _preload_content=False
            )
        return await read_json(await call)

    async def patch(
        self,
        plural: str,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"_preload_content": False, "_content_type": content_type}
        if namespace:
            call = self.api.patch_namespaced_custom_object(
                c.GROUP, c.VERSION, namespace, plural, name, body, **kwargs
            )
        else:
            call = self.api.patch_cluster_custom_object(c.GROUP, c.VERSION, plural, name, body, **kwargs)
        return await read_json(await call)

    async def patch_status(
        self,
        plural: str,
        name: str,
        body: Any,
        *,
        namespace: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"_preload_content": False, "_content_type": content_type}
        if namespace:
            call = self.api.patch_namespaced_custom_object_status(
                c.GROUP, c.VERSION, namespace, plural, name, body, **kwargs
            )
        else:
            call = self.api.patch_cluster_custom_object_status(
                c.GROUP, c.VERSION, plural, name, body, **kwargs
            )
        return await read_json(await call)

    async def delete(self, plural: str, name: str, *, namespace: str | None = None) -> None:
        if namespace:
            await self.api.delete_namespaced_custom_object(c.GROUP, c.VERSION, namespace, plural, name)
        else:
            await self.api.delete_cluster_custom_object(c.GROUP, c.VERSION, plural, name)
