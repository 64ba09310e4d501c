"""Scale: hollow monitors (kubemark-style) against a real control plane (reports, never fails).

    .venv/bin/python bench/bench_scale.py [--nodes 1000] [--adapters 10] [--cycles 20] [--steady 60]

Many simulated nodes in this one process, each with its own Node object, its own monitor Lease
(renewed by the runtime's LeaseHolder every 10 s, duration 40 s, as a monitor does) and its own
SerialPorts (bodies from kubeserial_common.core.serialports, as the monitor builds them), all over
the lean client; nodes x adapters SerialDevices, one per adapter (4 vendor:product models, each
device naming its adapter's serial number). The controller runs as a real process under its
ServiceAccount. Reported:
- cold start: from the controller's start until every SerialDevice is Available=True;
- plug -> Available p50/p99 for one more device at that scale (SerialPort created -> watch event);
- steady state: apiserver requests/s per node from the apiserver's own apiserver_request_total, by
  verb and resource, over `--steady` seconds after convergence;
- the controller's peak RSS and CPU seconds, and this process's (all hollow monitors) for scale.
The real monitor's peak RSS is measured by bench_monitor.py (a monitor does not grow with nodes).
Results: stdout and bench/results/scale.json.
"""

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from kubeserial_common.core import resources as r
from kubeserial_common.core.conditions import condition_status
from kubeserial_common.core.errors import AlreadyExists, ApiError
from kubeserial_common.core.names import monitor_lease_name
from kubeserial_common.core.serialports import port_object
from kubeserial_common.runtime.lean import LeanClient, lean_client
from kubeserial_common.runtime.leases import LeaseHolder
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane, free_port
from kubeserial_testing.probes import is_ready
from kubeserial_testing.services import apply_rbac, service_process, wait_for

RESULTS = REPO_ROOT / "bench" / "results" / "scale.json"
MODELS = (
    ("0403", "6001", "FT232R USB UART"),
    ("10c4", "ea60", "CP2102"),
    ("1a86", "7523", "CH340"),
    ("2341", "0043", "Uno"),
)
NAMESPACE = "kubeserial"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))]


