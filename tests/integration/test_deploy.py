"""The shipped manifests against the real apiserver: every overlay renders, applies (server-side
dry run, so admission and schema validation run for real), and each workload is configured the
way a cluster operator expects."""

import subprocess
from typing import Any

import pytest
import yaml

from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane

OVERLAYS = REPO_ROOT / "deploy" / "kustomize" / "overlays"
pytestmark = pytest.mark.controlplane


def render(overlay: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAYS / overlay)], check=True, capture_output=True, text=True
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def workloads(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] in ("Deployment", "DaemonSet")]


@pytest.mark.parametrize("overlay", ["default", "dev", "e2e", "small"])
def test_apply_k_dry_run_server(control_plane: ControlPlane, overlay: str) -> None:
    # A server-side dry run does not create namespaces: the ones the objects go to must exist.
    for namespace in ("kubeserial", "kubeserial-system"):
        control_plane.kubectl("create", "namespace", namespace, check=False)
    result = control_plane.kubectl("apply", "-k", str(OVERLAYS / overlay), "--dry-run=server", check=False)
    assert result.returncode == 0, result.stderr


def test_kustomize_build_piped_to_apply(control_plane: ControlPlane) -> None:
    # A server-side dry run does not create namespaces: the ones the objects go to must exist.
    for namespace in ("kubeserial", "kubeserial-system"):
        control_plane.kubectl("create", "namespace", namespace, check=False)
    built = subprocess.run(
        ["kubectl", "kustomize", str(OVERLAYS / "default")], check=True, capture_output=True, text=True
    ).stdout
    result = control_plane.kubectl("apply", "--dry-run=server", "-f", "-", input=built, check=False)
    assert result.returncode == 0, result.stderr


def test_cert_manager_overlay_renders_certificate_and_ca_injection() -> None:
    docs = render("cert-manager")
    kinds = {d["kind"] for d in docs}
    assert {"Certificate", "MutatingWebhookConfiguration"} <= kinds
    [webhook] = [d for d in docs if d["kind"] == "MutatingWebhookConfiguration"]
    assert "cert-manager.io/inject-ca-from" in webhook["metadata"].get("annotations", {})


def test_default_overlay_has_the_five_crds_and_a_serviceaccount_per_component() -> None:
    docs = render("default")
    crds = {d["metadata"]["name"] for d in docs if d["kind"] == "CustomResourceDefinition"}
    assert len(crds) == 5  # the seed's four kinds and SerialPort
    accounts = {d["metadata"]["name"] for d in docs if d["kind"] == "ServiceAccount"}
    assert {
        "kubeserial-controller",
        "kubeserial-monitor",
        "kubeserial-injector",
        "kubeserial-gateway",
    } <= accounts


@pytest.mark.parametrize("overlay", ["default", "dev", "e2e", "small"])
def test_every_container_has_resources_probes_and_security_context(overlay: str) -> None:
    found = workloads(render(overlay))
    assert {w["metadata"]["name"] for w in found} >= {
        "kubeserial-controller",
        "kubeserial-monitor",
        "kubeserial-injector",
    }
    for workload in found:
        pod = workload["spec"]["template"]["spec"]
        assert pod.get("serviceAccountName", "").startswith("kubeserial-"), workload["metadata"]["name"]
        for container in pod["containers"]:
            where = f"{workload['metadata']['name']}/{container['name']}"
            resources = container.get("resources", {})
            assert resources.get("requests") and resources.get("limits", {}).get("memory"), where
            assert container.get("livenessProbe") and container.get("readinessProbe"), where
            security = container.get("securityContext", {})
            assert security.get("allowPrivilegeEscalation") is False, where
            assert security.get("capabilities", {}).get("drop") == ["ALL"], where


def test_rbac_never_uses_wildcards() -> None:
    for doc in render("default"):
        if doc["kind"] in ("Role", "ClusterRole"):
            for rule in doc.get("rules", []):
                for key in ("verbs", "resources", "apiGroups"):
                    assert "*" not in rule.get(key, []), f"{doc['kind']}/{doc['metadata']['name']}: {rule}"


def test_small_overlay_one_replica_each_and_a_pdb_that_lets_drains_through() -> None:
    docs = render("small")
    by_name = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    for name in ("kubeserial-controller", "kubeserial-injector"):
        assert by_name[("Deployment", name)]["spec"]["replicas"] == 1, name
    pdb = by_name[("PodDisruptionBudget", "kubeserial-injector")]["spec"]
    # minAvailable: 1 with one replica would block every node drain.
    assert "minAvailable" not in pdb and pdb["maxUnavailable"] == 1
    default = {(d["kind"], d["metadata"]["name"]): d for d in render("default")}

    def request(docs: dict[tuple[str, str], dict[str, Any]], kind: str, name: str) -> str:
        [container] = docs[(kind, name)]["spec"]["template"]["spec"]["containers"]
        return str(container["resources"]["requests"]["memory"])

    def mib(quantity: str) -> int:
        assert quantity.endswith("Mi"), quantity
        return int(quantity[:-2])

    for kind, name in (
        ("Deployment", "kubeserial-controller"),
        ("Deployment", "kubeserial-injector"),
        ("DaemonSet", "kubeserial-monitor"),
    ):
        assert mib(request(by_name, kind, name)) <= mib(request(default, kind, name)), name
    # Same images as the default install (gateway and bridge included).
    images = {c["image"] for d in workloads(docs) for c in d["spec"]["template"]["spec"]["containers"]}
    assert images == {
        c["image"]
        for d in workloads(list(default.values()))
        for c in d["spec"]["template"]["spec"]["containers"]
    }
