"""The project's own container engine for tests: start it, build the images, run containers.

dockerd runs with no bridge network (hack/docker-up.sh), so containers use `--network=host` (or
none) and reach the test control plane on loopback. Nothing is pulled: hack/images/build.sh makes
the base images locally and builds the service images offline.
"""

import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from kubeserial_testing.controlplane import REPO_ROOT
from kubeserial_testing.probes import http_get

HACK = REPO_ROOT / "hack"
SERVICES = ("controller", "monitor", "gateway", "injector")


@dataclass(frozen=True)
class Docker:
    """The docker CLI pointed at the project's dockerd."""

    cli: str
    env: dict[str, str]

    def __call__(
        self, *args: str, check: bool = True, timeout: float = 120.0
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.cli, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"docker {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
            )
        return result

    def answering(self) -> bool:
        return self("version", "--format", "{{.Server.Version}}", check=False, timeout=30).returncode == 0


def docker_env() -> dict[str, str]:
    """The environment hack/docker-env.sh sets up (DOCKER_HOST, KUBESERIAL_DOCKER_CLI, ...)."""
    out = subprocess.run(
        ["bash", "-c", f"source {HACK / 'docker-env.sh'} && env -0"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    return dict(entry.split("=", 1) for entry in out.split("\0") if "=" in entry)


def start_engine() -> tuple[Docker, bool]:
    """Start the project's dockerd if needed; returns the CLI and whether this call started it."""
    env = docker_env()
    docker = Docker(cli=env["KUBESERIAL_DOCKER_CLI"], env=env)
    if docker.answering():
        return docker, False
    up = subprocess.run([str(HACK / "docker-up.sh")], capture_output=True, text=True, env=env, timeout=600)
    if up.returncode != 0:
        raise AssertionError(f"hack/docker-up.sh failed ({up.returncode}):\n{up.stdout}\n{up.stderr}")
    return docker, True


def stop_engine(docker: Docker) -> None:
    subprocess.run([str(HACK / "docker-down.sh")], env=docker.env, check=True, timeout=120)


def engine_for_tests() -> Iterator[Docker]:
    """Body of a test fixture: the engine for the fixture's scope, stopped after it only if this
    started it (a developer's running dockerd stays up)."""
    docker, started = start_engine()
    yield docker
    if started:
        stop_engine(docker)


@dataclass(frozen=True)
class BuiltImages:
    base: str
    busybox: str
    services: dict[str, str] = field(default_factory=dict)


def build_images(docker: Docker, services: Sequence[str] = SERVICES, *, timeout: float = 1500) -> BuiltImages:
    """hack/images/build.sh (cached: seconds when nothing changed; a few minutes from cold)."""
    build = subprocess.run(
        [str(HACK / "images" / "build.sh"), *services],
        capture_output=True,
        text=True,
        env=docker.env,
        timeout=timeout,
    )
    if build.returncode != 0:
        raise AssertionError(
            f"hack/images/build.sh failed ({build.returncode}):\n{build.stdout}\n{build.stderr}"
        )
    return parse_build_output(build.stdout)


def parse_build_output(stdout: str) -> BuiltImages:
    """`BASE_IMAGE=...`, `BUSYBOX_IMAGE=...`, then one `kubeserial/<svc>:<tag> <id> <size> <secs>` a line."""
    values: dict[str, str] = {}
    built: dict[str, str] = {}
    for line in stdout.splitlines():
        if "=" in line and " " not in line:
            key, value = line.split("=", 1)
            values[key] = value
        elif line.startswith("kubeserial/"):
            tag = line.split()[0]
            built[tag.split("/", 1)[1].split(":", 1)[0]] = tag
    return BuiltImages(base=values["BASE_IMAGE"], busybox=values["BUSYBOX_IMAGE"], services=built)


def unique_name(purpose: str) -> str:
    return f"kubeserial-test-{purpose}-{uuid.uuid4().hex[:8]}"


@contextmanager
def running_container(
    docker: Docker, image: str, args: Sequence[str], *, options: Sequence[str] = (), log_path: Path
) -> Iterator[str]:
    """`docker run -d`; on exit it is stopped (SIGTERM first, so it can release what it holds), its
    output goes to log_path and the container is removed."""
    name = unique_name(image.split("/")[-1].split(":")[0])
    docker("run", "-d", "--name", name, *options, image, *args)
    try:
        yield name
    finally:
        docker("stop", "--time", "10", name, check=False)
        logs = docker("logs", name, check=False)
        log_path.write_text(logs.stdout + logs.stderr)
        docker("rm", "-f", name, check=False)


def container_running(docker: Docker, name: str) -> bool:
    state = docker("inspect", "-f", "{{.State.Running}}", name, check=False)
    return state.stdout.strip() == "true"


def wait_healthy(docker: Docker, name: str, port: int, path: str, *, timeout: float = 60.0) -> None:
    """Wait until GET 127.0.0.1:port/path answers 200 while the container keeps running (host
    network); fail with its logs."""
    deadline = time.monotonic() + timeout
    status = 0
    while time.monotonic() < deadline:
        status = http_get(port, path)[0]
        if status == 200:
            return
        if not container_running(docker, name):
            break
        time.sleep(0.2)
    logs = docker("logs", name, check=False)
    raise AssertionError(
        f"{path} on port {port} answered {status or 'nothing'} (running: {container_running(docker, name)})\n"
        f"{logs.stdout}{logs.stderr}"
    )
