"""kubectl serial's pure parts: the exit key, telnet bytes, the tables and the clear errors."""

import os
import pty
import termios

import pytest
from kubeserial_kubectl import terminal, views
from kubeserial_kubectl.__main__ import main, parser


def port(node: str, devnode: str, serial: str | None = "A1", device: str | None = None) -> dict[str, object]:
    spec = {
        "nodeName": node,
        "idVendor": "0403",
        "idProduct": "6001",
        "devnode": devnode,
        "devicePath": devnode,
    }
    if serial:
        spec["serialNumber"] = serial
    return {"metadata": {"name": f"{node}-abc{devnode[-1]}"}, "spec": spec, "status": {"device": device}}


def device(**conditions: tuple[str, str, str]) -> dict[str, object]:
    conds = [{"type": t, "status": s, "reason": r, "message": m} for t, (s, r, m) in conditions.items()]
    return {"metadata": {"name": "ender3"}, "spec": {}, "status": {"conditions": conds}}


def test_the_exit_key_ends_the_session_and_what_came_before_is_sent() -> None:
    assert terminal.split_at_exit(b"M105\r") == (b"M105\r", False)
    assert terminal.split_at_exit(b"ab\x1dcd") == (b"ab", True)


def test_baud_rate_request_and_telnet_filtering() -> None:
    assert terminal.set_baud_rate(115200) == bytes([255, 251, 44, 255, 250, 44, 1, 0, 1, 194, 0, 255, 240])
    assert terminal.escape_iac(b"\xff") == b"\xff\xff"
    telnet = terminal.TelnetFilter()
    assert telnet.feed(bytes([255, 251, 44, 255, 250, 44, 101, 0, 1, 194])) == b""
    assert telnet.feed(bytes([0, 255, 240]) + b"ok\xff\xff") == b"ok\xff"


def test_raw_terminal_is_restored_on_an_exception_and_on_exit() -> None:
    parent, child = pty.openpty()
    try:
        before = termios.tcgetattr(child)
        for ending in (RuntimeError("boom"), SystemExit(143)):
            with pytest.raises(type(ending)), terminal.raw_terminal(child):
                assert termios.tcgetattr(child) != before  # raw inside
                raise ending
            assert termios.tcgetattr(child) == before
    finally:
        os.close(parent)
        os.close(child)


def test_ls_lists_ports_with_their_devices() -> None:
    text = views.ls_table([port("node-b", "/dev/ttyUSB0"), port("node-a", "/dev/ttyUSB1", None, "gps")])
    lines = text.splitlines()
    assert lines[0].split()[:5] == ["NODE/PORT", "VENDOR:PRODUCT", "SERIAL", "MODEL", "DEVICE"]
    assert lines[1].split()[:5] == ["node-a/ttyUSB1", "0403:6001", "-", "-", "gps"]
    assert lines[2].startswith("node-b/ttyUSB0")


def test_adopt_finds_the_port_and_copies_its_ids() -> None:
    ports = [port("node-a", "/dev/ttyUSB0"), port("node-b", "/dev/ttyUSB0", "B2")]
    found = views.find_port(ports, "node-b/ttyUSB0")
    body = views.device_for_port(found, name="ender3", manager="octoprint", baud=None)
    assert body["spec"] == {
        "idVendor": "0403",
        "idProduct": "6001",
        "serialNumber": "B2",
        "manager": "octoprint",
    }
    with pytest.raises(views.UserError, match="no adapter 'ttyUSB9' on node node-a"):
        views.find_port(ports, "node-a/ttyUSB9")


def test_console_refusals_say_why() -> None:
    assert views.console_refusal(None, "x") == "unknown device 'x'; `kubectl get serialdevices` lists them"
    gone = device(Available=("False", "DeviceUnavailable", ""))
    assert "is not available (DeviceUnavailable)" in str(views.console_refusal(gone, "ender3"))
    busy = device(
        Available=("True", "DeviceAvailable", ""), Free=("False", "InUse", "session open from 10.0.0.7:5123")
    )
    assert views.console_refusal(busy, "ender3") == "device 'ender3' is busy, held by 10.0.0.7:5123"
    free = device(Available=("True", "DeviceAvailable", ""), Free=("True", "NoSession", ""))
    assert views.console_refusal(free, "ender3") is None


@pytest.mark.parametrize("command", ["ls", "adopt", "console", "status"])
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: kubectl serial" in capsys.readouterr().out


def test_unreadable_kubeconfig_is_a_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--kubeconfig", "/nonexistent/kubeconfig", "ls"]) == 1
    assert capsys.readouterr().err.startswith("error: ")
