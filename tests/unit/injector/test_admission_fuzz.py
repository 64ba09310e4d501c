"""Property-based tests of POST /mutate through the FastAPI app in-process.

Whatever arrives (bytes, arbitrary JSON, reviews with missing or mistyped fields, hostile
annotations, huge pods), the answer is a 200 AdmissionReview or a 4xx with a reason: never a 500,
never an exception, and every patch applies cleanly to the pod it was computed for.
"""

import asyncio
import base64
import json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from kubeserial_common.core import constants as c
from kubeserial_common.core.names import env_prefix
from kubeserial_common.core.podspec import BridgeSettings
from kubeserial_injector.app import AdmissionMetrics, DeviceLookup, create_app
from kubeserial_injector.devices import DeviceLookupError

from .conftest import apply_patch

DEVICES: dict[str, dict[str, Any]] = {
    "ender3": {
        "status": {"conditions": [{"type": "Available", "status": "True", "reason": "DeviceAvailable"}]}
    },
    "zigbee": {"status": {}},
}
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


async def lookup(names: Iterable[str]) -> Mapping[str, Mapping[str, Any] | None]:
    return {name: DEVICES.get(name) for name in names}


async def failing_lookup(names: Iterable[str]) -> Mapping[str, Mapping[str, Any] | None]:
    raise DeviceLookupError("apiserver unreachable")


@pytest.fixture(scope="module")
def registry() -> CollectorRegistry:
    return CollectorRegistry()


class SyncClient:
    """Synchronous calls into the ASGI app (httpx's ASGI transport) on a private event loop.

    Hypothesis drives plain functions, so each request is run to completion here.
    """

    def __init__(self, app: FastAPI) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://injector")

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.client.post(path, **kwargs))

    def get(self, path: str) -> httpx.Response:
        return self.loop.run_until_complete(self.client.get(path))

    def close(self) -> None:
        self.loop.run_until_complete(self.client.aclose())
        self.loop.close()


def make_client(lookup: DeviceLookup, registry: CollectorRegistry) -> SyncClient:
    return SyncClient(
        create_app(lookup=lookup, settings=BridgeSettings(), metrics=AdmissionMetrics.register(registry))
    )


@pytest.fixture(scope="module")
def http(registry: CollectorRegistry) -> Iterator[SyncClient]:
    client = make_client(lookup, registry)
    yield client
    client.close()


def envelope(request: Any) -> dict[str, Any]:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def pod_request(pod: Any, *, uid: str = "u", operation: str = "CREATE") -> dict[str, Any]:
    return {
        "uid": uid,
        "operation": operation,
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "apps",
        "object": pod,
    }


def check_answer(response: Any, *, sent: Any = None) -> dict[str, Any] | None:
    """Common properties of every answer; returns the AdmissionReview response when 200."""
    assert response.status_code in (200, 400, 413), response.text
    body = response.json()
    if response.status_code != 200:
        assert body["reason"], "a rejection must say why"
        return None
    answer: dict[str, Any] = body["response"]
    assert isinstance(answer["allowed"], bool)
    if not answer["allowed"]:
        assert answer["status"]["code"] in (400, 403) and answer["status"]["message"]
    if "patch" in answer:
        assert answer["patchType"] == "JSONPatch"
        patched = apply_patch(sent, json.loads(base64.b64decode(answer["patch"])))
        assert c.INJECTED_ANNOTATION in patched["metadata"]["annotations"]
    return answer


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@FUZZ
@given(body=st.binary(max_size=2048))
def test_arbitrary_bytes(http: SyncClient, body: bytes) -> None:
    check_answer(http.post("/mutate", content=body))


@FUZZ
@given(value=json_values)
def test_arbitrary_json(http: SyncClient, value: Any) -> None:
    check_answer(http.post("/mutate", json=value))


@FUZZ
@given(
    request=json_values, mutilate=st.sampled_from(["uid", "operation", "resource", "object", "kind", "none"])
)
def test_reviews_with_missing_or_mistyped_fields(http: SyncClient, request: Any, mutilate: str) -> None:
    pod = {
        "metadata": {"annotations": {c.INJECT_ANNOTATION: "ender3"}},
        "spec": {"containers": [{"name": "a"}]},
    }
    body = pod_request(pod)
    if mutilate == "kind":
        sent: dict[str, Any] = envelope(body)
        sent["kind"] = request
    else:
        if mutilate != "none":
            body[mutilate] = request
        sent = envelope(body)
    answer = check_answer(http.post("/mutate", json=sent), sent=pod)
    if answer is not None:
        assert answer["uid"] == body["uid"]


