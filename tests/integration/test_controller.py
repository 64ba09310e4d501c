"""The controller as a real process with its own ServiceAccount token, on the real control plane
(kube-controller-manager cascades ownerReferences, the scheduler binds gateway pods to nodes).

Tests play the monitor (status writes and node Leases, as the monitor would make them) and, for
manager pods, the kubelet (pod status), and watch the cluster follow.
"""

import json
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import yaml

from kubeserial_common.core import constants as c
from kubeserial_common.core.conditions import now_rfc3339
from kubeserial_common.core.names import gateway_name, manager_request_name
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane
from kubeserial_testing.kubelet import pod_containers, running_pod_status
from kubeserial_testing.objects import (
    DEVICE_PATH,
    apply_object,
    condition,
    get_object,
    serial_device,
    simulated_node,
    unique,
    wait_exists,
    wait_gone,
    write_monitor_status,
)
from kubeserial_testing.probes import RunningService, http_get, running_service
from kubeserial_testing.services import NAMESPACE, apply_rbac, wait_for

pytestmark = pytest.mark.controlplane
SEED = REPO_ROOT / "tests" / "fixtures" / "seed"
GATEWAY_IMAGE = "kubeserial/gateway:under-test"
RECONCILES = "kubeserial_controller_reconciles_total"


def start_controller(
    plane: ControlPlane, kubeconfig: Path, log_path: Path, *extra: str
) -> AbstractContextManager[RunningService]:
    args = ["--gateway-image", GATEWAY_IMAGE, "--node-grace-seconds", "1", *extra]
    return running_service("kubeserial_controller", args, kubeconfig=kubeconfig, log_path=log_path)


@pytest.fixture(scope="module")
def controller(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    kubeconfig = apply_rbac(control_plane, "controller")
    # Gateway pods name this ServiceAccount; without it the ReplicaSet cannot create them.
    control_plane.kubectl("create", "serviceaccount", "kubeserial-gateway", "-n", NAMESPACE, check=False)
    log_path = tmp_path_factory.mktemp("controller") / "controller.log"
    with start_controller(control_plane, kubeconfig, log_path) as running:
        wait_for(
            lambda: not running.alive() or running.metric("kubeserial_controller_leader") == 1.0,
            timeout=60,
            message="controller leading",
        )
        assert running.alive(), running.log_tail()
        yield running
    assert running.proc.returncode == 0, running.log_tail()


# -- helpers -------------------------------------------------------------------------------------


def device(plane: ControlPlane, name: str) -> dict[str, Any] | None:
    return get_object(plane, "serialdevice", name)


def device_condition(plane: ControlPlane, name: str, condition_type: str) -> dict[str, Any]:
    return condition(device(plane, name), condition_type)


def child(plane: ControlPlane, kind: str, name: str) -> dict[str, Any] | None:
    """A namespaced object the controller made (gateway or manager workload)."""
    return get_object(plane, kind, name, namespace=NAMESPACE)


def fulfilled(plane: ControlPlane, request: str) -> bool | None:
    return ((get_object(plane, "msr", request) or {}).get("status") or {}).get("fulfilled")


def kubeserial_object(name: str, entries: list[dict[str, Any]], **ingress: Any) -> dict[str, Any]:
    return {
        "apiVersion": c.API_VERSION,
        "kind": "KubeSerial",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"ingress": {"enabled": False, **ingress}, "serialDevices": entries},
    }


def seed_manager(name: str) -> dict[str, Any]:
    """The seed README's octoprint Manager under another name."""
    manager: dict[str, Any] = yaml.safe_load((SEED / "manager.yaml").read_text())
    manager["metadata"] = {"name": name}
    return manager


def warning_messages(plane: ControlPlane, name: str, reason: str, *, namespace: str = "default") -> list[str]:
    listed = json.loads(
        plane.kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
    )
    return [e["message"] for e in listed["items"] if e["reason"] == reason and e["type"] == "Warning"]


def events_for(plane: ControlPlane, name: str, *, namespace: str = "default") -> list[str]:
    listed = json.loads(
        plane.kubectl(
            "get", "events", "-n", namespace, "--field-selector", f"involvedObject.name={name}", "-o", "json"
        ).stdout
    )
    return [event["reason"] for event in listed["items"]]


@pytest.fixture
def live_node(control_plane: ControlPlane) -> Iterator[str]:
    with simulated_node(control_plane) as node:
        yield node


# -- KubeSerial -> SerialDevices -----------------------------------------------------------------


