"""The objects the controller wants to exist, built by pure functions from the objects they serve.

Each function returns the wire form (a dict) in the shape server-side apply expects: apiVersion,
kind, metadata and exactly the fields the controller manages, nothing the apiserver defaults.
"""

import hashlib
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubeserial_common.core import constants as c
from kubeserial_common.core import resources as r
from kubeserial_common.core.gatewayargs import ServeArgs
from kubeserial_common.core.models import IngressSpec, ManagerSpec, SerialDeviceEntry
from kubeserial_common.core.names import (
    connect_label,
    connect_labels,
    gateway_name,
    kubeserial_label_value,
    manager_request_name,
)
from kubeserial_common.core.podspec import BridgeSettings, DeviceLink, connect_pod_spec, default_tty_path
from kubeserial_controller.decisions import Placement

Obj = Mapping[str, Any]

GATEWAY_SERVICE_ACCOUNT = "kubeserial-gateway"
GATEWAY_HEALTH_PORT = 8080
MANAGER_HTTP_PORT = 80  # the original KubeSerial served every manager on port 80
# A manager is a user's application (OctoPrint peaks at a few hundred MiB); the limit only keeps a
# runaway one from taking the node's memory.
MANAGER_MEMORY_LIMIT = "1Gi"
CONFIG_HASH_ANNOTATION = f"{c.GROUP}/config-hash"
# Who may read a gateway's /healthz, /readyz and /metrics besides the kubelet (whose probes come from
# the node, which NetworkPolicies do not restrict): pods labelled like the Prometheus of the
# Prometheus Operator and of the prometheus-community charts, in any namespace
# (the controller's --scraper-labels changes it).
DEFAULT_SCRAPER_LABELS: Mapping[str, str] = {"app.kubernetes.io/name": "prometheus"}

_LABEL_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_LABEL_KEY = re.compile(rf"^([a-z0-9]([-a-z0-9.]{{0,251}}[a-z0-9])?/)?{_LABEL_NAME}$")
_LABEL_VALUE = re.compile(rf"^({_LABEL_NAME})?$")


def parse_label_map(text: str, *, what: str) -> dict[str, str]:
    """`k=v,k2=v2` as matchLabels; ValueError naming `what` and the bad part otherwise."""
    labels: dict[str, str] = {}
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not _LABEL_KEY.match(key) or not _LABEL_VALUE.match(value):
            raise ValueError(
                f"{what}: {part.strip()!r} is not label=value (e.g. app.kubernetes.io/name=prometheus)"
            )
        if key in labels:
            raise ValueError(f"{what}: label {key} given twice")
        labels[key] = value
    return labels


@dataclass(frozen=True)
class Images:
    gateway: str
    pull_policy: str = "IfNotPresent"


def owner_reference(owner: Obj, *, kind: str) -> dict[str, Any]:
    """A controller reference to one of KubeSerial's own objects (list items may lack `kind`)."""
    meta = owner["metadata"]
    return {
        "apiVersion": c.API_VERSION,
        "kind": kind,
        "name": meta["name"],
        "uid": meta["uid"],
        "controller": True,
    }


def _metadata(
    name: str, *, namespace: str | None, labels: dict[str, str], owner: dict[str, Any] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {c.MANAGED_BY_LABEL: c.MANAGED_BY, **labels}}
    if namespace:
        meta["namespace"] = namespace
    if owner is not None:
        meta["ownerReferences"] = [owner]
    return meta


# -- KubeSerial -> SerialDevice ------------------------------------------------------------------


def desired_serial_device(
    entry: SerialDeviceEntry, *, kubeserial_namespace: str, kubeserial_name: str
) -> dict[str, Any]:
    """The SerialDevice for one `spec.serialDevices` entry, labelled with its KubeSerial.

    No ownerReference: a cluster-scoped object cannot be owned by a namespaced one, so a finalizer on
    the KubeSerial removes these instead.
    """
    label = kubeserial_label_value(kubeserial_namespace, kubeserial_name)
    return {
        "apiVersion": c.API_VERSION,
        "kind": "SerialDevice",
        "metadata": _metadata(entry.name, namespace=None, labels={c.KUBESERIAL_LABEL: label}),
        "spec": entry.device_spec().wire(),
    }


