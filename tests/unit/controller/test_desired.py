"""The objects the controller builds: gateway, SerialDevices, requests and manager workloads."""

from typing import Any

import pytest

from kubeserial_common.core import constants as c
from kubeserial_common.core.models import IngressSpec, ManagerSpec, SerialDeviceEntry
from kubeserial_controller import desired as w
from kubeserial_controller.decisions import Placement

IMAGES = w.Images(gateway="registry.local/kubeserial/gateway:1.2", pull_policy="IfNotPresent")
DEVICE: dict[str, Any] = {
    "metadata": {"name": "ender3", "uid": "dev-uid"},
    "spec": {"idVendor": "0403", "idProduct": "6001", "manager": "octoprint"},
}
MSR: dict[str, Any] = {
    "metadata": {"name": "ender3-octoprint", "uid": "msr-uid"},
    "spec": {"device": "ender3", "manager": "octoprint"},
}
OCTOPRINT = ManagerSpec.model_validate(
    {
        "image": {"repository": "janekbaraniewski/octoprint", "tag": "1.3.10"},
        "runCmd": "/OctoPrint-1.3.10/run --port 80",
        "config": "serial:\n  port: /dev/serial/ender3\n",
        "configPath": "/data/config.yaml",
    }
)


def gateway(**spec: Any) -> dict[str, Any]:
    device = {**DEVICE, "spec": {**DEVICE["spec"], **spec}}
    return w.desired_gateway_deployment(
        device, Placement("node-a", "/dev/serial/by-id/usb-FTDI-if00"), namespace="kubeserial", images=IMAGES
    )


def test_gateway_deployment_follows_the_contract() -> None:
    deployment = gateway()
    meta, spec = deployment["metadata"], deployment["spec"]
    assert (meta["name"], meta["namespace"]) == ("ender3-gateway", "kubeserial")
    assert meta["ownerReferences"] == [
        {
            "apiVersion": c.API_VERSION,
            "kind": "SerialDevice",
            "name": "ender3",
            "uid": "dev-uid",
            "controller": True,
        }
    ]
    assert spec["replicas"] == 1 and spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["serviceAccountName"] == "kubeserial-gateway"
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-a"]}]}]
    (container,) = pod["containers"]
    assert container["image"] == IMAGES.gateway and container["imagePullPolicy"] == "IfNotPresent"
    assert container["args"] == [
        "serve",
        "--device",
        "/dev/serial/by-id/usb-FTDI-if00",
        "--device-name",
        "ender3",
    ]
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "raw": 3333,
        "rfc2217": 2217,
        "health": 8080,
    }
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    # Privileged for the device cgroup, root for root:dialout ttys; nothing written anywhere.
    assert container["securityContext"] == {
        "privileged": True,
        "runAsUser": 0,
        "runAsGroup": 0,
        "readOnlyRootFilesystem": True,
    }
    assert container["resources"]["limits"]["memory"]
    assert {"name": "dev", "mountPath": "/dev", "readOnly": True} in container["volumeMounts"]
    assert pod["volumes"] == [{"name": "dev", "hostPath": {"path": "/dev", "type": "Directory"}}]
    # The kubelet mounts the termination message file: never inside a read-only mount.
    read_only = [m["mountPath"] for m in container["volumeMounts"] if m.get("readOnly")]
    message = container["terminationMessagePath"]
    assert not any(message.startswith(path.rstrip("/") + "/") for path in read_only), message
    selector = spec["selector"]["matchLabels"]
    assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    assert meta["labels"][c.MANAGED_BY_LABEL] == c.MANAGED_BY


def test_gateway_passes_the_baud_rate_when_set() -> None:
    assert gateway(baudRate=250000)["spec"]["template"]["spec"]["containers"][0]["args"][-2:] == [
        "--baud-rate",
        "250000",
    ]


def test_gateway_service_selects_the_gateway_pods() -> None:
    service = w.desired_gateway_service(DEVICE, namespace="kubeserial")
    assert service["metadata"]["name"] == "ender3-gateway"
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("raw", 3333, "raw"),
        ("rfc2217", 2217, "rfc2217"),
    ]
    assert service["spec"]["selector"] == gateway()["spec"]["selector"]["matchLabels"]
    assert service["metadata"]["ownerReferences"][0]["uid"] == "dev-uid"


def test_serial_device_from_a_kubeserial_entry_is_labelled_not_owned() -> None:
    entry = SerialDeviceEntry.model_validate(
        {"name": "sonoff-zigbee", "idVendor": "10c4", "idProduct": "ea60"}
    )
    device = w.desired_serial_device(entry, kubeserial_namespace="kubeserial", kubeserial_name="home")
    assert device["metadata"]["labels"][c.KUBESERIAL_LABEL] == "kubeserial.home"
    assert "ownerReferences" not in device["metadata"] and "namespace" not in device["metadata"]
    assert device["spec"] == {"name": "sonoff-zigbee", "idVendor": "10c4", "idProduct": "ea60"}


