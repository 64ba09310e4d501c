"""Plug-to-Available latency on a real apiserver (a benchmark: it reports, never fails).

    .venv/bin/python bench/bench_monitor.py [--cycles 60] [--unrelated 1000]

Starts its own control plane (etcd + kube-apiserver & co.), the monitor and the controller as
processes with their ServiceAccounts, `--unrelated` SerialDevices that match nothing plugged in
(the issue-13 case: they used to make every monitor reconcile quadratic), and a umockdev testbed.
Each cycle plugs the simulated FTDI adapter and times how long until a watch on the SerialDevice
shows Available=True (then the same for unplug -> Available=False). The clock starts before the plug
command goes to the testbed driver and stops when the watch event arrives, so it includes udev
delivery, the monitor's SerialPort write, the controller's binding and the watch fan-out.
The monitor's own histogram (udev event -> SerialPort written) is reported next to it.
Results: stdout and bench/results/monitor.json.
"""

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes_asyncio import client, watch

from kubeserial_common.core import constants as c
from kubeserial_common.core.conditions import condition_status
from kubeserial_common.runtime.kube import api_client
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane, free_port
from kubeserial_testing.probes import http_get, is_ready
from kubeserial_testing.services import apply_rbac, service_process, wait_for
from kubeserial_testing.umockdev import SimulatedUsb, UsbAdapter
from stats import latency_summary

NODE = "node-a"
RESULTS = REPO_ROOT / "bench" / "results" / "monitor.json"


class AvailabilityWatch:
    """Watches one SerialDevice and timestamps each change of its Available status."""

    def __init__(self, api: client.ApiClient, name: str) -> None:
        self.api = api
        self.name = name
        self.status: str | None = None
        self.changed_at = 0.0
        self.changed = asyncio.Condition()

    async def run(self) -> None:
        custom = client.CustomObjectsApi(self.api)
        while True:
            stream = watch.Watch()
            async with stream.stream(
                custom.list_cluster_custom_object,
                c.GROUP,
                c.VERSION,
                c.SERIALDEVICES,
                field_selector=f"metadata.name={self.name}",
                timeout_seconds=300,
            ) as events:
                async for event in events:
                    now = time.perf_counter()
                    status = condition_status(event["raw_object"], c.AVAILABLE)
                    if status != self.status:
                        async with self.changed:
                            self.status, self.changed_at = status, now
                            self.changed.notify_all()

    async def until(self, status: str) -> float:
        async with asyncio.timeout(10), self.changed:
            await self.changed.wait_for(lambda: self.status == status)
            return self.changed_at


def scrape(port: int) -> dict[str, float]:
    text = http_get(port, "/metrics")[1]
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(
            ("kubeserial_monitor_plug_to_port_seconds", "kubeserial_monitor_serialport_writes")
        ):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


def histogram_quantile(samples: dict[str, float], fraction: float) -> float | None:
    """Upper bound of the bucket holding the quantile (what Prometheus would interpolate within)."""
    prefix = 'kubeserial_monitor_plug_to_port_seconds_bucket{le="'
    buckets = sorted(
        (float("inf") if k[len(prefix) : -2] == "+Inf" else float(k[len(prefix) : -2]), v)
        for k, v in samples.items()
        if k.startswith(prefix)
    )
    total = buckets[-1][1] if buckets else 0
    for bound, count in buckets:
        if total and count >= fraction * total:
            return bound
    return None


def create_unrelated(plane: ControlPlane, count: int) -> None:
    """`count` SerialDevices (CP210x, each with its own serial number) that nothing plugged in matches."""
    for start in range(0, count, 500):
        items = [
            {
                "apiVersion": c.API_VERSION,
                "kind": "SerialDevice",
                "metadata": {"name": f"unrelated-{i:05d}"},
                "spec": {"idVendor": "10c4", "idProduct": "ea60", "serialNumber": f"U{i:05d}"},
            }
            for i in range(start, min(count, start + 500))
        ]
        plane.kubectl(
            "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
        )


