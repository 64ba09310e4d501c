import subprocess
import sys

from kubeserial_common.core.models import ManagerScheduleRequest, SerialDevice
from kubeserial_common.crdgen import crd_for, render_all
from kubeserial_testing.controlplane import REPO_ROOT

CRD_DIR = REPO_ROOT / "deploy" / "kustomize" / "base" / "crd"


def test_committed_crds_match_the_models() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kubeserial_common.crdgen", "--out", str(CRD_DIR), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_generated_schema_is_structural() -> None:
    def walk(node: object) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and "title" not in node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for text in render_all().values():
        assert "$ref" not in text
    walk(crd_for(SerialDevice))


def test_serialdevice_is_cluster_scoped_with_status_and_columns() -> None:
    crd = crd_for(SerialDevice)
    version = crd["spec"]["versions"][0]
    assert crd["spec"]["scope"] == "Cluster"
    assert version["subresources"] == {"status": {}}
    assert [col["name"] for col in version["additionalPrinterColumns"]] == ["Ready", "Available", "Node"]
    conditions = version["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map" and conditions["x-kubernetes-list-map-keys"] == [
        "type"
    ]


def test_msr_columns() -> None:
    columns = crd_for(ManagerScheduleRequest)["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [(c["name"], c["type"]) for c in columns] == [
        ("Device", "string"),
        ("Manager", "string"),
        ("Fulfilled", "boolean"),
    ]
