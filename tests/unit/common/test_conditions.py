from kubeserial_common.core.conditions import ConditionUpdate, apply_condition, condition_status, differs

T0, T1 = "2024-01-01T00:00:00Z", "2024-01-01T00:01:00Z"


def test_new_condition_gets_both_times() -> None:
    [cond] = apply_condition([], ConditionUpdate("Available", "True", "DeviceAvailable"), now=T0)
    assert cond["lastTransitionTime"] == T0 and cond["lastHeartbeatTime"] == T0


def test_same_status_moves_heartbeat_not_transition() -> None:
    first = apply_condition([], ConditionUpdate("Available", "True", "DeviceAvailable"), now=T0)
    [cond] = apply_condition(first, ConditionUpdate("Available", "True", "DeviceAvailable", "again"), now=T1)
    assert cond["lastTransitionTime"] == T0 and cond["lastHeartbeatTime"] == T1 and cond["message"] == "again"


def test_status_change_moves_transition() -> None:
    first = apply_condition([], ConditionUpdate("Available", "True", "DeviceAvailable"), now=T0)
    [cond] = apply_condition(first, ConditionUpdate("Available", "False", "DeviceUnavailable"), now=T1)
    assert cond["lastTransitionTime"] == T1 and cond["status"] == "False"


def test_other_conditions_untouched() -> None:
    conds = apply_condition(
        [], ConditionUpdate("Ready", "True", "AllChecksPassed", observed_generation=3), now=T0
    )
    conds = apply_condition(conds, ConditionUpdate("Free", "True", "NoSession"), now=T1)
    assert [c["type"] for c in conds] == ["Ready", "Free"]
    assert conds[0]["lastHeartbeatTime"] == T0 and conds[0]["observedGeneration"] == 3
    assert condition_status({"status": {"conditions": conds}}, "Free") == "True"
    assert condition_status({"status": {}}, "Free") is None


def test_differs() -> None:
    conds = apply_condition(
        [], ConditionUpdate("Ready", "True", "AllChecksPassed", observed_generation=1), now=T0
    )
    assert not differs(conds, ConditionUpdate("Ready", "True", "AllChecksPassed", observed_generation=1))
    assert differs(conds, ConditionUpdate("Ready", "True", "AllChecksPassed", observed_generation=2))
    assert differs(conds, ConditionUpdate("Ready", "False", "ManagerNotAvailable"))
    assert differs(conds, ConditionUpdate("Free", "True", "NoSession"))
