"""Run the gateway (`serve`) and the bridge as real processes in tests, and read their health/metrics."""

import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from kubeserial_common.core import gatewayargs as ga
from kubeserial_testing.controlplane import free_port
from kubeserial_testing.probes import metric_sample
from kubeserial_testing.services import service_process, wait_for

MODULE = "kubeserial_gateway"


@dataclass
class Process:
    proc: "subprocess.Popen[bytes]"
    health_port: int
    log_path: Path

    def http_status(self, path: str) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}{path}", timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)
        except OSError:
            return 0

    def ready(self) -> bool:
        return self.http_status("/readyz") == 200

    def metric(self, name: str, **labels: str) -> float:
        """One sample (0 before a labelled counter's first increment); an undeclared metric fails."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.health_port}/metrics", timeout=5) as response:
            return metric_sample(response.read().decode(), name, **labels)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


@dataclass
class Gateway(Process):
    raw_port: int
    rfc2217_port: int

    def raw_client(self, *, timeout: float = 10.0) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.raw_port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    @property
    def rfc2217_url(self) -> str:
        return f"rfc2217://127.0.0.1:{self.rfc2217_port}"


@contextmanager
def run_gateway(
    device: Path,
    *,
    log_path: Path,
    kubeconfig: Path | None = None,
    args: list[str] | None = None,
    ports: tuple[int, int, int] | None = None,
    wait_ready: bool = True,
    any_tty: bool = True,
    env: dict[str, str] | None = None,
) -> Iterator[Gateway]:
    """`serve --device device ...` on free ports (or `ports`: raw, rfc2217, health). `any_tty`: the
    device is a pty (PtyDevice), which the gateway serves only with its test-only switch."""
    raw, rfc2217, health = ports or (free_port(), free_port(), free_port())
    argv = ["serve", "--device", str(device), "--raw-port", str(raw), "--rfc2217-port", str(rfc2217)]
    argv += [ga.TEST_ALLOW_ANY_TTY] if any_tty else []
    argv += ["--health-port", str(health), "--listen-host", "127.0.0.1", *(args or [])]
    # Without --device-name the kubeconfig is never read; service_process wants one all the same.
    with service_process(
        MODULE,
        argv,
        kubeconfig=kubeconfig or log_path.with_suffix(".unused-kubeconfig"),
        log_path=log_path,
        env=env,
    ) as proc:
        gateway = Gateway(proc, health, log_path, raw, rfc2217)
        if wait_ready:
            wait_for(lambda: gateway.ready() or proc.poll() is not None, timeout=30, message="gateway ready")
            assert proc.poll() is None, gateway.log()
        yield gateway


@contextmanager
def run_bridge(url: str, link: Path, *, log_path: Path, via_proc: bool = True) -> Iterator[Process]:
    health = free_port()
    argv = ["bridge", "--url", url, "--link", str(link), "--health-port", str(health)]
    argv += ["--health-host", "127.0.0.1", *(["--via-proc"] if via_proc else [])]
    with service_process(
        MODULE, argv, kubeconfig=log_path.with_suffix(".unused-kubeconfig"), log_path=log_path
    ) as proc:
        bridge = Process(proc, health, log_path)
        wait_for(
            lambda: bridge.http_status("/healthz") == 200 or proc.poll() is not None, message="bridge up"
        )
        assert proc.poll() is None, bridge.log()
        yield bridge