def test_manager_request_is_named_after_device_and_manager() -> None:
    request = w.desired_manager_request(DEVICE, manager="octoprint")
    assert request["metadata"]["name"] == "ender3-octoprint"
    assert request["spec"] == {"device": "ender3", "manager": "octoprint"}
    assert request["metadata"]["ownerReferences"][0]["kind"] == "SerialDevice"


def by_kind(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {obj["kind"]: obj for obj in objects}


def test_manager_objects_mount_the_config_and_connect_the_device() -> None:
    objects = by_kind(
        w.desired_manager_objects(MSR, OCTOPRINT, namespace="kubeserial", images=IMAGES, ingress=None)
    )
    assert set(objects) == {"ConfigMap", "Deployment", "Service"}
    for obj in objects.values():
        assert obj["metadata"]["name"] == "ender3-octoprint"
        assert (
            obj["metadata"]["ownerReferences"][0] | {"uid": "msr-uid"}
            == obj["metadata"]["ownerReferences"][0]
        )
    assert objects["ConfigMap"]["data"] == {"config.yaml": OCTOPRINT.config}
    template = objects["Deployment"]["spec"]["template"]
    assert objects["Deployment"]["spec"]["strategy"] == {"type": "Recreate"}
    assert template["metadata"]["annotations"][w.CONFIG_HASH_ANNOTATION]
    pod = template["spec"]
    manager = next(ctr for ctr in pod["containers"] if ctr["name"] == "manager")
    assert manager["image"] == "janekbaraniewski/octoprint:1.3.10"
    assert manager["command"] == ["/bin/sh", "-c", OCTOPRINT.run_cmd]
    assert {"name": "config", "mountPath": "/data/config.yaml", "subPath": "config.yaml"} in manager[
        "volumeMounts"
    ]
    env = {e["name"]: e["value"] for e in manager["env"]}
    assert env["KUBESERIAL_ENDER3_URL"] == "rfc2217://ender3-gateway.kubeserial.svc:2217"
    assert env["KUBESERIAL_ENDER3_RAW_URL"] == "socket://ender3-gateway.kubeserial.svc:3333"
    # tty mode, shaped by kubeserial_common.core.podspec like an injected pod: the bridge sidecar.
    (bridge,) = pod["initContainers"]
    assert bridge["image"] == IMAGES.gateway and bridge["restartPolicy"] == "Always"
    assert "rfc2217://ender3-gateway.kubeserial.svc:2217" in bridge["args"]
    assert pod["shareProcessNamespace"] is True
    assert pod["automountServiceAccountToken"] is False, "the manager app gets no API token"
    assert any(m["mountPath"] == "/dev/serial" for m in manager["volumeMounts"])
    # No privileges the app does not need, and a memory limit (issue 17).
    assert pod["securityContext"] == {"seccompProfile": {"type": "RuntimeDefault"}}
    assert manager["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
    }
    assert manager["resources"]["limits"] == {"memory": w.MANAGER_MEMORY_LIMIT}
    # The app may run as its image's root: so does its bridge, without capabilities.
    assert bridge["securityContext"]["runAsUser"] == 0 and bridge["securityContext"]["capabilities"] == {
        "drop": ["ALL"]
    }
    assert objects["Service"]["spec"]["ports"] == [
        {"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}
    ]


def test_manager_without_config_gets_no_config_map() -> None:
    bare = OCTOPRINT.model_copy(update={"config": None, "config_path": None})
    objects = by_kind(
        w.desired_manager_objects(MSR, bare, namespace="kubeserial", images=IMAGES, ingress=None)
    )
    assert "ConfigMap" not in objects
    template = objects["Deployment"]["spec"]["template"]
    assert "annotations" not in template["metadata"]
    assert all(v["name"] != "config" for v in template["spec"].get("volumes", []))


def test_config_hash_changes_with_the_config() -> None:
    def config_hash(manager: ManagerSpec) -> str:
        objects = by_kind(
            w.desired_manager_objects(MSR, manager, namespace="kubeserial", images=IMAGES, ingress=None)
        )
        return str(
            objects["Deployment"]["spec"]["template"]["metadata"]["annotations"][w.CONFIG_HASH_ANNOTATION]
        )

    assert config_hash(OCTOPRINT) != config_hash(OCTOPRINT.model_copy(update={"config": "other: 1\n"}))


@pytest.mark.parametrize(
    ("ingress", "expected"),
    [
        (None, None),
        (IngressSpec(enabled=False, domain="example.com"), None),
        (
            IngressSpec(
                enabled=True, domain="example.com", ingress_class_name="nginx", annotations={"a": "b"}
            ),
            ("ender3.example.com", "nginx", {"a": "b"}),
        ),
        (IngressSpec(enabled=True), (None, None, None)),
    ],
)
def test_ingress_only_when_enabled(ingress: IngressSpec | None, expected: tuple[Any, ...] | None) -> None:
    objects = by_kind(
        w.desired_manager_objects(MSR, OCTOPRINT, namespace="kubeserial", images=IMAGES, ingress=ingress)
    )
    if expected is None:
        assert "Ingress" not in objects
        return
    spec = objects["Ingress"]["spec"]
    (rule,) = spec["rules"]
    host, class_name, annotations = expected
    assert rule.get("host") == host
    assert spec.get("ingressClassName") == class_name
    assert objects["Ingress"]["metadata"].get("annotations") == annotations
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "ender3-octoprint", "port": {"name": "http"}}


def test_config_key_is_the_file_name() -> None:
    assert w.config_key("/data/config.yaml") == "config.yaml"
    assert w.config_key("/etc/app/") == "app"
    assert w.config_key("/") == "config"


def test_gateway_network_policy_admits_only_the_devices_consumers_and_scrapers() -> None:
    policy = w.desired_gateway_network_policy(DEVICE, namespace="kubeserial")
    meta, spec = policy["metadata"], policy["spec"]
    assert (policy["apiVersion"], policy["kind"]) == ("networking.k8s.io/v1", "NetworkPolicy")
    assert (meta["name"], meta["namespace"]) == ("ender3-gateway", "kubeserial")
    assert meta["ownerReferences"][0]["uid"] == "dev-uid"
    # It selects exactly the pods of this device's gateway Deployment ...
    assert spec["podSelector"] == {"matchLabels": gateway()["spec"]["selector"]["matchLabels"]}
    # ... and, being an Ingress policy, denies everything it does not list.
    assert spec["policyTypes"] == ["Ingress"]
    consumers, scrapers = spec["ingress"]
    assert consumers == {
        "from": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"connect.app.kubeserial.com/ender3": "true"}},
            }
        ],
        "ports": [{"protocol": "TCP", "port": 3333}, {"protocol": "TCP", "port": 2217}],
    }
    assert scrapers == {
        "from": [
            {
                "namespaceSelector": {},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
            }
        ],
        "ports": [{"protocol": "TCP", "port": 8080}],
    }
    health = {
        p["name"]: p["containerPort"] for p in gateway()["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    assert {p["port"] for rule in spec["ingress"] for p in rule["ports"]} == set(health.values())


def test_gateway_network_policy_scrapers_are_configurable() -> None:
    policy = w.desired_gateway_network_policy(
        DEVICE, namespace="kubeserial", scraper_labels={"app": "vmagent", "team": "ops"}
    )
    (scrapers,) = policy["spec"]["ingress"][1]["from"]
    assert scrapers["podSelector"] == {"matchLabels": {"app": "vmagent", "team": "ops"}}


def test_manager_pods_carry_the_connect_label_of_their_device() -> None:
    objects = w.desired_manager_objects(MSR, OCTOPRINT, namespace="kubeserial", images=IMAGES, ingress=None)
    (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["connect.app.kubeserial.com/ender3"] == "true"
    # Only the pods: the Deployment's selector (immutable) and the other objects stay as they were.
    assert "connect.app.kubeserial.com/ender3" not in deployment["spec"]["selector"]["matchLabels"]
    assert all("connect.app.kubeserial.com/ender3" not in o["metadata"]["labels"] for o in objects)


@pytest.mark.parametrize(
    ("text", "labels"),
    [
        ("app.kubernetes.io/name=prometheus", {"app.kubernetes.io/name": "prometheus"}),
        ("app=vmagent, team=ops", {"app": "vmagent", "team": "ops"}),
        ("empty=", {"empty": ""}),
    ],
)
def test_parse_label_map(text: str, labels: dict[str, str]) -> None:
    assert w.parse_label_map(text, what="--scraper-labels") == labels


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("prometheus", "'prometheus' is not label=value"),
        ("a=b c", "'a=b c'"),
        ("a=1,a=2", "label a given twice"),
    ],
)
def test_parse_label_map_names_the_flag_and_the_bad_part(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match="--scraper-labels") as err:
        w.parse_label_map(text, what="--scraper-labels")
    assert fragment in str(err.value)