def test_seed_kubeserial_creates_its_devices_and_removes_them(
    controller: RunningService, control_plane: ControlPlane
) -> None:
    control_plane.kubectl("apply", "-f", str(SEED / "kubeserial.yaml"))
    for name, vendor in (("ender3", "0403"), ("sonoff-zigbee", "10c4")):
        created = wait_exists(control_plane, "serialdevice", name)
        assert created["metadata"]["labels"][c.KUBESERIAL_LABEL] == "kubeserial.kubeserial"
        assert created["spec"]["idVendor"] == vendor and created["spec"]["name"] == name
    assert (device(control_plane, "ender3") or {})["spec"]["manager"] == "octoprint"
    kubeserial = child(control_plane, "kubeserial", "kubeserial")
    assert kubeserial is not None and c.KUBESERIAL_FINALIZER in kubeserial["metadata"]["finalizers"]
    wait_for(
        lambda: (
            (child(control_plane, "kubeserial", "kubeserial") or {}).get("status")
            == {"observedGeneration": 1, "serialDevices": 2}
        ),
        timeout=15,
        message="KubeSerial status",
    )
    # An entry that changes is updated, one that goes away is deleted.
    patch = {"spec": {"serialDevices": [{"name": "ender3", "idVendor": "0403", "idProduct": "6015"}]}}
    control_plane.kubectl(
        "patch", "kubeserial", "kubeserial", "-n", NAMESPACE, "--type=merge", "-p", json.dumps(patch)
    )
    wait_gone(control_plane, "serialdevice", "sonoff-zigbee")
    wait_for(
        lambda: (
            (device(control_plane, "ender3") or {}).get("spec")
            == {"name": "ender3", "idVendor": "0403", "idProduct": "6015"}
        ),
        timeout=15,
        message="ender3 updated, manager dropped",
    )
    # A device deleted by hand comes back: the KubeSerial still lists it.
    control_plane.kubectl("delete", "serialdevice", "ender3")
    wait_exists(control_plane, "serialdevice", "ender3")
    # Deleting the KubeSerial removes its devices first (finalizer), then the KubeSerial itself.
    control_plane.kubectl("delete", "kubeserial", "kubeserial", "-n", NAMESPACE, "--wait=false")
    wait_gone(control_plane, "serialdevice", "ender3")
    wait_gone(control_plane, "kubeserial", "kubeserial", namespace=NAMESPACE)
    assert {"SerialDeviceCreated", "SerialDeviceDeleted"} <= set(
        events_for(control_plane, "kubeserial", namespace=NAMESPACE)
    )


def test_device_of_another_owner_is_left_alone(
    controller: RunningService, control_plane: ControlPlane
) -> None:
    mine, kubeserial = unique("handmade"), unique("claimer")
    apply_object(control_plane, serial_device(mine, idProduct="1234"))
    entries = [{"name": mine, "idVendor": "10c4", "idProduct": "ea60"}]
    apply_object(control_plane, kubeserial_object(kubeserial, entries))
    wait_for(
        lambda: "SerialDeviceConflict" in events_for(control_plane, kubeserial, namespace=NAMESPACE),
        timeout=15,
        message="conflict reported",
    )
    untouched = device(control_plane, mine)
    assert untouched is not None and untouched["spec"]["idProduct"] == "1234"
    assert c.KUBESERIAL_LABEL not in (untouched["metadata"].get("labels") or {})
    control_plane.kubectl("delete", "kubeserial", kubeserial, "-n", NAMESPACE)
    assert device(control_plane, mine) is not None, "a device it does not own must survive"
    control_plane.kubectl("delete", "serialdevice", mine)


def test_devices_of_a_kubeserial_that_is_gone_are_removed(
    controller: RunningService, control_plane: ControlPlane
) -> None:
    """As when a KubeSerial was deleted while no controller ran (so its finalizer never acted)."""
    name = unique("orphan")
    orphan = serial_device(name)
    orphan["metadata"]["labels"] = {c.KUBESERIAL_LABEL: f"{NAMESPACE}.{unique('gone')}"}
    apply_object(control_plane, orphan)
    wait_gone(control_plane, "serialdevice", name)


# -- SerialDevice: Ready ---------------------------------------------------------------------------


def test_ready_follows_the_manager(controller: RunningService, control_plane: ControlPlane) -> None:
    name, manager = unique("printer"), unique("octo")
    apply_object(control_plane, serial_device(name, manager=manager))
    wait_for(
        lambda: device_condition(control_plane, name, c.READY).get("reason") == "ManagerNotAvailable",
        timeout=15,
        message="Ready=False ManagerNotAvailable",
    )
    cond = device_condition(control_plane, name, c.READY)
    assert cond["status"] == "False" and manager in cond["message"]
    apply_object(control_plane, seed_manager(manager))
    wait_for(
        lambda: device_condition(control_plane, name, c.READY).get("reason") == "AllChecksPassed",
        timeout=15,
        message="Ready=True once the Manager exists",
    )
    assert device_condition(control_plane, name, c.READY)["status"] == "True"
    # ... and back when it goes away again: Managers are watched, not checked once.
    control_plane.kubectl("delete", "manager", manager)
    wait_for(
        lambda: device_condition(control_plane, name, c.READY).get("status") == "False",
        timeout=15,
        message="Ready=False after the Manager is deleted",
    )
    assert {"ManagerNotAvailable", "AllChecksPassed"} <= set(events_for(control_plane, name))
    control_plane.kubectl("delete", "serialdevice", name)


