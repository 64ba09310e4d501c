"""Derived names shared by every service: one definition, so controller and injector agree."""

import re
from collections.abc import Iterable

from kubeserial_common.core.constants import (
    CONNECT_LABEL_PREFIX,
    CONNECTED,
    EXTENDED_RESOURCE_PREFIX,
    RAW_PORT,
    RFC2217_PORT,
)

# A DNS-1123 label that starts with a letter: device names become Service names (`<name>-gateway`).
# Here rather than in the models, so that a process checking names (the injector) need not build
# the pydantic models (about 7 MiB).
DEVICE_NAME = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DEVICE_NAME_MAX = 55  # 63 minus len("-gateway")


def gateway_name(device: str) -> str:
    return f"{device}-gateway"


def manager_request_name(device: str, manager: str) -> str:
    """The name of the request, and of the manager's Deployment, Service and ConfigMap."""
    return f"{device}-{manager}"


# A Service name is a DNS-1035 label: at most 63 characters, no dots (a device name starts with a
# letter, so `<device>-<manager>` does too). The CRDs say the same in CEL (core.models).
MANAGER_OBJECTS_NAME_MAX = 63


def manager_name_problem(device: str, manager: str) -> str | None:
    """Why `manager` cannot be scheduled for `device` under the names its objects get, or None."""
    name = manager_request_name(device, manager)
    if "." in manager:
        return f"the manager's objects are named {name}, a Service name, which cannot hold a dot"
    if len(name) > MANAGER_OBJECTS_NAME_MAX:
        return (
            f"the manager's objects are named {name} ({len(name)} characters), a Service name, which"
            f" holds at most {MANAGER_OBJECTS_NAME_MAX}: shorten the device's or the Manager's name"
        )
    return None


def connect_label(device: str) -> str:
    """The label key that marks a pod as a consumer of `device` (a device name is a valid label name:
    a DNS label of at most 55 characters)."""
    return f"{CONNECT_LABEL_PREFIX}{device}"


def connect_labels(devices: Iterable[str]) -> dict[str, str]:
    """The labels of a pod connected to `devices`: what its gateways' NetworkPolicies admit."""
    return {connect_label(device): CONNECTED for device in devices}


def monitor_lease_name(node: str) -> str:
    return f"kubeserial-monitor-{node}"


def extended_resource_name(device: str) -> str:
    return f"{EXTENDED_RESOURCE_PREFIX}{device}"


def kubeserial_label_value(namespace: str, name: str) -> str:
    return f"{namespace}.{name}"


def env_prefix(device: str) -> str:
    """`ender-3.v2` -> `KUBESERIAL_ENDER_3_V2`: env var names allow only [A-Z0-9_]."""
    return "KUBESERIAL_" + re.sub(r"[^A-Z0-9]", "_", device.upper())


def gateway_host(device: str, namespace: str) -> str:
    return f"{gateway_name(device)}.{namespace}.svc"


def rfc2217_url(device: str, namespace: str) -> str:
    return f"rfc2217://{gateway_host(device, namespace)}:{RFC2217_PORT}"


def raw_url(device: str, namespace: str) -> str:
    return f"socket://{gateway_host(device, namespace)}:{RAW_PORT}"


def device_env(device: str, namespace: str) -> dict[str, str]:
    """The environment a consumer of `device` gets, in manager pods and injected pods alike."""
    prefix = env_prefix(device)
    return {f"{prefix}_URL": rfc2217_url(device, namespace), f"{prefix}_RAW_URL": raw_url(device, namespace)}
