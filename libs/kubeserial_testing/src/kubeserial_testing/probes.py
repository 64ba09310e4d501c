"""Services started by tests, seen through their HealthServer: /healthz, /readyz, /metrics."""

import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubeserial_testing.controlplane import free_port
from kubeserial_testing.services import service_process


def http_get(port: int, path: str, *, host: str = "127.0.0.1") -> tuple[int, str]:
    """(status, body) of GET http://host:port/path; status 0 when nothing answered."""
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as response:
            return int(response.status), response.read().decode()
    except OSError as exc:
        return getattr(exc, "code", 0) or 0, str(exc)


def is_ready(port: int) -> bool:
    return http_get(port, "/readyz")[0] == 200


def metric_value(port: int, name: str, **labels: str) -> float | None:
    """One sample from /metrics, matched on its full label set in exposition order; None if absent."""
    wanted = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
    for line in http_get(port, "/metrics")[1].splitlines():
        if line.startswith(wanted + " "):
            return float(line.split()[-1])
    return None


def metric_sum(body: str, name: str) -> float:
    """The sum of every sample of a metric (all label sets) in a /metrics body. A labelled counter
    has no samples until its first increment, so 0 is an answer only when the metric is declared;
    a metric not exported at all raises, so that a renamed metric fails the test."""
    if f"# TYPE {name.removesuffix('_total')} " not in body and f"# TYPE {name} " not in body:
        raise AssertionError(f"metric {name} is not exported")
    return sum(
        float(line.split()[-1])
        for line in body.splitlines()
        if line.split("{", 1)[0].split(" ", 1)[0] == name
    )


def metric_total(port: int, name: str) -> float:
    """metric_sum of a loopback service's /metrics."""
    return metric_sum(http_get(port, "/metrics")[1], name)


@dataclass
class RunningService:
    """A service process started by a test, and its health port."""

    proc: subprocess.Popen[bytes]
    health_port: int
    log_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        return is_ready(self.health_port)

    def metric(self, name: str, **labels: str) -> float | None:
        return metric_value(self.health_port, name, **labels)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""


@contextmanager
def running_service(
    module: str, args: list[str], *, kubeconfig: Path, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[RunningService]:
    """`service_process` with its health server on a free loopback port."""
    port = free_port()
    health = ["--health-host", "127.0.0.1", "--health-port", str(port)]
    with service_process(module, [*args, *health], kubeconfig=kubeconfig, log_path=log_path, env=env) as proc:
        yield RunningService(proc, port, log_path)
