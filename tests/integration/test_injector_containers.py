"""The injected pod shape, run with real containers: what kubeserial_common.core.podspec produces is
turned into docker options field by field (user, read-only root, dropped capabilities,
no-new-privileges, env, volume mounts, shared PID namespace), so the test runs the shape the
injector ships, not a hand-made approximation.

A busybox app (no Python, no socat) opens the tty named by its injected KUBESERIAL_<DEVICE>_TTY,
sets the baud rate, and exchanges bytes with a simulated device (a pty the test plays) through the
bridge sidecar and a gateway. Only the gateway's address is rewritten: in a pod it is the
Service's DNS name; here every container shares the host network.
"""

import os
import shlex
import subprocess
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from kubeserial_common.core import gatewayargs as ga
from kubeserial_common.core.podspec import (
    BRIDGE_IMAGE_UID,
    LINKS_VOLUME,
    BridgeSettings,
    DeviceLink,
    connect_pod_spec,
    default_tty_path,
)
from kubeserial_testing.controlplane import free_port
from kubeserial_testing.docker import (
    BuiltImages,
    Docker,
    build_images,
    engine_for_tests,
    running_container,
    unique_name,
    wait_healthy,
)
from kubeserial_testing.services import wait_for
from kubeserial_testing.ttyio import read_exactly

pytestmark = [pytest.mark.docker, pytest.mark.timeout(1500)]
DEVICE = "printer"


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    yield from engine_for_tests()


@pytest.fixture(scope="module")
def images(docker: Docker) -> BuiltImages:
    return build_images(docker, ["gateway"])


def security_options(container: dict[str, Any]) -> list[str]:
    """docker run options for a container's securityContext (the fields podspec sets)."""
    security = container.get("securityContext", {})
    options: list[str] = []
    if "runAsUser" in security:
        options += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"]
    if security.get("readOnlyRootFilesystem"):
        options.append("--read-only")
    for capability in security.get("capabilities", {}).get("drop", []):
        options += ["--cap-drop", capability]
    if security.get("allowPrivilegeEscalation") is False:
        options += ["--security-opt", "no-new-privileges"]
    return options


def env_options(container: dict[str, Any]) -> list[str]:
    return [
        option for item in container.get("env", []) for option in ("-e", f"{item['name']}={item['value']}")
    ]


def mount_options(container: dict[str, Any], volumes: dict[str, Path]) -> list[str]:
    return [f"-v{volumes[m['name']]}:{m['mountPath']}" for m in container.get("volumeMounts", [])]


def with_gateway_at(args: list[str], url: str) -> list[str]:
    """The bridge's arguments with its gateway URL replaced (the Service name does not resolve here)."""
    index = args.index("--url") + 1
    return [*args[:index], url, *args[index + 1 :]]


@contextmanager
def app_container(
    docker: Docker, image: str, options: list[str], script: str
) -> Iterator[subprocess.Popen[str]]:
    name = unique_name("app")
    command = [
        docker.cli,
        "run",
        "--rm",
        "--name",
        name,
        "--network=none",
        *options,
        image,
        "sh",
        "-c",
        script,
    ]
    pipe = subprocess.PIPE
    with subprocess.Popen(command, env=docker.env, stdout=pipe, stderr=pipe, text=True) as app:
        try:
            yield app
        finally:
            docker("rm", "-f", name, check=False)


