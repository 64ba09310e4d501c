"""Services started by tests, seen through their HealthServer: /healthz, /readyz, /metrics."""

import datetime
import json
import subprocess
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

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


SAMPLE_SUFFIXES = ("_total", "_count", "_sum", "_bucket", "_created")


def require_declared(body: str, name: str) -> None:
    """A metric's family must be declared (`# TYPE`) in a /metrics body: a renamed or removed metric
    fails the test instead of reading as 0."""
    families = {name, *(name.removesuffix(end) for end in SAMPLE_SUFFIXES if name.endswith(end))}
    if not any(f"# TYPE {family} " in body for family in families):
        raise AssertionError(f"metric {name} is not exported")


def metric_sample(body: str, name: str, **labels: str) -> float:
    """One sample of a declared metric, matched on its full label set (in any order). A labelled
    counter has no sample until its first increment: 0 then; an undeclared metric raises."""
    require_declared(body, name)
    wanted = dict(labels)
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and dict(sample.labels) == wanted:
                return float(sample.value)
    return 0.0


def metric_sum(body: str, name: str) -> float:
    """The sum of every sample of a metric (all label sets) in a /metrics body. A labelled counter
    has no samples until its first increment, so 0 is an answer only when the metric is declared;
    a metric not exported at all raises, so that a renamed metric fails the test."""
    require_declared(body, name)
    return sum(
        float(line.split()[-1])
        for line in body.splitlines()
        if line.split("{", 1)[0].split(" ", 1)[0] == name
    )


def metric_total(port: int, name: str) -> float:
    """metric_sum of a loopback service's /metrics."""
    return metric_sum(http_get(port, "/metrics")[1], name)


def metric_at(port: int, name: str, **labels: str) -> float | None:
    """metric_sample of a loopback service's /metrics; None while nothing answers there (not up
    yet, or gone). A service that answers without declaring the metric fails the test."""
    status, body = http_get(port, "/metrics")
    return metric_sample(body, name, **labels) if status == 200 else None


LOG_LEVELS = frozenset({"debug", "info", "warning", "error", "critical"})


def json_log_problems(text: str) -> list[str]:
    """What is wrong with a service's log, line by line: every line must be one JSON object with a
    string `event`, a known `level` and an ISO 8601 `timestamp` (what runtime.logs writes)."""
    problems: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            record = json.loads(line)
        except ValueError:
            problems.append(f"line {number} is not JSON: {line[:200]!r}")
            continue
        if not isinstance(record, dict):
            problems.append(f"line {number} is not a JSON object: {line[:200]!r}")
            continue
        if not isinstance(record.get("event"), str) or not record["event"]:
            problems.append(f"line {number} has no event: {line[:200]!r}")
        if record.get("level") not in LOG_LEVELS:
            problems.append(f"line {number} has level {record.get('level')!r}: {line[:200]!r}")
        try:
            datetime.datetime.fromisoformat(str(record.get("timestamp")))
        except ValueError:
            problems.append(f"line {number} has timestamp {record.get('timestamp')!r}: {line[:200]!r}")
    return problems


def assert_json_logs(*paths: Path, allow_empty: bool = False) -> int:
    """json_log_problems of each log file (each must exist and, unless `allow_empty`, hold at least
    one line: a container stopped as soon as it started may have written nothing); the number of
    lines checked."""
    checked = 0
    for path in paths:
        text = path.read_text(errors="replace")
        assert text.strip() or allow_empty, f"{path} is empty"
        problems = json_log_problems(text)
        assert not problems, f"{path}:\n" + "\n".join(problems[:20])
        checked += len(text.splitlines())
    return checked


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
        """metric_at: None while the service does not answer; a metric it does not declare fails."""
        return metric_at(self.health_port, name, **labels)

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
