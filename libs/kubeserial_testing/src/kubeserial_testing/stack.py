"""The whole of KubeSerial on the local control plane, for `make demo-local` (machines that cannot
run real nodes).

What is real: kube-apiserver, etcd, controller-manager, scheduler; the four services as processes
of their own, each authenticated with its own ServiceAccount token and the shipped RBAC; the
webhook called by the apiserver over TLS with the injector's self-managed certificate; udev on
each simulated node (one umockdev testbed per node); ptys and sockets.

What stands in: a kubelet per node (kubeserial_testing.kubelet) that runs the gateway and bridge
containers of pods bound to it as local processes, and cluster DNS, which it replaces by pointing
each gateway Service name at the loopback ports that gateway listens on.
"""

import asyncio
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from kubernetes_asyncio import client

from kubeserial_common import constants as c
from kubeserial_common.conditions import condition_status
from kubeserial_common.kube import api_client
from kubeserial_common.names import gateway_name
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane, free_port
from kubeserial_testing.kubelet import Launch, SimulatedKubelet
from kubeserial_testing.objects import get_object
from kubeserial_testing.services import (
    SYSTEM_NAMESPACE,
    namespace_of,
    node_bound_kubeconfig,
    pod_bound_kubeconfig,
    stop_process,
    wait_for,
)
from kubeserial_testing.umockdev import SimulatedUsb

NAMESPACE = "kubeserial"
E2E_OVERLAY = REPO_ROOT / "deploy" / "kustomize" / "overlays" / "e2e"
WORKLOAD_KINDS = ("Deployment", "DaemonSet")
WEBHOOK_CONFIG = "kubeserial-injector"


def install_manifests(plane: ControlPlane, *, webhook_url: str) -> None:
    """Apply the e2e overlay except its workloads (run here as processes); the webhook points at
    the local injector, whose self-managed certificate then fills in the caBundle."""
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(E2E_OVERLAY)], check=True, capture_output=True, text=True
    ).stdout
    docs = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] not in WORKLOAD_KINDS]
    for doc in docs:
        if doc["kind"] == "MutatingWebhookConfiguration":
            for webhook in doc["webhooks"]:
                webhook["clientConfig"] = {"url": webhook_url}
    plane.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(docs))
    plane.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")


def _replace_option(args: list[str], option: str, value: str) -> list[str]:
    """`args` with `option VALUE` (or `option=VALUE`) set to `value`, appended when absent."""
    result, skip, found = [], False, False
    for arg in args:
        if skip:
            skip, found = False, True
            result += [option, value]
            continue
        if arg == option:
            skip = True
            continue
        if arg.startswith(option + "="):
            result += [option, value]
            found = True
            continue
        result.append(arg)
    return result if found else [*result, option, value]


