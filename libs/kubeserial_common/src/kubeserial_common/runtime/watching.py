"""List-then-watch with a local cache (an informer).

A LIST gives the full state and a resourceVersion; WATCH continues from it. When the server
says 410 Gone the old resourceVersion is useless: we LIST again rather than resume, so no change
is hidden. A LIST also runs every `resync_seconds`, which repairs anything a dropped connection
lost and re-delivers every object (level-triggered consumers just reconcile again).

Memory (the controller keeps thousands of objects): LISTs are paged (`page_size` items per
request, one consistent snapshot), so only one page's raw JSON is held at a time, and every object
goes through `keep` before it is cached; the default drops what no consumer reads and what weighs
most on server-side-applied objects: `metadata.managedFields` and the
`kubectl.kubernetes.io/last-applied-configuration` annotation.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from kubernetes_asyncio import watch

from kubeserial_common.core.errors import ApiError, Gone, Unreachable
from kubeserial_common.runtime.kube import read_json, translated
from kubeserial_common.runtime.leanwatch import LAST_APPLIED as LAST_APPLIED
from kubeserial_common.runtime.leanwatch import without_bookkeeping
from kubeserial_common.runtime.tasks import run_together

log = structlog.get_logger(__name__)

ObjectKey = tuple[str, str]  # (namespace or "", name)
Handler = Callable[[str, dict[str, Any]], None]


def object_key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata", {})
    return (meta.get("namespace") or "", meta.get("name", ""))


@dataclass
class Informer:
    """Keeps `cache` equal to the server's objects and calls `handler(event_type, obj)` on changes.

    `list_call` is a kubernetes_asyncio list function (e.g. CoreV1Api.list_node or a partial of
    CustomObjectsApi.list_cluster_custom_object); `list_kwargs` are passed to it (selectors).
    """

    list_call: Callable[..., Awaitable[Any]]
    handler: Handler
    name: str
    list_kwargs: dict[str, Any] = field(default_factory=dict)
    keep: Callable[[dict[str, Any]], dict[str, Any]] = without_bookkeeping
    page_size: int = 500
    resync_seconds: float = 300.0
    watch_timeout_seconds: int = 60
    cache: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    relists: int = 0
    expired: int = 0  # watches that ended in 410 Gone (each followed at once by a LIST, no backoff)
    backoffs: int = 0  # sleeps before retrying after any other failure

    async def _list(self) -> str:
        fresh: dict[ObjectKey, dict[str, Any]] = {}
        token: str | None = None
        while True:
            paging: dict[str, Any] = {"limit": self.page_size}
            if token:
                paging["_continue"] = token
            with translated():
                body = await read_json(
                    await self.list_call(**self.list_kwargs, **paging, _preload_content=False)
                )
            for item in body.pop("items", None) or []:
                fresh[object_key(item)] = self.keep(item)
            token = body.get("metadata", {}).get("continue") or None
            if not token:
                break
        for key, old in list(self.cache.items()):
            if key not in fresh:
                del self.cache[key]
                self.handler("DELETED", old)
        for key, obj in fresh.items():
            previous = self.cache.get(key)
            self.cache[key] = obj
            self.handler("ADDED" if previous is None else "MODIFIED", obj)
        self.relists += 1
        self.synced.set()
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    def _apply(self, event_type: str, obj: dict[str, Any]) -> None:
        obj = self.keep(obj)
        key = object_key(obj)
        if event_type == "DELETED":
            self.cache.pop(key, None)
        else:
            self.cache[key] = obj
        self.handler(event_type, obj)

    async def _watch_until_resync(self, resource_version: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resync_seconds
        while loop.time() < deadline:
            timeout = max(1, min(self.watch_timeout_seconds, int(deadline - loop.time())))
            stream = watch.Watch()
            # The watch raises the client's own exceptions (a 410 arrives as an ERROR event): typed here.
            with translated():
                await self._watch_once(stream, resource_version, timeout_seconds=timeout)
            resource_version = stream.resource_version or resource_version

    async def _watch_once(self, stream: watch.Watch, resource_version: str, *, timeout_seconds: int) -> None:
        async with stream.stream(
            self.list_call,
            resource_version=resource_version,
            timeout_seconds=timeout_seconds,
            allow_watch_bookmarks=True,
            **self.list_kwargs,
        ) as events:
            async for event in events:
                event_type = event["type"]
                if event_type in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(event_type, event["raw_object"])

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                resource_version = await self._list()
                failures = 0
                await self._watch_until_resync(resource_version)
            except Gone:
                self.expired += 1
                log.info("watch expired; listing again", informer=self.name)
                continue
            except Unreachable as exc:
                failures += 1
                log.warning("apiserver unreachable; retrying", informer=self.name, error=str(exc))
            except ApiError as exc:
                failures += 1
                log.warning("watch failed", informer=self.name, status=exc.status, reason=exc.message)
            # Anything else is a bug: it ends run(), and the process runner stops the process.
            self.backoffs += 1
            await asyncio.sleep(min(10.0, 0.2 * 2 ** min(failures, 6)))


async def run_informers(*informers: Informer) -> None:
    await run_together((inf.run() for inf in informers), name="informer")
