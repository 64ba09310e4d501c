"""The chaos soak's machinery on a local gateway (bench/soak_real.py runs it on real nodes): records
flow both ways through a real gateway, a crash of the gateway loses records only across the
reconnect, and the report finds no violation."""

import time
from pathlib import Path

from kubeserial_testing.controlplane import free_port
from kubeserial_testing.pty_device import PtyDevice
from kubeserial_testing.pty_gateway import run_gateway
from kubeserial_testing.services import wait_for
from kubeserial_testing.soak import SoakReport
from kubeserial_testing.soak_ends import ClientEnd, DeviceEnd


def test_a_gateway_crash_loses_records_only_across_the_reconnect(tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port())
    device_end = DeviceEnd()
    client = ClientEnd(["socat", "-b65536", "-", f"TCP:127.0.0.1:{ports[0]},nodelay"])
    with PtyDevice(tmp_path / "ttyUSB-soak") as device:
        device_end.attach(device.master)
        device_end.start()
        try:
            with run_gateway(device.link, log_path=tmp_path / "gateway-1.log", ports=ports) as gateway:
                client.start()
                wait_for(
                    lambda: client.check.delivered > 100 and device_end.check.delivered > 100,
                    message="records both ways",
                )
                assert client.session_up
                gateway.proc.kill()  # no goodbye: what is in flight is lost
                crashed = time.monotonic()
            wait_for(lambda: not client.session_up, message="the client saw the session end")
            with run_gateway(device.link, log_path=tmp_path / "gateway-2.log", ports=ports):
                wait_for(
                    lambda: client.check.last_time > crashed + 1 and device_end.check.last_time > crashed + 1,
                    timeout=30,
                    message="records both ways again",
                )
        finally:
            client.stop()
            device_end.attach(None)
            device_end.stop()
    report = SoakReport(
        seconds=0,
        faults=[],
        directions=[client.check, device_end.check],
        reconnects=client.reconnects,
        binding_violations=[],
        free_violation_spans=[],
        free_bound=0,
        converge_bound=0,
    )
    assert report.violations() == []
    assert len(client.reconnects) >= 2
    print(report.summary()["directions"])
