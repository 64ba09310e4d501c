"""Dead-peer detection on gateway connections (bridge -> gateway, and the gateway's clients).

A node that loses power or its link sends no FIN: without this a bridge would wait on a silent
connection forever, and a gateway would keep a vanished client's session (the device stays busy).
TCP keepalive notices an idle dead peer; TCP_USER_TIMEOUT notices one while data is unacknowledged
(keepalive probes are not sent then). Both are kernel timers: no traffic while the peer answers.
"""

import contextlib
import socket
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class Keepalive:
    idle_seconds: int = 5
    interval_seconds: int = 2
    probes: int = 3

    @property
    def dead_after_seconds(self) -> int:
        """The longest a dead peer goes unnoticed, idle or with data in flight."""
        return self.idle_seconds + self.interval_seconds * self.probes


KEEPALIVE: Final = Keepalive()


def enable_keepalive(sock: socket.socket, settings: Keepalive = KEEPALIVE) -> None:
    """Best effort: a socket that refuses an option (not TCP, another OS) keeps working without it."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, settings.idle_seconds)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, settings.interval_seconds)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, settings.probes)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, settings.dead_after_seconds * 1000)
