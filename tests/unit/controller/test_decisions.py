"""The controller's pure decisions: Ready, placement, node liveness, drift, availability."""

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kubeserial_common.core import constants as c
from kubeserial_common.runtime.leases import micro_time
from kubeserial_controller import decisions as d

NOW = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
GRACE = timedelta(seconds=10)


def at(seconds: float) -> str:
    return micro_time(NOW + timedelta(seconds=seconds))


def device(
    *, manager: str | None = None, available: str | None = None, node: str | None = None, **extra: Any
) -> dict[str, Any]:
    conditions = []
    if available is not None:
        conditions.append(
            {
                "type": c.AVAILABLE,
                "status": available,
                "reason": "DeviceAvailable",
                "lastTransitionTime": extra.pop("transition", "2026-01-01T11:00:00Z"),
                "lastHeartbeatTime": extra.pop("heartbeat", "2026-01-01T11:00:00Z"),
            }
        )
    spec: dict[str, Any] = {"idVendor": "0403", "idProduct": "6001"}
    if manager:
        spec["manager"] = manager
    status: dict[str, Any] = {"conditions": conditions}
    if node:
        status |= {"nodeName": node, "devicePath": extra.pop("path", "/dev/ttyUSB0")}
    return {"metadata": {"name": "ender3", "uid": "u1", "generation": 4}, "spec": spec, "status": status}


def lease(*, renewed: float, duration: int = 15, holder: str | None = "monitor") -> dict[str, Any]:
    return {"holderIdentity": holder, "leaseDurationSeconds": duration, "renewTime": at(renewed)}


# -- Ready ---------------------------------------------------------------------------------------


def test_ready_without_manager_passes_all_checks() -> None:
    update = d.ready_update(device(), manager_exists=False)
    assert (update.status, update.reason, update.observed_generation) == ("True", "AllChecksPassed", 4)


def test_ready_false_names_the_missing_manager() -> None:
    update = d.ready_update(device(manager="octoprint"), manager_exists=False)
    assert (update.status, update.reason) == ("False", "ManagerNotAvailable")
    assert "octoprint" in update.message


def test_ready_true_when_manager_exists() -> None:
    assert d.ready_update(device(manager="octoprint"), manager_exists=True).status == "True"


# -- placement -----------------------------------------------------------------------------------


def test_placement_needs_available_true_node_and_path() -> None:
    assert d.claimed_placement(device(available="True", node="node-a")) == d.Placement(
        "node-a", "/dev/ttyUSB0"
    )
    assert d.claimed_placement(device(available="False", node="node-a")) is None
    assert d.claimed_placement(device(available="Unknown", node="node-a")) is None
    assert d.claimed_placement(device(available="True")) is None
    assert d.claimed_placement(device()) is None


def test_last_confirmed_is_the_later_of_transition_and_heartbeat() -> None:
    dev = device(available="True", transition="2026-01-01T10:00:00Z", heartbeat="2026-01-01T11:30:00Z")
    assert d.last_confirmed(dev) == datetime(2026, 1, 1, 11, 30, tzinfo=UTC)
    assert d.last_confirmed(device()) is None


# -- node liveness -------------------------------------------------------------------------------


def test_live_lease_keeps_the_node_and_its_timer_covers_the_device() -> None:
    liveness = d.device_liveness(lease(renewed=-5), confirmed=NOW - timedelta(hours=1), now=NOW, grace=GRACE)
    assert liveness == d.Liveness(lost=False, recheck_after=None)


def test_expired_lease_loses_the_node_after_the_grace() -> None:
    old_claim = NOW - timedelta(hours=1)
    assert not d.device_liveness(
        lease(renewed=-20), confirmed=old_claim, now=NOW, grace=GRACE
    ).lost  # 15+10 > 20
    assert d.device_liveness(lease(renewed=-26), confirmed=old_claim, now=NOW, grace=GRACE).lost


def test_released_lease_still_counts_until_it_would_expire() -> None:
    """A monitor restarting for an upgrade releases its Lease; its gateways must not be torn down."""
    released = lease(renewed=-3, holder=None)
    assert not d.device_liveness(released, confirmed=NOW - timedelta(hours=1), now=NOW, grace=GRACE).lost


