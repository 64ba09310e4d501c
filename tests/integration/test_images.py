"""Every service image builds offline (hack/images/build.sh, the project's own dockerd) and its
service starts in a real container: `--help` exits 0 and its health endpoint answers. Containers
use --network=host (the engine has no bridge network) and reach the test control plane on loopback
with their component's ServiceAccount token, so the shipped RBAC is exercised from inside too."""

import os
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from kubeserial_common.core import gatewayargs as ga
from kubeserial_testing import pki
from kubeserial_testing.controlplane import ControlPlane, free_port
from kubeserial_testing.docker import (
    SERVICES,
    BuiltImages,
    Docker,
    build_images,
    engine_for_tests,
    running_container,
    wait_healthy,
)
from kubeserial_testing.services import SYSTEM_NAMESPACE, apply_rbac, namespace_of, wait_for
from kubeserial_testing.ttyio import read_exactly

# Setup of the first test may build the images from cold (a few minutes); warm it takes seconds.
pytestmark = [pytest.mark.docker, pytest.mark.controlplane, pytest.mark.timeout(1500)]
NAMESPACE = "kubeserial"
# What each Dockerfile runs as; the manifests set the same (the gateway's `serve` needs the device).
EXPECTED_USER = {
    "controller": "65532:65532",
    "injector": "65532:65532",
    "monitor": "65534:65534",
    "gateway": "65532:65532",  # the bridge's default; `serve` runs as root by its Deployment
}
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    yield from engine_for_tests()


@pytest.fixture(scope="module")
def images(docker: Docker) -> BuiltImages:
    return build_images(docker)


def cluster_options(control_plane: ControlPlane, component: str, directory: Path) -> list[str]:
    """docker options for a service that talks to the test control plane the way it does in a pod:
    in-cluster configuration (the ServiceAccount token and CA mounted where the kubelet puts them,
    KUBERNETES_SERVICE_HOST/PORT), host network (the apiserver is on loopback), and a read-only
    root filesystem as in its manifest."""
    config = yaml.safe_load(apply_rbac(control_plane, component).read_text())
    account = directory / f"{component}-serviceaccount"
    account.mkdir()
    (account / "token").write_text(config["users"][0]["user"]["token"])
    (account / "ca.crt").write_bytes(control_plane.ca_file.read_bytes())
    (account / "namespace").write_text(namespace_of(component))
    for file in account.iterdir():
        file.chmod(0o644)  # readable by the image's non-root user, as the kubelet's projection is
    return [
        "--network=host",
        "--read-only",
        "-v", f"{account}:{SERVICE_ACCOUNT_DIR}:ro",
        "-e", "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "-e", f"KUBERNETES_SERVICE_PORT={control_plane.ports['apiserver']}",
    ]  # fmt: skip


@contextmanager
def healthy_service(
    docker: Docker, image: str, args: list[str], *, options: list[str], log_path: Path
) -> Iterator[None]:
    """The service's container on a free health port, once its /healthz and /readyz answer 200."""
    health_port = free_port()
    with running_container(
        docker, image, [*args, "--health-port", str(health_port)], options=options, log_path=log_path
    ) as name:
        wait_healthy(docker, name, health_port, "/healthz")
        wait_healthy(docker, name, health_port, "/readyz")
        yield


def test_app_image_has_no_python_and_no_socat(docker: Docker, images: BuiltImages) -> None:
    probe = docker(
        "run", "--rm", "--network=none", images.busybox, "sh", "-c",
        "for tool in python3 python socat; do command -v $tool && exit 1; done; stty --help 2>&1 | head -1",
    )  # fmt: skip
    assert probe.stdout.startswith("BusyBox")


@pytest.mark.parametrize("service", SERVICES)
def test_image_runs_the_service_as_its_user_without_build_tools(
    docker: Docker, images: BuiltImages, service: str
) -> None:
    tag = images.services[service]
    config = docker("image", "inspect", "-f", "{{json .Config.User}} {{json .Config.Entrypoint}}", tag)
    assert config.stdout.split() == [f'"{EXPECTED_USER[service]}"', f'["python","-m","kubeserial_{service}"]']
    # The runtime stage holds the venv only: no wheels, no pip.
    leftovers = docker(
        "run", "--rm", "--network=none", "--entrypoint", "sh", tag, "-c",
        "ls -d /wheels /src 2>/dev/null; python -m pip --version 2>/dev/null; true",
    )  # fmt: skip
    assert leftovers.stdout == ""


@pytest.mark.parametrize("service", SERVICES)
def test_help_exits_zero(docker: Docker, images: BuiltImages, service: str) -> None:
    shown = docker("run", "--rm", "--network=none", images.services[service], "--help", check=False)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: ")


