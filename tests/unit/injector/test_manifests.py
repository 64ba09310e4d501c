"""The injector's shipped manifests agree with the code and with each other."""

from pathlib import Path
from typing import Any

import yaml

from kubeserial_common.core import constants as c
from kubeserial_injector.__main__ import build_parser

DEPLOY = Path(__file__).resolve().parents[3] / "deploy" / "kustomize"
DEFAULTS = build_parser().parse_args([])


def load(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def by_kind(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


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
        "values": [c.SYSTEM_NAMESPACE, c.DEFAULT_NAMESPACE],
    }
    service = webhook["clientConfig"]["service"]
    assert (service["name"], service["namespace"], service["path"]) == (
        DEFAULTS.service_name,
        c.SYSTEM_NAMESPACE,
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
