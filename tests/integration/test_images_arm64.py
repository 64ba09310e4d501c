"""The arm64 images run: each is built for linux/arm64 (hack/images/build.sh with
KUBESERIAL_ARCHS=arm64, offline) and started on this amd64 host under qemu-user-static
(hack/images/binfmt.sh registers qemu-aarch64 for the module and removes it afterwards). For each:
the image says arm64, the kernel reports aarch64 inside it, its Python is an AArch64 ELF, `--help`
exits 0, and the service answers its health endpoint; the gateway also moves bytes from a pty.

Builds are cached (base rootfs by recipe hash, wheels by requirements, docker layers): a warm build
takes seconds; a cold one about 10 minutes on 2 busy cores. Everything runs slower under emulation,
so health waits are longer here than in test_images.py."""

import os
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from kubeserial_common.core import gatewayargs as ga
from kubeserial_testing import pki
from kubeserial_testing.controlplane import REPO_ROOT, ControlPlane, free_port
from kubeserial_testing.docker import (
    SERVICES,
    BuiltImages,
    Docker,
    engine_for_tests,
    parse_build_output,
    running_container,
    wait_healthy,
)
from kubeserial_testing.services import SYSTEM_NAMESPACE, apply_rbac, namespace_of, wait_for
from kubeserial_testing.ttyio import read_exactly

pytestmark = [pytest.mark.docker, pytest.mark.controlplane, pytest.mark.timeout(2400)]
HACK_IMAGES = REPO_ROOT / "hack" / "images"
NAMESPACE = "kubeserial"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
EMULATED_START = 240.0  # seconds: Python under qemu imports a few times slower
EM_AARCH64 = 183  # ELF e_machine


@pytest.fixture(scope="module")
def docker() -> Iterator[Docker]:
    yield from engine_for_tests()


@pytest.fixture(scope="module")
def emulation() -> Iterator[None]:
    subprocess.run([str(HACK_IMAGES / "binfmt.sh"), "up"], check=True)
    try:
        yield
    finally:
        subprocess.run([str(HACK_IMAGES / "binfmt.sh"), "down"], check=True)


@pytest.fixture(scope="module")
def images(docker: Docker, emulation: None) -> BuiltImages:
    build = subprocess.run(
        [str(HACK_IMAGES / "build.sh")],
        capture_output=True,
        text=True,
        env={**docker.env, "KUBESERIAL_ARCHS": "arm64"},
        timeout=2000,
    )
    assert build.returncode == 0, f"build.sh failed:\n{build.stdout}\n{build.stderr}"
    built = parse_build_output(build.stdout)
    assert set(built.services) == set(SERVICES)
    assert all(tag.endswith(":latest-arm64") for tag in built.services.values())
    return built


@pytest.mark.parametrize("service", SERVICES)
def test_image_is_arm64_and_runs_under_emulation(docker: Docker, images: BuiltImages, service: str) -> None:
    tag = images.services[service]
    assert docker("image", "inspect", "-f", "{{.Os}}/{{.Architecture}}", tag).stdout.strip() == "linux/arm64"
    machine = docker(
        "run", "--rm", "--network=none", "--platform=linux/arm64", "--entrypoint", "uname", tag, "-m"
    )
    assert machine.stdout.strip() == "aarch64"
    elf = docker(
        "run", "--rm", "--network=none", "--platform=linux/arm64", "--entrypoint", "python", tag, "-c",
        "import os, struct, sys; header = open(os.path.realpath(sys.executable), 'rb').read(20);"
        " print(header[:4] == b'\\x7fELF', struct.unpack('<H', header[18:20])[0])",
    )  # fmt: skip
    assert elf.stdout.split() == ["True", str(EM_AARCH64)]
    shown = docker("run", "--rm", "--network=none", "--platform=linux/arm64", tag, "--help", check=False)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage: ")


def cluster_options(control_plane: ControlPlane, component: str, directory: Path) -> list[str]:
    """In-cluster configuration as in a pod (see test_images.py), host network, read-only root."""
    config = yaml.safe_load(apply_rbac(control_plane, component).read_text())
    account = directory / f"{component}-serviceaccount"
    account.mkdir()
    (account / "token").write_text(config["users"][0]["user"]["token"])
    (account / "ca.crt").write_bytes(control_plane.ca_file.read_bytes())
    (account / "namespace").write_text(namespace_of(component))
    for file in account.iterdir():
        file.chmod(0o644)
    return [
        "--network=host", "--read-only", "--platform=linux/arm64",
        "-v", f"{account}:{SERVICE_ACCOUNT_DIR}:ro",
        "-e", "KUBERNETES_SERVICE_HOST=127.0.0.1",
        "-e", f"KUBERNETES_SERVICE_PORT={control_plane.ports['apiserver']}",
    ]  # fmt: skip