def test_fresh_claim_is_not_lost_even_with_a_stale_lease_and_is_rechecked() -> None:
    liveness = d.device_liveness(
        lease(renewed=-600), confirmed=NOW - timedelta(seconds=4), now=NOW, grace=GRACE
    )
    assert liveness.lost is False
    assert liveness.recheck_after == pytest.approx(6.0)


def test_missing_lease_loses_the_node_once_the_claim_is_older_than_the_grace() -> None:
    young = d.device_liveness(None, confirmed=NOW - timedelta(seconds=2), now=NOW, grace=GRACE)
    assert young.lost is False and young.recheck_after == pytest.approx(8.0)
    assert d.device_liveness(None, confirmed=NOW - timedelta(seconds=11), now=NOW, grace=GRACE).lost
    assert d.device_liveness(None, confirmed=None, now=NOW, grace=GRACE).lost


def test_node_lease_recheck_counts_down_to_the_deadline() -> None:
    assert d.node_lease_recheck(lease(renewed=-5), now=NOW, grace=GRACE) == pytest.approx(20.0)
    assert d.node_lease_recheck(lease(renewed=-30), now=NOW, grace=GRACE) is None
    assert d.node_lease_recheck(None, now=NOW, grace=GRACE) is None
    assert d.node_lease_recheck({"holderIdentity": "x"}, now=NOW, grace=GRACE) is None


def test_node_from_lease_name() -> None:
    assert d.node_from_lease_name("kubeserial-monitor-node-a") == "node-a"
    assert d.node_from_lease_name("kubeserial-monitor-") is None
    assert d.node_from_lease_name("kubeserial-controller") is None


def test_status_updates_add_node_lost_only_for_a_claimed_device_on_a_dead_node() -> None:
    claimed = device(available="True", node="node-a")
    updates, liveness = d.device_status_updates(
        claimed, manager_exists=False, lease_spec=lease(renewed=-100), now=NOW, grace=GRACE
    )
    assert [(u.type, u.status, u.reason) for u in updates] == [
        ("Ready", "True", "AllChecksPassed"),
        ("Available", "Unknown", "NodeLost"),
    ]
    assert liveness is not None and liveness.lost
    assert "kubeserial-monitor-node-a" in updates[1].message
    updates, liveness = d.device_status_updates(
        device(available="False"), manager_exists=False, lease_spec=None, now=NOW, grace=GRACE
    )
    assert [u.type for u in updates] == ["Ready"] and liveness is None


def test_changed_conditions_reports_status_or_reason_changes_only() -> None:
    before = {
        "status": {"conditions": [{"type": "Ready", "status": "False", "reason": "ManagerNotAvailable"}]}
    }
    same = {
        "status": {
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "ManagerNotAvailable", "message": "x"}
            ]
        }
    }
    after = {"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "AllChecksPassed"}]}}
    assert d.changed_conditions(before, same, types=("Ready",)) == []
    assert [cond["reason"] for cond in d.changed_conditions(before, after, types=("Ready", "Available"))] == [
        "AllChecksPassed"
    ]


# -- drift ---------------------------------------------------------------------------------------


def test_contains_ignores_server_defaults_and_entries_others_added() -> None:
    desired = {
        "spec": {
            "replicas": 1,
            "containers": [
                {"name": "gw", "args": ["serve"], "ports": [{"name": "raw", "containerPort": 3333}]}
            ],
        }
    }
    actual = {
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 10,
            "containers": [
                {"name": "debug", "image": "busybox"},
                {
                    "name": "gw",
                    "args": ["serve"],
                    "imagePullPolicy": "Always",
                    "ports": [{"name": "raw", "containerPort": 3333, "protocol": "TCP"}],
                },
            ],
        }
    }
    assert d.contains(actual, desired)


@pytest.mark.parametrize(
    "edit",
    [
        lambda obj: obj["spec"].update(replicas=3),
        lambda obj: obj["spec"]["containers"][0]["args"].append("--extra"),
        lambda obj: obj["spec"]["containers"][0]["args"].clear(),
        lambda obj: obj["spec"]["containers"].clear(),
        lambda obj: obj["spec"].pop("replicas"),
    ],
)
def test_contains_sees_edits_of_fields_we_set(edit: Any) -> None:
    desired = {"spec": {"replicas": 1, "containers": [{"name": "gw", "args": ["serve"]}]}}
    actual = {"spec": {"replicas": 1, "containers": [{"name": "gw", "args": ["serve"]}]}}
    edit(actual)
    assert not d.contains(actual, desired)