# -- SerialDevice -> gateway ---------------------------------------------------------------------


def gateway_labels(device_name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "kubeserial-gateway", c.DEVICE_LABEL: device_name}


def gateway_args(device: Obj, placement: Placement) -> list[str]:
    baud_rate = (device.get("spec") or {}).get("baudRate")
    return ServeArgs(
        device=placement.device_path,
        device_name=device["metadata"]["name"],
        baud_rate=int(baud_rate) if baud_rate else None,
    ).argv()


GATEWAY_TERMINATION_MESSAGE_PATH = "/tmp/termination-log"


def desired_gateway_deployment(
    device: Obj, placement: Placement, *, namespace: str, images: Images
) -> dict[str, Any]:
    """The gateway that serves `device` on its node: one replica, never two at once (Recreate)."""
    name = device["metadata"]["name"]
    selector = gateway_labels(name)
    labels = {**selector, c.COMPONENT_LABEL: "gateway"}
    health_probe = {
        "httpGet": {"path": "/healthz", "port": "health"},
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    ready_probe = {
        "httpGet": {"path": "/readyz", "port": "health"},
        "periodSeconds": 5,
        "failureThreshold": 2,
    }
    container = {
        "name": "gateway",
        "image": images.gateway,
        "imagePullPolicy": images.pull_policy,
        "args": gateway_args(device, placement),
        "ports": [
            {"name": "raw", "containerPort": c.RAW_PORT, "protocol": "TCP"},
            {"name": "rfc2217", "containerPort": c.RFC2217_PORT, "protocol": "TCP"},
            {"name": "health", "containerPort": GATEWAY_HEALTH_PORT, "protocol": "TCP"},
        ],
        "livenessProbe": health_probe,
        "readinessProbe": ready_probe,
        # Peak RSS of a gateway (bench/bench_gateway.py): ~30 MiB with its status writer.
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "64Mi"}},
        # privileged: a hot-plugged tty is not in the container's device cgroup (the kubelet fixes a
        # container's device rules when it starts it, and the pod API has no way to allow "whatever
        # char device appears later": only privileged containers get every device). Root (the image's
        # default user is 65532 for the bridge): the node's tty is root:dialout and dialout's gid
        # differs between distributions. Nothing is written: the root filesystem and the host /dev
        # are mounted read-only (a device node opens read-write on a read-only mount; only creating
        # or changing files there is refused). The gateway opens nothing but a USB serial tty of
        # the node (kubeserial_gateway.usbtty).
        "securityContext": {
            "privileged": True,
            "runAsUser": 0,
            "runAsGroup": 0,
            "readOnlyRootFilesystem": True,
        },
        "volumeMounts": [{"name": "dev", "mountPath": "/dev", "readOnly": True}],
        # Not the default /dev/termination-log: the kubelet bind-mounts that file, and its mount
        # point cannot be made inside the read-only host /dev (runc refuses to start the container
        # on any node without such a file, i.e. every real node).
        "terminationMessagePath": GATEWAY_TERMINATION_MESSAGE_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    return {
        "apiVersion": r.DEPLOYMENT.api_version,
        "kind": "Deployment",
        "metadata": _metadata(
            gateway_name(name),
            namespace=namespace,
            labels=labels,
            owner=owner_reference(device, kind="SerialDevice"),
        ),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": GATEWAY_SERVICE_ACCOUNT,
                    "enableServiceLinks": False,
                    "terminationGracePeriodSeconds": 10,
                    "affinity": {
                        "nodeAffinity": {
                            "requiredDuringSchedulingIgnoredDuringExecution": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchFields": [
                                            {
                                                "key": "metadata.name",
                                                "operator": "In",
                                                "values": [placement.node],
                                            }
                                        ]
                                    }
                                ]
                            }
                        }
                    },
                    "containers": [container],
                    "volumes": [{"name": "dev", "hostPath": {"path": "/dev", "type": "Directory"}}],
                },
            },
        },
    }


