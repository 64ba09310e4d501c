"""Scale: hollow monitors (kubemark-style) against a real control plane (reports, never fails).

    .venv/bin/python bench/bench_scale.py [--nodes 1000] [--adapters 10] [--cycles 30] [--steady 60]

What runs:
- a real control plane (etcd, kube-apiserver) without kube-controller-manager and scheduler: the
  controller makes a gateway Deployment per Available device, and 10,000 gateway pods with no
  kubelet to run them would measure the Deployment controller and the scheduler, not KubeSerial;
- `--nodes` hollow nodes in this one process, each with its Node object, its monitor Lease (renewed
  by the runtime's LeaseHolder every 10 s, duration 40 s, as a monitor does) and `--adapters`
  SerialPorts (bodies from kubeserial_common.core.serialports, as the monitor builds them); one
  SerialDevice per hollow adapter (4 vendor:product models, each naming its adapter's serial);
- one real node: the real monitor process with a umockdev testbed (a simulated FTDI adapter that
  the benchmark plugs and unplugs) and one SerialDevice for that adapter;
- the real controller process under its ServiceAccount, started once everything above exists.

Reported (bench/results/scale.json):
- cold start: from the controller's start until every SerialDevice is Available=True, and the
  binding rate (bound devices/s over the cold start); then until the controller is idle (the
  apiserver serves no write but Lease renewals for 10 s: every gateway made);
- plug -> Available p50/p99 for the real adapter at that scale (the clock starts before the plug
  command reaches the testbed and stops when this process's watch shows Available=True), and
  unplug -> Available=False;
- steady state (after the plug cycles, once idle again): apiserver requests/s per node over
  `--steady` seconds, from the apiserver's own
  apiserver_request_total by verb and resource (this process sends none then: it only watches), and
  every LIST the apiserver served after start (after the cold start converged, through the plug
  cycles and the steady window), by resource;
- peak RSS and CPU seconds of the controller, of the real monitor, of this process (all hollow
  monitors; for scale only), of kube-apiserver and etcd; CPU during the steady window.

If a size does not converge within --converge-timeout, the numbers it reached are reported as
they are, with `converged: false`. Smaller sizes: --nodes 100 --adapters 10.
"""

import argparse
import asyncio
import contextlib
import json
import os
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from kubeserial_common.core import resources as r
from kubeserial_common.core.conditions import condition_status
from kubeserial_common.core.errors import AlreadyExists
from kubeserial_common.core.names import monitor_lease_name
from kubeserial_common.core.serialports import port_object
from kubeserial_common.runtime.lean import LeanClient, lean_client
from kubeserial_common.runtime.leanwatch import LeanInformer
from kubeserial_common.runtime.leases import LeaseHolder
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane, free_port
from kubeserial_testing.probes import http_get, is_ready
from kubeserial_testing.services import apply_rbac, service_process, wait_for
from kubeserial_testing.umockdev import SimulatedUsb, UsbAdapter
from stats import latency_summary

RESULTS = REPO_ROOT / "bench" / "results" / "scale.json"
MODELS = (
    ("0403", "6001", "FT232R USB UART"),
    ("10c4", "ea60", "CP2102"),
    ("1a86", "7523", "CH340"),
    ("2341", "0043", "Uno"),
)
NAMESPACE = "kubeserial"
REAL_NODE = "real-node"
REAL_DEVICE = "real-ftdi"
REAL_ADAPTER = UsbAdapter(serial="SCALE0001")


def hollow_adapter(node: int, slot: int) -> tuple[dict[str, Any], dict[str, Any]]:
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


def node_body(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {"kubernetes.io/hostname": name, "kubeserial.com/hollow": "true"},
        },
    }


async def gather_limited(calls: list[Awaitable[Any]], *, limit: int = 32) -> None:
    gate = asyncio.Semaphore(limit)

    async def one(call: Awaitable[Any]) -> None:
        async with gate:
            with contextlib.suppress(AlreadyExists):
                await call

    await asyncio.gather(*(one(call) for call in calls))


def proc_stats(pid: int) -> dict[str, float]:
    """Peak RSS (VmHWM) and CPU seconds (user + system) of a live process."""
    status = Path(f"/proc/{pid}/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "peak_rss_mib": round(hwm / 1024, 1),
        "cpu_seconds": round((int(fields[11]) + int(fields[12])) / ticks, 2),
    }


def controller_metric(health_port: int, name: str) -> float | None:
    """One unlabelled sample of the controller's own /metrics."""
    _, body = http_get(health_port, "/metrics")
    for line in body.splitlines():
        if line.startswith(f"{name} "):
            return float(line.rsplit(" ", 1)[1])
    return None


