"""Admission latency of the injector: the real process, real uvicorn, TLS on loopback.

Starts a local control plane (for the SerialDevice cache), the injector with its own
ServiceAccount, then sends AdmissionReviews for an annotated pod at a fixed rate over persistent
TLS connections (as the apiserver does) and reports client-side latency percentiles. Latency is
measured from each request's scheduled send time, so a stalled server cannot hide queueing.

    .venv/bin/python bench/bench_injector.py [--rate 200] [--seconds 10] [--connections 8]

Prints a table and writes bench/results/injector.json.
"""

import argparse
import asyncio
import contextlib
import json
import os
import platform
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from kubeserial_common.core import constants as c
from kubeserial_testing import pki
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane, free_port
from kubeserial_testing.objects import apply_object, serial_device
from kubeserial_testing.probes import running_service
from kubeserial_testing.services import apply_rbac, wait_for
from memref import peak_mib, python_floor_mib
from stats import percentile

RESULTS = REPO_ROOT / "bench" / "results"
DEVICE = "bench-printer"


def review_body(index: int, *, mode: str) -> bytes:
    annotations = {c.INJECT_ANNOTATION: DEVICE}
    if mode == "url":
        annotations[c.INJECT_MODE_ANNOTATION] = "url"
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"generateName": "bench-", "namespace": "apps", "annotations": annotations},
        "spec": {
            "securityContext": {"runAsUser": 1000},
            "containers": [
                {
                    "name": "app",
                    "image": "octoprint/octoprint:1.10",
                    "env": [{"name": f"VAR_{i}", "value": "x" * 20} for i in range(10)],
                    "ports": [{"containerPort": 5000}],
                    "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                },
                {"name": "exporter", "image": "prom/exporter:1", "args": ["--port=9100"]},
            ],
        },
    }
    review = {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": f"bench-{index}",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "operation": "CREATE",
            "namespace": "apps",
            "object": pod,
        },
    }
    return json.dumps(review).encode()


class Connection:
    """One persistent HTTP/1.1 connection over TLS: a minimal client, so the client's own
    overhead stays small next to the server's on a 2-core machine."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.lock = asyncio.Lock()

    @classmethod
    async def open(cls, port: int, context: ssl.SSLContext) -> "Connection":
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=context)
        return cls(reader, writer)

    async def post(self, body: bytes) -> bytes:
        head = (
            "POST /mutate HTTP/1.1\r\nHost: injector\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        status_and_headers = await self.reader.readuntil(b"\r\n\r\n")
        length = next(
            int(line.split(b":", 1)[1])
            for line in status_and_headers.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        payload = await self.reader.readexactly(length)
        if not status_and_headers.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(status_and_headers.decode(errors="replace"))
        return payload

    def close(self) -> None:
        self.writer.close()


async def drive(
    port: int, context: ssl.SSLContext, *, rate: float, seconds: float, connections: int, mode: str
) -> dict[str, Any]:
    conns = [await Connection.open(port, context) for _ in range(connections)]
    bodies = [review_body(i, mode=mode) for i in range(64)]
    for conn in conns:  # warm up every connection (TLS session, server caches)
        for body in bodies[:5]:
            await conn.post(body)
    total = int(rate * seconds)
    latencies: list[float] = []
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.05

    async def one(index: int) -> None:
        scheduled = start + index / rate
        await asyncio.sleep(max(0.0, scheduled - loop.time()))
        conn = conns[index % connections]
        try:
            async with conn.lock:
                answer = json.loads(await conn.post(bodies[index % len(bodies)]))
            if not answer["response"]["allowed"] or "patch" not in answer["response"]:
                errors.append("not mutated")
        except Exception as exc:
            errors.append(repr(exc))
        latencies.append(loop.time() - scheduled)

    wall = time.perf_counter()
    await asyncio.gather(*(one(i) for i in range(total)))
    wall = time.perf_counter() - wall
    for conn in conns:
        conn.close()

    def pct(p: float) -> float:
        return percentile(latencies, p / 100) * 1000

    return {
        "mode": mode,
        "target_rps": rate,
        "achieved_rps": round(total / wall, 1),
        "requests": total,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "connections": connections,
        "p50_ms": round(pct(50), 3),
        "p90_ms": round(pct(90), 3),
        "p99_ms": round(pct(99), 3),
        "max_ms": round(max(latencies) * 1000, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1000, 3),
    }


def server_histogram(health_port: int) -> dict[str, float]:
    """Cumulative counts of the injector's own latency histogram, by upper bound."""
    with urllib.request.urlopen(f"http://127.0.0.1:{health_port}/metrics", timeout=2) as response:
        text = response.read().decode()
    buckets: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("kubeserial_injector_admission_duration_seconds_bucket"):
            bound = line.split('le="', 1)[1].split('"', 1)[0]
            buckets[bound] = float(line.split()[-1])
    return buckets