def desired_gateway_network_policy(
    device: Obj, *, namespace: str, scraper_labels: Mapping[str, str] = DEFAULT_SCRAPER_LABELS
) -> dict[str, Any]:
    """Who may reach the gateway of `device`: its consumers (pods in any namespace labelled
    `connect.app.kubeserial.com/<device>: "true"`, which the injector and manager Deployments set) on
    the raw and RFC 2217 ports, and pods matching `scraper_labels` (in any namespace) on the health
    and metrics port. Nothing else: a NetworkPolicy that selects a pod denies every other ingress."""
    name = device["metadata"]["name"]
    selector = gateway_labels(name)
    everywhere: dict[str, Any] = {}  # an empty namespaceSelector: every namespace

    def tcp(*ports: int) -> list[dict[str, Any]]:
        return [{"protocol": "TCP", "port": port} for port in ports]

    consumers = {
        "namespaceSelector": everywhere,
        "podSelector": {"matchLabels": {connect_label(name): c.CONNECTED}},
    }
    scrapers = {"namespaceSelector": everywhere, "podSelector": {"matchLabels": dict(scraper_labels)}}
    return {
        "apiVersion": r.NETWORKPOLICY.api_version,
        "kind": r.NETWORKPOLICY.kind,
        "metadata": _metadata(
            gateway_name(name),
            namespace=namespace,
            labels={**selector, c.COMPONENT_LABEL: "gateway"},
            owner=owner_reference(device, kind="SerialDevice"),
        ),
        "spec": {
            "podSelector": {"matchLabels": selector},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [consumers], "ports": tcp(c.RAW_PORT, c.RFC2217_PORT)},
                {"from": [scrapers], "ports": tcp(GATEWAY_HEALTH_PORT)},
            ],
        },
    }


def desired_gateway_service(device: Obj, *, namespace: str) -> dict[str, Any]:
    name = device["metadata"]["name"]
    selector = gateway_labels(name)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(
            gateway_name(name),
            namespace=namespace,
            labels={**selector, c.COMPONENT_LABEL: "gateway"},
            owner=owner_reference(device, kind="SerialDevice"),
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "raw", "port": c.RAW_PORT, "targetPort": "raw", "protocol": "TCP"},
                {"name": "rfc2217", "port": c.RFC2217_PORT, "targetPort": "rfc2217", "protocol": "TCP"},
            ],
        },
    }


# -- SerialDevice -> ManagerScheduleRequest ------------------------------------------------------


def desired_manager_request(device: Obj, *, manager: str) -> dict[str, Any]:
    name = device["metadata"]["name"]
    return {
        "apiVersion": c.API_VERSION,
        "kind": "ManagerScheduleRequest",
        "metadata": _metadata(
            manager_request_name(name, manager),
            namespace=None,
            labels={c.DEVICE_LABEL: name, c.MANAGER_LABEL: manager},
            owner=owner_reference(device, kind="SerialDevice"),
        ),
        "spec": {"device": name, "manager": manager},
    }


# -- ManagerScheduleRequest -> manager workload --------------------------------------------------


def manager_labels(device: str, manager: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "kubeserial-manager", c.DEVICE_LABEL: device, c.MANAGER_LABEL: manager}


def config_key(config_path: str) -> str:
    return posixpath.basename(config_path.rstrip("/")) or "config"


def manager_pod_spec(
    manager: ManagerSpec, *, device: str, config_map: str | None, bridge: BridgeSettings
) -> dict[str, Any]:
    """The manager's pod: its command, the device's URL env and, like an injected pod, a tty at
    /dev/serial/<device> backed by the bridge sidecar (kubeserial_common.core.podspec)."""
    container: dict[str, Any] = {
        "name": "manager",
        "image": f"{manager.image.repository}:{manager.image.tag}",
        "command": ["/bin/sh", "-c", manager.run_cmd],
        "ports": [{"name": "http", "containerPort": MANAGER_HTTP_PORT, "protocol": "TCP"}],
        "resources": {
            "requests": {"cpu": "10m", "memory": "64Mi"},
            "limits": {"memory": MANAGER_MEMORY_LIMIT},
        },
        # Whatever the app's image, no privilege it does not need: no new privileges (setuid),
        # no capabilities but binding port 80 (the contract's port, which a root app needs it
        # for), the runtime's seccomp profile. The uid is the image's: a manager image may run as
        # root (the original README's OctoPrint does); root without capabilities owns only its files.
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]},
        },
    }
    # The manager app needs no Kubernetes API access: no token in its pods.
    pod: dict[str, Any] = {
        "enableServiceLinks": False,
        "automountServiceAccountToken": False,
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [container],
    }
    if config_map is not None and manager.config_path:
        key = config_key(manager.config_path)
        # subPath puts exactly one file at configPath without hiding the rest of its directory;
        # the config hash on the pod template rolls the Deployment when the config changes.
        container["volumeMounts"] = [{"name": "config", "mountPath": manager.config_path, "subPath": key}]
        pod["volumes"] = [{"name": "config", "configMap": {"name": config_map}}]
    link = DeviceLink(device=device, tty_path=default_tty_path(device))
    return connect_pod_spec(pod, [link], settings=bridge).spec


