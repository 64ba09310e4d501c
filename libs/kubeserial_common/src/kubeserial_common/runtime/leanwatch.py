"""List-then-watch with a local cache on the lean client (runtime.lean), for processes that cannot
afford kubernetes_asyncio (~45 MiB with aiohttp): the controller and the injector.

Same contract as runtime.watching.Informer: a LIST gives the full state and a resourceVersion;
WATCH continues from it; 410 Gone (an ERROR event or the HTTP status) or a failed watch means LIST
again. Every `resync_seconds` the cache is replayed to the handler (each object as MODIFIED), as
client-go's resync does: a periodic re-reconcile of everything with no LIST, so at steady state the
apiserver serves this informer nothing but its watch (issue 13: no LIST after start).
The watch is one streamed GET (`?watch=1`, chunked JSON lines) on a
connection of its own, so the client's kept-alive connections stay free for other requests.
`keep` trims each object to the fields its user reads, so the cache holds only those (default:
without managedFields and kubectl's last-applied annotation, as runtime.watching). LISTs come from
the apiserver's watch cache, as client-go's (`list_streamed`): not paged, parsed item by item as the
answer streams in, so no more than one item of raw JSON is held at a time.
"""

import asyncio
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from kubeserial_common.core.errors import ApiError, Gone, TooManyRequests, Unreachable, from_status
from kubeserial_common.core.liststream import ListStream, ListStreamError
from kubeserial_common.core.resources import ResourceInfo
from kubeserial_common.runtime.lean import LeanClient
from kubeserial_common.runtime.logs import get_logger
from kubeserial_common.runtime.tasks import run_together, within

log = get_logger(__name__)

ObjectKey = tuple[str, str]  # (namespace or "", name)
Handler = Callable[[str, dict[str, Any]], None]
MAX_EVENT = 4 * 1024 * 1024  # the largest watch event or list item taken (an object is at most 1.5 MiB)
LIST_IDLE_SECONDS = 60  # the longest silence inside a LIST answer
REPLAY_SLICE = 200  # objects replayed between two turns of the event loop


LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


def without_bookkeeping(obj: dict[str, Any]) -> dict[str, Any]:
    """The object without managedFields and kubectl's last-applied annotation (in place)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
        annotations = meta.get("annotations")
        if isinstance(annotations, dict) and LAST_APPLIED in annotations:
            del annotations[LAST_APPLIED]
    return obj


def object_key(obj: dict[str, Any]) -> ObjectKey:
    meta = obj.get("metadata", {})
    return (meta.get("namespace") or "", meta.get("name", ""))


async def _stream_body(client: LeanClient, path: str, *, what: str, idle: float) -> AsyncIterator[bytes]:
    """The body of a GET, piece by piece as it arrives, on a connection of its own (closed after);
    typed errors. `idle`: the longest silence that is not a dead connection."""
    head = [
        f"GET {path} HTTP/1.1",
        f"Host: {client._host_header}",  # the lean client's connection settings, shared
        "Accept: application/json",
        f"User-Agent: {client.user_agent}",
        "Connection: close",
    ]
    token = client._token()
    if token:
        head.append(f"Authorization: Bearer {token}")
    try:
        reader, writer = await within(
            asyncio.open_connection(
                client._host,
                client._port,
                ssl=client._ssl,
                server_hostname=client._host if client._ssl else None,
            ),
            15,
        )
    except (OSError, ssl.SSLError, TimeoutError) as exc:
        raise Unreachable(f"{what} on {client.endpoint.server}: {exc!r}") from exc
    try:
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1"))
        status_line = await within(reader.readuntil(b"\r\n\r\n"), idle)
        lines = status_line.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0
        chunked = any(
            line.lower().startswith("transfer-encoding:") and "chunked" in line.lower() for line in lines
        )
        if status >= 400 or not status:
            body = await within(reader.read(MAX_EVENT), idle)
            raise from_status(status, body)
        while True:
            if chunked:
                size_line = await within(reader.readuntil(b"\r\n"), idle)
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    return
                data = await within(reader.readexactly(size + 2), idle)
                yield data[:-2]
            else:
                data = await within(reader.read(65536), idle)
                if not data:
                    return
                yield data
    except (
        OSError,
        ssl.SSLError,
        TimeoutError,
        asyncio.IncompleteReadError,
        asyncio.LimitOverrunError,
    ) as exc:
        raise Unreachable(f"{what}: {exc!r}") from exc
    finally:
        writer.close()


async def watch_events(
    client: LeanClient,
    resource: ResourceInfo,
    *,
    resource_version: str,
    timeout_seconds: int,
    namespace: str | None = None,
    label_selector: str | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The watch's events ({"type", "object"}) until the server ends it; typed errors."""
    params = {
        "watch": "1",
        "resourceVersion": resource_version,
        "timeoutSeconds": str(timeout_seconds),
        "allowWatchBookmarks": "true",
    }
    if label_selector:
        params["labelSelector"] = label_selector
    path = f"{resource.path(namespace=namespace)}?{urlencode(params)}"
    # The server ends the watch by itself after timeoutSeconds: a silence much longer than that is
    # a dead connection.
    what = f"watch {resource.plural}"
    pending = b""
    async for data in _stream_body(client, path, what=what, idle=timeout_seconds + 30):
        pending += data
        if len(pending) > MAX_EVENT:
            raise Unreachable(f"{what}: event larger than {MAX_EVENT} bytes")
        *complete, pending = pending.split(b"\n")
        for line in complete:
            if line.strip():
                yield json.loads(line)


