"""Run KubeSerial services as real processes in tests, each with its own ServiceAccount."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane

NAMESPACE = "kubeserial"


def apply_rbac(plane: ControlPlane, component: str) -> Path:
    """Apply the component's shipped RBAC and return a kubeconfig holding its ServiceAccount token."""
    plane.kubectl("create", "namespace", NAMESPACE, check=False)
    plane.kubectl(
        "apply", "-f", str(REPO_ROOT / "deploy" / "kustomize" / "base" / "rbac" / f"{component}.yaml")
    )
    return plane.service_account_kubeconfig(NAMESPACE, f"kubeserial-{component}")


@contextmanager
def service_process(
    module: str, args: list[str], *, kubeconfig: Path, log_path: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Start `python -m module args` and stop it (SIGTERM, then SIGKILL) on exit."""
    full_env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBESERIAL_LOG_FORMAT": "json", **(env or {})}
    full_env.pop("KUBERNETES_SERVICE_HOST", None)
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdout=log_file, stderr=subprocess.STDOUT, env=full_env
        )
    try:
        yield proc
    finally:
        stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(
    predicate: "object", *, timeout: float = 30.0, interval: float = 0.1, message: str = ""
) -> object:
    """Poll a zero-argument callable until it returns something truthy; fail with `message`."""
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"timed out after {timeout}s waiting for {message or predicate}; last value {last!r}"
    )
