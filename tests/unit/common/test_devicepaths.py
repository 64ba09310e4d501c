"""Which device paths KubeSerial serves (kubeserial_common.core.devicepaths) and the models' check."""

import re
import subprocess

import pytest
from pydantic import ValidationError

from kubeserial_common.core import devicepaths as dp
from kubeserial_common.core import gatewayargs as ga
from kubeserial_common.core.models import SerialDevice, SerialPort, SerialPortSpec
from kubeserial_common.crdgen import crd_for
from kubeserial_testing.controlplane import REPO_ROOT

GOOD = [
    "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_A50285BI-if00-port0",
    "/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0",
    "/dev/serial/by-path/platform-3f980000.usb-usb-0:1.2:1.0-port0",
    "/dev/ttyUSB0",
    "/dev/ttyACM12",
    "/dev/ttyCH343USB0",
    "/dev/ttyXRUSB1",
]
BAD = [
    "/dev/ttyS0",
    "/dev/ttyAMA0",
    "/dev/ttyGS0",
    "/dev/pts/3",
    "/dev/mem",
    "/dev/sda",
    "/dev/ttyUSB",
    "/dev/ttyUSB0/../ttyS0",
    "/dev/serial/by-id/..",
    "/dev/serial/by-id/../../ttyS0",
    "/dev/serial/by-id/.hidden",
    "/dev/serial/by-id/a/b",
    "/dev/serial/by-id/",
    "/tmp/ttyUSB0",
    "dev/ttyUSB0",
    "/dev/ttyUSB0\n",
]


@pytest.mark.parametrize("path", GOOD)
def test_usb_serial_paths_are_accepted(path: str) -> None:
    assert dp.device_path_problem(path, field="devicePath") is None


@pytest.mark.parametrize("path", BAD)
def test_anything_else_is_refused_naming_the_field(path: str) -> None:
    problem = dp.device_path_problem(path, field="spec.devicePath")
    assert problem is not None and problem.startswith("spec.devicePath: ") and "ttyUSB<n>" in problem


def test_devnodes_are_kernel_names_only() -> None:
    assert dp.devnode_problem("/dev/ttyACM0", field="devnode") is None
    assert dp.devnode_problem("/dev/serial/by-id/usb-x", field="devnode") is not None
    assert dp.is_usb_tty_name("ttyUSB3") and not dp.is_usb_tty_name("ttyS3")


def test_the_models_refuse_a_serial_port_on_a_mainboard_uart() -> None:
    spec = {"nodeName": "node-a", "idVendor": "0403", "idProduct": "6001"}
    SerialPortSpec.model_validate({**spec, "devnode": "/dev/ttyUSB0", "devicePath": "/dev/ttyUSB0"})
    with pytest.raises(ValidationError, match="devicePath: '/dev/ttyS0' is not a USB serial device path"):
        SerialPortSpec.model_validate({**spec, "devnode": "/dev/ttyUSB0", "devicePath": "/dev/ttyS0"})


def test_the_gateways_test_only_switch_is_never_shipped() -> None:
    """`--test-allow-any-tty` exists for tests that serve a pty; no producer emits it and no shipped
    manifest sets it."""
    assert (
        ga.TEST_ALLOW_ANY_TTY
        not in ga.ServeArgs(device="/dev/ttyUSB0", device_name="x", baud_rate=9600).argv()
    )
    overlays = sorted(p for p in (REPO_ROOT / "deploy" / "kustomize" / "overlays").iterdir() if p.is_dir())
    assert overlays
    for overlay in overlays:
        rendered = subprocess.run(
            ["kubectl", "kustomize", str(overlay)], check=True, capture_output=True, text=True
        ).stdout
        assert ga.TEST_ALLOW_ANY_TTY not in rendered, overlay.name


def test_a_link_name_is_at_most_name_max_long() -> None:
    longest_name = "a" * 255  # NAME_MAX
    assert dp.device_path_problem(f"/dev/serial/by-path/{longest_name}", field="f") is None
    assert dp.device_path_problem(f"/dev/serial/by-id/{longest_name}", field="f") is None
    for prefix in ("/dev/serial/by-path/", "/dev/serial/by-id/"):
        too_long = f"{prefix}{longest_name}b"
        assert dp.device_path_problem(too_long, field="spec.devicePath") is not None, prefix


def test_no_cel_rule_carries_a_device_path_regex() -> None:
    # kube-apiserver compiles a CEL rule's regexes at every evaluation, i.e. on every status write; a
    # {0,254} there made that 7.6 % of its CPU in a 10,000-device cold start. Device paths are OpenAPI
    # patterns (compiled once); what CEL is left on the two kinds written at every binding has no
    # counted repetition above 4.
    for resource in (SerialDevice, SerialPort):
        for rule in resource.cel_rules:
            counts = re.findall(r"\{(\d+),(\d+)\}", rule["rule"])
            assert all(int(high) <= 4 for _, high in counts), (resource.kind_name, rule)
            assert dp.DEVICE_PATH not in rule["rule"] and dp.DEVNODE not in rule["rule"]
    port = crd_for(SerialPort)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert port["properties"]["devicePath"]["pattern"] == dp.DEVICE_PATH
    assert port["properties"]["devnode"]["pattern"] == dp.DEVNODE
    device = crd_for(SerialDevice)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert device["status"]["properties"]["devicePath"]["pattern"] == dp.DEVICE_PATH
