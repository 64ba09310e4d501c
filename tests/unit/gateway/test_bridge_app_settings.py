"""The bridge tells the application's tty settings from the gateway's even when the application
changes them between two polls: right before connecting, or while the gateway's reports arrive.
A real pty; the gateway's side is a transport that records what the bridge sends."""

import asyncio
import os
import termios
from collections.abc import AsyncIterator
from pathlib import Path
from typing import cast

import pytest

from kubeserial_common.runtime.promtext import Registry
from kubeserial_gateway.bridge import Bridge
from kubeserial_gateway.metrics import BridgeMetrics
from kubeserial_gateway.rfc2217 import SERVER_OFFSET, Cmd, com_port_message


class RecordingTransport:
    def __init__(self) -> None:
        self.sent = b""

    def write(self, data: bytes) -> None:
        self.sent += data


@pytest.fixture
async def bridge(tmp_path: Path) -> AsyncIterator[Bridge]:
    made = Bridge(
        host="127.0.0.1", port=2217, link=tmp_path / "tty", via_proc=False, metrics=BridgeMetrics(Registry())
    )
    made.open_pty()
    try:
        yield made
    finally:
        made.close()


def set_baud(fd: int, speed: int) -> None:
    attrs = termios.tcgetattr(fd)
    attrs[4] = attrs[5] = speed
    termios.tcsetattr(fd, termios.TCSANOW, attrs)


def connect(bridge: Bridge) -> RecordingTransport:
    transport = RecordingTransport()
    bridge.connected(cast(asyncio.Transport, transport))
    return transport


async def test_a_speed_set_just_before_the_connection_is_pushed_not_overwritten(bridge: Bridge) -> None:
    app = os.open(bridge.link, os.O_RDWR | os.O_NOCTTY)
    try:
        set_baud(app, termios.B57600)  # no poll ran since: only the connection can notice it
        transport = connect(bridge)
        assert bridge.app_configured
        assert com_port_message(Cmd.SET_BAUDRATE, 57600) in transport.sent
        assert com_port_message(Cmd.SET_BAUDRATE, 0) not in transport.sent  # no query: nothing to adopt
    finally:
        os.close(app)


async def test_a_speed_set_while_adopting_the_gateways_wins_over_its_report(bridge: Bridge) -> None:
    app = os.open(bridge.link, os.O_RDWR | os.O_NOCTTY)
    try:
        transport = connect(bridge)
        assert com_port_message(Cmd.SET_BAUDRATE, 0) in transport.sent  # asks for the gateway's
        set_baud(app, termios.B57600)  # the application, before the answer and before a poll
        bridge.from_gateway(com_port_message(Cmd.SET_BAUDRATE + SERVER_OFFSET, 9600))
        assert termios.tcgetattr(app)[5] == termios.B57600, "the gateway's 9600 overwrote the app's choice"
        bridge.poll_once()
        assert com_port_message(Cmd.SET_BAUDRATE, 57600) in transport.sent
    finally:
        os.close(app)


async def test_without_the_application_the_gateways_speed_is_adopted(bridge: Bridge) -> None:
    app = os.open(bridge.link, os.O_RDWR | os.O_NOCTTY)
    try:
        connect(bridge)
        bridge.from_gateway(com_port_message(Cmd.SET_BAUDRATE + SERVER_OFFSET, 9600))
        assert termios.tcgetattr(app)[5] == termios.B9600
        assert not bridge.app_configured
    finally:
        os.close(app)