# -- SerialDevice: gateway -------------------------------------------------------------------------


def test_available_device_gets_a_gateway_on_its_node_until_unplugged(
    controller: RunningService, control_plane: ControlPlane, live_node: str
) -> None:
    name = unique("zigbee")
    apply_object(control_plane, serial_device(name, baudRate=57600))
    write_monitor_status(control_plane, name, node=live_node, available=True)
    deployment = wait_exists(control_plane, "deployment", gateway_name(name), namespace=NAMESPACE)
    service = wait_exists(control_plane, "service", gateway_name(name), namespace=NAMESPACE)
    policy = wait_exists(control_plane, "networkpolicy", gateway_name(name), namespace=NAMESPACE)
    uid = (device(control_plane, name) or {})["metadata"]["uid"]
    for made in (deployment, service, policy):
        (owner,) = made["metadata"]["ownerReferences"]
        assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
            "SerialDevice",
            name,
            uid,
            True,
        )
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == GATEWAY_IMAGE
    assert container["args"] == [
        "serve",
        "--device",
        DEVICE_PATH,
        "--device-name",
        name,
        "--baud-rate",
        "57600",
    ]
    assert pod["serviceAccountName"] == "kubeserial-gateway"
    assert {p["name"]: p["port"] for p in service["spec"]["ports"]} == {"raw": 3333, "rfc2217": 2217}
    # Only the device's consumers reach the gateway's ports (and scrapers its metrics), as the
    # apiserver stored it; enforcement is tests/e2e/test_real_network_policy.py's business.
    assert policy["spec"]["podSelector"] == {"matchLabels": spec["selector"]["matchLabels"]}
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    consumers, scrapers = policy["spec"]["ingress"]
    assert consumers["from"] == [
        {
            "namespaceSelector": {},
            "podSelector": {"matchLabels": {f"connect.app.kubeserial.com/{name}": "true"}},
        }
    ]
    assert {p["port"] for p in consumers["ports"]} == {3333, 2217}
    assert {p["port"] for p in scrapers["ports"]} == {8080}
    # The scheduler really puts the gateway pod on the device's node.
    selector = ",".join(f"{k}={v}" for k, v in spec["selector"]["matchLabels"].items())

    def scheduled_nodes() -> list[str]:
        listed = control_plane.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout
        return [pod["spec"].get("nodeName") for pod in json.loads(listed)["items"]]

    wait_for(lambda: scheduled_nodes() == [live_node], timeout=30, message="gateway pod bound to its node")

    write_monitor_status(control_plane, name, node=None, available=False)
    wait_gone(control_plane, "deployment", gateway_name(name), namespace=NAMESPACE)
    wait_gone(control_plane, "service", gateway_name(name), namespace=NAMESPACE)
    wait_gone(control_plane, "networkpolicy", gateway_name(name), namespace=NAMESPACE)
    assert {"GatewayCreated", "GatewayRemoved"} <= set(events_for(control_plane, name))
    control_plane.kubectl("delete", "serialdevice", name)


def test_gateway_deleted_or_edited_by_hand_is_repaired(
    controller: RunningService, control_plane: ControlPlane, live_node: str
) -> None:
    name = unique("arduino")
    apply_object(control_plane, serial_device(name))
    write_monitor_status(control_plane, name, node=live_node, available=True)
    first = wait_exists(control_plane, "deployment", gateway_name(name), namespace=NAMESPACE)
    control_plane.kubectl("delete", "deployment", gateway_name(name), "-n", NAMESPACE)
    wait_for(
        lambda: (
            (child(control_plane, "deployment", gateway_name(name)) or first)["metadata"]["uid"]
            != first["metadata"]["uid"]
        ),
        timeout=30,
        message="gateway Deployment re-created",
    )
    control_plane.kubectl("scale", "deployment", gateway_name(name), "-n", NAMESPACE, "--replicas=3")
    control_plane.kubectl("delete", "service", gateway_name(name), "-n", NAMESPACE)
    # A NetworkPolicy opened to everyone by hand is closed again.
    open_to_all = json.dumps({"spec": {"ingress": [{}]}})
    control_plane.kubectl(
        "patch", "networkpolicy", gateway_name(name), "-n", NAMESPACE, "--type=merge", "-p", open_to_all
    )
    wait_for(
        lambda: (
            (child(control_plane, "deployment", gateway_name(name)) or {}).get("spec", {}).get("replicas")
            == 1
        ),
        timeout=30,
        message="replicas back to 1",
    )
    wait_exists(control_plane, "service", gateway_name(name), namespace=NAMESPACE)
    wait_for(
        lambda: (
            len(
                (child(control_plane, "networkpolicy", gateway_name(name)) or {})
                .get("spec", {})
                .get("ingress", [])
            )
            == 2
        ),
        timeout=30,
        message="the gateway's NetworkPolicy repaired",
    )
    # The device moves to another node: the same gateway follows it there.
    with simulated_node(control_plane) as other_node:
        write_monitor_status(control_plane, name, node=other_node, available=True)

        def pinned_to() -> list[str]:
            deployment = child(control_plane, "deployment", gateway_name(name)) or {}
            terms = deployment["spec"]["template"]["spec"]["affinity"]["nodeAffinity"][
                "requiredDuringSchedulingIgnoredDuringExecution"
            ]["nodeSelectorTerms"]
            return [value for term in terms for field in term["matchFields"] for value in field["values"]]

        wait_for(lambda: pinned_to() == [other_node], timeout=30, message="gateway moved to the other node")
    control_plane.kubectl("delete", "serialdevice", name)
    # The garbage collector removes what the device owned.
    wait_gone(control_plane, "deployment", gateway_name(name), namespace=NAMESPACE)


