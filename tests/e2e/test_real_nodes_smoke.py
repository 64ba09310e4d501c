"""The real-node harness itself (kubeserial_testing.nodes): two real kubelets, each in its own
network namespace, pod networking across nodes, Service DNS names through CoreDNS, projected
ServiceAccount tokens through the `kubernetes` Service, node death both ways, and a teardown that
leaves nothing behind on the host.

Fixture for other tests (module scope):

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory):
        with RealCluster(tmp_path_factory.mktemp("nodes"), preinstall=(CRD_DIR,)) as real:
            yield real
"""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from kubeserial_testing.nodeimages import BUSYBOX_IMAGE
from kubeserial_testing.nodes import PRIVATE_DIRS, RealCluster, cgroup_pids, cluster_id, wait_until

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="real nodes need root (namespaces, cgroups)")


def busybox_pod(name: str, node: str, command: str, *, labels: dict[str, str] | None = None) -> str:
    return json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels or {}},
            "spec": {
                "nodeSelector": {"kubernetes.io/hostname": node},
                "terminationGracePeriodSeconds": 1,
                "containers": [
                    {
                        "name": "main",
                        "image": BUSYBOX_IMAGE,
                        "imagePullPolicy": "Never",
                        "command": ["sh", "-c", command],
                    }
                ],
            },
        }
    )


SERVICE = json.dumps(
    {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo", "namespace": "default"},
        "spec": {"selector": {"app": "echo"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
)


# Every wget is bounded by `timeout`: busybox 1.35's static wget segfaults when given -T.
def exec_retrying(cluster: RealCluster, pod: str, script: str, *, within: float = 30) -> str:
    """kubectl exec until the command succeeds (DNS and Service rules take a moment to appear)."""
    deadline = time.monotonic() + within
    while True:
        result = cluster.kubectl("exec", pod, "--", "sh", "-c", script, check=False)
        if result.returncode == 0:
            return result.stdout
        if time.monotonic() > deadline:
            raise AssertionError(f"{script!r} kept failing: {result.stdout}{result.stderr}")
        time.sleep(1)


def host_snapshot(own_id: str) -> dict[str, object]:
    """What a cluster could change on the host. Other clusters may run at the same time (another
    test run, a developer's `nodes up`): only this cluster's namespaces count, and the shared
    mountpoint directories are compared only when no other cluster is up."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    others = any(n.startswith("ks-") and not n.startswith(f"ks-{own_id}-") for n in netns)
    return {
        "netns": [n for n in netns if n.startswith(f"ks-{own_id}-")],
        "ip_forward": Path("/proc/sys/net/ipv4/ip_forward").read_text(),
        "overcommit": Path("/proc/sys/vm/overcommit_memory").read_text(),
        "kernel.panic": Path("/proc/sys/kernel/panic").read_text(),
        "private_dirs": "another cluster is up" if others else {d: os.path.exists(d) for d in PRIVATE_DIRS},
        "iptables": subprocess.run(["iptables-save"], capture_output=True, text=True).stdout.count("-A "),
    }


def test_two_real_nodes(tmp_path: Path) -> None:
    workdir = tmp_path / "cluster"
    before = host_snapshot(cluster_id(workdir))
    with RealCluster(workdir) as cluster:
        try:
            print("start timings:", cluster.timings)
            # While it runs, only its namespaces and the (empty) mountpoint directories are new.
            running: dict[str, object] = {"netns": [], "private_dirs": {}}
            assert host_snapshot(cluster.id) | running == before | running, "host changed while running"
            serve = (
                "mkdir /www && echo hello-from-$(hostname) > /www/index.html && exec httpd -f -p 8080 -h /www"
            )
            cluster.kubectl(
                "apply", "-f", "-", input=busybox_pod("server", "node-a", serve, labels={"app": "echo"})
            )
            cluster.kubectl(
                "apply",
                "-f",
                "-",
                input=busybox_pod("client", "node-b", "echo client-started; exec sleep 3600"),
            )
            cluster.kubectl("apply", "-f", "-", input=SERVICE)
            cluster.kubectl(
                "wait", "--for=condition=Ready", "pod/server", "pod/client", "--timeout=60s", timeout=70
            )
            pods = {p["metadata"]["name"]: p for p in cluster.get_json("pods", "-n", "default")["items"]}
            assert pods["server"]["spec"]["nodeName"] == "node-a"
            assert pods["client"]["spec"]["nodeName"] == "node-b"

            # Cross-node, by DNS name (short, and fully qualified), through kube-proxy's ClusterIP.
            assert (
                exec_retrying(cluster, "client", "timeout 5 wget -qO- http://echo/").strip()
                == "hello-from-server"
            )
            fqdn = "http://echo.default.svc.cluster.local/"
            assert (
                exec_retrying(cluster, "client", f"timeout 5 wget -qO- {fqdn}").strip() == "hello-from-server"
            )

            # The projected token authenticates to the apiserver through the kubernetes Service.
            review = (
                "timeout 5 wget -qO- --no-check-certificate"
                ' --header "Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)"'
                " --header 'Content-Type: application/json'"
                """ --post-data '{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}'"""
                " https://{host}/apis/authentication.k8s.io/v1/selfsubjectreviews"
            )
            for host in ("10.96.0.1", "kubernetes.default.svc"):
                answer = json.loads(exec_retrying(cluster, "client", review.replace("{host}", host)))
                assert answer["status"]["userInfo"]["username"] == "system:serviceaccount:default:default"
            # kubectl logs: the apiserver reaches the kubelet at its InternalIP with its client cert.
            assert "client-started" in cluster.kubectl("logs", "client").stdout

            # A silent link cut: node-a goes NotReady; back when the link returns.
            cluster.cut_link("node-a")
            wait_until("node-a NotReady", lambda: not cluster.node_ready("node-a"), timeout=60)
            cluster.restore_link("node-a")
            cluster.wait_nodes_ready(("node-a",), timeout=60)

            # Node death: nothing of node-b survives; it comes back and runs pods again.
            cluster.stop_node("node-b")
            assert cgroup_pids(cluster.node("node-b").cgroup) == []
            wait_until("node-b NotReady", lambda: not cluster.node_ready("node-b"), timeout=60)
            cluster.start_node("node-b")
            cluster.wait_nodes_ready(("node-b",), timeout=60)
            cluster.kubectl("delete", "pod", "client", "--grace-period=0", "--force", check=False)
            cluster.kubectl("apply", "-f", "-", input=busybox_pod("client2", "node-b", "exec sleep 3600"))
            cluster.kubectl("wait", "--for=condition=Ready", "pod/client2", "--timeout=60s", timeout=70)
            assert (
                exec_retrying(cluster, "client2", "timeout 5 wget -qO- http://echo/").strip()
                == "hello-from-server"
            )
            diagnostics = cluster.diagnostics("default")
            assert "pod default/server phase=Running" in diagnostics
        except BaseException:
            print(cluster.diagnostics())
            raise
        cgroup, own_id = cluster.cgroup, cluster.id

    # Nothing left: processes, network namespaces, mounts, cgroups, host settings.
    assert cgroup_pids(cgroup) == []
    assert not any(
        Path("/sys/fs/cgroup", h, cgroup.strip("/")).exists() for h in os.listdir("/sys/fs/cgroup")
    )
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    assert [p for p in points if p.startswith(str(workdir)) or p in PRIVATE_DIRS or own_id in p] == []
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(workdir) not in ps
    assert host_snapshot(own_id) == before
