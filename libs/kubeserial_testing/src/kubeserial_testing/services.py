"""Run KubeSerial services as real processes in tests, each with its own ServiceAccount."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane, kubeconfig_for

NAMESPACE = "kubeserial"  # gateways, managers, monitors (Pod Security privileged)
SYSTEM_NAMESPACE = "kubeserial-system"  # controller, injector (Pod Security restricted)


def namespace_of(component: str) -> str:
    """Where a component's ServiceAccount lives (deploy/kustomize/base/rbac)."""
    return SYSTEM_NAMESPACE if component in ("controller", "injector") else NAMESPACE


def apply_rbac(plane: ControlPlane, component: str) -> Path:
    """Apply the component's shipped RBAC and return a kubeconfig holding its ServiceAccount token."""
    for namespace in (NAMESPACE, SYSTEM_NAMESPACE):
        plane.kubectl("create", "namespace", namespace, check=False)
    plane.kubectl(
        "apply", "-f", str(REPO_ROOT / "deploy" / "kustomize" / "base" / "rbac" / f"{component}.yaml")
    )
    return plane.service_account_kubeconfig(namespace_of(component), f"kubeserial-{component}")


def placeholder_pod(name: str, *, namespace: str, service_account: str, node: str) -> dict[str, Any]:
    """A Pod object bound to `node` that nothing runs (no kubelet acts on it here: the stand-in
    kubelet launches only containers it has a command for), for tokens bound to a Pod on a node."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": {"kubeserial.test/placeholder": "true"}},
        "spec": {
            "nodeName": node,
            "serviceAccountName": service_account,
            "containers": [{"name": "placeholder", "image": "kubeserial/placeholder:never-run"}],
        },
    }


def node_bound_kubeconfig(
    plane: ControlPlane,
    *,
    namespace: str,
    service_account: str,
    node: str,
    path: Path,
    pod: str | None = None,
) -> Path:
    """A kubeconfig with a token bound to a Pod on `node`, as the kubelet mounts for a Pod's
    projected token: the apiserver then reports the node in the request's user info
    (extra["authentication.kubernetes.io/node-name"]), which node-bound policies check. The Pod is a
    placeholder (`placeholder_pod`) created here; deleting it invalidates the token."""
    pod = pod or f"{service_account}-{node}"
    plane.kubectl("create", "namespace", namespace, check=False)
    plane.kubectl("create", "serviceaccount", service_account, "-n", namespace, check=False)
    body = placeholder_pod(pod, namespace=namespace, service_account=service_account, node=node)
    plane.kubectl("apply", "-f", "-", input=json.dumps(body))
    return pod_bound_kubeconfig(
        plane, namespace=namespace, service_account=service_account, pod=pod, path=path
    )


def pod_bound_kubeconfig(
    plane: ControlPlane, *, namespace: str, service_account: str, pod: str, path: Path
) -> Path:
    """A kubeconfig with a token of `service_account` bound to the existing Pod `pod` (which must run
    as that ServiceAccount): the request's user info then names the Pod and, once it is scheduled, its
    node, as with the projected token a kubelet mounts."""
    token = plane.kubectl(
        "create",
        "token",
        service_account,
        "-n",
        namespace,
        "--bound-object-kind=Pod",
        f"--bound-object-name={pod}",
        "--duration=24h",
    ).stdout.strip()
    path.write_text(yaml.safe_dump(kubeconfig_for(plane.server, plane.ca_file, user={"token": token})))
    return path


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
