"""The monitor's shipped RBAC grants exactly the calls it makes, where it makes them."""

from pathlib import Path
from typing import Any

import yaml

RBAC = Path(__file__).resolve().parents[3] / "deploy" / "kustomize" / "base" / "rbac" / "monitor.yaml"
SA = {"kind": "ServiceAccount", "name": "kubeserial-monitor", "namespace": "kubeserial"}

# (where, apiGroup, resource, verb) for every call: its node's SerialPorts and its Lease. No
# SerialDevice and no Node: the monitor's cost follows its own node, and the controller binds.
EXPECTED = {
    ("cluster", "app.kubeserial.com", "serialports", "get"),
    ("cluster", "app.kubeserial.com", "serialports", "list"),
    ("cluster", "app.kubeserial.com", "serialports", "create"),
    ("cluster", "app.kubeserial.com", "serialports", "patch"),
    ("cluster", "app.kubeserial.com", "serialports", "delete"),
    ("kubeserial", "coordination.k8s.io", "leases", "get"),
    ("kubeserial", "coordination.k8s.io", "leases", "create"),
    ("kubeserial", "coordination.k8s.io", "leases", "update"),
}


def documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc]


def granted() -> set[tuple[str, str, str, str]]:
    docs = documents()
    roles = {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): d for d in docs}
    result: set[tuple[str, str, str, str]] = set()
    for binding in (d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        assert binding["subjects"] == [SA]
        ref = binding["roleRef"]
        namespace = binding["metadata"].get("namespace")
        role = roles[(ref["kind"], ref["name"], None if ref["kind"] == "ClusterRole" else namespace)]
        where = "cluster" if binding["kind"] == "ClusterRoleBinding" else namespace
        for rule in role["rules"]:
            assert "resourceNames" not in rule
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    for verb in rule["verbs"]:
                        result.add((where, group, resource, verb))
    return result


def test_grants_exactly_the_calls_the_monitor_makes() -> None:
    assert granted() == EXPECTED


def test_has_its_own_service_account() -> None:
    accounts = [d for d in documents() if d["kind"] == "ServiceAccount"]
    assert [(a["metadata"]["name"], a["metadata"]["namespace"]) for a in accounts] == [
        ("kubeserial-monitor", "kubeserial")
    ]


def test_reads_no_serialdevice_and_no_node() -> None:
    resources = {resource for _where, _group, resource, _verb in granted()}
    assert not {r for r in resources if r.startswith(("serialdevices", "nodes"))}
