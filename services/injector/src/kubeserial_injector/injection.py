"""What to do with one pod: pure decisions, from its annotations and what is known of the devices.

The async shell (app.py) looks the requested devices up and calls `decide`; nothing here does I/O.
"""

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kubeserial_common.core import constants as c
from kubeserial_common.core.conditions import get_condition
from kubeserial_common.core.names import DEVICE_NAME, DEVICE_NAME_MAX, connect_labels
from kubeserial_common.core.podspec import (
    BridgeSettings,
    DeviceLink,
    PodSpecError,
    check_tty_path,
    connect_pod_spec,
    default_tty_path,
)

TTY_MODE: Final = "tty"
URL_MODE: Final = "url"
MODES: Final = (TTY_MODE, URL_MODE)
MAX_DEVICES: Final = 16  # a pod asking for more is almost certainly a mistake; bridges cost memory
_DEVICE_NAME = re.compile(DEVICE_NAME)

JsonPatch = list[dict[str, Any]]


class InjectionError(ValueError):
    """The pod's request cannot be honoured; the message is shown to the user by kubectl."""

    def __init__(self, message: str, *, code: int = 400, reason: str = "BadRequest") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


@dataclass(frozen=True)
class Decision:
    """An admission answer: allowed with an optional JSONPatch, or denied with a status."""

    allowed: bool
    patch: JsonPatch | None = None
    warnings: tuple[str, ...] = ()
    message: str = ""
    code: int = 200
    reason: str = ""
    outcome: str = "unchanged"  # for metrics: mutated, unchanged, denied
    devices: tuple[str, ...] = field(default=())


def annotations_of(pod: Mapping[str, Any]) -> dict[str, str]:
    meta = pod.get("metadata")
    annotations = meta.get("annotations") if isinstance(meta, dict) else None
    if not isinstance(annotations, dict):
        return {}
    return {str(k): v for k, v in annotations.items() if isinstance(v, str)}


