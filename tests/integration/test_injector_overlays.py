"""The injector's cert-manager overlay as kustomize renders it (needs kubectl, so not a unit test)."""

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserial_common.core import constants as c
from kubeserial_injector.__main__ import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kustomize"


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
    args = build_parser().parse_args(spec["containers"][0]["args"])
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