def binding_reconcile_mean_ms(health_port: int) -> float | None:
    """The controller's mean Binding reconcile time so far, from its own /metrics (sum / count)."""
    _, body = http_get(health_port, "/metrics")
    prefix = 'kubeserial_controller_reconcile_duration_seconds_{}{{kind="Binding"}} '
    values = {}
    for line in body.splitlines():
        for part in ("sum", "count"):
            if line.startswith(prefix.format(part)):
                values[part] = float(line.rsplit(" ", 1)[1])
    if not values.get("count"):
        return None
    return round(1000 * values["sum"] / values["count"], 1)


def machine_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine so far, from /proc/stat."""
    # user nice system idle iowait irq softirq steal (guest time is already in user)
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return sum(values) - idle, sum(values)


def parse_request_totals(text: str) -> dict[tuple[str, str], float]:
    """apiserver_request_total summed by (verb, resource[/subresource]), with the code appended to
    the resource when it is not 2xx (a 409 is a retried write); non-resource URLs left out."""
    totals: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line[len("apiserver_request_total{") :].rsplit("} ", 1)
        labels = {
            key: raw.strip('"') for key, _, raw in (item.partition("=") for item in labels_text.split('",'))
        }
        resource = labels.get("resource", "")
        if not resource:
            continue
        subresource = labels.get("subresource", "")
        code = labels.get("code", "200")
        failed = "" if code.startswith("2") else f" {code}"
        key = (labels.get("verb", ""), resource + (f"/{subresource}" if subresource else "") + failed)
        totals[key] = totals.get(key, 0.0) + float(value)
    return totals


async def request_totals(api: LeanClient) -> dict[tuple[str, str], float]:
    return parse_request_totals(await api.request_text("GET", "/metrics"))


def delta(after: dict[tuple[str, str], float], before: dict[tuple[str, str], float]) -> dict[str, float]:
    return {
        f"{verb} {resource}": after[key] - before.get(key, 0.0)
        for key in sorted(after)
        for verb, resource in [key]
        if after[key] - before.get(key, 0.0) > 0
    }


WRITES = ("POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION")


async def until_quiet(api: LeanClient, *, timeout: float, window: float = 10.0) -> tuple[bool, float]:  # noqa: ASYNC109
    """Until `window` seconds pass in which the apiserver served no write but Lease renewals (the
    steady state of a cluster where nothing is plugged or unplugged). (quiet?, seconds waited)"""
    began = time.perf_counter()
    last = await request_totals(api)
    while time.perf_counter() - began < timeout:
        await asyncio.sleep(window)
        now = await request_totals(api)
        writes = [k for k in delta(now, last) if k.split()[0] in WRITES and k != "PUT leases"]
        if not writes:
            return True, time.perf_counter() - began
        last = now
    return False, time.perf_counter() - began


PROFILE = RESULTS.with_name("scale-apiserver-cpu.pprof")


async def profile_apiserver(api: LeanClient, seconds: float) -> str:
    """kube-apiserver's own CPU profile (its /debug/pprof) from the controller's start, for `go tool
    pprof -top`: where the apiserver's time goes while binding."""
    path = f"/debug/pprof/profile?seconds={int(seconds)}"
    PROFILE.parent.mkdir(parents=True, exist_ok=True)
    PROFILE.write_bytes(await api.request_bytes("GET", path, timeout=seconds + 30))
    return str(PROFILE)


class Availability:
    """This process's watch on SerialDevices: which are Available=True, and when one changed."""

    def __init__(self) -> None:
        self.available: set[str] = set()
        self.changed = asyncio.Condition()
        self.changed_at: dict[str, float] = {}
        self.lost: dict[str, int] = {}  # Available True -> not True, by device (flaps, at scale)

    def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        name = str(obj["metadata"]["name"])
        now = time.perf_counter()
        was = name in self.available
        if event_type != "DELETED" and condition_status(obj, "Available") == "True":
            self.available.add(name)
        else:
            self.available.discard(name)
        if was != (name in self.available):
            self.changed_at[name] = now
            if was:
                self.lost[name] = self.lost.get(name, 0) + 1
            asyncio.get_running_loop().create_task(self._notify())

    async def _notify(self) -> None:
        async with self.changed:
            self.changed.notify_all()

    async def until(self, name: str, *, available: bool, timeout: float = 30.0) -> float:  # noqa: ASYNC109
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: (name in self.available) == available)
        return self.changed_at.get(name, time.perf_counter())


