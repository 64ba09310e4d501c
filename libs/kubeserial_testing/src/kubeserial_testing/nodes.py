"""A real Kubernetes cluster for the end-to-end tests: the project's control plane plus two real
nodes (kubelet, containerd, kube-proxy, CNI bridge), CoreDNS, all in network namespaces created here.

    with RealCluster(workdir) as cluster:          # ~20 s warm; see README of tests/e2e
        cluster.import_image("kubeserial/gateway:latest")   # docker tag (project dockerd) or tarball
        cluster.kubectl("apply", "-f", "-", input=manifest)
        cluster.stop_node("node-a"); cluster.start_node("node-a")   # SIGKILL everything / "reboot"
        cluster.cut_link("node-a"); cluster.restore_link("node-a")   # silent network death
        print(cluster.diagnostics("kubeserial-system"))

    python -m kubeserial_testing.nodes up --dir DIR      # leaves it running; prints KUBECONFIG
    python -m kubeserial_testing.nodes import --dir DIR kubeserial/gateway:latest   # into every node
    python -m kubeserial_testing.nodes down --dir DIR    # also after a crashed run (from DIR/state.json)
    python -m kubeserial_testing.nodes down --all        # every cluster this machine still has

Topology (10.77.0.0/24, REAL-NODES.md has why each setting is needed):

    netns ks-<id>-switch: bridge br0 10.77.0.1 = etcd, kube-apiserver (:6443), controller-manager,
                          scheduler; routes to each node's pod CIDR via the node.
    netns ks-<id>-node-a: eth0 10.77.0.11 (veth to br0), cni0 + pods 10.244.0.0/24, containerd,
                          kubelet, kube-proxy (iptables); ip_forward and bridge-nf-call-iptables on.
    netns ks-<id>-node-b: eth0 10.77.0.12, pods 10.244.1.0/24.
    host:                 127.0.0.1:<free port> -> 10.77.0.1:6443 (netns_forward); nothing else.

Host hygiene: each node's containerd, kubelet and kube-proxy run in a mount namespace of their own
(made by a small holder process) where /run/containerd, /var/lib/cni, /var/log/containers and
/run/kubeserial-node are private tmpfs (containerd 1.6's fixed paths, libcni's cache, the
kubelet's log links) and where the kernel settings the kubelet insists on (vm.overcommit_memory,
kernel.panic, ...) read as expected, so it never writes the host's. Every process of the cluster
runs in the pids cgroup /kubeserial-<id>: stopping a node or the cluster is "SIGKILL the cgroup",
which works from state alone after a crash, and the node's mounts vanish with its mount namespace.
"""

import argparse
import atexit
import concurrent.futures
import contextlib
import fcntl
import functools
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import yaml

from kubeserial_testing import nodeimages
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane, control_plane_binaries

SWITCH_IP = "10.77.0.1"
PREFIX_LEN = 24
CLUSTER_CIDR = "10.244.0.0/16"
DNS_SERVICE_IP = "10.96.0.10"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN = "/usr/lib/cni"
# Inside each node's mount namespace only (a private tmpfs): short socket paths, kubelet root.
NODE_RUN = "/run/kubeserial-node"
# Host directories that become private tmpfs mountpoints in the nodes' mount namespaces. Created
# when missing (recorded, removed again by the last cluster to go down).
# /run/udev: a real node runs udev, and the monitor DaemonSet mounts its folder (type Directory);
# these nodes have none, so each gets an empty one of its own.
# /var/lib/kubelet: the kubelet binds its device-plugin socket at the fixed path
# /var/lib/kubelet/device-plugins/kubelet.sock whatever --root-dir says; shared, two kubelets
# starting at once raced for it ("bind: address already in use", a node never Ready), and it
# was left on the host.
PRIVATE_DIRS = (
    "/run/containerd",
    "/var/lib/cni",
    "/var/log/containers",
    NODE_RUN,
    "/run/udev",
    "/var/lib/kubelet",
)
CGROUP_ROOT = Path("/sys/fs/cgroup")
STATE_ROOT = nodeimages.CACHE_ROOT / "nodes"
# The kubelet sets these host-wide sysctls unless they already read so (protectKernelDefaults makes
# it refuse instead). In the node's mount namespace files with these values are bound over them.
KUBELET_SYSCTLS = {
    "vm/overcommit_memory": "1",
    "vm/panic_on_oom": "0",
    "kernel/panic": "10",
    "kernel/panic_on_oops": "1",
    "kernel/keys/root_maxkeys": "1000000",
    "kernel/keys/root_maxbytes": "25000000",
}


@dataclass(frozen=True)
class NodeSpec:
    name: str
    ip: str
    pod_cidr: str


DEFAULT_NODES = (
    NodeSpec("node-a", "10.77.0.11", "10.244.0.0/24"),
    NodeSpec("node-b", "10.77.0.12", "10.244.1.0/24"),
)


def cluster_id(workdir: Path) -> str:
    return hashlib.sha256(str(workdir.resolve()).encode()).hexdigest()[:6]


