"""The gateway's presence check: stat of the path now against stat of the path at open."""

import os
import pty
import socket
from pathlib import Path

from kubeserial_gateway.device import DeviceIdentity, identity_of, same_device
from kubeserial_gateway.keepalive import KEEPALIVE, Keepalive, enable_keepalive


def test_a_link_to_a_pty_is_the_same_device_while_it_points_there(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    try:
        link = tmp_path / "by-id"
        link.symlink_to(os.ttyname(slave))
        opened = identity_of(str(link))
        # The fd of a pty-backed device reports the pty; the identity never compares against it.
        assert same_device(opened, identity_of(str(link)))
    finally:
        os.close(master)
        os.close(slave)


def test_a_link_rewritten_to_another_tty_is_another_device(tmp_path: Path) -> None:
    first, first_slave = pty.openpty()
    second, second_slave = pty.openpty()
    try:
        link = tmp_path / "by-id"
        link.symlink_to(os.ttyname(first_slave))
        opened = identity_of(str(link))
        replacement = tmp_path / "new"
        replacement.symlink_to(os.ttyname(second_slave))
        os.replace(replacement, link)  # how udev rewrites a link: atomically
        assert not same_device(opened, identity_of(str(link)))
    finally:
        for fd in (first, first_slave, second, second_slave):
            os.close(fd)


def test_same_number_under_another_node_is_another_device() -> None:
    assert not same_device(
        DeviceIdentity(rdev=1, node="/dev/ttyUSB0"), DeviceIdentity(rdev=1, node="/dev/ttyUSB1")
    )
    assert not same_device(
        DeviceIdentity(rdev=1, node="/dev/ttyUSB0"), DeviceIdentity(rdev=2, node="/dev/ttyUSB0")
    )


def test_keepalive_bound_and_options() -> None:
    assert Keepalive(idle_seconds=5, interval_seconds=2, probes=3).dead_after_seconds == 11
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        enable_keepalive(sock)
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == KEEPALIVE.idle_seconds
        assert (
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT)
            == KEEPALIVE.dead_after_seconds * 1000
        )
