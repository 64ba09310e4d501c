"""Who may hold the device: one client session at a time. Pure decisions, no I/O."""

from dataclasses import dataclass
from enum import Enum


class Verdict(Enum):
    ADMIT = "admit"
    TAKE_OVER = "take_over"  # close the idle session, admit the newcomer
    REFUSE_BUSY = "busy"
    REFUSE_NO_DEVICE = "device_unavailable"


def admission(
    *, device_open: bool, session_idle_for: float | None, allow_takeover: bool, takeover_idle_seconds: float
) -> Verdict:
    """Decide about a new client.

    `session_idle_for` is None when no session is open, else the seconds since the open session last
    moved a byte in either direction. A session that only listens (a GPS streaming to its client)
    is not idle: taking it over would cut off a live stream.
    """
    if not device_open:
        return Verdict.REFUSE_NO_DEVICE
    if session_idle_for is None:
        return Verdict.ADMIT
    if allow_takeover and session_idle_for >= takeover_idle_seconds:
        return Verdict.TAKE_OVER
    return Verdict.REFUSE_BUSY


def describe_peer(peername: object, *, protocol: str) -> str:
    """`10.0.0.7:51234 (rfc2217)` from a socket's peername (IPv4 or IPv6 tuple)."""
    if isinstance(peername, tuple) and len(peername) >= 2:
        host, port = peername[0], peername[1]
        address = f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    else:
        address = str(peername or "unknown")
    return f"{address} ({protocol})"


@dataclass
class RequestBudget:
    """How many telnet subnegotiations (RFC 2217 requests, signature queries) a session may send: a
    token bucket, `burst` at once and `per_second` after that. Real clients send a handful when they
    open the port and a few per second after (settings, DTR/RTS, modem polls); a flood costs the
    gateway CPU for every one and starves its other work (health, the device), so it ends the session."""

    per_second: float = 500.0
    burst: float = 5000.0
    tokens: float = -1.0  # full at first use
    last: float = 0.0

    def spend(self, count: int, *, now: float) -> bool:
        """Take `count`; False when the session has gone over its budget."""
        if self.tokens < 0:
            self.tokens, self.last = self.burst, now
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.per_second)
        self.last = now
        self.tokens -= count
        return self.tokens >= 0
