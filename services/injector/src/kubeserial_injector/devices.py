"""What the injector knows about SerialDevices: an informer cache, with a GET on a cache miss.

The cache answers almost every admission without a round trip to the apiserver. A device created
a moment before the pod may not have reached the cache yet, so a miss is confirmed with a GET
before the pod is denied for naming an unknown device.
"""

from collections.abc import Iterable
from typing import Any

from kubeserial_common.core.errors import ApiError, NotFound
from kubeserial_common.core.resources import SERIALDEVICE
from kubeserial_common.runtime.lean import LeanClient
from kubeserial_common.runtime.leanwatch import LeanInformer


def admission_view(device: dict[str, Any]) -> dict[str, Any]:
    """What an admission reads of a SerialDevice (injection.decide): its name, spec and
    conditions. The cache keeps only this; managed fields and annotations are dropped."""
    meta = device.get("metadata", {})
    return {
        "apiVersion": device.get("apiVersion"),
        "kind": device.get("kind"),
        "metadata": {"name": meta.get("name"), "uid": meta.get("uid")},
        "spec": device.get("spec", {}),
        "status": {"conditions": device.get("status", {}).get("conditions", [])},
    }


class DeviceLookupError(RuntimeError):
    """The apiserver could not tell whether a device exists."""


class DeviceCatalog:
    def __init__(self, client: LeanClient, *, resync_seconds: float = 300.0) -> None:
        self.client = client
        self.informer = LeanInformer(
            client=client,
            resource=SERIALDEVICE,
            handler=self._ignore,
            name=SERIALDEVICE.plural,
            keep=admission_view,
            resync_seconds=resync_seconds,
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
            return admission_view(await self.client.get(SERIALDEVICE, name))
        except NotFound:
            return None
        except ApiError as exc:
            raise DeviceLookupError(f"could not read SerialDevice {name}: {exc!r}") from exc