def desired_manager_objects(
    msr: Obj, manager: ManagerSpec, *, namespace: str, images: Images, ingress: IngressSpec | None
) -> list[dict[str, Any]]:
    """ConfigMap (when the Manager has a config), Deployment, Service and, when the KubeSerial asks
    for it, an Ingress; all named after the request and owned by it."""
    name = msr["metadata"]["name"]
    device, manager_name = msr["spec"]["device"], msr["spec"]["manager"]
    selector = manager_labels(device, manager_name)
    labels = {**selector, c.COMPONENT_LABEL: "manager"}
    # Only the pods are consumers of the device (its gateway admits them); the objects are not.
    pod_labels = {**labels, **connect_labels([device])}

    def meta() -> dict[str, Any]:
        return _metadata(
            name,
            namespace=namespace,
            labels=labels,
            owner=owner_reference(msr, kind="ManagerScheduleRequest"),
        )

    objects: list[dict[str, Any]] = []
    has_config = manager.config is not None and bool(manager.config_path)
    template_meta: dict[str, Any] = {"labels": pod_labels}
    if has_config:
        assert manager.config is not None and manager.config_path
        data = {config_key(manager.config_path): manager.config}
        objects.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(), "data": data})
        digest = hashlib.sha256(manager.config.encode()).hexdigest()[:16]
        template_meta["annotations"] = {CONFIG_HASH_ANNOTATION: digest}
    objects.append(
        {
            "apiVersion": r.DEPLOYMENT.api_version,
            "kind": "Deployment",
            "metadata": meta(),
            "spec": {
                "replicas": 1,
                # One session per device at a time: the old manager lets go before the new one starts.
                "strategy": {"type": "Recreate"},
                "selector": {"matchLabels": selector},
                "template": {
                    "metadata": template_meta,
                    "spec": manager_pod_spec(
                        manager,
                        device=device,
                        config_map=name if has_config else None,
                        bridge=BridgeSettings(
                            image=images.gateway, namespace=namespace, image_pull_policy=images.pull_policy
                        ),
                    ),
                },
            },
        }
    )
    objects.append(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta(),
            "spec": {
                "type": "ClusterIP",
                "selector": selector,
                "ports": [
                    {"name": "http", "port": MANAGER_HTTP_PORT, "targetPort": "http", "protocol": "TCP"}
                ],
            },
        }
    )
    if ingress is not None and ingress.enabled:
        objects.append(desired_manager_ingress(name, device=device, ingress=ingress, metadata=meta()))
    return objects


def desired_manager_ingress(
    name: str, *, device: str, ingress: IngressSpec, metadata: dict[str, Any]
) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "http": {
            "paths": [
                {
                    "path": "/",
                    "pathType": "Prefix",
                    "backend": {"service": {"name": name, "port": {"name": "http"}}},
                }
            ]
        }
    }
    if ingress.domain:
        rule = {"host": f"{device}.{ingress.domain.lstrip('.')}", **rule}
    spec: dict[str, Any] = {"rules": [rule]}
    if ingress.ingress_class_name:
        spec["ingressClassName"] = ingress.ingress_class_name
    if ingress.annotations:
        metadata = {**metadata, "annotations": dict(ingress.annotations)}
    return {"apiVersion": r.INGRESS.api_version, "kind": r.INGRESS.kind, "metadata": metadata, "spec": spec}