def test_node_that_stops_renewing_its_lease_loses_its_devices(
    controller: RunningService, control_plane: ControlPlane
) -> None:
    name = unique("gps")
    apply_object(control_plane, serial_device(name))
    with simulated_node(control_plane, lease_seconds=3) as dying, simulated_node(control_plane) as other:
        write_monitor_status(control_plane, name, node=dying, available=True)
        wait_exists(control_plane, "deployment", gateway_name(name), namespace=NAMESPACE)
        # Nobody renews the Lease: after 3 s + 1 s grace the node counts as lost.
        wait_for(
            lambda: device_condition(control_plane, name, c.AVAILABLE).get("reason") == "NodeLost",
            timeout=30,
            message="Available=Unknown NodeLost",
        )
        lost = device(control_plane, name)
        assert condition(lost, c.AVAILABLE)["status"] == "Unknown"
        assert (lost or {})["status"]["nodeName"] == dying, "the controller clears nothing else"
        assert condition(lost, c.FREE)["status"] == "True", "Free belongs to monitor and gateway"
        wait_gone(control_plane, "deployment", gateway_name(name), namespace=NAMESPACE)
        assert "NodeLost" in events_for(control_plane, name)
        # The device is plugged in elsewhere: a live monitor claims it and the gateway follows.
        write_monitor_status(control_plane, name, node=other, available=True)
        wait_exists(control_plane, "deployment", gateway_name(name), namespace=NAMESPACE)
    control_plane.kubectl("delete", "serialdevice", name)


# -- Manager -> ManagerScheduleRequest -> manager workload ------------------------------------------


def play_kubelet(plane: ControlPlane, selector: str) -> bool:
    """Report the pods matching `selector` Running and Ready, as a kubelet would; True if any."""
    listed = plane.kubectl("get", "pods", "-n", NAMESPACE, "-l", selector, "-o", "json").stdout
    pods = json.loads(listed)["items"]
    for pod in pods:
        names = [container["name"] for container in pod_containers(pod)]
        status = {"status": running_pod_status(names, now=now_rfc3339())}
        plane.kubectl(
            *("patch", "pod", pod["metadata"]["name"], "-n", NAMESPACE, "--subresource=status"),
            *("--type=merge", "-p", json.dumps(status)),
        )
    return bool(pods)