@contextmanager
def healthy(
    docker: Docker, image: str, args: list[str], *, options: list[str], log_path: Path
) -> Iterator[None]:
    health_port = free_port()
    with running_container(
        docker, image, [*args, "--health-port", str(health_port)], options=options, log_path=log_path
    ) as name:
        wait_healthy(docker, name, health_port, "/healthz", timeout=EMULATED_START)
        wait_healthy(docker, name, health_port, "/readyz", timeout=EMULATED_START)
        yield


def test_gateway_arm64_serves_a_pty(docker: Docker, images: BuiltImages, tmp_path: Path) -> None:
    master, slave = os.openpty()
    raw_port = free_port()
    serve = [
        "serve",
        "--device",
        "/dev/ttyUSB0",
        "--raw-port",
        str(raw_port),
        "--rfc2217-port",
        str(free_port()),
        ga.TEST_ALLOW_ANY_TTY,  # a pty is no USB tty
    ]
    try:
        with (
            healthy(
                docker,
                images.services["gateway"],
                serve,
                options=[
                    "--network=host",
                    "--platform=linux/arm64",
                    "--user=0:0",  # `serve` runs as root by its Deployment; the image's default is 65532
                    "-v",
                    f"{os.ttyname(slave)}:/dev/ttyUSB0",
                ],
                log_path=tmp_path / "gateway.log",
            ),
            socket.create_connection(("127.0.0.1", raw_port), timeout=30) as client,
        ):
            client.sendall(b"arm64")
            assert read_exactly(master, 5) == b"arm64"
    finally:
        os.close(master)
        os.close(slave)


def test_monitor_arm64_renews_its_node_lease(
    docker: Docker, images: BuiltImages, control_plane: ControlPlane, tmp_path: Path
) -> None:
    node = f"arm-node-{os.urandom(3).hex()}"
    control_plane.register_node(node)
    lease = f"kubeserial-monitor-{node}"
    try:
        with healthy(
            docker,
            images.services["monitor"],
            ["--node-name", node],
            options=cluster_options(control_plane, "monitor", tmp_path),
            log_path=tmp_path / "monitor.log",
        ):
            wait_for(
                lambda: (
                    control_plane.kubectl("get", "lease", lease, "-n", NAMESPACE, check=False).returncode == 0
                ),
                timeout=EMULATED_START,
                message=f"Lease {lease} from the arm64 monitor",
            )
    finally:
        control_plane.kubectl("delete", "lease", lease, "-n", NAMESPACE, check=False)
        control_plane.kubectl("delete", "node", node, "--wait=false", check=False)


def test_controller_arm64_becomes_leader(
    docker: Docker, images: BuiltImages, control_plane: ControlPlane, tmp_path: Path
) -> None:
    lease = f"arm-controller-{os.urandom(3).hex()}"
    try:
        with healthy(
            docker,
            images.services["controller"],
            ["--leader-election-id", lease],
            options=cluster_options(control_plane, "controller", tmp_path),
            log_path=tmp_path / "controller.log",
        ):
            holder = ("get", "lease", lease, "-n", SYSTEM_NAMESPACE, "-o", "jsonpath={.spec.holderIdentity}")
            wait_for(
                lambda: control_plane.kubectl(*holder, check=False).stdout,
                timeout=EMULATED_START,
                message=f"Lease {lease} held by the arm64 controller",
            )
    finally:
        control_plane.kubectl("delete", "lease", lease, "-n", SYSTEM_NAMESPACE, check=False)


def test_injector_arm64_serves_tls(
    docker: Docker, images: BuiltImages, control_plane: ControlPlane, tmp_path: Path
) -> None:
    ca_pair, ca_key, ca_cert = pki.make_ca()
    certs = tmp_path / "certs"
    certs.mkdir()
    _, key_file = pki.issue(
        ca_key, ca_cert, common_name="kubeserial-injector", dns_names=("localhost",),
        ip_addresses=("127.0.0.1",), server=True,
    ).write(certs, "tls")  # fmt: skip
    key_file.chmod(0o644)
    port = free_port()
    with healthy(
        docker,
        images.services["injector"],
        ["--cert-mode", "files", "--tls-cert-file", "/certs/tls.crt", "--tls-key-file", "/certs/tls.key",
         "--port", str(port)],
        options=[*cluster_options(control_plane, "injector", tmp_path), "-v", f"{certs}:/certs:ro"],
        log_path=tmp_path / "injector.log",
    ):  # fmt: skip
        context = ssl.create_default_context(cadata=ca_pair.cert_pem.decode())
        with (
            socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
            context.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            peer = tls.getpeercert()
            assert peer is not None and peer["subject"] == ((("commonName", "kubeserial-injector"),),)
