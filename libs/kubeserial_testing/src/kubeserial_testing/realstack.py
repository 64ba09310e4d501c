"""KubeSerial installed on a RealCluster (kubeserial_testing.nodes) from the shipped e2e overlay,
with simulated USB adapters on the real nodes.

What is real: the control plane, two kubelets with containerd and kube-proxy, CoreDNS, the four
services as pods from the project's images under their own ServiceAccounts (projected tokens),
probes run by the kubelet, native sidecars, Services and DNS names, the webhook called by the
apiserver through its Service over TLS with the injector's self-managed certificate.

What is simulated, and how it reaches the containers: each node has a umockdev testbed (the real
libudev, real uevents over umockdev's socket stand-in for netlink) made under
SIMULATED_USB_ROOT/<cluster>/<node> in the host's /dev (a folder of its own: /dev/shm would not do,
every pod gets a /dev/shm of its own even when it mounts the host's /dev). The e2e images of the
monitor and the
gateway add umockdev's preload library and an entry point that points it at the testbed that
belongs to them (hack/images/e2e/umockdev_entry.py). The monitor DaemonSet gets one extra hostPath
volume, the testbed's folder (this harness adds it: the shipped overlay does not know about test
hardware); the gateway already mounts the host's /dev, which holds the testbeds and /dev/pts. A
simulated adapter's tty is a pty whose master the test holds: the test plays the device.
Differences from a real adapter: no modem lines (a pty), no USB cgroup rule needed, and the
testbed is shared through the host's filesystem rather than each node's own /sys and /dev.
"""

import contextlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeserial_common import constants as c
from kubeserial_common.conditions import condition_status
from kubeserial_testing.controlplane import REPO_ROOT
from kubeserial_testing.nodes import RealCluster
from kubeserial_testing.probes import metric_sum
from kubeserial_testing.umockdev import SimulatedUsb

NAMESPACE = "kubeserial"  # gateways, managers, monitors (Pod Security privileged)
SYSTEM_NAMESPACE = "kubeserial-system"  # controller, injector (Pod Security restricted)
E2E_OVERLAY = REPO_ROOT / "deploy" / "kustomize" / "overlays" / "e2e"
E2E_IMAGES = REPO_ROOT / "hack" / "images" / "e2e.sh"
SIMULATED_USB_ROOT = Path("/dev/kubeserial-e2e-usb")  # hack/images/e2e/umockdev_entry.py
GATEWAY_HEALTH_PORT = 8080
BRIDGE_HEALTH_PORT = 18217  # the first (only) device's bridge in a pod


def build_e2e_images() -> list[Path]:
    """The :e2e images as docker archives (hack/images/e2e.sh; cached)."""
    out = subprocess.run([str(E2E_IMAGES)], check=True, capture_output=True, text=True).stdout
    return [Path(line) for line in out.splitlines() if line.endswith(".tar")]