def test_gateway_serves_a_pty_in_a_container(docker: Docker, images: BuiltImages, tmp_path: Path) -> None:
    """The device is a pty whose master the test holds; it reaches the container as a bind mount
    (--device does not work for ptys), read-only, in a read-only root filesystem, as root: how the
    controller's gateway Deployment runs it (read-only /dev from the host; test_desired pins it). A
    device node opens read-write on a read-only mount."""
    master, slave = os.openpty()
    raw_port = free_port()
    serve = ["serve", "--device", "/dev/ttyUSB0", "--raw-port", str(raw_port)]
    serve += ["--rfc2217-port", str(free_port()), ga.TEST_ALLOW_ANY_TTY]  # a pty is no USB tty
    try:
        with (
            healthy_service(
                docker,
                images.services["gateway"],
                serve,
                options=[
                    "--network=host",
                    "--user=0:0",
                    "--read-only",
                    "-v",
                    f"{os.ttyname(slave)}:/dev/ttyUSB0:ro",
                ],
                log_path=tmp_path / "gateway.log",
            ),
            socket.create_connection(("127.0.0.1", raw_port), timeout=10) as client,
        ):
            client.sendall(b"to-device")
            assert read_exactly(master, len(b"to-device")) == b"to-device"
            os.write(master, b"from-device")
            received = b""
            while len(received) < len(b"from-device"):
                received += client.recv(64)
            assert received == b"from-device"
    finally:
        os.close(master)
        os.close(slave)


def test_monitor_in_a_container_renews_its_node_lease(
    docker: Docker, images: BuiltImages, control_plane: ControlPlane, tmp_path: Path
) -> None:
    node = f"img-node-{os.urandom(3).hex()}"
    control_plane.register_node(node)
    lease = f"kubeserial-monitor-{node}"
    try:
        with healthy_service(
            docker,
            images.services["monitor"],
            ["--node-name", node],
            options=cluster_options(control_plane, "monitor", tmp_path),
            log_path=tmp_path / "monitor.log",
        ):
            lease_exists = ("get", "lease", lease, "-n", NAMESPACE)
            wait_for(
                lambda: control_plane.kubectl(*lease_exists, check=False).returncode == 0,
                message=f"Lease {lease} from the monitor container",
            )
    finally:
        control_plane.kubectl("delete", "lease", lease, "-n", NAMESPACE, check=False)
        control_plane.kubectl("delete", "node", node, "--wait=false", check=False)


def test_controller_in_a_container_becomes_leader(
    docker: Docker, images: BuiltImages, control_plane: ControlPlane, tmp_path: Path
) -> None:
    # Its own leader Lease, so it never competes with controllers that other tests run.
    lease = f"img-controller-{os.urandom(3).hex()}"
    try:
        with healthy_service(
            docker,
            images.services["controller"],
            ["--leader-election-id", lease],
            options=cluster_options(control_plane, "controller", tmp_path),
            log_path=tmp_path / "controller.log",
        ):
            # Ready means caches synced; leadership is acquired alongside, so wait for the Lease.
            holder = ("get", "lease", lease, "-n", SYSTEM_NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}")
            wait_for(
                lambda: control_plane.kubectl(*holder, check=False).stdout,
                message=f"Lease {lease} held by the controller container",
            )
    finally:
        control_plane.kubectl("delete", "lease", lease, "-n", SYSTEM_NAMESPACE, check=False)


def test_injector_in_a_container_serves_tls(
    docker: Docker, images: BuiltImages, control_plane: ControlPlane, tmp_path: Path
) -> None:
    """Certificate files mode (as with cert-manager), so the test touches no shared Secret."""
    ca_pair, ca_key, ca_cert = pki.make_ca()
    certs = tmp_path / "certs"
    certs.mkdir()
    _, key_file = pki.issue(
        ca_key, ca_cert, common_name="kubeserial-injector", dns_names=("localhost",),
        ip_addresses=("127.0.0.1",), server=True,
    ).write(certs, "tls")  # fmt: skip
    key_file.chmod(0o644)  # a throwaway key, readable by the image's non-root user
    port = free_port()
    with healthy_service(
        docker,
        images.services["injector"],
        ["--cert-mode", "files", "--tls-cert-file", "/certs/tls.crt", "--tls-key-file", "/certs/tls.key",
         "--port", str(port)],
        options=[*cluster_options(control_plane, "injector", tmp_path), "-v", f"{certs}:/certs:ro"],
        log_path=tmp_path / "injector.log",
    ):  # fmt: skip
        context = ssl.create_default_context(cadata=ca_pair.cert_pem.decode())
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            peer = tls.getpeercert()
            assert peer is not None and peer["subject"] == ((("commonName", "kubeserial-injector"),),)
