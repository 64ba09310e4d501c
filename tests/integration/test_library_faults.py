"""Faults against the shared Kubernetes machinery, on a control plane of this module's own
(apiserver restarts here must not disturb other modules): 410 Gone after etcd compaction,
apiserver restarts mid-watch, conflicting status writes, leader failover."""

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes_asyncio import client

from kubeserial_common.core import constants as c
from kubeserial_common.core import resources as r
from kubeserial_common.core.conditions import ConditionUpdate
from kubeserial_common.core.status import conditions_patch, write_status
from kubeserial_common.runtime.kube import CustomObjects, api_client
from kubeserial_common.runtime.lean import LeanClient, lean_client
from kubeserial_common.runtime.leases import LeaseHolder, micro_time, parse_time
from kubeserial_common.runtime.watching import Informer, object_key
from kubeserial_testing.controlplane import ControlPlane, free_port

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kustomize" / "base" / "crd"
pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    own = ControlPlane(tmp_path_factory.mktemp("faults"), with_controller_manager=False, with_scheduler=False)
    own.start()
    try:
        own.kubectl("apply", "-k", str(CRD_DIR))
        own.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        own.kubectl("create", "namespace", "kubeserial")
        yield own
    finally:
        own.stop()


@pytest.fixture
async def api(plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    async with api_client(str(plane.kubeconfig)) as admin:
        yield admin


def device(name: str) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": "SerialDevice",
        "metadata": {"name": name},
        "spec": {"idVendor": "0403", "idProduct": "6001"},
    }


async def eventually(predicate: Any, *, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {within}s")
        await asyncio.sleep(0.05)


def device_informer(api: client.ApiClient, events: list[tuple[str, str]]) -> Informer:
    return Informer(
        list_call=client.CustomObjectsApi(api).list_cluster_custom_object,
        list_kwargs={"group": c.GROUP, "version": c.VERSION, "plural": c.SERIALDEVICES},
        handler=lambda kind, obj: events.append((kind, obj["metadata"]["name"])),
        name="faults",
        resync_seconds=600,
    )


async def test_informer_relists_after_410_and_misses_nothing(
    plane: ControlPlane, api: client.ApiClient
) -> None:
    """Changes made while our apiserver is down, then compacted away, still reach the cache."""
    port_b = free_port()
    plane.start_apiserver(name="kube-apiserver-b", port=port_b)
    server_b = f"https://127.0.0.1:{port_b}"
    plane.wait_ready(server=server_b)
    config_b = yaml.safe_load(plane.kubeconfig.read_text())
    config_b["clusters"][0]["cluster"]["server"] = server_b
    kubeconfig_b = plane.root / "b.kubeconfig"
    kubeconfig_b.write_text(yaml.safe_dump(config_b))

    objects = CustomObjects(api)
    for name in ("gone", "kept"):
        await objects.create(c.SERIALDEVICES, device(name))
    events: list[tuple[str, str]] = []
    informer = device_informer(api, events)
    task = asyncio.create_task(informer.run())
    try:
        await eventually(lambda: {("", "gone"), ("", "kept")} <= set(informer.cache))
        relists_before = informer.relists

        plane.stop_apiserver()
        async with api_client(str(kubeconfig_b)) as api_b:
            other = CustomObjects(api_b)
            await other.delete(c.SERIALDEVICES, "gone")
            await other.create(c.SERIALDEVICES, device("born"))
            await other.patch(c.SERIALDEVICES, "kept", {"metadata": {"labels": {"changed": "yes"}}})
        plane.compact_etcd()
        plane.start_apiserver()
        plane.wait_ready()

        def converged() -> bool:
            kept = informer.cache.get(("", "kept"), {})
            return (
                set(informer.cache) >= {("", "kept"), ("", "born")}
                and ("", "gone") not in informer.cache
                and kept.get("metadata", {}).get("labels", {}).get("changed") == "yes"
            )

        await eventually(converged, within=60)
        assert informer.relists > relists_before, "expected a fresh LIST after 410 Gone"
        assert ("DELETED", "gone") in events and ("ADDED", "born") in events
    finally:
        task.cancel()
        plane.stop_apiserver("kube-apiserver-b")


async def test_informer_resumes_after_apiserver_restart(plane: ControlPlane, api: client.ApiClient) -> None:
    events: list[tuple[str, str]] = []
    informer = device_informer(api, events)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), timeout=30)
        await asyncio.to_thread(plane.restart_apiserver)
        await CustomObjects(api).create(c.SERIALDEVICES, device("after-restart"))
        await eventually(lambda: ("", "after-restart") in informer.cache, within=60)
        assert ("ADDED", "after-restart") in events
    finally:
        task.cancel()


