"""A tiny HTTP server for /healthz, /readyz and /metrics (Prometheus text format).

Each service runs one on its own port; it answers GETs only, and only these three paths.
The registry is prometheus_client's (the default: its global REGISTRY) or, for the per-device and
per-consumer processes, a kubeserial_common.runtime.promtext.Registry; prometheus_client is
imported only when it is the one served.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kubeserial_common.runtime.logs import get_logger

log = get_logger(__name__)

Check = Callable[[], bool]


def exposition(registry: Any) -> tuple[str, bytes]:
    """Content type and body of /metrics for either kind of registry (None: prometheus_client's)."""
    if hasattr(registry, "expose"):
        return str(registry.content_type), bytes(registry.expose())
    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

    return CONTENT_TYPE_LATEST, generate_latest(REGISTRY if registry is None else registry)


@dataclass
class HealthServer:
    host: str = "0.0.0.0"
    port: int = 8080
    registry: Any = None  # prometheus_client.CollectorRegistry (None: its REGISTRY) or promtext.Registry
    live_checks: dict[str, Check] = field(default_factory=dict)
    ready_checks: dict[str, Check] = field(default_factory=dict)
    _server: asyncio.Server | None = None

    async def start(self) -> None:
        """Listen (once: a service may start it early, before the process runner does)."""
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sockets = self._server.sockets or ()
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("health server listening", host=self.host, port=self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _respond(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            content_type, body = exposition(self.registry)
            return 200, content_type, body
        if path in ("/healthz", "/livez", "/readyz"):
            checks = self.ready_checks if path == "/readyz" else self.live_checks
            failed = [name for name, check in checks.items() if not check()]
            body = ("ok\n" if not failed else "failed: " + ", ".join(failed) + "\n").encode()
            return (200 if not failed else 503), "text/plain; charset=utf-8", body
        return 404, "text/plain; charset=utf-8", b"not found\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            parts = request.split(b"\r\n", 1)[0].split()
            if len(parts) < 2 or parts[0] not in (b"GET", b"HEAD"):
                status, ctype, body = 405, "text/plain; charset=utf-8", b"method not allowed\n"
            else:
                status, ctype, body = self._respond(parts[1].decode("latin-1").split("?", 1)[0])
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[
                status
            ]
            head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            writer.write(
                (head + "Connection: close\r\n\r\n").encode() + (body if parts[0] != b"HEAD" else b"")
            )
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()