def test_drifted_when_missing_deleting_edited_or_desired_state_changed() -> None:
    desired = d.stamped(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "s", "labels": {"a": "b"}},
            "spec": {"type": "ClusterIP"},
        }
    )
    actual = {
        **desired,
        "metadata": {**desired["metadata"], "uid": "1", "resourceVersion": "9"},
        "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.9"},
    }
    assert not d.drifted(actual, desired)
    assert d.drifted(None, desired)
    assert d.drifted({**actual, "metadata": {**actual["metadata"], "deletionTimestamp": "now"}}, desired)
    assert d.drifted({**actual, "metadata": {**actual["metadata"], "labels": {}}}, desired)
    # A field we stopped setting is invisible to `contains` (an extra key), but not to the hash.
    smaller = d.stamped(
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "labels": {"a": "b"}}, "spec": {}}
    )
    assert d.contains(actual, {"spec": {}}) and d.drifted(actual, smaller)


def test_stamped_hash_is_stable_and_leaves_the_input_alone() -> None:
    desired: dict[str, Any] = {"metadata": {"name": "x", "annotations": {"keep": "me"}}, "spec": {"a": 1}}
    first, second = (
        d.stamped(desired),
        d.stamped({"spec": {"a": 1}, "metadata": {"annotations": {"keep": "me"}, "name": "x"}}),
    )
    assert first["metadata"]["annotations"]["keep"] == "me"
    assert (
        first["metadata"]["annotations"][d.APPLIED_HASH_ANNOTATION]
        == second["metadata"]["annotations"][d.APPLIED_HASH_ANNOTATION]
    )
    assert d.APPLIED_HASH_ANNOTATION not in desired["metadata"]["annotations"]


def test_controlled_by_matches_the_controller_reference_uid() -> None:
    owner = {"metadata": {"uid": "u1"}}
    child = {"metadata": {"ownerReferences": [{"uid": "u0"}, {"uid": "u1", "controller": True}]}}
    assert d.controlled_by(child, owner)
    assert not d.controlled_by(child, {"metadata": {"uid": "u0"}})
    assert not d.controlled_by({"metadata": {}}, owner)


# -- availability of a Deployment ----------------------------------------------------------------


def deployment(
    *, generation: int = 2, observed: int = 2, available: str = "True", replicas: int = 1
) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "availableReplicas": replicas,
            "conditions": [{"type": "Available", "status": available}],
        },
    }


def test_deployment_available() -> None:
    assert d.deployment_available(deployment())
    assert not d.deployment_available(None)
    assert not d.deployment_available(deployment(observed=1))
    assert not d.deployment_available(deployment(available="False"))
    assert not d.deployment_available(deployment(replicas=0))


def test_condition_state_for_metrics() -> None:
    assert d.condition_state(device(available="True"), c.AVAILABLE) == "True"
    assert d.condition_state(device(), c.AVAILABLE) == "None"


def conditions(*items: tuple[str, str, str]) -> dict[str, Any]:
    return {
        "status": {"conditions": [{"type": t, "status": s, "reason": r, "message": ""} for t, s, r in items]}
    }


def test_notices_for_ready_transitions_and_node_lost_only() -> None:
    fresh = conditions()
    passing = conditions(("Ready", "True", "AllChecksPassed"))
    failing = conditions(("Ready", "False", "ManagerNotAvailable"))
    assert d.device_notices(fresh, passing) == [], "a new device passing validation is no news"
    assert [(n.reason, n.warning) for n in d.device_notices(fresh, failing)] == [
        ("ManagerNotAvailable", True)
    ]
    assert [(n.reason, n.warning) for n in d.device_notices(failing, passing)] == [("AllChecksPassed", False)]
    assert d.device_notices(passing, passing) == []
    claimed = conditions(("Available", "True", "DeviceAvailable"))
    lost = conditions(("Available", "Unknown", "NodeLost"))
    assert d.device_notices(fresh, claimed) == [], "the monitor reports its own transitions"
    assert [(n.reason, n.warning) for n in d.device_notices(claimed, lost)] == [("NodeLost", True)]
