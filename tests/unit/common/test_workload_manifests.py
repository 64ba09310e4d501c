"""Shipped workloads: properties every pod template must have, read from the base manifests."""

from pathlib import Path

import pytest
import yaml

BASE = Path(__file__).resolve().parents[3] / "deploy" / "kustomize" / "base"
WORKLOADS = ["controller/deployment.yaml", "injector/deployment.yaml", "monitor/daemonset.yaml"]


@pytest.mark.parametrize("path", WORKLOADS)
def test_no_service_link_env(path: str) -> None:
    """Service links would put KUBESERIAL_INJECTOR_PORT=tcp://<ip>:443 into every pod of the
    namespace: the injector read it as its port and crashed on a real kubelet."""
    workload = yaml.safe_load((BASE / path).read_text())
    assert workload["spec"]["template"]["spec"]["enableServiceLinks"] is False
