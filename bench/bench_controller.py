"""Convergence time of the controller for many SerialDevices, and its peak memory (a benchmark: it
reports, never fails).

    .venv/bin/python bench/bench_controller.py [--devices 1000] [--concurrency 16] [--workers 4]

Starts its own control plane (etcd + kube-apiserver; --with-controller-manager adds
kube-controller-manager and kube-scheduler, which then also create ReplicaSets and Pods for every
gateway), the controller as a process under its own ServiceAccount, and a monitor Lease for one
simulated node. Then it creates N SerialDevices, writes Available=True on each as a monitor would,
and watches until all N gateway Deployments (and Services) exist. Times: create start -> all gateways,
last claim -> all gateways. Memory: the controller's VmHWM (peak RSS) from /proc after convergence.
Results: a table on stdout and bench/results/controller.json.
"""

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client

from kubeserial_common.core import constants as c
from kubeserial_common.core.names import gateway_name
from kubeserial_common.runtime.kube import CustomObjects, api_client
from kubeserial_common.runtime.watching import Informer, run_informers
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane
from kubeserial_testing.objects import monitor_lease, monitor_status, serial_device
from kubeserial_testing.probes import RunningService, running_service
from kubeserial_testing.services import NAMESPACE, apply_rbac, wait_for
from memref import python_floor_mib

RESULTS = REPO_ROOT / "bench" / "results" / "controller.json"
NODE = "bench-node"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (now) and VmHWM (peak) of a process, in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line
    )
    return {key: int(fields[key].split()[0]) for key in ("VmRSS", "VmHWM")}


async def bounded(concurrency: int, calls: list[Any]) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one(call: Any) -> None:
        async with gate:
            await call()

    await asyncio.gather(*(one(call) for call in calls))


async def converge(api: client.ApiClient, *, devices: int, concurrency: int) -> dict[str, float]:
    objects = CustomObjects(api)
    names = [f"bench-{i:05d}" for i in range(devices)]
    wanted = {gateway_name(name) for name in names}
    seen: dict[str, set[str]] = {"Deployment": set(), "Service": set()}
    done = asyncio.Event()
    finished_at: dict[str, float] = {}

    def handler(kind: str, event_type: str, obj: dict[str, Any]) -> None:
        name = obj["metadata"]["name"]
        if event_type != "DELETED" and name in wanted:
            seen[kind].add(name)
            if len(seen[kind]) == len(wanted) and kind not in finished_at:
                finished_at[kind] = time.perf_counter()
                if len(finished_at) == len(seen):
                    done.set()

    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    watches = asyncio.create_task(
        run_informers(
            Informer(
                partial(apps.list_namespaced_deployment, NAMESPACE),
                partial(handler, "Deployment"),
                "bench-deployments",
            ),
            Informer(
                partial(core.list_namespaced_service, NAMESPACE),
                partial(handler, "Service"),
                "bench-services",
            ),
        )
    )
    try:
        started = time.perf_counter()
        await bounded(
            concurrency, [partial(objects.create, c.SERIALDEVICES, serial_device(name)) for name in names]
        )
        created = time.perf_counter()

        async def claim(name: str) -> None:
            current = await objects.get(c.SERIALDEVICES, name)
            body = {"status": monitor_status(current, node=NODE, available=True)}
            await objects.patch_status(c.SERIALDEVICES, name, body)

        await bounded(concurrency, [partial(claim, name) for name in names])
        claimed = time.perf_counter()
        await asyncio.wait_for(done.wait(), timeout=1800)
        converged = max(finished_at.values())
    finally:
        watches.cancel()
    return {
        "create_s": round(created - started, 2),
        "claim_s": round(claimed - created, 2),
        "create_start_to_all_gateways_s": round(converged - started, 2),
        "last_claim_to_all_gateways_s": round(converged - claimed, 2),
        "gateways_per_s_after_create_start": round(devices / (converged - started), 1),
    }


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    plane = ControlPlane(
        work / "plane",
        with_controller_manager=args.with_controller_manager,
        with_scheduler=args.with_controller_manager,
    ).start()
    try:
        plane.kubectl("apply", "-k", str(REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"))
        plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        kubeconfig = apply_rbac(plane, "controller")
        plane.kubectl("apply", "-f", "-", input=json.dumps(monitor_lease(NODE, duration=36000)))
        log_path = work / "controller.log"
        controller_args = ["--workers", str(args.workers), "--log-level", "warning"]
        with running_service(
            "kubeserial_controller", controller_args, kubeconfig=kubeconfig, log_path=log_path
        ) as svc:
            wait_for(lambda: svc.metric("kubeserial_controller_leader") == 1.0, timeout=60, message="leader")
            idle = memory_kib(svc.proc.pid)
            pids = {"controller": svc.proc.pid, "kube-apiserver": plane.processes["kube-apiserver"].pid}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            async with api_client(str(plane.kubeconfig)) as api:
                times = await converge(api, devices=args.devices, concurrency=args.concurrency)
            cpu = {
                f"{name}_cpu_s": round(cpu_seconds(pid) - cpu_before[name], 1) for name, pid in pids.items()
            }
            await asyncio.sleep(1)  # let the tail of the work (Ready writes, Events) finish
            peak = memory_kib(svc.proc.pid)
            counters = reconcile_counts(svc)
        (RESULTS.parent / "controller.log").write_bytes(log_path.read_bytes())
    finally:
        plane.stop()
    return {
        "devices": args.devices,
        "workers": args.workers,
        "client_concurrency": args.concurrency,
        "with_controller_manager": args.with_controller_manager,
        **times,
        **cpu,
        "controller_rss_idle_mib": round(idle["VmRSS"] / 1024, 1),
        "controller_peak_rss_mib": round(peak["VmHWM"] / 1024, 1),
        "python_floor_mib": python_floor_mib(),
        "reconciles": counters,
        "machine": {"python": platform.python_version(), "cpus": len(os.sched_getaffinity(0))},
    }


def reconcile_counts(svc: RunningService) -> dict[str, float]:
    counts = {}
    for kind in ("KubeSerial", "SerialDevice", "ManagerScheduleRequest", "Node"):
        for result in ("success", "error"):
            value = svc.metric("kubeserial_controller_reconciles_total", kind=kind, result=result)
            if value:
                counts[f"{kind}/{result}"] = value
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=1000, help="SerialDevices to create (1000)")
    parser.add_argument(
        "--concurrency", type=int, default=16, help="API calls the benchmark keeps in flight (16)"
    )
    parser.add_argument("--workers", type=int, default=4, help="controller --workers (4)")
    parser.add_argument(
        "--with-controller-manager",
        action="store_true",
        help="also run kube-controller-manager and kube-scheduler (ReplicaSets and Pods for every gateway)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-controller-") as tmp:
        result = asyncio.run(run(args, Path(tmp)))
    width = max(len(key) for key in result)
    for key, value in result.items():
        print(f"{key:<{width}}  {value}")
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
