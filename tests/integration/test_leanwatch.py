"""The lean informer (runtime.leanwatch, the injector's device cache) against a real apiserver:
watch events reach the trimmed cache, and 410 Gone after an etcd compaction means a fresh LIST that
misses nothing. On a control plane of this module's own (its apiserver is restarted)."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserial_common.core import constants as c
from kubeserial_common.core.resources import SERIALDEVICE
from kubeserial_common.runtime.lean import LeanClient, lean_client
from kubeserial_common.runtime.leanwatch import LeanInformer
from kubeserial_testing.controlplane import ControlPlane, free_port

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kustomize" / "base" / "crd"
pytestmark = pytest.mark.controlplane


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    own = ControlPlane(
        tmp_path_factory.mktemp("leanwatch"), with_controller_manager=False, with_scheduler=False
    )
    own.start()
    try:
        own.kubectl("apply", "-k", str(CRD_DIR))
        own.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        yield own
    finally:
        own.stop()


@pytest.fixture
async def api(plane: ControlPlane) -> AsyncIterator[LeanClient]:
    async with lean_client(str(plane.kubeconfig)) as client:
        yield client


def device(name: str) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": "SerialDevice",
        "metadata": {"name": name, "annotations": {"bulky": "x" * 1000}},
        "spec": {"idVendor": "0403", "idProduct": "6001"},
    }


async def eventually(predicate: Any, *, within: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached within {within}s")
        await asyncio.sleep(0.05)


def trimmed(obj: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": obj["metadata"]["name"], "labels": obj["metadata"].get("labels", {})}}


def informer_for(api: LeanClient, events: list[tuple[str, str]]) -> LeanInformer:
    return LeanInformer(
        client=api,
        resource=SERIALDEVICE,
        handler=lambda kind, obj: events.append((kind, obj["metadata"]["name"])),
        name="leanwatch",
        keep=trimmed,
        resync_seconds=600,
        watch_timeout_seconds=5,
    )


async def test_watch_events_reach_the_trimmed_cache(api: LeanClient) -> None:
    events: list[tuple[str, str]] = []
    informer = informer_for(api, events)
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        await api.create(SERIALDEVICE, device("w1"))
        await eventually(lambda: ("", "w1") in informer.cache)
        assert informer.cache[("", "w1")] == {"metadata": {"name": "w1", "labels": {}}}
        await api.patch(SERIALDEVICE, "w1", {"metadata": {"labels": {"changed": "yes"}}})
        await eventually(lambda: informer.cache[("", "w1")]["metadata"]["labels"] == {"changed": "yes"})
        # Past a server-side watch timeout (5 s): the watch is resumed, not relisted.
        await asyncio.sleep(6)
        await api.delete(SERIALDEVICE, "w1")
        await eventually(lambda: ("", "w1") not in informer.cache)
        assert ("ADDED", "w1") in events and ("MODIFIED", "w1") in events and ("DELETED", "w1") in events
        assert informer.relists == 1
    finally:
        task.cancel()


async def test_relists_after_410_and_misses_nothing(plane: ControlPlane, api: LeanClient) -> None:
    port_b = free_port()
    plane.start_apiserver(name="kube-apiserver-b", port=port_b)
    server_b = f"https://127.0.0.1:{port_b}"
    plane.wait_ready(server=server_b)
    config_b = yaml.safe_load(plane.kubeconfig.read_text())
    config_b["clusters"][0]["cluster"]["server"] = server_b
    kubeconfig_b = plane.root / "b.kubeconfig"
    kubeconfig_b.write_text(yaml.safe_dump(config_b))
    for name in ("gone", "kept"):
        await api.create(SERIALDEVICE, device(name))
    events: list[tuple[str, str]] = []
    informer = informer_for(api, events)
    task = asyncio.create_task(informer.run())
    try:
        await eventually(lambda: {("", "gone"), ("", "kept")} <= set(informer.cache))
        relists_before = informer.relists
        plane.stop_apiserver()
        async with lean_client(str(kubeconfig_b)) as other:
            await other.delete(SERIALDEVICE, "gone")
            await other.create(SERIALDEVICE, device("born"))
            await other.patch(SERIALDEVICE, "kept", {"metadata": {"labels": {"changed": "yes"}}})
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


def cache_lists(metrics: str) -> float:
    """LISTs of SerialDevices kube-apiserver answered from its watch cache, from its own metrics."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("apiserver_cache_list_total{") and f"{c.SERIALDEVICES}" in line
    )


async def test_a_list_far_larger_than_any_answer_the_client_takes_whole(api: LeanClient) -> None:
    """600 SerialDevices of 10 kB (6 MB, beyond the lean client's 4 MiB per answer): one LIST from
    the watch cache, parsed as it streams in; every object arrives."""
    label = {"bulk": "list-test"}

    def bulky(index: int) -> dict[str, Any]:
        obj = device(f"bulk-{index:03d}")
        obj["metadata"]["labels"] = label
        obj["metadata"]["annotations"] = {"bulky": f"{index:03d}" + "x" * 10_000}
        return obj

    gate = asyncio.Semaphore(16)

    async def create(index: int) -> None:
        async with gate:
            await api.create(SERIALDEVICE, bulky(index))

    await asyncio.gather(*(create(i) for i in range(600)))
    informer = LeanInformer(
        client=api,
        resource=SERIALDEVICE,
        handler=lambda kind, obj: None,
        name="bulk",
        label_selector="bulk=list-test",
        resync_seconds=600,
    )
    lists_before = cache_lists(await api.request_text("GET", "/metrics"))
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 60)
        assert informer.relists == 1 and len(informer.cache) == 600
        sample = informer.cache[("", "bulk-599")]["metadata"]["annotations"]["bulky"]
        assert sample.startswith("599") and len(sample) == 10_003
        assert cache_lists(await api.request_text("GET", "/metrics")) == lists_before + 1
    finally:
        task.cancel()
        for i in range(600):
            await api.delete(SERIALDEVICE, f"bulk-{i:03d}")