def test_manager_device_gets_a_scheduled_manager_with_ingress(
    controller: RunningService, control_plane: ControlPlane, live_node: str
) -> None:
    name, manager, kubeserial = unique("ender"), unique("octoprint"), unique("printers")
    manager_obj = seed_manager(manager)
    apply_object(control_plane, manager_obj)
    entries = [{"name": name, "idVendor": "0403", "idProduct": "6001", "manager": manager}]
    ingress_settings = {"enabled": True, "domain": "printers.example.com", "ingressClassName": "nginx"}
    apply_object(control_plane, kubeserial_object(kubeserial, entries, **ingress_settings))
    wait_exists(control_plane, "serialdevice", name)
    request_name = manager_request_name(name, manager)
    # Not available yet: no request.
    wait_for(
        lambda: device_condition(control_plane, name, c.READY).get("status") == "True",
        timeout=15,
        message="Ready",
    )
    assert get_object(control_plane, "msr", request_name) is None
    write_monitor_status(control_plane, name, node=live_node, available=True)
    request = wait_exists(control_plane, "msr", request_name)
    assert request["spec"] == {"device": name, "manager": manager}
    deployment = wait_exists(control_plane, "deployment", request_name, namespace=NAMESPACE)
    config_map = wait_exists(control_plane, "configmap", request_name, namespace=NAMESPACE)
    wait_exists(control_plane, "service", request_name, namespace=NAMESPACE)
    ingress = wait_exists(control_plane, "ingress", request_name, namespace=NAMESPACE)
    assert config_map["data"] == {"config.yaml": manager_obj["spec"]["config"]}
    assert ingress["spec"]["rules"][0]["host"] == f"{name}.printers.example.com"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    pod = deployment["spec"]["template"]["spec"]
    (app,) = pod["containers"]
    assert app["command"] == ["/bin/sh", "-c", manager_obj["spec"]["runCmd"]]
    env = {e["name"]: e["value"] for e in app["env"]}
    prefix = "KUBESERIAL_" + name.upper().replace("-", "_")
    assert env[f"{prefix}_URL"] == f"rfc2217://{gateway_name(name)}.{NAMESPACE}.svc:2217"
    config_mount = {"mountPath": "/data/config.yaml", "name": "config", "subPath": "config.yaml"}
    assert config_mount in app["volumeMounts"]
    (bridge,) = pod["initContainers"]
    assert bridge["restartPolicy"] == "Always" and bridge["image"] == GATEWAY_IMAGE
    assert pod["shareProcessNamespace"] is True
    wait_for(
        lambda: fulfilled(control_plane, request_name) is False,
        timeout=15,
        message="fulfilled: false while no manager pod is available",
    )

    selector = f"{c.DEVICE_LABEL}={name},{c.MANAGER_LABEL}={manager}"
    wait_for(lambda: play_kubelet(control_plane, selector), timeout=30, message="manager pod created")
    wait_for(
        lambda: fulfilled(control_plane, request_name) is True,
        timeout=30,
        message="request fulfilled",
    )
    assert "Fulfilled" in events_for(control_plane, request_name)

    # Unplugged: the request goes, and with it (garbage collector) the manager workload.
    write_monitor_status(control_plane, name, node=None, available=False)
    wait_gone(control_plane, "msr", request_name)
    for kind in ("deployment", "configmap", "service", "ingress"):
        wait_gone(control_plane, kind, request_name, namespace=NAMESPACE)
    control_plane.kubectl("delete", "kubeserial", kubeserial, "-n", NAMESPACE)
    control_plane.kubectl("delete", "manager", manager)


# -- the process itself ---------------------------------------------------------------------------


def test_health_and_metrics(controller: RunningService, control_plane: ControlPlane) -> None:
    """Deltas for this test's own device: other tests' objects neither satisfy nor spoil them."""
    assert controller.ready()
    assert http_get(controller.health_port, "/healthz")[0] == 200
    assert controller.metric("kubeserial_controller_queue_depth", kind="SerialDevice") is not None
    assert controller.metric("kubeserial_controller_events_dropped") == 0.0  # nothing queues up here

    def reconciles() -> float:
        return controller.metric(RECONCILES, kind="SerialDevice", result="success") or 0.0

    def ready_devices() -> float:
        return (
            controller.metric("kubeserial_controller_serialdevices", condition="Ready", status="True") or 0.0
        )

    name = unique("counted")
    wait_for(lambda: controller.metric(RECONCILES, kind="SerialDevice", result="success") is not None)
    reconciled_before, ready_before = reconciles(), ready_devices()
    apply_object(control_plane, serial_device(name))
    wait_for(lambda: ready_devices() == ready_before + 1, timeout=15, message="one more Ready device")
    assert reconciles() > reconciled_before
    control_plane.kubectl("delete", "serialdevice", name)
    wait_for(lambda: ready_devices() == ready_before, timeout=15, message="the device no longer counted")


def refuse_requests_for(device: str) -> tuple[str, str]:
    """A ValidatingAdmissionPolicy (and its binding) with which kube-apiserver refuses to create
    ManagerScheduleRequests for `device`: a refusal that no CRD rule of ours foresees."""
    name = f"refuse-{device}"
    policy = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [c.GROUP],
                        "apiVersions": ["*"],
                        "operations": ["CREATE"],
                        "resources": ["managerschedulerequests"],
                    }
                ]
            },
            "validations": [
                {"expression": f"object.spec.device != '{device}'", "message": f"the site refuses {device}"}
            ],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]},
    }
    return json.dumps(policy), json.dumps(binding)


