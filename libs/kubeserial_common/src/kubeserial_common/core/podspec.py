"""The pod shape that connects a pod to serial devices, shared by the injector and the controller.

A connected pod gets, for every device, the URL env vars in every container (`names.device_env`).
In tty mode it also gets one bridge per device: a native sidecar (an init container with
`restartPolicy: Always`, placed before the pod's own init containers so it starts first) running
`bridge --url <rfc2217 url> --link /kubeserial/links/<name> --via-proc` from the gateway image.
The bridge makes a pty and links `<name>` in the shared emptyDir `kubeserial-links` to
`/proc/<bridge pid>/root/dev/pts/<n>`; every other container mounts that emptyDir at the directory
of its tty path (default /dev/serial), so `/dev/serial/<device>` opens the bridge's pty. That works
across containers only when the pod shares its PID namespace and the opener passes the kernel's
ptrace access check on the bridge (FINDINGS.md, Containers), hence `shareProcessNamespace: true`,
the bridge running as the app's uid/gid, and the bridge holding no capabilities.

Everything here is a pure function over the wire form (plain dicts); nothing talks to a cluster.
"""

import copy
import hashlib
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from kubeserial_common.core.constants import DEFAULT_NAMESPACE
from kubeserial_common.core.gatewayargs import BridgeArgs
from kubeserial_common.core.names import device_env, env_prefix, rfc2217_url

DEFAULT_BRIDGE_IMAGE: Final = "kubeserial/gateway:latest"
BRIDGE_IMAGE_UID: Final = 65532  # the gateway image's default user (services/gateway/Dockerfile)
LINKS_VOLUME: Final = "kubeserial-links"
LINKS_MOUNT: Final = "/kubeserial/links"  # where the bridge writes its links
DEFAULT_TTY_DIR: Final = "/dev/serial"
BRIDGE_CONTAINER_PREFIX: Final = "kubeserial-bridge-"
# Bridges share the pod's network namespace with the app: their health ports must not collide
# with each other nor with a declared containerPort, so they count up from here, skipping used ones.
BRIDGE_HEALTH_PORT_BASE: Final = 18217
CONTAINER_NAME_MAX: Final = 63

