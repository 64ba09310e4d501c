"""`make demo` chooses real nodes where the machine can run them, and says why not otherwise."""

import pytest

from kubeserial_testing.demo import main
from kubeserial_testing.demo_real import TOOLS, missing_for_real_nodes

ALL_TOOLS = dict.fromkeys(TOOLS, True)
CAN = {"euid": 0, "tools": ALL_TOOLS, "cni_bridge": True, "pids_cgroup": True, "kubelet": True, "go": False}


def test_a_machine_with_everything_runs_real_nodes() -> None:
    assert missing_for_real_nodes(**CAN) is None  # type: ignore[arg-type]
    assert missing_for_real_nodes(**{**CAN, "kubelet": False, "go": True}) is None  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"euid": 1000}, "need root"),
        ({"tools": {**ALL_TOOLS, "containerd": False, "runc": False}}, "containerd, runc not installed"),
        ({"cni_bridge": False}, "CNI plugins are not installed"),
        ({"pids_cgroup": False}, "no pids cgroup"),
        ({"kubelet": False, "go": False}, "no kubelet v"),
    ],
)
def test_each_missing_piece_is_named(change: dict[str, object], reason: str) -> None:
    why = missing_for_real_nodes(**{**CAN, **change})  # type: ignore[arg-type]
    assert why is not None and reason in why
    assert "\n" not in why


def test_real_nodes_or_nothing_fails_saying_why(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: object
) -> None:
    monkeypatch.setattr("kubeserial_testing.demo_real.why_not_real_nodes", lambda: "no kubelet here")
    assert main(["--real-nodes", "--workdir", str(tmp_path)]) == 2
    assert "cannot run on real nodes: no kubelet here" in capsys.readouterr().err


def test_local_and_real_nodes_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        main(["--local", "--real-nodes"])