async def test_conflicting_claims_have_exactly_one_winner(plane: ControlPlane, api: client.ApiClient) -> None:
    """Two writers computing from the same snapshot: resourceVersion lets only one claim stand."""
    objects = CustomObjects(api)
    created = await objects.create(c.SERIALDEVICES, device("contended"))

    def claim_for(node: str) -> Any:
        def compute(obj: dict[str, Any]) -> dict[str, Any] | None:
            if obj.get("status", {}).get("nodeName"):
                return None  # already owned: the loser records nothing
            patch = conditions_patch(obj, [ConditionUpdate(c.AVAILABLE, "True", "DeviceAvailable")]) or {}
            return {**patch, "nodeName": node}

        return compute

    results = await asyncio.gather(
        write_status(objects, c.SERIALDEVICES, "contended", claim_for("node-a"), current=created),
        write_status(objects, c.SERIALDEVICES, "contended", claim_for("node-b"), current=created),
    )
    winners = [r for r in results if r is not None]
    assert len(winners) == 1
    final = await objects.get(c.SERIALDEVICES, "contended")
    assert final["status"]["nodeName"] == winners[0]["status"]["nodeName"]
    assert [cond["type"] for cond in final["status"]["conditions"]] == [c.AVAILABLE]


async def test_leader_fails_over_after_lease_duration(plane: ControlPlane) -> None:
    async with lean_client(str(plane.kubeconfig)) as lean:
        await _fail_over(plane, lean)


async def _fail_over(plane: ControlPlane, api: LeanClient) -> None:
    first = LeaseHolder(
        api, name="failover", namespace="kubeserial", identity="one", duration_seconds=2, renew_seconds=0.3
    )
    second = LeaseHolder(
        api, name="failover", namespace="kubeserial", identity="two", duration_seconds=2, renew_seconds=0.3
    )
    first_task = asyncio.create_task(first.run())
    await eventually(lambda: first.held)
    second_task = asyncio.create_task(second.run())
    await asyncio.sleep(1.0)
    assert first.held and not second.held, "only one holder at a time"
    first_task.cancel()  # the leader dies without releasing
    with contextlib.suppress(asyncio.CancelledError):
        await first_task
    abandoned = json.loads(
        plane.kubectl("get", "lease", "failover", "-n", "kubeserial", "-o", "json").stdout
    )["spec"]
    assert abandoned["holderIdentity"] == "one"
    await eventually(lambda: second.held, within=10)
    lease = json.loads(plane.kubectl("get", "lease", "failover", "-n", "kubeserial", "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"] == "two" and lease["spec"]["leaseTransitions"] == 1
    # Taken over only once the abandoned Lease had expired, never while it was still valid.
    assert parse_time(lease["spec"]["acquireTime"]) > parse_time(abandoned["renewTime"]) + timedelta(
        seconds=abandoned["leaseDurationSeconds"]
    )
    second_task.cancel()


def test_object_key() -> None:
    assert object_key({"metadata": {"name": "a"}}) == ("", "a")
    assert object_key({"metadata": {"name": "a", "namespace": "ns"}}) == ("ns", "a")


async def test_a_held_lease_renews_in_one_request_and_notices_a_takeover(plane: ControlPlane) -> None:
    """Renewal replaces the Lease as our last write left it (one PUT, as client-go and the kubelet do):
    with a monitor per node that is the steady load per node. A Lease someone else wrote meanwhile
    makes the PUT conflict; only then is it read, and it is not ours any more."""
    async with lean_client(str(plane.kubeconfig)) as api:
        holder = LeaseHolder(api, name="renewal", namespace="kubeserial", identity="one", duration_seconds=30)
        assert await holder.try_acquire_or_renew()  # GET (404), then POST
        renewed = []
        for _ in range(5):
            before = api.requests
            assert await holder.try_acquire_or_renew()
            renewed.append(api.requests - before)
        assert renewed == [1] * 5
        lease = await api.get(r.LEASE, "renewal", namespace="kubeserial")
        assert lease["spec"]["holderIdentity"] == "one" and lease["spec"]["leaseTransitions"] == 0

        # Another holder takes the Lease over (as after an expiry): our next renewal must lose.
        lease["spec"]["holderIdentity"] = "two"
        lease["spec"]["renewTime"] = micro_time(datetime.now(UTC))
        await api.replace(r.LEASE, "renewal", lease, namespace="kubeserial")
        before = api.requests
        assert not await holder.try_acquire_or_renew()
        assert api.requests - before == 2  # the conflicting PUT, then the GET that shows the new holder
        final = await api.get(r.LEASE, "renewal", namespace="kubeserial")
        assert final["spec"]["holderIdentity"] == "two"