def run(argv: list[str], *, check: bool = True, timeout: float = 60, input: str | None = None) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {result.returncode}: {result.stderr.strip()}")
    return result.stdout


def in_netns(netns: str, *argv: str) -> list[str]:
    # nsenter, not `ip netns exec`: that also unshares the mount namespace (REAL-NODES.md).
    return ["nsenter", f"--net=/run/netns/{netns}", *argv]


def wait_until(what: str, check: Callable[[], bool], *, timeout: float, interval: float = 0.25) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f}s")
        time.sleep(interval)


# -- cgroups: one pids subtree per cluster, so everything can be killed from its name alone ---------


def _hierarchies() -> list[Path]:
    return sorted(p for p in CGROUP_ROOT.iterdir() if p.is_dir() and (p / "cgroup.procs").exists())


def make_cgroup(path: str) -> None:
    """Create `path` (e.g. /kubeserial-x/node-a) in every hierarchy, cpuset filled from its parent."""
    for hierarchy in _hierarchies():
        parts = [p for p in path.split("/") if p]
        for depth in range(1, len(parts) + 1):
            directory = hierarchy.joinpath(*parts[:depth])
            if directory.exists():
                continue
            directory.mkdir()
            if hierarchy.name == "cpuset":
                for knob in ("cpuset.cpus", "cpuset.mems"):
                    (directory / knob).write_text((directory.parent / knob).read_text())


def cgroup_pids(path: str) -> list[int]:
    pids: list[int] = []
    top = CGROUP_ROOT / "pids" / path.strip("/")
    if not top.exists():
        return pids
    for directory, _, _ in os.walk(top):
        with contextlib.suppress(OSError):
            pids += [int(x) for x in Path(directory, "cgroup.procs").read_text().split()]
    return pids


def kill_cgroup(path: str, *, timeout: float = 20, reap: tuple[subprocess.Popen[bytes], ...] = ()) -> None:
    """SIGKILL every process under `path` (pids hierarchy) until none is left; `reap` are our own
    children among them (waited for, so that no zombie is left)."""
    deadline = time.monotonic() + timeout
    while pids := cgroup_pids(path):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in reap:
            proc.poll()
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes left in cgroup {path}: {pids}")
        time.sleep(0.05)


def remove_cgroup(path: str, *, keep_top: bool = False) -> None:
    """rmdir `path` and everything below it in every hierarchy (after kill_cgroup)."""
    for hierarchy in _hierarchies():
        top = hierarchy / path.strip("/")
        if not top.exists():
            continue
        directories = [Path(d) for d, _, _ in os.walk(top)]
        for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
            if keep_top and directory == top:
                continue
            for _ in range(50):  # a just-killed task can hold the cgroup for a moment
                try:
                    directory.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


# -- host directories shared by all clusters (mountpoints for the private tmpfs) -------------------


def _lock_file(name: str) -> int:
    STATE_ROOT.mkdir(parents=True, exist_ok=True)
    return os.open(STATE_ROOT / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _created_dirs_file() -> Path:
    return STATE_ROOT / "created-host-dirs.json"


def prepare_host_dirs() -> int:
    """Create the missing mountpoints and return an fd holding a shared lock on `host-in-use.lock`:
    node holders inherit it, so the directories are removed only once no cluster is left. The
    record itself is guarded by `host-dirs.lock`, held only for a moment (not for a cluster's life:
    a second cluster must not wait for the first to go down)."""
    guard = _lock_file("host-dirs.lock")
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        record = _created_dirs_file()
        created: list[str] = json.loads(record.read_text()) if record.exists() else []
        for directory in (*PRIVATE_DIRS, "/run/netns"):
            if not os.path.exists(directory):
                if directory != "/run/netns":  # `ip netns add` makes that one (and mounts it)
                    os.makedirs(directory)
                created.append(directory)
        record.write_text(json.dumps(sorted(set(created))))
        in_use = _lock_file("host-in-use.lock")
        fcntl.flock(in_use, fcntl.LOCK_SH)
        return in_use
    finally:
        os.close(guard)


def release_host_dirs() -> None:
    """Remove the recorded directories if no cluster holds them any more and they are empty."""
    guard = _lock_file("host-dirs.lock")
    in_use = _lock_file("host-in-use.lock")
    try:
        fcntl.flock(guard, fcntl.LOCK_EX)
        try:
            fcntl.flock(in_use, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return  # another cluster (its node holders) still uses them
        record = _created_dirs_file()
        created: list[str] = json.loads(record.read_text()) if record.exists() else []
        left = []
        for directory in created:
            if directory == "/run/netns" and os.path.isdir(directory) and not os.listdir(directory):
                subprocess.run(["umount", directory], capture_output=True, check=False)
            try:
                os.rmdir(directory)
            except FileNotFoundError:
                pass
            except OSError:
                left.append(directory)
        record.write_text(json.dumps(left))
    finally:
        os.close(in_use)
        os.close(guard)


# -- the cluster ------------------------------------------------------------------------------------


def _kubelet_config(node: "RealNode") -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.spec.ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        # The apiserver authenticates with the admin client cert (system:masters); others get 401.
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(node.cluster.plane.ca_file)},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": "unix:///run/containerd/containerd.sock",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup,
        "failSwapOn": False,
        "podLogsDir": f"{NODE_RUN}/pod-logs",
        "clusterDomain": CLUSTER_DOMAIN,
        "clusterDNS": [DNS_SERVICE_IP],
        # No host search domains or upstream servers in pods: the cluster has no way out anyway.
        "resolvConf": str(node.dir / "resolv.conf"),
        "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        # Images are imported by hand and cannot be pulled again: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "syncFrequency": "10s",
        "fileCheckFrequency": "10s",
        "nodeStatusReportFrequency": "10s",
        # Lease renewed every 2.5 s: node lifecycle notices a dead node within its grace period.
        "nodeLeaseDurationSeconds": 10,
        "serializeImagePulls": False,
        # Refuse (rather than write) host sysctls; the node's mount namespace shows the right values.
        "protectKernelDefaults": True,
    }


