"""Pure admission decisions: annotations -> links -> JSONPatch, denials and warnings."""

from collections.abc import Callable
from typing import Any

import pytest

from kubeserial_common.core import constants as c
from kubeserial_common.core.podspec import BridgeSettings, DeviceLink
from kubeserial_injector.injection import (
    InjectionError,
    annotation_patch,
    decide,
    device_problem,
    escape_pointer,
    metadata_patch,
    plan_links,
    requested_devices,
)

SETTINGS = BridgeSettings(image="gw:1", namespace="kubeserial")
Patcher = Callable[[dict[str, Any], list[dict[str, Any]]], dict[str, Any]]


def device(name: str, available: str | None = "True") -> dict[str, Any]:
    conditions = [] if available is None else [{"type": "Available", "status": available, "reason": "X"}]
    return {"metadata": {"name": name}, "status": {"conditions": conditions}}


def pod(annotations: dict[str, str] | None, *containers: str, **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": "apps"}
    if annotations is not None:
        meta["annotations"] = annotations
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": meta,
        "spec": {"containers": [{"name": n, "image": "busybox"} for n in containers or ("app",)], **spec},
    }


def test_requested_devices_parses_lists() -> None:
    assert requested_devices({c.INJECT_ANNOTATION: "ender3"}) == ["ender3"]
    assert requested_devices({c.INJECT_ANNOTATION: " ender3 , zigbee,"}) == ["ender3", "zigbee"]
    assert requested_devices({}) == []


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("", "is empty"),
        (" , ", "is empty"),
        ("Ender3", "'Ender3' is not a SerialDevice name"),
        ("a_b", "not a SerialDevice name"),
        ("a" * 56, "not a SerialDevice name"),
        ("a,a", "lists a more than once"),
        (",".join(f"d{i}" for i in range(17)), "at most 16"),
    ],
)
def test_bad_device_annotations(value: str, fragment: str) -> None:
    with pytest.raises(InjectionError, match=c.INJECT_ANNOTATION) as err:
        requested_devices({c.INJECT_ANNOTATION: value})
    assert fragment in str(err.value)


def test_plan_links_modes_and_paths() -> None:
    assert plan_links({}, ["a"]) == [DeviceLink("a", "/dev/serial/a")]
    assert plan_links({c.INJECT_MODE_ANNOTATION: "url"}, ["a", "b"]) == [DeviceLink("a"), DeviceLink("b")]
    assert plan_links({c.INJECT_PATH_ANNOTATION: "/dev/zb/ttyACM0"}, ["a"]) == [
        DeviceLink("a", "/dev/zb/ttyACM0")
    ]
    assert plan_links({c.INJECT_PATH_ANNOTATION: "b=/opt/tty/b"}, ["a", "b"]) == [
        DeviceLink("a", "/dev/serial/a"),
        DeviceLink("b", "/opt/tty/b"),
    ]


@pytest.mark.parametrize(
    ("annotations", "devices", "fragment"),
    [
        ({c.INJECT_MODE_ANNOTATION: "socat"}, ["a"], "'socat' is not one of tty, url"),
        ({c.INJECT_PATH_ANNOTATION: "/dev/ttyUSB0"}, ["a"], "directory /dev would be hidden"),
        ({c.INJECT_PATH_ANNOTATION: "ttyUSB0"}, ["a"], "must be absolute"),
        ({c.INJECT_PATH_ANNOTATION: "/dev/x/y"}, ["a", "b"], "use device=path pairs"),
        ({c.INJECT_PATH_ANNOTATION: "c=/dev/x/y"}, ["a", "b"], "names 'c'"),
        ({c.INJECT_PATH_ANNOTATION: "a=/dev/x/y,a=/dev/x/z"}, ["a"], "gives a twice"),
        ({c.INJECT_PATH_ANNOTATION: "a=/dev/x/y,junk"}, ["a"], "'junk' is not device=path"),
        ({c.INJECT_PATH_ANNOTATION: "/dev/x/y", c.INJECT_MODE_ANNOTATION: "url"}, ["a"], "needs"),
    ],
)
def test_bad_mode_and_path_annotations(
    annotations: dict[str, str], devices: list[str], fragment: str
) -> None:
    with pytest.raises(InjectionError) as err:
        plan_links(annotations, devices)
    assert fragment in str(err.value)


def test_create_is_mutated_and_marked(patched: Patcher) -> None:
    original = pod({c.INJECT_ANNOTATION: "ender3"}, "app", "sidecar")
    decision = decide(
        operation="CREATE", pod=original, known_devices={"ender3": device("ender3")}, settings=SETTINGS
    )
    assert decision.allowed and decision.outcome == "mutated"
    assert [w.split(":")[0] for w in decision.warnings] == ["no runAsUser set"]
    assert decision.patch is not None
    mutated = patched(original, decision.patch)
    assert mutated["metadata"]["annotations"][c.INJECTED_ANNOTATION] == "ender3"
    assert mutated["metadata"]["annotations"][c.INJECT_ANNOTATION] == "ender3"
    assert [b["name"] for b in mutated["spec"]["initContainers"]] == ["kubeserial-bridge-ender3"]
    for container in mutated["spec"]["containers"]:
        names = {e["name"] for e in container["env"]}
        assert {"KUBESERIAL_ENDER3_URL", "KUBESERIAL_ENDER3_RAW_URL", "KUBESERIAL_ENDER3_TTY"} <= names
    assert mutated["spec"]["shareProcessNamespace"] is True
    assert {op["path"] for op in decision.patch} == {
        "/spec/containers",
        "/spec/initContainers",
        "/spec/volumes",
        "/spec/shareProcessNamespace",
        "/metadata/annotations/app.kubeserial.com~1injected",
        "/metadata/labels",
    }
    # The label its gateway's NetworkPolicy admits.
    assert mutated["metadata"]["labels"] == {"connect.app.kubeserial.com/ender3": "true"}


