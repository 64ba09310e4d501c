"""The controller's shipped RBAC grants exactly the verbs it calls, and never '*'.

The integration tests run the controller under this ServiceAccount, which proves it is enough;
this test pins it down, so that a broader grant is a visible, reviewed change.
"""

from pathlib import Path
from typing import Any

import yaml

RBAC = Path(__file__).resolve().parents[3] / "deploy" / "kustomize" / "base" / "rbac" / "controller.yaml"

# (kind of role, apiGroup, resource) -> verbs
EXPECTED = {
    ("ClusterRole", "app.kubeserial.com", "kubeserials"): {"list", "watch", "patch"},
    ("ClusterRole", "app.kubeserial.com", "kubeserials/status"): {"patch"},
    ("ClusterRole", "app.kubeserial.com", "serialdevices"): {
        "get",
        "list",
        "watch",
        "create",
        "patch",
        "delete",
    },
    ("ClusterRole", "app.kubeserial.com", "serialdevices/status"): {"patch"},
    # SerialPorts: informer, clean-up of a vanished node's ports, and the binding (status.device).
    ("ClusterRole", "app.kubeserial.com", "serialports"): {"get", "list", "watch", "delete"},
    ("ClusterRole", "app.kubeserial.com", "serialports/status"): {"patch"},
    # Nodes: informer, extended resources kubeserial.com/<device>.
    ("ClusterRole", "", "nodes"): {"list", "watch"},
    ("ClusterRole", "", "nodes/status"): {"patch"},
    ("ClusterRole", "app.kubeserial.com", "managers"): {"list", "watch"},
    ("ClusterRole", "app.kubeserial.com", "managerschedulerequests"): {"list", "watch", "create", "delete"},
    ("ClusterRole", "app.kubeserial.com", "managerschedulerequests/status"): {"patch"},
    ("ClusterRole", "", "events"): {"create"},
    # In the workloads' namespace: gateways, manager workloads, their policies; monitor Leases read.
    ("Role kubeserial", "apps", "deployments"): {"list", "watch", "create", "patch", "delete"},
    ("Role kubeserial", "", "services"): {"list", "watch", "create", "patch", "delete"},
    ("Role kubeserial", "", "configmaps"): {"list", "watch", "create", "patch", "delete"},
    ("Role kubeserial", "networking.k8s.io", "ingresses"): {"list", "watch", "create", "patch", "delete"},
    ("Role kubeserial", "networking.k8s.io", "networkpolicies"): {
        "list",
        "watch",
        "create",
        "patch",
        "delete",
    },
    ("Role kubeserial", "coordination.k8s.io", "leases"): {"list", "watch"},
    # In its own namespace: nothing but its leader Lease.
    ("Role kubeserial-system", "coordination.k8s.io", "leases"): {"get", "create", "update"},
}


def documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(RBAC.read_text()) if doc]


def granted() -> dict[tuple[str, str, str], set[str]]:
    grants: dict[tuple[str, str, str], set[str]] = {}
    for doc in documents():
        if doc["kind"] not in ("ClusterRole", "Role"):
            continue
        where = doc["kind"] if doc["kind"] == "ClusterRole" else f"Role {doc['metadata']['namespace']}"
        for rule in doc["rules"]:
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    grants.setdefault((where, group, resource), set()).update(rule["verbs"])
    return grants


def test_no_wildcards_anywhere() -> None:
    for doc in documents():
        for rule in doc.get("rules", []):
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), f"{doc['kind']} {doc['metadata']['name']}: '*' in {key}"


def test_exactly_the_verbs_the_controller_uses() -> None:
    assert granted() == EXPECTED


def test_lease_updates_only_for_the_leader_lease() -> None:
    roles = [doc for doc in documents() if doc["kind"] == "Role"]
    updates = [rule for role in roles for rule in role["rules"] if "update" in rule["verbs"]]
    assert updates == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["kubeserial-controller"],
            "verbs": ["update"],
        }
    ]


def test_bindings_name_the_controller_service_account() -> None:
    bindings = [doc for doc in documents() if doc["kind"].endswith("Binding")]
    assert {(b["kind"], b["roleRef"]["name"], b["metadata"].get("namespace")) for b in bindings} == {
        ("ClusterRoleBinding", "kubeserial-controller", None),
        ("RoleBinding", "kubeserial-controller", "kubeserial"),
        ("RoleBinding", "kubeserial-controller-leader", "kubeserial-system"),
        ("RoleBinding", "kubeserial-controller-events", "default"),
        ("RoleBinding", "kubeserial-controller-events", "kubeserial"),
    }
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "kubeserial-controller", "namespace": "kubeserial-system"}
        ]


def test_events_are_granted_per_namespace_never_cluster_wide() -> None:
    """Events go to "default" (cluster-scoped objects) and to kubeserial (KubeSerials there): the
    events ClusterRole is bound by RoleBindings in those two namespaces, by no ClusterRoleBinding."""
    docs = documents()
    (main,) = [
        d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "kubeserial-controller"
    ]
    assert all("events" not in rule["resources"] for rule in main["rules"])
    bindings = [d for d in docs if d.get("roleRef", {}).get("name") == "kubeserial-controller-events"]
    assert {(b["kind"], b["metadata"]["namespace"]) for b in bindings} == {
        ("RoleBinding", "default"),
        ("RoleBinding", "kubeserial"),
    }