@pytest.mark.parametrize(
    "pod_security",
    [
        {"runAsUser": 1000, "runAsGroup": 1000},
        {},
        {"capabilities": {"drop": ["ALL"]}},
        {"runAsNonRoot": True},
    ],
    # {}: nothing says the app is not root, so the bridge runs as root (the image's default is 65532).
    # The third: a root app without capabilities opens a root bridge's pty only because the bridge
    # holds none either (its capabilities must be a subset of the opener's). The last: runAsNonRoot
    # and no uid: the bridge runs as its image's user (65532) and so does the app's image here.
    ids=["app-uid-1000", "image-default-users", "root-app-without-capabilities", "non-root-images"],
)
def test_app_without_python_or_socat_uses_the_injected_tty(
    docker: Docker, images: BuiltImages, tmp_path: Path, pod_security: dict[str, int]
) -> None:
    app_spec = {
        "name": "app",
        "image": images.busybox,
        **({"securityContext": pod_security} if pod_security else {}),
    }
    connected = connect_pod_spec(
        {"containers": [app_spec]},
        [DeviceLink(DEVICE, default_tty_path(DEVICE))],
        settings=BridgeSettings(image=images.services["gateway"], health_port_base=free_port()),
    ).spec
    (bridge,) = connected["initContainers"]
    (app,) = connected["containers"]
    links = tmp_path / "links"
    links.mkdir()
    links.chmod(0o777)  # what the kubelet gives an emptyDir
    volumes = {LINKS_VOLUME: links}
    bridge_health = int(bridge["args"][bridge["args"].index("--health-port") + 1])
    master, slave = os.openpty()
    rfc2217_port, gateway_health = free_port(), free_port()
    gateway_args = ["serve", "--device", "/dev/ttyUSB0", "--raw-port", str(free_port())]
    gateway_args += ["--rfc2217-port", str(rfc2217_port), "--health-port", str(gateway_health)]
    gateway_args.append(ga.TEST_ALLOW_ANY_TTY)  # the device is a pty, no USB tty
    try:
        with (
            running_container(
                docker,
                images.services["gateway"],
                gateway_args,
                # As the gateway Deployment runs it: root, read-only root filesystem and /dev.
                options=[
                    "--network=host",
                    "--user=0:0",
                    "--read-only",
                    "-v",
                    f"{os.ttyname(slave)}:/dev/ttyUSB0:ro",
                ],
                log_path=tmp_path / "gateway.log",
            ) as gateway,
            running_container(
                docker,
                bridge["image"],
                with_gateway_at(bridge["args"], f"rfc2217://127.0.0.1:{rfc2217_port}"),
                options=[
                    "--network=host",
                    *security_options(bridge),
                    *env_options(bridge),
                    *mount_options(bridge, volumes),
                ],
                log_path=tmp_path / "bridge.log",
            ) as bridge_name,
        ):
            wait_healthy(docker, gateway, gateway_health, "/readyz")
            wait_healthy(docker, bridge_name, bridge_health, bridge["startupProbe"]["httpGet"]["path"])
            if pod_security == {"runAsNonRoot": True}:
                # No uid anywhere: the bridge runs as its image's default user, never root...
                assert "runAsUser" not in bridge["securityContext"]
                uid = docker(
                    "exec", bridge_name, "python", "-c", "import os; print(os.getuid())"
                ).stdout.strip()
                assert uid == str(BRIDGE_IMAGE_UID)
            app_options = [
                f"--pid=container:{bridge_name}",
                # ...and the app's image has the same non-root user (as distroless 'nonroot' images do).
                *(
                    ["--user", f"{BRIDGE_IMAGE_UID}:{BRIDGE_IMAGE_UID}"]
                    if pod_security == {"runAsNonRoot": True}
                    else []
                ),
                *security_options(app),
                *env_options(app),
                *mount_options(app, volumes),
            ]
            tty_var = "$KUBESERIAL_PRINTER_TTY"
            script = (
                f'stty -F "{tty_var}" 57600 raw -echo && exec 3<>"{tty_var}"'
                " && printf ping-from-app >&3 && head -c 16 <&3"
            )
            with app_container(docker, images.busybox, app_options, script) as running_app:
                assert read_exactly(master, len(b"ping-from-app"), timeout=30) == b"ping-from-app"
                wait_for(
                    lambda: termios.tcgetattr(slave)[5] == termios.B57600,
                    timeout=10,
                    message="the app's 57600 baud on the device",
                )
                os.write(master, b"pong-from-device")
                out, err = running_app.communicate(timeout=30)
            assert running_app.returncode == 0, err
            assert out == "pong-from-device"
            if "runAsUser" in pod_security:
                # The warning the injector gives is true: another uid cannot open the tty.
                other_user = {**app, "securityContext": {"runAsUser": 2000, "runAsGroup": 2000}}
                stranger = [f"--pid=container:{bridge_name}", *security_options(other_user)]
                stranger += [*env_options(app), *mount_options(app, volumes)]
                with app_container(docker, images.busybox, stranger, f'exec 3<>"{tty_var}"') as other:
                    _, refused = other.communicate(timeout=60)
                assert other.returncode != 0 and "Permission denied" in refused, (
                    shlex.join(stranger) + refused
                )
    finally:
        os.close(master)
        os.close(slave)
