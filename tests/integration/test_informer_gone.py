"""410 Gone while the apiserver stays up: an informer's watch resumes from a resourceVersion that
etcd has compacted away, the apiserver answers 410, and the informer LISTs again at once (its
`expired` counter moves, its `backoffs` counter does not).

How the resume is forced, with no outage: the informer watches a label selector, so writes to
other objects move etcd's revision but never its resourceVersion; etcd is then compacted past it,
and the watch's next resume (the server ends each watch after `watch_timeout_seconds`) asks for a
compacted revision. This module's apiserver serves SerialDevice watches from etcd, not from its
watch cache (`--watch-cache-sizes=serialdevices.app.kubeserial.com#0`): a watch cache keeps its own
window of events and would answer from it, sending bookmarks that move the informer along.
Both informers run it: runtime.leanwatch (the services) and runtime.watching (the harness).
"""

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import pytest
from kubernetes_asyncio import client

from kubeserial_common.core import constants as c
from kubeserial_common.core.errors import NotFound
from kubeserial_common.core.resources import SERIALDEVICE
from kubeserial_common.runtime.kube import api_client
from kubeserial_common.runtime.lean import LeanClient, lean_client
from kubeserial_common.runtime.leanwatch import LeanInformer
from kubeserial_common.runtime.watching import Informer
from kubeserial_testing.controlplane import ControlPlane

CRD_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kustomize" / "base" / "crd"
pytestmark = pytest.mark.controlplane


class AnyInformer(Protocol):
    cache: dict[tuple[str, str], dict[str, Any]]
    synced: asyncio.Event
    relists: int
    expired: int
    backoffs: int

    async def run(self) -> None: ...


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    own = ControlPlane(
        tmp_path_factory.mktemp("gone"),
        with_controller_manager=False,
        with_scheduler=False,
        apiserver_args=(f"--watch-cache-sizes={c.SERIALDEVICES}.{c.GROUP}#0",),
    )
    own.start()
    try:
        own.kubectl("apply", "-k", str(CRD_DIR))
        own.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        yield own
    finally:
        own.stop()


@pytest.fixture
async def lean(plane: ControlPlane) -> AsyncIterator[LeanClient]:
    async with lean_client(str(plane.kubeconfig)) as api:
        yield api


@pytest.fixture
async def kube(plane: ControlPlane) -> AsyncIterator[client.ApiClient]:
    async with api_client(str(plane.kubeconfig)) as api:
        yield api


def device(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": "SerialDevice",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"idVendor": "0403", "idProduct": "6001"},
    }


async def eventually(predicate: Callable[[], bool], *, within: float = 30.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what or 'condition'} not reached within {within}s")
        await asyncio.sleep(0.05)


def make_informer(kind: str, *, lean: LeanClient, kube: client.ApiClient, selector: str) -> AnyInformer:
    def handler(_kind: str, _obj: dict[str, Any]) -> None:
        pass

    if kind == "leanwatch":
        return LeanInformer(
            client=lean,
            resource=SERIALDEVICE,
            handler=handler,
            name="gone",
            label_selector=selector,
            resync_seconds=600,
            watch_timeout_seconds=2,
        )
    return Informer(
        list_call=client.CustomObjectsApi(kube).list_cluster_custom_object,
        list_kwargs={
            "group": c.GROUP,
            "version": c.VERSION,
            "plural": c.SERIALDEVICES,
            "label_selector": selector,
        },
        handler=handler,
        name="gone",
        resync_seconds=600,
        watch_timeout_seconds=2,
    )


@pytest.mark.parametrize("kind", ["leanwatch", "watching"])
async def test_a_watch_resumed_from_a_compacted_version_relists_at_once(
    kind: str, plane: ControlPlane, lean: LeanClient, kube: client.ApiClient
) -> None:
    suffix = uuid.uuid4().hex[:6]
    selector = f"gone-test={suffix}"
    watched, noise, later = f"watched-{suffix}", f"noise-{suffix}", f"later-{suffix}"
    await lean.create(SERIALDEVICE, device(watched, {"gone-test": suffix}))
    informer = make_informer(kind, lean=lean, kube=kube, selector=selector)
    apiserver = plane.processes["kube-apiserver"]
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.synced.wait(), 30)
        assert set(informer.cache) == {("", watched)}
        assert (informer.relists, informer.expired, informer.backoffs) == (1, 0, 0)

        # Writes the informer does not watch move etcd's revision past the informer's version...
        await lean.create(SERIALDEVICE, device(noise))
        await lean.delete(SERIALDEVICE, noise)
        # ...and compaction makes that version history: the next resume gets 410 Gone.
        plane.compact_etcd()
        await eventually(lambda: informer.expired >= 1, within=30, what="a 410 Gone")
        await eventually(lambda: informer.relists >= 2, within=10, what="the LIST after 410")
        assert informer.backoffs == 0, "410 Gone must relist at once, without a backoff sleep"
        assert apiserver.poll() is None and plane.processes["kube-apiserver"] is apiserver

        # And the informer watches on from the new LIST.
        await lean.create(SERIALDEVICE, device(later, {"gone-test": suffix}))
        await eventually(lambda: ("", later) in informer.cache, what="a change after the relist")
        assert set(informer.cache) == {("", watched), ("", later)}
        assert informer.backoffs == 0
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for name in (watched, later):
            with contextlib.suppress(NotFound):
                await lean.delete(SERIALDEVICE, name)
