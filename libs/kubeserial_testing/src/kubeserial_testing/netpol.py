"""A NetworkPolicy enforcer for the real-node harness: sigs.k8s.io/kube-network-policies.

It is the implementation SIG Network tests NetworkPolicies with: a daemon per node that puts the
first packet of every connection to or from a pod selected by a NetworkPolicy on an nfqueue (nftables
table `kube-network-policies` in the node's network namespace) and accepts or drops it by the
policies. Built from the Go module proxy by hack/build-kube-network-policies.sh (cached), packed here
into a one-file image and run as upstream ships it (install.yaml): a privileged hostNetwork DaemonSet
in kube-system. On these nodes hostNetwork means the node's own network namespace, so the rules live
and die with the node. NRI is off (containerd 1.6 has none): pod IPs come from the apiserver.

This machine's kernel has the nfqueue core (nfnetlink_queue) and the iptables NFQUEUE target but was
built without the nftables `queue` expression (CONFIG_NFT_QUEUE; /proc/kallsyms has nfqnl_* and
nfqueue_tg, no nft_queue), so the daemon's nftables table is refused ("netlink receive: no such file
or directory") while its queue reader runs. `steer` therefore sends the same packets into its queue
with iptables, as its nftables rules would (controller.go, syncNFTablesRules): in POSTROUTING before
source NAT, the first packet of each connection to or from a pod, except DNS, except traffic the
node's root sends (kubelet probes), established and related flows accepted without asking. The
verdicts (which pod may connect to which, by the NetworkPolicies) are the daemon's own.
"""

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from kubeserial_testing.controlplane import REPO_ROOT
from kubeserial_testing.nodeimages import CACHE_ROOT, Entry, write_docker_archive
from kubeserial_testing.nodes import RealCluster

KNP_VERSION = os.environ.get("KNP_VERSION", "v0.8.0")
KNP_IMAGE = f"localhost/kubeserial/kube-network-policies:{KNP_VERSION}"
NAME = "kube-network-policies"
NAMESPACE = "kube-system"
METRICS_ADDRESS = "127.0.0.1:19080"  # the node's netns is shared with kubelet and kube-proxy
QUEUE = 98
POD_CIDR = "10.244.0.0/16"  # kubeserial_testing.nodes.CLUSTER_CIDR
CHAIN = "KUBESERIAL-NETPOL"


def knp_binary() -> Path:
    """hack/build-kube-network-policies.sh: built once per version (waits for a running build)."""
    out = subprocess.run(
        [str(REPO_ROOT / "hack" / "build-kube-network-policies.sh")],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, "KNP_VERSION": KNP_VERSION},
    )
    return Path(out.stdout.strip().splitlines()[-1])


def knp_image() -> Path:
    """The binary as /netpol in a one-layer docker archive, cached by the binary's identity."""
    binary = knp_binary()
    stat = binary.stat()
    key = hashlib.sha256(f"1:{binary}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    path = CACHE_ROOT / "nodes" / "images" / f"kube-network-policies-{key}.tar"
    if not path.exists():
        entries = [Entry("tmp", "dir", mode=0o1777), Entry("netpol", "file", source=binary)]
        write_docker_archive(entries, KNP_IMAGE, path, entrypoint=["/netpol"], cmd=None)
    return path


def manifests() -> str:
    """ServiceAccount, the read-only RBAC upstream's install.yaml grants (plus Events), DaemonSet."""
    labels = {"app": NAME}
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": NAME, "namespace": NAMESPACE}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": NAME},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "namespaces"], "verbs": ["list", "watch"]},
                {
                    "apiGroups": ["networking.k8s.io"],
                    "resources": ["networkpolicies"],
                    "verbs": ["list", "watch"],
                },
                {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": NAME},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": NAME},
            "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": NAMESPACE}],
        },
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": labels},
            "spec": {
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "hostNetwork": True,
                        "serviceAccountName": NAME,
                        "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                        "terminationGracePeriodSeconds": 2,
                        "containers": [
                            {
                                "name": NAME,
                                "image": KNP_IMAGE,
                                "imagePullPolicy": "Never",
                                "args": [
                                    "--hostname-override=$(MY_NODE_NAME)",
                                    "--disable-nri",
                                    f"--nfqueue-id={QUEUE}",
                                    f"--metrics-bind-address={METRICS_ADDRESS}",
                                    "--v=2",
                                ],
                                "env": [
                                    {
                                        "name": "MY_NODE_NAME",
                                        "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}},
                                    }
                                ],
                                "securityContext": {"privileged": True},
                            }
                        ],
                    },
                },
            },
        },
    ]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})


def steering_rules() -> list[list[str]]:
    """iptables arguments (mangle table) that queue what kube-network-policies' nftables rules queue."""
    rules = [
        ["-p", "udp", "--dport", "53", "-j", "RETURN"],
        ["-m", "owner", "--uid-owner", "0", "-j", "RETURN"],
        ["-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED", "-j", "RETURN"],
    ]
    # --queue-bypass: while no daemon reads the queue (starting, stopping) packets pass.
    queue = ["-j", "NFQUEUE", "--queue-num", str(QUEUE), "--queue-bypass"]
    rules += [["-d", POD_CIDR, *queue], ["-s", POD_CIDR, *queue]]
    return rules


def steer(cluster: RealCluster, node: str) -> None:
    """Install the steering rules in `node`'s network namespace (idempotent: the chain is rebuilt)."""
    iptables = ["iptables", "-w", "-t", "mangle"]
    cluster.in_node(node, *iptables, "-N", CHAIN, check=False)
    cluster.in_node(node, *iptables, "-F", CHAIN)
    for rule in steering_rules():
        cluster.in_node(node, *iptables, "-A", CHAIN, *rule)
    jump = ["POSTROUTING", "-j", CHAIN]
    if "rc=0" not in cluster.in_node(
        node, "sh", "-c", f"{' '.join(iptables)} -C {' '.join(jump)}; echo rc=$?", check=False
    ):
        cluster.in_node(node, *iptables, "-A", *jump)


def install(cluster: RealCluster) -> None:
    """Import the image into every node, run the DaemonSet on every node, steer packets to it."""
    cluster.import_image(knp_image())
    cluster.kubectl("apply", "-f", "-", input=manifests())
    cluster.kubectl("-n", NAMESPACE, "rollout", "status", f"daemonset/{NAME}", "--timeout=120s", timeout=130)
    for node in cluster.nodes:
        steer(cluster, node)


def enforcing(cluster: RealCluster, node: str) -> bool:
    """The daemon on `node` reads its queue and the node's packets are steered into it."""
    queues = cluster.in_node(node, "cat", "/proc/net/netfilter/nfnetlink_queue", check=False)
    bound = any(line.split()[:1] == [str(QUEUE)] for line in queues.splitlines())
    rules = cluster.in_node(node, "iptables", "-w", "-t", "mangle", "-S", CHAIN, check=False)
    return bound and f"--queue-num {QUEUE}" in rules


def verdicts(cluster: RealCluster, node: str) -> str:
    """The daemon's packet counters on `node` (its /metrics), for diagnostics."""
    url = f"http://{METRICS_ADDRESS}/metrics"
    out = cluster.in_node(
        node,
        "python3",
        "-c",
        f"import urllib.request as u; print(u.urlopen('{url}').read().decode())",
        check=False,
    )
    return "\n".join(line for line in out.splitlines() if line.startswith("packet_count"))
