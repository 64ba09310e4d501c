"""Bad input the controller refuses by name instead of writing what the apiserver would refuse."""

from kubeserial_controller.decisions import (
    CONFIGMAP_MAX_BYTES,
    creation_stub,
    kubeserial_label_problem,
    manager_config_problem,
)


def test_a_kubeserial_label_fits_up_to_63_characters() -> None:
    assert kubeserial_label_problem("kubeserial", "x" * 52) is None  # 10 + 1 + 52 = 63
    problem = kubeserial_label_problem("kubeserial", "x" * 53)
    assert problem is not None
    assert problem.startswith("metadata.name is too long")
    assert "64 characters here" in problem and "may have at most 52 characters" in problem


def test_a_manager_config_must_fit_a_configmap_with_its_key() -> None:
    assert manager_config_problem(None, key="config.yaml") is None
    assert manager_config_problem("x" * (CONFIGMAP_MAX_BYTES - 11), key="config.yaml") is None
    assert manager_config_problem("x" * (CONFIGMAP_MAX_BYTES - 10), key="config.yaml") is not None
    problem = manager_config_problem("é" * (CONFIGMAP_MAX_BYTES // 2), key="c")  # bytes, not characters
    assert problem == (
        f"spec.config is {CONFIGMAP_MAX_BYTES} bytes; its ConfigMap (data key 'c') holds at most"
        f" {CONFIGMAP_MAX_BYTES} bytes of keys and values"
    )


def test_a_creation_stub_carries_only_what_never_changes() -> None:
    desired = {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "SerialDevice",
        "metadata": {"name": "ender3", "labels": {"app.kubeserial.com/kubeserial": "ns.home"}},
        "spec": {"idVendor": "0403", "idProduct": "6001", "manager": "octoprint", "baudRate": 115200},
    }
    assert creation_stub(desired, spec_fields=("idVendor", "idProduct")) == {
        "apiVersion": "app.kubeserial.com/v1alpha1",
        "kind": "SerialDevice",
        "metadata": {"name": "ender3", "labels": {"app.kubeserial.com/kubeserial": "ns.home"}},
        "spec": {"idVendor": "0403", "idProduct": "6001"},
    }
