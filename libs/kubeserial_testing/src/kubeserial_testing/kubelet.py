"""A stand-in kubelet for the e2e tests: it runs the pods bound to one simulated node as local
processes and reports their status, so Deployments become available for real.

Only what the tests need: each container is mapped by a caller-supplied `launcher` to a command
line and environment (or None to ignore it); a pod whose containers all run is reported Running
and Ready through the pods/status subresource; a deleted pod has its processes stopped.
"""

import asyncio
import contextlib
import functools
import os
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from kubernetes_asyncio import client

from kubeserial_common.core.conditions import now_rfc3339
from kubeserial_common.runtime.watching import Informer
from kubeserial_testing.services import stop_process

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]


# (pod, container) -> how to run it here, or None when this container is not simulated.
Launcher = Callable[[dict[str, Any], dict[str, Any]], Launch | None]


def pod_containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    """Regular containers plus native sidecars (init containers that keep running)."""
    spec = pod.get("spec", {})
    sidecars = [c for c in spec.get("initContainers", []) if c.get("restartPolicy") == "Always"]
    return sidecars + list(spec.get("containers", []))


def running_pod_status(container_names: list[str], *, now: str) -> dict[str, Any]:
    """A pod status a kubelet reports once these containers run: phase Running, Ready True."""
    return {
        "phase": "Running",
        "hostIP": "127.0.0.1",
        "podIP": "127.0.0.1",
        "startTime": now,
        "conditions": [
            {"type": t, "status": "True", "lastTransitionTime": now}
            for t in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
        ],
        "containerStatuses": [
            {
                "name": name,
                "ready": True,
                "started": True,
                "restartCount": 0,
                "image": "simulated",
                "imageID": "simulated",
                "state": {"running": {"startedAt": now}},
            }
            for name in container_names
        ],
    }


@dataclass
class SimulatedKubelet:
    api: client.ApiClient
    node: str
    launcher: Launcher
    log_dir: Path
    processes: dict[str, list[subprocess.Popen[bytes]]] = field(default_factory=dict)
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _launches: dict[str, list[tuple[dict[str, Any], dict[str, Any], Launch]]] = field(default_factory=dict)
    restarts: int = 0
    _informer: Informer | None = None

    async def start(self) -> None:
        core = client.CoreV1Api(self.api)
        self._informer = Informer(
            list_call=core.list_pod_for_all_namespaces,
            list_kwargs={"field_selector": f"spec.nodeName={self.node}"},
            handler=lambda _type, _obj: self._changed.set(),
            name=f"kubelet-{self.node}",
            resync_seconds=30,
        )
        self._task = asyncio.create_task(self._run(core))
        await asyncio.wait_for(self._informer.synced.wait(), timeout=30)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for procs in self.processes.values():
            for proc in procs:
                await asyncio.to_thread(stop_process, proc)
        self.processes.clear()

    async def _run(self, core: client.CoreV1Api) -> None:
        assert self._informer is not None
        informer_task = asyncio.create_task(self._informer.run())
        try:
            while True:
                # Wake on pod changes, and twice a second to restart exited containers.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), timeout=0.5)
                self._changed.clear()
                try:
                    await self._sync(core)
                    self._restart_exited()
                except Exception as exc:  # a kubelet keeps going; the next pass repairs it
                    log.warning("pod sync failed", node=self.node, error=repr(exc))
        finally:
            informer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await informer_task

    async def _sync(self, core: client.CoreV1Api) -> None:
        assert self._informer is not None
        wanted = {
            pod["metadata"]["uid"]: pod
            for pod in self._informer.cache.values()
            if not pod["metadata"].get("deletionTimestamp")
        }
        for uid in list(self.processes):
            if uid not in wanted:
                self._launches.pop(uid, None)
                for proc in self.processes.pop(uid):
                    await asyncio.to_thread(stop_process, proc)
                log.info("stopped pod", node=self.node, uid=uid)
        # A kubelet finishes graceful deletions once the containers are gone; without that step
        # the pod object would stay Terminating forever.
        for pod in list(self._informer.cache.values()):  # a copy: the informer updates it meanwhile
            meta = pod["metadata"]
            if meta.get("deletionTimestamp") and meta["uid"] not in self.processes:
                try:
                    await core.delete_namespaced_pod(
                        meta["name"],
                        meta["namespace"],
                        grace_period_seconds=0,
                        body={"preconditions": {"uid": meta["uid"]}},
                    )
                except Exception as exc:  # gone already, or replaced by a pod of the same name
                    log.debug("could not finish pod deletion", pod=meta["name"], error=repr(exc))
        for uid, pod in wanted.items():
            if uid in self.processes:
                continue
            launches = [(c, self.launcher(pod, c)) for c in pod_containers(pod)]
            runnable = [(c, launch) for c, launch in launches if launch is not None]
            if not runnable:
                continue
            self.processes[uid] = [self._spawn(pod, c, launch) for c, launch in runnable]
            self._launches[uid] = [(pod, c, launch) for c, launch in runnable]
            await self._report_running(core, pod, [c["name"] for c, _ in runnable])

    def _restart_exited(self) -> None:
        """restartPolicy Always, as a kubelet does for Deployment pods and native sidecars."""
        for uid, procs in self.processes.items():
            for index, proc in enumerate(procs):
                if proc.poll() is not None:
                    pod, container, launch = self._launches[uid][index]
                    log.info(
                        "restarting container",
                        node=self.node,
                        container=container["name"],
                        code=proc.returncode,
                    )
                    procs[index] = self._spawn(pod, container, launch)
                    self.restarts += 1

    def _spawn(
        self, pod: dict[str, Any], container: dict[str, Any], launch: Launch
    ) -> subprocess.Popen[bytes]:
        name = f"{pod['metadata']['name']}-{container['name']}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{self.node}-{name}.log", "ab") as log_file:
            proc = subprocess.Popen(
                launch.argv,
                env={**os.environ, **launch.env},
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        log.info(
            "started container", node=self.node, pod=pod["metadata"]["name"], container=container["name"]
        )
        return proc

    async def _report_running(self, core: client.CoreV1Api, pod: dict[str, Any], names: list[str]) -> None:
        status = {"status": running_pod_status(names, now=now_rfc3339())}
        meta = pod["metadata"]
        patch = functools.partial(
            core.patch_namespaced_pod_status,
            meta["name"],
            meta["namespace"],
            status,
            _content_type="application/merge-patch+json",
        )
        try:
            await patch()
        except Exception as exc:  # the pod may be gone already
            log.warning("could not report pod status", pod=meta["name"], error=repr(exc))