annotation_values = st.text(max_size=80) | st.sampled_from(
    [
        "ender3",
        "zigbee",
        "ender3,zigbee",
        "nosuch",
        "url",
        "tty",
        "/dev/serial/x",
        "ender3=/opt/x/y",
        "/dev/x",
    ]
)
# Mostly well-formed requests for a device, so that many examples get as far as a patch.
asking_annotations = st.fixed_dictionaries(
    {c.INJECT_ANNOTATION: st.sampled_from(["ender3", "zigbee", "ender3,zigbee", " zigbee , ender3 "])},
    optional={
        c.INJECT_MODE_ANNOTATION: st.sampled_from(["tty", "url", ""]),
        c.INJECT_PATH_ANNOTATION: st.sampled_from(["/dev/serial/x", "ender3=/opt/x/y", "/dev/x", ""]),
    },
)
containers = st.lists(
    st.fixed_dictionaries(
        {"name": st.text(min_size=1, max_size=12)},
        optional={
            "env": st.lists(st.fixed_dictionaries({"name": st.text(max_size=8)}), max_size=3) | json_values,
            "volumeMounts": st.lists(
                st.fixed_dictionaries(
                    {"name": st.text(max_size=5), "mountPath": st.sampled_from(["/dev/serial", "/x"])}
                ),
                max_size=2,
            ),
            "securityContext": json_values | st.fixed_dictionaries({"runAsUser": st.integers(0, 70000)}),
            "ports": st.lists(st.fixed_dictionaries({"containerPort": st.integers(1, 65535)}), max_size=3),
        },
    ),
    max_size=4,
)
pod_specs = st.fixed_dictionaries(
    {"containers": st.one_of(containers, containers.filter(bool), containers.filter(bool))},
    optional={
        "initContainers": containers,
        "volumes": st.lists(
            st.fixed_dictionaries({"name": st.sampled_from(["kubeserial-links", "v"])}), max_size=2
        ),
        "shareProcessNamespace": st.booleans(),
        "hostPID": st.booleans(),
    },
)
pods = st.fixed_dictionaries(
    {
        "metadata": st.fixed_dictionaries(
            {
                "annotations": asking_annotations
                | st.dictionaries(
                    st.sampled_from(
                        [c.INJECT_ANNOTATION, c.INJECT_MODE_ANNOTATION, c.INJECT_PATH_ANNOTATION, "x"]
                    ),
                    annotation_values | json_values,
                )
            },
            optional={"name": st.text(max_size=10)},
        ),
        "spec": st.one_of(pod_specs, pod_specs, pod_specs, json_values),
    },
)
operations = st.sampled_from(["CREATE"] * 8 + ["UPDATE", "DELETE", "CONNECT", "x"])


@FUZZ
@given(pod=pods, operation=operations)
def test_hostile_pods_get_an_answer_and_patches_apply(
    http: SyncClient, pod: dict[str, Any], operation: str
) -> None:
    body = envelope(pod_request(pod, operation=operation))
    response = http.post("/mutate", json=body)
    assert response.status_code == 200, response.text
    answer = check_answer(response, sent=pod)
    assert answer is not None
    event(
        "mutated"
        if "patch" in answer
        else "allowed"
        if answer["allowed"]
        else "denied " + answer["status"]["message"][:25]
    )


container_names = st.from_regex(r"\A[a-z][a-z0-9-]{0,10}[a-z0-9]\Z")
wellformed_pods = st.builds(
    lambda names, init_names, devices, mode, run_as: {
        "metadata": {"name": "p", "annotations": {c.INJECT_ANNOTATION: ",".join(devices), **mode}},
        "spec": {
            "containers": [{"name": n, "image": "app", "env": [{"name": "X", "value": "1"}]} for n in names],
            "initContainers": [{"name": f"init-{n}", "image": "setup"} for n in init_names],
            **({"securityContext": {"runAsUser": run_as}} if run_as is not None else {}),
        },
    },
    names=st.lists(container_names, min_size=1, max_size=5, unique=True),
    init_names=st.lists(container_names, max_size=2, unique=True),
    devices=st.lists(st.sampled_from(sorted(DEVICES)), min_size=1, max_size=2, unique=True),
    mode=st.sampled_from([{}, {c.INJECT_MODE_ANNOTATION: "tty"}, {c.INJECT_MODE_ANNOTATION: "url"}]),
    run_as=st.none() | st.integers(0, 65535),
)