def server_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    port: int,
    health: int,
    context: ssl.SSLContext,
    *,
    pid: int,
    rate: float,
    args: argparse.Namespace,
    mode: str,
) -> dict[str, Any]:
    """One run, with the server's own histogram, its CPU time and the machine's load around it."""
    before, load_before, cpu_before = server_histogram(health), os.getloadavg()[0], cpu_seconds(pid)
    result = asyncio.run(
        drive(port, context, rate=rate, seconds=args.seconds, connections=args.connections, mode=mode)
    )
    after = server_histogram(health)
    count = after["+Inf"] - before["+Inf"]
    result["server_under_1ms"] = round((after["0.001"] - before["0.001"]) / count, 4)
    result["server_under_10ms"] = round((after["0.01"] - before["0.01"]) / count, 4)
    result["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["server_cpu_us_per_request"] = round((cpu_seconds(pid) - cpu_before) / count * 1e6, 1)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, nargs="+", default=[200.0, 400.0], help="requests per second")
    parser.add_argument("--seconds", type=float, default=10.0, help="duration of each run")
    parser.add_argument("--connections", type=int, default=8, help="persistent TLS connections")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        # Removed at the end, logs and the throwaway key included: a benchmark leaves nothing behind.
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-injector-")))
        plane = ControlPlane(workdir / "cp", with_controller_manager=False, with_scheduler=False).start()
        stack.callback(plane.stop)
        plane.kubectl("apply", "-k", str(REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"))
        plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        apply_object(plane, serial_device(DEVICE))
        kubeconfig = apply_rbac(plane, "injector")
        ca_pair, ca_key, ca_cert = pki.make_ca("bench-ca")
        cert, key = pki.issue(
            ca_key, ca_cert, common_name="injector", ip_addresses=("127.0.0.1",), server=True
        ).write(workdir, "tls")
        port = free_port()
        injector_args = ["--host", "127.0.0.1", "--port", str(port), "--cert-mode", "files"]
        injector_args += ["--tls-cert-file", str(cert), "--tls-key-file", str(key)]
        injector = stack.enter_context(
            running_service(
                "kubeserial_injector",
                injector_args,
                kubeconfig=kubeconfig,
                log_path=workdir / "injector.log",  # default log level: one line per admitted pod
            )
        )
        proc, health = injector.proc, injector.health_port
        wait_for(lambda: not injector.alive() or injector.ready(), timeout=60, message="injector ready")
        context = ssl.create_default_context(cadata=ca_pair.cert_pem.decode())
        runs = []
        for rate in args.rate:
            for mode in ("tty", "url"):
                result = measure(port, health, context, pid=proc.pid, rate=rate, args=args, mode=mode)
                runs.append(result)
                print(
                    f"{mode:>3} mode {rate:6.0f} req/s target, {result['achieved_rps']:6.1f} achieved,"
                    f" {result['requests']} requests, {result['errors']} errors:"
                    f" p50 {result['p50_ms']:.2f} ms  p90 {result['p90_ms']:.2f} ms"
                    f"  p99 {result['p99_ms']:.2f} ms  max {result['max_ms']:.2f} ms;"
                    f" server-side {result['server_under_1ms']:.1%} < 1 ms,"
                    f" {result['server_under_10ms']:.2%} < 10 ms,"
                    f" {result['server_cpu_us_per_request']:.0f} µs CPU"
                    f" per request; load average {result['load_average_1m']}"
                )
        rss = server_rss_kib(proc.pid)
        peak = peak_mib(proc.pid)
        floor = python_floor_mib()
        print(f"injector RSS after the runs: {rss / 1024:.1f} MiB, peak {peak} MiB (python -c pass {floor})")
        RESULTS.mkdir(parents=True, exist_ok=True)
        out = {
            "benchmark": "injector admission latency (TLS, loopback, persistent connections)",
            "id": uuid.uuid4().hex[:8],
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "injector_rss_kib": rss,
            "injector_peak_rss_mib": peak,
            "python_floor_mib": floor,
            "runs": runs,
        }
        (RESULTS / "injector.json").write_text(json.dumps(out, indent=2))
        print(f"wrote {RESULTS / 'injector.json'}")
        return 1 if any(run["errors"] for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