def wait_until(predicate: Callable[[], Any], *, within: float, message: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + within
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {message}; last value {value!r}")
        time.sleep(interval)


@dataclass
class RealStack:
    cluster: RealCluster
    workdir: Path
    usb: dict[str, SimulatedUsb] = field(default_factory=dict)

    @property
    def usb_root(self) -> Path:
        return SIMULATED_USB_ROOT / self.cluster.id

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, input=input, check=check, timeout=timeout)

    def start(self) -> "RealStack":
        shutil.rmtree(self.usb_root, ignore_errors=True)  # testbeds of a run that died
        for archive in build_e2e_images():
            self.cluster.import_image(archive)
        for node in self.cluster.nodes:
            usb = SimulatedUsb(self.workdir / f"usb-{node}", testbed_parent=self.usb_root / node, shared=True)
            self.usb[node] = usb.__enter__()
        for path in (SIMULATED_USB_ROOT, self.usb_root, *(self.usb_root / n for n in self.usb)):
            path.chmod(0o755)  # the monitor runs as nobody
        self.kubectl("apply", "--server-side", "--force-conflicts", "-k", str(E2E_OVERLAY))
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        self._mount_testbeds_into_the_monitor()
        for namespace, workload in (
            (SYSTEM_NAMESPACE, "deployment/kubeserial-controller"),
            (SYSTEM_NAMESPACE, "deployment/kubeserial-injector"),
            (NAMESPACE, "daemonset/kubeserial-monitor"),
        ):
            self.kubectl("rollout", "status", "-n", namespace, workload, "--timeout=180s", timeout=200)
        wait_until(self._webhook_has_ca, within=60, message="the injector to patch its caBundle")
        return self

    def _mount_testbeds_into_the_monitor(self) -> None:
        # Only this cluster's testbeds: the entry point takes the newest testbed of its node under
        # the mount, and another cluster's run (a soak, a second developer) has its own.
        root = str(self.usb_root)
        daemonset = self.cluster.get_json("daemonset", "kubeserial-monitor", "-n", NAMESPACE)
        if any(v["name"] == "simulated-usb" for v in daemonset["spec"]["template"]["spec"]["volumes"]):
            # A cluster reused during development: new testbeds, so new monitor pods.
            self.kubectl("rollout", "restart", "daemonset/kubeserial-monitor", "-n", NAMESPACE)
            return
        patch = [
            {
                "op": "add",
                "path": "/spec/template/spec/volumes/-",
                "value": {"name": "simulated-usb", "hostPath": {"path": root, "type": "Directory"}},
            },
            {
                "op": "add",
                "path": "/spec/template/spec/containers/0/volumeMounts/-",
                "value": {"name": "simulated-usb", "mountPath": root},
            },
        ]
        self.kubectl(
            "patch",
            "daemonset",
            "kubeserial-monitor",
            "-n",
            NAMESPACE,
            "--type=json",
            "-p",
            json.dumps(patch),
        )

    def _webhook_has_ca(self) -> bool:
        config = self.cluster.get_json("mutatingwebhookconfiguration", "kubeserial-injector")
        return all(w["clientConfig"].get("caBundle") for w in config["webhooks"])

    def stop(self) -> None:
        for usb in self.usb.values():
            usb.close()
        shutil.rmtree(self.usb_root, ignore_errors=True)
        if SIMULATED_USB_ROOT.exists() and not any(SIMULATED_USB_ROOT.iterdir()):
            SIMULATED_USB_ROOT.rmdir()

    # -- what a user would look at -----------------------------------------------------------------

    def get(self, *args: str) -> dict[str, Any]:
        out = self.kubectl("get", *args, "-o", "json", check=False)
        result: dict[str, Any] = json.loads(out.stdout) if out.returncode == 0 else {}
        return result

    def device_state(self, device: str) -> tuple[str | None, str | None]:
        obj = self.get("serialdevice", device)
        return condition_status(obj, c.AVAILABLE), (obj.get("status") or {}).get("nodeName")

    def condition(self, device: str, kind: str) -> dict[str, Any]:
        obj = self.get("serialdevice", device)
        return next((x for x in (obj.get("status") or {}).get("conditions", []) if x["type"] == kind), {})

    def running_pods(self, namespace: str, selector: str, *, node: str | None = None) -> list[dict[str, Any]]:
        pods = self.get("pods", "-n", namespace, "-l", selector).get("items", [])
        return [
            p
            for p in pods
            if p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
            and (node is None or p["spec"].get("nodeName") == node)
            and all(s.get("ready") for s in p["status"].get("containerStatuses", []))
        ]

    def gateway_pods(self, device: str, *, node: str | None = None) -> list[dict[str, Any]]:
        selector = f"app.kubernetes.io/name=kubeserial-gateway,{c.DEVICE_LABEL}={device}"
        return self.running_pods(NAMESPACE, selector, node=node)

    def container_pid(self, node: str, namespace: str, pod: str, container: str) -> int:
        """The host PID of a running container's main process (the nodes share the host's PID
        namespace), found through the node's containerd by the labels the kubelet gives it."""
        ctr = self.cluster.nodes[node].ctr
        for container_id in ctr("containers", "ls", "-q").split():
            labels = json.loads(ctr("containers", "info", container_id)).get("Labels") or {}
            if (
                labels.get("io.kubernetes.pod.namespace") == namespace
                and labels.get("io.kubernetes.pod.name") == pod
                and labels.get("io.kubernetes.container.name") == container
            ):
                for line in ctr("tasks", "ls").splitlines()[1:]:
                    task, pid, status, *_ = line.split()
                    if task == container_id and status == "RUNNING":
                        return int(pid)
        raise AssertionError(f"no running container {container} of {namespace}/{pod} on {node}")

    def container_logs(self, folder: Path, *namespaces: str) -> list[Path]:
        """Every container's log in the namespaces' pods, sidecars included, and the previous
        instance's of a restarted one, as the kubelet kept them: one file each under `folder`."""
        folder.mkdir(parents=True, exist_ok=True)
        written = []
        for namespace in namespaces:
            for pod in self.get("pods", "-n", namespace).get("items", []):
                name = pod["metadata"]["name"]
                status = pod.get("status") or {}
                for container in status.get("initContainerStatuses", []) + status.get(
                    "containerStatuses", []
                ):
                    for previous in (False, True) if container.get("restartCount") else (False,):
                        args = ["logs", "-n", namespace, name, "-c", container["name"]]
                        out = self.kubectl(*args, *(["--previous"] if previous else []), check=False)
                        if out.returncode == 0:
                            path = (
                                folder / f"{namespace}_{name}_{container['name']}{'_previous' * previous}.log"
                            )
                            path.write_text(out.stdout)
                            written.append(path)
        return written

    def pod_metrics(self, namespace: str, pod: str, port: int) -> str:
        """/metrics of a pod's port through the apiserver's pod proxy."""
        path = f"/api/v1/namespaces/{namespace}/pods/{pod}:{port}/proxy/metrics"
        return self.kubectl("get", "--raw", path).stdout

    def gateway_metric(self, device: str, name: str) -> float:
        pods = self.gateway_pods(device)
        assert len(pods) == 1, f"expected one running gateway for {device}, found {len(pods)}"
        return metric_sum(self.pod_metrics(NAMESPACE, pods[0]["metadata"]["name"], GATEWAY_HEALTH_PORT), name)

    def bridge_metric(self, namespace: str, pod: str, name: str) -> float:
        return metric_sum(self.pod_metrics(namespace, pod, BRIDGE_HEALTH_PORT), name)

    def diagnostics(self, *namespaces: str) -> str:
        """restartCount, Events and container logs of KubeSerial's pods and of the given namespaces."""
        return "\n".join(self.cluster.diagnostics(ns) for ns in (SYSTEM_NAMESPACE, NAMESPACE, *namespaces))