def _containerd_config(node: "RealNode") -> str:
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{node.dir / "containerd"}"
state = "/run/containerd"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "/run/containerd/containerd.sock"

[plugins."io.containerd.internal.v1.opt"]
  path = "{node.dir / "opt"}"

[{cri}]
  sandbox_image = "{nodeimages.PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  # Pod netns files under the (private) state dir, not in the host's /run/netns.
  netns_mounts_under_state_dir = true
  # This machine lacks CAP_SYS_RESOURCE: runc cannot lower oom_score_adj (REAL-NODES.md).
  restrict_oom_score_adj = true
  [{cri}.cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{node.dir / "cni"}"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
"""


def _cni_config(node: "RealNode") -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": "kubeserial",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": True,
                "ipMasq": False,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": node.spec.pod_cidr}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": "/run/containerd/cni-ipam",
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _holder_script(node: "RealNode", pause: Path) -> str:
    lines = [
        "set -e",
        f"mount -t tmpfs -o mode=0755,size=64m kubeserial-node {NODE_RUN}",
        f"mkdir -p {NODE_RUN}/kubelet {NODE_RUN}/pod-logs",
        f"mount --bind {node.dir / 'kubelet'} {NODE_RUN}/kubelet",
        f"mount --bind {node.dir / 'pod-logs'} {NODE_RUN}/pod-logs",
        "mount -t tmpfs -o mode=0711 kubeserial-containerd /run/containerd",
        "mount -t tmpfs -o mode=0755 kubeserial-cni /var/lib/cni",
        "mount -t tmpfs -o mode=0755 kubeserial-logs /var/log/containers",
        "mount -t tmpfs -o mode=0755 kubeserial-udev /run/udev",
        "mount -t tmpfs -o mode=0755 kubeserial-kubelet /var/lib/kubelet",
    ]
    lines += [
        f"mount --bind {node.dir / 'sysctl' / key.replace('/', '.')} /proc/sys/{key}"
        for key in KUBELET_SYSCTLS
    ]
    lines += [f": > {node.dir / 'holder.ready'}", f"exec {pause}"]
    return "\n".join(lines)


@dataclass
class RealNode:
    cluster: "RealCluster"
    spec: NodeSpec
    holder: subprocess.Popen[bytes] | None = None
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dir(self) -> Path:
        return self.cluster.workdir / "nodes" / self.name

    @property
    def netns(self) -> str:
        return f"ks-{self.cluster.id}-{self.name}"

    @property
    def cgroup(self) -> str:
        """The kubelet's cgroupRoot; containerd, kubelet and kube-proxy sit in its `system` child."""
        return f"{self.cluster.cgroup}/{self.name}"

    @property
    def running(self) -> bool:
        return self.holder_pid() is not None

    def holder_pid(self) -> int | None:
        """The mount namespace holder's PID: ours, or recorded by the process that ran `up`."""
        if self.holder is not None:
            return self.holder.pid if self.holder.poll() is None else None
        with contextlib.suppress(OSError, ValueError):
            pid, start = (self.dir / "holder.pid").read_text().split()
            if _start_time(int(pid)) == start:
                return int(pid)
        return None

    def enter(self, *argv: str) -> list[str]:
        """argv run in this node's network and mount namespaces (containerd's view)."""
        pid = self.holder_pid()
        if pid is None:
            raise RuntimeError(f"{self.name} is not running")
        return ["nsenter", f"--net=/run/netns/{self.netns}", f"--mount=/proc/{pid}/ns/mnt", *argv]

    def ctr(self, *args: str, timeout: float = 120) -> str:
        return run(self.enter("ctr", "-n", "k8s.io", *args), timeout=timeout)

    def _spawn(
        self, name: str, argv: list[str], *, pass_fds: tuple[int, ...] = ()
    ) -> subprocess.Popen[bytes]:
        logs = self.dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        procs = CGROUP_ROOT / "pids" / self.cgroup.strip("/") / "system" / "cgroup.procs"
        with open(logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                ["sh", "-c", f'echo $$ > {procs} && exec "$@"', "sh", *argv],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                pass_fds=pass_fds,
            )
        self.processes[name] = proc
        return proc

    def write_configs(self) -> None:
        for sub in ("kubelet", "pod-logs", "containerd", "opt", "sysctl", "cni", "logs"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        for key, value in KUBELET_SYSCTLS.items():
            (self.dir / "sysctl" / key.replace("/", ".")).write_text(value + "\n")
        (self.dir / "resolv.conf").write_text("# no upstream DNS: pods use the cluster's CoreDNS\n")
        (self.dir / "containerd.toml").write_text(_containerd_config(self))
        (self.dir / "cni" / "10-kubeserial.conflist").write_text(json.dumps(_cni_config(self), indent=2))
        (self.dir / "kubelet.yaml").write_text(yaml.safe_dump(_kubelet_config(self)))

    def start(self) -> None:
        """Start (or restart after stop()) containerd, import the images, start kubelet + kube-proxy."""
        if self.running:
            return
        cluster = self.cluster
        self.write_configs()
        make_cgroup(f"{self.cgroup}/system")
        ready = self.dir / "holder.ready"
        ready.unlink(missing_ok=True)
        self.holder = self._spawn(
            "holder",
            in_netns(
                self.netns,
                "unshare",
                "--mount",
                "--propagation",
                "slave",
                "sh",
                "-c",
                _holder_script(self, cluster.pause_binary),
            ),
            pass_fds=(cluster.host_lock_fd,) if cluster.host_lock_fd is not None else (),
        )
        wait_until(f"{self.name} mount namespace", lambda: ready.exists() or self.holder_died(), timeout=20)
        if self.holder_died():
            raise RuntimeError(f"{self.name}: namespace holder failed; see {self.dir}/logs/holder.log")
        (self.dir / "holder.pid").write_text(f"{self.holder.pid} {_start_time(self.holder.pid)}")
        self._spawn("containerd", self.enter("containerd", "--config", str(self.dir / "containerd.toml")))
        wait_until(f"{self.name} containerd", self._containerd_answers, timeout=30)
        for image in cluster.all_images():
            self.ctr("images", "import", "--all-platforms", str(image))
        bins = cluster.binaries
        kubeconfig = str(cluster.plane.internal_kubeconfig)
        self._spawn(
            "kubelet",
            self.enter(
                str(bins / "kubelet"),
                f"--config={self.dir / 'kubelet.yaml'}",
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={self.name}",
                f"--node-ip={self.spec.ip}",
                f"--root-dir={NODE_RUN}/kubelet",
                f"--cert-dir={NODE_RUN}/kubelet/pki",
                "--v=2",
            ),
        )
        self._spawn(
            "kube-proxy",
            self.enter(
                str(bins / "kube-proxy"),
                f"--kubeconfig={kubeconfig}",
                f"--hostname-override={self.name}",
                "--proxy-mode=iptables",
                f"--cluster-cidr={CLUSTER_CIDR}",
                # 0: leave the machine-wide conntrack table size and timeouts alone.
                "--conntrack-max-per-core=0",
                "--conntrack-tcp-timeout-established=0",
                "--conntrack-tcp-timeout-close-wait=0",
                "--metrics-bind-address=127.0.0.1:10249",
                "--healthz-bind-address=127.0.0.1:10256",
                "--v=1",
            ),
        )

    def kube_proxy_synced(self) -> bool:
        """kube-proxy's healthz answers 200 once its first sync of Service rules is done."""
        probe = ["curl", "-sf", "-m", "2", "-o", "/dev/null", "http://127.0.0.1:10256/healthz"]
        return subprocess.run(in_netns(self.netns, *probe), capture_output=True, check=False).returncode == 0

    def holder_died(self) -> bool:
        return self.holder is None or self.holder.poll() is not None

    def _containerd_answers(self) -> bool:
        proc = self.processes.get("containerd")
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{self.name}: containerd exited; see {self.dir}/logs/containerd.log")
        result = subprocess.run(self.enter("ctr", "version"), capture_output=True, timeout=10, check=False)
        return result.returncode == 0

    def import_image(self, archive: Path) -> None:
        if self.running:
            self.ctr("images", "import", "--all-platforms", str(archive))

    def stop(self) -> None:
        """The node dies: SIGKILL kubelet, kube-proxy, containerd, its shims and every container.
        Its mounts go with its mount namespace; start() brings it back like a reboot."""
        own = tuple(self.processes.values())
        kill_cgroup(self.cgroup, reap=own)
        for proc in own:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.processes.clear()
        self.holder = None
        # Pod cgroups of the dead node; the kubelet recreates what it needs.
        remove_cgroup(self.cgroup, keep_top=True)

    def cut_link(self) -> None:
        """The node's only link goes down: its peers get no FIN and no RST, just silence."""
        run(in_netns(self.netns, "ip", "link", "set", "eth0", "down"))

    def restore_link(self) -> None:
        run(in_netns(self.netns, "ip", "link", "set", "eth0", "up"))
        # Routes through a link are flushed when it goes down.
        for argv in self.cluster.node_routes(self.spec):
            run(in_netns(self.netns, "ip", "route", "replace", *argv))


class RealCluster:
    """The control plane in a `switch` netns, the nodes each in a netns of their own, CoreDNS."""

    def __init__(
        self,
        workdir: Path,
        *,
        nodes: tuple[NodeSpec, ...] = DEFAULT_NODES,
        images: tuple[Path | str, ...] = (),
        preinstall: tuple[Path, ...] = (),
        node_monitor_grace_period: str = "16s",
        dns: bool = True,
        detached: bool = False,
    ) -> None:
        self.workdir = workdir.resolve()
        self.id = cluster_id(self.workdir)
        self.cgroup = f"/kubeserial-{self.id}"
        self.switch_netns = f"ks-{self.id}-switch"
        self.detached = detached
        self.dns = dns
        self.plane = ControlPlane(
            self.workdir / "control-plane",
            preinstall=preinstall,
            netns=self.switch_netns,
            address=SWITCH_IP,
            cgroup=f"{self.cgroup}/control-plane",
            node_monitor_grace_period=node_monitor_grace_period,
        )
        self.nodes = {spec.name: RealNode(self, spec) for spec in nodes}
        self._extra_images: list[Path] = []
        self._pending_images = list(images)
        self.host_lock_fd: int | None = None
        self.timings: dict[str, float] = {}
        self._previous_handlers: dict[int, Any] = {}
        self.pause_binary = Path()
        self.binaries = Path()
        self._base_images: list[Path] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    def __enter__(self) -> "RealCluster":
        atexit.register(self.stop)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(signum) in (signal.SIG_DFL, None):
                self._previous_handlers[signum] = signal.signal(signum, self._on_signal)
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
        atexit.unregister(self.stop)
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers.clear()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Unwind through __exit__/fixture finalizers instead of dying with the cluster still up.
        raise SystemExit(128 + signum)

    @property
    def kubeconfig(self) -> Path:
        return self.plane.kubeconfig

    @property
    def state_file(self) -> Path:
        return self.workdir / "state.json"

    def all_images(self) -> list[Path]:
        return [*self._base_images, *self._extra_images]

    def _phase(self, name: str, started: float) -> float:
        now = time.monotonic()
        self.timings[name] = round(now - started, 2)
        return now

    def start(self) -> "RealCluster":
        t0 = started = time.monotonic()
        reap_stale()
        down(self.workdir, keep_logs=False)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._register()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            bins = pool.submit(control_plane_binaries)
            builders = [nodeimages.pause_image, nodeimages.busybox_image]
            images = [pool.submit(f) for f in builders + ([nodeimages.coredns_image] if self.dns else [])]
            pause = pool.submit(nodeimages.pause_binary)
            self.binaries = bins.result()
            self._base_images = [f.result() for f in images]
            self.pause_binary = pause.result()
        for pending in self._pending_images:
            self._extra_images.append(self._archive_for(pending))
        started = self._phase("build/cache", started)
        self.host_lock_fd = prepare_host_dirs()
        make_cgroup(f"{self.cgroup}/control-plane")
        self._make_network()
        started = self._phase("network", started)
        # detach: a Ctrl-C in the terminal reaches pytest only; teardown kills the rest by cgroup.
        self.plane.start(detach=True)
        self._save_state()
        started = self._phase("control-plane", started)
        for node in self.nodes.values():
            body = {
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": node.name, "labels": {"kubernetes.io/hostname": node.name}},
                # Pod CIDRs fixed here (no IPAM controller): the CNI config and routes match them.
                "spec": {"podCIDR": node.spec.pod_cidr, "podCIDRs": [node.spec.pod_cidr]},
            }
            self.kubectl("apply", "-f", "-", input=json.dumps(body))
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            for future in [pool.submit(node.start) for node in self.nodes.values()]:
                future.result()
        started = self._phase("nodes started", started)
        self.wait_nodes_ready(timeout=90)
        started = self._phase("nodes ready", started)
        if self.dns:
            self.kubectl("apply", "-f", "-", input=coredns_manifests(replicas=len(self.nodes)))
            self.kubectl(
                "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=90s", timeout=100
            )
            self._phase("coredns ready", started)
        self.timings["total"] = round(time.monotonic() - t0, 2)
        return self

    def stop(self) -> None:
        """Tear everything down (idempotent); logs stay in the workdir."""
        if self.host_lock_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.host_lock_fd)
            self.host_lock_fd = None
        own = [*self.plane.processes.values()]
        for node in self.nodes.values():
            own += node.processes.values()
            node.processes.clear()
            node.holder = None
        self.plane.processes.clear()
        down(self.workdir, keep_logs=True, reap=tuple(own))
        for proc in own:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)

    def _register(self) -> None:
        live = STATE_ROOT / "live"
        live.mkdir(parents=True, exist_ok=True)
        owner = None if self.detached else {"pid": os.getpid(), "start": _start_time(os.getpid())}
        (live / f"{self.id}.json").write_text(json.dumps({"workdir": str(self.workdir), "owner": owner}))

    def _save_state(self) -> None:
        state = {
            "id": self.id,
            "cgroup": self.cgroup,
            "netns": [self.switch_netns, *(n.netns for n in self.nodes.values())],
            "kubeconfig": str(self.kubeconfig),
            "server": self.plane.server if self.plane.ports else None,
        }
        self.state_file.write_text(json.dumps(state, indent=2))

    # -- network -----------------------------------------------------------------------------------

    def node_routes(self, spec: NodeSpec) -> list[list[str]]:
        """Routes of one node's netns: default via the switch (so ClusterIPs have a route before
        kube-proxy's DNAT) and every other node's pod CIDR via that node."""
        routes = [["default", "via", SWITCH_IP, "dev", "eth0"]]
        routes += [
            [o.spec.pod_cidr, "via", o.spec.ip, "dev", "eth0"] for o in self.nodes.values() if o.spec != spec
        ]
        return routes

    def _make_network(self) -> None:
        self._save_state()  # before anything exists, so `down` finds it after a crash mid-way
        sw = self.switch_netns
        run(["ip", "netns", "add", sw])
        run(in_netns(sw, "ip", "link", "set", "lo", "up"))
        run(in_netns(sw, "ip", "link", "add", "br0", "type", "bridge"))
        run(in_netns(sw, "ip", "addr", "add", f"{SWITCH_IP}/{PREFIX_LEN}", "dev", "br0"))
        run(in_netns(sw, "ip", "link", "set", "br0", "up"))
        for node in self.nodes.values():
            ns, spec = node.netns, node.spec
            port = f"v-{node.name}"[:15]
            run(["ip", "netns", "add", ns])
            run(in_netns(ns, "ip", "link", "set", "lo", "up"))
            run(in_netns(sw, "ip", "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns))
            run(in_netns(sw, "ip", "link", "set", port, "master", "br0", "up"))
            run(in_netns(ns, "ip", "addr", "add", f"{spec.ip}/{PREFIX_LEN}", "dev", "eth0"))
            run(in_netns(ns, "ip", "link", "set", "eth0", "up"))
            for argv in self.node_routes(spec):
                run(in_netns(ns, "ip", "route", "replace", *argv))
            # The apiserver reaches pods (webhooks, aggregator routing) through the node.
            run(in_netns(sw, "ip", "route", "replace", spec.pod_cidr, "via", spec.ip))
            # Per network namespace on this kernel: the host's values stay as they are.
            sysctls = "echo 1 > /proc/sys/net/ipv4/ip_forward"
            if os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables"):
                sysctls += " && echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables"
            run(in_netns(ns, "sh", "-c", sysctls))

    # -- helpers for tests -------------------------------------------------------------------------

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"kubectl {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    def get_json(self, *args: str) -> Any:
        return json.loads(self.kubectl("get", *args, "-o", "json").stdout)

    def node(self, name: str) -> RealNode:
        return self.nodes[name]

    def stop_node(self, name: str) -> None:
        self.nodes[name].stop()

    def start_node(self, name: str) -> None:
        self.nodes[name].start()

    def cut_link(self, name: str) -> None:
        self.nodes[name].cut_link()

    def restore_link(self, name: str) -> None:
        self.nodes[name].restore_link()

    def in_node(self, name: str, *argv: str, timeout: float = 60, check: bool = True) -> str:
        """Run a command in a node's network namespace (e.g. curl a pod or a ClusterIP)."""
        return run(in_netns(self.nodes[name].netns, *argv), timeout=timeout, check=check)

    def _archive_for(self, image: Path | str) -> Path:
        path = Path(image)
        if path.is_file():
            return path.resolve()
        # A tag in the project's dockerd (hack/images/build.sh): `docker save` it once per image ID.
        from kubeserial_testing.docker import Docker, docker_env

        env = docker_env()
        docker = Docker(cli=env["KUBESERIAL_DOCKER_CLI"], env=env)
        image_id = docker("image", "inspect", "--format", "{{.Id}}", str(image)).stdout.strip()
        out = nodeimages.IMAGE_CACHE / "saved" / f"{image_id.replace(':', '-')}.tar"
        if not out.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
            partial = out.with_suffix(".partial")
            docker("save", "-o", str(partial), str(image), timeout=600)
            partial.replace(out)
        return out

    def import_image(self, image: Path | str) -> Path:
        """Import a docker-archive tarball or a tag of the project's dockerd into every node's
        containerd (and into nodes started later). Use imagePullPolicy Never/IfNotPresent."""
        archive = self._archive_for(image)
        self._extra_images.append(archive)
        with concurrent.futures.ThreadPoolExecutor(len(self.nodes)) as pool:
            for future in [pool.submit(n.import_image, archive) for n in self.nodes.values()]:
                future.result()
        return archive

    def node_ready(self, name: str) -> bool:
        node = self.get_json("node", name)
        ready = any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        taints = {t["key"] for t in node.get("spec", {}).get("taints", []) or []}
        return ready and not taints & {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}

    def wait_nodes_ready(self, names: tuple[str, ...] | None = None, *, timeout: float = 60) -> None:
        """Ready, without the not-ready/unreachable taints, and kube-proxy synced (else a pod that
        starts at once finds no route for ClusterIPs; CoreDNS then sat in client-go backoff ~30 s)."""
        for name in names or tuple(self.nodes):
            wait_until(
                f"node {name} Ready and untainted", functools.partial(self.node_ready, name), timeout=timeout
            )
            wait_until(f"kube-proxy on {name} synced", self.nodes[name].kube_proxy_synced, timeout=timeout)

    def diagnostics(self, namespace: str | None = None) -> str:
        """Pods (phase, node, restartCount and state per container), recent Events and the last
        lines of every container's logs (and of its previous instance): print this on failure."""
        scope = ["-n", namespace] if namespace else ["-A"]
        out: list[str] = []
        try:
            out.append(self.kubectl("get", "nodes", "-o", "wide", check=False).stdout)
            pods = json.loads(self.kubectl("get", "pods", *scope, "-o", "json").stdout)["items"]
        except Exception as exc:  # the apiserver itself may be what is broken
            return f"diagnostics unavailable: {exc!r}"
        for pod in pods:
            meta, status = pod["metadata"], pod.get("status", {})
            out.append(
                f"pod {meta['namespace']}/{meta['name']} phase={status.get('phase')} "
                f"node={pod['spec'].get('nodeName')} ip={status.get('podIP')} "
                f"reason={status.get('reason', '')}"
            )
            statuses = status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
            for cs in statuses:
                state = next(iter(cs.get("state", {})), "?")
                detail = cs.get("state", {}).get(state, {})
                out.append(
                    f"  container {cs['name']}: restartCount={cs.get('restartCount')} "
                    f"ready={cs.get('ready')} "
                    f"state={state} {detail.get('reason', '')} {detail.get('exitCode', '')}"
                )
            for cs in statuses:
                for previous in (False, True) if cs.get("restartCount") else (False,):
                    args = ["logs", "-n", meta["namespace"], meta["name"], "-c", cs["name"], "--tail=30"]
                    logs = self.kubectl(*args, *(["--previous"] if previous else []), check=False)
                    label = "previous logs" if previous else "logs"
                    text = (logs.stdout or logs.stderr).rstrip()
                    out.append(
                        f"  --- {label} of {cs['name']} ---\n"
                        + "\n".join(f"    {line}" for line in text.splitlines())
                    )
        events = self.kubectl("get", "events", *scope, "--sort-by=.lastTimestamp", check=False).stdout
        out.append("--- events (latest last) ---\n" + "\n".join(events.splitlines()[-60:]))
        return "\n".join(out)


def coredns_manifests(replicas: int) -> str:
    """CoreDNS, one replica per node as a real cluster runs it: with a single replica, cutting the
    node it ran on left the other node without name resolution until eviction (a CI run's bridge
    could not resolve its gateway's Service for over a minute after NodeLost)."""
    labels = {"k8s-app": "kube-dns"}
    corefile = f""".:53 {{
    errors
    health :8080
    ready :8181
    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
        ttl 5
    }}
    cache 5
    loadbalance
}}
"""
    objects: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"],
                },
                {
                    "apiGroups": ["discovery.k8s.io"],
                    "resources": ["endpointslices"],
                    "verbs": ["list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "system:coredns",
            },
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": "kube-system"}],
        },
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "coredns", "namespace": "kube-system"},
            "data": {"Corefile": corefile},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "serviceAccountName": "coredns",
                        "affinity": {
                            "podAntiAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": [
                                    {
                                        "labelSelector": {"matchLabels": labels},
                                        "topologyKey": "kubernetes.io/hostname",
                                    }
                                ]
                            }
                        },
                        "dnsPolicy": "Default",
                        "priorityClassName": "system-cluster-critical",
                        "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                        "containers": [
                            {
                                "name": "coredns",
                                "image": nodeimages.COREDNS_IMAGE,
                                "imagePullPolicy": "Never",
                                "args": ["-conf", "/etc/coredns/Corefile"],
                                "ports": [
                                    {"name": "dns", "containerPort": 53, "protocol": "UDP"},
                                    {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
                                ],
                                "readinessProbe": {
                                    "httpGet": {"path": "/ready", "port": 8181},
                                    "periodSeconds": 1,
                                },
                                "livenessProbe": {
                                    "httpGet": {"path": "/health", "port": 8080},
                                    "periodSeconds": 10,
                                },
                                "resources": {
                                    "limits": {"memory": "170Mi"},
                                    "requests": {"cpu": "10m", "memory": "30Mi"},
                                },
                                "volumeMounts": [
                                    {"name": "config", "mountPath": "/etc/coredns", "readOnly": True}
                                ],
                            }
                        ],
                        "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "labels": labels},
            "spec": {
                "clusterIP": DNS_SERVICE_IP,
                "selector": labels,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                ],
            },
        },
    ]
    return "\n---\n".join(yaml.safe_dump(o) for o in objects)


