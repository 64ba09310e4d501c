"""What the injector knows about SerialDevices: an informer cache, with a GET on a cache miss.

The cache answers almost every admission without a round trip to the apiserver. A device created
a moment before the pod may not have reached the cache yet, so a miss is confirmed with a GET
before the pod is denied for naming an unknown device.
"""

import functools
from collections.abc import Iterable
from typing import Any

from kubernetes_asyncio import client

from kubeserial_common.core import constants as c
from kubeserial_common.core.errors import ApiError, NotFound
from kubeserial_common.runtime.kube import CustomObjects
from kubeserial_common.runtime.watching import Informer


class DeviceLookupError(RuntimeError):
    """The apiserver could not tell whether a device exists."""


class DeviceCatalog:
    def __init__(self, api: client.ApiClient, *, resync_seconds: float = 300.0) -> None:
        self.objects = CustomObjects(api)
        list_call = functools.partial(
            client.CustomObjectsApi(api).list_cluster_custom_object, c.GROUP, c.VERSION, c.SERIALDEVICES
        )
        self.informer = Informer(
            list_call=list_call, handler=self._ignore, name=c.SERIALDEVICES, resync_seconds=resync_seconds
        )
        self.misses = 0

    @staticmethod
    def _ignore(event_type: str, obj: dict[str, Any]) -> None:
        """Admissions read the informer's cache; no per-event work is needed."""

    @property
    def synced(self) -> bool:
        return self.informer.synced.is_set()

    async def run(self) -> None:
        await self.informer.run()

    async def lookup(self, names: Iterable[str]) -> dict[str, dict[str, Any] | None]:
        """Each name's SerialDevice, or None when it does not exist."""
        found: dict[str, dict[str, Any] | None] = {}
        for name in names:
            cached = self.informer.cache.get(("", name))
            if cached is None:
                self.misses += 1
                cached = await self._get(name)
            found[name] = cached
        return found

    async def _get(self, name: str) -> dict[str, Any] | None:
        try:
            return await self.objects.get(c.SERIALDEVICES, name)
        except NotFound:
            return None
        except ApiError as exc:
            raise DeviceLookupError(f"could not read SerialDevice {name}: {exc!r}") from exc