@contextlib.contextmanager
def running_stack(workdir: Path, *, cluster_dir: Path | None = None) -> Iterator[RealStack]:
    """A RealStack on a RealCluster of its own under `workdir`, or on the running cluster in
    `cluster_dir` or, failing that, the one $KUBESERIAL_E2E_CLUSTER names (development:
    `python -m kubeserial_testing.nodes up --dir DIR`). Prints the diagnostics when it cannot start."""
    existing = cluster_dir or os.environ.get("KUBESERIAL_E2E_CLUSTER")
    with contextlib.ExitStack() as scope:
        if existing:
            cluster = RealCluster(Path(existing), detached=True)
        else:
            cluster = scope.enter_context(RealCluster(workdir / "cluster"))
        real = RealStack(cluster, workdir)
        scope.callback(real.stop)
        try:
            real.start()
        except Exception:
            print(real.diagnostics())
            raise
        yield real


def annotated_busybox_pod(
    name: str, *, namespace: str, device: str, node: str, command: list[str]
) -> dict[str, Any]:
    """A consumer as a user writes it: busybox (no Python, no socat), a non-root uid, pinned to
    `node`, asking for `device` with the annotation; the injector adds the bridge and the tty."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "annotations": {c.INJECT_ANNOTATION: device}},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": node},
            "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
            "containers": [
                {
                    "name": "app",
                    "image": "kubeserial/busybox:e2e",
                    "imagePullPolicy": "Never",
                    "command": command,
                }
            ],
        },
    }


APP_RECEIVED = "/tmp/received"  # what the app container read from its tty (app_command)


def app_command(tty_env: str, stty: str) -> list[str]:
    """An application's container command (busybox): it opens its tty at start, sets it up and
    keeps everything it reads in APP_RECEIVED. If the tty ever closed under it, `cat` would end
    and the container would restart (the test checks restartCount)."""
    return ["sh", "-c", f'exec 3<>"${tty_env}"; stty -F "${tty_env}" {stty}; exec cat <&3 > {APP_RECEIVED}']


class AppTty:
    """The test's hands on an app container started with app_command: each write and each read is
    a one-shot `kubectl exec` of busybox (printf into the tty; tail of APP_RECEIVED).

    Not long-lived `kubectl exec` streams: on these nodes (kubectl 1.33, containerd 1.6,
    websocket and SPDY alike) the remote stdin of an `exec -i` fed from a Python pipe ended within
    a second, and the stdout of a long-lived exec sometimes delivered nothing at all (its first
    line, written right after the tty opened, never arrived in 60 s), in about half the runs.
    One-shot execs delivered every byte in every run."""

    def __init__(self, stack: RealStack, *, namespace: str, pod: str, container: str, tty: str) -> None:
        self.tty = tty
        self.exec_ = ["kubectl", f"--kubeconfig={stack.cluster.kubeconfig}", "exec", "-n", namespace, pod]
        self.exec_ += ["-c", container, "--", "sh", "-c"]
        self.offset = 0  # bytes of APP_RECEIVED already returned

    def _exec(self, script: str, *args: str) -> bytes:
        result = subprocess.run([*self.exec_, script, "sh", *args], capture_output=True, timeout=60)
        if result.returncode != 0:
            raise AssertionError(f"{script!r} in the app failed: {result.stderr.decode(errors='replace')}")
        return result.stdout

    def write(self, data: bytes) -> None:
        """All of `data` written to the tty, in order, before this returns."""
        octal = "".join(f"\\{byte:03o}" for byte in data)  # busybox printf: \NNN is any byte
        self._exec(f'printf "$1" > {self.tty}', octal)

    def read_exactly(self, count: int, *, within: float = 30) -> bytes:
        """The next `count` bytes the app read from its tty."""
        data = b""
        deadline = time.monotonic() + within
        while len(data) < count:
            data += self._exec(
                f'tail -c +"$1" {APP_RECEIVED} | head -c "$2"',
                str(self.offset + len(data) + 1),
                str(count - len(data)),
            )
            if len(data) < count and time.monotonic() > deadline:
                raise AssertionError(f"the app read {data!r} within {within}s, wanted {count} bytes")
        self.offset += count
        return data