@pytest.mark.parametrize("mode", ["tty", "url"])
def test_connected_pods_are_labelled_for_every_device_keeping_their_labels(
    patched: Patcher, mode: str
) -> None:
    original = pod({c.INJECT_ANNOTATION: "ender3, zigbee", c.INJECT_MODE_ANNOTATION: mode})
    original["metadata"]["labels"] = {"app": "printer", "connect.app.kubeserial.com/other": "false"}
    known = {"ender3": device("ender3"), "zigbee": device("zigbee")}
    decision = decide(operation="CREATE", pod=original, known_devices=known, settings=SETTINGS)
    assert decision.patch is not None
    assert patched(original, decision.patch)["metadata"]["labels"] == {
        "app": "printer",
        "connect.app.kubeserial.com/other": "false",
        "connect.app.kubeserial.com/ender3": "true",
        "connect.app.kubeserial.com/zigbee": "true",
    }


def test_denied_or_unannotated_pods_get_no_connect_label() -> None:
    unknown = decide(
        operation="CREATE",
        pod=pod({c.INJECT_ANNOTATION: "ghost"}),
        known_devices={"ghost": None},
        settings=SETTINGS,
    )
    assert not unknown.allowed and unknown.patch is None
    plain = decide(operation="CREATE", pod=pod(None), known_devices={}, settings=SETTINGS)
    assert plain.allowed and plain.patch is None


def test_already_injected_or_update_changes_nothing(patched: Patcher) -> None:
    known = {"ender3": device("ender3")}
    first = pod({c.INJECT_ANNOTATION: "ender3"}, securityContext={"runAsUser": 1000})
    decision = decide(operation="CREATE", pod=first, known_devices=known, settings=SETTINGS)
    assert decision.patch is not None
    again = decide(
        operation="CREATE", pod=patched(first, decision.patch), known_devices=known, settings=SETTINGS
    )
    assert again.allowed and again.patch is None and again.outcome == "unchanged"
    update = decide(operation="UPDATE", pod=first, known_devices=known, settings=SETTINGS)
    assert update.allowed and update.patch is None


def test_unannotated_pod_is_left_alone() -> None:
    decision = decide(operation="CREATE", pod=pod(None), known_devices={}, settings=SETTINGS)
    assert decision.allowed and decision.patch is None


def test_unknown_device_is_denied_by_name() -> None:
    decision = decide(
        operation="CREATE",
        pod=pod({c.INJECT_ANNOTATION: "ender3,nosuch"}),
        known_devices={"ender3": device("ender3"), "nosuch": None},
        settings=SETTINGS,
    )
    assert not decision.allowed and decision.code == 403 and decision.outcome == "denied"
    assert "SerialDevice nosuch does not exist" in decision.message


def test_unavailable_device_is_admitted_with_a_warning() -> None:
    decision = decide(
        operation="CREATE",
        pod=pod({c.INJECT_ANNOTATION: "a,b", c.INJECT_MODE_ANNOTATION: "url"}),
        known_devices={"a": device("a", "False"), "b": device("b", None)},
        settings=SETTINGS,
    )
    assert decision.allowed and decision.patch
    suffix = "; the pod will connect once its gateway runs"
    assert decision.warnings == (
        "SerialDevice a is not available (Available=False, X)" + suffix,
        "SerialDevice b is not available (no Available condition yet)" + suffix,
    )


def test_device_problem() -> None:
    assert device_problem("a", device("a")) is None
    assert device_problem("a", {"status": "junk"}) is not None
    assert device_problem("a", {}) is not None


@pytest.mark.parametrize(
    ("annotations", "spec", "fragment"),
    [
        ({c.INJECT_ANNOTATION: "a", c.INJECT_PATH_ANNOTATION: "/dev/x"}, None, "directory /dev"),
        ({c.INJECT_ANNOTATION: "a"}, {"containers": []}, "no containers"),
        ({c.INJECT_ANNOTATION: "a"}, "nonsense", "no spec"),
        ({c.INJECT_ANNOTATION: "A!"}, None, "not a SerialDevice name"),
    ],
)
def test_unusable_pods_are_denied_with_a_reason(
    annotations: dict[str, str], spec: Any, fragment: str
) -> None:
    target = pod(annotations)
    if spec is not None:
        target["spec"] = spec
    decision = decide(operation="CREATE", pod=target, known_devices={"a": device("a")}, settings=SETTINGS)
    assert not decision.allowed and decision.code == 400
    assert fragment in decision.message


def test_annotation_patch_when_annotations_are_missing(patched: Patcher) -> None:
    for meta in ({"name": "p"}, {"name": "p", "annotations": None}):
        target = {"metadata": meta}
        assert patched(target, annotation_patch(target, {"k/x": "v"}))["metadata"]["annotations"] == {
            "k/x": "v"
        }
    bare: dict[str, Any] = {"spec": {}}
    assert patched(bare, annotation_patch(bare, {"k": "v"}))["metadata"] == {"annotations": {"k": "v"}}
    both = {"annotations": {"a": "1"}, "labels": {"l/x": "2"}}
    assert patched(bare, metadata_patch(bare, both))["metadata"] == both
    labelled = {"metadata": {"labels": {"keep": "me"}, "annotations": None}}
    assert patched(labelled, metadata_patch(labelled, both))["metadata"] == {
        "labels": {"keep": "me", "l/x": "2"},
        "annotations": {"a": "1"},
    }


def test_escape_pointer() -> None:
    assert escape_pointer("app.kubeserial.com/injected") == "app.kubeserial.com~1injected"
    assert escape_pointer("a~b") == "a~0b"