def requested_devices(annotations: Mapping[str, str]) -> list[str]:
    """Device names from the inject annotation ("a" or "a, b"); [] when the pod asks for none."""
    raw = annotations.get(c.INJECT_ANNOTATION)
    if raw is None:
        return []
    names = [part.strip() for part in raw.split(",")]
    names = [name for name in names if name]
    if not names:
        raise InjectionError(f"annotation {c.INJECT_ANNOTATION} is empty; name a SerialDevice")
    if len(names) > MAX_DEVICES:
        raise InjectionError(
            f"annotation {c.INJECT_ANNOTATION} names {len(names)} devices; at most {MAX_DEVICES}"
        )
    for name in names:
        if len(name) > DEVICE_NAME_MAX or not _DEVICE_NAME.match(name):
            raise InjectionError(
                f"annotation {c.INJECT_ANNOTATION}: {_shorten(name)!r} is not a SerialDevice name"
                f" (a DNS label of at most {DEVICE_NAME_MAX} characters starting with a letter)"
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise InjectionError(f"annotation {c.INJECT_ANNOTATION} lists {', '.join(duplicates)} more than once")
    return names


def plan_links(annotations: Mapping[str, str], devices: Sequence[str]) -> list[DeviceLink]:
    """How each device is connected: tty (default path or the path annotation) or URL only."""
    mode = annotations.get(c.INJECT_MODE_ANNOTATION, TTY_MODE).strip() or TTY_MODE
    if mode not in MODES:
        raise InjectionError(
            f"annotation {c.INJECT_MODE_ANNOTATION}: {_shorten(mode)!r} is not one of {', '.join(MODES)}"
        )
    paths = tty_paths(annotations.get(c.INJECT_PATH_ANNOTATION), devices)
    if mode == URL_MODE:
        if paths:
            raise InjectionError(
                f"annotation {c.INJECT_PATH_ANNOTATION} needs {c.INJECT_MODE_ANNOTATION}: {TTY_MODE}"
            )
        return [DeviceLink(device) for device in devices]
    return [DeviceLink(device, paths.get(device, default_tty_path(device))) for device in devices]


def tty_paths(raw: str | None, devices: Sequence[str]) -> dict[str, str]:
    """The path annotation: "/dev/x/tty" for a single device, or "dev1=/path1,dev2=/path2"."""
    if raw is None or not raw.strip():
        return {}
    raw = raw.strip()
    if "=" not in raw:
        if len(devices) != 1:
            raise InjectionError(
                f"annotation {c.INJECT_PATH_ANNOTATION}: with several devices use device=path pairs,"
                f" e.g. {devices[0]}=/dev/serial/{devices[0]}"
            )
        return {devices[0]: _checked_path(raw)}
    paths: dict[str, str] = {}
    for pair in raw.split(","):
        device, sep, path = (part.strip() for part in pair.partition("="))
        if not sep or not device:
            raise InjectionError(
                f"annotation {c.INJECT_PATH_ANNOTATION}: {_shorten(pair)!r} is not device=path"
            )
        if device not in devices:
            raise InjectionError(
                f"annotation {c.INJECT_PATH_ANNOTATION} names {_shorten(device)!r},"
                f" which {c.INJECT_ANNOTATION} does not request"
            )
        if device in paths:
            raise InjectionError(f"annotation {c.INJECT_PATH_ANNOTATION} gives {device} twice")
        paths[device] = _checked_path(path)
    return paths


def _checked_path(path: str) -> str:
    try:
        return check_tty_path(path)
    except PodSpecError as exc:
        raise InjectionError(f"annotation {c.INJECT_PATH_ANNOTATION}: {exc}") from None


def device_problem(device: str, obj: Mapping[str, Any] | None) -> str | None:
    """Why a requested device cannot be used right now (a warning), or None when it can."""
    if obj is None:
        return None
    available = get_condition(obj, c.AVAILABLE)
    if available is not None and available.get("status") == "True":
        return None
    detail = (
        "no Available condition yet"
        if available is None
        else f"Available={available.get('status')}, {available.get('reason') or 'no reason'}"
    )
    return f"SerialDevice {device} is not available ({detail}); the pod will connect once its gateway runs"


def decide(
    *,
    operation: str,
    pod: Mapping[str, Any],
    known_devices: Mapping[str, Mapping[str, Any] | None],
    settings: BridgeSettings,
) -> Decision:
    """The answer for one pod. `known_devices` maps each requested device to its object or None."""
    annotations = annotations_of(pod)
    if operation != "CREATE" or c.INJECTED_ANNOTATION in annotations:
        return Decision(allowed=True)  # never mutate twice, and pods are not re-shaped on UPDATE
    try:
        devices = requested_devices(annotations)
        if not devices:
            return Decision(allowed=True)
        links = plan_links(annotations, devices)
        missing = [device for device in devices if known_devices.get(device) is None]
        if missing:
            raise InjectionError(
                f"SerialDevice {', '.join(missing)} does not exist (requested by annotation"
                f" {c.INJECT_ANNOTATION}); create it or fix the annotation",
                code=403,
                reason="Forbidden",
            )
        spec = pod.get("spec")
        if not isinstance(spec, dict):
            raise InjectionError("the pod has no spec")
        try:
            connected = connect_pod_spec(spec, links, settings=settings)
        except PodSpecError as exc:
            raise InjectionError(str(exc)) from None
    except InjectionError as exc:
        return Decision(allowed=False, message=str(exc), code=exc.code, reason=exc.reason, outcome="denied")
    warnings = [w for device in devices if (w := device_problem(device, known_devices.get(device)))]
    # The labels are what the devices' gateways admit (their NetworkPolicies).
    patch = spec_patch(spec, connected.spec) + metadata_patch(
        pod,
        {"annotations": {c.INJECTED_ANNOTATION: ",".join(devices)}, "labels": connect_labels(devices)},
    )
    return Decision(
        allowed=True,
        patch=patch,
        warnings=tuple(warnings) + connected.warnings,
        outcome="mutated",
        devices=tuple(devices),
    )


def escape_pointer(token: str) -> str:
    """RFC 6901: '~' and '/' inside a JSON Pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


def spec_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> JsonPatch:
    """Operations turning pod spec `old` into `new`, one per changed top-level field."""
    ops: JsonPatch = []
    for key, value in new.items():
        if key not in old:
            ops.append({"op": "add", "path": f"/spec/{escape_pointer(key)}", "value": value})
        elif old[key] != value:
            ops.append({"op": "replace", "path": f"/spec/{escape_pointer(key)}", "value": value})
    return ops


def annotation_patch(pod: Mapping[str, Any], added: Mapping[str, str]) -> JsonPatch:
    return metadata_patch(pod, {"annotations": added})


def metadata_patch(pod: Mapping[str, Any], added: Mapping[str, Mapping[str, str]]) -> JsonPatch:
    """Operations adding entries to the pod's metadata maps, e.g. {"labels": {...}, "annotations": {...}}."""
    meta = pod.get("metadata")
    if not isinstance(meta, dict):
        return [{"op": "add", "path": "/metadata", "value": {k: dict(v) for k, v in added.items()}}]
    ops: JsonPatch = []
    for member, entries in added.items():
        if not isinstance(meta.get(member), dict):
            # "add" on an existing member (e.g. labels: null) replaces it (RFC 6902).
            ops.append({"op": "add", "path": f"/metadata/{member}", "value": dict(entries)})
            continue
        ops += [
            {"op": "add", "path": f"/metadata/{member}/{escape_pointer(key)}", "value": value}
            for key, value in entries.items()
        ]
    return ops


def _shorten(text: str, limit: int = 64) -> str:
    return text if len(text) <= limit else text[:limit] + "..."
