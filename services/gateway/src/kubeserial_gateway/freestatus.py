"""The SerialDevice `Free` condition, owned by the gateway while it runs.

False/InUse (the message names the peer) while a session is open, True/NoSession after. Writes go
through kubeserial_common.core.status (status subresource, resourceVersion, re-read on conflict), so a
write is whole or not at all. They run in their own task and coalesce: the data path never waits
for the apiserver, and after an outage only the latest state is written.
"""

import asyncio
import contextlib
import functools
from typing import Any, Final

from kubeserial_common.core.backoff import Backoff
from kubeserial_common.core.conditions import ConditionUpdate
from kubeserial_common.core.constants import SERIALDEVICES
from kubeserial_common.core.errors import ApiError, NotFound
from kubeserial_common.core.free import free_for_session
from kubeserial_common.core.status import StatusObjects, conditions_patch, write_status
from kubeserial_common.runtime.logs import get_logger
from kubeserial_gateway.metrics import GatewayMetrics

log = get_logger(__name__)

RETRY_BACKOFF: Final = Backoff(base=0.2, cap=30.0)


def free_update(obj: dict[str, Any], *, peer: str | None) -> ConditionUpdate | None:
    """The Free condition the gateway wants given the object as it is now (None: leave it alone);
    the rule shared with the monitor is kubeserial_common.core.free."""
    return free_for_session(obj, peer=peer)


def free_status_patch(
    obj: dict[str, Any], *, peer: str | None, now: str | None = None
) -> dict[str, Any] | None:
    update = free_update(obj, peer=peer)
    return None if update is None else conditions_patch(obj, [update], now=now)


class FreeStatusWriter:
    def __init__(self, objects: StatusObjects, *, device_name: str, metrics: GatewayMetrics) -> None:
        self.objects = objects
        self.device_name = device_name
        self.metrics = metrics
        self._desired: str | None = None
        self._dirty = asyncio.Event()
        self._idle = asyncio.Event()
        self._dirty.set()  # at start: clear an InUse left behind by a previous gateway
        self._missing = False  # the SerialDevice was not found at the last write (logged once)

    def set(self, peer: str | None) -> None:
        self._desired = peer
        self._idle.clear()
        self._dirty.set()

    async def run(self) -> None:
        failures = 0
        while True:
            if not self._dirty.is_set():
                self._idle.set()
            await self._dirty.wait()
            self._dirty.clear()
            peer = self._desired
            try:
                written = await write_status(
                    self.objects,
                    SERIALDEVICES,
                    self.device_name,
                    functools.partial(free_status_patch, peer=peer),
                )
            except NotFound:
                # Deleted while this gateway runs (its Deployment goes with it, or the KubeSerial
                # that lists it makes it again): sessions go on; say so once, write when it is back.
                failures += 1
                delay = RETRY_BACKOFF.delay(failures)
                self.metrics.status_writes.labels("missing").inc()
                if not self._missing:
                    self._missing = True
                    log.warning(
                        "SerialDevice does not exist; the Free condition is written when it does",
                        device=self.device_name,
                    )
                self._dirty.set()
                await asyncio.sleep(delay)
                continue
            except ApiError as exc:
                failures += 1
                delay = RETRY_BACKOFF.delay(failures)
                self.metrics.status_writes.labels("failed").inc()
                log.warning(
                    "could not write the Free condition; retrying",
                    device=self.device_name,
                    retry_in=delay,
                    error=str(exc)[:300],
                )
                self._dirty.set()
                await asyncio.sleep(delay)
                continue
            failures = 0
            if self._missing:
                self._missing = False
                log.info("SerialDevice exists again", device=self.device_name)
            self.metrics.status_writes.labels("written" if written is not None else "unchanged").inc()
            if written is not None:
                log.info("Free condition written", device=self.device_name, in_use_by=peer)

    async def flush(self, *, within: float) -> bool:
        """Wait until the latest state is written (at shutdown); False if that takes longer than `within`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), within)
            return True
        return False
