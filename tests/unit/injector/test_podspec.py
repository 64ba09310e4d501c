"""The shared pod shape (kubeserial_common.core.podspec): pure functions over pod specs."""

from typing import Any

import pytest

from kubeserial_common.core.podspec import (
    BRIDGE_IMAGE_UID,
    LINKS_MOUNT,
    LINKS_VOLUME,
    BridgeSettings,
    DeviceLink,
    PodSpecError,
    bridge_container_name,
    check_tty_path,
    connect_pod_spec,
    default_tty_path,
    is_bridge_container,
)

SETTINGS = BridgeSettings(image="registry.local/gateway:1", namespace="kubeserial")


def pod_spec(*containers: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"containers": list(containers) or [{"name": "app", "image": "busybox"}], **extra}


def tty(device: str) -> DeviceLink:
    return DeviceLink(device, default_tty_path(device))


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


def test_url_mode_adds_env_only() -> None:
    spec = pod_spec()
    result = connect_pod_spec(spec, [DeviceLink("ender3")], settings=SETTINGS)
    assert result.spec["containers"][0]["env"] == [
        {"name": "KUBESERIAL_ENDER3_URL", "value": "rfc2217://ender3-gateway.kubeserial.svc:2217"},
        {"name": "KUBESERIAL_ENDER3_RAW_URL", "value": "socket://ender3-gateway.kubeserial.svc:3333"},
    ]
    assert "initContainers" not in result.spec and "volumes" not in result.spec
    assert "shareProcessNamespace" not in result.spec
    assert spec == pod_spec(), "the input must not be modified"