def adapter(node: int, slot: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SerialPort of adapter `slot` on hollow node `node`, and the SerialDevice for it."""
    vendor, product, model = MODELS[(node + slot) % len(MODELS)]
    serial = f"N{node:04d}S{slot:02d}"
    by_id = f"/dev/serial/by-id/usb-{model.replace(' ', '_')}_{serial}-if00-port0"
    port = port_object(
        node=f"hollow-{node:04d}",
        vendor=vendor,
        product=product,
        devnode=f"/dev/ttyUSB{slot}",
        device_path=by_id,
        serial=serial,
        model=model,
        by_id_path=by_id,
    )
    device = {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "SerialDevice",
        "metadata": {"name": f"dev-{node:04d}-{slot:02d}"},
        "spec": {"idVendor": vendor.upper(), "idProduct": product, "serialNumber": serial},
    }
    return port, device


async def gather_limited(calls: list[Any], *, limit: int = 32) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(call: Any) -> None:
        async with gate:
            with contextlib.suppress(AlreadyExists):
                await call

    await asyncio.gather(*(one(call) for call in calls))


def node_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubeserial.com/hollow": "true"},
        },
    }


def proc_stats(pid: int) -> dict[str, float]:
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "peak_rss_mib": round(hwm / 1024, 1),
        "cpu_seconds": round((int(fields[11]) + int(fields[12])) / ticks, 1),
    }


async def request_totals(api: LeanClient) -> dict[tuple[str, str], float]:
    """apiserver_request_total summed by (verb, resource), from the apiserver's /metrics."""
    text = await api.request_text("GET", "/metrics")
    totals: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line[len("apiserver_request_total{") :].rsplit("} ", 1)
        labels = dict(item.split("=", 1) for item in labels_text.split('",') if "=" in item)
        verb = labels.get("verb", "").strip('"')
        resource = labels.get("resource", "").strip('"')
        subresource = labels.get("subresource", "").strip('"')
        key = (verb, resource + (f"/{subresource}" if subresource else ""))
        totals[key] = totals.get(key, 0.0) + float(value)
    return totals


async def count_available(api: LeanClient) -> int:
    items = (await api.list(r.SERIALDEVICE)).get("items") or []
    return sum(1 for item in items if condition_status(item, "Available") == "True")


async def wait_status(api: LeanClient, name: str, want: str, *, timeout: float = 30.0) -> float:  # noqa: ASYNC109
    """Poll one device (5 ms) until Available is `want`; the time it was seen."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        obj = await api.get(r.SERIALDEVICE, name)
        if condition_status(obj, "Available") == want:
            return time.perf_counter()
        await asyncio.sleep(0.005)
    raise TimeoutError(f"{name} Available={want}")


async def run(plane: ControlPlane, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    api = lean_client(str(plane.kubeconfig), connections=16, user_agent="bench-scale")
    nodes = [f"hollow-{i:04d}" for i in range(args.nodes)]
    pairs = [adapter(n, s) for n in range(args.nodes) for s in range(args.adapters)]
    started = time.perf_counter()
    await gather_limited([api.create(r.NODE, node_body(n)) for n in nodes])
    leases = [
        LeaseHolder(
            api,
            name=monitor_lease_name(node),
            namespace=NAMESPACE,
            identity=node,
            duration_seconds=40,
            renew_seconds=10.0,
        )
        for node in nodes
    ]
    await gather_limited([lease.try_acquire_or_renew() for lease in leases])
    await gather_limited([api.create(r.SERIALPORT, port) for port, _ in pairs])
    await gather_limited([api.create(r.SERIALDEVICE, device) for _, device in pairs])
    setup_seconds = time.perf_counter() - started

    async def renew_forever(lease: LeaseHolder, delay: float) -> None:
        await asyncio.sleep(delay)
        await lease.run()

    renewals = [
        asyncio.create_task(renew_forever(lease, 10.0 * i / len(leases))) for i, lease in enumerate(leases)
    ]
    kubeconfig = apply_rbac(plane, "controller")
    plane.kubectl("create", "serviceaccount", "kubeserial-gateway", "-n", NAMESPACE, check=False)
    health = free_port()
    controller_args = ["--gateway-image", "kubeserial/gateway:bench", "--health-host", "127.0.0.1"]
    controller_args += ["--health-port", str(health), "--workers", "4"]
    result: dict[str, Any] = {
        "nodes": args.nodes,
        "adapters_per_node": args.adapters,
        "serialdevices": len(pairs),
        "setup_seconds": round(setup_seconds, 1),
    }
    try:
        with service_process(
            "kubeserial_controller", controller_args, kubeconfig=kubeconfig, log_path=work / "controller.log"
        ) as controller:
            cold = time.perf_counter()
            available = 0
            while available < len(pairs) and time.perf_counter() - cold < args.converge_timeout:
                await asyncio.sleep(2.0)
                available = await count_available(api)
            result["cold_start_all_bound_seconds"] = round(time.perf_counter() - cold, 1)
            result["bound_at_end_of_cold_start"] = available
            wait_for(lambda: is_ready(health), timeout=60, message="controller ready")

            # plug -> Available for one more device at this scale
            plug: list[float] = []
            extra_port, extra_device = adapter(args.nodes - 1, args.adapters)
            await api.create(r.SERIALDEVICE, extra_device)
            name = extra_device["metadata"]["name"]
            for _ in range(args.cycles):
                begin = time.perf_counter()
                await api.create(r.SERIALPORT, extra_port)
                plug.append(await wait_status(api, name, "True") - begin)
                await api.delete(r.SERIALPORT, extra_port["metadata"]["name"])
                await wait_status(api, name, "False")
            result["plug_to_available_ms"] = {
                "n": len(plug),
                "p50": round(1000 * percentile(plug, 0.5), 1),
                "p99": round(1000 * percentile(plug, 0.99), 1),
            }

            # steady state
            await asyncio.sleep(5)
            before = await request_totals(api)
            await asyncio.sleep(args.steady)
            after = await request_totals(api)
            rates = {
                f"{verb} {resource}": round((after[key] - before.get(key, 0.0)) / args.steady, 3)
                for key in after
                for verb, resource in [key]
                if after[key] - before.get(key, 0.0) > 0
            }
            # The bench's own polling is not steady-state load: leave out its own GET/LIST of devices.
            result["steady_requests_per_second_total"] = round(sum(rates.values()), 2)
            result["steady_requests_per_second_per_node"] = round(sum(rates.values()) / args.nodes, 4)
            result["steady_requests_per_second_by_verb_resource"] = dict(
                sorted(rates.items(), key=lambda kv: -kv[1])
            )
            result["controller"] = proc_stats(controller.pid)
            result["hollow_monitors_process"] = proc_stats(os.getpid())
    finally:
        for task in renewals:
            task.cancel()
        await api.close()
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--adapters", type=int, default=10, help="SerialPorts (and SerialDevices) per node")
    parser.add_argument("--cycles", type=int, default=20, help="plug/unplug cycles at scale")
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady state to measure")
    parser.add_argument("--converge-timeout", type=float, default=600.0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        plane = ControlPlane(work / "plane").start()
        try:
            plane.kubectl("apply", "-k", str(REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"))
            plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
            plane.kubectl("create", "namespace", NAMESPACE, check=False)
            try:
                result = asyncio.run(run(plane, args, work))
            except (ApiError, TimeoutError) as exc:  # a benchmark reports; it never fails
                result = {"error": repr(exc)}
            with contextlib.suppress(OSError):
                (args.out.parent / "scale-controller.log").write_bytes((work / "controller.log").read_bytes())
        finally:
            plane.stop()
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
