"""The JSON patch for kubeserial.com/* extended resources on a Node's status."""

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kubeserial_controller.noderesources import pointer_token, resource_patch

BASE = {"capacity": {"cpu": "4", "pods": "110"}, "allocatable": {"cpu": "4", "pods": "110"}}


def apply_ops(status: dict[str, Any], ops: list[dict[str, Any]]) -> dict[str, Any]:
    """Apply add/remove ops on /status/<field>[/<key>] the way RFC 6902 does (fails like it too)."""
    result = {field: dict(value) for field, value in status.items()}
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[2:]]
        if len(parts) == 1:
            assert op["op"] == "add"
            result[parts[0]] = dict(op["value"])
            continue
        field, key = parts
        target = result[field]  # KeyError = the apiserver's 422 for a missing parent
        if op["op"] == "remove":
            del target[key]  # KeyError = 422 for removing a missing key
        else:
            target[key] = op["value"]
    return result


def test_pointer_escapes_the_slash_of_the_resource_name() -> None:
    assert pointer_token("kubeserial.com/ender3") == "kubeserial.com~1ender3"
    assert pointer_token("a~b") == "a~0b"


def test_owned_device_is_one_in_capacity_and_allocatable() -> None:
    ops = resource_patch(BASE, owned=["ender3"], known=["ender3"])
    assert ops == [
        {"op": "add", "path": "/status/capacity/kubeserial.com~1ender3", "value": "1"},
        {"op": "add", "path": "/status/allocatable/kubeserial.com~1ender3", "value": "1"},
    ]


def test_device_gone_from_node_drops_to_zero() -> None:
    status = apply_ops(BASE, resource_patch(BASE, owned=["ender3"], known=["ender3"]))
    after = apply_ops(status, resource_patch(status, owned=[], known=["ender3"]))
    assert after["capacity"]["kubeserial.com/ender3"] == "0"
    assert after["allocatable"]["kubeserial.com/ender3"] == "0"


def test_never_seen_device_gets_no_key() -> None:
    assert resource_patch(BASE, owned=[], known=["ender3"]) == []


def test_deleted_device_key_is_removed_and_others_are_untouched() -> None:
    status = apply_ops(BASE, resource_patch(BASE, owned=["a", "b"], known=["a", "b"]))
    after = apply_ops(status, resource_patch(status, owned=["a"], known=["a"]))
    assert after["capacity"] == {"cpu": "4", "pods": "110", "kubeserial.com/a": "1"}


def test_shutdown_removes_every_kubeserial_key() -> None:
    status = apply_ops(BASE, resource_patch(BASE, owned=["a"], known=["a", "b"]))
    status["capacity"]["kubeserial.com/b"] = "0"
    after = apply_ops(status, resource_patch(status, owned=[], known=[]))
    assert after == BASE


def test_node_without_capacity_gets_the_map_first() -> None:
    status = apply_ops({}, resource_patch({}, owned=["a"], known=["a"]))
    assert status == {"capacity": {"kubeserial.com/a": "1"}, "allocatable": {"kubeserial.com/a": "1"}}


names = st.sets(st.sampled_from(["a", "b", "c", "d"]))


@given(start_owned=names, start_known=names, owned=names, known=names)
def test_patch_converges_and_is_idempotent(
    start_owned: set[str], start_known: set[str], owned: set[str], known: set[str]
) -> None:
    status = apply_ops(BASE, resource_patch(BASE, owned=start_owned, known=start_known))
    status = apply_ops(status, resource_patch(status, owned=owned, known=known))
    assert resource_patch(status, owned=owned, known=known) == []
    ours = {k.removeprefix("kubeserial.com/"): v for k, v in status["capacity"].items() if "/" in k}
    assert {name for name, value in ours.items() if value == "1"} == owned
    assert set(ours) <= owned | known
    assert status["capacity"]["cpu"] == "4"