def test_a_refused_write_is_explained_by_a_warning_event(
    controller: RunningService, control_plane: ControlPlane, live_node: str
) -> None:
    """The apiserver refuses the device's ManagerScheduleRequest on every retry (here a site's
    admission policy): the user sees why on the device, once, instead of only in the controller's
    log."""
    name, manager = unique("refused"), unique("mgr")
    for part in refuse_requests_for(name):
        control_plane.kubectl("create", "-f", "-", input=part)
    probe = {
        "apiVersion": c.API_VERSION,
        "kind": "ManagerScheduleRequest",
        "metadata": {"name": f"{name}-probe"},
        "spec": {"device": name, "manager": manager},
    }

    def policy_in_force() -> bool:
        dry = control_plane.kubectl(
            "create", "--dry-run=server", "-f", "-", input=json.dumps(probe), check=False
        )
        return dry.returncode != 0 and f"the site refuses {name}" in dry.stderr

    wait_for(policy_in_force, timeout=30, message="the admission policy in force")
    control_plane.kubectl("create", "-f", "-", input=json.dumps(seed_manager(manager)))
    entries = [{"name": name, "idVendor": "0403", "idProduct": "6001", "manager": manager}]
    kubeserial = unique("refusedks")
    apply_object(control_plane, kubeserial_object(kubeserial, entries))
    wait_exists(control_plane, "serialdevice", name)
    write_monitor_status(control_plane, name, node=live_node, available=True)

    def failures() -> list[str]:
        return warning_messages(control_plane, name, "ReconcileFailed")

    try:
        found = wait_for(failures, timeout=30, message="a ReconcileFailed Warning Event on the device")
        assert isinstance(found, list) and f"the site refuses {name}" in found[0], found
        time.sleep(2)  # the queue retries with backoff meanwhile; the same failure stays one Event
        assert len(failures()) == 1
        assert get_object(control_plane, "msr", manager_request_name(name, manager)) is None
    finally:
        for kind in ("validatingadmissionpolicybinding", "validatingadmissionpolicy"):
            control_plane.kubectl("delete", kind, f"refuse-{name}")
        control_plane.kubectl("delete", "kubeserial", kubeserial, "-n", NAMESPACE)
        control_plane.kubectl("delete", "manager", manager)


def test_a_manager_made_invalid_keeps_its_workload_and_says_why(
    controller: RunningService, control_plane: ControlPlane, live_node: str
) -> None:
    """A Manager edited into one the controller cannot connect (its config mounted where the device's
    tty goes) is a permanent outcome: the running manager is kept, the request says why, a Warning
    Event is posted once, and the controller does not retry until the Manager changes again."""
    name, manager = unique("keep"), unique("keepmgr")
    manager_obj = seed_manager(manager)
    apply_object(control_plane, manager_obj)
    entries = [{"name": name, "idVendor": "0403", "idProduct": "6001", "manager": manager}]
    kubeserial = unique("keepks")
    apply_object(control_plane, kubeserial_object(kubeserial, entries))
    wait_exists(control_plane, "serialdevice", name)
    write_monitor_status(control_plane, name, node=live_node, available=True)
    request_name = manager_request_name(name, manager)
    wait_exists(control_plane, "msr", request_name)
    deployment = wait_exists(control_plane, "deployment", request_name, namespace=NAMESPACE)
    config_map = wait_exists(control_plane, "configmap", request_name, namespace=NAMESPACE)
    service = wait_exists(control_plane, "service", request_name, namespace=NAMESPACE)

    # /dev/serial is where the bridge puts the device's tty: the apiserver accepts the path, the
    # controller cannot build that pod.
    control_plane.kubectl(
        "patch", "manager", manager, "--type=merge", "-p", json.dumps({"spec": {"configPath": "/dev/serial"}})
    )

    def message() -> str | None:
        status = (get_object(control_plane, "msr", request_name) or {}).get("status") or {}
        return status.get("message")

    found = wait_for(message, timeout=30, message="the request's status says why")
    assert isinstance(found, str) and "/dev/serial" in found and manager in found, found

    def warnings() -> list[str]:
        listed = json.loads(
            control_plane.kubectl(
                *(
                    "get",
                    "events",
                    "-n",
                    "default",
                    "--field-selector",
                    f"involvedObject.name={request_name}",
                ),
                *("-o", "json"),
            ).stdout
        )
        return [
            e["message"]
            for e in listed["items"]
            if e["reason"] == "ManagerNotConnectable" and e["type"] == "Warning"
        ]

    events = wait_for(warnings, timeout=30, message="a ManagerNotConnectable Warning Event")
    assert isinstance(events, list) and "/dev/serial" in events[0], events
    time.sleep(3)  # a retried failure would back off and run again within this time
    assert len(warnings()) == 1

    def retried() -> list[str]:
        lines = controller.log_path.read_text(errors="replace").splitlines()
        return [line for line in lines if request_name in line and "retrying" in line]

    assert retried() == [], "a permanent outcome is not retried until the Manager changes"
    # Everything that existed is still there, the same objects.
    for kind, before in (("deployment", deployment), ("configmap", config_map), ("service", service)):
        now = get_object(control_plane, kind, request_name, namespace=NAMESPACE)
        assert now is not None, f"the {kind} was deleted"
        assert now["metadata"]["uid"] == before["metadata"]["uid"]

    # Fixed: the message goes, the workload is reconciled again.
    control_plane.kubectl(
        "patch",
        "manager",
        manager,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"configPath": manager_obj["spec"]["configPath"]}}),
    )
    wait_for(lambda: message() is None, timeout=30, message="the message cleared once the Manager is fixed")
    assert get_object(control_plane, "deployment", request_name, namespace=NAMESPACE) is not None
    control_plane.kubectl("delete", "kubeserial", kubeserial, "-n", NAMESPACE)
    control_plane.kubectl("delete", "manager", manager)


