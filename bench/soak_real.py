"""Chaos soak on real nodes (issue 15): a device with an open session streams numbered records both
ways while random faults hit; the invariants are checked all along; stops by itself.

KubeSerial runs as real pods from the e2e overlay on two real kubelets (kubeserial_testing.realstack).
A simulated FT232R is plugged into node-a; the test plays the device on its pty master. The
session is a raw TCP client (socat, run from the host) in the network namespace of a client pod on
node-b that carries the device's connect label (so the gateway's NetworkPolicy admits it, where
policies are enforced), connected to the gateway's Service ClusterIP through kube-proxy,
reconnecting whenever it ends. Both sides send numbered records, 100 a second each way.

Faults, one at a time, chosen at random (seeded): delete the controller leader's pod, the monitor
pod of the device's node, the gateway pod, an injector pod (each --force, no grace: a crash);
restart the apiserver; unplug the adapter and plug it into a random node; cut a node's link for
PARTITION_SECONDS. After each: wait until everything works again (Available on the adapter's node,
one Ready gateway there, Free=False for the open session, a Ready controller holding the Lease,
the injector's replicas Ready, records arriving both ways after the fault ended), then
CALM_SECONDS of quiet.

Invariants (kubeserial_testing.soak): never two nodes bound to one device (sampled every
SAMPLE_SECONDS); Free truthful within FREE_BOUND in calm periods; every record in order, gaps only
across a reconnect, and counted; each fault converged within CONVERGE_BOUND of its end.

    .venv/bin/python bench/soak_real.py [--seconds 600] [--seed 1] [--cluster DIR]

Prints the report and writes bench/results/soak_real.json; exits 1 on any violation.
"""

import argparse
import contextlib
import json
import random
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubeserial_common import constants as c
from kubeserial_common.conditions import condition_status
from kubeserial_common.core.names import connect_labels
from kubeserial_testing.objects import kubeserial_for
from kubeserial_testing.realstack import NAMESPACE, SYSTEM_NAMESPACE, RealStack, running_stack, wait_until
from kubeserial_testing.soak import FaultRecord, FreeSample, SoakReport, bound_nodes, free_violations
from kubeserial_testing.soak_ends import ClientEnd, DeviceEnd
from kubeserial_testing.umockdev import UsbAdapter

RESULTS = Path(__file__).parent / "results"
NODES = ("node-a", "node-b")
CLIENT_NODE = "node-b"
CLIENT_NAMESPACE = "soak"
CLIENT_POD = "soak-client"
RAW_PORT = 3333
SAMPLE_SECONDS = 2.0
PARTITION_SECONDS = 20.0
CALM_SECONDS = 15.0
CONVERGE_BOUND = 30.0
CONVERGE_GIVE_UP = 120.0
FREE_BOUND = 5.0  # in calm periods: Free said the opposite of the session for at most this long