# -- teardown from state alone ------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _mounts_under(prefixes: list[str]) -> list[str]:
    points = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        point = line.split()[1].replace("\\040", " ")
        if any(point == p or point.startswith(p.rstrip("/") + "/") for p in prefixes):
            points.append(point)
    return points


def down(workdir: Path, *, keep_logs: bool = True, reap: tuple[subprocess.Popen[bytes], ...] = ()) -> None:
    """Stop everything a cluster in `workdir` left, from its state file and its cgroup: processes,
    network namespaces, cgroups, mounts; then the heavy state (images, etcd). Idempotent."""
    workdir = workdir.resolve()
    cid = cluster_id(workdir)
    cgroup = f"/kubeserial-{cid}"
    kill_cgroup(cgroup, reap=reap)
    remove_cgroup(cgroup)
    netns_prefix = f"ks-{cid}-"
    for name in run(["ip", "netns", "list"], check=False).split():
        if name.startswith(netns_prefix):
            run(["ip", "netns", "delete", name], check=False)
    # Mount namespaces took their mounts along; anything in the host's namespace is a bug: say so.
    leftovers = _mounts_under([str(workdir)])
    for point in sorted(leftovers, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    release_host_dirs()
    if workdir.exists():
        for child in workdir.iterdir():
            if keep_logs and child.name in ("logs", "state.json"):
                continue
            if child.is_dir() and not child.is_symlink():
                if keep_logs:
                    _remove_keeping_logs(child)
                else:
                    shutil.rmtree(child, ignore_errors=True)
            elif not keep_logs:
                child.unlink(missing_ok=True)
    (STATE_ROOT / "live" / f"{cid}.json").unlink(missing_ok=True)
    if leftovers:
        print(f"kubeserial nodes: unmounted leftovers {leftovers}", file=sys.stderr)


def _remove_keeping_logs(directory: Path) -> None:
    """Delete a node's/control plane's state except its logs directory (kept for diagnostics)."""
    for child in directory.iterdir():
        if child.name == "logs":
            continue
        if child.is_dir() and not child.is_symlink():
            if (child / "logs").exists():
                _remove_keeping_logs(child)
            else:
                shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def reap_stale() -> None:
    """Take down clusters whose owning (test) process died without cleaning up."""
    live = STATE_ROOT / "live"
    if not live.exists():
        return
    for entry in live.glob("*.json"):
        with contextlib.suppress(ValueError, KeyError, OSError):
            info = json.loads(entry.read_text())
            owner = info["owner"]
            if owner is not None and _start_time(owner["pid"]) != owner["start"]:
                down(Path(info["workdir"]), keep_logs=True)


def down_all() -> None:
    live = STATE_ROOT / "live"
    for entry in live.glob("*.json") if live.exists() else []:
        with contextlib.suppress(ValueError, KeyError, OSError):
            down(Path(json.loads(entry.read_text())["workdir"]), keep_logs=True)


@contextlib.contextmanager
def real_cluster(workdir: Path | None = None, **kwargs: Any) -> Iterator[RealCluster]:
    """Body for a pytest fixture: `with real_cluster(tmp_path_factory.mktemp("nodes")) as c: yield c`."""
    if workdir is not None:
        with RealCluster(workdir, **kwargs) as cluster:
            yield cluster
        return
    with (
        tempfile.TemporaryDirectory(prefix="kubeserial-nodes-") as tmp,
        RealCluster(Path(tmp), **kwargs) as cluster,
    ):
        yield cluster


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m kubeserial_testing.nodes", description=__doc__.split("\n")[0]
    )
    parser.add_argument("command", choices=["up", "down", "import"])
    parser.add_argument("images", nargs="*", help="import: image tarballs or docker tags")
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / ".nodes", help="state directory (.nodes)")
    parser.add_argument("--all", action="store_true", help="down: every cluster still registered here")
    parser.add_argument(
        "--image", action="append", default=[], help="up: image tarball or docker tag to import"
    )
    args = parser.parse_intermixed_args(argv)
    if args.command == "import":
        cluster = RealCluster(args.dir, detached=True)
        for image in args.images:
            print(cluster.import_image(image))
        return 0
    if args.command == "down":
        if args.all:
            down_all()
        else:
            down(args.dir, keep_logs=False)
        return 0
    crds = REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"
    cluster = RealCluster(args.dir, images=tuple(args.image), preinstall=(crds,), detached=True)
    try:
        cluster.start()
    except BaseException:
        cluster.stop()
        raise
    print(f"cluster ready: {json.dumps(cluster.timings)}", file=sys.stderr)
    print(f"export KUBECONFIG={cluster.kubeconfig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
