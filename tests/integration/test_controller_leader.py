"""Leader election between real controller processes under the controller's ServiceAccount:
only the Lease holder reconciles, a standby takes over when the leader stops, and a leader that
loses its Lease exits."""

import json
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

import pytest

from kubeserial_common.core.names import gateway_name
from kubeserial_common.runtime.leases import micro_time
from kubeserial_testing.controlplane import ControlPlane
from kubeserial_testing.objects import (
    apply_object,
    serial_device,
    simulated_node,
    unique,
    wait_exists,
    write_monitor_status,
)
from kubeserial_testing.probes import RunningService, running_service
from kubeserial_testing.services import NAMESPACE, SYSTEM_NAMESPACE, apply_rbac, stop_process, wait_for

pytestmark = pytest.mark.controlplane
LEADER_LEASE = "kubeserial-controller"  # the one name the RBAC lets the controller update
FAST_ELECTION = ["--lease-duration", "4", "--renew-interval", "1"]
RECONCILES = "kubeserial_controller_reconciles_total"


@pytest.fixture(scope="module")
def kubeconfig(control_plane: ControlPlane) -> Iterator[Path]:
    path = apply_rbac(control_plane, "controller")
    control_plane.kubectl("create", "serviceaccount", "kubeserial-gateway", "-n", NAMESPACE, check=False)
    yield path
    control_plane.kubectl("delete", "lease", LEADER_LEASE, "-n", SYSTEM_NAMESPACE, check=False)


def leading(replica: RunningService) -> bool:
    return replica.metric("kubeserial_controller_leader") == 1.0


def test_only_the_leader_reconciles_and_a_standby_takes_over(
    control_plane: ControlPlane, kubeconfig: Path, tmp_path: Path
) -> None:
    with ExitStack() as stack:
        replicas = [
            stack.enter_context(
                running_service(
                    "kubeserial_controller",
                    FAST_ELECTION,
                    kubeconfig=kubeconfig,
                    log_path=tmp_path / f"{n}.log",
                )
            )
            for n in ("first", "second")
        ]
        wait_for(lambda: any(leading(r) for r in replicas), timeout=60, message="a leader")
        node = stack.enter_context(simulated_node(control_plane))
        (leader,) = [r for r in replicas if leading(r)]
        (standby,) = [r for r in replicas if r is not leader]
        wait_for(standby.ready, timeout=30, message="standby caches synced")
        assert standby.metric("kubeserial_controller_leader") == 0.0

        first = unique("led")
        reconciled_before = leader.metric(RECONCILES, kind="SerialDevice", result="success") or 0
        apply_object(control_plane, serial_device(first))
        write_monitor_status(control_plane, first, node=node, available=True)
        wait_exists(control_plane, "deployment", gateway_name(first), namespace=NAMESPACE)
        assert (leader.metric(RECONCILES, kind="SerialDevice", result="success") or 0) > reconciled_before
        assert standby.metric(RECONCILES, kind="SerialDevice", result="success") == 0, "standby acted"

        stop_process(leader.proc)
        assert leader.proc.returncode == 0, leader.log_tail()
        # The old leader released the Lease on its way out: no need to wait for it to expire.
        wait_for(lambda: leading(standby), timeout=15, message="standby took over")
        second = unique("led")
        apply_object(control_plane, serial_device(second))
        write_monitor_status(control_plane, second, node=node, available=True)
        wait_exists(control_plane, "deployment", gateway_name(second), namespace=NAMESPACE)
        for name in (first, second):
            control_plane.kubectl("delete", "serialdevice", name)


def test_a_leader_that_loses_its_lease_exits(
    control_plane: ControlPlane, kubeconfig: Path, tmp_path: Path
) -> None:
    with running_service(
        "kubeserial_controller", FAST_ELECTION, kubeconfig=kubeconfig, log_path=tmp_path / "leader.log"
    ) as replica:
        wait_for(lambda: leading(replica), timeout=60, message="leading")
        now = micro_time(datetime.now(UTC))
        thief = {"spec": {"holderIdentity": "someone-else", "renewTime": now, "leaseDurationSeconds": 60}}
        control_plane.kubectl(
            "patch", "lease", LEADER_LEASE, "-n", SYSTEM_NAMESPACE, "--type=merge", "-p", json.dumps(thief)
        )
        wait_for(lambda: not replica.alive(), timeout=30, message="the deposed leader exits")
        assert replica.proc.returncode == 3, replica.log_tail()
    control_plane.kubectl("delete", "lease", LEADER_LEASE, "-n", SYSTEM_NAMESPACE)
