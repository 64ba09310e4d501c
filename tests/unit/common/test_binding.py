"""The binding rule (kubeserial_common.core.binding): SerialDevices to SerialPorts, pure."""

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from kubeserial_common.core.binding import bind
from kubeserial_common.core.serialports import device_key, matches, port_keys, port_name

ALL_ALIVE = {"alive": lambda _node: True, "held_elsewhere": lambda _port: False}


def device(name: str, serial: str | None = None, *, vendor: str = "0403", **status: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"idVendor": vendor, "idProduct": "6001"}
    if serial:
        spec["serialNumber"] = serial
    return {"metadata": {"name": name}, "spec": spec, "status": status}


def port(node: str, path: str, serial: str | None = None, holder: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeName": node, "idVendor": "0403", "idProduct": "6001", "devicePath": path}
    if serial:
        spec["serialNumber"] = serial
    return {"metadata": {"name": port_name(node, path)}, "spec": spec, "status": {"device": holder}}


def by_name(*objs: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs}


def test_ids_compare_as_hex_ignoring_case_and_serial_only_when_named() -> None:
    assert matches({"idVendor": "10C4", "idProduct": "EA60"}, {"idVendor": "10c4", "idProduct": "ea60"})
    assert not matches({"idVendor": "10c4", "idProduct": "ea61"}, {"idVendor": "10c4", "idProduct": "ea60"})
    p = {"idVendor": "0403", "idProduct": "6001", "serialNumber": "X1"}
    assert matches({"idVendor": "0403", "idProduct": "6001"}, p)
    assert matches({"idVendor": "0403", "idProduct": "6001", "serialNumber": "X1"}, p)
    assert not matches({"idVendor": "0403", "idProduct": "6001", "serialNumber": "X2"}, p)


def test_keys_split_work_by_serial_number() -> None:
    assert device_key(device("a", "S1")["spec"]) == ("0403", "6001", "S1")
    assert device_key(device("a")["spec"]) == ("0403", "6001", "*")
    assert port_keys(port("n", "/dev/ttyUSB0", "S1")["spec"]) == (
        ("0403", "6001", "S1"),
        ("0403", "6001", "*"),
    )


def test_two_identical_adapters_without_serials_are_bound_deterministically_and_explained() -> None:
    ports = by_name(port("node-b", "/dev/ttyUSB0"), port("node-a", "/dev/ttyUSB1"))
    devices = by_name(device("one"), device("two"))
    plan = bind(devices, ports, **ALL_ALIVE)
    first = port_name("node-a", "/dev/ttyUSB1")
    assert plan.bindings == {"one": first, "two": port_name("node-b", "/dev/ttyUSB0")}
    assert plan.ambiguous["one"] == sorted(ports, key=lambda p: (ports[p]["spec"]["nodeName"],))
    assert "chose the first by node and path" in plan.messages["one"] and first in plan.messages["one"]
    assert "two" not in plan.ambiguous  # one candidate left: nothing to choose
    assert bind(devices, dict(reversed(list(ports.items()))), **ALL_ALIVE).bindings == plan.bindings


def test_existing_binding_is_kept_while_its_port_exists() -> None:
    held = port("node-b", "/dev/ttyUSB0", holder="dev")
    plan = bind(by_name(device("dev")), by_name(port("node-a", "/dev/ttyUSB0"), held), **ALL_ALIVE)
    assert plan.bindings == {"dev": held["metadata"]["name"]}  # node-a sorts first, but no flapping


def test_a_port_serves_one_device_and_a_device_one_port() -> None:
    plan = bind(by_name(device("a"), device("b")), by_name(port("n", "/dev/ttyUSB0")), **ALL_ALIVE)
    assert plan.bindings == {"a": port_name("n", "/dev/ttyUSB0"), "b": None}


def test_new_bindings_go_to_live_nodes_only() -> None:
    ports = by_name(port("dead", "/dev/ttyUSB0"), port("live", "/dev/ttyUSB0"))
    plan = bind(by_name(device("a")), ports, alive=lambda n: n == "live", held_elsewhere=lambda _p: False)
    assert plan.bindings == {"a": port_name("live", "/dev/ttyUSB0")}


def test_an_adapter_carried_away_from_a_lost_node_follows_to_a_live_one() -> None:
    # node-a died with the port bound (its monitor cannot delete it); the same adapter is plugged
    # into node-b: the device moves, and the stale port no longer names it.
    stale = port("node-a", "/dev/ttyUSB0", "S1", holder="dev")
    moved = port("node-b", "/dev/ttyUSB0", "S1")
    devices = by_name(device("dev", "S1"))
    alive_b = {"alive": lambda n: n == "node-b", "held_elsewhere": lambda _p: False}
    plan = bind(devices, by_name(stale, moved), **alive_b)
    assert plan.bindings == {"dev": moved["metadata"]["name"]}
    assert plan.holders == {stale["metadata"]["name"]: None, moved["metadata"]["name"]: "dev"}
    # With no live match it stays where it was (NodeLost until the node or the adapter returns).
    plan = bind(devices, by_name(stale), **alive_b)
    assert plan.bindings == {"dev": stale["metadata"]["name"]}
    assert plan.holders == {stale["metadata"]["name"]: "dev"}
    # A node that is alive keeps its binding even when another free match exists (no flapping).
    plan = bind(devices, by_name(stale, moved), **ALL_ALIVE)
    assert plan.bindings == {"dev": stale["metadata"]["name"]}


def test_ports_held_elsewhere_and_reserved_ports_are_left_alone() -> None:
    other = port("n", "/dev/ttyUSB0", "S1", holder="someone")
    reserved = port("n", "/dev/ttyUSB1", "S2")
    plan = bind(
        by_name(device("any")),
        by_name(other, reserved),
        alive=lambda _n: True,
        held_elsewhere=lambda p: p is other,
        reserved=lambda p: p is reserved,
    )
    assert plan.bindings == {"any": None}
    assert other["metadata"]["name"] not in plan.holders


def test_an_older_versions_placement_is_adopted_in_place() -> None:
    legacy = device(
        "dev",
        nodeName="node-b",
        devicePath="/dev/serial/by-id/x",
        conditions=[{"type": "Available", "status": "True"}],
    )
    ports = by_name(port("node-a", "/dev/ttyUSB0"), port("node-b", "/dev/serial/by-id/x"))
    plan = bind(by_name(legacy), ports, **ALL_ALIVE)
    assert plan.bindings == {"dev": port_name("node-b", "/dev/serial/by-id/x")}
    assert plan.adopted == {"dev"}


serials = st.sampled_from(["S1", "S2", "S3"])


@given(
    devices=st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), st.none() | serials),
    adapters=st.lists(st.tuples(st.integers(0, 5), st.none() | serials), unique_by=lambda a: a[0]),
)
def test_binding_is_a_valid_matching_and_independent_of_order(
    devices: dict[str, str | None], adapters: list[tuple[int, str | None]]
) -> None:
    specs = by_name(*(device(name, serial) for name, serial in devices.items()))
    ports = by_name(*(port("n", f"/dev/ttyUSB{i}", serial) for i, serial in adapters))
    plan = bind(specs, ports, **ALL_ALIVE)
    bound = [p for p in plan.bindings.values() if p is not None]
    assert len(bound) == len(set(bound))  # no port twice
    assert all(matches(specs[d]["spec"], ports[p]["spec"]) for d, p in plan.bindings.items() if p)
    assert {p: d for p, d in plan.holders.items() if d} == {p: d for d, p in plan.bindings.items() if p}
    again = bind(specs, dict(reversed(list(ports.items()))), **ALL_ALIVE)
    assert again.bindings == plan.bindings