# -- bad input: a clear error, and nothing else breaks (issue 15) ------------------------------------


def test_a_kubeserial_name_too_long_for_its_label_is_refused_by_name(
    controller: RunningService, control_plane: ControlPlane
) -> None:
    """Its SerialDevices would carry app.kubeserial.com/kubeserial=<namespace>.<name>, over 63
    characters: one Warning Event says which field and how long it may be, nothing is retried, and
    a KubeSerial applied next is served as usual."""
    allowed = 63 - len(NAMESPACE) - 1
    long_name = unique("long") + "-" + "x" * allowed
    long_name = long_name[: allowed + 1]  # one character too many
    device_name, other, other_device = unique("longdev"), unique("short"), unique("shortdev")
    errors_before = controller.metric(RECONCILES, kind="KubeSerial", result="error") or 0.0
    entries = [{"name": device_name, "idVendor": "0403", "idProduct": "6001"}]
    apply_object(control_plane, kubeserial_object(long_name, entries))
    found = wait_for(
        lambda: warning_messages(control_plane, long_name, "InvalidSpec", namespace=NAMESPACE),
        timeout=15,
        message="an InvalidSpec Warning Event",
    )
    assert isinstance(found, list) and len(found) == 1, found
    assert "metadata.name is too long" in found[0] and f"at most {allowed} characters" in found[0], found
    status = wait_for(
        lambda: (get_object(control_plane, "kubeserial", long_name, namespace=NAMESPACE) or {}).get("status"),
        timeout=15,
        message="its status written",
    )
    assert status == {"observedGeneration": 1, "serialDevices": 0}, status
    assert device(control_plane, device_name) is None
    # Nothing else breaks: the next KubeSerial gets its device; nothing was retried meanwhile.
    apply_object(control_plane, kubeserial_object(other, [{**entries[0], "name": other_device}]))
    wait_exists(control_plane, "serialdevice", other_device)
    assert (controller.metric(RECONCILES, kind="KubeSerial", result="error") or 0.0) == errors_before
    assert len(warning_messages(control_plane, long_name, "InvalidSpec", namespace=NAMESPACE)) == 1
    assert device(control_plane, device_name) is None
    control_plane.kubectl("delete", "kubeserial", long_name, other, "-n", NAMESPACE)
    wait_gone(control_plane, "serialdevice", other_device)


def test_a_second_kubeserial_declaring_the_same_device_is_told_whose_it_is(
    controller: RunningService, control_plane: ControlPlane
) -> None:
    first, second, shared = unique("first"), unique("second"), unique("shared")
    apply_object(
        control_plane, kubeserial_object(first, [{"name": shared, "idVendor": "0403", "idProduct": "6001"}])
    )
    owned = wait_exists(control_plane, "serialdevice", shared)
    assert owned["metadata"]["labels"][c.KUBESERIAL_LABEL] == f"{NAMESPACE}.{first}"
    apply_object(
        control_plane, kubeserial_object(second, [{"name": shared, "idVendor": "10c4", "idProduct": "ea60"}])
    )
    found = wait_for(
        lambda: warning_messages(control_plane, second, "SerialDeviceConflict", namespace=NAMESPACE),
        timeout=15,
        message="a SerialDeviceConflict Warning Event on the second KubeSerial",
    )
    assert isinstance(found, list)
    assert found == [
        f"SerialDevice {shared} already exists, belongs to KubeSerial {NAMESPACE}.{first}; left alone"
    ]
    wait_for(
        lambda: (
            (
                (get_object(control_plane, "kubeserial", second, namespace=NAMESPACE) or {}).get("status")
                or {}
            ).get("serialDevices")
            == 0
        ),
        timeout=15,
        message="the second KubeSerial owns no device",
    )
    kept = device(control_plane, shared)
    assert kept is not None and kept["metadata"]["uid"] == owned["metadata"]["uid"]
    assert (kept["spec"]["idVendor"], kept["spec"]["idProduct"]) == ("0403", "6001")
    assert kept["metadata"]["labels"][c.KUBESERIAL_LABEL] == f"{NAMESPACE}.{first}"
    # Deleting the second leaves the first's device; deleting the first removes it.
    control_plane.kubectl("delete", "kubeserial", second, "-n", NAMESPACE)
    wait_gone(control_plane, "kubeserial", second, namespace=NAMESPACE)
    still = device(control_plane, shared)
    assert still is not None and still["metadata"]["uid"] == owned["metadata"]["uid"]
    control_plane.kubectl("delete", "kubeserial", first, "-n", NAMESPACE)
    wait_gone(control_plane, "serialdevice", shared)