async def measure(
    plane: ControlPlane, usb: SimulatedUsb, *, cycles: int, unrelated: int, work: Path
) -> dict[str, Any]:
    name = f"bench-{uuid.uuid4().hex[:6]}"
    create_unrelated(plane, unrelated)
    adapter = UsbAdapter(serial="BENCH0001")
    plane.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps(
            {
                "apiVersion": c.API_VERSION,
                "kind": "SerialDevice",
                "metadata": {"name": name},
                "spec": {"idVendor": "0403", "idProduct": "6001", "serialNumber": adapter.serial},
            }
        ),
    )
    kubeconfig = apply_rbac(plane, "monitor")
    controller_kubeconfig = apply_rbac(plane, "controller")
    plane.kubectl("create", "serviceaccount", "kubeserial-gateway", "-n", "kubeserial", check=False)
    controller_port = free_port()
    controller_args = [
        "--gateway-image",
        "kubeserial/gateway:bench",
        "--health-host",
        "127.0.0.1",
        "--health-port",
        str(controller_port),
    ]
    port = free_port()
    args = ["--node-name", NODE, "--health-host", "127.0.0.1", "--health-port", str(port)]
    plug: list[float] = []
    unplug: list[float] = []
    with (
        service_process(
            "kubeserial_controller",
            controller_args,
            kubeconfig=controller_kubeconfig,
            log_path=work / "controller.log",
        ) as controller,
        service_process(
            "kubeserial_monitor", args, kubeconfig=kubeconfig, log_path=work / "monitor.log", env=usb.env
        ) as proc,
    ):
        wait_for(lambda: is_ready(port), timeout=30, message="monitor ready")
        wait_for(lambda: is_ready(controller_port), timeout=60, message="controller ready")
        async with api_client(str(plane.kubeconfig)) as api:
            watcher = AvailabilityWatch(api, name)
            task = asyncio.create_task(watcher.run())
            try:
                for _ in range(cycles):
                    started = time.perf_counter()
                    await asyncio.to_thread(usb.plug, adapter)
                    plug.append(await watcher.until("True") - started)
                    started = time.perf_counter()
                    await asyncio.to_thread(usb.unplug, adapter)
                    unplug.append(await watcher.until("False") - started)
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        internal = scrape(port)
        peak_rss_mib = peak_rss_kib(proc.pid) / 1024
        controller_rss_mib = peak_rss_kib(controller.pid) / 1024
        (RESULTS.parent / "monitor.log").write_bytes((work / "monitor.log").read_bytes())
    plane.kubectl("delete", "serialdevice", name, "--wait=false")
    return {
        "cycles": cycles,
        "plug_to_available_true": latency_summary(plug),
        "unplug_to_available_false": latency_summary(unplug),
        "monitor_histogram": {
            "count": internal.get("kubeserial_monitor_plug_to_port_seconds_count"),
            "mean_ms": round(
                1000
                * internal.get("kubeserial_monitor_plug_to_port_seconds_sum", 0.0)
                / max(1.0, internal.get("kubeserial_monitor_plug_to_port_seconds_count", 1.0)),
                2,
            ),
            "p50_bucket_le_s": histogram_quantile(internal, 0.50),
            "p99_bucket_le_s": histogram_quantile(internal, 0.99),
        },
        "serialport_writes": {
            k: v for k, v in internal.items() if k.startswith("kubeserial_monitor_serialport_writes_total")
        },
        "unrelated_serialdevices": unrelated,
        "monitor_peak_rss_mib": round(peak_rss_mib, 1),
        "controller_peak_rss_mib": round(controller_rss_mib, 1),
    }


def peak_rss_kib(pid: int) -> int:
    """VmHWM: the most resident memory the process has had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cycles", type=int, default=60, help="plug/unplug cycles (default 60)")
    parser.add_argument(
        "--unrelated", type=int, default=1000, help="SerialDevices that match nothing (default 1000)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"JSON results (default {RESULTS})")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        work = Path(tmp)
        plane = ControlPlane(work / "plane").start()
        try:
            plane.kubectl("apply", "-k", str(REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"))
            plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
            plane.register_node(NODE)
            with SimulatedUsb(work / "usb") as usb:
                result = asyncio.run(
                    measure(plane, usb, cycles=args.cycles, unrelated=args.unrelated, work=work)
                )
        finally:
            plane.stop()
    # Issue 13: p99 <= 100 ms for one device alone, <= 200 ms among many SerialDevices.
    result["target"] = f"p99 plug-to-Available=True <= {100 if args.unrelated == 0 else 200} ms"
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
