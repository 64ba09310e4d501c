"""coordination.k8s.io Leases: leader election for the controller, liveness for node monitors."""

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from kubeserial_common.core import resources as r
from kubeserial_common.core.errors import AlreadyExists, ApiError, Conflict, NotFound
from kubeserial_common.runtime.lean import LeanClient
from kubeserial_common.runtime.logs import get_logger

log = get_logger(__name__)


def micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def lease_expiry(spec: dict[str, Any]) -> datetime | None:
    """renewTime (or acquireTime) + leaseDurationSeconds; None when the lease was never renewed."""
    renew = spec.get("renewTime") or spec.get("acquireTime")
    if not renew:
        return None
    return parse_time(renew) + timedelta(seconds=int(spec.get("leaseDurationSeconds") or 0))


def lease_expired(spec: dict[str, Any], *, now: datetime) -> bool:
    """A lease is expired when renewTime + leaseDurationSeconds is in the past (or it was never held)."""
    expiry = lease_expiry(spec)
    if expiry is None or not spec.get("holderIdentity"):
        return True
    return expiry < now


class LeaseHolder:
    """Acquires and renews one Lease for `identity`; `held` says whether we hold it right now.

    On the lean client (runtime.lean) only: the monitor, one per node, must not load
    kubernetes_asyncio (an import-linter contract keeps it so).

    A holder renews with one request: it replaces the Lease as its own last write returned it (that
    resourceVersion), as client-go's leader election and the kubelet's node lease do. Only when that
    write conflicts (someone else wrote the Lease) or we do not hold it does it read the Lease first.
    With a monitor on every node this halves the apiserver's steady load (issue 13: at most 0.2
    requests/s per node).
    """

    def __init__(
        self,
        api: LeanClient,
        *,
        name: str,
        namespace: str,
        identity: str,
        duration_seconds: int = 15,
        renew_seconds: float = 5.0,
        labels: dict[str, str] | None = None,
    ) -> None:
        self.api = api
        self.name = name
        self.namespace = namespace
        self.identity = identity
        self.duration_seconds = duration_seconds
        self.renew_seconds = renew_seconds
        self.labels = labels or {}
        self.held = False
        self._ours: dict[str, Any] | None = None  # the Lease as our last successful write returned it

    def _spec(self, *, now: datetime, acquired: str | None, transitions: int) -> dict[str, Any]:
        return {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": self.duration_seconds,
            "acquireTime": acquired or micro_time(now),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        }

    async def try_acquire_or_renew(self) -> bool:
        """One attempt; True if we hold the lease afterwards."""
        now = datetime.now(UTC)
        if self._ours is not None and await self._renew(self._ours, now=now):
            return True
        self._ours = None
        try:
            lease = await self.api.get(r.LEASE, self.name, namespace=self.namespace)
        except NotFound:
            body = {
                "metadata": {"name": self.name, "namespace": self.namespace, "labels": self.labels},
                "spec": self._spec(now=now, acquired=None, transitions=0),
            }
            try:
                self._ours = await self.api.create(r.LEASE, body, namespace=self.namespace)
            except AlreadyExists:
                return False
            return True
        spec = lease.get("spec", {})
        ours = spec.get("holderIdentity") == self.identity
        if not ours and not lease_expired(spec, now=now):
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (0 if ours else 1)
        lease["spec"] = self._spec(
            now=now, acquired=spec.get("acquireTime") if ours else None, transitions=transitions
        )
        try:
            # replace carries resourceVersion: if someone else renewed first, we get 409 and lose.
            self._ours = await self.api.replace(r.LEASE, self.name, lease, namespace=self.namespace)
        except Conflict:
            return False
        return True

    async def _renew(self, last: dict[str, Any], *, now: datetime) -> bool:
        """Replace the Lease as our last write left it; False if it changed since (or is gone)."""
        spec = last.get("spec") or {}
        lease = {
            **last,
            "spec": self._spec(
                now=now,
                acquired=spec.get("acquireTime"),
                transitions=int(spec.get("leaseTransitions") or 0),
            ),
        }
        try:
            self._ours = await self.api.replace(r.LEASE, self.name, lease, namespace=self.namespace)
        except (Conflict, NotFound):
            return False
        return True

    async def run(
        self,
        *,
        on_acquired: Callable[[], Awaitable[None]] | None = None,
        on_lost: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Keep trying to hold the lease; call the hooks on each change of `held`."""
        loop = asyncio.get_running_loop()
        last_renewal = 0.0
        while True:
            try:
                held = await self.try_acquire_or_renew()
                if held:
                    last_renewal = loop.time()
            except ApiError as exc:
                log.warning("lease renewal failed", lease=self.name, error=repr(exc))
                # Keep leadership only while the last renewal is still within the duration.
                held = self.held and loop.time() - last_renewal < self.duration_seconds
            if held != self.held:
                self.held = held
                log.info("lease " + ("acquired" if held else "lost"), lease=self.name, identity=self.identity)
                hook = on_acquired if held else on_lost
                if hook is not None:
                    await hook()
            await asyncio.sleep(self.renew_seconds if held else self.renew_seconds / 2)

    async def release(self) -> None:
        """Give the lease up at shutdown so a successor need not wait for it to expire."""
        if not self.held:
            return
        with contextlib.suppress(ApiError):
            lease = await self.api.get(r.LEASE, self.name, namespace=self.namespace)
            if lease.get("spec", {}).get("holderIdentity") == self.identity:
                lease["spec"]["holderIdentity"] = None
                await self.api.replace(r.LEASE, self.name, lease, namespace=self.namespace)
        self.held = False
        self._ours = None