def test_tty_mode_adds_one_native_sidecar_bridge_first() -> None:
    spec = pod_spec(
        {"name": "app", "image": "a"},
        initContainers=[{"name": "setup", "image": "b"}],
        securityContext={"runAsUser": 1000, "runAsGroup": 1000},
    )
    result = connect_pod_spec(spec, [tty("ender3")], settings=SETTINGS)
    bridge, setup = result.spec["initContainers"]
    assert setup["name"] == "setup"
    assert bridge["name"] == "kubeserial-bridge-ender3" and is_bridge_container(bridge)
    assert bridge["restartPolicy"] == "Always"
    assert bridge["image"] == "registry.local/gateway:1"
    assert bridge["args"][:6] == [
        "bridge",
        "--url",
        "rfc2217://ender3-gateway.kubeserial.svc:2217",
        "--link",
        f"{LINKS_MOUNT}/ender3",
        "--via-proc",
    ]
    assert bridge["securityContext"]["runAsUser"] == 1000
    assert bridge["securityContext"]["runAsGroup"] == 1000
    assert bridge["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert {"name": LINKS_VOLUME, "mountPath": LINKS_MOUNT} in bridge["volumeMounts"]
    assert result.spec["shareProcessNamespace"] is True
    assert result.spec["volumes"] == [
        {"name": LINKS_VOLUME, "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}}
    ]
    for container in (result.spec["containers"][0], setup):
        assert {"name": LINKS_VOLUME, "mountPath": "/dev/serial"} in container["volumeMounts"]
        assert env_of(container)["KUBESERIAL_ENDER3_TTY"] == "/dev/serial/ender3"
    assert result.warnings == ()


def test_multi_container_multi_device() -> None:
    spec = pod_spec({"name": "a", "image": "x"}, {"name": "b", "image": "y"})
    result = connect_pod_spec(
        spec, [tty("ender3"), DeviceLink("zigbee", "/opt/dev/zb"), DeviceLink("gps")], settings=SETTINGS
    )
    bridges = result.spec["initContainers"]
    assert [b["name"] for b in bridges] == ["kubeserial-bridge-ender3", "kubeserial-bridge-zigbee"]
    assert bridges[1]["args"][4] == f"{LINKS_MOUNT}/zb"
    ports = [b["startupProbe"]["httpGet"]["port"] for b in bridges]
    assert len(set(ports)) == 2
    for container in result.spec["containers"]:
        env = env_of(container)
        assert {"KUBESERIAL_ENDER3_URL", "KUBESERIAL_ZIGBEE_RAW_URL", "KUBESERIAL_GPS_URL"} <= set(env)
        assert "KUBESERIAL_GPS_TTY" not in env
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert mounts == {"/dev/serial", "/opt/dev"}
    assert len(result.spec["volumes"]) == 1


def test_existing_env_and_volumes_are_kept() -> None:
    spec = pod_spec(
        {
            "name": "app",
            "image": "x",
            "env": [{"name": "KUBESERIAL_ENDER3_URL", "value": "rfc2217://elsewhere:2217"}, {"name": "A"}],
            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
        },
        volumes=[{"name": "data", "emptyDir": {}}],
        shareProcessNamespace=True,
    )
    result = connect_pod_spec(spec, [tty("ender3")], settings=SETTINGS)
    app = result.spec["containers"][0]
    assert env_of(app)["KUBESERIAL_ENDER3_URL"] == "rfc2217://elsewhere:2217", "the user's value wins"
    assert [e["name"] for e in app["env"]].count("KUBESERIAL_ENDER3_URL") == 1
    assert [v["name"] for v in result.spec["volumes"]] == ["data", LINKS_VOLUME]
    assert app["volumeMounts"][0] == {"name": "data", "mountPath": "/data"}


def test_bridge_health_ports_skip_declared_container_ports() -> None:
    settings = BridgeSettings(health_port_base=9000)
    spec = pod_spec(
        {"name": "app", "image": "x", "ports": [{"containerPort": 9000}, {"containerPort": 9002}]}
    )
    result = connect_pod_spec(spec, [tty("a"), tty("b")], settings=settings)
    ports = [c["livenessProbe"]["httpGet"]["port"] for c in result.spec["initContainers"]]
    assert ports == [9001, 9003]
    assert [c["args"][-1] for c in result.spec["initContainers"]] == ["9001", "9003"]


def test_share_process_namespace_false_is_overridden_with_a_warning() -> None:
    spec = pod_spec(shareProcessNamespace=False, securityContext={"runAsUser": 0})
    result = connect_pod_spec(spec, [tty("x")], settings=SETTINGS)
    assert result.spec["shareProcessNamespace"] is True
    assert any("shareProcessNamespace" in w for w in result.warnings)


def test_host_pid_pods_do_not_get_share_process_namespace() -> None:
    result = connect_pod_spec(pod_spec(hostPID=True), [tty("x")], settings=SETTINGS)
    assert "shareProcessNamespace" not in result.spec


def test_bridge_identity_follows_pod_and_first_container() -> None:
    spec = pod_spec(
        {"name": "app", "image": "x", "securityContext": {"runAsUser": 1001}},
        {"name": "side", "image": "y"},
        securityContext={"runAsUser": 2000, "runAsGroup": 3000},
    )
    result = connect_pod_spec(spec, [tty("x")], settings=SETTINGS)
    bridge = result.spec["initContainers"][0]
    assert bridge["securityContext"]["runAsUser"] == 1001
    assert bridge["securityContext"]["runAsGroup"] == 3000
    assert any("side" in w and "runAsUser=1001" in w for w in result.warnings)


def test_unknown_uid_warns_and_the_bridge_runs_as_root_like_most_images() -> None:
    """Nothing says the app is not root: the bridge runs as root (no capabilities), not as its
    image's default user 65532, since only the app's own uid may open its tty."""
    result = connect_pod_spec(pod_spec(), [tty("x")], settings=SETTINGS)
    assert any("runs as root" in w for w in result.warnings)
    security = result.spec["initContainers"][0]["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (0, 0)
    assert security["capabilities"] == {"drop": ["ALL"]}


def test_run_as_non_root_without_a_uid_runs_the_bridge_as_its_image_user() -> None:
    """A pod that says runAsNonRoot and no uid: the bridge starts as its image's non-root user
    (before issue 17 the image's user was root and the kubelet refused to start it)."""
    for spec in (
        pod_spec(securityContext={"runAsNonRoot": True}),
        pod_spec({"name": "app", "image": "x", "securityContext": {"runAsNonRoot": True}}),
    ):
        result = connect_pod_spec(spec, [tty("x")], settings=SETTINGS)
        security = result.spec["initContainers"][0]["securityContext"]
        assert "runAsUser" not in security
        assert any(f"uid {BRIDGE_IMAGE_UID}" in w for w in result.warnings)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("dev/serial/x", "absolute"),
        ("/dev/ttyUSB0", "/dev would be hidden"),
        ("/ttyUSB0", "/ would be hidden"),
        ("/etc/x", "/etc would be hidden"),
        ("/proc/1/x", "/proc/1 would be hidden"),
        ("/dev/serial/", "normalised"),
        ("/dev/serial/../x", "normalised"),
        ("/dev//serial/x", "normalised"),
        (f"{LINKS_MOUNT}/x", "hidden"),
        ("/dev/serial/a,b", "characters"),
    ],
)
def test_bad_tty_paths_are_refused_with_a_reason(path: str, fragment: str) -> None:
    with pytest.raises(PodSpecError, match="tty path") as err:
        check_tty_path(path)
    assert fragment in str(err.value)


def test_good_tty_paths() -> None:
    assert check_tty_path("/dev/serial/zigbee") == "/dev/serial/zigbee"
    assert check_tty_path("/dev/zigbee/ttyACM0") == "/dev/zigbee/ttyACM0"


@pytest.mark.parametrize(
    ("spec", "links", "fragment"),
    [
        ({"containers": []}, [tty("x")], "no containers"),
        (pod_spec(), [], "no device"),
        (pod_spec(), [tty("x"), DeviceLink("x")], "more than once: x"),
        (pod_spec(), [DeviceLink("a", "/dev/a/tty"), DeviceLink("b", "/dev/b/tty")], "both appear as 'tty'"),
        (pod_spec(volumes=[{"name": LINKS_VOLUME, "emptyDir": {}}]), [tty("x")], "volume named"),
        (pod_spec({"name": "kubeserial-bridge-x", "image": "i"}), [tty("x")], "container named"),
        (
            pod_spec(
                {"name": "a", "image": "i", "volumeMounts": [{"name": "v", "mountPath": "/dev/serial"}]}
            ),
            [tty("x")],
            "already mounts /dev/serial",
        ),
    ],
)
def test_impossible_connections_are_refused(
    spec: dict[str, Any], links: list[DeviceLink], fragment: str
) -> None:
    with pytest.raises(PodSpecError) as err:
        connect_pod_spec(spec, links, settings=SETTINGS)
    assert fragment in str(err.value)


def test_long_device_names_give_valid_container_names() -> None:
    device = "d" + "-x" * 27  # 55 characters, the longest device name
    name = bridge_container_name(device)
    assert len(name) <= 63 and name.startswith("kubeserial-bridge-") and not name.endswith("-")
    assert name != bridge_container_name(device[:-2] + "yy")
    assert bridge_container_name("short") == "kubeserial-bridge-short"


def test_run_as_non_root_is_carried_to_the_bridge() -> None:
    spec = pod_spec({"name": "app", "image": "x", "securityContext": {"runAsNonRoot": True, "runAsUser": 7}})
    bridge = connect_pod_spec(spec, [tty("x")], settings=SETTINGS).spec["initContainers"][0]
    assert bridge["securityContext"]["runAsNonRoot"] is True and bridge["securityContext"]["runAsUser"] == 7
