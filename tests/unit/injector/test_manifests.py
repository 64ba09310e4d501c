"""The injector's shipped manifests agree with the code and with each other."""

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserial_common import constants as c
from kubeserial_injector.__main__ import build_parser

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "kustomize"
DEFAULTS = build_parser().parse_args([])


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


@pytest.fixture(scope="module")
def cert_manager() -> list[dict[str, Any]]:
    out = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "overlays" / "cert-manager")],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_webhook_configuration() -> None:
    (config,) = load(DEPLOY / "base" / "webhook" / "mutatingwebhookconfiguration.yaml")
    assert config["metadata"]["name"] == DEFAULTS.webhook_config
    (webhook,) = config["webhooks"]
    assert webhook["failurePolicy"] == "Fail" and webhook["sideEffects"] == "None"
    assert webhook["timeoutSeconds"] <= 10 and webhook["admissionReviewVersions"] == ["v1"]
    assert webhook["rules"] == [
        {
            "operations": ["CREATE"],
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["pods"],
            "scope": "Namespaced",
        }
    ]
    conditions = " ".join(cond["expression"] for cond in webhook["matchConditions"])
    assert f"'{c.INJECT_ANNOTATION}' in object.metadata.annotations" in conditions
    assert f"!('{c.INJECTED_ANNOTATION}' in object.metadata.annotations)" in conditions
    (exclusion,) = webhook["namespaceSelector"]["matchExpressions"]
    assert exclusion == {
        "key": "kubernetes.io/metadata.name",
        "operator": "NotIn",
        "values": [c.DEFAULT_NAMESPACE],
    }
    service = webhook["clientConfig"]["service"]
    assert (service["name"], service["namespace"], service["path"]) == (
        DEFAULTS.service_name,
        c.DEFAULT_NAMESPACE,
        "/mutate",
    )
    (svc,) = load(DEPLOY / "base" / "injector" / "service.yaml")
    assert svc["metadata"]["name"] == service["name"]
    assert any(p["port"] == service["port"] and p["targetPort"] == "webhook" for p in svc["spec"]["ports"])


def test_rbac_names_match_the_defaults() -> None:
    docs = load(DEPLOY / "base" / "rbac" / "injector.yaml")
    cluster_rules = by_kind(docs, "ClusterRole", "kubeserial-injector")["rules"]
    assert cluster_rules[0] == {
        "apiGroups": [c.GROUP],
        "resources": [c.SERIALDEVICES],
        "verbs": ["get", "list", "watch"],
    }
    assert cluster_rules[1]["resourceNames"] == [DEFAULTS.webhook_config]
    assert cluster_rules[1]["verbs"] == ["get", "patch"]
    secret_rules = by_kind(docs, "Role", "kubeserial-injector")["rules"]
    assert secret_rules[0]["resourceNames"] == [DEFAULTS.tls_secret]
    assert sorted(verb for rule in secret_rules for verb in rule["verbs"]) == ["create", "get", "update"]


def test_deployment_runs_as_its_service_account() -> None:
    (deployment,) = load(DEPLOY / "base" / "injector" / "deployment.yaml")
    spec = deployment["spec"]["template"]["spec"]
    assert spec["serviceAccountName"] == "kubeserial-injector"
    (container,) = spec["containers"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "webhook": DEFAULTS.port,
        "health": 8080,
    }
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_cert_manager_overlay(cert_manager: list[dict[str, Any]]) -> None:
    config = by_kind(cert_manager, "MutatingWebhookConfiguration", "kubeserial-injector")
    certificate = by_kind(cert_manager, "Certificate", "kubeserial-injector")
    namespace = certificate["metadata"]["namespace"]
    assert (
        config["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        == f"{namespace}/kubeserial-injector"
    )
    service = config["webhooks"][0]["clientConfig"]["service"]
    assert f"{service['name']}.{service['namespace']}.svc" in certificate["spec"]["dnsNames"]
    deployment = by_kind(cert_manager, "Deployment", "kubeserial-injector")
    spec = deployment["spec"]["template"]["spec"]
    args = parse_container_args(spec["containers"][0]["args"])
    assert args.cert_mode == "files"
    secret_volume = next(v for v in spec["volumes"] if "secret" in v)
    assert secret_volume["secret"]["secretName"] == certificate["spec"]["secretName"]
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == secret_volume["name"])
    assert str(args.tls_cert_file).startswith(mount["mountPath"] + "/")
    # Least privilege: no Secret or webhook-configuration access without self-managed certificates.
    assert not any(
        d["kind"] == "Role" and d["metadata"]["name"] == "kubeserial-injector" for d in cert_manager
    )
    rules = by_kind(cert_manager, "ClusterRole", "kubeserial-injector")["rules"]
    assert [rule["resources"] for rule in rules] == [[c.SERIALDEVICES]]


def parse_container_args(args: list[str]) -> Any:
    return build_parser().parse_args(args)