async def run(
    plane: ControlPlane, usb: SimulatedUsb, args: argparse.Namespace, work: Path, result: dict[str, Any]
) -> None:
    """Fills `result` as it goes: what was measured before a failure is still reported."""
    # Real monitors have a connection each; one per 8 hollow nodes keeps this process's own queue
    # for a connection from timing out lease renewals (15 s) when the apiserver is slow.
    connections = min(128, max(16, args.nodes // 8))
    api = lean_client(str(plane.kubeconfig), connections=connections, user_agent="bench-scale")
    nodes = [f"hollow-{i:04d}" for i in range(args.nodes)]
    pairs = [hollow_adapter(n, s) for n in range(args.nodes) for s in range(args.adapters)]
    result |= {
        "nodes": args.nodes + 1,
        "hollow_nodes": args.nodes,
        "adapters_per_hollow_node": args.adapters,
        "serialdevices": len(pairs) + 1,
        "controller_manager": False,
        "cpus": os.cpu_count(),
        "load_average_at_start": os.getloadavg(),
    }

    def plane_cpu(name: str) -> float:
        proc = plane.processes.get(name)
        return proc_stats(proc.pid)["cpu_seconds"] if proc is not None and proc.poll() is None else 0.0

    def cpu_seconds_by_process(controller_pid: int) -> dict[str, float]:
        seconds = {name: plane_cpu(name) for name in ("kube-apiserver", "etcd")}
        seconds["controller"] = proc_stats(controller_pid)["cpu_seconds"]
        seconds["hollow_monitors_process"] = proc_stats(os.getpid())["cpu_seconds"]
        return seconds

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
    await api.create(
        r.SERIALDEVICE,
        {
            "apiVersion": "app.kubeserial.com/v1alpha1",
            "kind": "SerialDevice",
            "metadata": {"name": REAL_DEVICE},
            "spec": {"idVendor": "0403", "idProduct": "6001", "serialNumber": REAL_ADAPTER.serial},
        },
    )
    result["setup_seconds"] = round(time.perf_counter() - started, 1)

    async def renew_forever(lease: LeaseHolder, delay: float) -> None:
        await asyncio.sleep(delay)  # spread the renewals over the period, as independent nodes are
        await lease.run()

    renewals = [
        asyncio.create_task(renew_forever(lease, 10.0 * i / len(leases))) for i, lease in enumerate(leases)
    ]
    availability = Availability()
    watch = LeanInformer(
        client=api,
        resource=r.SERIALDEVICE,
        handler=availability.on_event,
        name="bench",
        resync_seconds=10.0**7,  # this process lists once: every later LIST is someone else's
    )
    watching = asyncio.create_task(watch.run())
    await watch.synced.wait()

    controller_kubeconfig = apply_rbac(plane, "controller")
    monitor_kubeconfig = apply_rbac(plane, "monitor")
    plane.kubectl("create", "serviceaccount", "kubeserial-gateway", "-n", NAMESPACE, check=False)
    controller_health, monitor_health = free_port(), free_port()
    controller_args = ["--gateway-image", "kubeserial/gateway:bench", "--health-host", "127.0.0.1"]
    controller_args += ["--health-port", str(controller_health)]
    if args.controller_resync is not None:  # default: the controller's own (300 s)
        controller_args += ["--resync-seconds", str(args.controller_resync)]
    monitor_args = ["--node-name", REAL_NODE, "--health-host", "127.0.0.1"]
    monitor_args += ["--health-port", str(monitor_health)]
    all_devices = len(pairs) + 1
    try:
        with (
            service_process(
                "kubeserial_monitor",
                monitor_args,
                kubeconfig=monitor_kubeconfig,
                log_path=work / "monitor.log",
                env=usb.env,
            ) as monitor,
            service_process(
                "kubeserial_controller",
                controller_args,
                kubeconfig=controller_kubeconfig,
                log_path=work / "controller.log",
            ) as controller,
        ):
            # Cold start: everything exists (the real adapter is plugged in too); the controller starts.
            await asyncio.to_thread(usb.plug, REAL_ADAPTER)
            requests_at_cold_start = await request_totals(api)
            cpu_at_cold_start = cpu_seconds_by_process(controller.pid)
            machine_at_cold_start = machine_cpu()
            cold = time.perf_counter()
            profiling = (
                asyncio.create_task(profile_apiserver(api, args.profile_apiserver))
                if args.profile_apiserver
                else None
            )
            progress: list[tuple[float, int]] = []
            while (
                len(availability.available) < all_devices
                and time.perf_counter() - cold < args.converge_timeout
            ):
                await asyncio.sleep(1.0)
                progress.append((round(time.perf_counter() - cold, 1), len(availability.available)))
            cold_seconds = time.perf_counter() - cold
            bound = len(availability.available)
            result["converged"] = bound == all_devices
            result["cold_start_all_bound_seconds"] = round(cold_seconds, 1)
            result["bound_at_end_of_cold_start"] = bound
            # Rate while binding, from the first device bound to the last seen (not the informers' start).
            first = next((t for t, n in progress if n > 0), None)
            if first is not None and cold_seconds > first:
                result["binding_rate_per_second"] = round(bound / (cold_seconds - first), 1)
                result["controller_start_to_first_binding_seconds"] = first
            result["cold_start_progress"] = progress[:: max(1, len(progress) // 30)]
            result["controller_after_cold_start"] = proc_stats(controller.pid)
            # CPU seconds over the cold start / its length: the cores each kept busy while binding.
            cpu_now = cpu_seconds_by_process(controller.pid)
            for name, at_start in cpu_at_cold_start.items():
                spent = cpu_now[name] - at_start
                result[f"{name}_cores_during_cold_start"] = round(spent / cold_seconds, 2)
            busy, total = (now - then for now, then in zip(machine_cpu(), machine_at_cold_start, strict=True))
            result["machine_cores_busy_during_cold_start"] = round((os.cpu_count() or 1) * busy / total, 2)
            result["cold_start_requests"] = delta(await request_totals(api), requests_at_cold_start)
            result["controller_binding_reconcile_mean_ms"] = binding_reconcile_mean_ms(controller_health)
            # Binding Events it could not post in time (best effort: the status is the record).
            result["controller_events_dropped"] = controller_metric(
                controller_health, "kubeserial_controller_events_dropped"
            )
            if profiling is not None:
                result["apiserver_profile"] = await profiling
            if args.cold_start_only:
                result["controller"] = proc_stats(controller.pid)
                return
            wait_for(lambda: is_ready(controller_health), timeout=120, message="controller ready")
            wait_for(lambda: is_ready(monitor_health), timeout=30, message="monitor ready")
            after_start = await request_totals(api)

            # Bound is not done: each Available device gets its gateway (Deployment, Service,
            # NetworkPolicy, an Event). Wait until the apiserver serves no write but Lease renewals.
            quiet, idle_after = await until_quiet(api, timeout=args.quiet_timeout)
            result["controller_idle"] = quiet
            result["cold_start_to_controller_idle_seconds"] = round(time.perf_counter() - cold, 1)
            result["gateway_phase_seconds"] = round(idle_after, 1)

            # plug -> Available for the real adapter at this scale (through the real monitor)
            await availability.until(REAL_DEVICE, available=True, timeout=args.converge_timeout)
            await asyncio.to_thread(usb.unplug, REAL_ADAPTER)
            await availability.until(REAL_DEVICE, available=False)
            plug: list[float] = []
            unplug: list[float] = []
            for _ in range(args.cycles):
                begin = time.perf_counter()
                await asyncio.to_thread(usb.plug, REAL_ADAPTER)
                plug.append(await availability.until(REAL_DEVICE, available=True) - begin)
                begin = time.perf_counter()
                await asyncio.to_thread(usb.unplug, REAL_ADAPTER)
                unplug.append(await availability.until(REAL_DEVICE, available=False) - begin)
            result["plug_to_available"] = latency_summary(plug)
            result["unplug_to_unavailable"] = latency_summary(unplug)

            # Steady state: nothing changes; this process only watches (and reads /metrics twice).
            await asyncio.sleep(args.settle)
            result["idle_before_steady"] = (await until_quiet(api, timeout=180))[0]
            cpu_before = {"controller": proc_stats(controller.pid), "monitor": proc_stats(monitor.pid)}
            before = await request_totals(api)
            await asyncio.sleep(args.steady)
            after = await request_totals(api)
            cpu_after = {"controller": proc_stats(controller.pid), "monitor": proc_stats(monitor.pid)}
            rates = {k: round(v / args.steady, 3) for k, v in delta(after, before).items()}
            total = sum(rates.values())
            result["steady_seconds"] = args.steady
            # Not converged or not quiet: the controller was still at work through the window.
            result["steady_window_disturbed"] = (
                len(availability.available - {REAL_DEVICE}) < len(pairs) or not result["idle_before_steady"]
            )
            result["steady_requests_per_second_total"] = round(total, 2)
            result["steady_requests_per_second_per_node"] = round(total / (args.nodes + 1), 4)
            result["steady_requests_per_second_by_verb_resource"] = dict(
                sorted(rates.items(), key=lambda kv: -kv[1])
            )
            result["lists_after_start"] = {
                k: v for k, v in delta(after, after_start).items() if k.startswith("LIST ")
            }
            result["bench_watch_relists"] = watch.relists - 1
            result["steady_cpu_percent"] = {
                name: round(
                    100 * (cpu_after[name]["cpu_seconds"] - cpu_before[name]["cpu_seconds"]) / args.steady, 1
                )
                for name in cpu_after
            }
            # A hollow device that went from Available=True to not: its node's Lease was late (a
            # renewal timed out on a slow apiserver) and the controller declared the node lost.
            hollow_lost = {k: n for k, n in availability.lost.items() if k != REAL_DEVICE}
            result["hollow_devices_that_flapped"] = len(hollow_lost)
            result["hollow_availability_losses"] = sum(hollow_lost.values())
            result["controller"] = proc_stats(controller.pid)
            result["monitor"] = proc_stats(monitor.pid)
            result["hollow_monitors_process"] = proc_stats(os.getpid())
            for name in ("kube-apiserver", "etcd"):
                proc = plane.processes.get(name)
                if proc is not None and proc.poll() is None:
                    result[name] = proc_stats(proc.pid)
    finally:
        for task in [*renewals, watching]:
            task.cancel()
        await asyncio.gather(*renewals, watching, return_exceptions=True)
        await api.close()
    result["load_average_at_end"] = os.getloadavg()


def extrapolate(result: dict[str, Any], *, nodes: int, adapters: int) -> dict[str, Any]:
    """Linear extrapolation to the issue's size from a smaller run (stated as such in the results)."""
    devices = nodes * adapters
    out: dict[str, Any] = {"to_nodes": nodes, "to_serialdevices": devices, "method": "linear"}
    rate = result.get("binding_rate_per_second")
    if rate:
        out["cold_start_all_bound_seconds"] = round(
            result.get("controller_start_to_first_binding_seconds", 0.0) * devices / result["serialdevices"]
            + devices / rate,
            0,
        )
    per_node = result.get("steady_requests_per_second_per_node")
    if per_node is not None:
        out["steady_requests_per_second_total"] = round(per_node * nodes, 1)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=1000, help="hollow nodes (default 1000)")
    parser.add_argument(
        "--adapters", type=int, default=10, help="SerialPorts (and SerialDevices) per hollow node"
    )
    parser.add_argument("--cycles", type=int, default=30, help="plug/unplug cycles at scale (default 30)")
    parser.add_argument("--settle", type=float, default=15.0, help="seconds before the steady window")
    parser.add_argument("--steady", type=float, default=60.0, help="seconds of steady state to measure")
    parser.add_argument("--converge-timeout", type=float, default=900.0, help="for all bindings (s)")
    parser.add_argument(
        "--quiet-timeout", type=float, default=900.0, help="for the gateways after the bindings (s)"
    )
    parser.add_argument(
        "--controller-resync",
        type=float,
        help="the controller's --resync-seconds (default: its own, 300), e.g. shorter than the run to "
        "see that a resync sends no LIST",
    )
    parser.add_argument(
        "--cold-start-only",
        action="store_true",
        help="stop once every binding converged (no gateway phase, plug cycles or steady window)",
    )
    parser.add_argument(
        "--profile-apiserver",
        type=float,
        metavar="SECONDS",
        help=f"take kube-apiserver's CPU profile for SECONDS from the controller's start ({PROFILE.name})",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        work = Path(tmp)
        plane = ControlPlane(
            work / "plane",
            with_controller_manager=False,
            with_scheduler=False,
            # the test planes run without /debug/pprof (a later flag wins)
            apiserver_args=("--profiling=true",) if args.profile_apiserver else (),
        ).start()
        try:
            plane.kubectl("apply", "-k", str(REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"))
            plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
            plane.kubectl("create", "namespace", NAMESPACE, check=False)
            plane.register_node(REAL_NODE)
            result: dict[str, Any] = {}
            try:
                with SimulatedUsb(work / "usb") as usb:
                    asyncio.run(run(plane, usb, args, work, result))
            except Exception as exc:  # a benchmark reports (what it measured, and why it stopped)
                result["error"] = repr(exc)
            for log in ("controller.log", "monitor.log"):
                with contextlib.suppress(OSError):
                    (args.out.parent / f"scale-{log}").write_bytes((work / log).read_bytes())
        finally:
            plane.stop()
    result["wall_seconds"] = round(time.perf_counter() - began, 1)
    if args.nodes < 1000 or args.adapters < 10:
        result["extrapolated"] = extrapolate(result, nodes=1000, adapters=10)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