# Mounting an emptyDir over these would hide what the app needs (devices, kernel interfaces,
# binaries, service-account tokens), so a tty path may not live directly in them.
FORBIDDEN_TTY_DIRS: Final = frozenset(
    {"/", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/proc", "/sys", "/etc", "/bin", "/sbin", "/usr"}
    | {"/lib", "/lib64", "/var", "/tmp", "/run", "/var/run", "/root", "/home", LINKS_MOUNT}
)
FORBIDDEN_TTY_PREFIXES: Final = ("/proc/", "/sys/", "/dev/pts/", "/var/run/secrets/", "/run/secrets/")


class PodSpecError(ValueError):
    """The pod cannot be connected as asked; the message says why, for a user to read."""


@dataclass(frozen=True)
class DeviceLink:
    """One device a pod wants. `tty_path` None means URL env only (no bridge, no tty)."""

    device: str
    tty_path: str | None = None


@dataclass(frozen=True)
class BridgeSettings:
    image: str = DEFAULT_BRIDGE_IMAGE
    namespace: str = DEFAULT_NAMESPACE  # where the gateways' Services live
    image_pull_policy: str | None = None
    health_port_base: int = BRIDGE_HEALTH_PORT_BASE
    # Peak RSS of a bridge (bench/bench_gateway.py, tty mode): ~19 MiB (budget 20); one per consumer.
    resources: Mapping[str, Any] = field(
        default_factory=lambda: {
            "requests": {"cpu": "10m", "memory": "24Mi"},
            "limits": {"memory": "48Mi"},
        }
    )


@dataclass(frozen=True)
class ConnectedPodSpec:
    spec: dict[str, Any]
    warnings: tuple[str, ...] = ()


def default_tty_path(device: str) -> str:
    return f"{DEFAULT_TTY_DIR}/{device}"


def bridge_container_name(device: str) -> str:
    """`kubeserial-bridge-<device>`, shortened with a stable hash when over 63 characters."""
    name = BRIDGE_CONTAINER_PREFIX + device
    if len(name) <= CONTAINER_NAME_MAX:
        return name
    digest = hashlib.sha256(device.encode()).hexdigest()[:8]
    return f"{name[: CONTAINER_NAME_MAX - 9].rstrip('-')}-{digest}"


def is_bridge_container(container: Mapping[str, Any]) -> bool:
    return str(container.get("name", "")).startswith(BRIDGE_CONTAINER_PREFIX)


def tty_env_name(device: str) -> str:
    return f"{env_prefix(device)}_TTY"


def check_tty_path(path: str) -> str:
    """The normalised tty path, or PodSpecError saying what is wrong with it."""
    if not path.startswith("/"):
        raise PodSpecError(f"tty path {path!r} must be absolute, e.g. {DEFAULT_TTY_DIR}/mydevice")
    if path.endswith("/") or posixpath.normpath(path) != path or "/./" in path or "/../" in path:
        raise PodSpecError(
            f"tty path {path!r} must be a normalised file path (no '.', '..', '//', '/' at end)"
        )
    directory = posixpath.dirname(path)
    if directory in FORBIDDEN_TTY_DIRS or directory.startswith(FORBIDDEN_TTY_PREFIXES):
        raise PodSpecError(
            f"tty path {path!r}: its directory {directory} would be hidden by the links volume;"
            f" use a directory of its own, e.g. {DEFAULT_TTY_DIR}/{posixpath.basename(path)}"
        )
    if any(ch in path for ch in "\0\n,:=") or len(path) > 1024:
        raise PodSpecError(f"tty path {path!r} contains characters that cannot be used")
    return path


def links_volume() -> dict[str, Any]:
    return {"name": LINKS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}


def env_entries(links: Iterable[DeviceLink], *, namespace: str) -> list[dict[str, str]]:
    """URL env for every device (and the tty path for tty-mode devices), in device order."""
    entries: list[dict[str, str]] = []
    for link in links:
        entries += [{"name": k, "value": v} for k, v in device_env(link.device, namespace).items()]
        if link.tty_path is not None:
            entries.append({"name": tty_env_name(link.device), "value": link.tty_path})
    return entries


def bridge_container(
    link: DeviceLink,
    *,
    settings: BridgeSettings,
    health_port: int,
    run_as: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The native sidecar that gives `link.tty_path` to the other containers of the pod."""
    assert link.tty_path is not None
    security: dict[str, Any] = {
        # No capabilities: the kernel lets the app open the bridge's pty through /proc only when
        # the bridge's capabilities are a subset of the app's (and the uids match).
        "capabilities": {"drop": ["ALL"]},
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "seccompProfile": {"type": "RuntimeDefault"},
        **dict(run_as or {}),
    }
    probe = {"httpGet": {"path": "/healthz", "port": health_port}}
    container: dict[str, Any] = {
        "name": bridge_container_name(link.device),
        "image": settings.image,
        "args": BridgeArgs(
            url=rfc2217_url(link.device, settings.namespace),
            link=f"{LINKS_MOUNT}/{posixpath.basename(link.tty_path)}",
            via_proc=True,
            health_port=health_port,
        ).argv(),
        "restartPolicy": "Always",
        "env": [{"name": "PYTHONDONTWRITEBYTECODE", "value": "1"}],
        "volumeMounts": [{"name": LINKS_VOLUME, "mountPath": LINKS_MOUNT}],
        # The kubelet starts the app only after this succeeds, so the tty exists when the app starts.
        "startupProbe": {**probe, "periodSeconds": 1, "failureThreshold": 120},
        "livenessProbe": {**probe, "periodSeconds": 10, "failureThreshold": 3},
        "resources": copy.deepcopy(dict(settings.resources)),
        "securityContext": security,
    }
    if settings.image_pull_policy:
        container["imagePullPolicy"] = settings.image_pull_policy
    return container


def connect_pod_spec(
    spec: Mapping[str, Any], links: Sequence[DeviceLink], *, settings: BridgeSettings
) -> ConnectedPodSpec:
    """A copy of `spec` connected to `links`; PodSpecError when that is impossible.

    Idempotence is the caller's business (the injector marks pods it has mutated); this function
    refuses a spec that already has a bridge for one of the devices rather than adding another.
    """
    _check_links(links)
    new = copy.deepcopy(dict(spec))
    warnings: list[str] = []
    containers = [c for c in new.get("containers") or [] if isinstance(c, dict)]
    if not containers:
        raise PodSpecError("the pod has no containers")
    init_containers = [c for c in new.get("initContainers") or [] if isinstance(c, dict)]
    app_containers = init_containers + containers
    env = env_entries(links, namespace=settings.namespace)
    for container in app_containers:
        container["env"] = _merged_env(container.get("env"), env)
    tty_links = [link for link in links if link.tty_path is not None]
    if tty_links:
        _add_tty(new, tty_links, containers, init_containers, settings=settings, warnings=warnings)
    return ConnectedPodSpec(spec=new, warnings=tuple(warnings))


def _check_links(links: Sequence[DeviceLink]) -> None:
    if not links:
        raise PodSpecError("no device to connect")
    devices = [link.device for link in links]
    duplicates = sorted({d for d in devices if devices.count(d) > 1})
    if duplicates:
        raise PodSpecError(f"device listed more than once: {', '.join(duplicates)}")
    basenames: dict[str, str] = {}
    for link in links:
        if link.tty_path is None:
            continue
        check_tty_path(link.tty_path)
        base = posixpath.basename(link.tty_path)
        if base in basenames:
            raise PodSpecError(
                f"devices {basenames[base]} and {link.device} would both appear as {base!r}:"
                " tty paths need different file names"
            )
        basenames[base] = link.device


def _merged_env(existing: Any, ours: list[dict[str, str]]) -> list[Any]:
    """The container's env with ours appended; a variable the user set already keeps its value."""
    current = list(existing) if isinstance(existing, list) else []
    taken = {item.get("name") for item in current if isinstance(item, dict)}
    return current + [dict(item) for item in ours if item["name"] not in taken]


def _add_tty(
    spec: dict[str, Any],
    links: list[DeviceLink],
    containers: list[dict[str, Any]],
    init_containers: list[dict[str, Any]],
    *,
    settings: BridgeSettings,
    warnings: list[str],
) -> None:
    all_names = {str(c.get("name")) for c in containers + init_containers}
    for link in links:
        if bridge_container_name(link.device) in all_names:
            raise PodSpecError(f"the pod already has a container named {bridge_container_name(link.device)}")
    volumes = [v for v in spec.get("volumes") or [] if isinstance(v, dict)]
    if any(v.get("name") == LINKS_VOLUME for v in volumes):
        raise PodSpecError(f"the pod already has a volume named {LINKS_VOLUME}")
    directories = sorted({posixpath.dirname(str(link.tty_path)) for link in links})
    for container in init_containers + containers:
        mounts = [m for m in container.get("volumeMounts") or [] if isinstance(m, dict)]
        clash = sorted({str(m.get("mountPath")) for m in mounts} & set(directories))
        if clash:
            raise PodSpecError(
                f"container {container.get('name')} already mounts {clash[0]}; choose another tty path"
            )
        container["volumeMounts"] = mounts + [{"name": LINKS_VOLUME, "mountPath": d} for d in directories]
    spec["volumes"] = [*volumes, links_volume()]
    run_as = _bridge_identity(spec, containers=containers, init_containers=init_containers, warnings=warnings)
    ports = _free_ports(
        _declared_ports(init_containers + containers), start=settings.health_port_base, count=len(links)
    )
    bridges = [
        bridge_container(link, settings=settings, health_port=port, run_as=run_as)
        for link, port in zip(links, ports, strict=True)
    ]
    spec["initContainers"] = bridges + init_containers
    if spec.get("hostNetwork"):
        warnings.append(
            f"hostNetwork: the bridges' health ports ({', '.join(map(str, ports))}) are opened on the node"
        )
    if spec.get("hostPID"):
        return  # every container already sees every PID; shareProcessNamespace is invalid with hostPID
    if spec.get("shareProcessNamespace") is False:
        warnings.append("shareProcessNamespace was false; set to true so the app can open the bridge's tty")
    spec["shareProcessNamespace"] = True


def _run_as(security: Any) -> dict[str, int]:
    if not isinstance(security, dict):
        return {}
    return {k: security[k] for k in ("runAsUser", "runAsGroup") if isinstance(security.get(k), int)}


def _bridge_identity(
    spec: Mapping[str, Any],
    *,
    containers: list[dict[str, Any]],
    init_containers: list[dict[str, Any]],
    warnings: list[str],
) -> dict[str, int]:
    """uid/gid for the bridge: the first app container's, since only that uid may open it via /proc."""
    pod_level = _run_as(spec.get("securityContext"))
    identities = {
        str(c.get("name")): {**pod_level, **_run_as(c.get("securityContext"))}
        for c in init_containers + containers
    }
    main_name = str(containers[0].get("name"))
    chosen = identities[main_name]
    others = sorted(name for name, ident in identities.items() if ident != chosen)
    if others:
        warnings.append(
            f"the tty opens only in containers running as {main_name} does ({_describe(chosen)}),"
            f" not in: {', '.join(others)}"
        )
    main_security = containers[0].get("securityContext")
    if isinstance(main_security, dict) and main_security.get("runAsNonRoot") is True:
        # Pod Security "restricted" wants it on every container; the pod-level one is inherited.
        chosen = {**chosen, "runAsNonRoot": True}
    if "runAsUser" in chosen:
        return chosen
    if _asks_non_root(spec.get("securityContext")) or _asks_non_root(main_security):
        # The app's image picks its (non-root) uid, which we cannot know: the bridge runs as its
        # own image's non-root user (65532) and the app opens the tty only if it is that uid too.
        warnings.append(
            f"no runAsUser set: the tty bridge runs as its image's user (uid {BRIDGE_IMAGE_UID});"
            " set runAsUser if the app runs as another user"
        )
        return chosen
    # Nothing says the app is not root, and most images run as root: so does the bridge (it holds
    # no capabilities), since only the app's own uid may open it. The image's default is 65532.
    warnings.append(
        "no runAsUser set: the tty bridge runs as root (no capabilities) like an image that runs as"
        " root; set runAsUser if the app runs as another user"
    )
    return {**chosen, "runAsUser": 0, "runAsGroup": chosen.get("runAsGroup", 0)}


def _asks_non_root(security: Any) -> bool:
    return isinstance(security, dict) and security.get("runAsNonRoot") is True


def _describe(identity: Mapping[str, int]) -> str:
    if not identity:
        return "the image's default user"
    return ", ".join(f"{k}={v}" for k, v in sorted(identity.items()))


def _declared_ports(containers: Iterable[Mapping[str, Any]]) -> set[int]:
    ports: set[int] = set()
    for container in containers:
        for port in container.get("ports") or []:
            if isinstance(port, dict) and isinstance(port.get("containerPort"), int):
                ports.add(port["containerPort"])
    return ports


def _free_ports(taken: set[int], *, start: int, count: int) -> list[int]:
    ports: list[int] = []
    candidate = start
    while len(ports) < count:
        if candidate not in taken:
            ports.append(candidate)
        candidate += 1
    return ports