class Soak:
    def __init__(self, stack: RealStack, *, device: str, adapter: UsbAdapter, seed: int, owns_cluster: bool):
        self.stack = stack
        self.device = device
        self.adapter = adapter
        self.rng = random.Random(seed)
        self.owns_cluster = owns_cluster
        self.adapter_node = "node-a"
        self._address = "0.0.0.0"  # the gateway Service's ClusterIP as last read
        self.device_end = DeviceEnd()
        self.client: ClientEnd | None = None
        self.calm = False
        self.samples: list[FreeSample] = []
        self.binding_violations: list[tuple[float, list[str]]] = []
        self.plugs: list[float] = []
        self.faults: list[FaultRecord] = []
        self._stop = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name="sampler", daemon=True)

    # -- set-up ------------------------------------------------------------------------------------

    def start(self) -> None:
        stack = self.stack
        stack.kubectl(
            "apply", "-f", "-", input=json.dumps(kubeserial_for("soak", {self.device: self.adapter.serial}))
        )
        wait_until(
            lambda: stack.condition(self.device, c.READY).get("status") == "True", within=60, message="Ready"
        )
        self._plug("node-a")
        wait_until(lambda: self._device_ok(), within=180, message="device Available with its gateway")
        netns = f"/proc/{self._client_pod_pid()}/ns/net"
        self.client = ClientEnd(lambda: ["nsenter", f"--net={netns}", *socat(self._gateway_address())])
        self.device_end.start()
        self.client.start()
        self._sampler.start()
        since = time.monotonic()
        wait_until(lambda: self._flowing(since), within=60, message="records flowing both ways")
        self.calm = True

    def _gateway_address(self) -> str:
        """The gateway Service's ClusterIP, read for each connection: the Service goes with the
        gateway when the device is unavailable and comes back with a new address."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            service = self.stack.get("service", f"{self.device}-gateway", "-n", NAMESPACE)
            self._address = (service.get("spec") or {}).get("clusterIP") or self._address
        return self._address

    def _client_pod_pid(self) -> int:
        """A pod on CLIENT_NODE labelled as connected to the device; the PID of its container (in
        the host's PID namespace: the nodes share it) whose network namespace socat joins."""
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": CLIENT_POD,
                "namespace": CLIENT_NAMESPACE,
                "labels": connect_labels([self.device]),
            },
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": CLIENT_NODE},
                "containers": [
                    {
                        "name": "client",
                        "image": "kubeserial/busybox:e2e",
                        "imagePullPolicy": "Never",
                        "command": ["sleep", "86400"],
                    }
                ],
            },
        }
        self.stack.kubectl("create", "namespace", CLIENT_NAMESPACE, check=False)
        self.stack.kubectl("apply", "-f", "-", input=json.dumps(pod))
        self.stack.kubectl(
            "wait", "--for=condition=Ready", "pod", CLIENT_POD, "-n", CLIENT_NAMESPACE, "--timeout=180s"
        )
        return self.stack.container_pid(CLIENT_NODE, CLIENT_NAMESPACE, CLIENT_POD, "client")

    def _plug(self, node: str) -> None:
        self.stack.usb[node].plug(self.adapter)
        self.adapter_node = node
        self.plugs.append(time.monotonic())
        self.device_end.attach(self.stack.usb[node].device_side(self.adapter))

    def _unplug(self) -> None:
        self.device_end.attach(None)
        self.stack.usb[self.adapter_node].unplug(self.adapter)

    # -- what "working" means --------------------------------------------------------------------

    def _device_ok(self) -> bool:
        state = self.stack.device_state(self.device)
        return (
            state == ("True", self.adapter_node)
            and len(self.stack.gateway_pods(self.device, node=self.adapter_node)) == 1
        )

    def _flowing(self, since: float) -> bool:
        assert self.client is not None
        return self.client.check.last_time > since and self.device_end.check.last_time > since

    def _controller_leads(self) -> bool:
        lease = self.stack.get("lease", "kubeserial-controller", "-n", SYSTEM_NAMESPACE)
        holder = str((lease.get("spec") or {}).get("holderIdentity") or "").split("_")[0]
        pods = self.stack.running_pods(SYSTEM_NAMESPACE, "app.kubernetes.io/component=controller")
        return any(p["metadata"]["name"] == holder for p in pods)

    def _injector_ready(self) -> bool:
        deployment = self.stack.get("deployment", "kubeserial-injector", "-n", SYSTEM_NAMESPACE)
        wanted = (deployment.get("spec") or {}).get("replicas", 1)
        return bool((deployment.get("status") or {}).get("readyReplicas") == wanted)

    def _free_says_in_use(self) -> bool:
        return condition_status(self.stack.get("serialdevice", self.device), c.FREE) == "False"

    def conditions(self, since: float) -> dict[str, bool]:
        return {
            "flowing": self._flowing(since),
            "device": self._device_ok(),
            "free": self._free_says_in_use(),
            "controller": self._controller_leads(),
            "injector": self._injector_ready(),
        }

    def converged(self, since: float) -> bool:
        return (
            self._flowing(since)
            and self._device_ok()
            and self._free_says_in_use()
            and self._controller_leads()
            and self._injector_ready()
        )

    # -- invariants sampled all along --------------------------------------------------------------

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            assert self.client is not None
            try:
                out = self.stack.kubectl(
                    "get", "serialports,serialdevices", "-o", "json", check=False, timeout=20
                )
            except subprocess.TimeoutExpired:  # the apiserver is away: a sample that says so
                out = subprocess.CompletedProcess([], 1, "", "timed out")
            now = time.monotonic()
            if out.returncode != 0:
                self.samples.append(FreeSample(now, None, self.client.session_up, False))
                continue
            items = json.loads(out.stdout).get("items", [])
            ports = [i for i in items if i.get("kind") == "SerialPort"]
            nodes = bound_nodes(ports, self.device)
            if len(nodes) > 1:
                self.binding_violations.append((now, sorted(nodes)))
            device: dict[str, Any] = next(
                (
                    i
                    for i in items
                    if i.get("kind") == "SerialDevice" and i["metadata"]["name"] == self.device
                ),
                {},
            )
            self.samples.append(
                FreeSample(now, condition_status(device, c.FREE), self.client.session_up, self.calm)
            )

    # -- faults ------------------------------------------------------------------------------------

    def _delete_pod(
        self, selector: str, *, namespace: str = NAMESPACE, node: str | None = None, name: str | None = None
    ) -> str:
        pods = self.stack.running_pods(namespace, selector, node=node)
        chosen = name or (self.rng.choice(pods)["metadata"]["name"] if pods else "")
        if chosen:
            self.stack.kubectl(
                "delete",
                "pod",
                chosen,
                "-n",
                namespace,
                "--grace-period=0",
                "--force",
                "--wait=false",
                check=False,
            )
        return chosen or "none running"

    def kill_controller_leader(self) -> str:
        lease = self.stack.get("lease", "kubeserial-controller", "-n", SYSTEM_NAMESPACE)
        holder = str((lease.get("spec") or {}).get("holderIdentity") or "").split("_")[0]
        return self._delete_pod(
            "app.kubernetes.io/component=controller", namespace=SYSTEM_NAMESPACE, name=holder or None
        )

    def kill_monitor(self) -> str:
        return self._delete_pod("app.kubernetes.io/name=kubeserial-monitor", node=self.adapter_node)

    def kill_gateway(self) -> str:
        return self._delete_pod(f"app.kubernetes.io/name=kubeserial-gateway,{c.DEVICE_LABEL}={self.device}")

    def kill_injector(self) -> str:
        return self._delete_pod("app.kubernetes.io/component=injector", namespace=SYSTEM_NAMESPACE)

    def restart_apiserver(self) -> str:
        self.stack.cluster.plane.restart_apiserver()
        return "stopped and started on its port"

    def replug(self) -> str:
        before = self.adapter_node
        self._unplug()
        self._plug(self.rng.choice(NODES))
        return f"{before} -> {self.adapter_node}"

    def partition(self) -> str:
        node = self.rng.choice(NODES)
        self.stack.cluster.cut_link(node)
        try:
            self._stop.wait(PARTITION_SECONDS)
        finally:
            self.stack.cluster.restore_link(node)
        return f"{node} cut for {PARTITION_SECONDS:.0f}s"

    def faults_available(self) -> list[Callable[[], str]]:
        kinds = [self.kill_controller_leader, self.kill_monitor, self.kill_gateway, self.kill_injector]
        kinds += [self.replug, self.partition]
        if self.owns_cluster:  # a reused cluster's apiserver belongs to another process
            kinds.append(self.restart_apiserver)
        return kinds

    def wait_converged(self, since: float) -> float | None:
        """When everything worked again after `since`, polled each second; None: not within
        CONVERGE_GIVE_UP (the soak goes on, the report says so)."""
        deadline = since + CONVERGE_GIVE_UP
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):  # an apiserver that hangs: not yet
                if self.converged(since):
                    return time.monotonic()
            self._stop.wait(1.0)
        print(f"  not converged: {self.conditions(since)}", flush=True)
        return None

    def run(self, seconds: float) -> SoakReport:
        started = time.monotonic()
        end = started + seconds
        while time.monotonic() + CONVERGE_BOUND + CALM_SECONDS < end:
            fault = self.rng.choice(self.faults_available())
            self.calm = False
            at = time.monotonic()
            detail = fault()
            recovered = time.monotonic()
            converged_at = self.wait_converged(recovered)
            after = None if converged_at is None else converged_at - recovered
            record = FaultRecord(
                fault.__name__.replace("_", "-"), detail, at - started, recovered - started, after
            )
            self.faults.append(record)
            print(f"[{at - started:6.1f}s] {record.kind} ({detail}): converged after {after}", flush=True)
            self.calm = converged_at is not None
            self._stop.wait(CALM_SECONDS)
        return self.report(time.monotonic() - started, started)

    def report(self, seconds: float, started: float) -> SoakReport:
        assert self.client is not None
        reconnects = sorted(self.client.reconnects + self.plugs)
        shifted = [FreeSample(s.at - started, s.free, s.session_up, s.calm) for s in self.samples]
        return SoakReport(
            seconds=seconds,
            faults=self.faults,
            directions=[self.client.check, self.device_end.check],
            reconnects=reconnects,
            binding_violations=[(t - started, nodes) for t, nodes in self.binding_violations],
            free_violation_spans=free_violations(shifted, bound=FREE_BOUND),
            samples=len(self.samples),
            free_bound=FREE_BOUND,
            converge_bound=CONVERGE_BOUND,
        )

    def stop(self) -> None:
        self._stop.set()
        if self.client is not None:
            self.client.stop()
        self.device_end.stop()
        self._sampler.join(30)