async def list_streamed(
    client: LeanClient,
    resource: ResourceInfo,
    on_item: Callable[[dict[str, Any]], None],
    *,
    resource_version: str,
    namespace: str | None = None,
    label_selector: str | None = None,
) -> str:
    """LIST at `resource_version` ("0": whatever the apiserver's watch cache has; a version seen
    before: at least that new), each item to `on_item` as it is parsed; the list's version.

    The watch cache answers these without reading or decoding anything from etcd, where a paged
    LIST (`limit`) reads every page from etcd; but it ignores `limit`, so the answer is parsed as
    it streams in (core.liststream), never held whole. client-go's informers list the same way.
    """
    params = {"resourceVersion": resource_version}
    if label_selector:
        params["labelSelector"] = label_selector
    path = f"{resource.path(namespace=namespace)}?{urlencode(params)}"
    what = f"list {resource.plural}"
    stream = ListStream(max_item=MAX_EVENT)
    try:
        async for data in _stream_body(client, path, what=what, idle=LIST_IDLE_SECONDS):
            for item in stream.feed(data):
                on_item(item)
        stream.close()
    except ListStreamError as exc:
        raise Unreachable(f"{what}: {exc}") from exc
    return str((stream.head.get("metadata") or {}).get("resourceVersion", ""))


@dataclass
class LeanInformer:
    """Keeps `cache` equal to the server's objects (trimmed by `keep`) and calls
    `handler(event_type, obj)` on changes."""

    client: LeanClient
    resource: ResourceInfo
    handler: Handler
    name: str
    namespace: str | None = None
    label_selector: str | None = None
    keep: Callable[[dict[str, Any]], dict[str, Any]] = without_bookkeeping
    resync_handler: Handler | None = None  # the replays' handler, when they are to be told apart
    resync_seconds: float = 300.0
    watch_timeout_seconds: int = 60
    cache: dict[ObjectKey, dict[str, Any]] = field(default_factory=dict)
    synced: asyncio.Event = field(default_factory=asyncio.Event)
    relists: int = 0
    resyncs: int = 0  # cache replays (no LIST)
    expired: int = 0  # watches that ended in 410 Gone (each followed at once by a LIST, no backoff)
    backoffs: int = 0  # sleeps before retrying after any other failure
    seen_version: str = "0"  # the newest resourceVersion seen (lists and watch events)

    async def _list(self, not_older_than: str) -> str:
        fresh: dict[ObjectKey, dict[str, Any]] = {}

        def take(item: dict[str, Any]) -> None:
            fresh[object_key(item)] = self.keep(item)

        version = await list_streamed(
            self.client,
            self.resource,
            take,
            resource_version=not_older_than,
            namespace=self.namespace,
            label_selector=self.label_selector,
        )
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
        return version

    def _apply(self, event_type: str, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        obj = self.keep(obj)
        if event_type == "DELETED":
            self.cache.pop(key, None)
        else:
            self.cache[key] = obj
        self.handler(event_type, obj)

    async def _replay(self) -> None:
        """The periodic resync: every cached object to `resync_handler` (else the handler) again,
        as MODIFIED, with no LIST; in slices, so that 10,000 objects never hold up the event loop."""
        handler = self.resync_handler or self.handler
        for index, obj in enumerate(list(self.cache.values()), start=1):
            handler("MODIFIED", obj)
            if index % REPLAY_SLICE == 0:
                await asyncio.sleep(0)
        self.resyncs += 1

    async def _watch_until_resync(self, resource_version: str) -> str:
        """Watch (at least once) until `resync_seconds` have passed; the last version seen."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.resync_seconds
        while True:
            timeout = max(1, min(self.watch_timeout_seconds, int(deadline - loop.time())))
            events = watch_events(
                self.client,
                self.resource,
                resource_version=resource_version,
                timeout_seconds=timeout,
                namespace=self.namespace,
                label_selector=self.label_selector,
            )
            async for event in events:
                event_type, obj = event.get("type"), event.get("object") or {}
                if event_type == "ERROR":
                    raise from_status(int(obj.get("code") or 0), obj)
                version = obj.get("metadata", {}).get("resourceVersion")
                if version:
                    resource_version = self.seen_version = str(version)
                if event_type in ("ADDED", "MODIFIED", "DELETED"):
                    self._apply(event_type, obj)
            if loop.time() >= deadline:
                return resource_version

    async def run(self) -> None:
        failures = 0
        resource_version: str | None = None  # None: LIST (at start, after 410 and after failures)
        # What a LIST asks for (seen_version): "0" (any version the watch cache has) at start and
        # after failures; after a 410, at least the last version seen (the cache is past it already).
        self.seen_version = "0"
        while True:
            try:
                if resource_version is None:
                    resource_version = await self._list(self.seen_version)
                    self.seen_version = resource_version or "0"
                    failures = 0
                resource_version = await self._watch_until_resync(resource_version)
                await self._replay()
                continue
            except Gone:
                self.expired += 1
                resource_version = None
                log.info("watch expired; listing again", informer=self.name)
                continue
            except Unreachable as exc:
                failures += 1
                log.warning("apiserver unreachable; retrying", informer=self.name, error=str(exc))
            except TooManyRequests as exc:
                # Priority and fairness, or a watch cache still being filled (a resource nobody
                # read since the apiserver started): it says "later", as it is meant to.
                failures += 1
                log.info("apiserver asks to retry later", informer=self.name, reason=exc.message)
            except ApiError as exc:
                failures += 1
                log.warning("watch failed", informer=self.name, status=exc.status, reason=exc.message)
            # Anything else is a bug: it ends run(), and the process runner stops the process.
            resource_version = None
            self.seen_version = "0"  # e.g. a restored etcd: versions seen before may never come again
            self.backoffs += 1
            await asyncio.sleep(min(10.0, 0.2 * 2 ** min(failures, 6)))


async def run_lean_informers(*informers: LeanInformer) -> None:
    await run_together((inf.run() for inf in informers), name="informer")