@FUZZ
@given(pod=wellformed_pods)
def test_wellformed_pods_are_connected(http: SyncClient, pod: dict[str, Any]) -> None:
    answer = check_answer(http.post("/mutate", json=envelope(pod_request(pod))), sent=pod)
    assert answer is not None and answer["allowed"] and "patch" in answer
    mutated = apply_patch(pod, json.loads(base64.b64decode(answer["patch"])))
    devices = [d.strip() for d in pod["metadata"]["annotations"][c.INJECT_ANNOTATION].split(",")]
    tty = pod["metadata"]["annotations"].get(c.INJECT_MODE_ANNOTATION, "tty") == "tty"
    spec = mutated["spec"]
    for container in spec["containers"] + [
        i for i in spec["initContainers"] if not i["name"].startswith("kubeserial-")
    ]:
        names = [e["name"] for e in container["env"]]
        assert len(names) == len(set(names)) and ("X" in names) == (container in spec["containers"])
        assert all(env_prefix(d) + "_URL" in names for d in devices)
    bridges = [i for i in spec["initContainers"] if i["name"].startswith("kubeserial-bridge-")]
    assert sorted(b["name"] for b in bridges) == (
        sorted(f"kubeserial-bridge-{d}" for d in devices) if tty else []
    )
    assert spec.get("shareProcessNamespace", False) is tty
    # Admitting the result again changes nothing.
    again = check_answer(http.post("/mutate", json=envelope(pod_request(mutated))), sent=mutated)
    assert again is not None and again["allowed"] and "patch" not in again


def test_huge_inputs(http: SyncClient) -> None:
    big_annotation = {"metadata": {"annotations": {c.INJECT_ANNOTATION: "ender3," * 200_000}}, "spec": {}}
    answer = check_answer(
        http.post("/mutate", json=envelope(pod_request(big_annotation))), sent=big_annotation
    )
    assert answer is not None and not answer["allowed"]
    many = {
        "metadata": {"annotations": {c.INJECT_ANNOTATION: "ender3"}},
        "spec": {"containers": [{"name": f"c{i}", "image": "x"} for i in range(2000)]},
    }
    answer = check_answer(http.post("/mutate", json=envelope(pod_request(many))), sent=many)
    assert answer is not None and answer["allowed"] and "patch" in answer
    deep = b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": ' + b"[" * 200_000
    assert http.post("/mutate", content=deep).status_code == 400
    too_big = b'{"x": "' + b"a" * (9 * 1024 * 1024) + b'"}'
    response = http.post("/mutate", content=too_big)
    assert response.status_code == 413 and "larger than" in response.json()["reason"]


def test_metrics_count_outcomes(http: SyncClient, registry: CollectorRegistry) -> None:
    def count(outcome: str) -> float:
        return registry.get_sample_value("kubeserial_injector_admissions_total", {"outcome": outcome}) or 0.0

    before = {o: count(o) for o in ("mutated", "denied", "invalid", "unchanged")}
    good = {
        "metadata": {"annotations": {c.INJECT_ANNOTATION: "zigbee"}},
        "spec": {"containers": [{"name": "a"}]},
    }
    answer = check_answer(http.post("/mutate", json=envelope(pod_request(good))), sent=good)
    assert answer is not None and answer["warnings"][0].startswith("SerialDevice zigbee is not available")
    http.post(
        "/mutate", json=envelope(pod_request({"metadata": {"annotations": {c.INJECT_ANNOTATION: "nosuch"}}}))
    )
    http.post("/mutate", content=b"nonsense")
    http.post("/mutate", json=envelope(pod_request({"metadata": {}})))
    assert {o: count(o) - before[o] for o in before} == {
        "mutated": 1,
        "denied": 1,
        "invalid": 1,
        "unchanged": 1,
    }
    assert (registry.get_sample_value("kubeserial_injector_admission_duration_seconds_count") or 0) >= 4


def test_lookup_failure_denies_without_crashing() -> None:
    registry = CollectorRegistry()
    client = make_client(failing_lookup, registry)
    pod = {
        "metadata": {"annotations": {c.INJECT_ANNOTATION: "ender3"}},
        "spec": {"containers": [{"name": "a"}]},
    }
    response = client.post("/mutate", json=envelope(pod_request(pod)))
    client.close()
    assert response.status_code == 200
    answer = response.json()["response"]
    assert answer["allowed"] is False and answer["status"]["code"] == 500
    assert "apiserver unreachable" in answer["status"]["message"]
    assert registry.get_sample_value("kubeserial_injector_admissions_total", {"outcome": "error"}) == 1


def test_other_routes_and_methods(http: SyncClient) -> None:
    assert http.get("/mutate").status_code == 405
    assert http.get("/docs").status_code == 404