def test_a_manager_config_of_1_mib_is_refused_by_name(
    controller: RunningService, control_plane: ControlPlane, live_node: str
) -> None:
    """1 MiB of config plus its key is more than a ConfigMap holds: the request says so, naming
    spec.config and the limit, one Warning Event, no retries; a smaller config is served."""
    name, manager = unique("bigcfg"), unique("bigmgr")
    manager_obj = seed_manager(manager)
    manager_obj["spec"]["config"] = "x" * (1024 * 1024)
    # create, not apply: apply would copy the whole object into an annotation (256 KiB at most)
    control_plane.kubectl("create", "-f", "-", input=json.dumps(manager_obj))
    entries = [{"name": name, "idVendor": "0403", "idProduct": "6001", "manager": manager}]
    kubeserial = unique("bigks")
    apply_object(control_plane, kubeserial_object(kubeserial, entries))
    wait_exists(control_plane, "serialdevice", name)
    write_monitor_status(control_plane, name, node=live_node, available=True)
    request_name = manager_request_name(name, manager)
    wait_exists(control_plane, "msr", request_name)

    def message() -> str | None:
        status = (get_object(control_plane, "msr", request_name) or {}).get("status") or {}
        return status.get("message")

    found = wait_for(message, timeout=30, message="the request's status says why")
    assert isinstance(found, str) and f"Manager {manager} is invalid: spec.config is 1048576 bytes" in found
    assert "holds at most 1048576 bytes" in found, found
    warnings = wait_for(
        lambda: warning_messages(control_plane, request_name, "InvalidManager"),
        timeout=30,
        message="an InvalidManager Warning Event",
    )
    time.sleep(3)  # a retried failure would back off and run again within this time
    assert warnings == warning_messages(control_plane, request_name, "InvalidManager")
    assert warning_messages(control_plane, request_name, "ReconcileFailed") == []
    assert get_object(control_plane, "configmap", request_name, namespace=NAMESPACE) is None
    # Nothing else broke: the device keeps its gateway; a config that fits is served.
    wait_exists(control_plane, "deployment", gateway_name(name), namespace=NAMESPACE)
    small = {"spec": {"config": "x" * 1024}}
    control_plane.kubectl("patch", "manager", manager, "--type=merge", "-p", json.dumps(small))
    wait_for(lambda: message() is None, timeout=30, message="the message cleared")
    wait_exists(control_plane, "configmap", request_name, namespace=NAMESPACE)
    control_plane.kubectl("delete", "kubeserial", kubeserial, "-n", NAMESPACE)
    control_plane.kubectl("delete", "manager", manager)


def test_two_kubeserials_declaring_one_device_at_once_leave_it_to_one(
    controller: RunningService, control_plane: ControlPlane
) -> None:
    """Applied together (one kubectl apply), both are reconciled before either sees the device in
    its cache: one owns it, with its own entry, and the other is told, once."""
    shared = unique("raced")
    first, second = unique("racea"), unique("raceb")
    entries = {
        first: {"name": shared, "idVendor": "0403", "idProduct": "6001"},
        second: {"name": shared, "idVendor": "10c4", "idProduct": "ea60"},
    }
    both = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [kubeserial_object(n, [e]) for n, e in entries.items()],
    }
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(both))
    wait_exists(control_plane, "serialdevice", shared)

    def conflicts() -> dict[str, list[str]]:
        return {
            name: warning_messages(control_plane, name, "SerialDeviceConflict", namespace=NAMESPACE)
            for name in entries
        }

    found = wait_for(lambda: any(conflicts().values()), timeout=15, message="a SerialDeviceConflict Event")
    assert found
    time.sleep(2)  # anything still flapping would show by now
    owned = device(control_plane, shared)
    assert owned is not None
    owner = owned["metadata"]["labels"][c.KUBESERIAL_LABEL].partition(".")[2]
    loser = next(name for name in entries if name != owner)
    assert (owned["spec"]["idVendor"], owned["spec"]["idProduct"]) == (
        entries[owner]["idVendor"],
        entries[owner]["idProduct"],
    ), "the device must be its owner's entry"
    assert conflicts() == {
        owner: [],
        loser: [
            f"SerialDevice {shared} already exists, belongs to KubeSerial {NAMESPACE}.{owner}; left alone"
        ],
    }
    version = owned["metadata"]["resourceVersion"]
    time.sleep(2)
    assert (device(control_plane, shared) or {}).get("metadata", {}).get("resourceVersion") == version
    control_plane.kubectl("delete", "kubeserial", first, second, "-n", NAMESPACE)
    wait_gone(control_plane, "serialdevice", shared)