def socat(address: str) -> list[str]:
    keepalive = "keepalive,keepidle=2,keepintvl=2,keepcnt=3"
    return ["socat", "-b65536", "-", f"TCP:{address}:{RAW_PORT},nodelay,{keepalive},connect-timeout=5"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cluster", type=Path, help="reuse a cluster from `nodes up --dir DIR`")
    parser.add_argument("--workdir", type=Path, help="keep the cluster's logs here (default: a temp dir)")
    args = parser.parse_args()
    suffix = uuid.uuid4().hex[:4]
    with contextlib.ExitStack() as scope:
        if args.workdir:
            workdir = args.workdir.resolve()
            workdir.mkdir(parents=True, exist_ok=True)
        else:
            workdir = Path(scope.enter_context(tempfile.TemporaryDirectory(prefix="kubeserial-soak-")))
        stack = scope.enter_context(running_stack(workdir, cluster_dir=args.cluster))
        soak = Soak(
            stack,
            device=f"soak-{suffix}",
            adapter=UsbAdapter(serial=f"SK{suffix.upper()}"),
            seed=args.seed,
            owns_cluster=not args.cluster,
        )
        scope.callback(soak.stop)
        try:
            soak.start()
        except Exception:
            print(stack.diagnostics())
            raise
        report = soak.run(args.seconds)
        summary = report.summary()
        summary["seed"] = args.seed
        print(json.dumps(summary, indent=2))
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "soak_real.json").write_text(json.dumps(summary, indent=2) + "\n")
        return 1 if summary["violations"] else 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