def _option(args: list[str], option: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == option and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(option + "="):
            return arg.split("=", 1)[1]
    return None


@dataclass
class ServicePorts:
    """Loopback ports standing in for a gateway Service (and its pod's health port)."""

    raw: int = field(default_factory=free_port)
    rfc2217: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/readyz", timeout=1) as response:
                return bool(response.status == 200)
        except OSError:
            return False


@dataclass
class LocalStack:
    plane: ControlPlane
    workdir: Path
    nodes: tuple[str, ...] = ("node-a", "node-b")
    # Short durations so a lost node is noticed within seconds in tests.
    monitor_lease_seconds: int = 6
    usb: dict[str, SimulatedUsb] = field(default_factory=dict)
    kubelets: dict[str, SimulatedKubelet] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    health_ports: dict[str, int] = field(default_factory=dict)
    gateway_ports: dict[str, ServicePorts] = field(default_factory=dict)
    # (pod name, device) -> the health/metrics port of that pod's bridge
    bridge_health: dict[tuple[str, str], int] = field(default_factory=dict)
    injector_port: int = field(default_factory=free_port)
    gateway_kubeconfig: Path = Path()
    api: client.ApiClient | None = None
    restarts: dict[str, int] = field(default_factory=dict)
    _commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)
    _supervisor: asyncio.Task[None] | None = None
    _api_context: Any = None

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> "LocalStack":
        self.workdir.mkdir(parents=True, exist_ok=True)
        install_manifests(self.plane, webhook_url=f"https://127.0.0.1:{self.injector_port}/mutate")
        self.gateway_kubeconfig = self._kubeconfig("gateway")
        self._start_service(
            "controller",
            "kubeserial_controller",
            ["--gateway-image", "kubeserial/gateway:e2e", "--resync-seconds", "30"],
        )
        self._start_service(
            "injector",
            "kubeserial_injector",
            [
                "--host",
                "127.0.0.1",
                "--port",
                str(self.injector_port),
                "--extra-san",
                "127.0.0.1",
                "--bridge-image",
                "kubeserial/gateway:e2e",
                "--cert-dir",
                str(self.workdir / "injector-certs"),
            ],
        )
        for node in self.nodes:
            usb = SimulatedUsb(self.workdir / f"usb-{node}").__enter__()
            self.usb[node] = usb
            self.start_monitor(node)
        self._api_context = api_client(str(self.plane.kubeconfig))
        self.api = await self._api_context.__aenter__()
        for node in self.nodes:
            kubelet = SimulatedKubelet(self.api, node, self._launcher(node), self.workdir / "pods")
            await kubelet.start()
            self.kubelets[node] = kubelet
        for name in self.processes:
            self.wait_healthy(name)
        self.wait_webhook_ca_bundle()
        self._supervisor = asyncio.create_task(self._supervise())
        return self

    async def _supervise(self) -> None:
        """Restart services that exit, as the kubelet does for their pods (restartPolicy Always):
        the controller, for one, exits on purpose when it loses its leader Lease."""
        while True:
            await asyncio.sleep(0.5)
            for name, proc in list(self.processes.items()):
                if proc.poll() is not None:
                    argv, env = self._commands[name]
                    self.restarts[name] = self.restarts.get(name, 0) + 1
                    self.processes[name] = self._spawn(name, argv, env)

    async def stop(self) -> None:
        # Each step is bounded: a teardown that waits forever (seen once in CI after an unplug test,
        # cause not found) must not hang the run; what timed out is printed.
        if self._supervisor is not None:
            self._supervisor.cancel()
        for kubelet in self.kubelets.values():
            await _bounded(kubelet.stop(), f"stopping the stand-in kubelet of {kubelet.node}")
        for proc in self.processes.values():
            stop_process(proc)
        for usb in self.usb.values():
            usb.close()
        if self._api_context is not None:
            await _bounded(self._api_context.__aexit__(None, None, None), "closing the API client")

    def _kubeconfig(self, component: str) -> Path:
        return self.plane.service_account_kubeconfig(
            namespace_of(component), f"kubeserial-{component}", path=self.workdir / f"{component}.kubeconfig"
        )

    def _start_service(
        self,
        name: str,
        module: str,
        args: list[str],
        *,
        env: dict[str, str] | None = None,
        component: str = "",
    ) -> None:
        port = free_port()
        self.health_ports[name] = port
        # The injector's own namespace holds its Secret; the others' is the gateways' (the controller
        # keeps its leader Lease in kubeserial-system by default).
        namespace = SYSTEM_NAMESPACE if module == "kubeserial_injector" else NAMESPACE
        argv = [sys.executable, "-m", module, "--namespace", namespace, "--health-host", "127.0.0.1"]
        argv += ["--health-port", str(port), "--log-format", "json", *args]
        full_env = {"KUBECONFIG": str(self._kubeconfig(component or name)), **(env or {})}
        self._commands[name] = (argv, full_env)
        self.processes[name] = self._spawn(name, argv, full_env)

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        clean = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
        with open(logs / f"{name}.log", "ab") as log_file:
            return subprocess.Popen(argv, env={**clean, **env}, stdout=log_file, stderr=subprocess.STDOUT)

    def start_monitor(self, node: str) -> None:
        # A token bound to a Pod on the node, as the kubelet mounts one: the shipped policy
        # (deploy/kustomize/base/policies) lets a monitor write only its own node's SerialPorts and
        # Lease, by the node name such a token carries.
        kubeconfig = node_bound_kubeconfig(
            self.plane,
            namespace=NAMESPACE,
            service_account="kubeserial-monitor",
            node=node,
            path=self.workdir / f"monitor-{node}.kubeconfig",
        )
        self._start_service(
            f"monitor-{node}",
            "kubeserial_monitor",
            [
                "--node-name",
                node,
                "--rescan-seconds",
                "5",
                "--lease-duration-seconds",
                str(self.monitor_lease_seconds),
                "--lease-renew-seconds",
                "1",
            ],
            env={**self.usb[node].env, "KUBECONFIG": str(kubeconfig)},
            component="monitor",
        )

    def stop_monitor(self, node: str) -> None:
        """Kill a node's monitor without a goodbye, as a crashed or powered-off node would."""
        proc = self.processes.pop(f"monitor-{node}")
        proc.kill()
        proc.wait()

    def wait_healthy(self, name: str, *, timeout: float = 60) -> None:
        proc = self.processes[name]

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}: {self.log(name)[-2000:]}")
            try:
                url = f"http://127.0.0.1:{self.health_ports[name]}/healthz"
                with urllib.request.urlopen(url, timeout=1) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        wait_for(healthy, timeout=timeout, message=f"{name} healthy")

    def wait_webhook_ca_bundle(self, *, timeout: float = 60) -> None:
        def patched() -> bool:
            out = self.plane.kubectl("get", "mutatingwebhookconfiguration", WEBHOOK_CONFIG, "-o", "json")
            return all(w["clientConfig"].get("caBundle") for w in json.loads(out.stdout)["webhooks"])

        wait_for(patched, timeout=timeout, message="the injector to patch its caBundle")

    def log(self, name: str) -> str:
        path = self.workdir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- the stand-in kubelet's view of containers -------------------------------------------------

    def ports_for(self, device: str) -> ServicePorts:
        return self.gateway_ports.setdefault(device, ServicePorts())

    def _launcher(self, node: str) -> Callable[[dict[str, Any], dict[str, Any]], Launch | None]:
        def launch(pod: dict[str, Any], container: dict[str, Any]) -> Launch | None:
            args = [str(a) for a in (container.get("args") or [])]
            if not args:
                return None
            if args[0] == "serve":
                device = _option(args, "--device-name") or pod["metadata"]["name"]
                ports = self.ports_for(device)
                args = _replace_option(args, "--raw-port", str(ports.raw))
                args = _replace_option(args, "--rfc2217-port", str(ports.rfc2217))
                args = _replace_option(args, "--health-port", str(ports.health))
                args = _replace_option(args, "--health-host", "127.0.0.1")
                # The token of this gateway Pod, as the kubelet would project it: the shipped policy
                # (deploy/kustomize/base/policies) lets it write only its own device's Free
                # condition while that device is bound to this node.
                kubeconfig = pod_bound_kubeconfig(
                    self.plane,
                    namespace=pod["metadata"]["namespace"],
                    service_account=pod["spec"].get("serviceAccountName") or "default",
                    pod=pod["metadata"]["name"],
                    path=self.workdir / f"gateway-{pod['metadata']['name']}.kubeconfig",
                )
                env = {**self.usb[node].env, "KUBECONFIG": str(kubeconfig)}
                return Launch([sys.executable, "-m", "kubeserial_gateway", *args], env)
            if args[0] == "bridge":
                url = urlsplit(_option(args, "--url") or "")
                device = (url.hostname or "").split(".")[0].removesuffix("-gateway")
                port = self.ports_for(device).rfc2217
                link = _option(args, "--link") or f"/kubeserial/links/{device}"
                local_link = self.workdir / "links" / pod["metadata"]["name"] / Path(link).name
                local_link.parent.mkdir(parents=True, exist_ok=True)
                args = _replace_option(args, "--url", f"rfc2217://127.0.0.1:{port}")
                args = _replace_option(args, "--link", str(local_link))
                bridge_port = free_port()
                self.bridge_health[(pod["metadata"]["name"], device)] = bridge_port
                args = _replace_option(args, "--health-port", str(bridge_port))
                return Launch([sys.executable, "-m", "kubeserial_gateway", *args], {})
            return None

        return launch

    # -- what a user would look at -----------------------------------------------------------------

    def device_state(self, device: str) -> tuple[str | None, str | None]:
        """(status of Available, status.nodeName) of a SerialDevice."""
        obj = get_object(self.plane, "serialdevice", device) or {}
        return condition_status(obj, c.AVAILABLE), (obj.get("status") or {}).get("nodeName")

    def gateway_pods(self, device: str, node: str) -> list[dict[str, Any]]:
        """Running pods of the device's current gateway Deployment on `node`. Pods of an earlier
        Deployment of the same name can outlive it while the garbage collector catches up (after
        an apiserver outage its retries back off), so ownership is followed, not labels alone."""
        deployment = get_object(self.plane, "deployment", gateway_name(device), namespace=NAMESPACE)
        if deployment is None:
            return []
        sets = json.loads(self.plane.kubectl("get", "replicasets", "-n", NAMESPACE, "-o", "json").stdout)[
            "items"
        ]
        current_sets = {
            rs["metadata"]["uid"]
            for rs in sets
            if any(
                ref["uid"] == deployment["metadata"]["uid"]
                for ref in rs["metadata"].get("ownerReferences", [])
            )
        }
        selector = f"app.kubernetes.io/name=kubeserial-gateway,{c.DEVICE_LABEL}={device}"
        out = self.plane.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout
        return [
            pod
            for pod in json.loads(out)["items"]
            if pod.get("status", {}).get("phase") == "Running"
            and pod["spec"].get("nodeName") == node
            and not pod["metadata"].get("deletionTimestamp")
            and any(ref["uid"] in current_sets for ref in pod["metadata"].get("ownerReferences", []))
        ]

    def gateway_pod(self, device: str, node: str) -> dict[str, Any] | None:
        pods = self.gateway_pods(device, node)
        return pods[0] if pods else None

    def gateway_process(self, device: str, node: str) -> subprocess.Popen[bytes]:
        running = self.kubelets[node].processes
        uids = [pod["metadata"]["uid"] for pod in self.gateway_pods(device, node)]
        found = [running[uid][0] for uid in uids if uid in running]
        assert len(found) == 1, f"expected one gateway process for {device} on {node}, found {len(found)}"
        return found[0]

    def container_logs(self, node: str, pod_prefix: str, container: str) -> str:
        """Everything the stand-in kubelet's containers `container` of pods named `pod_prefix`...
        on `node` logged, in start order (it outlives the pods)."""
        paths = sorted(
            (self.workdir / "pods").glob(f"{node}-{pod_prefix}*-{container}.log"), key=os.path.getmtime
        )
        return "".join(path.read_text(errors="replace") for path in paths)

    def link_path(self, pod: str, device: str) -> Path:
        """Where the stand-in kubelet put the tty link of `pod`'s bridge for `device`."""
        return self.workdir / "links" / pod / device


async def _bounded(step: Any, what: str, *, seconds: float = 60.0) -> None:
    try:
        await asyncio.wait_for(step, seconds)
    except TimeoutError:
        print(f"teardown: {what} took over {seconds}s; went on without it", file=sys.stderr)


async def wait_async(predicate: Callable[[], Any], *, within: float = 30.0, message: str = "") -> Any:
    """Async twin of services.wait_for for predicates that are cheap and synchronous."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        value = predicate()
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {message}; last value {value!r}")
        await asyncio.sleep(0.1)
