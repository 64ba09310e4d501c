"""Every service runs its informers, workers, servers and leases under one process runner: when one of
them dies unexpectedly the process must not limp on behind a ready probe. Each service is started for
real with a test-only fault (KUBESERIAL_TEST_FAULT=<runnable>) that makes one runnable raise, and
must exit non-zero with a log line naming that runnable and the error. Each service's whole log, from
start to crash, is parsed: one JSON object per line with event, level and timestamp."""

import json
import subprocess
from pathlib import Path

import pytest

from kubeserial_common.core import gatewayargs as ga
from kubeserial_common.runtime.runner import FAULT_AFTER_ENV, FAULT_ENV
from kubeserial_testing import pki
from kubeserial_testing.controlplane import ControlPlane, free_port
from kubeserial_testing.probes import assert_json_logs, is_ready
from kubeserial_testing.services import apply_rbac, service_process, wait_for
from kubeserial_testing.umockdev import SimulatedUsb

FAULT_AFTER = "3"  # long enough for the service to get going (caches synced, serving)


def fault(runnable: str) -> dict[str, str]:
    return {FAULT_ENV: runnable, FAULT_AFTER_ENV: FAULT_AFTER}


def health_args(port: int) -> list[str]:
    return ["--health-host", "127.0.0.1", "--health-port", str(port)]


def assert_crashed(
    proc: "subprocess.Popen[bytes]", log_path: Path, *, runnable: str, health_port: int
) -> None:
    wait_for(lambda: proc.poll() is not None or is_ready(health_port), timeout=60, message="started")
    wait_for(lambda: proc.poll() is not None, timeout=60, message=f"the fault in {runnable} ends the process")
    log = log_path.read_text(errors="replace")
    assert proc.returncode == 1, log[-4000:]
    # Every line of the log, the crash's traceback included, is one JSON object (event, level, timestamp).
    assert_json_logs(log_path)
    lines = [json.loads(line) for line in log.splitlines()]
    failed = [line for line in lines if line.get("event") == "runnable failed; stopping"]
    assert failed, log[-4000:]
    assert failed[0]["runnable"] == runnable
    assert f"fault injected into {runnable}" in failed[0]["error"] and "InjectedFault" in failed[0]["error"]


@pytest.mark.controlplane
def test_controller_exits_when_its_informers_die(control_plane: ControlPlane, tmp_path: Path) -> None:
    kubeconfig = apply_rbac(control_plane, "controller")
    port, log_path = free_port(), tmp_path / "controller.log"
    args = ["--gateway-image", "kubeserial/gateway:under-test", *health_args(port)]
    with service_process(
        "kubeserial_controller", args, kubeconfig=kubeconfig, log_path=log_path, env=fault("informers")
    ) as proc:
        assert_crashed(proc, log_path, runnable="informers", health_port=port)


@pytest.mark.controlplane
@pytest.mark.umockdev
def test_monitor_exits_when_its_port_workers_die(control_plane: ControlPlane, tmp_path: Path) -> None:
    kubeconfig = apply_rbac(control_plane, "monitor")
    port, log_path = free_port(), tmp_path / "monitor.log"
    args = ["--node-name", "crash-node", *health_args(port)]
    with (
        SimulatedUsb(tmp_path / "usb") as usb,
        service_process(
            "kubeserial_monitor",
            args,
            kubeconfig=kubeconfig,
            log_path=log_path,
            env={**usb.env, **fault("port-workers")},
        ) as proc,
    ):
        assert_crashed(proc, log_path, runnable="port-workers", health_port=port)


@pytest.mark.controlplane
def test_injector_exits_when_its_device_informer_dies(control_plane: ControlPlane, tmp_path: Path) -> None:
    """The case that motivated the runner: the webhook kept answering from a dead informer's cache."""
    kubeconfig = apply_rbac(control_plane, "injector")
    _, ca_key, ca_cert = pki.make_ca("crash-test-ca")
    cert_file, key_file = pki.issue(
        ca_key, ca_cert, common_name="kubeserial-injector", ip_addresses=("127.0.0.1",), server=True
    ).write(tmp_path, "tls")
    port, log_path = free_port(), tmp_path / "injector.log"
    args = ["--host", "127.0.0.1", "--port", str(free_port()), *health_args(port)]
    args += ["--cert-mode", "files", "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file)]
    with service_process(
        "kubeserial_injector", args, kubeconfig=kubeconfig, log_path=log_path, env=fault("devices")
    ) as proc:
        assert_crashed(proc, log_path, runnable="devices", health_port=port)


def test_gateway_exits_when_its_device_loop_dies(tmp_path: Path) -> None:
    port, log_path = free_port(), tmp_path / "gateway.log"
    args = ["serve", "--device", str(tmp_path / "no-such-tty"), "--listen-host", "127.0.0.1"]
    args += ["--raw-port", str(free_port()), "--rfc2217-port", str(free_port()), *health_args(port)]
    args.append(ga.TEST_ALLOW_ANY_TTY)  # the path is no USB device path: get past the shape check
    with service_process(
        "kubeserial_gateway",
        args,
        kubeconfig=tmp_path / "unused-kubeconfig",
        log_path=log_path,
        env=fault("keep_device_open"),
    ) as proc:
        assert_crashed(proc, log_path, runnable="keep_device_open", health_port=port)


def test_bridge_exits_when_its_connection_loop_dies(tmp_path: Path) -> None:
    port, log_path = free_port(), tmp_path / "bridge.log"
    args = ["bridge", "--url", f"rfc2217://127.0.0.1:{free_port()}", "--link", str(tmp_path / "tty")]
    args += health_args(port)
    with service_process(
        "kubeserial_gateway",
        args,
        kubeconfig=tmp_path / "unused-kubeconfig",
        log_path=log_path,
        env=fault("connect"),
    ) as proc:
        assert_crashed(proc, log_path, runnable="connect", health_port=port)
